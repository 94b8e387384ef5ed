"""Analysis sessions: a small versioned JSON document and a SQLite store of them.

A session records what the user chose and looked at (sources, settings, page, prompt, the selected feature
and layer, and the keys of the artifacts it relies on). It never holds code. Every document is untrusted
input: loading one reads strict UTF-8 JSON (no NaN/Infinity, bounded nesting and size) and validates it
against SESSION_SCHEMA (every key known, every string and list bounded, source specs only of the kinds and
fields Atlas has, no lone surrogates anywhere). Bundles (a session with its artifacts, as a zip) are in
core/bundles.py; the format of both is documented in docs/SESSIONS.md.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import secrets
import sqlite3
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import jsonschema

from core.errors import AtlasError, SessionFileError
from core.text import check_unicode

SESSION_VERSION = 1
MAX_SESSION_BYTES = 256 * 1024          # one session document

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{4,64}$")
ARTIFACT_KEY_RE = re.compile(r"^[0-9a-f]{64}$")   # core.store keys: sha256 hex

# Source kinds and their fields: core.sources.{models,saes,corpus} (tests/test_sessions.py checks they agree).
MODEL_SOURCES = ("organism", "transformer_lens", "hf_dir")
SAE_SOURCES = ("organism", "release", "dir")
CORPUS_SOURCES = ("world", "file", "hf_dataset")
DTYPES = ("float32", "float16", "bfloat16")

_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"     # no NUL or control characters (tabs and newlines are fine)


def _string(max_length: int, pattern: str = _TEXT) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "pattern": pattern}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [{"type": "null"}, schema]}


_NAME = _nullable(_string(256))
_PATH = _nullable(_string(4096))
_MODEL_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["source"],
    "properties": {
        "source": {"enum": list(MODEL_SOURCES)}, "name": _NAME, "path": _PATH, "checkpoint": _NAME,
        "device": {"type": "string", "pattern": r"^(auto|cpu|mps|cuda(:[0-9]{1,2})?)$"},
        "dtype": {"enum": list(DTYPES)},
    },
}
_SAE_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["source"],
    "properties": {
        "source": {"enum": list(SAE_SOURCES)}, "release": _NAME, "sae_id": _NAME, "path": _PATH,
        "hook_name": _NAME,
    },
}
_CORPUS_SPEC = {
    "type": "object", "additionalProperties": False, "required": ["source"],
    "properties": {
        "source": {"enum": list(CORPUS_SOURCES)}, "path": _PATH, "column": _NAME, "name": _NAME,
        "split": _string(256), "context_size": {"type": "integer", "minimum": 2, "maximum": 1_048_576},
        "max_chunks": _nullable({"type": "integer", "minimum": 1, "maximum": 1_000_000_000}),
        "prepend_bos": {"type": "boolean"},
    },
}
_SCALAR = {"anyOf": [{"type": ["null", "boolean"]}, _string(2000),
                     {"type": "number", "minimum": -1e15, "maximum": 1e15}]}
_SETTING_VALUE = {"anyOf": [_SCALAR, {"type": "array", "maxItems": 256, "items": _SCALAR}]}

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
        "created": _string(64, r"^[0-9A-Za-z:.+ -]*$"),
        "sources": {
            "type": "object",
            "additionalProperties": False,
            "required": ["model", "checkpoint", "saes", "corpus"],
            "properties": {
                "model": _MODEL_SPEC,
                "checkpoint": _NAME,
                "saes": {"type": "array", "maxItems": 128, "items": _SAE_SPEC},
                "corpus": _CORPUS_SPEC,
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
        "selected_feature": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**31 - 1},
        "selected_layer": _nullable(_string(200, r"^[A-Za-z0-9_.#:/-]*$")),
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
        return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------- untrusted JSON

def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def parse_json(data: str | bytes, what: str, max_bytes: int, error: type[AtlasError] = SessionFileError, *,
               allow_nan: bool = False) -> Any:
    """Strict JSON from a user: UTF-8 (bytes), at most `max_bytes`, no NaN/Infinity or out-of-range
    numbers (unless `allow_nan`: artifact metadata written by Python may hold NaN), no lone surrogates.
    Raises `error`. (Nesting deep enough to exhaust the recursion limit is a
    RecursionError inside json's C scanner: caught here like any other syntax error.)"""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        if len(data) > max_bytes:
            raise error(f"The {what} is {len(data):,} bytes; the limit is {max_bytes:,} bytes.")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as problem:
            raise error(f"The {what} is not UTF-8 text (byte {problem.start}); save it as UTF-8.") from None
    elif isinstance(data, str):
        text = data
        check_unicode(text, what, error)
        if len(text.encode("utf-8")) > max_bytes:
            raise error(f"The {what} is {len(text.encode('utf-8')):,} bytes; the limit is {max_bytes:,} bytes.")
    else:
        raise error(f"The {what} must be text, not {type(data).__name__}.")
    try:
        document = (json.loads(text) if allow_nan else
                    json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float))
    except (ValueError, RecursionError) as problem:
        raise error(f"The {what} is not valid JSON ({problem}).") from None
    check_unicode(document, what, error)
    return document


