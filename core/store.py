"""The artifact store: results saved on disk under a deterministic key.

An artifact is a directory `<root>/<key[:2]>/<key>/` holding one `.npy` file per array
(written with `allow_pickle=False`), `meta.json`, and a `COMPLETE` marker written last.
Every save goes to a temporary directory beside the final one and is renamed into place,
so a partial or interrupted run is never taken for a complete one: `has`/`load` only
see directories whose `COMPLETE` marker exists. Nothing is ever unpickled.

The key is the sha256 of the canonical JSON (sorted keys, no whitespace) of the parts that
define a result (model + revision/checkpoint, SAE ids, corpus slice, settings) plus
`CODE_VERSION`; bump `CODE_VERSION` whenever a change to the harvest changes its numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from core.errors import ArtifactError
from core.jsonable import jsonable

# Bump when the numbers a harvest produces change for the same inputs.
CODE_VERSION = "harvest-2"  # 2: per-SAE/per-site artifacts, sampled chunk incidence, context activations, splice quality

COMPLETE_MARKER = "COMPLETE"
META_FILE = "meta.json"
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,200}$")
_KEY = re.compile(r"^[0-9a-f]{64}$")


def default_cache_dir() -> Path:
    """`$ATLAS_CACHE_DIR`, else `~/.cache/atlas`."""
    configured = os.environ.get("ATLAS_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "atlas"


def canonical_json(parts: Mapping[str, Any]) -> str:
    """JSON with sorted keys and no whitespace: the same parts always give the same text."""
    return json.dumps(jsonable(parts, strict=True), sort_keys=True, separators=(",", ":"), allow_nan=False)


def artifact_key(**parts: Any) -> str:
    """sha256 (hex) of the canonical JSON of `parts` plus `CODE_VERSION`."""
    payload = canonical_json({"parts": parts, "code_version": CODE_VERSION})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class Artifact:
    """A loaded artifact: `arrays` (name -> numpy array, memory-mapped) and `meta` (JSON dict)."""

    key: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path = field(default=Path())


@dataclass(frozen=True)
class ArtifactInfo:
    key: str
    path: Path
    size_bytes: int
    modified: float
    kind: str | None


class ArtifactStore:
    """Deterministic-key, atomic-write, pickle-free store of numpy arrays + JSON metadata."""

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()

    # -- paths ------------------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ArtifactError(f"{key!r} is not an artifact key (64 hex digits).")
        return self.root / key[:2] / key

    def has(self, key: str) -> bool:
        return (self.path_for(key) / COMPLETE_MARKER).is_file()

    # -- write ------------------------------------------------------------------------
    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        """Write all arrays and the meta into a temp dir, mark it complete, rename into place.

        An existing complete artifact under the same key is replaced (same key = same result).
        """
        final = self.path_for(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=final.parent))
        try:
            names = []
            for name, array in arrays.items():
                if not _ARRAY_NAME.match(name):
                    raise ArtifactError(f"Array name {name!r} is not allowed in an artifact.")
                array = np.asarray(array)
                if array.dtype == object:
                    raise ArtifactError(f"Array {name!r} holds Python objects; only numbers are stored.")
                np.save(tmp / f"{name}.npy", array, allow_pickle=False)
                names.append(name)
            document = {"meta": jsonable(dict(meta), strict=True), "arrays": sorted(names), "saved_at": time.time()}
            (tmp / META_FILE).write_text(json.dumps(document, sort_keys=True, allow_nan=True))
            # Written last: its presence is what makes the artifact complete.
            (tmp / COMPLETE_MARKER).write_text(key)
            if final.exists():
                trash = final.with_name(f".old-{key[:12]}-{os.getpid()}-{time.time_ns()}")
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def save_linked(self, key: str, files: Mapping[str, Path], meta: Mapping[str, Any]) -> Path:
        """An artifact whose arrays are existing .npy files (name -> path), hard-linked rather than
        copied (copied where a link is impossible, e.g. across file systems): the bytes are written once.
        Atomic like `save`."""
        final = self.path_for(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=final.parent))
        try:
            for name, source in files.items():
                if not _ARRAY_NAME.match(name):
                    raise ArtifactError(f"Array name {name!r} is not allowed in an artifact.")
                target = tmp / f"{name}.npy"
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
            document = {"meta": jsonable(dict(meta), strict=True), "arrays": sorted(files), "saved_at": time.time()}
            (tmp / META_FILE).write_text(json.dumps(document, sort_keys=True, allow_nan=True))
            (tmp / COMPLETE_MARKER).write_text(key)
            if final.exists():
                trash = final.with_name(f".old-{key[:12]}-{os.getpid()}-{time.time_ns()}")
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def link_from(self, other: "ArtifactStore", key: str) -> bool:
        """Put `other`'s artifact `key` into this store by hard links (copies across file systems).
        False when `other` lacks it; nothing is done when this store already has it."""
        if self.has(key):
            return True
        source = other.path_for(key)
        if not other.has(key):
            return False
        document = json.loads((source / META_FILE).read_text())
        names = [n for n in document["arrays"] if _ARRAY_NAME.match(n)]
        self.save_linked(key, {n: source / f"{n}.npy" for n in names}, document.get("meta", {}))
        return True

    # -- read -------------------------------------------------------------------------
    def load(self, key: str, mmap: bool = True) -> Artifact | None:
        """The complete artifact under `key`, or None. Arrays are memory-mapped read-only."""
        path = self.path_for(key)
        if not (path / COMPLETE_MARKER).is_file():
            return None
        try:
            document = json.loads((path / META_FILE).read_text())
            arrays = {
                name: np.load(path / f"{name}.npy", allow_pickle=False, mmap_mode="r" if mmap else None)
                for name in document["arrays"]
                if _ARRAY_NAME.match(name)
            }
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ArtifactError(
                f"The cached result {key[:12]}… in {self.root} is unreadable ({error}); delete it and run again."
            ) from error
        return Artifact(key=key, arrays=arrays, meta=document.get("meta", {}), path=path)

    # -- housekeeping -----------------------------------------------------------------
    def iter_keys(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if not shard.is_dir() or len(shard.name) != 2:
                continue
            for entry in sorted(shard.iterdir()):
                if _KEY.match(entry.name) and (entry / COMPLETE_MARKER).is_file():
                    yield entry.name

    def list(self) -> list[ArtifactInfo]:
        """Every complete artifact; size_bytes counts each file once per artifact (hard-linked files
        shared between artifacts count in each; `size_summary` counts them once)."""
        infos = []
        for key in self.iter_keys():
            path = self.path_for(key)
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            try:
                kind = json.loads((path / META_FILE).read_text()).get("meta", {}).get("kind")
            except (OSError, ValueError):
                kind = None
            infos.append(ArtifactInfo(key, path, size, (path / COMPLETE_MARKER).stat().st_mtime, kind))
        return infos

    def delete(self, key: str) -> bool:
        path = self.path_for(key)
        if not path.exists():
            return False
        shutil.rmtree(path)
        return True

    def size_summary(self) -> dict[str, int]:
        """{"artifacts": count, "bytes": total size} of the complete artifacts."""
        infos = self.list()
        seen, total = set(), 0
        for info in infos:
            for f in info.path.iterdir():
                st = f.stat()
                if f.is_file() and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
        return {"artifacts": len(infos), "bytes": int(total)}

    def clean_partial(self) -> int:
        """Remove leftovers of interrupted writes; returns how many were removed."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for shard in self.root.iterdir():
            if not shard.is_dir():
                continue
            for entry in shard.iterdir():
                if entry.name.startswith((".tmp-", ".old-")) or (
                    _KEY.match(entry.name) and not (entry / COMPLETE_MARKER).is_file()
                ):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        return removed
