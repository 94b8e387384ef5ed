"""User labels on features in the app: the per-SAE label files, the label editor, and their trip
through sessions and bundles (see core/labels.py for the design).

- `label_book(sae)`: the SAE's labels (core.labels.LabelBook), read from $ATLAS_HOME/labels;
- `label_editor(sae, feature)`: the form that writes a label and a note;
- `sync_session_labels(saes)`: merges the labels of an opened session (its snapshot artifact) into the
  files once, then snapshots the loaded SAEs' labels into the store and records the snapshot among the
  session's artifacts (so "Save session" and bundles carry them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import streamlit as st

from app.resources import decoder_weights, get_store, restored_namespace
from app.state import remember_artifact
from app.widgets import guarded
from core import labels as core_labels
from core.errors import AtlasError
from core.store import StoreView

SNAPSHOT_PURPOSE = "feature_labels"


@st.cache_resource(show_spinner=False)
def label_store() -> core_labels.LabelStore:
    return core_labels.LabelStore()


@st.cache_resource(show_spinner=False, max_entries=64)
def _sae_key(identity: tuple[int, Any], _sae) -> str:
    from core.feature_map import decoder_fingerprint

    return core_labels.sae_key(decoder_fingerprint(decoder_weights(_sae)))


def sae_key(sae) -> str:
    """The SAE's labels key (from its decoder weights), worked out once per loaded SAE."""
    return _sae_key((id(sae), sae.spec), sae)


def label_book(sae) -> core_labels.LabelBook:
    book = guarded(lambda: label_store().load(sae_key(sae), sae.describe()))
    return book if book is not None else core_labels.LabelBook(sae_key(sae), sae.describe())


def label_editor(sae, feature: int, book: core_labels.LabelBook) -> None:
    """A small form: the feature's label and note; saving writes the SAE's label file at once."""
    entry = book.get(feature)
    form_key = f"label_form_{sae_key(sae)}_{feature}"
    with st.form(form_key, border=False, enter_to_submit=True):
        label = st.text_input("Label", value=entry.label if entry else "", max_chars=core_labels.MAX_LABEL_CHARS,
                              placeholder="a short name, e.g. 'weekday names'", key=f"{form_key}_label")
        note = st.text_area("Notes", value=entry.note if entry else "", max_chars=core_labels.MAX_NOTE_CHARS,
                            height=80, key=f"{form_key}_note", placeholder="what you checked, what it is not, ...")
        saved = st.form_submit_button("Save label")
    if saved:
        result = guarded(lambda: label_store().set_label(sae_key(sae), feature, label, note, sae.describe()))
        if result is not None:
            st.toast(f"Label of feature {feature} saved." if (label.strip() or note.strip())
                     else f"Label of feature {feature} cleared.")
            st.rerun()


def sync_session_labels(saes: Sequence[Any]) -> None:
    """Bring an opened session's labels into the label files (once per snapshot), then record the current
    labels of `saes` as this session's snapshot artifact."""
    store = get_store()
    namespace = restored_namespace()   # a session imported from a bundle keeps its artifacts there (core.store)
    readable = StoreView(store, store.namespace(namespace)) if namespace else store
    seen = st.session_state.setdefault("_label_snapshots_seen", set())
    for key in set(st.session_state.get("artifact_keys", {}).values()) - seen:
        seen.add(key)
        try:
            artifact = readable.load(key)
        except AtlasError:   # not an artifact of this store (another kind of key, or unreadable): not labels
            continue
        if artifact is None or artifact.meta.get("kind") != core_labels.LABELS_KIND:
            continue
        changed = guarded(partial(_merge_snapshot, artifact.meta))
        if changed:
            st.toast(f"{changed} feature label(s) from the opened session were added.")
    snapshot = core_labels.snapshot(label_book(sae) for sae in saes)
    if snapshot is None:
        st.session_state.get("artifact_keys", {}).pop(SNAPSHOT_PURPOSE, None)
        return
    key, meta = snapshot
    if not store.has(key):
        store.save(key, {}, meta)
    seen.add(key)
    remember_artifact(SNAPSHOT_PURPOSE, key)


def _merge_snapshot(meta: Mapping[str, Any]) -> int:
    """Merge the label books of a session's snapshot into the server's labels; how many labels changed."""
    return label_store().merge(core_labels.books_from_snapshot(meta))


def label_texts(book: core_labels.LabelBook) -> dict[int, str]:
    """feature -> the user's label (or the start of the note when the label is empty)."""
    return {f: (e.label or e.note[:60]) for f, e in book.labels.items()}
