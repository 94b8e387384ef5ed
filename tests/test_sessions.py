"""Sessions: JSON round trip, strict validation, SQLite store, bundle export/import and its safety checks."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.bundles import export_bundle, import_bundle, read_bundle
from core.cli import main as cli_main
from core.errors import SessionFileError
from core.sessions import Session, SessionStore, session_from_json
from core.store import ArtifactStore, artifact_key


def _session(keys=()) -> Session:
    return Session(
        title="Weekdays on layer 2", notes="circle <b>here</b>",
        sources={"model": {"source": "organism", "name": "atlas-organism", "checkpoint": "final"},
                 "checkpoint": "final",
                 "saes": [{"source": "organism", "hook_name": "blocks.2.hook_resid_post"}],
                 "corpus": {"source": "world", "context_size": 64}},
        settings={"color_by": "density", "top_k": 8, "layers": [0, 1]},
        page="features", prompt="monday tuesday <script>alert(1)</script>",
        selected_feature=17, selected_layer="blocks.2.hook_resid_post", artifact_keys=list(keys),
        created="2026-01-02T03:04:05+00:00")  # fixed: a default "now" differs between two calls


def test_json_round_trip_is_exact():
    session = _session()
    again = session_from_json(session.to_json())
    assert again == session


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.update(version=2), "version 2"),
    (lambda d: d.update(selected_feature="seven"), "selected_feature"),
    (lambda d: d.update(unexpected=1), "unexpected"),
    (lambda d: d["sources"].pop("model"), "model"),
    (lambda d: d.update(artifact_keys=["../etc/passwd"]), "artifact_keys"),
    (lambda d: d["settings"].update(nested={"a": 1}), "settings"),
])
def test_bad_documents_are_rejected_with_a_clear_message(mutate, needle):
    document = _session().to_dict()
    mutate(document)
    with pytest.raises(SessionFileError, match=needle):
        session_from_json(json.dumps(document))


def test_corrupt_and_oversized_json_are_rejected():
    with pytest.raises(SessionFileError, match="not valid JSON"):
        session_from_json('{"version": 1, "title": ')
    with pytest.raises(SessionFileError, match="limit"):
        session_from_json("x" * (300 * 1024))
    with pytest.raises(SessionFileError, match="JSON object"):
        session_from_json("[1, 2]")


def test_sqlite_store_save_list_load_delete(tmp_path):
    store = SessionStore(tmp_path / "s.sqlite")
    first = store.save(_session())
    second = store.save(Session(title="second"))
    assert first != second
    assert {s.id for s in store.list()} == {first, second}
    assert store.load(first) == _session()
    store.save(Session(title="renamed"), session_id=second)
    assert store.load(second).title == "renamed"
    store.delete(first)
    with pytest.raises(SessionFileError, match="No saved session"):
        store.load(first)
    with pytest.raises(SessionFileError, match="not a session id"):
        store.load("'; DROP TABLE sessions; --")


def test_default_path_honours_atlas_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_HOME", str(tmp_path / "home"))
    assert SessionStore().path == tmp_path / "home" / "sessions.sqlite"


@pytest.fixture
def stores(tmp_path):
    artifacts = ArtifactStore(tmp_path / "artifacts")
    key = artifact_key(kind="test", n=1)
    artifacts.save(key, {"coords": np.arange(12, dtype=np.float32).reshape(6, 2), "ids": np.arange(3)},
                   {"kind": "test"})
    return artifacts, SessionStore(tmp_path / "s.sqlite"), key


def test_bundle_round_trip_restores_session_and_artifacts(tmp_path, stores):
    import plotly.graph_objects as go

    artifacts, sessions, key = stores
    session = _session([key])
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    data = export_bundle(session, artifacts, [("A figure", fig), ("Another", fig)])
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"bundle.json", "session.json", "report.html", f"artifacts/{key}/coords.npy",
            f"artifacts/{key}/meta.json"} <= names
    report = zipfile.ZipFile(io.BytesIO(data)).read("report.html").decode()
    assert report.count("<script type=\"text/javascript\">/**") <= 1 and "plotly" in report.lower()
    assert "<script src=" not in report and "plotly.js v" in report   # plotly.js inlined: opens offline
    assert report.count("plotly.js v") == 1                              # ... and only once
    assert "<script>alert(1)" not in report     # the prompt is escaped
    fresh_artifacts = ArtifactStore(tmp_path / "other")
    new_id = import_bundle(data, sessions, fresh_artifacts)
    assert sessions.load(new_id) == session
    # restored into the import's own read-only namespace, never into the local entries
    assert fresh_artifacts.load(key) is None and sessions.artifact_namespace(new_id) == new_id
    restored = fresh_artifacts.namespace(new_id).load(key)
    np.testing.assert_array_equal(restored.arrays["coords"], np.arange(12, dtype=np.float32).reshape(6, 2))
    assert restored.meta["kind"] == "test"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _valid_members(session: Session, extra: dict[str, bytes] | None = None, artifacts=()) -> dict[str, bytes]:
    """A bundle's members with a manifest that lists (and checksums) every other member."""
    import hashlib

    members = {"session.json": session.to_json().encode(), **(extra or {})}
    files = {name: {"sha256": hashlib.sha256(c).hexdigest(), "bytes": len(c)} for name, c in members.items()}
    manifest = {"format": "atlas-bundle", "bundle_version": 2, "session_version": 1, "artifacts": list(artifacts),
                "missing": [], "created": "2026-01-01T00:00:00+00:00", "files": files}
    return {"bundle.json": json.dumps(manifest).encode(), **members}


