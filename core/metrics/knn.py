"""Neighbours and clusters of many directions without an n x n matrix.

The exact geometry (core.metrics.geometry: `angular_similarity`, `spectral_labels`) builds dense n x n
float64 matrices: 134 MB at 4,096 rows, 4.8 GB at 24,576 (GPT-2 small's SAE width), 34 GB at 65,536, and
spectral clustering on them adds several copies and an eigensolver over the whole matrix. Up to
`EXACT_MAX_ROWS` rows the dense path runs unchanged (the organism's 1,024-feature SAEs are measured
exactly); above it every function here keeps memory at O(n k + block x m):

- `cosine_knn`: exact k nearest rows by cosine, one block of query rows against the reference rows at a
  time (memory block x m floats; time O(n m d)).
- `clusters_by_sample`: spectral clusters of a uniform sample of `EXACT_MAX_ROWS` rows (the exact
  method on the sample), then every other row takes the label its `n_vote` nearest sampled rows vote
  for, each vote weighted by the angular similarity 1 - arccos(cos) / pi (the affinity the clustering
  itself uses). This is the Nystrom-style out-of-sample extension of a clustering: on a planted
  structure whose clusters the sample resolves (>= a few sampled members per cluster) it returns the
  exact labels (tests/test_metrics_knn.py); clusters smaller than ~n / EXACT_MAX_ROWS rows can be missed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from core.errors import MetricInputError

__all__ = ["EXACT_MAX_ROWS", "unit_rows", "cosine_knn", "clusters_by_sample", "dense_bytes"]

EXACT_MAX_ROWS = 4096  # largest n for which an n x n float64 matrix is built (134 MB)


def dense_bytes(n: int) -> int:
    """Bytes of one n x n float64 matrix."""
    return int(n) * int(n) * 8


def unit_rows(W: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32; zero rows stay zero (cosine 0 with everything)."""
    W = np.asarray(W, dtype=np.float32)
    norms = np.linalg.norm(W, axis=1, keepdims=True)
    return W / np.where(norms > 0, norms, 1.0)


def cosine_knn(query: np.ndarray, reference: np.ndarray, k: int, *, block: int = 2048,
               exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The `k` rows of `reference` with the highest cosine to each row of `query`: (indices [n, k],
    cosines [n, k]), best first. Rows are unit-normalised here. `exclude_self`: query and reference are
    the same matrix and a row is not its own neighbour. Memory: one [block, m] product at a time."""
    Q, R = unit_rows(query), unit_rows(reference)
    if Q.ndim != 2 or R.ndim != 2 or Q.shape[1] != R.shape[1]:
        raise MetricInputError(f"cosine_knn needs two row matrices of one width; got {Q.shape} and {R.shape}.")
    available = R.shape[0] - (1 if exclude_self else 0)
    if not 1 <= k <= available:
        raise MetricInputError(f"cosine_knn: k must be between 1 and {available}; got {k}.")
    n = Q.shape[0]
    indices = np.empty((n, k), dtype=np.int64)
    cosines = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        sims = Q[start:start + block] @ R.T
        if exclude_self:
            rows = np.arange(sims.shape[0])
            sims[rows, start + rows] = -np.inf
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        best = np.take_along_axis(part, order, axis=1)
        indices[start:start + block] = best
        cosines[start:start + block] = np.take_along_axis(sims, best, axis=1)
    return indices, np.clip(cosines, -1.0, 1.0)


def clusters_by_sample(W: np.ndarray, cluster_sample: Callable[[np.ndarray], np.ndarray], *,
                       max_exact: int = EXACT_MAX_ROWS, n_vote: int = 5, seed: int = 0) -> np.ndarray:
    """One label per row of `W` [n, d] without an n x n matrix (see the module docstring).

    `cluster_sample(W_sample) -> labels` is the exact clustering, run on `max_exact` rows drawn
    uniformly without replacement (numpy default_rng(seed)); those rows keep their labels, and every
    other row gets argmax over labels of sum of (1 - arccos(cos) / pi) over its `n_vote` nearest sampled
    rows. With n <= max_exact this is `cluster_sample(W)` itself.
    """
    W = np.asarray(W)
    n = W.shape[0]
    if n <= max_exact:
        return np.asarray(cluster_sample(W), dtype=np.int64)
    if max_exact < 2 or n_vote < 1:
        raise MetricInputError("clusters_by_sample needs a sample of at least 2 rows and at least 1 vote.")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=max_exact, replace=False))
    sample_labels = np.asarray(cluster_sample(W[sample]), dtype=np.int64)
    n_labels = int(sample_labels.max()) + 1
    rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
    labels = np.empty(n, dtype=np.int64)
    labels[sample] = sample_labels
    votes = min(n_vote, max_exact)
    block = 4096
    for start in range(0, rest.size, block):
        rows = rest[start:start + block]
        idx, cos = cosine_knn(W[rows], W[sample], votes)
        weight = 1.0 - np.arccos(cos.astype(np.float64)) / np.pi
        score = np.zeros((rows.size, n_labels))
        np.add.at(score, (np.repeat(np.arange(rows.size), votes), sample_labels[idx].ravel()), weight.ravel())
        labels[rows] = score.argmax(1)
    return labels
