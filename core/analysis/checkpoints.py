"""Spectral phases over training checkpoints (Li et al. 2025; METHODS.md section 4)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from core.analysis.keys import (
    AnalysisError,
    ProgressFn,
    analysis_key,
    cached_result,
    report,
)
from core.analysis.results import CheckpointSpectrum, SpectraOverCheckpoints
from core.harvest.checkpoints import (
    checkpoint_identity,
    checkpoint_options,
    checkpoint_spec,
    harvest_checkpoint,
    resolve_checkpoints,
)
from core.hooks import sorted_sites

if TYPE_CHECKING:
    from core.harvest.distributed import RayCluster
    from core.harvest.result import HarvestResult
    from core.sources.corpus import CorpusSpec
    from core.sources.models import ModelSpec
    from core.store import ArtifactStore


def checkpoint_spectrum(spec: ModelSpec, checkpoint: str, *, max_tokens: int = 4096,
                        store: ArtifactStore | None = None, fit_range: tuple[int, int] | None = None,
                        corpus: CorpusSpec | None = None,
                        harvested: tuple[HarvestResult, str] | None = None) -> CheckpointSpectrum:
    """RankMe, alpha-ReQ and participation ratio (Li et al. 2025; METHODS.md section 4) of every
    resid_post covariance of one checkpoint, from a moments-only harvest (no SAEs, no reservoir) of a
    corpus slice of `max_tokens`. Cached per checkpoint, so the model is loaded only on a miss.
    harvested: (HarvestResult, key) of this checkpoint's harvest when it was already run elsewhere (a
    Ray task); it is saved to the store like a harvest run here."""
    from core.metrics.spectral import spectral_summary

    parts = checkpoint_spectrum_parts(spec, checkpoint, max_tokens, fit_range, corpus)

    def compute() -> CheckpointSpectrum:
        if harvested is None:
            result, key = harvest_checkpoint(spec, checkpoint, max_tokens, store, corpus)
        else:
            result, key = harvested
            if store is not None and not store.has(key):
                result.save(store, key)
        sites = sorted_sites(list(result.sites))
        summaries = [spectral_summary(np.asarray(result.sites[site].cov, dtype=np.float64), fit_range)
                     for site in sites]
        return CheckpointSpectrum(
            sites=tuple(sites), rankme=np.array([s.rankme for s in summaries], dtype=np.float64),
            alpha=np.array([s.alpha.alpha for s in summaries], dtype=np.float64),
            participation_ratio=np.array([s.participation_ratio for s in summaries], dtype=np.float64),
            fit_note=next((s.alpha.message for s in summaries if s.alpha.message), ""), harvest=key)

    return cached_result(store, "checkpoint_spectrum", parts, compute, CheckpointSpectrum)


def checkpoint_spectrum_parts(spec: ModelSpec, checkpoint: str, max_tokens: int,
                              fit_range: tuple[int, int] | None, corpus: CorpusSpec | None) -> dict[str, Any]:
    """What checkpoint_spectrum's cache key covers."""
    return {"model": checkpoint_identity(spec), "checkpoint": checkpoint, "max_tokens": int(max_tokens),
            "fit_range": list(fit_range) if fit_range else None,
            "corpus": None if corpus is None else asdict(corpus)}


def _harvest_missing_on(cluster: RayCluster, spec: ModelSpec, names: Sequence[str], max_tokens: int,
                        store: ArtifactStore | None, fit_range: tuple[int, int] | None, corpus: CorpusSpec | None,
                        progress: ProgressFn | None) -> dict[str, tuple[HarvestResult, str]]:
    """The harvests of the checkpoints whose spectrum is not cached, run as parallel Ray tasks."""
    from core.harvest.distributed import harvest_checkpoints_on_ray

    def cached(name: str) -> bool:
        return store is not None and store.has(
            analysis_key("checkpoint_spectrum", **checkpoint_spectrum_parts(spec, name, max_tokens, fit_range, corpus)))

    missing = [name for name in names if not cached(name)]
    if not missing:
        return {}
    report(progress, 0.0, f"harvesting {len(missing)} checkpoint(s) on {cluster.describe()}")
    return harvest_checkpoints_on_ray(
        cluster, spec, missing, max_tokens, corpus,
        progress=lambda done, total: report(progress, 0.8 * done / total,
                                            f"{done}/{total} checkpoints harvested on {cluster.describe()}"))