@pytest.mark.parametrize("extra, needle", [
    ({"../evil.py": b"print(1)"}, "unsafe path"),
    ({"/etc/passwd": b"x"}, "unsafe path"),
    ({"artifacts/../../x.npy": b"x"}, "unsafe path"),
    ({"run.py": b"import os"}, "unexpected file"),
    ({"artifacts/abc/payload.pkl": b"x"}, "unexpected file"),
])
def test_unsafe_bundles_are_rejected(extra, needle):
    members = {**_valid_members(_session()), **extra}
    with pytest.raises(SessionFileError, match=needle):
        read_bundle(_zip(members))


def test_bundle_rejects_pickled_arrays_unknown_version_and_caps():
    key = "a" * 64
    session = _session([key])
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    members = _valid_members(session, {f"artifacts/{key}/x.npy": pickled.getvalue(),
                                       f"artifacts/{key}/meta.json": b'{"kind": "test"}'}, [key])
    with pytest.raises(SessionFileError, match="only numbers and booleans"):
        read_bundle(_zip(members))
    members = {**_valid_members(session), "bundle.json": b'{"format": "atlas-bundle", "bundle_version": 9}'}
    with pytest.raises(SessionFileError, match="version 9"):
        read_bundle(_zip(members))
    other = _valid_members(_session(), {f"artifacts/{'b' * 64}/meta.json": b'{"kind": "test"}'}, ["b" * 64])
    with pytest.raises(SessionFileError, match="does not refer to"):
        read_bundle(_zip(other))
    with pytest.raises(SessionFileError, match="files"):
        read_bundle(_zip(_valid_members(session)), max_files=1)
    with pytest.raises(SessionFileError, match="bytes"):
        read_bundle(_zip(_valid_members(session)), max_file_bytes=10)
    with pytest.raises(SessionFileError, match="not a readable zip"):
        read_bundle(b"definitely not a zip")


def test_cli_import(tmp_path, stores, capsys):
    artifacts, _, key = stores
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(export_bundle(_session([key]), artifacts))
    code = cli_main(["import-bundle", str(bundle), "--sessions", str(tmp_path / "cli.sqlite"),
                     "--store", str(tmp_path / "st")])
    assert code == 0
    assert "?session=" in capsys.readouterr().out
    assert len(SessionStore(tmp_path / "cli.sqlite").list()) == 1
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_zip({"../x": b""}))
    assert cli_main(["import-bundle", str(bad), "--sessions", str(tmp_path / "cli.sqlite"),
                     "--store", str(tmp_path / "st")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_python_m_core_import_bundle(tmp_path, stores):
    artifacts, _, key = stores
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(export_bundle(_session([key]), artifacts))
    assert cli_main(["import-bundle", str(bundle), "--sessions", str(tmp_path / "m.sqlite"),
                     "--store", str(tmp_path / "st")]) == 0
    assert SessionStore(tmp_path / "m.sqlite").list()[0].title == "Weekdays on layer 2"


# --------------------------------------------------------------------------- untrusted documents

def test_schema_knows_exactly_the_source_kinds_and_fields_atlas_has():
    from dataclasses import fields

    from core import sessions as S
    from core.sources import corpus, models, saes

    schema = S.SESSION_SCHEMA["properties"]["sources"]["properties"]
    for spec, source_kinds, dataclass_ in ((schema["model"], models.SOURCES, models.ModelSpec),
                                           (schema["saes"]["items"], saes.SOURCES, saes.SAESpec),
                                           (schema["corpus"], corpus.SOURCES, corpus.CorpusSpec)):
        assert set(spec["properties"]) == {f.name for f in fields(dataclass_)}
        assert spec["properties"]["source"]["enum"] == list(source_kinds)


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d["sources"]["corpus"].update(source="shell"), "sources/corpus/source"),
    (lambda d: d["sources"]["model"].update(source="pickle"), "sources/model/source"),
    (lambda d: d["sources"]["saes"][0].update(release=None, loader="x"), "sources/saes/0"),
    (lambda d: d["sources"]["corpus"].update(path="/etc/" + "x" * 5000), "sources/corpus/path"),
    (lambda d: d["sources"]["corpus"].update(path="a\x00b"), "sources/corpus/path"),
    (lambda d: d["sources"]["corpus"].update(context_size=0), "context_size"),
    (lambda d: d["sources"]["model"].update(device="tpu"), "device"),
    (lambda d: d["settings"].update(x="y" * 3000), "settings/x"),
    (lambda d: d["settings"].update(x=1e300), "settings/x"),
    (lambda d: d.update(selected_feature=2**40), "selected_feature"),
    (lambda d: d.update(created="<script>"), "created"),
    (lambda d: d.update(artifact_keys=["a" * 63]), "artifact_keys"),
])
def test_strict_schema_refuses_what_atlas_never_writes(mutate, needle):
    document = _session().to_dict()
    mutate(document)
    with pytest.raises(SessionFileError, match=needle):
        session_from_json(json.dumps(document))


