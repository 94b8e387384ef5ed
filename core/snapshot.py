"""Prebuilt artifacts shipped with Atlas: the organism's default views, so a fresh clone opens in seconds.

The snapshot (`assets/prebuilt/organism.zip`, written by `python -m core.organism prebuild`) is an Atlas
bundle (core.bundles): a session document naming the artifact keys, every artifact's arrays and meta, and a
manifest with the sha256 and size of every member. It is read with `core.bundles.read_bundle`, so it passes
every check an imported bundle passes (safe unzip, caps, checksums, `.npy` headers, harvest shapes) before
anything is written.

`seed_store(store)` copies the snapshot's artifacts that `store` lacks into it with `store.save` (atomic,
checksummed like any entry). They keep the keys a fresh run computes (sources + settings + CODE_VERSION /
ANALYSIS_VERSION), so the app finds them where it would have computed them; a snapshot made by other code or
for another organism is not used: the snapshot names the versions and the organism it was made for, and
`seed_store` copies nothing when they differ. Unlike an uploaded bundle (read-only namespace), the snapshot
ships with the code and has the code's trust; it still gets the bundle's checks.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import AtlasError
from core.harvest.components import link_components

SNAPSHOT_PATH = Path(__file__).resolve().parents[1] / "assets" / "prebuilt" / "organism.zip"
SNAPSHOT_TITLE = "Atlas prebuilt: the organism's default views"
log = logging.getLogger("atlas.snapshot")
_seeded: set[tuple[str, str]] = set()
_seed_lock = threading.Lock()


@dataclass(frozen=True)
class SeedReport:
    """What `seed_store` did: keys copied in, keys the store already had, and why nothing was used."""

    copied: tuple[str, ...] = ()
    present: tuple[str, ...] = ()
    skipped: str | None = None


def organism_digest(directory: str | Path | None = None) -> str:
    """sha256 of the organism's manifest.json (it lists the sha256 of every weight file): which organism."""
    from core.sources.organism import resolve_dir

    path = resolve_dir(directory) / "manifest.json"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "none"


def snapshot_stamp(directory: str | Path | None = None) -> dict[str, str]:
    """What a snapshot must have been made with to be used: code and analysis versions and the organism."""
    from core.analysis.keys import ANALYSIS_VERSION
    from core.store import CODE_VERSION

    return {"code_version": CODE_VERSION, "analysis_version": ANALYSIS_VERSION,
            "organism": organism_digest(directory)}


def write_snapshot(path: str | Path, store: Any, keys: Iterable[str]) -> Path:
    """The artifacts `keys` of `store` as a snapshot bundle at `path` (all of them must be present)."""
    import json

    from core.bundles import export_bundle
    from core.sessions import Session

    keys = list(keys)
    missing = [k for k in keys if store.load(k) is None]
    if missing:
        raise AtlasError(f"The store lacks {len(missing)} of the snapshot's artifacts ({missing[0][:12]}...).")
    session = Session(title=SNAPSHOT_TITLE, notes=json.dumps(snapshot_stamp(), sort_keys=True),
                      artifact_keys=keys, created="prebuilt")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(export_bundle(session, store))
    tmp.replace(path)
    return path


def read_snapshot(path: str | Path = SNAPSHOT_PATH):
    """(stamp, {key: (arrays, meta)}) of a snapshot, checked like an uploaded bundle (SessionFileError)."""
    import json

    from core.bundles import read_bundle
    from core.errors import SessionFileError

    contents = read_bundle(path)
    try:
        stamp = json.loads(contents.session.notes)
    except ValueError:
        stamp = None
    if contents.session.title != SNAPSHOT_TITLE or not isinstance(stamp, dict):
        raise SessionFileError(f"{path} is a bundle but not an Atlas prebuilt snapshot.")
    return stamp, contents.artifacts


def seed_store(store: Any, path: str | Path = SNAPSHOT_PATH) -> SeedReport:
    """Copy the snapshot's artifacts that `store` lacks into it (once per process, store and snapshot).

    Nothing is copied when there is no snapshot, when it was made by other code versions or for another
    organism than the one `$ATLAS_ORGANISM_DIR` / assets/organism holds, or when it fails its checks (a
    warning is logged: the app then computes the views as without a snapshot)."""
    path = Path(path)
    if not path.is_file():
        return SeedReport(skipped="no snapshot")
    marker = (str(Path(store.root).resolve()), str(path.resolve()))
    with _seed_lock:
        if marker in _seeded:
            return SeedReport(skipped="already seeded in this process")
        try:
            report = _seed(store, path)
        except AtlasError as error:
            log.warning("The prebuilt snapshot %s was not used: %s", path, error)
            report = SeedReport(skipped=str(error))
        _seeded.add(marker)
        return report


def _peek(path: Path) -> tuple[dict | None, list[str]]:
    """(stamp, keys) from the snapshot's session.json alone (a few KB), so that a store which already holds
    every artifact, or a snapshot for other code, costs no unpacking. The full checks run before any copy."""
    import json
    import zipfile

    from core.sessions import session_from_json

    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("session.json")
            if info.file_size > 1 << 20:
                return None, []
            session = session_from_json(archive.read(info))
        stamp = json.loads(session.notes)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, AtlasError):
        return None, []
    return (stamp if isinstance(stamp, dict) else None), list(session.artifact_keys)


def _seed(store: Any, path: Path) -> SeedReport:
    stamp, keys = _peek(path)
    if stamp is not None and stamp != snapshot_stamp():
        return SeedReport(skipped="made by other code or for another organism")
    if stamp is not None and keys and all(store.has(k) for k in keys):
        return SeedReport(present=tuple(keys))
    stamp, artifacts = read_snapshot(path)
    if stamp != snapshot_stamp():
        return SeedReport(skipped="made by other code or for another organism")
    present = tuple(k for k in sorted(artifacts) if store.has(k))
    copied = []
    for key in sorted(artifacts):
        if key not in present:
            arrays, meta = artifacts[key]
            store.save(key, arrays, meta)
            copied.append(key)
    for key in sorted(artifacts):   # a harvest's per-site / per-SAE parts, so another SAE set reuses them
        if artifacts[key][1].get("kind") == "harvest":
            link_components(store, key)
    return SeedReport(copied=tuple(copied), present=present)
