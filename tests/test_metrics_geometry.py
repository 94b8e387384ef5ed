"""Galaxy spectrum, clustering entropy and lobes (core.metrics.geometry) against planted answers."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import AtlasError
from core.metrics.geometry import (
    angular_similarity,
    clustering_entropy,
    cooccurrence_affinity,
    cooccurrence_counts,
    dice_affinity,
    galaxy_fit_range,
    galaxy_spectrum,
    gaussian_entropy,
    geometric_clusters,
    jaccard_affinity,
    knn_entropy,
    lobe_agreement,
    lobes,
    overlap_affinity,
    phi_coefficient,
    simple_matching_affinity,
)

# ---------------------------------------------------------------- galaxy spectrum


def test_isotropic_gaussian_cloud_has_alpha_near_zero():
    X = np.random.default_rng(0).standard_normal((20000, 64))
    result = galaxy_spectrum(X)
    assert abs(result.alpha) < 0.1
    assert result.adapted and (result.fit_start, result.fit_stop) == (6, 32)
    assert "shrunk" in result.note


@pytest.mark.parametrize("exponent", [0.3, 0.8, 1.5])
def test_planted_power_law_exponent_is_recovered(exponent):
    d = 64
    lam = np.arange(1, d + 1, dtype=float) ** -exponent
    X = np.random.default_rng(1).standard_normal((20000, d)) * np.sqrt(lam)
    assert galaxy_spectrum(X).alpha == pytest.approx(exponent, abs=0.1)


def test_paper_fit_range_is_kept_for_wide_clouds():
    lam = np.arange(1, 201, dtype=float) ** -0.5
    X = np.random.default_rng(2).standard_normal((6000, 200)) * np.sqrt(lam)
    result = galaxy_spectrum(X)
    assert (result.fit_start, result.fit_stop, result.adapted) == (10, 150, False)
    assert result.alpha == pytest.approx(0.5, abs=0.1)
    assert np.all(np.diff(result.eigenvalues) <= 0)
    json.dumps(result.to_dict())


def test_explicit_fit_range_and_bad_input():
    X = np.random.default_rng(3).standard_normal((500, 20))
    assert galaxy_spectrum(X, fit_range=(2, 10)).fit_stop == 10
    with pytest.raises(AtlasError):
        galaxy_spectrum(X, fit_range=(5, 6))
    with pytest.raises(AtlasError):
        galaxy_spectrum(np.ones(10))
    with pytest.raises(AtlasError):
        galaxy_fit_range(3)


def test_geometry_errors_are_metric_input_errors():
    """One error family for every metric: GeometryInputError is a core.errors.MetricInputError."""
    from core.errors import MetricInputError
    from core.metrics.geometry import GeometryInputError

    assert issubclass(GeometryInputError, MetricInputError) and issubclass(GeometryInputError, AtlasError)
    with pytest.raises(MetricInputError, match="2-D array"):
        galaxy_spectrum(np.ones(10))


# ---------------------------------------------------------------- clustering entropy


def test_knn_entropy_matches_closed_form_for_a_gaussian():
    X = np.random.default_rng(4).standard_normal((4000, 3)) * [1.0, 2.0, 0.5]
    assert knn_entropy(X) == pytest.approx(gaussian_entropy(X), abs=0.1)
    # closed form of N(0, diag(1, 4, 0.25)): 0.5 * log((2 pi e)^3 * 1)
    assert gaussian_entropy(X) == pytest.approx(1.5 * np.log(2 * np.pi * np.e), abs=0.05)


def test_gaussian_cloud_has_no_clustering_entropy_and_clusters_do():
    rng = np.random.default_rng(5)
    gauss = clustering_entropy(rng.standard_normal((2000, 40)), n_samples=1500, n_dims=20)
    assert abs(gauss.gap_calibrated) < 0.5
    centres = rng.standard_normal((20, 40)) * 3
    clustered = centres[rng.integers(0, 20, 2000)] + 0.3 * rng.standard_normal((2000, 40))
    clus = clustering_entropy(clustered, n_samples=1500, n_dims=20)
    assert clus.gap_calibrated > 5
    assert clus.gap > gauss.gap + 5
    assert clus.n_points == 1500 and clus.n_dims == 20


def test_low_dimensional_gaussian_gap_is_near_zero_without_calibration():
    result = clustering_entropy(np.random.default_rng(6).standard_normal((3000, 4)), n_samples=3000)
    assert abs(result.gap) < 0.15


# ---------------------------------------------------------------- lobes


def _planted_features(seed=0, n_groups=4, per_group=12, d=24, n_chunks=300, chunk=16):
    """Features in groups that share a direction and fire in the same chunks (one topic per chunk)."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    groups = np.repeat(np.arange(n_groups), per_group)
    directions = rng.standard_normal((n_groups, d))
    W_dec = directions[groups] + 0.3 * rng.standard_normal((n, d))
    active = np.zeros((n_chunks * chunk, n), dtype=bool)
    for c in range(n_chunks):
        topic = rng.integers(n_groups)
        rows = slice(c * chunk, (c + 1) * chunk)
        active[rows] = rng.random((chunk, n)) < np.where(groups == topic, 0.3, 0.005)
    return W_dec, active, groups, chunk


def test_cooccurrence_counts_definition():
    A = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 0]], dtype=bool)
    C, n = cooccurrence_counts(A, chunk_size=2)
    assert n == 3  # chunks [0:2], [2:4], [4:5]
    np.testing.assert_array_equal(C, [[2, 1, 0], [1, 1, 0], [0, 0, 1]])