@pytest.mark.parametrize("text, needle", [
    ('{"title": "\\ud800"}', "surrogate"),                        # an escaped lone surrogate
    ("{}".encode() + b"\xff", "not UTF-8"),                        # invalid UTF-8
    ('{"title": "x"}'.encode("utf-16"), "not UTF-8"),
    ('{"version": 1, "x": NaN}', "not valid JSON"),
    ('{"version": 1, "x": 1e400}', "not valid JSON"),
    ('{"version": 1, "x": Infinity}', "not valid JSON"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON"),              # nesting past the recursion limit
    ('{"version": 1, "x": ' + "9" * 5000 + "}", "not valid JSON"),  # an integer too long to convert
])
def test_malformed_text_is_a_session_error(text, needle):
    with pytest.raises(SessionFileError, match=needle):
        session_from_json(text)


def test_lone_surrogates_in_a_session_value_are_refused_before_sqlite(tmp_path):
    sessions = SessionStore(tmp_path / "s.sqlite")
    with pytest.raises(SessionFileError, match="surrogate.*prompt"):
        sessions.save(Session(prompt="monday \ud800 tuesday"))
    document = _session().to_dict()
    document["notes"] = "a \udfff b"
    with pytest.raises(SessionFileError, match="surrogate"):
        session_from_json(json.dumps(document))


def test_a_corrupt_sessions_database_is_an_atlas_error(tmp_path):
    path = tmp_path / "sessions.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    sessions = SessionStore(path)                  # constructing it never fails: the app starts
    for call in (sessions.list, lambda: sessions.load("abcd1234"), lambda: sessions.save(Session())):
        with pytest.raises(SessionFileError, match="move it aside"):
            call()
    path.unlink()
    assert sessions.list() == []                   # moved aside: a fresh database works


def test_a_database_from_before_namespaces_is_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE sessions (id TEXT PRIMARY KEY, title TEXT NOT NULL, created TEXT NOT NULL,"
                   " page TEXT NOT NULL, document TEXT NOT NULL)")
        db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                   ("old1", "t", "c", "home", _session().to_json()))
    sessions = SessionStore(path)
    assert sessions.load("old1") == _session() and sessions.artifact_namespace("old1") is None
    new = sessions.save(Session(), artifact_namespace="abcd1234")
    assert sessions.artifact_namespace(new) == "abcd1234"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.sampled_from(["\ud800", "a\udc00b", "\x00", "organism", "file", "/etc/passwd", "../x"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
_PATHS = st.lists(st.sampled_from(["version", "title", "notes", "created", "sources", "settings", "page", "prompt",
                                   "selected_feature", "selected_layer", "artifact_keys", "model", "corpus", "saes",
                                   "source", "path", "device", "context_size", "x"]), min_size=1, max_size=3)


def _set(document, path, value):
    target = document
    for part in path[:-1]:
        if isinstance(target, dict) and isinstance(target.get(part), dict):
            target = target[part]
    if isinstance(target, dict):
        target[path[-1]] = value


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_PATHS, _JSON), min_size=1, max_size=4))
def test_any_mutated_session_document_is_refused_or_safe(tmp_path_factory, mutations):
    """Valid documents with random values put at random places: either a SessionFileError, or a session
    that serialises, stores in SQLite and reads back unchanged."""
    document = _session().to_dict()
    for path, value in mutations:
        _set(document, path, value)
    try:
        text = json.dumps(document)
    except (ValueError, TypeError):
        return
    try:
        session = session_from_json(text)
    except SessionFileError:
        return
    sessions = SessionStore(tmp_path_factory.mktemp("fuzz") / "s.sqlite")
    assert sessions.load(sessions.save(session)) == session


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=300), _JSON.map(lambda v: json.dumps(v, allow_nan=True)),
                 st.text(max_size=300)))
def test_arbitrary_input_is_a_session_error_never_a_foreign_exception(data):
    try:
        session_from_json(data)
    except SessionFileError:
        pass
