"""A session bundle of a stored harvest at scale: its size, and the cost of exporting and importing it, side by
side with a plain copy of the same artifact files (the baseline: what sharing the store's folders would cost).

    python -m bench bundle --store /tmp/browser-scale-store/cache        # e.g. the store `bench pages` keeps

The session holds one harvest (`--harvest KEY`; default: the largest in the store) and every stored view
(analyses, feature maps; small next to a harvest), as a session saved after visiting every page would.
Printed: the artifacts' bytes on disk by kind, the bundle's bytes (deflated zip) and its ratio to them,
the seconds of export, of the checks `read_bundle` makes, and of the import into an empty store and session
database, against a copy of the same files; the process's peak RSS. docs/PERFORMANCE.md has the figures.
"""

from __future__ import annotations

import argparse
import collections
import resource
import shutil
import tempfile
import time
from pathlib import Path

COMPONENT_KINDS = ("harvest-sae", "harvest-site")   # a harvest artifact holds its components (hard links)


def main(argv: list[str] | None = None) -> int:
    from core.bundles import export_bundle, import_bundle, read_bundle
    from core.sessions import Session, SessionStore
    from core.store import ArtifactStore

    parser = argparse.ArgumentParser(prog="python -m bench bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="an artifact store (ATLAS_CACHE_DIR) holding a harvest")
    parser.add_argument("--harvest", default=None, help="the harvest's key or a prefix (default: the largest)")
    args = parser.parse_args(argv)

    store = ArtifactStore(args.store)
    infos = store.list()
    harvests = [i for i in infos if i.kind == "harvest" and (args.harvest is None or i.key.startswith(args.harvest))]
    if not harvests:
        parser.error(f"no harvest{' ' + args.harvest if args.harvest else ''} in {args.store}")
    harvest = max(harvests, key=lambda i: i.size_bytes)
    chosen = [harvest] + [i for i in infos if i.kind not in ("harvest", *COMPONENT_KINDS)]
    by_kind: collections.Counter[str] = collections.Counter()
    for info in chosen:
        by_kind[info.kind or "?"] += info.size_bytes
    raw = sum(by_kind.values())
    print(f"session: harvest {harvest.key[:12]} ({harvest.size_bytes / 1e6:,.1f} MB) + {len(chosen) - 1} views")
    for kind, size in by_kind.most_common():
        print(f"  {kind:40s} {size / 1e6:10,.1f} MB")

    session = Session(title="bench bundle", created="2026-01-01T00:00:00+00:00", page="features",
                      artifact_keys=[i.key for i in chosen])
    start = time.perf_counter()
    data = export_bundle(session, store)
    export_s = time.perf_counter() - start
    start = time.perf_counter()
    read_bundle(data)
    check_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="atlas-bench-bundle-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        import_bundle(data, SessionStore(root / "sessions.sqlite"), ArtifactStore(root / "store"))
        import_s = time.perf_counter() - start
        start = time.perf_counter()
        for info in chosen:
            shutil.copytree(info.path, root / "copy" / info.key)
        copy_s = time.perf_counter() - start
    print(f"bundle {len(data) / 1e6:,.1f} MB = {len(data) / raw:.2f} x the artifacts' {raw / 1e6:,.1f} MB on disk")
    print(f"export {export_s:.1f} s, checks {check_s:.1f} s, import {import_s:.1f} s; plain copy {copy_s:.1f} s "
          f"(import / copy {import_s / max(copy_s, 1e-9):.1f}x)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    return 0
