"""Local model and SAE directories that this server has loaded from its own sidebar.

A directory typed into the sidebar is remembered here once it loads; from then on a URL or a shared
session may name it by its short id (`dir:<id>` in the URL). Only remembered directories resolve, so a
link or a session document can never make the server open a path that nobody chose on this server.

Stored in $ATLAS_HOME/known_dirs.sqlite (one row per kind and resolved path; the id is the first 12 hex
digits of the SHA-256 of kind and path, so the same directory always gets the same id).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path
from typing import Literal

from core.uploads import atlas_home

DirKind = Literal["model", "sae"]
DIR_ID_RE = re.compile(r"^[0-9a-f]{12}$")


class KnownDirectories:
    """The directories (by kind) this server's sidebar has loaded, by id."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else atlas_home() / "known_dirs.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS dirs (id TEXT NOT NULL, kind TEXT NOT NULL, path TEXT NOT NULL,"
                       " PRIMARY KEY (kind, id))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)   # a connection per call: one thread per browser session

    @staticmethod
    def id_for(kind: DirKind, path: str) -> str:
        resolved = str(Path(path).expanduser().resolve())
        return hashlib.sha256(f"{kind}\n{resolved}".encode("utf-8", "surrogateescape")).hexdigest()[:12]

    def remember(self, kind: DirKind, path: str) -> str:
        """Record a directory that loaded; return its id."""
        resolved = str(Path(path).expanduser().resolve())
        dir_id = self.id_for(kind, resolved)
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO dirs VALUES (?, ?, ?)", (dir_id, kind, resolved))
        return dir_id

    def path_of(self, kind: DirKind, dir_id: str) -> str | None:
        """The directory with this id, or None when this server never loaded it."""
        if not isinstance(dir_id, str) or not DIR_ID_RE.match(dir_id):
            return None
        with self._connect() as db:
            row = db.execute("SELECT path FROM dirs WHERE kind = ? AND id = ?", (kind, dir_id)).fetchone()
        return row[0] if row else None

    def is_known(self, kind: DirKind, path: str) -> bool:
        try:
            dir_id = self.id_for(kind, path)
        except (OSError, RuntimeError, ValueError):
            return False
        return self.path_of(kind, dir_id) is not None
