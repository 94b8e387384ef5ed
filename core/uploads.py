"""Atlas's home folder and its upload folder: the one place a `file` corpus may come from.

A file corpus is named by its *upload name*, never by a server path: the sidebar stores an uploaded file
as `$ATLAS_HOME/uploads/<first 16 hex digits of its SHA-256><suffix>` and keeps only that name. Anything
restored from outside (a session document, a URL, a bundle) is resolved through `upload_path`, which
accepts exactly such names and only files that really lie in the upload folder (symbolic links are
followed before the containment check), so a shared session can never make the server read another file.

MAX_UPLOAD_MB limits a corpus or concept-set upload (each uploader says so): the corpus reader reads this much
of a file whole (core.sources.corpus.MAX_FILE_BYTES is not smaller). MAX_BUNDLE_UPLOAD_MB limits a bundle zip on
the Sessions page: a GPT-2-small session with two 24,576-feature SAEs bundled to 135 MB, and 12 such SAEs after a
long harvest come to about 1 GB (docs/PERFORMANCE.md, "Sharing a GPT-2-scale session"). The server's own limit (`server.maxUploadSize` in .streamlit/config.toml, enforced on
the request body) is the larger of the two; a test checks they agree.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from core.errors import AtlasError

UPLOAD_SUFFIXES = (".txt", ".jsonl", ".csv")
CONCEPT_SUFFIXES = (".csv", ".json")   # concept sets (core.concepts.read_concept_file), on the Geometry page
MAX_UPLOAD_MB = 256
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
MAX_BUNDLE_UPLOAD_MB = 1024   # bundle zips (core.bundles caps what they inflate to: MAX_BUNDLE_TOTAL_BYTES)
SERVER_UPLOAD_MB = max(MAX_UPLOAD_MB, MAX_BUNDLE_UPLOAD_MB)
UPLOAD_NAME_RE = re.compile(r"^[0-9a-f]{16}\.(txt|jsonl|csv|json)$")


class UploadError(AtlasError):
    """A corpus file that is not (or cannot become) one of Atlas's own uploads."""


NOT_AN_UPLOAD = ("A corpus file must be one uploaded to this Atlas (upload it in the sidebar under Sources > "
                 "Corpus); other files on the server cannot be opened.")


def atlas_home() -> Path:
    """$ATLAS_HOME, or ~/.atlas: sessions, uploads and the list of known local directories."""
    home = os.environ.get("ATLAS_HOME")
    return Path(home) if home else Path.home() / ".atlas"


def uploads_dir() -> Path:
    return atlas_home() / "uploads"


def is_within(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether `path`, with every symbolic link and '..' resolved, lies inside `root` (resolved too)."""
    try:
        Path(path).resolve().relative_to(Path(root).resolve())
    except (ValueError, OSError, RuntimeError):   # outside; unreadable; a symlink loop
        return False
    return True


def save_upload(data: bytes, filename: str, *, suffixes: tuple[str, ...] = UPLOAD_SUFFIXES) -> str:
    """Store an uploaded file (a corpus; a concept set with `suffixes=CONCEPT_SUFFIXES`) in the upload folder
    (content-addressed; once) and return its name."""
    suffix = Path(filename).suffix.lower()
    if suffix not in suffixes:
        names = ", ".join(suffixes[:-1]) + f" and {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]
        raise UploadError(f"Atlas reads {names} files here; {filename!r} is none of these. "
                          "Save it in one of these formats and upload it again.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"The file is {len(data) / 2**20:,.0f} MB; uploads are limited to {MAX_UPLOAD_MB} MB. "
                          "Upload a smaller sample of the corpus.")
    if not data.strip():
        raise UploadError(f"The file {filename!r} is empty: upload a file with text in it.")
    name = f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    directory = uploads_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if not path.is_file():
        # temp file + rename: a reader never sees half a file, two sessions uploading it at once agree
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".upload-", delete=False) as handle:
            handle.write(data)
        os.replace(handle.name, path)
    return name


def upload_path(name: str) -> Path:
    """The file of the upload called `name`; UploadError unless it is one of Atlas's own uploads."""
    if not isinstance(name, str) or not UPLOAD_NAME_RE.match(name):
        raise UploadError(NOT_AN_UPLOAD)
    path = uploads_dir() / name
    if not is_within(path, uploads_dir()) or not path.is_file():
        raise UploadError("This uploaded corpus file is no longer on this Atlas server: upload it again in the "
                          "sidebar under Sources > Corpus.")
    return path


def upload_name_of(path_or_name: str) -> str:
    """The upload name of an upload given by name or by its full path (as sessions saved before names
    were stored); UploadError for any other file."""
    if isinstance(path_or_name, str) and UPLOAD_NAME_RE.match(path_or_name):
        upload_path(path_or_name)
        return path_or_name
    if isinstance(path_or_name, str) and path_or_name and "\x00" not in path_or_name:
        candidate = Path(path_or_name)
        if candidate.is_absolute() and is_within(candidate, uploads_dir()):
            name = candidate.resolve().name
            if UPLOAD_NAME_RE.match(name):
                upload_path(name)
                return name
    raise UploadError(NOT_AN_UPLOAD)