def validate_session_dict(document: Any) -> dict[str, Any]:
    """Check a session document against SESSION_SCHEMA; raise SessionFileError saying what is wrong."""
    if not isinstance(document, dict):
        raise SessionFileError("A session file must hold a JSON object.")
    version = document.get("version")
    if version != SESSION_VERSION:
        raise SessionFileError(
            f"This session has format version {version!r}; this Atlas reads version {SESSION_VERSION}. "
            "Open it with a matching Atlas release.")
    check_unicode(document, "session", SessionFileError)
    try:
        jsonschema.validate(document, SESSION_SCHEMA, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        message = error.message if len(error.message) <= 300 else error.message[:300] + "…"
        raise SessionFileError(f"The session file is not valid at {where}: {message}") from None
    return document


def session_from_dict(document: Any) -> Session:
    validate_session_dict(document)
    return Session(**copy.deepcopy(document))


def session_from_json(text: str | bytes) -> Session:
    """Parse and validate a session document (size-capped, strict); raises SessionFileError."""
    return session_from_dict(parse_json(text, "session file", MAX_SESSION_BYTES))


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
    """Sessions in one SQLite file; each row holds the validated JSON document, and for a session imported
    from a bundle the name of the artifact namespace its artifacts were restored to (core.store).

    Nothing is opened before the first call, and every SQLite failure (a corrupt or foreign file, a full
    disk, a locked database) is a SessionFileError that says what to do, so the app keeps running.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_sessions_path()
        self._ready = False

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # A fresh connection per call: Streamlit runs each browser session in its own thread.
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as db:
                if not self._ready:
                    db.execute(
                        "CREATE TABLE IF NOT EXISTS sessions ("
                        " id TEXT PRIMARY KEY, title TEXT NOT NULL, created TEXT NOT NULL,"
                        " page TEXT NOT NULL, document TEXT NOT NULL, artifact_namespace TEXT)")
                    columns = {row[1] for row in db.execute("PRAGMA table_info(sessions)")}
                    if "artifact_namespace" not in columns:  # a database from before imports had namespaces
                        db.execute("ALTER TABLE sessions ADD COLUMN artifact_namespace TEXT")
                    db.commit()
                    self._ready = True
                with db:   # one transaction: committed on success, rolled back on error
                    yield db
        except sqlite3.Error as error:
            raise SessionFileError(
                f"The sessions database {self.path} cannot be used ({error}). If it is corrupt, move it "
                "aside (rename it, e.g. to sessions.sqlite.broken): Atlas then starts a new, empty one.") from None
        except OSError as error:
            raise SessionFileError(f"The sessions database {self.path} cannot be opened ({error}).") from None

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(6)

    def save(self, session: Session, session_id: str | None = None, *,
             artifact_namespace: str | None = None) -> str:
        """Store the session (a new id unless one is given) and return its id. `artifact_namespace`: the
        core.store namespace holding the artifacts of a session imported from a bundle."""
        text = session.to_json()
        if len(text.encode()) > MAX_SESSION_BYTES:
            raise SessionFileError(
                f"This session is {len(text.encode()):,} bytes; the limit is {MAX_SESSION_BYTES:,} bytes.")
        session_id = session_id or self.new_id()
        check_session_id(session_id)
        if artifact_namespace is not None:
            check_session_id(artifact_namespace)
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                       (session_id, session.title, session.created, session.page, text, artifact_namespace))
        return session_id

    def load(self, session_id: str) -> Session:
        check_session_id(session_id)
        with self._db() as db:
            row = db.execute("SELECT document FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise SessionFileError(f"No saved session has the id {session_id!r}.")
        if not isinstance(row[0], str):
            raise SessionFileError(f"The saved session {session_id!r} is corrupt in {self.path}.")
        return session_from_json(row[0])

    def artifact_namespace(self, session_id: str) -> str | None:
        """The artifact namespace of a session imported from a bundle (None for sessions saved here)."""
        check_session_id(session_id)
        with self._db() as db:
            row = db.execute("SELECT artifact_namespace FROM sessions WHERE id = ?", (session_id,)).fetchone()
        value = row[0] if row is not None else None
        return value if isinstance(value, str) and SESSION_ID_RE.match(value) else None

    def list(self) -> list[SessionSummary]:
        """Saved sessions, newest first."""
        with self._db() as db:
            rows = db.execute(
                "SELECT id, title, created, page FROM sessions ORDER BY created DESC, rowid DESC").fetchall()
        return [SessionSummary(*(str(v) for v in row)) for row in rows]

    def delete(self, session_id: str) -> str | None:
        """Delete the session; returns its artifact namespace (for the caller to delete from the store) or None."""
        namespace = self.artifact_namespace(session_id)
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        return namespace


def check_session_id(session_id: str) -> str:
    if not isinstance(session_id, str) or not SESSION_ID_RE.match(session_id):
        raise SessionFileError(f"{session_id!r} is not a session id (4-64 letters, digits, '-' or '_').")
    return session_id
