"""Superposition counts per SAE site and the toy-model lab (METHODS.md sections 1-3)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from core.analysis.keys import (
    as_float64,
    cached_result,
    harvest_key_of,
    harvested_hooks,
    model_identity,
)
from core.analysis.results import SAESuperposition, Skipped, SuperpositionByLayer, ToyLab, ToySettings
from core.metrics.superposition import ConvergenceCurve, EffectiveFeatures, InterferenceStats
from core.sources.faces import ModelFace, SAEFace

if TYPE_CHECKING:
    from core.harvest.result import HarvestResult
    from core.store import ArtifactStore


def superposition_by_layer(harvest: HarvestResult, saes: Sequence[SAEFace], model: ModelFace | None = None, *,
                           store: ArtifactStore | None = None, max_pairs: int = 200_000,
                           harvest_key: str | None = None) -> SuperpositionByLayer:
    """Effective features and interference per SAE site (METHODS.md sections 1-2).

    Per SAE: F = exp(H(p)) of the L1 mass share, psi = F / N with N = the site's width d_in (d_model
    for resid sites), alive features, mean L0, the convergence curve of F over the harvest's L1-mass
    snapshots, and the interference (mean and mean-squared |cos|) of the decoder rows against 1/m.
    With a model: the interference of the unembedding rows (W_U.T) too.
    """
    from core.metrics.superposition import (
        effective_features,
        effective_features_curve,
        interference,
    )

    by_hook, hooks = harvested_hooks(harvest, saes)
    hkey = harvest_key or harvest_key_of(harvest)

    def sae_entry(hook: str) -> SAESuperposition:
        stats, sae = harvest.saes[hook], by_hook[hook]
        effective: EffectiveFeatures | Skipped = Skipped("no feature ever fired on the harvested tokens")
        if float(np.sum(stats.l1_mass)) > 0:
            effective = effective_features(stats.l1_mass, sae.d_in, stats.fire_count, max(stats.n_tokens, 1))
        mass = np.asarray(stats.l1_snapshots, dtype=np.float64)
        counts = np.asarray(stats.l1_snapshot_tokens, dtype=np.float64)
        keep = mass.sum(1) > 0 if mass.ndim == 2 and mass.size else np.zeros(0, bool)
        convergence: ConvergenceCurve | Skipped = Skipped("no L1-mass snapshot with any mass")
        if keep.sum() >= 1:
            convergence = effective_features_curve(mass[keep], counts[keep])
        return SAESuperposition(hook_name=hook, d_sae=int(sae.d_sae), width=int(sae.d_in),
                                explained_variance=float(stats.explained_variance), l0=float(stats.l0),
                                n_tokens=int(stats.n_tokens), effective=effective, convergence=convergence,
                                interference=interference(as_float64(sae.W_dec), max_pairs=max_pairs))

    def compute() -> SuperpositionByLayer:
        unembedding: InterferenceStats | Skipped = Skipped("no model given")
        if model is not None:
            # [d_vocab, d_model] rows as they are (float32): interference reads them in float64 blocks
            unembedding = interference(model.W_U.T, max_pairs=max_pairs)
        return SuperpositionByLayer(per_sae=tuple(sae_entry(h) for h in hooks), unembedding=unembedding)

    parts = {"harvest": hkey, "max_pairs": max_pairs, "model": model_identity(model) if model is not None else None}
    return cached_result(store, "superposition_by_layer", parts, compute, SuperpositionByLayer)


def toy_lab(*, n: int = 5, m: int = 2, sparsity: float = 0.95, importance_decay: float = 1.0, steps: int = 2000,
            sae_dictionary: int | None = None, seed: int = 0, store: ArtifactStore | None = None) -> ToyLab:
    """The toy model of superposition trained live (Elhage et al. 2022), with an SAE on its hidden
    layer (Bereska et al. 2025): W, D*, D_i, and F measured through the SAE against the ground truth.

    The model is instance 0 of `sweep_sparsity` at this S and its neighbour: W, D*, the loss and F all
    come from one trained model (the neighbour is there because the sweep's Pearson r needs two).
    """
    from core.metrics.toy import sweep_sparsity, toy_geometry

    settings = ToySettings(n=n, m=m, sparsity=sparsity, importance_decay=importance_decay, steps=steps,
                           sae_dictionary=sae_dictionary, seed=seed)

    def compute() -> ToyLab:
        neighbour = sparsity * 0.5 if sparsity > 0.5 else min(0.99, sparsity + 0.3)
        sweep = sweep_sparsity([sparsity, neighbour], n=n, m=m, importance_decay=importance_decay,
                               toy_steps=steps, sae_dictionary=sae_dictionary or 2 * n, sae_steps=steps,
                               eval_samples=5000, seed=seed)
        model = sweep.model(0)
        return ToyLab(settings=settings, W=model.W, importance=model.importance, final_loss=float(model.final_loss),
                      geometry=toy_geometry(model.W), F_true=float(sweep.F_true[0]), F_sae=float(sweep.F_sae[0]),
                      sae_dictionary=int(sweep.sae_dictionary))

    return cached_result(store, "toy_lab", settings.to_dict(), compute, ToyLab)
