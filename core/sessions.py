"""Analysis sessions: a small versioned JSON document, a SQLite store, and portable bundles.

A session records what the user chose and looked at (sources, settings, page, prompt, the
selected feature and layer, and the keys of the artifacts it relies on). It never holds code:
loading one only reads validated JSON, and importing a bundle only reads JSON and `.npy` files
(with `allow_pickle=False`). The bundle format is documented in docs/SESSIONS.md.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import re
import secrets
import sqlite3
import stat
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Protocol

import jsonschema
import numpy as np

from core.errors import SessionFileError
from core.jsonable import jsonable

SESSION_VERSION = 1
BUNDLE_VERSION = 1

MAX_SESSION_BYTES = 256 * 1024          # one session document
MAX_BUNDLE_FILES = 4096                 # entries in one bundle zip
MAX_BUNDLE_FILE_BYTES = 512 * 1024**2   # one uncompressed member
MAX_BUNDLE_TOTAL_BYTES = 2 * 1024**3    # all members, uncompressed

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{4,64}$")
ARTIFACT_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
ARRAY_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

_SCALAR = {"type": ["string", "number", "integer", "boolean", "null"]}
_SPEC = {  # a source spec (ModelSpec, SAESpec, CorpusSpec as a dict): flat JSON scalars
    "type": "object",
    "maxProperties": 32,
    "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
    "additionalProperties": _SCALAR,
}
_SETTING_VALUE = {
    "anyOf": [_SCALAR, {"type": "array", "maxItems": 256, "items": _SCALAR}],
}

SESSION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "title", "notes", "created", "sources", "settings", "page",
                 "prompt", "selected_feature", "selected_layer", "artifact_keys"],
    "properties": {
        "version": {"const": SESSION_VERSION},
        "title": {"type": "string", "maxLength": 200},
        "notes": {"type": "string", "maxLength": 20000},
        "created": {"type": "string", "maxLength": 64},
        "sources": {
            "type": "object",
            "additionalProperties": False,
            "required": ["model", "checkpoint", "saes", "corpus"],
            "properties": {
                "model": _SPEC,
                "checkpoint": {"type": ["string", "null"], "maxLength": 200},
                "saes": {"type": "array", "maxItems": 128, "items": _SPEC},
                "corpus": _SPEC,
            },
        },
        "settings": {
            "type": "object",
            "maxProperties": 64,
            "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
            "additionalProperties": _SETTING_VALUE,
        },
        "page": {"type": "string", "pattern": r"^[a-z_]{0,32}$"},
        "prompt": {"type": "string", "maxLength": 20000},
        "selected_feature": {"type": ["integer", "null"], "minimum": 0},
        "selected_layer": {"type": ["string", "null"], "maxLength": 200},
        "artifact_keys": {
            "type": "array", "maxItems": 256, "uniqueItems": True,
            "items": {"type": "string", "pattern": ARTIFACT_KEY_RE.pattern},
        },
    },
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Session:
    """What the user chose and looked at. `to_dict()` is the versioned JSON document."""

    title: str = "Untitled session"
    notes: str = ""
    sources: dict[str, Any] = field(default_factory=lambda: {
        "model": {"source": "organism"}, "checkpoint": None, "saes": [], "corpus": {"source": "world"}})
    settings: dict[str, Any] = field(default_factory=dict)
    page: str = "home"
    prompt: str = ""
    selected_feature: int | None = None
    selected_layer: str | None = None
    artifact_keys: list[str] = field(default_factory=list)
    created: str = field(default_factory=_now)
    version: int = SESSION_VERSION

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(asdict(self))

    def to_json(self) -> str:
        document = self.to_dict()
        validate_session_dict(document)
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)


def validate_session_dict(document: Any) -> dict[str, Any]:
    """Check a session document against SESSION_SCHEMA; raise SessionFileError saying what is wrong."""
    if not isinstance(document, dict):
        raise SessionFileError("A session file must hold a JSON object.")
    version = document.get("version")
    if version != SESSION_VERSION:
        raise SessionFileError(
            f"This session has format version {version!r}; this Atlas reads version {SESSION_VERSION}. "
            "Open it with a matching Atlas release.")
    try:
        jsonschema.validate(document, SESSION_SCHEMA, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise SessionFileError(f"The session file is not valid at {where}: {error.message}") from None
    return document


def session_from_dict(document: Any) -> Session:
    validate_session_dict(document)
    return Session(**copy.deepcopy(document))


def session_from_json(text: str | bytes) -> Session:
    """Parse and validate a session document (size-capped); raises SessionFileError."""
    if len(text) > MAX_SESSION_BYTES:
        raise SessionFileError(
            f"The session file is {len(text):,} bytes; the limit is {MAX_SESSION_BYTES:,} bytes.")
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SessionFileError(f"The session file is not valid JSON ({error}).") from None
    return session_from_dict(document)


# --------------------------------------------------------------------------- SQLite store

def default_sessions_path() -> Path:
    """$ATLAS_HOME/sessions.sqlite, or ~/.atlas/sessions.sqlite."""
    home = os.environ.get("ATLAS_HOME")
    base = Path(home) if home else Path.home() / ".atlas"
    return base / "sessions.sqlite"


@dataclass(frozen=True)
class SessionSummary:
    id: str
    title: str
    created: str
    page: str


class SessionStore:
    """Sessions in one SQLite file; each row holds the validated JSON document."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_sessions_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS sessions ("
                " id TEXT PRIMARY KEY, title TEXT NOT NULL, created TEXT NOT NULL,"
                " page TEXT NOT NULL, document TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        # A fresh connection per call: Streamlit runs each browser session in its own thread.
        return sqlite3.connect(self.path, timeout=10)

    def save(self, session: Session, session_id: str | None = None) -> str:
        """Store the session (a new id unless one is given) and return its id."""
        text = session.to_json()
        if len(text.encode()) > MAX_SESSION_BYTES:
            raise SessionFileError(
                f"This session is {len(text.encode()):,} bytes; the limit is {MAX_SESSION_BYTES:,} bytes.")
        session_id = session_id or secrets.token_hex(6)
        check_session_id(session_id)
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?)",
                       (session_id, session.title, session.created, session.page, text))
        return session_id

    def load(self, session_id: str) -> Session:
        check_session_id(session_id)
        with self._connect() as db:
            row = db.execute("SELECT document FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise SessionFileError(f"No saved session has the id {session_id!r}.")
        return session_from_json(row[0])

    def list(self) -> list[SessionSummary]:
        """Saved sessions, newest first."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT id, title, created, page FROM sessions ORDER BY created DESC, rowid DESC").fetchall()
        return [SessionSummary(*row) for row in rows]

    def delete(self, session_id: str) -> None:
        check_session_id(session_id)
        with self._connect() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not SESSION_ID_RE.match(session_id):
        raise SessionFileError(f"{session_id!r} is not a session id (4-64 letters, digits, '-' or '_').")
    return session_id


# --------------------------------------------------------------------------- bundles

class ArtifactLike(Protocol):
    arrays: dict[str, np.ndarray]
    meta: dict


class StoreLike(Protocol):  # core.store.ArtifactStore
    def load(self, key: str) -> ArtifactLike | None: ...
    def save(self, key: str, arrays: dict[str, np.ndarray], meta: dict) -> Any: ...


def report_html(session: Session, figures: Iterable[tuple[str, Any]] = ()) -> str:
    """A static HTML page: the session's title, notes and sources, then every figure.

    plotly.js is inlined once (with the first figure), so the page opens offline without Python.
    `figures` are (caption, plotly Figure) pairs.
    """
    from html import escape

    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{escape(session.title)} - Atlas</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "pre{background:#f5f5f5;padding:1em;overflow:auto}h2{margin-top:2em}.caption{color:#555}</style>",
        "</head><body>",
        f"<h1>{escape(session.title)}</h1>",
        f"<p class='caption'>Atlas session, created {escape(session.created)}; page: {escape(session.page)}</p>",
    ]
    if session.notes:
        parts.append(f"<h2>Notes</h2><p style='white-space:pre-wrap'>{escape(session.notes)}</p>")
    if session.prompt:
        parts.append(f"<h2>Prompt</h2><pre>{escape(session.prompt)}</pre>")
    if session.selected_feature is not None:
        parts.append(f"<p>Selected feature: <b>{session.selected_feature}</b> on "
                     f"<code>{escape(str(session.selected_layer))}</code></p>")
    parts.append("<h2>Sources and settings</h2><pre>"
                 + escape(json.dumps({"sources": session.sources, "settings": session.settings}, indent=2))
                 + "</pre>")
    first = True
    for caption, figure in figures:
        parts.append(f"<h2>{escape(caption)}</h2>")
        parts.append(figure.to_html(full_html=False, include_plotlyjs=True if first else False))
        first = False
    parts.append("</body></html>")
    return "\n".join(parts)


def export_bundle(session: Session, store: StoreLike | None,
                  figures: Iterable[tuple[str, Any]] = ()) -> bytes:
    """The session as a zip: bundle.json, session.json, artifacts/<key>/..., report.html.

    Artifacts the store no longer holds are left out and listed under "missing" in bundle.json.
    """
    buffer = io.BytesIO()
    included, missing = [], []
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in session.artifact_keys:
            artifact = store.load(key) if store is not None else None
            if artifact is None:
                missing.append(key)
                continue
            for name, array in artifact.arrays.items():
                if not ARRAY_NAME_RE.match(name):
                    raise SessionFileError(f"Artifact {key} has an array name that cannot be bundled: {name!r}")
                array_bytes = io.BytesIO()
                np.save(array_bytes, np.asarray(array), allow_pickle=False)
                archive.writestr(f"artifacts/{key}/{name}.npy", array_bytes.getvalue())
            archive.writestr(f"artifacts/{key}/meta.json", json.dumps(jsonable(artifact.meta)))
            included.append(key)
        archive.writestr("session.json", session.to_json())
        archive.writestr("report.html", report_html(session, figures))
        archive.writestr("bundle.json", json.dumps({
            "format": "atlas-bundle", "bundle_version": BUNDLE_VERSION,
            "session_version": session.version, "artifacts": included, "missing": missing,
            "created": _now()}, indent=2))
    return buffer.getvalue()


_MEMBER_RE = re.compile(
    r"^(bundle\.json|session\.json|report\.html"
    r"|artifacts/(?P<key>[A-Za-z0-9_.-]{1,128})/(?P<file>meta\.json|[A-Za-z0-9_.-]{1,128}\.npy))$")


@dataclass
class BundleContents:
    session: Session
    manifest: dict[str, Any]
    artifacts: dict[str, tuple[dict[str, np.ndarray], dict]]   # key -> (arrays, meta)
    report_html: str | None


def read_bundle(data: bytes | str | Path, *, max_files: int = MAX_BUNDLE_FILES,
                max_file_bytes: int = MAX_BUNDLE_FILE_BYTES,
                max_total_bytes: int = MAX_BUNDLE_TOTAL_BYTES) -> BundleContents:
    """Read and validate a bundle in memory; nothing is written to disk or executed.

    Rejected with SessionFileError: not a zip, too many members, a member over the size caps,
    absolute paths, '..', links, names outside the expected layout, an unknown bundle version,
    artifacts the session does not refer to, and any .npy that would need pickle.
    """
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError) as error:
        raise SessionFileError(f"This is not an Atlas bundle (not a readable zip file: {error}).") from None
    with archive:
        members = archive.infolist()
        if len(members) > max_files:
            raise SessionFileError(f"The bundle holds {len(members)} files; the limit is {max_files}.")
        total = 0
        files: dict[str, bytes] = {}
        for info in members:
            name = info.filename
            if info.is_dir():
                if ".." in name.split("/") or name.startswith("/"):
                    raise SessionFileError(f"The bundle holds an unsafe path: {name!r}.")
                continue
            _check_member_name(name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SessionFileError(f"The bundle holds a link ({name!r}); links are not allowed.")
            if info.file_size > max_file_bytes:
                raise SessionFileError(f"{name!r} in the bundle is {info.file_size:,} bytes; "
                                       f"the limit is {max_file_bytes:,}.")
            total += info.file_size
            if total > max_total_bytes:
                raise SessionFileError(f"The bundle unpacks to more than {max_total_bytes:,} bytes.")
            files[name] = _read_capped(archive, info, max_file_bytes)
    if "bundle.json" not in files or "session.json" not in files:
        raise SessionFileError("This is not an Atlas bundle: bundle.json or session.json is missing.")
    try:
        manifest = json.loads(files["bundle.json"])
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SessionFileError("The bundle's bundle.json is not valid JSON.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "atlas-bundle":
        raise SessionFileError("This is not an Atlas bundle (bundle.json has no 'atlas-bundle' format).")
    if manifest.get("bundle_version") != BUNDLE_VERSION:
        raise SessionFileError(f"This bundle has format version {manifest.get('bundle_version')!r}; "
                               f"this Atlas reads version {BUNDLE_VERSION}.")
    session = session_from_json(files["session.json"])

    artifacts: dict[str, tuple[dict[str, np.ndarray], dict]] = {}
    for name, content in files.items():
        match = _MEMBER_RE.match(name)
        key = match.group("key") if match else None
        if key is None:
            continue
        if key not in session.artifact_keys:
            raise SessionFileError(f"The bundle holds artifact {key!r}, which its session does not refer to.")
        arrays, meta = artifacts.setdefault(key, ({}, {}))
        filename = match.group("file")
        if filename == "meta.json":
            try:
                loaded = json.loads(content)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise SessionFileError(f"artifacts/{key}/meta.json is not valid JSON.") from None
            if not isinstance(loaded, dict):
                raise SessionFileError(f"artifacts/{key}/meta.json must hold a JSON object.")
            meta.update(loaded)
        else:
            try:
                arrays[filename[:-4]] = np.load(io.BytesIO(content), allow_pickle=False)
            except ValueError as error:  # object arrays need pickle: refused
                raise SessionFileError(f"artifacts/{key}/{filename} cannot be read safely ({error}).") from None
    report = files.get("report.html")
    return BundleContents(session, manifest, artifacts,
                          report.decode("utf-8", "replace") if report is not None else None)


def _check_member_name(name: str) -> None:
    if (name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/")
            or re.match(r"^[A-Za-z]:", name) or "\x00" in name):
        raise SessionFileError(f"The bundle holds an unsafe path: {name!r}.")
    if not _MEMBER_RE.match(name):
        raise SessionFileError(f"The bundle holds an unexpected file: {name!r}.")


def _read_capped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    # The header's size can lie; stop reading once the cap is passed.
    with archive.open(info) as handle:
        content = handle.read(cap + 1)
    if len(content) > cap:
        raise SessionFileError(f"{info.filename!r} in the bundle unpacks to more than {cap:,} bytes.")
    return content


def import_bundle(data: bytes | str | Path, sessions: SessionStore, store: StoreLike | None) -> str:
    """Validate a bundle, restore its artifacts into `store`, save its session; return the new id."""
    contents = read_bundle(data)
    if store is not None:
        for key, (arrays, meta) in contents.artifacts.items():
            store.save(key, arrays, meta)
    return sessions.save(contents.session)


def main_import(argv: list[str] | None = None) -> int:
    """CLI: `python -m core import-bundle PATH [--sessions FILE] [--store DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m core import-bundle",
                                     description="Import an Atlas session bundle (.zip).")
    parser.add_argument("path", help="the bundle zip")
    parser.add_argument("--sessions", default=None, help="SQLite file (default: $ATLAS_HOME/sessions.sqlite)")
    parser.add_argument("--store", default=None, help="artifact store directory (default: the store's default)")
    args = parser.parse_args(argv)
    return run_import(args.path, args.sessions, args.store)


def run_import(path: str | Path, sessions_path: str | Path | None = None, store_root: str | Path | None = None) -> int:
    """Import the bundle at `path` into the SQLite file `sessions_path` and the artifact store at
    `store_root` (None: their defaults); print what happened and return the exit status (0, or 1)."""
    from core.errors import AtlasError
    from core.store import ArtifactStore

    try:
        store = ArtifactStore(store_root)
        session_id = import_bundle(Path(path).read_bytes(), SessionStore(sessions_path), store)
    except (AtlasError, OSError) as error:
        print(f"error: {error}")
        return 1
    print(f"Imported session {session_id}; open it with ?session={session_id}")
    return 0
