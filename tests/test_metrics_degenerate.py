"""The metrics on degenerate input: a MetricInputError (GeometryInputError is one) or a defined, documented
answer, never a silent number. Known answers where there is one (planted power laws of rank < d), and
hypothesis over degenerate arrays (NaN, inf, zeros, constants, rank-deficient clouds)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.errors import MetricInputError
from core.metrics.concepts import causal_inner_product_basis
from core.metrics.crystals import crystal_projection, parallelogram_quality
from core.metrics.geometry import (
    cooccurrence_affinity,
    cooccurrence_counts,
    galaxy_spectrum,
    phi_coefficient,
)
from core.metrics.spectral import alpha_req, eigenspectrum, numerical_rank, spectral_summary
from core.metrics.toy import toy_geometry

FAST = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- spectral fits, rank < d

@FAST
@given(st.floats(0.3, 3.0), st.integers(8, 160), st.integers(1, 300), st.integers(0, 2**16))
def test_alpha_req_of_a_planted_rank_deficient_power_law(alpha, rank, extra, seed):
    """lam_i = i**-alpha for i <= rank, then d - rank round-off eigenvalues (1e-17 of the largest): the fit
    recovers alpha exactly. Before, the round-off entered the log fit (alpha 15 for Gaussian data)."""
    rng = np.random.default_rng(seed)
    lam = np.concatenate([np.arange(1, rank + 1, dtype=float) ** -alpha, 1e-17 * np.abs(rng.normal(size=extra))])
    assert numerical_rank(lam) == rank
    result = alpha_req(lam)
    assert result.last_rank <= rank and result.n_points >= 3
    assert result.alpha == pytest.approx(alpha, abs=1e-6)
    if rank < min(lam.size, 100):
        assert f"rank {rank}" in result.message


def test_alpha_req_of_fewer_samples_than_dimensions_is_sane():
    X = np.random.default_rng(0).normal(size=(30, 200))
    result = spectral_summary(np.cov(X, rowvar=False, bias=True)).alpha
    assert result.last_rank <= 29 and 0 < result.alpha < 1.5 and "rank 29" in result.message


def test_alpha_req_of_a_rank_3_spectrum_is_nan_with_a_message():
    result = alpha_req(np.r_[3.0, 2.0, 1.0, np.zeros(50)])
    assert np.isnan(result.alpha) and "only 3 nonzero" in result.message


def _cloud(n: int, d: int, alpha: float, seed: int) -> np.ndarray:
    """n points in d dims whose covariance has exactly the eigenvalues i**-alpha, i = 1..n-1 (rank n-1)."""
    rng = np.random.default_rng(seed)
    k = n - 1
    centred = rng.normal(size=(n, k))
    centred -= centred.mean(0)
    q, _ = np.linalg.qr(centred)                 # orthonormal columns with zero mean
    v, _ = np.linalg.qr(rng.normal(size=(d, k)))
    lam = np.arange(1, k + 1, dtype=float) ** -alpha
    return q @ np.diag(np.sqrt(lam * (n - 1))) @ v.T


@FAST
@given(st.floats(0.3, 3.0), st.integers(12, 60), st.integers(1, 200), st.integers(0, 2**16))
def test_galaxy_slope_of_a_cloud_with_fewer_points_than_dimensions(alpha, n, extra, seed):
    """Known answer: a decoder cloud of n < d rows with planted covariance eigenvalues i**-alpha. Before,
    the fit range reached into the d - n + 1 zero eigenvalues (alpha 34 for a Gaussian cloud)."""
    d = n + extra
    result = galaxy_spectrum(_cloud(n, d, alpha, seed))
    assert result.fit_stop <= n - 1 and result.alpha == pytest.approx(alpha, abs=1e-6)
    assert f"rank {n - 1}" in result.note


def test_a_galaxy_without_variance_is_an_error():
    with pytest.raises(MetricInputError, match="do not vary"):
        galaxy_spectrum(np.ones((10, 8)))


def test_full_rank_spectra_are_unchanged():
    """The tolerance touches only round-off: a full-rank spectrum fits exactly as before."""
    X = np.random.default_rng(1).normal(size=(2000, 128)) * np.arange(1, 129) ** -0.7
    lam = eigenspectrum(X)
    result = alpha_req(lam)
    ranks = np.arange(result.first_rank, result.last_rank + 1.0)
    y = np.log(lam[result.first_rank - 1: result.last_rank])
    a = np.c_[-np.log(ranks), np.ones_like(ranks)]
    w = 1.0 / ranks
    expected = np.linalg.solve(a.T @ (a * w[:, None]), (w[:, None] * a).T @ y)[0]
    assert result.alpha == expected and result.n_points == ranks.size


# --------------------------------------------------------------------------- silent numbers, now errors

def test_an_all_zero_toy_model_has_no_d_star():
    with pytest.raises(MetricInputError, match="all zero"):
        toy_geometry(np.zeros((5, 20)))
    partial = np.zeros((5, 20))
    partial[:, 0] = [1, 0, 0, 0, 0]
    assert toy_geometry(partial).D_star == 5.0


@pytest.mark.parametrize("counts, n_chunks, needle", [
    (np.array([[np.nan, 1], [1, 2]]), 4, "NaN"),
    (np.array([[2, np.inf], [1, 2]]), 4, "NaN or infinite"),
    (np.array([[2, 3], [3, 2]]), 4, "inconsistent"),     # a pair sharing more chunks than either fires in
    (np.array([[3, 0], [0, 3]]), 4, "inconsistent"),     # 3 + 3 chunks of 4 with no overlap
])
def test_impossible_cooccurrence_counts_are_errors_not_phi_zero(counts, n_chunks, needle):
    with pytest.raises(MetricInputError, match=needle):
        phi_coefficient(counts, n_chunks)


def test_nan_or_negative_codes_are_never_counted_active():
    codes = np.array([[0.5, 0.0], [0.0, 2.0], [1.0, 1.0]])
    C, n = cooccurrence_counts(codes, chunk_size=1)
    expected, _ = cooccurrence_counts(codes > 0, chunk_size=1)
    np.testing.assert_array_equal(C, expected)
    for bad, needle in ((np.nan, "NaN"), (-0.5, ">= 0")):
        codes_bad = codes.copy()
        codes_bad[0, 1] = bad
        with pytest.raises(MetricInputError, match=needle):
            cooccurrence_counts(codes_bad, chunk_size=1)


@pytest.mark.parametrize("value", [0.0, 0.1, -3.7, 1e-30])
def test_a_constant_unembedding_has_no_causal_inner_product(value):
    with pytest.raises(MetricInputError, match="same unembedding vector"):
        causal_inner_product_basis(np.full((8, 50), value))


def test_lda_on_identical_points_is_a_clear_error():
    labels = np.array([0, 0, 0, 1, 1, 1])
    H_b = np.zeros((6, 4))
    H_a = np.repeat(np.eye(4)[:2], 3, axis=0)               # each relation's pairs all identical
    for mode in ("in_sample", "heldout"):
        with pytest.raises(MetricInputError, match="lda='none'"):
            parallelogram_quality(H_a, H_b, labels, lda=mode)
    assert parallelogram_quality(H_a, H_b, labels, lda="none").raw.within_cos == pytest.approx(1.0)
    with pytest.raises(MetricInputError, match="lda='none'|LDA"):
        crystal_projection(H_a, H_b, labels, use_lda=True)
    with pytest.raises(MetricInputError, match="zero"):
        parallelogram_quality(H_b, H_b, labels, lda="none")


# --------------------------------------------------------------------------- hypothesis over degenerate arrays

_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                    st.sampled_from([0.0, 1.0, -1.0, 1e-300, 1e300]))


def _arrays(max_side: int = 12):
    return st.one_of(
        hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side), elements=_VALUES),
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side).map(np.zeros),
        st.tuples(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=max_side), st.floats(-5, 5)).map(
            lambda t: np.full(t[0], t[1])),
        st.tuples(st.integers(2, 8), st.integers(9, 40), st.integers(0, 99)).map(
            lambda t: np.random.default_rng(t[2]).normal(size=(t[0], t[1]))),   # fewer rows than columns
    )


def _finite(value) -> bool:
    return all(np.all(np.isfinite(np.asarray(v, dtype=float))) for v in value)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_arrays())
@np.errstate(all="ignore")
def test_spectral_and_galaxy_fits_answer_or_refuse(X):
    try:
        summary = spectral_summary(np.cov(X, rowvar=False, bias=True) if X.shape[0] > 1 else X @ X.T)
        assert _finite([summary.rankme, summary.participation_ratio, summary.total_variance])
        assert np.isfinite(summary.alpha.alpha) or summary.alpha.message   # NaN only with its reason
        assert summary.alpha.last_rank <= max(numerical_rank(summary.eigenvalues), 1) or np.isnan(summary.alpha.alpha)
    except MetricInputError:
        pass
    try:
        galaxy = galaxy_spectrum(X)
        assert _finite([galaxy.alpha, galaxy.intercept]) and galaxy.fit_stop <= numerical_rank(galaxy.eigenvalues)
    except MetricInputError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(_arrays(), st.integers(1, 30))
def test_cooccurrence_metrics_answer_or_refuse(Z, n_chunks):
    for kind in ("phi", "jaccard", "dice", "overlap", "simple_matching"):
        try:
            values = cooccurrence_affinity(Z if Z.shape[0] == Z.shape[1] else Z @ Z.T, n_chunks, kind)
            assert _finite([values]) and np.all(np.abs(values) <= 1 + 1e-12)
        except MetricInputError:
            pass
    try:
        C, n = cooccurrence_counts(Z, chunk_size=2)
        assert np.all(C >= 0) and np.all(np.diag(C) <= n)
    except MetricInputError:
        assert not (np.all(np.isfinite(Z)) and np.all(Z >= 0))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(_arrays(max_side=10))
def test_toy_geometry_and_causal_basis_answer_or_refuse(W):
    try:
        geometry = toy_geometry(W)
        assert _finite([geometry.D_star, geometry.D_i, geometry.superposition])
    except MetricInputError:
        pass
    if W.shape[0] >= 2:
        try:
            g = causal_inner_product_basis(W)
            assert _finite([g]) and np.any(g)
        except MetricInputError:
            pass


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(_arrays(max_side=8), st.integers(0, 3))
def test_crystals_answer_or_refuse(H, shift):
    labels = np.arange(H.shape[0]) % 2
    try:
        quality = parallelogram_quality(H, np.roll(H, shift, axis=0) * 0.5, labels, lda="in_sample")
        assert np.isfinite(quality.raw.quality) or np.isnan(quality.raw.quality)
    except MetricInputError:
        pass
