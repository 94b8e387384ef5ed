"""Spectra per layer: RankMe, alpha-ReQ, participation ratio, TwoNN and MLE intrinsic dimension (METHODS.md 4-5)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from core.analysis.keys import (
    AnalysisError,
    cached_result,
    harvest_key_of,
)
from core.analysis.results import SiteSpectrum, Skipped, SpectraByLayer
from core.hooks import sorted_sites

if TYPE_CHECKING:
    from core.harvest.result import HarvestResult
    from core.store import ArtifactStore


def site_spectrum(site: str, cov: np.ndarray, reservoir: np.ndarray | None, *,
                  fit_range: tuple[int, int] | None = None, id_max_points: int = 2000,
                  mle_k: int = 10) -> SiteSpectrum:
    """One site's spectral numbers: the spectral_summary of its covariance (Li et al. 2025) and
    TwoNN / MLE intrinsic dimension of its reservoir (Facco et al. 2017; Levina & Bickel 2004)."""
    from core.metrics.intrinsic_dim import mle_levina_bickel, twonn
    from core.metrics.spectral import MetricInputError, spectral_summary

    summary = spectral_summary(np.asarray(cov, dtype=np.float64), fit_range)
    points = None if reservoir is None else np.asarray(reservoir, dtype=np.float64)
    if points is None or points.shape[0] < 20:
        skipped = Skipped("too few reservoir samples for an intrinsic dimension (need >= 20)")
        return SiteSpectrum(site=site, spectrum=summary, twonn=skipped, mle=skipped)
    if points.shape[0] > id_max_points:
        points = points[np.random.default_rng(0).choice(points.shape[0], id_max_points, replace=False)]
    try:
        return SiteSpectrum(site=site, spectrum=summary, twonn=twonn(points), mle=mle_levina_bickel(points, k=mle_k))
    except MetricInputError as error:
        return SiteSpectrum(site=site, spectrum=summary, twonn=Skipped(str(error)), mle=Skipped(str(error)))


def spectra_by_layer(harvest: HarvestResult, *, store: ArtifactStore | None = None,
                     fit_range: tuple[int, int] | None = None, id_max_points: int = 2000,
                     harvest_key: str | None = None) -> SpectraByLayer:
    """RankMe, alpha-ReQ (with its fit range), participation ratio, TwoNN and MLE intrinsic
    dimension for every harvested site (METHODS.md sections 4-5), in layer order."""
    if not harvest.sites:
        raise AnalysisError("This harvest has no activation sites: harvest with at least one site.")
    hkey = harvest_key or harvest_key_of(harvest)
    settings = {"fit_range": list(fit_range) if fit_range else None, "id_max_points": id_max_points}

    def compute() -> SpectraByLayer:
        per_site = tuple(site_spectrum(s, harvest.sites[s].cov, harvest.sites[s].reservoir, fit_range=fit_range,
                                       id_max_points=id_max_points) for s in sorted_sites(list(harvest.sites)))
        notes = {e.spectrum.alpha.message for e in per_site if e.spectrum.alpha.message}
        return SpectraByLayer(per_site=per_site, fit_note=" ".join(sorted(notes)), n_tokens=int(harvest.n_tokens))

    return cached_result(store, "spectra_by_layer", {"harvest": hkey, **settings}, compute, SpectraByLayer)
