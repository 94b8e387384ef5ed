"""The feature map: a 2-D layout of an SAE's decoder rows, cached in the artifact store.

UMAP (McInnes et al. 2018) on the unit-normalised decoder rows with the cosine metric,
`n_neighbors=15`, `min_dist=0.1`, a fixed `random_state`; PCA (the top two principal
components of the unit-normalised rows) when umap-learn is missing or for a quick first view.
The first UMAP fit in a process spends ~40 s compiling numba code, so layouts are stored under
a key that includes a fingerprint of the decoder weights: a second visit is a disk read.

Lobes (Li et al. 2024, "The Geometry of Concepts", METHODS.md section 6): spectral clustering of
the phi coefficient of feature co-occurrence, `SpectralClustering(K, affinity="precomputed")`
on `phi + 1`, computed by `core.metrics.geometry` (`phi_coefficient`, `lobes`).
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

METHODS = ("umap", "pca")


@dataclass
class FeatureMap:
    coords: np.ndarray   # [n_features, 2] float32
    method: str          # "umap" | "pca"
    seconds: float       # time spent computing (0 on a cache hit)
    from_cache: bool
    key: str | None


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def decoder_fingerprint(W_dec: np.ndarray) -> str:
    """sha256 of the float32 decoder weights and their shape: same weights, same map."""
    array = np.ascontiguousarray(np.asarray(W_dec, dtype=np.float32))
    digest = hashlib.sha256(str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def _unit_rows(W_dec: np.ndarray) -> np.ndarray:
    W = np.asarray(W_dec, dtype=np.float32)
    return W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-8)


def pca_layout(W_dec: np.ndarray) -> np.ndarray:
    """Top two principal components of the unit-normalised rows (sign fixed: largest |loading| > 0).

    Eigenvectors of the d x d covariance (cheaper than an SVD of the n x d rows when n >> d).
    """
    W = _unit_rows(W_dec).astype(np.float64)
    W = W - W.mean(axis=0, keepdims=True)
    _, vectors = np.linalg.eigh(W.T @ W)
    axes = vectors[:, ::-1][:, :2].T
    axes = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    coords = W @ axes.T
    if coords.shape[1] < 2:  # a one-dimensional input: pad with zeros
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords.astype(np.float32)


def _exact_cosine_knn(W_unit: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by cosine distance (self first), in row blocks of a matrix product.

    Handing these to UMAP (`precomputed_knn`) skips pynndescent, whose numba compilation is a large
    part of the first fit's cost; for up to ~10^5 rows the exact product is also fast.
    """
    n = len(W_unit)
    indices = np.empty((n, k), dtype=np.int64)
    distances = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        sims = W_unit[start:start + block] @ W_unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = np.inf                       # self first, as UMAP expects
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1)
        best = np.take_along_axis(part, order, axis=1)
        indices[start:start + block] = best
        d = 1.0 - np.take_along_axis(sims, best, axis=1)
        d[:, 0] = 0.0
        distances[start:start + block] = np.maximum(d, 0.0)
    return indices, distances


def umap_layout(W_dec: np.ndarray, n_neighbors: int = 15, min_dist: float = 0.1,
                random_state: int = 0) -> np.ndarray:
    """UMAP of the unit-normalised rows, cosine metric, fixed seed (single-threaded, reproducible)."""
    import umap

    W = _unit_rows(W_dec)
    n_neighbors = max(2, min(n_neighbors, len(W) - 1))
    knn = _exact_cosine_knn(W, n_neighbors) if len(W) <= 100_000 else None
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine",
                        random_state=random_state, n_components=2, low_memory=True,
                        precomputed_knn=(knn[0], knn[1], None) if knn is not None else (None, None, None))
    with warnings.catch_warnings():  # "no NNDescent index" and "n_jobs overridden by random_state": expected
        warnings.simplefilter("ignore", UserWarning)
        return reducer.fit_transform(W).astype(np.float32)


def feature_map_key(W_dec: np.ndarray, method: str, n_neighbors: int, min_dist: float,
                    random_state: int) -> str:
    from core.store import artifact_key

    return artifact_key(kind="feature_map", decoder=decoder_fingerprint(W_dec), method=method,
                        n_neighbors=n_neighbors, min_dist=min_dist, random_state=random_state)


