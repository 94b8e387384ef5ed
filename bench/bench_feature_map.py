"""Feature map of a 16k-feature SAE: first UMAP fit in a fresh process (numba JIT included), a second
fit, the cache hit, and the PCA fallback, side by side.

    python -m bench.bench_feature_map [--features 16384] [--d 512]

Goal (issue 7): the first map of a 16k-feature SAE in under 60 s on the 2-core CPU, JIT included.
The decoder rows are synthetic: 64 planted directions plus noise, unit-normalised (only the shape
matters for timing).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def planted_decoder(n: int, d: int, n_clusters: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d))
    rows = centres[rng.integers(0, n_clusters, n)] + 0.8 * rng.standard_normal((n, d))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=16384)
    parser.add_argument("--d", type=int, default=512)
    args = parser.parse_args(argv)

    from core import feature_map as fm
    from core.store import ArtifactStore

    W = planted_decoder(args.features, args.d)
    with tempfile.TemporaryDirectory() as root:
        store = ArtifactStore(root)
        start = time.perf_counter()
        pca = fm.feature_map(W, store, "pca")
        pca_s = time.perf_counter() - start
        start = time.perf_counter()
        first = fm.feature_map(W, store, "umap")   # import + numba JIT + fit + save
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        fm.umap_layout(W)                            # JIT warm: a second fit
        second_s = time.perf_counter() - start
        start = time.perf_counter()
        hit = fm.feature_map(W, store, "umap")
        hit_s = time.perf_counter() - start
    assert hit.from_cache and first.method == "umap"
    print(f"feature map of {args.features} x {args.d} decoder rows")
    print(f"  PCA (quick view)             {pca_s:8.2f} s")
    print(f"  UMAP first fit (JIT incl.)   {first_s:8.2f} s   goal < 60 s: {'met' if first_s < 60 else 'NOT met'}")
    print(f"  UMAP second fit (JIT warm)   {second_s:8.2f} s   first / second = {first_s / second_s:.1f}x")
    print(f"  cache hit                    {hit_s:8.3f} s   first / hit = {first_s / max(hit_s, 1e-6):.0f}x")


if __name__ == "__main__":
    main()
