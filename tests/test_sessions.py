"""Sessions: JSON round trip, strict validation, SQLite store, bundle export/import and its safety checks."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from core.errors import SessionFileError
from core.sessions import (
    Session,
    SessionStore,
    export_bundle,
    import_bundle,
    main_import,
    read_bundle,
    session_from_json,
)
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
    restored = fresh_artifacts.load(key)
    np.testing.assert_array_equal(restored.arrays["coords"], np.arange(12, dtype=np.float32).reshape(6, 2))
    assert restored.meta["kind"] == "test"


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _valid_members(session: Session) -> dict[str, bytes]:
    return {"bundle.json": json.dumps({"format": "atlas-bundle", "bundle_version": 1}).encode(),
            "session.json": session.to_json().encode()}


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
    members = {**_valid_members(session), f"artifacts/{key}/x.npy": pickled.getvalue()}
    with pytest.raises(SessionFileError, match="cannot be read safely"):
        read_bundle(_zip(members))
    members = {**_valid_members(session), "bundle.json": b'{"format": "atlas-bundle", "bundle_version": 9}'}
    with pytest.raises(SessionFileError, match="version 9"):
        read_bundle(_zip(members))
    other = {**_valid_members(_session()), f"artifacts/{'b' * 64}/meta.json": b"{}"}
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
    code = main_import([str(bundle), "--sessions", str(tmp_path / "cli.sqlite"), "--store", str(tmp_path / "st")])
    assert code == 0
    assert "?session=" in capsys.readouterr().out
    assert len(SessionStore(tmp_path / "cli.sqlite").list()) == 1
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_zip({"../x": b""}))
    assert main_import([str(bad), "--sessions", str(tmp_path / "cli.sqlite"), "--store", str(tmp_path / "st")]) == 1


def test_python_m_core_import_bundle(tmp_path, stores):
    from core.cli import main

    artifacts, _, key = stores
    bundle = tmp_path / "b.zip"
    bundle.write_bytes(export_bundle(_session([key]), artifacts))
    assert main(["import-bundle", str(bundle), "--sessions", str(tmp_path / "m.sqlite"), "--store", str(tmp_path / "st")]) == 0
    assert SessionStore(tmp_path / "m.sqlite").list()[0].title == "Weekdays on layer 2"


def test_an_imported_session_cannot_read_server_files(app_env, tmp_path):
    """A bundle whose session names a server file as its corpus: importing it stores the document, but
    opening it in the app refuses the file with a notice, and the report built for a re-export never reads it."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from app.report import report_figures
    from core.store import ArtifactStore

    secret = tmp_path / "secret.txt"
    secret.write_text("the launch code is 0000\n" * 50)
    hostile = Session(title="look at this", page="features", prompt="monday",
                      sources={"model": {"source": "organism"}, "checkpoint": None, "saes": [],
                               "corpus": {"source": "file", "path": str(secret)}},
                      settings={"ui_corpus_source": "file", "ui_corpus_path": str(secret)})
    sessions = SessionStore()
    session_id = import_bundle(export_bundle(hostile, None), sessions, ArtifactStore())

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), default_timeout=300)
    at.query_params["session"] = session_id
    at.run()
    assert not at.exception
    assert any("corpus file" in w.value and "uploaded to this Atlas" in w.value for w in at.warning)
    assert at.session_state["valid_sources"].corpus.source == "world"

    from app.sources import request
    from app.state import restore_values

    assert request(restore_values(sessions.load(session_id))[0]).corpus.source == "world"   # what the report loads
    figures = report_figures(sessions.load(session_id))
    assert figures and "launch code" not in "".join(figure.to_json() for _, figure in figures)
