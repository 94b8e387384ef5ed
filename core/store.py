"""The artifact store: results saved on disk under a deterministic key, checked on every read.

An artifact is a directory `<root>/<key[:2]>/<key>/` holding one `.npy` file per array (written with
`allow_pickle=False`), `meta.json` (the caller's meta plus the sha256 and size of every array file), and a
`COMPLETE` marker written last that holds the sha256 of `meta.json`. Nothing is ever unpickled.

Guarantees (docs/RELIABILITY.md gives the figures from the tests):
- Atomic: a save is written into a temporary directory beside the final one and renamed into place, so a
  partial or killed write is never taken for a complete one.
- Concurrent writers and readers of one key: renames happen under an exclusive `flock` on the key's lock file
  (`<root>/<key[:2]>/.lock-<key>`), reads open their files under a shared lock. A reader never sees a
  half-replaced entry; arrays it memory-mapped stay valid after a later writer replaces the entry.
- Checked on read: the marker's checksum of meta.json and each array file's sha256, size and `.npy` header
  (core.npy: shape and dtype checked before allocation). A corrupt or truncated entry, or one written by an
  older Atlas without checksums, is removed and `load` returns None with a notice (logged as a warning and
  kept in `store.notices`), so every caching caller (harvest_cached, cached_result, feature_map) recomputes it.
- Leftovers of killed writes (`.tmp-*`, `.old-*`, `.corrupt-*` older than STALE_SECONDS) are removed once per
  process and root, the first time the root is opened.
- Imported artifacts live in their own read-only namespaces, `<root>/imports/<name>/` (same layout), written
  all or nothing by `write_namespace`; the local entries never see them (`namespace(name)` reads one,
  `StoreView(local, namespace)` reads the local store first, then the namespace).

The key is the sha256 of the canonical JSON (sorted keys, no whitespace) of the parts that define a result
(model + revision/checkpoint, SAE ids, corpus slice, settings) plus `CODE_VERSION`; bump `CODE_VERSION`
whenever a change to the harvest changes its numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from core.errors import ArtifactError
from core.jsonable import jsonable
from core.store_format import COMPLETE_MARKER, FORMAT, META_FILE, Artifact, Corrupt, read_entry, write_entry  # noqa: F401

try:  # POSIX advisory locks; elsewhere the store still writes atomically but does not lock
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Bump when the numbers a harvest produces change for the same inputs.
CODE_VERSION = "harvest-2"  # 2: per-SAE/per-site artifacts, sampled chunk incidence, context activations, splice quality

IMPORTS_DIR = "imports"
STALE_SECONDS = 3600.0   # a temporary directory this old belongs to a killed write
_KEY = re.compile(r"^[0-9a-f]{64}$")
_SHARD = re.compile(r"^[0-9a-f]{2}$")
_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_LEFTOVER = (".tmp-", ".old-", ".corrupt-")
_MAX_NOTICES = 100

log = logging.getLogger("atlas.store")
_cleaned_roots: set[str] = set()
_cleaned_lock = threading.Lock()


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


@dataclass(frozen=True)
class ArtifactInfo:
    key: str
    path: Path
    size_bytes: int
    modified: float
    kind: str | None


class ArtifactStore:
    """Deterministic-key, atomic, locked, checksummed, pickle-free store of numpy arrays + JSON metadata.

    `notify(message)` receives the notices (a corrupt entry removed for recomputation); by default they
    are logged on the "atlas.store" logger. Every notice is also appended to `self.notices`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, read_only: bool = False,
                 notify: Callable[[str], None] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_dir()
        self.read_only = read_only
        self.notify = notify
        self.notices: list[str] = []
        if not read_only:
            self._clean_once()

    # -- paths ------------------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        if not isinstance(key, str) or not _KEY.match(key):
            raise ArtifactError(f"{key!r} is not an artifact key (64 hex digits).")
        return self.root / key[:2] / key

    def has(self, key: str) -> bool:
        """Whether a complete entry exists (its checks run when it is loaded)."""
        path = self.path_for(key)
        if not path.parent.is_dir():
            return False
        with self._locked(key, exclusive=False):  # never "absent" halfway through a writer's replacement
            return (path / COMPLETE_MARKER).is_file()

    @contextlib.contextmanager
    def _locked(self, key: str, exclusive: bool) -> Iterator[None]:
        """Hold the key's lock (exclusive for renames, shared for reads). Lock files are never deleted:
        deleting one while another process waits on it would let two holders in."""
        shard = self.root / key[:2]
        # Namespaces are written once, by a rename of the whole folder: their readers need no lock.
        if fcntl is None or self.read_only or (not exclusive and not shard.is_dir()):
            yield
            return
        shard.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(shard / f".lock-{key}", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            if exclusive:
                raise
            yield  # a read-only store without write access to its folder: nothing can write there either
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- write ------------------------------------------------------------------------
    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        """Write all arrays and the meta into a temp dir, mark it complete, rename into place.

        An existing complete artifact under the same key is replaced (same key = same result).
        """
        return self._write(key, lambda tmp: write_entry(tmp, key, arrays, jsonable(dict(meta), strict=True)))

    def _write(self, key: str, fill: Callable[[Path], None]) -> Path:
        """`fill` a temporary directory beside the entry, then swap it in under the key's exclusive lock."""
        if self.read_only:
            raise ArtifactError(f"The artifact store at {self.root} is read-only (imported artifacts).")
        final = self.path_for(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=final.parent))
        try:
            fill(tmp)
            with self._locked(key, exclusive=True):
                trash = None
                if final.exists():
                    trash = final.with_name(f".old-{key[:12]}-{os.getpid()}-{time.time_ns()}")
                    os.replace(final, trash)
                os.replace(tmp, final)
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    def save_linked(self, key: str, files: Mapping[str, Path], meta: Mapping[str, Any]) -> Path:
        """An artifact whose arrays are existing .npy files (name -> path), hard-linked rather than
        copied (copied where a link is impossible, e.g. across file systems): the bytes are written once.
        Atomic, locked and checksummed like `save` (each linked file's header is checked and hashed)."""
        return self._write(key, lambda tmp: write_entry(tmp, key, {}, jsonable(dict(meta), strict=True), linked=files))

    def link_from(self, other: "ArtifactStore", key: str) -> bool:
        """Put `other`'s artifact `key` into this store by hard links (copies across file systems).
        False when `other` lacks it (or it failed its checks); nothing is done when this store already has it."""
        if self.load(key) is not None:
            return True
        artifact = other.load(key)
        if artifact is None:
            return False
        self.save_linked(key, {n: artifact.path / f"{n}.npy" for n in artifact.arrays}, artifact.meta)
        return True

    # -- read -------------------------------------------------------------------------
    def load(self, key: str, mmap: bool = True) -> Artifact | None:
        """The complete artifact under `key`, or None when there is none or it failed its checks.

        Arrays are memory-mapped read-only (mmap=True) or read into memory. A failed check (checksum, size,
        header, unreadable JSON, no checksums) removes the entry (local stores) and gives a notice, so the
        caller recomputes and saves it again.
        """
        path = self.path_for(key)
        if not path.parent.is_dir():
            return None
        with self._locked(key, exclusive=False):   # a writer replaces the entry only under the exclusive lock
            try:
                marker = (path / COMPLETE_MARKER).read_text(encoding="utf-8", errors="replace")
            except (FileNotFoundError, NotADirectoryError):
                return None
            try:
                return read_entry(path, key, marker, mmap)
            except Corrupt as problem:
                reason = str(problem)
        self._discard(key, marker, reason)
        return None

    def verify(self, key: str) -> str | None:
        """Why the entry under `key` fails its checks, or None when it is complete and intact (or absent).
        Reads every byte; changes nothing."""
        path = self.path_for(key)
        if not path.parent.is_dir():
            return None
        with self._locked(key, exclusive=False):
            try:
                marker = (path / COMPLETE_MARKER).read_text(encoding="utf-8", errors="replace")
            except (FileNotFoundError, NotADirectoryError):
                return None
            try:
                read_entry(path, key, marker, mmap=False)
            except Corrupt as problem:
                return str(problem)
        return None

    def _discard(self, key: str, marker_seen: str, reason: str) -> None:
        where = f"{key[:12]}… in {self.root}"
        if self.read_only:
            self._notice(f"The imported result {where} is corrupt ({reason}); it is not used.")
            return
        path = self.path_for(key)
        with self._locked(key, exclusive=True):
            try:
                still_same = (path / COMPLETE_MARKER).read_text(encoding="utf-8", errors="replace") == marker_seen
            except FileNotFoundError:
                still_same = False
            if not still_same:  # another process replaced it meanwhile: theirs is a fresh write
                return
            corrupt = path.with_name(f".corrupt-{key[:12]}-{os.getpid()}-{time.time_ns()}")
            os.replace(path, corrupt)
        shutil.rmtree(corrupt, ignore_errors=True)
        self._notice(f"The cached result {where} was corrupt ({reason}); it was removed and is recomputed.")

    def _notice(self, message: str) -> None:
        self.notices.append(message)
        del self.notices[:-_MAX_NOTICES]
        (self.notify or log.warning)(message)

    # -- namespaces (imported artifacts) -------------------------------------------------
    def namespace(self, name: str) -> "ArtifactStore":
        """The read-only store of the imported namespace `name` (empty when it does not exist)."""
        return ArtifactStore(self._namespace_root(name), read_only=True, notify=self.notify)

    def has_namespace(self, name: str) -> bool:
        return self._namespace_root(name).is_dir()

    def namespaces(self) -> list[str]:
        base = self.root / IMPORTS_DIR
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and _NAMESPACE.match(p.name))

    def write_namespace(self, name: str,
                        artifacts: Mapping[str, tuple[Mapping[str, np.ndarray], Mapping]]) -> "ArtifactStore":
        """Write `artifacts` (key -> (arrays, meta)) as the new namespace `name`, all or nothing.

        Everything is written into a temporary directory that is renamed into place at the end, so a
        failure (or a kill) leaves no namespace behind. An existing namespace of that name is refused.
        Returns the namespace's read-only store.
        """
        if self.read_only:
            raise ArtifactError(f"The artifact store at {self.root} is read-only.")
        final = self._namespace_root(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            raise ArtifactError(f"An import named {name!r} already exists in {self.root}.")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name[:24]}-", dir=final.parent))
        try:
            for key, (arrays, meta) in artifacts.items():
                if not isinstance(key, str) or not _KEY.match(key):
                    raise ArtifactError(f"{key!r} is not an artifact key (64 hex digits).")
                entry = tmp / key[:2] / key
                entry.parent.mkdir(parents=True, exist_ok=True)
                entry.mkdir()
                write_entry(entry, key, arrays, jsonable(dict(meta), strict=True))
            os.rename(tmp, final)  # fails if `name` appeared meanwhile: never merges two imports
        except OSError as error:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ArtifactError(f"The imported artifacts could not be written to {final} ({error}).") from error
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self.namespace(name)

    def delete_namespace(self, name: str) -> bool:
        path = self._namespace_root(name)
        if not path.exists():
            return False
        trash = path.with_name(f".old-{name[:24]}-{os.getpid()}-{time.time_ns()}")
        os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def _namespace_root(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAMESPACE.match(name):
            raise ArtifactError(f"{name!r} is not an import namespace name (1-64 letters, digits, '-', '_').")
        return self.root / IMPORTS_DIR / name

    # -- housekeeping -----------------------------------------------------------------
    def _shards(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if shard.is_dir() and _SHARD.match(shard.name):
                yield shard

    def iter_keys(self) -> Iterator[str]:
        for shard in self._shards():
            for entry in sorted(shard.iterdir()):
                if _KEY.match(entry.name) and (entry / COMPLETE_MARKER).is_file():
                    yield entry.name

    def list(self) -> list[ArtifactInfo]:
        """Every complete artifact; size_bytes counts each file once per artifact (hard-linked files
        shared between artifacts count in each; `size_summary` counts them once)."""
        infos = []
        for key in self.iter_keys():
            path = self.path_for(key)
            try:
                size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
                kind = json.loads((path / META_FILE).read_text()).get("meta", {}).get("kind")
                modified = (path / COMPLETE_MARKER).stat().st_mtime
            except (OSError, ValueError, AttributeError):
                continue  # replaced or removed meanwhile, or corrupt (load reports it)
            infos.append(ArtifactInfo(key, path, size, modified, kind if isinstance(kind, str) else None))
        return infos

    def delete(self, key: str) -> bool:
        if self.read_only:
            raise ArtifactError(f"The artifact store at {self.root} is read-only.")
        path = self.path_for(key)
        with self._locked(key, exclusive=True):
            if not path.exists():
                return False
            trash = path.with_name(f".old-{key[:12]}-{os.getpid()}-{time.time_ns()}")
            os.replace(path, trash)
        shutil.rmtree(trash, ignore_errors=True)
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

    def clean_partial(self, older_than: float = 0.0) -> int:
        """Remove leftovers of interrupted writes older than `older_than` seconds; returns how many.

        Leftovers are temporary directories (`.tmp-*`: a write that never finished; `.old-*`, `.corrupt-*`:
        entries moved aside to be deleted) and key directories without a COMPLETE marker. A write in
        progress is younger than STALE_SECONDS, which is what the automatic clean-up waits for.
        """
        removed = 0
        now = time.time()
        folders = [*self._shards()]
        if (self.root / IMPORTS_DIR).is_dir():
            folders.append(self.root / IMPORTS_DIR)
        for folder in folders:
            for entry in folder.iterdir():
                try:
                    if not entry.is_dir() or now - entry.stat().st_mtime < older_than:
                        continue
                except FileNotFoundError:
                    continue
                if entry.name.startswith(_LEFTOVER):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
                elif _KEY.match(entry.name) and folder.name != IMPORTS_DIR:
                    # a key folder without its marker: move it aside under the key's lock, so that a writer
                    # replacing it at this moment never loses its fresh entry
                    with self._locked(entry.name, exclusive=True):
                        if (entry / COMPLETE_MARKER).exists() or not entry.is_dir():
                            continue
                        trash = entry.with_name(f".old-{entry.name[:12]}-{os.getpid()}-{time.time_ns()}")
                        os.replace(entry, trash)
                    shutil.rmtree(trash, ignore_errors=True)
                    removed += 1
        return removed

    def _clean_once(self) -> None:
        """Remove stale leftovers the first time this process opens this root."""
        root = str(self.root.resolve()) if self.root.exists() else str(self.root)
        with _cleaned_lock:
            if root in _cleaned_roots:
                return
            _cleaned_roots.add(root)
        try:
            removed = self.clean_partial(older_than=STALE_SECONDS)
        except OSError:
            return
        if removed:
            log.info("removed %d leftover(s) of interrupted writes from %s", removed, self.root)


class StoreView:
    """A read-only view over several stores: `load`/`has` answer from the first store that holds the key.

    Used for a session restored from a bundle: StoreView(local_store, local_store.namespace(name)) reads
    this machine's own results first and the bundle's artifacts after them; nothing can be saved through it.
    """

    def __init__(self, *stores: ArtifactStore):
        self.stores = stores

    def has(self, key: str) -> bool:
        return any(store.has(key) for store in self.stores)

    def load(self, key: str, mmap: bool = True) -> Artifact | None:
        for store in self.stores:
            artifact = store.load(key, mmap=mmap)
            if artifact is not None:
                return artifact
        return None

    def save(self, key: str, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> Path:
        raise ArtifactError("This view of imported artifacts is read-only.")