def resolve_method(W_dec: np.ndarray, method: str) -> str:
    """The method `feature_map` will use: "umap" becomes "pca" when umap-learn is not installed or there
    are fewer than 4 features (too few for a neighbour graph)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    if method == "umap" and (not umap_available() or len(W_dec) < 4):
        return "pca"
    return method


def feature_map(W_dec: np.ndarray, store: Any | None = None, method: str = "umap", *,
                n_neighbors: int = 15, min_dist: float = 0.1, random_state: int = 0,
                progress: Callable[[str], None] | None = None, key: str | None = None) -> FeatureMap:
    """The 2-D map of `W_dec` ([n_features, d]) by `method`, from `store` when it was made before.

    "umap" falls back to "pca" (and says so through `progress`) when umap-learn is not installed.
    `key`, when given, must be `feature_map_key(W_dec, resolve_method(W_dec, method), n_neighbors,
    min_dist, random_state)`: a caller that already has it saves hashing the decoder a second time.
    """
    W_dec = np.asarray(W_dec, dtype=np.float32)
    resolved = resolve_method(W_dec, method)
    if resolved != method:
        if progress:
            progress("UMAP is not available here (or there are too few features); showing PCA.")
        method = resolved
    if store is None:
        key = None
    elif key is None:
        key = feature_map_key(W_dec, method, n_neighbors, min_dist, random_state)
    if store is not None:
        cached = store.load(key)
        if cached is not None:
            return FeatureMap(np.asarray(cached.arrays["coords"]), method, 0.0, True, key)
    if progress:
        progress("Fitting UMAP (the first fit in a process compiles numba code: ~40 s)."
                 if method == "umap" else "Projecting on the top two principal components.")
    start = time.perf_counter()
    coords = umap_layout(W_dec, n_neighbors, min_dist, random_state) if method == "umap" else pca_layout(W_dec)
    seconds = time.perf_counter() - start
    if store is not None:
        store.save(key, {"coords": coords}, {"kind": "feature_map", "method": method,
                                             "n_features": len(W_dec), "seconds": seconds})
    return FeatureMap(coords, method, seconds, False, key)


def lobe_labels(cooc: np.ndarray, n_chunks: int, n_lobes: int = 5, random_state: int = 0) -> np.ndarray:
    """Lobes of the features that fire: `core.metrics.geometry.lobes` on their phi coefficient
    (SpectralClustering(n_lobes, affinity="precomputed").fit_predict(phi + 1)); -1 for dead features.

    Features that never fire have no co-occurrence to cluster on; they get label -1. With no more
    live features than lobes, each live feature is its own lobe. Above core.metrics.knn.EXACT_MAX_ROWS
    live features only that many, the most frequent, are clustered (the rest get -1 too): phi and the
    spectral clustering are dense in the features clustered.
    """
    from core.metrics.geometry import lobes, phi_coefficient
    from core.metrics.knn import EXACT_MAX_ROWS

    C = np.asarray(cooc)
    fired = np.diag(C)
    alive = np.flatnonzero(fired > 0)
    if alive.size > EXACT_MAX_ROWS:
        alive = np.sort(alive[np.argsort(-fired[alive], kind="stable")[:EXACT_MAX_ROWS]])
    labels = np.full(len(C), -1, dtype=np.int64)
    if len(alive) <= n_lobes:
        labels[alive] = np.arange(len(alive))
        return labels
    sub = np.asarray(C[np.ix_(alive, alive)], dtype=np.float64)
    labels[alive] = lobes(phi_coefficient(sub, n_chunks), n_lobes, seed=random_state)
    return labels


def decoder_neighbours(W_dec: np.ndarray, feature: int, k: int = 10,
                       W_unit: np.ndarray | None = None) -> list[tuple[int, float]]:
    """The `k` features whose decoder rows have the highest cosine with `feature`'s: (id, cosine), best first.

    `W_unit`: the unit-normalised rows when the caller keeps them (saves normalising [d_sae, d] each call).
    """
    from core.feature_views import nearest_directions

    W_unit = _unit_rows(W_dec) if W_unit is None else W_unit
    return nearest_directions(W_unit[feature], W_unit, k, exclude=feature)


@dataclass(frozen=True)
class LogitEffects:
    """Direct effect of a feature's decoder direction on the logits, W_dec[i] @ W_U: the `k` largest
    (top_ids / top_values, largest first) and the `k` smallest (bottom_*, most negative first)."""

    top_ids: list[int]
    top_values: list[float]
    bottom_ids: list[int]
    bottom_values: list[float]


def logit_effects(direction: Any, W_U: Any, k: int = 10) -> LogitEffects:
    """Top-k and bottom-k of `direction` [d_model] @ `W_U` [d_model, d_vocab] by torch.topk: never a sort
    of the whole vocabulary (256k tokens for Gemma), and W_U is used where it lives (no copy)."""
    import torch

    W_U = torch.as_tensor(W_U)
    effect = torch.as_tensor(np.asarray(direction, dtype=np.float32)).to(W_U.device, W_U.dtype) @ W_U
    k = min(k, effect.shape[-1])
    top = torch.topk(effect, k)
    bottom = torch.topk(-effect, k)
    return LogitEffects(top.indices.tolist(), top.values.float().tolist(),
                        bottom.indices.tolist(), (-bottom.values).float().tolist())
