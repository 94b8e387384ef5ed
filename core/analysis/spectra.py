"""Spectra per layer: RankMe, alpha-ReQ, participation ratio, TwoNN and MLE intrinsic dimension (METHODS.md 4-5)."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.analysis.keys import (
    AnalysisError,
    cached_result,
    harvest_key_of,
)
from core.hooks import layer_of, sorted_sites


def site_spectrum(cov: np.ndarray, reservoir: np.ndarray | None, fit_range: tuple[int, int] | None = None,
                  id_max_points: int = 2000, mle_k: int = 10) -> dict[str, Any]:
    """One site's spectral numbers: the spectral_summary of its covariance (Li et al. 2025) and
    TwoNN / MLE intrinsic dimension of its reservoir (Facco et al. 2017; Levina & Bickel 2004)."""
    from core.metrics.intrinsic_dim import mle_levina_bickel, twonn
    from core.metrics.spectral import MetricInputError, spectral_summary

    summary = spectral_summary(np.asarray(cov, dtype=np.float64), fit_range)
    out: dict[str, Any] = {**summary.to_dict(), "twonn": None, "mle": None, "id_note": ""}
    points = None if reservoir is None else np.asarray(reservoir, dtype=np.float64)
    if points is None or points.shape[0] < 20:
        out["id_note"] = "too few reservoir samples for an intrinsic dimension (need >= 20)"
        return out
    if points.shape[0] > id_max_points:
        points = points[np.random.default_rng(0).choice(points.shape[0], id_max_points, replace=False)]
    try:
        out["twonn"] = twonn(points).to_dict()
        out["mle"] = mle_levina_bickel(points, k=mle_k).to_dict()
    except MetricInputError as error:
        out["id_note"] = str(error)
    return out


def spectra_by_layer(harvest: Any, store: Any = None, fit_range: tuple[int, int] | None = None,
                     id_max_points: int = 2000, harvest_key: str | None = None) -> dict[str, Any]:
    """RankMe, alpha-ReQ (with its fit range), participation ratio, TwoNN and MLE intrinsic
    dimension for every harvested site (METHODS.md sections 4-5).

    Returns {"sites": [...], "layers": [...], "per_site": {site: site_spectrum}, "fit_note": str}.
    """
    if not harvest.sites:
        raise AnalysisError("This harvest has no activation sites: harvest with at least one site.")
    hkey = harvest_key or harvest_key_of(harvest)
    settings = {"fit_range": list(fit_range) if fit_range else None, "id_max_points": id_max_points}

    def compute() -> dict:
        sites = sorted_sites(list(harvest.sites))
        per_site = {s: site_spectrum(harvest.sites[s].cov, harvest.sites[s].reservoir, fit_range, id_max_points)
                    for s in sites}
        notes = {v["alpha"]["message"] for v in per_site.values() if v["alpha"]["message"]}
        return {"sites": sites, "layers": [layer_of(s) for s in sites], "per_site": per_site,
                "fit_note": " ".join(sorted(notes)), "n_tokens": harvest.n_tokens}

    return cached_result(store, "spectra_by_layer", {"harvest": hkey, **settings}, compute)
