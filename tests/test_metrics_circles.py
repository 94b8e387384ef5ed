"""Circles (core.metrics.circles): decoder clusters, reconstruction PCA, Fourier circularity."""

import json

import numpy as np
import pytest

from core.errors import AtlasError
from core.metrics.circles import circularity, cluster_reconstruction_pca, decoder_clusters, fourier_shares


def planted_circle(k, f, d=64, noise=0.3, radius=3.0, seed=0):
    """k items on a circle at frequency f in a random plane of R^d, plus isotropic noise."""
    rng = np.random.default_rng(seed)
    plane, _ = np.linalg.qr(rng.standard_normal((d, 2)))
    i = np.arange(k)
    circle = np.stack([np.cos(2 * np.pi * f * i / k), np.sin(2 * np.pi * f * i / k)], axis=1)
    return radius * circle @ plane.T + noise * rng.standard_normal((k, d)) + rng.standard_normal(d)


@pytest.mark.parametrize("f", [1, 5])
def test_planted_circles_at_frequency_one_and_five_are_found(f):
    result = circularity(planted_circle(12, f), n_permutations=200, seed=0)
    assert result.best_frequency == f
    assert result.p_value < 0.01
    assert result.best_share > 0.5
    assert result.circle_balance > 0.8
    assert result.coprime and result.regular_visit
    assert result.visit_step == pow(f, -1, 12)  # 1 for f = 1; 5 for f = 5 (5 * 5 = 25 = 1 mod 12)
    assert result.visit_order[0] == 0
    json.dumps(result.to_dict())


def test_frequency_five_visits_months_five_apart():
    result = circularity(planted_circle(12, 5, seed=3), n_permutations=50)
    assert list(result.visit_order) == [0, 5, 10, 3, 8, 1, 6, 11, 4, 9, 2, 7]


def test_weekdays_at_frequency_two():
    result = circularity(planted_circle(7, 2, seed=1), n_permutations=200, seed=1)
    assert result.best_frequency == 2
    assert result.p_value < 0.05
    # angular neighbours are 2^-1 = 4 (mod 7) days apart: 0, 4, 1, 5, 2, 6, 3
    assert result.visit_step == 4 and result.regular_visit
    assert list(result.visit_order) == [0, 4, 1, 5, 2, 6, 3]


def test_shuffled_labels_are_not_significant():
    M = planted_circle(12, 1, seed=4)
    shuffled = M[np.random.default_rng(5).permutation(12)]
    p_values = [circularity(shuffled, n_permutations=200, seed=s).p_value for s in range(2)]
    assert min(p_values) > 0.05
    noise = np.random.default_rng(6).standard_normal((12, 64))
    assert circularity(noise, n_permutations=200).p_value > 0.05


def test_fourier_shares_sum_to_one_and_a_line_is_not_a_circle():
    M = np.random.default_rng(7).standard_normal((10, 5))
    assert fourier_shares(M).sum() == pytest.approx(1.0)
    # items alternating on a line: all variance at the Nyquist frequency, no round circle
    line = np.outer((-1.0) ** np.arange(8), np.ones(3))
    result = circularity(line, n_permutations=20)
    assert result.best_frequency == 4 and result.best_share == pytest.approx(1.0)
    assert result.circle_balance == pytest.approx(0.0)
    assert not result.coprime


def test_decoder_clusters_and_reconstruction_pca_find_a_planted_circle():
    rng = np.random.default_rng(8)
    d, k = 16, 12
    # month features share a "month" direction (as in real SAEs) and sit on a circle around it
    basis, _ = np.linalg.qr(rng.standard_normal((d, 4)))
    angles = 2 * np.pi * np.arange(k) / k
    circle = np.cos(angles)[:, None] * basis[:, 0] + np.sin(angles)[:, None] * basis[:, 1]
    circle_features = 1.5 * basis[:, 2] + circle + 0.05 * rng.standard_normal((k, d))
    other = np.array([basis[:, 3] + 0.1 * rng.standard_normal(d) for _ in range(6)])
    W_dec = np.vstack([circle_features, other])
    labels = decoder_clusters(W_dec, 2, seed=0)
    assert len(set(labels[:k])) == 1 and len(set(labels[k:])) == 1 and labels[0] != labels[k]
    # each token activates one circle feature (its month) with a varying strength
    n_tokens = 240
    Z = np.zeros((n_tokens, W_dec.shape[0]))
    month = rng.integers(0, k, n_tokens)
    Z[np.arange(n_tokens), month] = 1 + 0.1 * rng.random(n_tokens)
    Z[:10] = 0  # tokens where nothing fires are dropped
    result = cluster_reconstruction_pca(Z, W_dec, np.flatnonzero(labels == labels[0]), n_components=5)
    assert list(result.token_indices) == list(range(10, n_tokens))
    assert result.projections.shape == (n_tokens - 10, 5)
    assert result.explained_variance_ratio[:2].sum() > 0.95
    radius = np.linalg.norm(result.projections[:, :2], axis=1)
    assert radius.std() / radius.mean() < 0.1  # PCs 1-2 trace a circle


def test_bad_input():
    with pytest.raises(AtlasError):
        circularity(np.ones((12, 4)))
    with pytest.raises(AtlasError):
        cluster_reconstruction_pca(np.zeros((5, 3)), np.eye(4), [0, 1])
    with pytest.raises(AtlasError):
        cluster_reconstruction_pca(np.zeros((5, 4)), np.eye(4), [0, 1])


def test_circle_figures_build():
    from core.figures.geometry import circle_pcs_figure, fourier_shares_figure

    M = planted_circle(12, 5)
    result = circularity(M, n_permutations=20)
    fig = fourier_shares_figure(result)
    assert len(fig.data) == 3 and len(fig.data[0].y) == 6
    fig = circle_pcs_figure(result.points_2d, [f"m{i}" for i in range(12)], cycle_order=result.visit_order)
    assert len(fig.data[0].x) == 13  # closed loop
    fig.to_json()
