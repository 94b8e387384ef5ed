"""Intrinsic dimension of a point cloud of representations: TwoNN and the Levina-Bickel MLE.

Papers: Facco et al. 2017, "Estimating the intrinsic dimension of datasets by a minimal
neighborhood information" (TwoNN); Levina & Bickel 2004, "Maximum likelihood estimation of
intrinsic dimension", with the MacKay & Ghahramani (2005) aggregation over points. Their use across
layers: Ansuini et al. 2019, "Intrinsic dimension of data representations in deep neural
networks"; Joshi et al. 2025. Formulas as in METHODS.md section 5.

Inputs are the harvest's reservoir samples X [n, d] of one site.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.neighbors import NearestNeighbors

from core.jsonable import Result
from core.metrics.spectral import MetricInputError, _finite_array


@dataclass(frozen=True, eq=False)
class IntrinsicDimension(Result):
    """An intrinsic-dimension estimate and how many points it rests on."""

    dimension: float
    method: str
    n_points: int  # points given
    n_used: int  # points that entered the estimate
    n_duplicates_dropped: int  # points dropped because a neighbour sat at distance 0 (or r1 == r2)
    k: int | None = None  # neighbours (MLE only)


def _distinct_points(X, min_points: int) -> tuple[np.ndarray, int, int]:
    """The distinct rows of X, how many rows X had, and how many exact duplicates were removed.

    Duplicates (repeated tokens in a reservoir) put neighbours at distance 0 and ties among the
    neighbours of nearby points, which biases both estimators low (a 4-dim Gaussian with 100 of
    1500 points repeated read 3.4 by TwoNN and 2.9 by MLE before this); one copy of each is kept.
    """
    x = _finite_array(X, "X", ndim=2)
    n = x.shape[0]
    x = np.unique(x, axis=0)
    if x.shape[0] < min_points:
        raise MetricInputError(
            f"This intrinsic-dimension estimate needs at least {min_points} distinct points; "
            f"got {x.shape[0]} (of {n} given)."
        )
    return x, n, n - x.shape[0]


def _neighbour_distances(x: np.ndarray, k: int) -> np.ndarray:
    """Distances to the k nearest other points, [n, k] (column 0 is the nearest)."""
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    distances, _ = nn.kneighbors(x)
    # Column 0 is the point itself (distance 0); the points are distinct, so no other zero.
    return distances[:, 1:]


def twonn(X, discard_fraction: float = 0.1) -> IntrinsicDimension:
    """TwoNN intrinsic dimension (Facco et al. 2017), as in the authors' and Ansuini et al.'s code.

    mu_i = r2(i) / r1(i) (distances to the 2nd and 1st nearest neighbours); sort mu ascending;
    F_emp(i) = i / N for i = 1..N; drop the top `discard_fraction` of mu (the tail where the
    model breaks down; it also drops F_emp = 1, where -log(1 - F) is infinite);
    d = slope of the zero-intercept least-squares fit of -log(1 - F_emp) on log(mu):
        d = sum(x * y) / sum(x * x),  x = log(mu), y = -log(1 - F_emp).
    Exact duplicate points are removed first (one copy kept, see `_distinct_points`); points with
    r1 = r2 (ties) are then dropped before N is counted, as the reference implementation does.
    `n_duplicates_dropped` counts both.
    """
    if not 0.0 < discard_fraction < 1.0:
        raise MetricInputError("discard_fraction must lie strictly between 0 and 1.")
    x, n_given, n_duplicates = _distinct_points(X, 4)
    dist = _neighbour_distances(x, 2)
    r1, r2 = dist[:, 0], dist[:, 1]
    good = (r1 > 0) & (r2 > r1)
    n_dropped = n_duplicates + int((~good).sum())
    mu = np.sort(r2[good] / r1[good])
    n = mu.size
    if n < 3:
        raise MetricInputError("Too few distinct points for TwoNN (most points are duplicates).")
    f_emp = np.arange(1, n + 1, dtype=np.float64) / n
    n_fit = min(int(np.floor(n * (1.0 - discard_fraction))), n - 1)
    if n_fit < 2:
        raise MetricInputError("Too few points left for TwoNN after discarding the tail.")
    xs = np.log(mu[:n_fit])
    ys = -np.log(1.0 - f_emp[:n_fit])
    dimension = float((xs * ys).sum() / (xs * xs).sum())
    return IntrinsicDimension(dimension, "twonn", int(n_given), int(n_fit), n_dropped)


def mle_levina_bickel(X, k: int = 10) -> IntrinsicDimension:
    """Levina-Bickel maximum-likelihood intrinsic dimension with MacKay-Ghahramani aggregation.

    T_j(x) = distance from x to its j-th nearest neighbour (j = 1..k);
        m_k(x) = [ (1 / (k - 1)) * sum_{j=1}^{k-1} log(T_k(x) / T_j(x)) ]^-1
        d = 1 / mean_x(1 / m_k(x))
    i.e. the inverse of the mean of the inverses (MacKay & Ghahramani 2005), which is less biased
    than averaging m_k directly. Exact duplicate points would make log(T_k / T_1) infinite; they are
    removed first, one copy kept (see `_distinct_points`). (Levina & Bickel 2004; METHODS.md section 5.)
    k = 10 by default: Levina & Bickel recommend k in 10..20; the smaller end is less pulled down
    by the curvature and density changes within the neighbourhood (on a 10-dim Gaussian with
    4000 points, k = 10 gives ~9.4 and k = 20 ~9.2; every such estimator reads a little low there).
    """
    if int(k) < 2:
        raise MetricInputError("The MLE intrinsic dimension needs k >= 2 neighbours.")
    k = int(k)
    x, n_given, n_dropped = _distinct_points(X, k + 2)
    dist = _neighbour_distances(x, k)
    if dist.shape[0] < 2:
        raise MetricInputError("Too few distinct points for the MLE intrinsic dimension.")
    inverse_m = np.log(dist[:, k - 1 : k] / dist[:, : k - 1]).mean(axis=1)  # 1 / m_k(x)
    mean_inverse = float(inverse_m.mean())
    dimension = float("inf") if mean_inverse <= 0 else 1.0 / mean_inverse
    return IntrinsicDimension(dimension, "mle", int(n_given), int(dist.shape[0]), n_dropped, k)
