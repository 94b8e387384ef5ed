"""Linear probes for space and time.

Gurnee & Tegmark (2023), "Language Models Represent Space and Time" (METHODS.md section 9):
ridge probes from a layer's activations to a continuous attribute (city coordinates, birth
years), scored by held-out R^2, layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupShuffleSplit, train_test_split
from sklearn.preprocessing import StandardScaler

from core.jsonable import FloatArray, IntArray, Result
from core.metrics.geometry import GeometryInputError, as_matrix

__all__ = ["ProbeResult", "LayerProbes", "ridge_probe", "probe_per_layer", "DEFAULT_ALPHAS"]

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 15))


@dataclass(frozen=True, eq=False)
class ProbeResult(Result):
    r2: float  # held-out R^2, averaged uniformly over outputs
    r2_per_output: FloatArray
    alpha: float  # ridge strength chosen by RidgeCV on the training split
    n_train: int
    n_test: int
    test_indices: IntArray  # rows of X in the held-out split
    y_test: FloatArray  # [n_test, n_outputs]
    y_pred: FloatArray  # [n_test, n_outputs]


def ridge_probe(
    X: np.ndarray,
    y: np.ndarray,
    test_fraction: float = 0.25,
    seed: int = 0,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    groups: np.ndarray | None = None,
) -> ProbeResult:
    """Held-out R^2 of a linear ridge probe (Gurnee & Tegmark 2023):

        split rows into train / test (test_fraction, seeded);  standardise X on the train split
        y_hat = RidgeCV(alphas).fit(X_train, y_train).predict(X_test)   # alpha by efficient LOO CV
        R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean(y))^2 on the test split, per output, then averaged

    `y` may be 1-D (a year) or 2-D (coordinates: one probe per output, sharing alpha). A probe on
    unrelated labels gives R^2 <= ~0. With `groups` (e.g. the city of each occurrence), whole
    groups are held out (GroupShuffleSplit), so the probe is scored on entities it never saw.
    """
    Xm = as_matrix(X, "X", min_rows=8)
    ym = np.asarray(y, dtype=np.float64)
    if ym.ndim == 1:
        ym = ym[:, None]
    if ym.ndim != 2 or ym.shape[0] != Xm.shape[0]:
        raise GeometryInputError(f"y needs one row per row of X ({Xm.shape[0]}); got shape {np.shape(y)}.")
    if not np.all(np.isfinite(ym)):
        raise GeometryInputError("y contains NaN or infinite values.")
    if not 0 < test_fraction < 1:
        raise GeometryInputError("test_fraction must lie strictly between 0 and 1.")
    idx = np.arange(Xm.shape[0])
    if groups is None:
        train, test = train_test_split(idx, test_size=test_fraction, random_state=seed)
    else:
        groups = np.asarray(groups).ravel()
        if groups.shape[0] != Xm.shape[0]:
            raise GeometryInputError("groups needs one entry per row of X.")
        if np.unique(groups).size < 2:
            raise GeometryInputError("Holding out groups needs at least 2 different groups.")
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_fraction, random_state=seed)
        train, test = next(splitter.split(Xm, ym, groups))
    if test.size < 2 or train.size < 2:
        raise GeometryInputError("Too few rows to hold some out; give the probe more examples.")
    scaler = StandardScaler().fit(Xm[train])
    model = RidgeCV(alphas=list(alphas)).fit(scaler.transform(Xm[train]), ym[train])
    pred = model.predict(scaler.transform(Xm[test])).reshape(test.size, -1)
    per_output = np.atleast_1d(r2_score(ym[test], pred, multioutput="raw_values"))
    return ProbeResult(
        r2=float(per_output.mean()),
        r2_per_output=per_output,
        alpha=float(np.atleast_1d(model.alpha_).mean()),
        n_train=int(train.size),
        n_test=int(test.size),
        test_indices=test,
        y_test=ym[test],
        y_pred=pred,
    )


@dataclass(frozen=True, eq=False)
class LayerProbes(Result):
    layers: list[str]
    r2: FloatArray  # held-out R^2 per layer, in the order of `layers`
    best_layer: str
    best_r2: float
    results: dict[str, ProbeResult]


def probe_per_layer(
    X_by_layer: Mapping[str, np.ndarray] | Mapping[int, np.ndarray],
    y: np.ndarray,
    test_fraction: float = 0.25,
    seed: int = 0,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    groups: np.ndarray | None = None,
) -> LayerProbes:
    """`ridge_probe` on every layer with the same split (same seed), so the R^2 curve compares layers fairly."""
    if not X_by_layer:
        raise GeometryInputError("Give the activations of at least one layer.")
    results = {
        str(layer): ridge_probe(X, y, test_fraction=test_fraction, seed=seed, alphas=alphas, groups=groups)
        for layer, X in X_by_layer.items()
    }
    layers = list(results)
    r2 = np.array([results[name].r2 for name in layers])
    best = layers[int(np.argmax(r2))]
    return LayerProbes(layers=layers, r2=r2, best_layer=best, best_r2=float(r2.max()), results=results)