def test_phi_matches_pearson_correlation_of_chunk_indicators():
    rng = np.random.default_rng(7)
    F = rng.random((200, 6)) < [0.1, 0.3, 0.5, 0.5, 0.9, 0.0]
    F[:, 3] = F[:, 2] | (rng.random(200) < 0.1)
    C, n = cooccurrence_counts(F, chunk_size=1)
    phi = phi_coefficient(C, n)
    expected = np.nan_to_num(np.corrcoef(F[:, :5].T.astype(float)))
    np.testing.assert_allclose(phi[:5, :5], expected, atol=1e-12)
    assert np.all(phi[5] == 0) and np.all(phi[:, 5] == 0)  # never fires: nan -> 0


def test_other_affinities_on_a_hand_computed_table():
    # feature 0 in chunks {0,1,2}, feature 1 in {1,2,3}; 5 chunks
    F = np.zeros((5, 2), dtype=bool)
    F[[0, 1, 2], 0] = True
    F[[1, 2, 3], 1] = True
    C, n = cooccurrence_counts(F, chunk_size=1)
    assert jaccard_affinity(C, n)[0, 1] == pytest.approx(2 / 4)
    assert dice_affinity(C, n)[0, 1] == pytest.approx(4 / 6)
    assert overlap_affinity(C, n)[0, 1] == pytest.approx(2 / 3)
    assert simple_matching_affinity(C, n)[0, 1] == pytest.approx(3 / 5)
    assert cooccurrence_affinity(C, n, "phi")[0, 1] == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 2 * 3 * 2))
    with pytest.raises(AtlasError):
        cooccurrence_affinity(C, n, "cosine")
    with pytest.raises(AtlasError):
        phi_coefficient(C, 2)  # a feature in more chunks than exist


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 7), st.integers(0, 10_000))
def test_phi_is_symmetric_bounded_and_finite(n_tokens, chunk, seed):
    A = np.random.default_rng(seed).random((n_tokens, 5)) < 0.3
    C, n = cooccurrence_counts(A, chunk_size=chunk)
    phi = phi_coefficient(C, n)
    assert np.all(np.isfinite(phi))
    np.testing.assert_allclose(phi, phi.T)
    assert np.all(np.abs(phi) <= 1 + 1e-12)
    assert np.all(np.diag(C) <= n)


def test_angular_similarity_range():
    W = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, 0.0]])
    A = angular_similarity(W)
    assert A[0, 0] == pytest.approx(1.0)
    assert A[0, 1] == pytest.approx(0.5)
    assert A[0, 2] == pytest.approx(0.0)
    assert A[3, 0] == pytest.approx(0.5)  # dead feature


def test_planted_groups_agree_far_above_the_null():
    W_dec, active, groups, chunk = _planted_features()
    C, n = cooccurrence_counts(active, chunk_size=chunk)
    lobe_labels = lobes(phi_coefficient(C, n), 4, seed=0)
    geo = geometric_clusters(W_dec, 4, seed=0)
    agreement = lobe_agreement(geo, lobe_labels, n_permutations=100, seed=0)
    assert agreement.ami > 0.5
    assert agreement.p_value < 0.05
    assert agreement.ami > agreement.null_mean + 5 * agreement.null_std
    # Jaccard lobes (non-negative affinity: no offset) find the same groups
    jac = lobes(jaccard_affinity(C, n), 4, offset=0.0, seed=0)
    assert lobe_agreement(groups, jac, n_permutations=20).ami > 0.5
    json.dumps(agreement.to_dict())


def test_shuffled_groups_agree_at_the_null():
    W_dec, active, groups, chunk = _planted_features(seed=1)
    C, n = cooccurrence_counts(active, chunk_size=chunk)
    lobe_labels = lobes(phi_coefficient(C, n), 4, seed=0)
    shuffled_W = W_dec[np.random.default_rng(2).permutation(W_dec.shape[0])]
    agreement = lobe_agreement(geometric_clusters(shuffled_W, 4), lobe_labels, n_permutations=100, seed=0)
    assert agreement.ami < 0.15
    assert agreement.p_value > 0.01


def test_bad_clustering_input():
    with pytest.raises(AtlasError):
        lobes(np.zeros((3, 4)), 2)
    with pytest.raises(AtlasError):
        geometric_clusters(np.eye(3), 5)
    with pytest.raises(AtlasError):
        lobe_agreement([0, 1, 1], [0, 1])


def test_geometry_figures_build():
    import plotly.graph_objects as go

    from core.figures.geometry import (
        alpha_per_layer_figure,
        galaxy_spectrum_figure,
        lobe_agreement_figure,
        lobe_map_figure,
    )

    X = np.random.default_rng(9).standard_normal((300, 20))
    spectrum = galaxy_spectrum(X)
    fig = galaxy_spectrum_figure(spectrum)
    assert isinstance(fig, go.Figure) and fig.data[1].name.startswith("fit")
    assert len(alpha_per_layer_figure([0, 1, 2], [0.1, 0.3, 0.2], isotropic_reference=0.03).data) == 1
    agreement = lobe_agreement([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], n_permutations=10)
    assert isinstance(lobe_agreement_figure(agreement), go.Figure)
    fig = lobe_map_figure(X[:, :2], np.arange(300) % 3, hover=[str(i) for i in range(300)])
    assert len(fig.data) == 3
    fig.to_json()
