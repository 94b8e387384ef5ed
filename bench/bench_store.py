"""The artifact store under concurrency: 8 writer and 8 reader processes on ONE key, side by side with the
rename discipline Atlas had before (no lock, no checksums), which is kept here as the baseline.

    python -m bench store [--writers 8] [--readers 8] [--saves 20] [--loads 60] [--mb 4]

Every writer saves `--saves` versions of the same key (arrays filled with one tag, the tag in the meta);
every reader loads the key `--loads` times and checks that the arrays agree with the meta (a torn entry
would mix two versions). Counted per store: operations that raised, torn reads, reads that found the
key absent after it had been seen (a false "missing"), and whether the final entry is complete.
Printed: those counts for both stores, the wall time of each run and their ratio, and the cost of a
checksummed load against a bare np.load of the same arrays.

The worker half (`worker`) is what tests/test_store_reliability.py runs too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

KEY = "ab" * 32
ROOT = Path(__file__).resolve().parents[1]


class LegacyStore:
    """The store before the reliability work: temp dir + rename, no lock, no checksums (the baseline)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def save(self, key: str, arrays: dict, meta: dict) -> None:
        final = self.root / key[:2] / key
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=final.parent))
        try:
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            (tmp / "meta.json").write_text(json.dumps({"meta": meta, "arrays": sorted(arrays)}))
            (tmp / "COMPLETE").write_text(key)
            if final.exists():
                trash = final.with_name(f".old-{key[:12]}-{os.getpid()}-{time.time_ns()}")
                os.replace(final, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def load(self, key: str):
        path = self.root / key[:2] / key
        if not (path / "COMPLETE").is_file():
            return None
        try:
            document = json.loads((path / "meta.json").read_text())
            arrays = {n: np.load(path / f"{n}.npy", mmap_mode="r") for n in document["arrays"]}
        except (OSError, ValueError, KeyError) as error:
            raise RuntimeError(f"unreadable ({error})") from error
        return type("A", (), {"arrays": arrays, "meta": document["meta"]})


def _store(kind: str, root: str):
    if kind == "legacy":
        return LegacyStore(root)
    from core.store import ArtifactStore

    return ArtifactStore(root)


def worker(kind: str, root: str, role: str, ident: int, count: int, n_values: int) -> dict:
    """One process's share: `count` saves (writer) or loads (reader) of KEY. Returns the tallies."""
    store = _store(kind, root)
    tally = {"ops": 0, "errors": 0, "torn": 0, "false_missing": 0, "first_errors": []}
    seen = False
    for i in range(count):
        try:
            if role == "writer":
                tag = ident * 100_000 + i
                store.save(KEY, {"a": np.full(n_values, tag, np.int64), "b": np.full(n_values // 2, -tag, np.int64)},
                           {"tag": tag})
            else:
                artifact = store.load(KEY)
                if artifact is None:
                    tally["false_missing"] += seen
                else:
                    seen = True
                    tag = artifact.meta["tag"]
                    if not (np.all(artifact.arrays["a"] == tag) and np.all(artifact.arrays["b"] == -tag)):
                        tally["torn"] += 1
            tally["ops"] += 1
        except Exception as error:  # noqa: BLE001 - counting every failure is the point
            tally["errors"] += 1
            if len(tally["first_errors"]) < 3:
                tally["first_errors"].append(f"{type(error).__name__}: {error}")
    return tally


def run_processes(kind: str, root: str, writers: int, readers: int, saves: int, loads: int,
                  n_values: int, timeout: float = 600) -> dict:
    """Start the writers and readers together on one key; returns the summed tallies, the wall time and
    whether the entry left at the end is complete and untorn."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    roles = [("writer", i, saves) for i in range(writers)] + [("reader", i, loads) for i in range(readers)]
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "bench.bench_store", "--worker", kind, root, role, str(i),
                               str(n), str(n_values)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for role, i, n in roles]
    totals = {"writer_ops": 0, "reader_ops": 0, "errors": 0, "torn": 0, "false_missing": 0, "first_errors": []}
    for (role, _, _), proc in zip(roles, procs):
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"a {role} process failed: {err[-2000:]}")
        tally = json.loads(out.strip().splitlines()[-1])
        totals[f"{role}_ops"] += tally["ops"]
        for name in ("errors", "torn", "false_missing"):
            totals[name] += tally[name]
        totals["first_errors"] += tally["first_errors"][: max(0, 3 - len(totals["first_errors"]))]
    totals["seconds"] = time.perf_counter() - start
    try:
        final = _store(kind, root).load(KEY)
        totals["final_complete"] = final is not None and bool(np.all(final.arrays["a"] == final.meta["tag"]))
    except Exception:  # noqa: BLE001
        totals["final_complete"] = False
    return totals


def _load_cost(n_values: int, repeats: int = 20) -> tuple[float, float]:
    from core.store import ArtifactStore

    with tempfile.TemporaryDirectory() as root:
        store = ArtifactStore(root)
        path = store.save(KEY, {"a": np.arange(n_values, dtype=np.int64)}, {"tag": 0})
        checked, bare = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            store.load(KEY)
            checked.append(time.perf_counter() - t)
            t = time.perf_counter()
            np.load(path / "a.npy", mmap_mode="r")
            bare.append(time.perf_counter() - t)
    return float(np.median(checked)), float(np.median(bare))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--readers", type=int, default=8)
    parser.add_argument("--saves", type=int, default=20, help="saves per writer")
    parser.add_argument("--loads", type=int, default=60, help="loads per reader")
    parser.add_argument("--mb", type=float, default=4.0, help="size of one version of the artifact (MB)")
    args = parser.parse_args(argv)
    n_values = max(2, int(args.mb * 1e6 / 8 / 1.5))
    print(f"store: {args.writers} writers x {args.saves} saves, {args.readers} readers x {args.loads} loads, "
          f"one key, {args.mb:g} MB per version")
    results = {}
    for kind in ("legacy", "atlas"):
        with tempfile.TemporaryDirectory() as root:
            results[kind] = run_processes(kind, root, args.writers, args.readers, args.saves, args.loads, n_values)
        r = results[kind]
        print(f"  {kind:7s} {r['seconds']:7.2f} s  errors {r['errors']:4d}  torn reads {r['torn']:3d}  "
              f"false 'missing' {r['false_missing']:3d}  final entry complete: {r['final_complete']}")
        for error in r["first_errors"]:
            print(f"          e.g. {error[:150]}")
    ratio = results["atlas"]["seconds"] / results["legacy"]["seconds"]
    print(f"  wall time atlas / legacy = {ratio:.2f}x (locks and checksums included)")
    checked, bare = _load_cost(n_values)
    print(f"  one load of {args.mb:g} MB: checked {checked * 1e3:.1f} ms vs bare np.load {bare * 1e3:.2f} ms "
          f"({checked / max(bare, 1e-9):.0f}x: the sha256 of every byte)")
    ok = results["atlas"]["errors"] == results["atlas"]["torn"] == results["atlas"]["false_missing"] == 0
    return 0 if ok and results["atlas"]["final_complete"] else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        kind, root, role, ident, count, n_values = sys.argv[2:8]
        print(json.dumps(worker(kind, root, role, int(ident), int(count), int(n_values))))
    else:
        sys.exit(main())
