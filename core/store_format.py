"""One artifact entry on disk: how `core.store` writes it and checks it when reading.

    <key>/
        <name>.npy      one per array (np.lib.format, allow_pickle=False; numbers and booleans only)
        meta.json       {"format": 2, "key": ..., "meta": <the caller's JSON>, "arrays": [names],
                         "files": {name: {"sha256": hex, "bytes": n}}, "saved_at": unix time}
        COMPLETE        "atlas-artifact 2\n<key>\n<sha256 of meta.json>\n", written last

Reading checks, in order: the marker's format and key, meta.json against the marker's checksum, then each
array file's size, `.npy` header (core.npy: dtype, and a shape that matches the bytes) and sha256. The
first failure is a `Corrupt` whose message says what was wrong; `core.store` turns it into a notice and a
recomputation.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.errors import ArtifactError
from core.npy import ALLOWED_KINDS, NpyError, check_size, read_header

FORMAT = 2   # 2: checksums in meta.json and the marker (entries without them are recomputed)
COMPLETE_MARKER = "COMPLETE"
META_FILE = "meta.json"
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
_HASH_BLOCK = 1 << 20


@dataclass
class Artifact:
    """A loaded artifact: `arrays` (name -> numpy array, memory-mapped) and `meta` (JSON dict)."""

    key: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path = field(default=Path())


class Corrupt(Exception):
    """An entry failed a check; the message says which (internal to the store: callers get a notice)."""


# ---------------------------------------------------------------------------------------------
class _HashingFile:
    """A write-only file wrapper that hashes and counts what passes through (np.save writes into it)."""

    def __init__(self, handle: Any):
        self.handle, self.sha, self.size = handle, hashlib.sha256(), 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.size += len(view)
        return self.handle.write(view)


def write_entry(directory: Path, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any],
                linked: Mapping[str, Path] | None = None) -> None:
    """Write one entry into `directory` (empty); `meta` must already be plain JSON values. `linked`: arrays
    that are existing .npy files (name -> path), hard-linked (copied across file systems), checked and hashed."""
    files = {}
    for name, source in (linked or {}).items():
        if not isinstance(name, str) or not _ARRAY_NAME.match(name):
            raise ArtifactError(f"Array name {name!r} is not allowed in an artifact.")
        target = directory / f"{name}.npy"
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
        with open(target, "rb") as handle:
            header = read_header(handle, f"{name}.npy")
        size = target.stat().st_size
        try:
            check_size(header, size - header.data_offset, f"{name}.npy")
        except NpyError as error:
            raise ArtifactError(f"Cannot link {source}: {error}") from None
        files[name] = {"sha256": _file_sha256(target), "bytes": size}
    for name, array in arrays.items():
        if not isinstance(name, str) or not _ARRAY_NAME.match(name):
            raise ArtifactError(f"Array name {name!r} is not allowed in an artifact.")
        array = np.asarray(array)
        if array.dtype.kind not in ALLOWED_KINDS or array.dtype.fields is not None:
            raise ArtifactError(f"Array {name!r} holds {array.dtype} values; only numbers and booleans are stored.")
        with open(directory / f"{name}.npy", "wb") as handle:
            hashing = _HashingFile(handle)
            np.lib.format.write_array(hashing, np.ascontiguousarray(array), allow_pickle=False)
        files[name] = {"sha256": hashing.sha.hexdigest(), "bytes": hashing.size}
    document = {"format": FORMAT, "key": key, "meta": dict(meta), "arrays": sorted(files),
                "files": files, "saved_at": time.time()}
    text = json.dumps(document, sort_keys=True, allow_nan=True).encode("utf-8")
    (directory / META_FILE).write_bytes(text)
    # Written last: its presence is what makes the artifact complete, its checksum what makes meta trusted.
    (directory / COMPLETE_MARKER).write_text(f"atlas-artifact {FORMAT}\n{key}\n{hashlib.sha256(text).hexdigest()}\n")


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            sha.update(block)
    return sha.hexdigest()


def read_entry(path: Path, key: str, marker: str, mmap: bool) -> Artifact:
    """The entry at `path` after every check (see the module docstring); raises Corrupt."""
    lines = marker.split("\n")
    if len(lines) < 3 or lines[0] != f"atlas-artifact {FORMAT}":
        raise Corrupt("written by an older Atlas without checksums" if lines[0] == key else "bad COMPLETE marker")
    if lines[1] != key:
        raise Corrupt("its COMPLETE marker names another key")
    try:
        text = (path / META_FILE).read_bytes()
    except OSError as error:
        raise Corrupt(f"meta.json unreadable: {error.strerror or error}") from None
    if hashlib.sha256(text).hexdigest() != lines[2]:
        raise Corrupt("meta.json does not match its checksum")
    try:
        document = json.loads(text)
        files = document["files"]
        meta = document["meta"]
        if not isinstance(files, dict) or not isinstance(meta, dict):
            raise TypeError("files/meta are not objects")
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise Corrupt(f"meta.json unreadable ({error})") from None
    arrays = {}
    for name, info in files.items():
        if not _ARRAY_NAME.match(name) or not isinstance(info, dict):
            raise Corrupt(f"meta.json lists a bad array entry {name!r}")
        file = path / f"{name}.npy"
        try:
            size = file.stat().st_size
            if size != info.get("bytes"):
                raise Corrupt(f"{name}.npy has {size:,} bytes instead of {info.get('bytes')}: truncated")
            with open(file, "rb") as handle:
                header = read_header(handle, f"{name}.npy")
            check_size(header, size - header.data_offset, f"{name}.npy")
            if _file_sha256(file) != info.get("sha256"):
                raise Corrupt(f"{name}.npy does not match its sha256 checksum")
            arrays[name] = np.load(file, allow_pickle=False, mmap_mode="r" if mmap else None)
        except NpyError as error:
            raise Corrupt(str(error)) from None
        except (OSError, ValueError) as error:
            raise Corrupt(f"{name}.npy unreadable ({error})") from None
    return Artifact(key=key, arrays=arrays, meta=meta, path=path)
