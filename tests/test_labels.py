"""Feature labels: the per-SAE book, its file store, session snapshots and their trip through bundles."""

from __future__ import annotations

import json

import pytest

from core import labels as L
from core.bundles import export_bundle, import_bundle, read_bundle
from core.sessions import Session, SessionStore
from core.store import ArtifactStore

KEY_A, KEY_B = "a" * 24, "b" * 24


def test_book_labels_clear_and_search():
    book = L.LabelBook(KEY_A).with_label(3, " weekday names ", "fires on monday..sunday")
    book = book.with_label(7, "", "only a note about paris")
    assert book.get(3).label == "weekday names" and book.get(3).note.startswith("fires")
    assert book.get(7).label == "" and book.get(5) is None
    assert book.matching("WEEKDAY") == {3} and book.matching("paris") == {7} and book.matching("") == set()
    cleared = book.with_label(3, "", "")
    assert cleared.get(3) is None and 3 in cleared.entries          # a tombstone keeps the time of clearing
    assert set(cleared.labels) == {7}


def test_label_limits_are_clear_errors():
    with pytest.raises(L.LabelError, match="at most 200 characters"):
        L.LabelBook(KEY_A).with_label(1, "x" * 201)
    with pytest.raises(L.LabelError, match="note"):
        L.LabelBook(KEY_A).with_label(1, "ok", "y" * (L.MAX_NOTE_CHARS + 1))
    with pytest.raises(L.LabelError):
        L.sae_key("not hex at all")


def test_merge_keeps_the_later_edit_and_tombstones_win_over_older_labels():
    old = L.LabelBook(KEY_A).with_label(1, "old", updated="2024-01-01T00:00:00+00:00")
    new = L.LabelBook(KEY_A).with_label(1, "new", updated="2025-01-01T00:00:00+00:00").with_label(2, "two")
    assert old.merged(new).get(1).label == "new" and new.merged(old).get(1).label == "new"
    assert old.merged(new).get(2).label == "two"
    cleared = new.with_label(1, "", "", updated="2026-01-01T00:00:00+00:00")
    assert cleared.merged(old).get(1) is None                         # an older snapshot does not bring it back
    with pytest.raises(L.LabelError):
        old.merged(L.LabelBook(KEY_B))


def test_store_round_trip_and_validation(tmp_path):
    store = L.LabelStore(tmp_path)
    assert store.load(KEY_A).labels == {}
    store.set_label(KEY_A, 5, "capitals", "paris, rome", sae="blocks.0 SAE")
    store.set_label(KEY_A, 9, "numbers")
    again = L.LabelStore(tmp_path).load(KEY_A)
    assert again.get(5).label == "capitals" and again.get(9).label == "numbers" and again.sae == "blocks.0 SAE"
    assert L.LabelStore(tmp_path).load(KEY_B).labels == {}            # another SAE sees none of them
    # a corrupt or hand-edited file is refused with a message, never half-read
    path = store.path_for(KEY_A)
    path.write_text("{not json")
    with pytest.raises(L.LabelError, match="cannot be read"):
        store.load(KEY_A)
    document = again.to_dict()
    document["labels"]["5"]["label"] = "z" * 1000
    path.write_text(json.dumps(document))
    with pytest.raises(L.LabelError, match="labels/5/label"):
        store.load(KEY_A)
    document["labels"] = {"-1": {"label": "x", "note": "", "updated": ""}}
    path.write_text(json.dumps(document))
    with pytest.raises(L.LabelError):
        store.load(KEY_A)
    with pytest.raises(L.LabelError):
        store.path_for("../../etc/passwd")


def test_snapshot_is_content_keyed_and_skips_empty_books():
    assert L.snapshot([L.LabelBook(KEY_A)]) is None
    a = L.LabelBook(KEY_A).with_label(1, "one", updated="t1")
    b = L.LabelBook(KEY_B).with_label(2, "two", updated="t2")
    key, meta = L.snapshot([a, b])
    assert L.snapshot([b, a])[0] == key                                # order does not matter
    assert L.snapshot([a.with_label(1, "uno", updated="t3"), b])[0] != key
    by_key = {book.sae_key: book for book in L.books_from_snapshot(meta)}
    assert by_key[KEY_A].get(1).label == "one" and by_key[KEY_B].get(2).label == "two"
    assert L.books_from_snapshot({"kind": "harvest"}) == []
    with pytest.raises(L.LabelError):
        L.books_from_snapshot({"kind": L.LABELS_KIND, "books": [{"version": 1, "sae_key": KEY_A}]})


def test_labels_travel_in_a_bundle_and_merge_on_import(tmp_path):
    """Save: snapshot into the store, key in the session. Share: the bundle carries it. Open elsewhere: merge."""
    home_store, home_labels = ArtifactStore(tmp_path / "cache"), L.LabelStore(tmp_path / "labels")
    home_labels.set_label(KEY_A, 4, "weekdays", "monday to sunday")
    key, meta = L.snapshot([home_labels.load(KEY_A)])
    home_store.save(key, {}, meta)
    session = Session(title="labelled", artifact_keys=[key])
    data = export_bundle(session, home_store)
    assert key in read_bundle(data).artifacts

    other_store, other_labels = ArtifactStore(tmp_path / "other-cache"), L.LabelStore(tmp_path / "other-labels")
    other_labels.set_label(KEY_A, 8, "mine")                          # the receiver's own label stays
    session_id = import_bundle(data, SessionStore(tmp_path / "sessions.sqlite"), other_store)
    opened = SessionStore(tmp_path / "sessions.sqlite").load(session_id)
    namespace = SessionStore(tmp_path / "sessions.sqlite").artifact_namespace(session_id)
    assert other_store.load(opened.artifact_keys[0]) is None          # imports never enter the local store
    artifact = other_store.namespace(namespace).load(opened.artifact_keys[0])
    assert other_labels.merge(L.books_from_snapshot(artifact.meta)) == 1
    merged = other_labels.load(KEY_A)
    assert merged.get(4).label == "weekdays" and merged.get(8).label == "mine"
    assert other_labels.merge(L.books_from_snapshot(artifact.meta)) == 0   # merging twice changes nothing
