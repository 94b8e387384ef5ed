"""Spectral metrics against known answers: power laws, flat spectra, closed forms, planted phases."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import AtlasError
from core.metrics.spectral import (
    PHASE_COMPRESSION,
    PHASE_ENTROPY,
    PHASE_WARMUP,
    MetricInputError,
    alpha_req,
    default_fit_range,
    eigenspectrum,
    eigenspectrum_from_covariance,
    participation_ratio,
    rankme,
    segment_phases,
    spectral_summary,
    spectral_tables,
)


def power_law(d: int, alpha: float) -> np.ndarray:
    return np.arange(1, d + 1, dtype=float) ** -alpha


def gaussian_with_spectrum(lam: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Samples of a zero-mean Gaussian whose covariance has eigenvalues lam in a random basis."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((lam.size, lam.size)))
    return (rng.standard_normal((n, lam.size)) * np.sqrt(lam)) @ q.T + 3.0  # offset: centring matters


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5, 2.0])
def test_alpha_req_recovers_exact_power_law(alpha):
    result = alpha_req(power_law(256, alpha))
    assert result.alpha == pytest.approx(alpha, abs=1e-9)
    assert (result.first_rank, result.last_rank) == (12, 100)
    assert not result.adapted and result.n_points == 89


@pytest.mark.parametrize("alpha", [0.8, 1.2, 2.0])
def test_alpha_req_recovers_power_law_from_gaussian_samples(alpha):
    X = gaussian_with_spectrum(power_law(256, alpha), n=8000, seed=int(alpha * 10))
    assert alpha_req(eigenspectrum(X)).alpha == pytest.approx(alpha, abs=0.05)


def test_alpha_req_from_covariance_matches_samples():
    X = gaussian_with_spectrum(power_law(256, 1.0), n=8000, seed=3)
    centred = X - X.mean(0)
    summary = spectral_summary(centred.T @ centred / X.shape[0])
    assert summary.alpha.alpha == pytest.approx(1.0, abs=0.05)
    np.testing.assert_allclose(summary.eigenvalues, eigenspectrum(X), rtol=1e-6, atol=1e-12)


def test_alpha_req_small_d_adapts_range_and_says_so():
    result = alpha_req(power_law(40, 1.3))
    assert result.adapted
    assert (result.first_rank, result.last_rank) == (4, 20)
    assert "4..20" in result.message
    assert result.alpha == pytest.approx(1.3, abs=1e-9)
    assert default_fit_range(128) == ((12, 100), False, "")


def test_alpha_req_explicit_range_and_rank_deficient_spectrum():
    lam = power_law(64, 1.0)
    assert alpha_req(lam, fit_range=(2, 30)).alpha == pytest.approx(1.0, abs=1e-9)
    lam[20:] = 0.0  # only 20 nonzero eigenvalues: zeros inside 7..32 cannot enter a log fit
    result = alpha_req(lam, fit_range=(7, 32))
    assert result.n_points == 14 and "left out" in result.message
    assert result.alpha == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(MetricInputError):
        alpha_req(lam, fit_range=(10, 5))


@pytest.mark.parametrize("k", [1, 5, 37, 200])
def test_rankme_of_flat_spectrum_is_k(k):
    lam = np.r_[np.full(k, 2.5), np.zeros(300 - k)]
    assert rankme(lam) == pytest.approx(k, rel=1e-3)


def test_participation_ratio_closed_forms():
    assert participation_ratio(np.r_[np.ones(7), np.zeros(5)]) == pytest.approx(7.0)
    # two eigenvalues a, b: (a + b)**2 / (a**2 + b**2)
    assert participation_ratio([3.0, 1.0]) == pytest.approx(16 / 10)
    lam = power_law(1000, 1.0)  # harmonic sums
    assert participation_ratio(lam) == pytest.approx(lam.sum() ** 2 / (lam**2).sum())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1e3), min_size=2, max_size=50).filter(lambda v: sum(v) > 1e-6))
def test_effective_ranks_lie_between_one_and_d(values):
    lam = np.array(values)
    nonzero = int((lam > 0).sum())
    assert 1 - 1e-9 <= participation_ratio(lam) <= nonzero + 1e-9
    assert 1 - 1e-3 <= rankme(lam) <= lam.size + 1e-3


def test_eigenspectrum_is_descending_nonnegative_and_handles_n_below_d():
    rng = np.random.default_rng(0)
    lam = eigenspectrum(rng.standard_normal((5, 20)))
    assert lam.shape == (20,) and np.all(np.diff(lam) <= 1e-12) and np.all(lam >= 0)
    assert (lam > 1e-10).sum() == 4  # 5 centred samples span 4 dimensions
    cov = np.diag([1.0, -1e-12, 3.0])
    np.testing.assert_allclose(eigenspectrum_from_covariance(cov), [3.0, 1.0, 0.0])


def test_bad_inputs_raise_atlas_errors():
    for bad in (np.zeros(10), [1.0, np.nan, 2.0], [-1.0, 2.0]):
        with pytest.raises(AtlasError):
            rankme(bad)
    with pytest.raises(AtlasError):
        eigenspectrum_from_covariance(np.ones((3, 4)))
    with pytest.raises(AtlasError):
        eigenspectrum(np.ones((1, 4)))
    with pytest.raises(AtlasError):
        alpha_req(np.ones(3))


def test_spectral_tables_over_layers_and_checkpoints():
    covs = np.stack([np.stack([np.diag(power_law(64, a)) for a in (0.5, 1.0, 1.5)]) for _ in range(2)])
    tables = spectral_tables(covs)
    assert tables.rankme.shape == (2, 3)
    np.testing.assert_allclose(tables.alpha, [[0.5, 1.0, 1.5]] * 2, atol=1e-9)
    assert np.all(np.diff(tables.rankme, axis=1) < 0)  # faster decay, lower effective rank
    assert (tables.fit_first_rank, tables.fit_last_rank) == (6, 32)
    json.dumps(tables.to_dict())
    json.dumps(spectral_summary(np.diag(power_law(64, 1.0))).to_dict())


def planted_phase_curves(seed: int = 0):
    """RankMe falls until step 100, rises until step 5000, falls after; alpha mirrors it."""
    steps = np.unique(np.r_[0, np.round(np.geomspace(1, 100_000, 40))])
    x = np.log1p(steps)
    b1, b2 = np.log1p(100), np.log1p(5000)
    shape = np.where(x < b1, 40 - 6 * x, np.where(x < b2, 40 - 6 * b1 + 8 * (x - b1),
                                                   40 - 6 * b1 + 8 * (b2 - b1) - 7 * (x - b2)))
    rng = np.random.default_rng(seed)
    rank = shape + rng.normal(0, 0.4, x.size)
    alpha = 2.0 - 0.02 * shape + rng.normal(0, 0.005, x.size)
    return steps, rank, alpha


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_segment_phases_finds_planted_boundaries(seed):
    steps, rank, alpha = planted_phase_curves(seed)
    seg = segment_phases(steps, rank, alpha, smoothing=0.5)
    assert [s.label for s in seg.segments] == [PHASE_WARMUP, PHASE_ENTROPY, PHASE_COMPRESSION]
    b1, b2 = seg.boundaries
    # within a factor ~1.6 of the planted steps (two checkpoints on this log grid)
    assert abs(np.log(b1) - np.log(100)) < 0.5
    assert abs(np.log(b2) - np.log(5000)) < 0.5
    assert all(s.alpha_agrees for s in seg.segments)
    assert len(seg.interval_labels) == steps.size - 1
    np.testing.assert_array_equal(seg.rankme_raw, rank)
    assert np.std(np.diff(seg.rankme_smooth, 2)) < np.std(np.diff(rank, 2))  # it did smooth
    json.dumps(seg.to_dict())


def test_segment_phases_without_warmup_and_input_checks():
    steps = np.array([0, 10, 100, 1000, 10000])
    seg = segment_phases(steps, [5.0, 6.0, 7.0, 6.0, 5.0], smoothing=0)
    assert [s.label for s in seg.segments] == [PHASE_ENTROPY, PHASE_COMPRESSION]
    assert seg.boundaries == [100.0]
    assert seg.segments[0].alpha_agrees is None
    with pytest.raises(AtlasError):
        segment_phases([10, 0, 100], [1.0, 2.0, 3.0])
    with pytest.raises(AtlasError):
        segment_phases([0, 1], [1.0])


# ---------------------------------------------------------------- figures (core/figures/spectral.py)


def test_spectral_figures_build_with_expected_traces():
    import plotly.graph_objects as go

    from core.figures.spectral import (
        checkpoint_heatmap_figure,
        eigenspectrum_figure,
        layer_profile_figure,
        phase_figure,
    )

    summary = spectral_summary(np.diag(power_law(64, 1.1)))
    fig = eigenspectrum_figure(summary.eigenvalues, summary.alpha)
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    # Plotly places shapes in data units on a log axis (checked in Chromium); annotations take log10.
    assert len(fig.layout.shapes) == 1 and fig.layout.shapes[0].x0 == pytest.approx(6)
    assert "adapted" in fig.layout.annotations[0].text
    assert len(eigenspectrum_figure(summary.eigenvalues).data) == 1

    fig = layer_profile_figure([0, 1, 2], [10, 12, 9], [1.0, 0.9, 1.1], [5, 6, 4],
                               {"TwoNN": [3, 4, 3], "MLE": [3.2, 4.1, 2.9]})
    assert len(fig.data) == 5 and fig.layout.title.text
    with pytest.raises(AtlasError):
        layer_profile_figure([0, 1], [1.0], [1.0], [1.0])

    fig = checkpoint_heatmap_figure(np.arange(6.0).reshape(2, 3), [0, 10, 100], ["L0", "L1"])
    assert len(fig.data) == 1 and fig.data[0].type == "heatmap"
    with pytest.raises(AtlasError):
        checkpoint_heatmap_figure(np.ones((3, 2)), [0, 10, 100], ["L0", "L1"])

    steps, rank, alpha = planted_phase_curves(0)
    seg = segment_phases(steps, rank, alpha)
    fig = phase_figure(seg)
    assert len(fig.data) == 4 and len(fig.layout.shapes) == 3
    assert {a.text for a in fig.layout.annotations} == {PHASE_WARMUP, PHASE_ENTROPY, PHASE_COMPRESSION}
    assert len(phase_figure(segment_phases(steps, rank)).data) == 2
