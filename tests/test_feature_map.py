"""Feature map (layout + cache), lobes, neighbours, co-occurrence and logit effects on planted cases."""

from __future__ import annotations

import numpy as np
import pytest

import core.feature_map as fm
from core.store import ArtifactStore


def _planted_clusters(n_per=30, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.eye(d)[:3] * 5
    W = np.concatenate([c + 0.3 * rng.standard_normal((n_per, d)) for c in centers])
    return W.astype(np.float32), np.repeat(np.arange(3), n_per)


def test_pca_layout_separates_planted_clusters():
    W, labels = _planted_clusters()
    coords = fm.pca_layout(W)
    assert coords.shape == (90, 2)
    means = np.stack([coords[labels == k].mean(0) for k in range(3)])
    spread = max(np.linalg.norm(coords[labels == k] - means[k], axis=1).mean() for k in range(3))
    gaps = [np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 3 * spread


def test_pca_of_a_line_orders_points_along_it():
    t = np.linspace(-1, 1, 21)
    W = np.stack([np.cos(t), np.sin(t), np.zeros_like(t)], axis=1)  # an arc of unit vectors
    coords = fm.pca_layout(W)
    first = coords[:, 0]
    assert np.all(np.diff(first) > 0) or np.all(np.diff(first) < 0)


def test_feature_map_is_cached_in_the_store(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    W, _ = _planted_clusters()
    calls = []

    def fake_umap(W_dec, n_neighbors, min_dist, random_state):  # stands in for the 40 s JIT fit
        calls.append(n_neighbors)
        return fm.pca_layout(W_dec) * 2

    monkeypatch.setattr(fm, "umap_layout", fake_umap)
    monkeypatch.setattr(fm, "umap_available", lambda: True)
    first = fm.feature_map(W, store, "umap")
    second = fm.feature_map(W, store, "umap")
    assert not first.from_cache and second.from_cache and len(calls) == 1
    np.testing.assert_array_equal(first.coords, second.coords)
    # other weights or another method: another key
    assert not fm.feature_map(W * 1.01, store, "umap").from_cache
    pca = fm.feature_map(W, store, "pca")
    assert not pca.from_cache and pca.key != first.key
    assert fm.feature_map(W, store, "pca").from_cache


def test_umap_falls_back_to_pca_when_missing(monkeypatch):
    monkeypatch.setattr(fm, "umap_available", lambda: False)
    messages = []
    result = fm.feature_map(_planted_clusters()[0], None, "umap", progress=messages.append)
    assert result.method == "pca" and "PCA" in messages[0]


def test_resolve_method_matches_feature_map_and_a_given_key_is_used(tmp_path, monkeypatch):
    W = _planted_clusters()[0]
    monkeypatch.setattr(fm, "umap_available", lambda: True)
    assert fm.resolve_method(W, "umap") == "umap"
    assert fm.resolve_method(W[:3], "umap") == "pca"          # too few features for a neighbour graph
    assert fm.resolve_method(W, "pca") == "pca"
    with pytest.raises(ValueError):
        fm.resolve_method(W, "tsne")
    monkeypatch.setattr(fm, "umap_available", lambda: False)
    assert fm.resolve_method(W, "umap") == "pca"
    store = ArtifactStore(tmp_path)
    key = fm.feature_map_key(W, fm.resolve_method(W, "umap"), 15, 0.1, 0)
    first = fm.feature_map(W, store, "umap", key=key)
    assert first.key == key and first.method == "pca" and not first.from_cache
    again = fm.feature_map(W, store, "umap")                    # the key it works out itself is the same
    assert again.from_cache and again.key == key


def _planted_cooc(seed=0):
    """Two groups of features that fire together chunk by chunk, plus a dead feature."""
    rng = np.random.default_rng(seed)
    n_chunks, n = 400, 13
    group = rng.integers(0, 2, n_chunks)
    fires = np.zeros((n_chunks, n), bool)
    fires[:, :6] = (group == 0)[:, None] & (rng.random((n_chunks, 6)) < 0.8)
    fires[:, 6:12] = (group == 1)[:, None] & (rng.random((n_chunks, 6)) < 0.8)
    C = fires.T.astype(np.int64) @ fires.astype(np.int64)
    return C, n_chunks


def test_phi_of_independent_and_identical_features():
    from core.feature_views import cooccurrence_view

    # feature 0 and 1 always together; feature 2 fires in every other chunk independently of them
    fires = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.int64)
    view = cooccurrence_view(fires.T @ fires, 4, 0)
    phi = {row.feature: row.phi for row in view.rows}
    assert phi[1] == pytest.approx(1.0)
    assert phi[2] == pytest.approx(0.0)


def test_lobes_recover_planted_groups():
    C, n_chunks = _planted_cooc()
    labels = fm.lobe_labels(C, n_chunks, n_lobes=2)
    assert labels[12] == -1                      # dead feature
    assert len(set(labels[:6])) == 1 and len(set(labels[6:12])) == 1 and labels[0] != labels[6]


def test_cooccurring_features_prefer_the_same_group():
    from core.feature_views import cooccurrence_view

    C, n_chunks = _planted_cooc()
    top = cooccurrence_view(C, n_chunks, 0, k=5).rows
    assert {row.feature for row in top} <= set(range(1, 6))
    assert all(row.phi > 0.3 for row in top)
    assert cooccurrence_view(C, n_chunks, 12).status == "never"


def test_decoder_neighbours_and_logit_effects():
    W = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [-1, 0, 0]], dtype=np.float32)
    neighbours = fm.decoder_neighbours(W, 0, k=3)
    assert [j for j, _ in neighbours] == [1, 2, 3]
    assert neighbours[-1][1] == pytest.approx(-1.0)
    W_U = np.array([[3, -2, 0.5, 0], [0, 0, 0, 9], [0, 0, 0, 0]], dtype=np.float32)   # d_model 3, vocab 4
    effects = fm.logit_effects(W[0], W_U, k=2)
    assert effects.top_ids == [0, 2] and effects.top_values == [3.0, 0.5]
    assert effects.bottom_ids[0] == 1 and effects.bottom_values[0] == -2.0


def test_exact_cosine_knn_matches_brute_force():
    rng = np.random.default_rng(1)
    W = fm._unit_rows(rng.standard_normal((50, 8)))
    idx, dist = fm._exact_cosine_knn(W, 5, block=7)        # blocks that do not divide n
    sims = W @ W.T
    np.fill_diagonal(sims, np.inf)
    expected = np.argsort(-sims, axis=1)[:, :5]
    np.testing.assert_array_equal(idx, expected)
    assert np.all(idx[:, 0] == np.arange(50)) and np.all(dist[:, 0] == 0)
    np.testing.assert_allclose(dist[:, 1:], 1 - np.take_along_axis(W @ W.T, idx[:, 1:], axis=1), atol=1e-5)
