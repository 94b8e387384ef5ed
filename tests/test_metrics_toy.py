"""The toy model of superposition against its known answers (Elhage et al. 2022; Bereska et al. 2025)."""

import json

import numpy as np
import pytest

from core.errors import AtlasError
from core.metrics.superposition import effective_features_from_mass, psi_frob
from core.metrics.toy import (
    DIMENSIONALITY_REFERENCES,
    ToyModel,
    ground_truth_mass,
    sweep_sparsity,
    toy_geometry,
    train_toy_model,
    train_toy_models,
)


def regular_polygon(k: int) -> np.ndarray:
    angles = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(angles), np.sin(angles)])


def test_geometry_closed_forms():
    # one feature per dimension, plus one feature that is not learned
    W = np.c_[np.eye(3), np.zeros(3)]
    g = toy_geometry(W)
    np.testing.assert_allclose(g.D_i, [1, 1, 1, 0])
    np.testing.assert_allclose(g.superposition, 0)
    assert g.D_star == pytest.approx(1.0)
    # pentagon: D_i = 2/5, D* = 2/5
    g = toy_geometry(regular_polygon(5))
    np.testing.assert_allclose(g.D_i, 0.4)
    assert g.D_star == pytest.approx(0.4)
    # antipodal pair in one dimension of a 2-d space, third feature alone: 1/2, 1/2, 1
    g = toy_geometry(np.array([[1.0, -1.0, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(g.D_i, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(g.superposition, [1.0, 1.0, 0.0])
    # triangle in 2-d: 2/3; tetrahedron in 3-d: 3/4
    np.testing.assert_allclose(toy_geometry(regular_polygon(3)).D_i, 2 / 3)
    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], dtype=float).T
    np.testing.assert_allclose(toy_geometry(tetra).D_i, 3 / 4)
    json.dumps(g.to_dict())


def test_pentagon_setting_gives_two_fifths():
    # n = 5, m = 2, 1 - S = 0.05, equal importance; as in the paper, several random starts are
    # trained and the lowest-loss one is read (a start can stick in a local minimum).
    models = train_toy_models([0.95] * 4, n=5, m=2, importance_decay=1.0, steps=3000, seed=0)
    best = min(models, key=lambda model: model.final_loss)
    g = toy_geometry(best.W)
    np.testing.assert_allclose(g.D_i, 0.4, atol=0.05)
    assert np.all(g.represented > 0.9)  # all five features stored, none dropped
    assert psi_frob(best.W) > 2.0  # more than one feature per neuron: superposition


def test_ground_truth_mass_keeps_represented_features_only():
    model = ToyModel(W=np.array([[2.0, 0.0, 0.1], [0.0, 0.8, 0.0]]), b=np.zeros(3), importance=np.ones(3),
                     sparsity=0.0, final_loss=0.0)
    x = np.array([[1.0, 1.0, 1.0], [0.5, 1.0, 3.0]])
    np.testing.assert_allclose(ground_truth_mass(model, x), [1.5, 2.0, 0.0])
    p = np.array([1.5, 2.0]) / 3.5
    assert effective_features_from_mass(ground_truth_mass(model, x)) == pytest.approx(np.exp(-(p * np.log(p)).sum()))


@pytest.mark.slow  # ~30 s on one core; runs by default (CI included)
def test_sae_measured_features_track_ground_truth_across_sparsity():
    """Bereska et al. 2025: r = 0.94 +/- 0.02 for 20 features in 5 neurons, SAE dictionary 40, L1 0.1."""
    sweep = sweep_sparsity(seed=0)
    assert sweep.pearson_r >= 0.9
    # the ground truth itself behaves as Elhage et al. describe: more sparsity, more features
    assert sweep.F_true[0] == pytest.approx(5.0, abs=1.0)  # dense: about one feature per neuron
    assert sweep.F_true[-1] > 2 * sweep.F_true[0]
    assert sweep.D_star[0] == pytest.approx(1.0, abs=0.1)
    assert sweep.n_represented[0] == 5 and np.all(sweep.n_represented <= 20)
    json.dumps(sweep.to_dict())


def test_bad_inputs_raise_atlas_errors():
    with pytest.raises(AtlasError):
        train_toy_model(sparsity=1.0)
    with pytest.raises(AtlasError):
        train_toy_model(n=0)
    with pytest.raises(AtlasError):
        sweep_sparsity(sparsities=(0.5,))
    with pytest.raises(AtlasError):
        toy_geometry(np.ones(4))


# ---------------------------------------------------------------- figures (core/figures/superposition.py)


def test_toy_figures_build_with_expected_traces():
    import plotly.graph_objects as go

    from core.figures.superposition import (
        dimensionality_sweep_figure,
        feature_dimensionality_figure,
        toy_sweep_figure,
        toy_weights_figure,
    )
    from core.metrics.toy import SparsitySweep

    pentagon = regular_polygon(5)
    fig = toy_weights_figure(pentagon, importance=np.ones(5))
    assert isinstance(fig, go.Figure) and len(fig.data) == 2
    assert len(fig.data[1].x) == 5
    assert "projected" in toy_weights_figure(np.eye(3, 6)).layout.title.text

    g = toy_geometry(pentagon)
    fig = feature_dimensionality_figure(g)
    assert len(fig.data) == 2
    levels = sorted(round(s.y0, 4) for s in fig.layout.shapes)
    assert levels == sorted(round(v, 4) for v in (*DIMENSIONALITY_REFERENCES, g.D_star))

    fig = dimensionality_sweep_figure([0.5, 0.9], [g.D_i, np.array([1.0, 0.0])], [0.4, 1.0])
    assert len(fig.data) == 2 and len(fig.data[0].x) == 6  # zeros (not learned) are left out

    sweep = SparsitySweep(np.array([0.1, 0.9]), np.array([5.0, 9.0]), np.array([5.2, 8.7]), np.array([1.0, 0.5]),
                          np.array([1.0, 1.8]), np.array([1.04, 1.74]), 1.0, 20, 5, 40)
    fig = toy_sweep_figure(sweep)
    assert len(fig.data) == 2 and "r = 1.000" in fig.data[0].name
