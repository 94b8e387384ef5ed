"""Space and time probes (core.metrics.probes): held-out R^2 of ridge probes."""

import json

import numpy as np
import pytest

from core.errors import AtlasError
from core.metrics.probes import probe_per_layer, ridge_probe


def planted_linear(n=2000, d=20, signal_var=1.0, noise_var=0.25, n_outputs=1, seed=0):
    """y = X w + noise with var(Xw) = signal_var per output: theoretical R^2 = s / (s + noise)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal((d, n_outputs))
    w *= np.sqrt(signal_var) / np.linalg.norm(w, axis=0)
    y = X @ w + np.sqrt(noise_var) * rng.standard_normal((n, n_outputs))
    return X, (y[:, 0] if n_outputs == 1 else y)


def test_planted_linear_relation_reaches_the_theoretical_r2():
    X, y = planted_linear()
    result = ridge_probe(X, y, seed=0)
    assert result.r2 == pytest.approx(1.0 / 1.25, abs=0.04)
    assert result.n_test == 500 and result.y_pred.shape == (500, 1)
    json.dumps(result.to_dict())


def test_two_dimensional_coordinates():
    X, y = planted_linear(n_outputs=2, noise_var=0.1, seed=1)
    result = ridge_probe(X, y)
    assert result.r2_per_output.shape == (2,)
    assert np.all(result.r2_per_output > 0.85)


def test_random_labels_give_no_r2():
    X, _ = planted_linear(n=600, d=50, seed=2)
    y = np.random.default_rng(3).standard_normal(600)
    assert ridge_probe(X, y).r2 < 0.03


def test_per_layer_finds_the_layer_that_holds_the_attribute():
    X, y = planted_linear(n=800, seed=4)
    rng = np.random.default_rng(5)
    layers = {0: rng.standard_normal(X.shape), 1: X + 2.0 * rng.standard_normal(X.shape), 2: X}
    result = probe_per_layer(layers, y)
    assert result.best_layer == "2"
    assert result.r2[0] < 0.05 < result.r2[1] < result.r2[2]
    json.dumps(result.to_dict())


def test_bad_input():
    X, y = planted_linear(n=40)
    with pytest.raises(AtlasError):
        ridge_probe(X, y[:-1])
    with pytest.raises(AtlasError):
        ridge_probe(X, y, test_fraction=1.5)
    with pytest.raises(AtlasError):
        probe_per_layer({}, y)


def test_probe_figures_build():
    from core.figures.geometry import probe_figures_from_layers, probe_map_figure, probe_r2_figure

    X, y = planted_linear(n=200, n_outputs=2, seed=6)
    layers = probe_per_layer({"0": X, "1": X + np.random.default_rng(7).standard_normal(X.shape)}, y)
    assert list(probe_r2_figure(layers, "city coordinates").data[0].x) == ["0", "1"]
    fig = probe_map_figure(layers.results["0"], names=[f"city{i}" for i in range(200)])
    assert len(fig.data) == 3
    X1, y1 = planted_linear(n=200, seed=8)
    assert len(probe_map_figure(ridge_probe(X1, y1)).data) == 2
    probe_figures_from_layers({"space": layers}).to_json()


def test_grouped_split_holds_out_whole_entities():
    # each entity (city) appears 10 times; a probe that memorises entities fails on held-out ones
    rng = np.random.default_rng(9)
    n_entities, reps, d = 60, 10, 30
    identity = rng.standard_normal((n_entities, d))  # entity-specific code, unrelated to y
    y_entity = rng.standard_normal(n_entities)
    groups = np.repeat(np.arange(n_entities), reps)
    X = identity[groups] + 0.1 * rng.standard_normal((groups.size, d))
    y = y_entity[groups]
    grouped = ridge_probe(X, y, groups=groups)
    assert set(groups[grouped.test_indices]).isdisjoint(set(np.delete(groups, grouped.test_indices)))
    assert grouped.r2 < 0.1
    with pytest.raises(AtlasError):
        ridge_probe(X, y, groups=np.zeros(groups.size))