def spectra_over_checkpoints(model: ModelSpec | str | Path | None = None, checkpoints: Sequence[str] | None = None,
                             *, max_tokens: int = 4096, store: ArtifactStore | None = None,
                             progress: ProgressFn | None = None, smoothing: float = 0.5,
                             fit_range: tuple[int, int] | None = None, device: str | None = None,
                             corpus: CorpusSpec | None = None, cluster: RayCluster | None = None,
                             ) -> SpectraOverCheckpoints:
    """Spectral phases over training (Li et al. 2025; METHODS.md section 4) on a model's checkpoints.

    `model` is a core.sources.models.ModelSpec (the organism, or a TransformerLens model with training
    checkpoints: see `checkpoint_options`), an organism directory, or None (the committed organism);
    `checkpoints` are identifiers of `checkpoint_options` (None: all of them); `device` overrides the
    spec's (an organism directory defaults to "cpu"); `corpus` is the CorpusSpec to harvest on
    (needed for TransformerLens models; the organism defaults to its world's eval split).
    Each checkpoint is loaded with core.sources.models.load_model, harvested for its moments on `max_tokens`
    tokens (`checkpoint_spectrum`, cached per checkpoint, so adding one recomputes only that one) and
    freed. RankMe / alpha-ReQ / PR give [layer x checkpoint] tables, and `segment_phases` (sign of
    d smoothed RankMe / d log step) gives the phases per layer with the raw curves. `cluster`: a
    core.harvest.distributed.RayCluster to harvest the uncached checkpoints on, as parallel Ray tasks
    (None: one after another, here); the results are the same.
    """
    from core.metrics.spectral import segment_phases

    spec = checkpoint_spec(model, device)
    options = checkpoint_options(spec)
    names = resolve_checkpoints(spec, options, checkpoints)
    if len(names) < 2:
        raise AnalysisError("Spectral phases need at least 2 checkpoints.")
    if corpus is None and spec.source != "organism":  # say so before any checkpoint is downloaded
        raise AnalysisError("Choose a corpus (in the sidebar) to harvest the checkpoints on.")
    steps = [options[n] for n in names]
    parts = {"model": checkpoint_identity(spec), "checkpoints": names, "steps": steps,
             "max_tokens": int(max_tokens), "smoothing": smoothing, "fit_range": fit_range,
             "corpus": None if corpus is None else asdict(corpus)}

    def compute() -> SpectraOverCheckpoints:
        harvested = {} if cluster is None else _harvest_missing_on(cluster, spec, names, max_tokens, store,
                                                                    fit_range, corpus, progress)
        start = 0.8 if harvested else 0.0
        per_checkpoint = []
        for i, name in enumerate(names):
            report(progress, start + (1 - start) * i / len(names),
                   f"checkpoint {name} (step {options[name]:,}; {i + 1}/{len(names)})")
            per_checkpoint.append(checkpoint_spectrum(spec, name, max_tokens=max_tokens, store=store,
                                                      fit_range=fit_range, corpus=corpus,
                                                      harvested=harvested.get(name)))
        report(progress, 1.0, "spectra and phases")
        sites = per_checkpoint[0].sites
        if any(p.sites != sites for p in per_checkpoint):
            raise AnalysisError("The checkpoints do not share the same activation sites.")
        rankme, alpha, pr = (np.stack([getattr(p, metric) for p in per_checkpoint], axis=1)  # [site, checkpoint]
                             for metric in ("rankme", "alpha", "participation_ratio"))
        phases = {site: segment_phases(steps, rankme[i].tolist(), alpha[i].tolist(), smoothing=smoothing)
                  for i, site in enumerate(sites)}
        return SpectraOverCheckpoints(
            sites=sites, checkpoints=tuple(names), steps=tuple(int(s) for s in steps), rankme=rankme, alpha=alpha,
            participation_ratio=pr, phases=phases,
            fit_note=next((p.fit_note for p in per_checkpoint if p.fit_note), ""),
            max_tokens=int(max_tokens), smoothing=float(smoothing),
            checkpoint_keys=tuple(p.key for p in per_checkpoint))

    return cached_result(store, "spectra_over_checkpoints", parts, compute, SpectraOverCheckpoints)
