"""Superposition counts and interference against known answers."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import AtlasError
from core.metrics.superposition import (
    cumulative_mass_snapshots,
    effective_features,
    effective_features_curve,
    effective_features_from_mass,
    interference,
    psi_frob,
    snapshot_token_counts,
)


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 500), extra=st.integers(0, 500), scale=st.floats(1e-6, 1e6))
def test_uniform_mass_over_k_features_gives_exactly_k(k, extra, scale):
    mass = np.r_[np.full(k, scale), np.zeros(extra)]
    assert effective_features_from_mass(mass) == pytest.approx(k, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1e4), min_size=1, max_size=100).filter(lambda v: sum(v) > 1e-3))
def test_effective_features_lie_between_one_and_alive(values):
    result = effective_features(values)
    assert 1 - 1e-9 <= result.F <= result.alive + 1e-6


def test_one_hot_mass_gives_one_and_reported_numbers():
    result = effective_features(np.r_[0.0, 7.0, 0.0, 0.0], width=2, fire_count=[0, 3, 0, 0], n_tokens=6)
    assert result.F == pytest.approx(1.0)
    assert result.psi == pytest.approx(0.5)
    assert result.alive == 1 and result.n_features == 4 and result.mean_l0 == pytest.approx(0.5)
    json.dumps(result.to_dict())


def test_effective_features_of_two_level_mass():
    # p = (1/2, 1/4, 1/4): H = 1.5 log 2, F = 2**1.5
    result = effective_features([2.0, 1.0, 1.0], width=4)
    assert result.F == pytest.approx(2**1.5)
    assert result.psi == pytest.approx(2**1.5 / 4)
    assert result.mean_l0 is None


def test_convergence_curve_from_a_stream_of_batches():
    rng = np.random.default_rng(0)
    d_sae, total = 64, 5000
    # feature i fires with probability proportional to 1/(i+1): F converges to a fixed value
    probs = 1.0 / np.arange(1, d_sae + 1)
    z = (rng.random((total, d_sae)) < probs * 0.3) * rng.random((total, d_sae))
    counts = snapshot_token_counts(total, n_points=12, first=50)
    assert counts[0] == 50 and counts[-1] == total and np.all(np.diff(counts) > 0)
    batches = (-z[i : i + 333] for i in range(0, total, 333))  # signs do not matter: |z|
    snaps = cumulative_mass_snapshots(batches, counts)
    for row, count in zip(snaps, counts):
        np.testing.assert_allclose(row, z[:count].sum(0), rtol=1e-10)
    curve = effective_features_curve(snaps, counts)
    assert curve.F[-1] == pytest.approx(effective_features_from_mass(z.sum(0)))
    assert abs(curve.final_relative_change) < 0.05
    assert curve.F[0] < curve.F[-1]  # few tokens see few of the rare features
    json.dumps(curve.to_dict())
    with pytest.raises(AtlasError):
        cumulative_mass_snapshots(iter([z[:10]]), [5, 20])


def test_psi_frob_of_toy_weights():
    W = np.eye(5, 20)  # 5 features, one per neuron
    assert psi_frob(W) == pytest.approx(1.0)
    pentagon = np.stack([np.cos(2 * np.pi * np.arange(5) / 5), np.sin(2 * np.pi * np.arange(5) / 5)])
    assert psi_frob(pentagon) == pytest.approx(2.5)


@pytest.mark.parametrize("m", [16, 64])
def test_random_unit_vectors_have_msq_overlap_one_over_m(m):
    rng = np.random.default_rng(m)
    W = rng.standard_normal((600, m)) * rng.uniform(0.5, 2.0, (600, 1))  # norms do not matter
    stats = interference(W)
    assert not stats.sampled and stats.n_pairs == 600 * 599 // 2
    assert stats.msq_overlap == pytest.approx(1.0 / m, rel=0.05)
    assert stats.msq_ratio == pytest.approx(1.0, rel=0.05)
    assert stats.reference_msq == pytest.approx(1.0 / m)
    json.dumps(stats.to_dict())


def test_sampled_pairs_estimate_the_same_overlap():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3000, 32))
    stats = interference(W, max_pairs=100_000, seed=1)
    assert stats.sampled and stats.n_pairs == 100_000
    assert stats.msq_overlap == pytest.approx(1.0 / 32, rel=0.05)
    assert interference(W, max_pairs=100_000, seed=1).msq_overlap == stats.msq_overlap


def test_orthogonal_rows_have_no_interference_and_row_norm_stats():
    W = np.diag([1.0, 2.0, 3.0, 4.0])
    W = np.vstack([W, np.zeros((1, 4))])
    stats = interference(W)
    assert stats.mean_overlap == 0 and stats.msq_overlap == 0
    assert stats.n_zero_rows == 1 and stats.n_rows == 5
    assert stats.row_norm_max == 4.0 and stats.row_norm_min == 0.0
    assert stats.row_norm_mean == pytest.approx(2.0)
    antipodal = interference(np.array([[1.0, 0.0], [-2.0, 0.0]]))
    assert antipodal.mean_overlap == pytest.approx(1.0)


def test_bad_inputs_raise_atlas_errors():
    for bad in ([0.0, 0.0], [1.0, -1.0], [np.inf, 1.0]):
        with pytest.raises(AtlasError):
            effective_features(bad)
    with pytest.raises(AtlasError):
        effective_features([1.0, 2.0], fire_count=[1])
    with pytest.raises(AtlasError):
        interference(np.zeros((4, 3)))
    with pytest.raises(AtlasError):
        effective_features_curve(np.ones((3, 4)), [10, 5, 20])


# ---------------------------------------------------------------- figures (core/figures/superposition.py)


def test_superposition_figures_build_with_expected_traces():
    import plotly.graph_objects as go

    from core.figures.superposition import convergence_figure, effective_features_figure, interference_figure

    results = [effective_features([1.0, 1.0, 0.0], width=2), effective_features([3.0, 1.0, 1.0], width=2)]
    fig = effective_features_figure(["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"], results)
    assert isinstance(fig, go.Figure) and len(fig.data) == 3
    assert list(fig.data[0].y) == pytest.approx([2.0, results[1].F])
    with pytest.raises(AtlasError):
        effective_features_figure(["a"], results)

    curve = effective_features_curve(np.array([[1.0, 0.0], [1.0, 1.0]]), [10, 100])
    fig = convergence_figure({"L0": curve, "L1": curve})
    assert len(fig.data) == 2 and fig.layout.xaxis.type == "log"

    rng = np.random.default_rng(0)
    stats = [interference(rng.standard_normal((50, m))) for m in (8, 16)]
    fig = interference_figure(["decoder L0", "unembedding"], stats)
    assert len(fig.data) == 3 and [t.x[0] for t in fig.data[:2]] == pytest.approx([1 / 8, 1 / 16])
