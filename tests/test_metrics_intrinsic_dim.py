"""Intrinsic dimension against known answers: linearly embedded Gaussians and a swiss roll."""

import json

import numpy as np
import pytest
from sklearn.datasets import make_swiss_roll

from core.errors import AtlasError
from core.metrics.intrinsic_dim import mle_levina_bickel, twonn


def embedded_gaussian(d: int, n: int, seed: int, ambient: int = 100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, ambient))


# d = 10 needs more points: every nearest-neighbour estimator reads a Gaussian low at d = 10 with
# 2000 points (~9.0-9.7), because density falls off within the neighbourhoods.
@pytest.mark.parametrize("d,n", [(2, 2000), (5, 2000), (10, 4000)])
@pytest.mark.parametrize("estimator", [twonn, mle_levina_bickel])
def test_embedded_gaussian_gives_its_dimension(d, n, estimator):
    result = estimator(embedded_gaussian(d, n, seed=d))
    assert result.dimension == pytest.approx(d, rel=0.10)
    assert result.n_points == n and result.n_duplicates_dropped == 0


@pytest.mark.parametrize("estimator", [twonn, mle_levina_bickel])
def test_swiss_roll_is_two_dimensional(estimator):
    X, _ = make_swiss_roll(2000, random_state=0)
    assert estimator(X).dimension == pytest.approx(2.0, abs=0.3)


def test_twonn_uses_the_discard_fraction():
    result = twonn(embedded_gaussian(3, 1000, seed=0), discard_fraction=0.2)
    assert result.n_used == 800


def test_duplicates_are_dropped_not_fatal():
    X = embedded_gaussian(4, 1500, seed=1)
    with_duplicates = np.vstack([X, X[:100]])
    for estimator in (twonn, mle_levina_bickel):
        result = estimator(with_duplicates)
        assert result.n_duplicates_dropped >= 100  # one copy of each duplicated point
        assert result.n_points == 1600
        assert result.dimension == pytest.approx(estimator(X).dimension, rel=1e-9)
        json.dumps(result.to_dict())


def test_bad_inputs_raise_atlas_errors():
    with pytest.raises(AtlasError):
        twonn(np.zeros((50, 3)))  # every point a duplicate
    with pytest.raises(AtlasError):
        twonn(np.ones((2, 3)))
    with pytest.raises(AtlasError):
        twonn(embedded_gaussian(2, 100, 0), discard_fraction=1.0)
    with pytest.raises(AtlasError):
        mle_levina_bickel(embedded_gaussian(2, 100, 0), k=1)
    with pytest.raises(AtlasError):
        mle_levina_bickel(np.full((30, 4), np.nan))
