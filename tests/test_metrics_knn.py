"""The paths that keep decoder geometry off n x n matrices (core/metrics/knn.py) against the exact ones."""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from core.analysis.geometry import decoder_circles_for_sae
from core.analysis.results import Skipped
from core.metrics import geometry
from core.metrics.geometry import GeometryInputError, angular_similarity, geometric_clusters, spectral_labels
from core.metrics.knn import EXACT_MAX_ROWS, clusters_by_sample, cosine_knn


def planted_directions(n: int, n_clusters: int, d: int = 32, noise: float = 0.15, seed: int = 0):
    """`n` rows around `n_clusters` random unit centres (one cluster per row, uneven sizes)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d))
    truth = rng.integers(0, n_clusters, n)
    W = centres[truth] / np.linalg.norm(centres[truth], axis=1, keepdims=True)
    return W + noise * rng.standard_normal((n, d)) / np.sqrt(d), truth


def test_cosine_knn_equals_brute_force():
    rng = np.random.default_rng(1)
    Q, R = rng.standard_normal((37, 8)), rng.standard_normal((50, 8))
    idx, cos = cosine_knn(Q, R, 4, block=10)
    full = (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (R / np.linalg.norm(R, axis=1, keepdims=True)).T
    assert np.array_equal(idx, np.argsort(-full, axis=1)[:, :4])
    assert np.allclose(cos, np.sort(full, axis=1)[:, ::-1][:, :4], atol=1e-5)
    self_idx, _ = cosine_knn(R, R, 3, block=7, exclude_self=True)
    assert not np.any(self_idx == np.arange(50)[:, None])


def test_sampled_clusters_equal_exact_clusters_on_a_planted_structure():
    W, truth = planted_directions(1200, 5)
    exact = geometric_clusters(W, 5, seed=0)  # 1,200 <= EXACT_MAX_ROWS: the dense path
    calls = []

    def cluster(S):
        calls.append(S.shape[0])
        return spectral_labels(angular_similarity(S), 5, seed=0)

    sampled = clusters_by_sample(W, cluster, max_exact=300, seed=0)
    assert calls == [300]  # the exact method ran on the sample only
    assert adjusted_rand_score(truth, exact) == 1.0
    assert adjusted_rand_score(exact, sampled) == 1.0


def test_dense_matrices_are_refused_above_the_threshold_before_allocating():
    W = np.random.default_rng(0).standard_normal((EXACT_MAX_ROWS + 1, 4))
    with pytest.raises(GeometryInputError, match="GB per n x n copy"):
        angular_similarity(W)
    with pytest.raises(GeometryInputError, match="spectral clustering"):
        spectral_labels(np.ones((EXACT_MAX_ROWS + 1, 2)) @ np.ones((2, EXACT_MAX_ROWS + 1)), 2)


def test_geometric_clusters_at_20k_features_stay_within_a_memory_bound(monkeypatch):
    """20,000 random unit rows: a dense angular matrix alone would be 3.2 GB. The spectral step sees
    EXACT_MAX_ROWS rows (replaced here by a cheap labelling so the test is fast) and the whole call
    allocates less than 600 MB: the sample's own angular matrices, 134 MB each (the exact path: 3.2 GB each)."""
    rng = np.random.default_rng(0)
    W = rng.standard_normal((20_000, 64)).astype(np.float32)
    seen = []

    def cheap_spectral(A, n_clusters, seed=0):
        seen.append(A.shape)
        return np.argmax(A[:, :n_clusters], axis=1)

    monkeypatch.setattr(geometry, "spectral_labels", cheap_spectral)
    tracemalloc.start()
    try:
        labels = geometric_clusters(W, 8, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == [(EXACT_MAX_ROWS, EXACT_MAX_ROWS)]
    assert labels.shape == (20_000,) and set(np.unique(labels)) <= set(range(8))
    assert peak < 600e6, f"peak {peak / 1e6:.0f} MB"


def test_decoder_circles_say_before_encoding_when_the_codes_do_not_fit(monkeypatch):
    from core.analysis import geometry as analysis_geometry

    monkeypatch.setattr(analysis_geometry, "MAX_CODES_BYTES", 1000)
    site = SimpleNamespace(reservoir=np.zeros((64, 4), np.float32), reservoir_token=np.zeros(64, np.int64))
    sae = SimpleNamespace(encode=lambda x: pytest.fail("encoded although the codes do not fit"))
    result = decoder_circles_for_sae(sae, site, np.zeros((100, 4)))
    assert isinstance(result, Skipped) and "smaller reservoir_size" in result.reason
