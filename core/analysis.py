"""Run every measurement over a harvest's artifacts: the one place the CLI, the verify card and the
pages get their numbers from.

Pure orchestration (no streamlit): each function takes the loaded model / SAEs / HarvestResult /
ground truth, calls `core.metrics.*`, and returns a JSON-able dict. With a store, the dict is saved
under a key derived from what it was computed from (the harvest key, or the model identity and a
hash of the ground truth, plus the settings and ANALYSIS_VERSION), so a second call costs a read.

Views:
    spectra_by_layer           RankMe, alpha-ReQ (fit range reported), PR, TwoNN + MLE ID per site
    spectra_over_checkpoints   moments-only harvest per training checkpoint (organism, Pythia,
                               stanford-crfm; cached per checkpoint) -> layer x checkpoint tables
                               and the phase segmentation per layer
    superposition_by_layer     F, psi (N = d_in of the site), alive, mean L0, convergence curve,
                               interference of decoder rows and of unembedding rows vs 1/m
    geometry_by_layer          galaxy spectrum, lobes (co-occurrence vs geometry, AMI vs null),
                               decoder clusters with the PCA of their reconstructions
    ground_truth_geometry      needs a ground truth (the organism's, or word lists in its schema):
                               circles of cyclic items per layer (at the item token and at the answer
                               position of the cyclic-arithmetic prompts), crystals, concepts, probes
    run_all                    everything above that the inputs allow

Results use plain lists for arrays and None for NaN (JSON has no NaN).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from core.errors import AtlasError
from core.jsonable import jsonable as to_json

ANALYSIS_VERSION = "analysis-3"  # 2: circles at the token and at the answer position; 3: toy lab from one model
ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is running)

# Generic English templates used when a ground truth gives word lists but no templates (real models).
DEFAULT_TEMPLATES: dict[str, Any] = {
    "weekday_mention": "we met on {day} and again on",
    "month_mention": "we met in {month} and again in",
    "city_direction": "going from {a} to {b} you travel",
    "city_mention": "i drove from {a} to",
    "people_order": "of {a} and {b} the older is",
    "people_birth": "{person} was born in",
    "analogy_context": {},
    "analogy": {},
}


class AnalysisError(AtlasError):
    """An analysis cannot run on these inputs (a missing artifact, too few items, ...)."""


# ---------------------------------------------------------------------------------------------
# JSON, keys, cache
# ---------------------------------------------------------------------------------------------
def harvest_key_of(harvest: Any) -> str:
    """The store key of a harvest, recomputed from what it records (equals core.harvest.harvest_key)."""
    from core.store import artifact_key

    return artifact_key(kind="harvest", sources=harvest.sources, settings=harvest.settings)


def model_identity(model: Any) -> dict[str, Any]:
    """What identifies a model's weights for a cache key (name, source, origin, revision, dtype)."""
    card = getattr(model, "card", None)
    if card is None:
        return {"name": type(model).__name__, "id": id(model)}
    return {k: getattr(card, k, None) for k in ("name", "source", "origin", "revision", "dtype")}


def ground_truth_digest(ground_truth: Mapping[str, Any]) -> str:
    text = json.dumps(to_json(ground_truth), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def analysis_key(name: str, **parts: Any) -> str:
    from core.store import artifact_key

    return artifact_key(kind=f"analysis:{name}", analysis_version=ANALYSIS_VERSION, **to_json(parts))


def _cached(store: Any, name: str, parts: Mapping[str, Any], compute: Callable[[], dict]) -> dict:
    """compute() unless the store holds the result under the key of (name, parts); JSON-safe result
    with its "key" and "name" set."""
    key = analysis_key(name, **parts)
    if store is not None:
        artifact = store.load(key)
        if artifact is not None and "result" in artifact.meta:
            return artifact.meta["result"]
    result = to_json(compute())
    result["key"] = key
    result["name"] = name
    if store is not None:
        store.save(key, {}, {"kind": f"analysis:{name}", "result": result})
    return result


def _say(progress: ProgressFn | None, fraction: float, text: str) -> None:
    if progress is not None:
        progress(float(min(1.0, max(0.0, fraction))), text)


def layer_of(hook_name: str) -> int:
    """core.models.layer_of, with -1 (sorts first) for a site outside the blocks instead of None."""
    from core.models import layer_of as block_of

    layer = block_of(hook_name)
    return -1 if layer is None else layer


def _sorted_sites(names: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda n: (layer_of(n), n))


# ---------------------------------------------------------------------------------------------
# spectra
# ---------------------------------------------------------------------------------------------
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
        sites = _sorted_sites(list(harvest.sites))
        per_site = {s: site_spectrum(harvest.sites[s].cov, harvest.sites[s].reservoir, fit_range, id_max_points)
                    for s in sites}
        notes = {v["alpha"]["message"] for v in per_site.values() if v["alpha"]["message"]}
        return {"sites": sites, "layers": [layer_of(s) for s in sites], "per_site": per_site,
                "fit_note": " ".join(sorted(notes)), "n_tokens": harvest.n_tokens}

    return _cached(store, "spectra_by_layer", {"harvest": hkey, **settings}, compute)


TL_CHECKPOINTED_PREFIXES = ("EleutherAI/pythia", "stanford-crfm/")  # TL lists their checkpoints offline


def checkpoint_options(spec: Any) -> dict[str, int]:
    """Training checkpoints of the model `spec` (a core.models.ModelSpec) names: identifier -> step,
    in training order; {} when the model has none that Atlas can list without a network call.

    Organism: its saved checkpoints ("step_000123", ..., "final"). TransformerLens: the Pythia and
    stanford-crfm families, whose steps TransformerLens keeps in its own tables; the identifier is the
    checkpoint_index as a string ("0".."153" for Pythia), as core.models.parse_tl_checkpoint reads it.
    (NeelNanda's checkpointed models are left out: TL lists them by asking the Hugging Face Hub.)
    """
    if spec.source == "organism":
        from core.organism.loading import ORGANISM_DIR, checkpoint_steps

        return checkpoint_steps(spec.path or ORGANISM_DIR)
    if spec.source != "transformer_lens":
        return {}
    from core.models import official_tl_name

    official = official_tl_name(spec.name)
    if not official.startswith(TL_CHECKPOINTED_PREFIXES):
        return {}
    from transformer_lens.loading_from_pretrained import get_checkpoint_labels

    labels, _ = get_checkpoint_labels(official)
    return {str(i): int(step) for i, step in enumerate(labels)}


def default_checkpoints(options: Mapping[str, int], n: int = 8) -> list[str]:
    """About `n` identifiers of `options` spread evenly in log(step + 1) (the axis of the phases),
    first and last included, in training order."""
    names = sorted(options, key=lambda c: options[c])
    if len(names) <= n:
        return names
    x = np.log1p(np.asarray([options[c] for c in names], dtype=np.float64))
    targets = np.linspace(x[0], x[-1], n)
    picked = {int(np.argmin(np.abs(x - t))) for t in targets}
    return [names[i] for i in sorted(picked)]


def _checkpoint_spec(model: Any, device: str | None) -> Any:
    """The ModelSpec to vary: `model` itself, or the organism in directory `model` (None: the committed one)."""
    from core.models import ModelSpec

    if isinstance(model, ModelSpec):
        return model if device is None else replace(model, device=device)
    from core.organism.loading import ORGANISM_DIR

    return ModelSpec(source="organism", path=str(ORGANISM_DIR if model is None else model), device=device or "cpu")


def _resolve_checkpoints(spec: Any, options: Mapping[str, int], checkpoints: Sequence[str] | None) -> list[str]:
    """The requested checkpoints as identifiers of `options` (TL "index:12" / "value:143000" -> "12"),
    deduplicated and in training order."""
    if not options:
        raise AnalysisError(f"The model {spec.name!r} has no training checkpoints that Atlas can list "
                            "(the organism, Pythia and stanford-crfm models have them).")
    if checkpoints is None:
        return list(options)
    names: list[str] = []
    unknown: list[str] = []
    for requested in checkpoints:
        name = str(requested)
        if spec.source == "transformer_lens" and name not in options:
            from core.models import parse_tl_checkpoint

            parsed = parse_tl_checkpoint(name)
            if "checkpoint_index" in parsed:
                name = str(parsed["checkpoint_index"])
            elif "checkpoint_value" in parsed:
                name = next((c for c, s in options.items() if s == parsed["checkpoint_value"]), name)
        if name in options:
            names.append(name)
        else:
            unknown.append(str(requested))
    if unknown:
        listed = ", ".join(options) if len(options) <= 12 else f"{', '.join(list(options)[:12])}, ..."
        raise AnalysisError(f"Unknown checkpoint(s) {', '.join(unknown)}; the model has {listed}.")
    return sorted(dict.fromkeys(names), key=lambda c: options[c])


def _checkpoint_identity(spec: Any) -> dict[str, Any]:
    """What identifies the weights behind `spec` apart from the checkpoint (part of the cache keys)."""
    if spec.source == "organism":
        from core.organism.loading import ORGANISM_DIR

        path = str(spec.path or ORGANISM_DIR)
        return {"source": "organism", "path": path, "manifest": _file_digest(path, "manifest.json"), "dtype": spec.dtype}
    from core.models import official_tl_name

    return {"source": spec.source, "name": official_tl_name(spec.name), "dtype": spec.dtype}


def _checkpoint_corpus(spec: Any, corpus: Any, max_tokens: int, n_ctx: int) -> Any:
    """The corpus slice a checkpoint is harvested on: the given CorpusSpec cut to about max_tokens, or
    for the organism (when none is given) its world's eval split."""
    from core.corpus import CorpusSpec

    if corpus is not None:
        return replace(corpus, max_chunks=max(1, -(-int(max_tokens) // int(corpus.context_size))))
    if spec.source != "organism":
        raise AnalysisError("Choose a corpus (in the sidebar) to harvest the checkpoints on.")
    from core.organism.loading import ORGANISM_DIR

    return CorpusSpec(source="world", path=str(spec.path or ORGANISM_DIR), split="eval",
                      max_chunks=max(1, -(-int(max_tokens) // n_ctx)))


def _free(model: Any) -> None:
    """Drop a checkpoint's weights before loading the next (Pythia checkpoints are GBs on big sizes)."""
    import gc

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def checkpoint_spectrum(spec: Any, checkpoint: str, max_tokens: int = 4096, store: Any = None,
                        fit_range: tuple[int, int] | None = None, corpus: Any = None) -> dict[str, Any]:
    """RankMe, alpha-ReQ and participation ratio (Li et al. 2025; METHODS.md section 4) of every
    resid_post covariance of one checkpoint, from a moments-only harvest (no SAEs, no reservoir) of a
    corpus slice of `max_tokens`. Cached per checkpoint, so the model is loaded only on a miss.

    Returns {"sites", "rankme": {site: v}, "alpha": {site: v}, "participation_ratio": {site: v},
    "fit_note", "harvest"}.
    """
    from core.corpus import load_corpus
    from core.harvest import HarvestSettings, harvest_cached
    from core.metrics.spectral import spectral_summary
    from core.models import load_model

    parts = {"model": _checkpoint_identity(spec), "checkpoint": checkpoint, "max_tokens": int(max_tokens),
             "fit_range": list(fit_range) if fit_range else None,
             "corpus": None if corpus is None else asdict(corpus)}

    def compute() -> dict:
        model = load_model(replace(spec, checkpoint=checkpoint))
        try:
            sliced = load_corpus(_checkpoint_corpus(spec, corpus, max_tokens, model.n_ctx), model)
            settings = HarvestSettings(max_tokens=int(max_tokens), reservoir_size=0, batch_size=32)
            result, key = harvest_cached(model, [], sliced, settings, store)
        finally:
            _free(model)
        out: dict[str, Any] = {"sites": _sorted_sites(list(result.sites)), "rankme": {}, "alpha": {},
                               "participation_ratio": {}, "fit_note": "", "harvest": key}
        for site in out["sites"]:
            summary = spectral_summary(np.asarray(result.sites[site].cov, dtype=np.float64), fit_range)
            out["rankme"][site] = summary.rankme
            out["alpha"][site] = summary.alpha.alpha
            out["participation_ratio"][site] = summary.participation_ratio
            out["fit_note"] = out["fit_note"] or summary.alpha.message
        return out

    return _cached(store, "checkpoint_spectrum", parts, compute)


def _nan_for_none(values: Sequence[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def spectra_over_checkpoints(model: Any = None, checkpoints: Sequence[str] | None = None,
                             max_tokens: int = 4096, store: Any = None, progress: ProgressFn | None = None,
                             smoothing: float = 0.5, fit_range: tuple[int, int] | None = None,
                             device: str | None = None, corpus: Any = None) -> dict[str, Any]:
    """Spectral phases over training (Li et al. 2025; METHODS.md section 4) on a model's checkpoints.

    `model` is a core.models.ModelSpec (the organism, or a TransformerLens model with training
    checkpoints: see `checkpoint_options`), an organism directory, or None (the committed organism);
    `checkpoints` are identifiers of `checkpoint_options` (None: all of them); `device` overrides the
    spec's (an organism directory defaults to "cpu"); `corpus` is the CorpusSpec to harvest on
    (needed for TransformerLens models; the organism defaults to its world's eval split).
    Each checkpoint is loaded with core.models.load_model, harvested for its moments on `max_tokens`
    tokens (`checkpoint_spectrum`, cached per checkpoint, so adding one recomputes only that one) and
    freed. RankMe / alpha-ReQ / PR give [layer x checkpoint] tables, and `segment_phases` (sign of
    d smoothed RankMe / d log step) gives the phases per layer with the raw curves.
    """
    from core.metrics.spectral import segment_phases

    spec = _checkpoint_spec(model, device)
    options = checkpoint_options(spec)
    names = _resolve_checkpoints(spec, options, checkpoints)
    if len(names) < 2:
        raise AnalysisError("Spectral phases need at least 2 checkpoints.")
    if corpus is None and spec.source != "organism":  # say so before any checkpoint is downloaded
        raise AnalysisError("Choose a corpus (in the sidebar) to harvest the checkpoints on.")
    steps = [options[n] for n in names]
    parts = {"model": _checkpoint_identity(spec), "checkpoints": names, "steps": steps,
             "max_tokens": int(max_tokens), "smoothing": smoothing, "fit_range": fit_range,
             "corpus": None if corpus is None else asdict(corpus)}

    def compute() -> dict:
        per_checkpoint = []
        for i, name in enumerate(names):
            _say(progress, i / len(names), f"checkpoint {name} (step {options[name]:,}; {i + 1}/{len(names)})")
            per_checkpoint.append(checkpoint_spectrum(spec, name, max_tokens, store, fit_range, corpus))
        _say(progress, 1.0, "spectra and phases")
        sites = per_checkpoint[0]["sites"]
        if any(p["sites"] != sites for p in per_checkpoint):
            raise AnalysisError("The checkpoints do not share the same activation sites.")
        table = {metric: [[p[metric][site] for p in per_checkpoint] for site in sites]
                 for metric in ("rankme", "alpha", "participation_ratio")}
        phases = {site: segment_phases(steps, _nan_for_none(rm), _nan_for_none(al), smoothing=smoothing).to_dict()
                  for site, rm, al in zip(sites, table["rankme"], table["alpha"])}
        return {"sites": sites, "layers": [layer_of(s) for s in sites], "checkpoints": names, "steps": steps,
                "tables": table, "phases": phases,
                "fit_note": next((p["fit_note"] for p in per_checkpoint if p["fit_note"]), ""),
                "max_tokens": int(max_tokens), "smoothing": smoothing,
                "checkpoint_keys": [p["key"] for p in per_checkpoint]}

    return _cached(store, "spectra_over_checkpoints", parts, compute)


def _file_digest(directory: Any, name: str) -> str | None:
    from pathlib import Path

    path = Path(directory) / name
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


# ---------------------------------------------------------------------------------------------
# superposition
# ---------------------------------------------------------------------------------------------
def _numpy(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64) if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def _harvested_hooks(harvest: Any, saes: Sequence[Any]) -> tuple[dict[str, Any], list[str]]:
    """The loaded SAEs by hook name, and the hooks of those the harvest covered, in layer order."""
    by_hook = {s.hook_name: s for s in saes}
    hooks = _sorted_sites([h for h in harvest.saes if h in by_hook])
    if not hooks:
        raise AnalysisError("None of the loaded SAEs was harvested: run the harvest with these SAEs.")
    return by_hook, hooks


def superposition_by_layer(harvest: Any, saes: Sequence[Any], model: Any = None, store: Any = None,
                           max_pairs: int = 200_000, harvest_key: str | None = None) -> dict[str, Any]:
    """Effective features and interference per SAE site (METHODS.md sections 1-2).

    Per SAE: F = exp(H(p)) of the L1 mass share, psi = F / N with N = the site's width d_in (d_model
    for resid sites), alive features, mean L0, the convergence curve of F over the harvest's L1-mass
    snapshots, and the interference (mean and mean-squared |cos|) of the decoder rows against 1/m.
    With a model: the interference of the unembedding rows (W_U.T) too.
    """
    from core.metrics.superposition import effective_features, effective_features_curve, interference

    by_hook, hooks = _harvested_hooks(harvest, saes)
    hkey = harvest_key or harvest_key_of(harvest)

    def compute() -> dict:
        per_sae = {}
        for hook in hooks:
            stats, sae = harvest.saes[hook], by_hook[hook]
            entry: dict[str, Any] = {"hook_name": hook, "layer": layer_of(hook), "d_sae": int(sae.d_sae),
                                     "width": int(sae.d_in), "explained_variance": stats.explained_variance,
                                     "l0": stats.l0, "n_tokens": stats.n_tokens}
            if float(np.sum(stats.l1_mass)) > 0:
                entry["effective"] = effective_features(stats.l1_mass, sae.d_in, stats.fire_count,
                                                        max(stats.n_tokens, 1)).to_dict()
            else:
                entry["effective"] = None
            mass = np.asarray(stats.l1_snapshots, dtype=np.float64)
            counts = np.asarray(stats.l1_snapshot_tokens, dtype=np.float64)
            keep = mass.sum(1) > 0 if mass.ndim == 2 and mass.size else np.zeros(0, bool)
            entry["convergence"] = (effective_features_curve(mass[keep], counts[keep]).to_dict()
                                    if keep.sum() >= 1 else None)
            entry["interference"] = interference(_numpy(sae.W_dec), max_pairs=max_pairs).to_dict()
            per_sae[hook] = entry
        out = {"hooks": hooks, "layers": [layer_of(h) for h in hooks], "per_sae": per_sae, "unembedding": None}
        if model is not None:
            W_U = _numpy(model.W_U)  # [d_model, d_vocab]
            out["unembedding"] = interference(W_U.T, max_pairs=max_pairs).to_dict()
        return out

    parts = {"harvest": hkey, "max_pairs": max_pairs, "model": model_identity(model) if model is not None else None}
    return _cached(store, "superposition_by_layer", parts, compute)


def toy_lab(n: int = 5, m: int = 2, sparsity: float = 0.95, importance_decay: float = 1.0, steps: int = 2000,
            sae_dictionary: int | None = None, seed: int = 0, store: Any = None) -> dict[str, Any]:
    """The toy model of superposition trained live (Elhage et al. 2022), with an SAE on its hidden
    layer (Bereska et al. 2025): W, D*, D_i, and F measured through the SAE against the ground truth.

    The model is instance 0 of `sweep_sparsity` at this S and its neighbour: W, D*, the loss and F all
    come from one trained model (the neighbour is there because the sweep's Pearson r needs two).
    """
    from core.metrics.toy import sweep_sparsity, toy_geometry

    parts = {"n": n, "m": m, "sparsity": sparsity, "importance_decay": importance_decay, "steps": steps,
             "sae_dictionary": sae_dictionary, "seed": seed}

    def compute() -> dict:
        neighbour = sparsity * 0.5 if sparsity > 0.5 else min(0.99, sparsity + 0.3)
        sweep = sweep_sparsity([sparsity, neighbour], n=n, m=m, importance_decay=importance_decay,
                               toy_steps=steps, sae_dictionary=sae_dictionary or 2 * n, sae_steps=steps,
                               eval_samples=5000, seed=seed)
        model = sweep.model(0)
        return {"W": model.W, "importance": model.importance, "final_loss": model.final_loss,
                "geometry": toy_geometry(model.W).to_dict(), "F_true": float(sweep.F_true[0]),
                "F_sae": float(sweep.F_sae[0]), "sae_dictionary": sweep.sae_dictionary, "settings": parts}

    return _cached(store, "toy_lab", parts, compute)


# ---------------------------------------------------------------------------------------------
# geometry from the SAEs and the harvest (no ground truth needed)
# ---------------------------------------------------------------------------------------------
def _default_clusters(n: int, per_cluster: int, low: int = 2, high: int = 64) -> int:
    return int(min(high, max(low, round(n / per_cluster))))


def lobes_for_sae(stats: Any, W_dec: np.ndarray, n_lobes: int | None = None, affinity: str = "phi",
                  max_features: int = 1500, n_permutations: int = 100, seed: int = 0) -> dict[str, Any]:
    """Lobes of one SAE (Li et al. 2024): co-occurrence affinity over chunks -> spectral clusters,
    decoder-angle spectral clusters, and their AMI against a label-permutation null.

    Features used: those of `cooc_features` that fired in some but not every chunk (a constant
    feature has phi 0 with everything), the `max_features` most frequent of them when there are more.
    """
    from core.metrics.geometry import cooccurrence_affinity, geometric_clusters, lobe_agreement, lobes

    C = np.asarray(stats.cooc, dtype=np.float64)
    ids = np.asarray(stats.cooc_features, dtype=np.int64)
    n_chunks = int(stats.cooc_n_chunks)
    if n_chunks < 2 or C.size == 0:
        return {"skipped": f"only {n_chunks} co-occurrence chunk(s): harvest more tokens for lobes"}
    fired = np.diag(C)
    usable = np.flatnonzero((fired > 0) & (fired < n_chunks))
    if usable.size > max_features:
        usable = usable[np.argsort(-fired[usable], kind="stable")[:max_features]]
        usable.sort()
    if usable.size < 8:
        return {"skipped": f"only {usable.size} features vary across chunks: harvest more tokens for lobes"}
    k = int(n_lobes) if n_lobes else _default_clusters(usable.size, 25, 2, 20)
    k = max(2, min(k, usable.size // 2))
    sub = C[np.ix_(usable, usable)]
    A = cooccurrence_affinity(sub, n_chunks, kind=affinity)
    lobe_labels = lobes(A, k, offset=1.0 if affinity == "phi" else 0.0, seed=seed)
    W = np.asarray(W_dec, dtype=np.float64)[ids[usable]]
    geo = geometric_clusters(W, k, seed=seed)
    agreement = lobe_agreement(geo, lobe_labels, n_permutations=n_permutations, seed=seed)
    return {"features": ids[usable], "n_lobes": k, "affinity": affinity, "n_chunks": n_chunks,
            "lobes": lobe_labels, "geometric": geo, "agreement": agreement.to_dict(),
            "lobe_sizes": np.bincount(lobe_labels, minlength=k)}


def decoder_circles_for_sae(sae: Any, site: Any, W_dec: np.ndarray, n_clusters: int | None = None,
                            cyclic_token_ids: Mapping[str, Sequence[int]] | None = None, top_clusters: int = 6,
                            max_points: int = 600, seed: int = 0) -> dict[str, Any]:
    """Engels et al. 2024: spectral clusters of decoder directions, then the PCA of each cluster's
    reconstructions r_t = sum_{i in cluster, z_ti > 0} z_ti W_dec[i] over the harvest's reservoir tokens.

    Clusters are ranked by the share of their reconstruction mass on the cyclic tokens (weekdays,
    months) when `cyclic_token_ids` is given, else by total mass; the top ones keep their PCA.
    """
    from core.metrics.circles import cluster_reconstruction_pca, decoder_clusters

    X = torch.from_numpy(np.array(site.reservoir, dtype=np.float32))  # a writable copy of the mmap
    tokens = np.asarray(site.reservoir_token, dtype=np.int64)
    if X.shape[0] < 10:
        return {"skipped": "the harvest kept fewer than 10 reservoir samples at this site"}
    Z = sae.encode(X).cpu().numpy().astype(np.float64)
    W = np.asarray(W_dec, dtype=np.float64)
    k = int(n_clusters) if n_clusters else _default_clusters(W.shape[0], 20, 2, 200)
    labels = decoder_clusters(W, k, seed=seed)
    cyclic = {name: set(int(t) for t in ids) for name, ids in (cyclic_token_ids or {}).items()}
    cyc_all = set().union(*cyclic.values()) if cyclic else set()
    on_cyclic = np.isin(tokens, list(cyc_all)) if cyc_all else np.zeros(tokens.size, bool)
    scores = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        mass = np.clip(Z[:, members], 0, None).sum(1)
        total = float(mass.sum())
        share = float(mass[on_cyclic].sum() / total) if total > 0 else 0.0
        scores.append((share if cyc_all else total, total, c))
    ranked = [c for _, total, c in sorted(scores, reverse=True) if total > 0][:top_clusters]
    score_of = {c: score for score, _, c in scores}
    clusters = []
    for c in ranked:
        members = np.flatnonzero(labels == c)
        try:
            pca = cluster_reconstruction_pca(Z, W, members, n_components=5, seed=seed)
        except AtlasError:
            continue
        keep = pca.token_indices
        sel = np.arange(keep.size)
        if sel.size > max_points:
            sel = np.sort(np.random.default_rng(seed).choice(sel.size, max_points, replace=False))
        tok = tokens[keep]
        counts = np.bincount(tok, minlength=1)
        top_tokens = np.argsort(-counts)[:8]
        entry = {"cluster": c, "features": members, "score": score_of[c],
                 "n_tokens": int(keep.size), "explained_variance_ratio": pca.explained_variance_ratio,
                 "projections": pca.projections[sel], "tokens": tok[sel],
                 "top_tokens": [int(t) for t in top_tokens if counts[t] > 0]}
        # Circularity of the cluster: the mean reconstruction PCs of each cyclic item, when all occur.
        entry["circularity"] = {}
        for name, ids in (cyclic_token_ids or {}).items():
            ids = list(ids)
            present = [np.flatnonzero(tok == t) for t in ids]
            if all(p.size for p in present) and len(ids) >= 3:
                scored = _circle_entry(np.stack([pca.projections[p].mean(0) for p in present]), 200, seed)
                if scored is not None:
                    entry["circularity"][name] = scored["circularity"]
        clusters.append(entry)
    return {"n_clusters": k, "cluster_sizes": np.bincount(labels, minlength=k), "clusters": clusters,
            "ranked_by": "share of mass on cyclic tokens" if cyc_all else "total reconstruction mass"}


def lobes_view(harvest: Any, sae: Any, store: Any = None, n_lobes: int | None = None, affinity: str = "phi",
               n_permutations: int = 100, harvest_key: str | None = None) -> dict[str, Any]:
    """`lobes_for_sae` for one harvested SAE with other settings than geometry_by_layer's, cached."""
    if sae.hook_name not in harvest.saes:
        raise AnalysisError(f"The SAE on {sae.hook_name} was not harvested: run the harvest with it.")
    parts = {"harvest": harvest_key or harvest_key_of(harvest), "hook": sae.hook_name, "n_lobes": n_lobes,
             "affinity": affinity, "n_permutations": n_permutations}
    return _cached(store, "lobes_view", parts, lambda: lobes_for_sae(
        harvest.saes[sae.hook_name], _numpy(sae.W_dec), n_lobes, affinity, n_permutations=n_permutations))


def _circularity_summary(result: Any) -> dict[str, Any]:
    d = result.to_dict()
    d.pop("null_best_shares", None)
    return d


def geometry_by_layer(harvest: Any, saes: Sequence[Any], store: Any = None, n_lobes: int | None = None,
                      affinity: str = "phi", n_permutations: int = 100, n_clusters: int | None = None,
                      cyclic_token_ids: Mapping[str, Sequence[int]] | None = None, harvest_key: str | None = None,
                      progress: ProgressFn | None = None) -> dict[str, Any]:
    """Galaxy spectrum and clustering entropy of the decoder cloud, lobes, and decoder-cluster circles
    per SAE (Li et al. 2024; Engels et al. 2024)."""
    from core.metrics.geometry import clustering_entropy, galaxy_spectrum

    by_hook, hooks = _harvested_hooks(harvest, saes)
    hkey = harvest_key or harvest_key_of(harvest)
    parts = {"harvest": hkey, "n_lobes": n_lobes, "affinity": affinity, "n_permutations": n_permutations,
             "n_clusters": n_clusters, "cyclic": {k: list(v) for k, v in (cyclic_token_ids or {}).items()}}

    def compute() -> dict:
        per_sae = {}
        for i, hook in enumerate(hooks):
            _say(progress, i / len(hooks), f"geometry of {hook}")
            sae = by_hook[hook]
            W = _numpy(sae.W_dec)
            entry: dict[str, Any] = {"hook_name": hook, "layer": layer_of(hook)}
            try:
                entry["galaxy"] = galaxy_spectrum(W).to_dict()
            except AtlasError as error:
                entry["galaxy"] = {"skipped": str(error)}
            try:
                ce = clustering_entropy(W, n_samples=min(W.shape[0], 2000), n_dims=min(100, W.shape[1]), seed=0)
                entry["clustering_entropy"] = ce.to_dict()
            except AtlasError as error:
                entry["clustering_entropy"] = {"skipped": str(error)}
            entry["lobes"] = _guard(lambda: lobes_for_sae(harvest.saes[hook], W, n_lobes, affinity,
                                                          n_permutations=n_permutations))
            site = harvest.sites.get(hook)
            entry["circles"] = (_guard(lambda: decoder_circles_for_sae(sae, site, W, n_clusters, cyclic_token_ids))
                                if site is not None else {"skipped": "the SAE's site was not harvested"})
            per_sae[hook] = entry
        _say(progress, 1.0, "done")
        return {"hooks": hooks, "layers": [layer_of(h) for h in hooks], "per_sae": per_sae}

    return _cached(store, "geometry_by_layer", parts, compute)


def _guard(call: Callable[[], dict]) -> dict:
    try:
        return call()
    except AtlasError as error:
        return {"skipped": str(error)}


# ---------------------------------------------------------------------------------------------
# token representations from prompts (ground-truth analyses)
# ---------------------------------------------------------------------------------------------
_FIELD = re.compile(r"\{(\w+)\}")


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Replace {name} fields with values (missing names left as they are)."""
    return _FIELD.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


def slot_prompt(template: str, slot: str, word: str, others: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(full prompt, prompt up to and including `word`) with `word` in the {slot} field of `template`."""
    marker = "{" + slot + "}"
    if marker not in template:
        raise AnalysisError(f"The template {template!r} has no {marker} field.")
    values = dict(others or {})
    values[slot] = word
    head = template[: template.index(marker)]
    return fill_template(template, values), fill_template(head, values) + word


def representations_at(model: Any, prompts: Sequence[tuple[str, str]], sites: Sequence[str],
                       batch_size: int = 64) -> dict[str, np.ndarray]:
    """Activations at the last token of each prompt's prefix: {site: [n_prompts, d]} (float64).

    Each prompt is (text, prefix) where prefix is the text up to and including the word of interest;
    its position is the token count of the prefix (BOS included) minus one, so multi-token words are
    read at their last token.
    """
    if not prompts:
        raise AnalysisError("No prompts to read representations from.")
    bos = 1 if getattr(model, "bos_token_id", None) is not None else 0
    positions = [len(model.encode(prefix)) + bos - 1 for _, prefix in prompts]
    n_ctx = int(model.n_ctx)
    out: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    for start in range(0, len(prompts), batch_size):
        texts = [t for t, _ in prompts[start:start + batch_size]]
        pos = torch.tensor([min(p, n_ctx - 1) for p in positions[start:start + batch_size]])
        tokens = model.to_tokens(texts)
        acts = model.run(tokens, list(sites))
        rows = torch.arange(len(texts))
        for s in sites:
            out[s].append(acts[s][rows, pos.to(acts[s].device)].cpu().numpy().astype(np.float64))
    return {s: np.concatenate(v) for s, v in out.items()}


def _resid_sites(model: Any) -> list[str]:
    return [f"blocks.{layer}.hook_resid_post" for layer in model.layers()
            if model.has_hook(f"blocks.{layer}.hook_resid_post")]


def _templates(ground_truth: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(DEFAULT_TEMPLATES)
    merged.update(ground_truth.get("templates") or {})
    return merged


def _known_words(model: Any, words: Sequence[str]) -> list[str]:
    """Words the tokenizer knows (organism: not UNK); every word for tokenizers without UNK."""
    unk = getattr(model, "unk_token_id", None)
    return [w for w in words if not (unk is not None and unk in model.encode(w)) and model.encode(w)]


def _cyclic_prompts(ground_truth: Mapping[str, Any], name: str, words: Sequence[str]) -> list[tuple[int, str, str]]:
    """(item index, text, prefix) prompts for each cyclic item: the mention template and, for the
    organism's arithmetic templates, one prompt per offset (varied left context, then averaged)."""
    t = _templates(ground_truth)
    kind, slot = _cycle_kind(name)
    numbers = list(ground_truth.get("numbers") or [])
    prompts = []
    for i, word in enumerate(words):
        mention = t.get(f"{kind}_mention")
        if mention and "{" + slot + "}" in mention:
            prompts.append((i, *slot_prompt(mention, slot, word)))
        arith = t.get(f"{kind}_arith")
        if arith and numbers and "{" + slot + "}" in arith:
            for n in numbers[1:len(words)]:
                prompts.append((i, *slot_prompt(arith, slot, word, {"n": n})))
    return prompts


def cyclic_representations(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str]) -> dict[str, Any]:
    """Mean representation of each cyclic item (weekdays, months) per site, [k, d], in cycle order."""
    out = {}
    for name, words in (ground_truth.get("cyclic") or {}).items():
        words = list(words)
        if len(_known_words(model, words)) != len(words) or len(words) < 3:
            continue
        prompts = _cyclic_prompts(ground_truth, name, words)
        if not prompts:
            continue
        reps = representations_at(model, [(a, b) for _, a, b in prompts], sites)
        index = np.array([i for i, _, _ in prompts])
        out[name] = {"words": words, "means": {s: np.stack([reps[s][index == i].mean(0) for i in range(len(words))])
                                                for s in sites}}
    return out


def _pair_prompts(template: str, slot: str, other_slot: str, names: Sequence[str], per_item: int,
                  seed: int) -> list[tuple[int, str, str]]:
    """Prompts with item i in `slot` and a seeded sample of other items in `other_slot`."""
    rng = np.random.default_rng(seed)
    prompts = []
    for i, word in enumerate(names):
        others = [j for j in range(len(names)) if j != i]
        for j in rng.permutation(others)[:per_item]:
            prompts.append((i, *slot_prompt(template, slot, word, {other_slot: names[j]})))
    return prompts


def probe_samples(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str], per_item: int = 12,
                  seed: int = 0) -> dict[str, Any]:
    """Representations of city and person tokens in varied contexts, for the space and time probes
    (Gurnee & Tegmark 2023): {attribute: {"X": {site: [n, d]}, "y": [n, ...], "groups": [n], "names"}}."""
    t = _templates(ground_truth)
    out = {}
    specs = [("space", ground_truth.get("cities") or {}, "city_direction", "city_mention", "b", "a"),
             ("time", ground_truth.get("people") or {}, "people_order", "people_birth", "b", "a")]
    for attribute, table, pair_key, single_key, slot, other in specs:
        names = _known_words(model, list(table))
        if len(names) < 8:
            continue
        prompts: list[tuple[int, str, str]] = []
        pair = t.get(pair_key)
        if pair and "{" + slot + "}" in pair and "{" + other + "}" in pair:
            prompts += _pair_prompts(pair, slot, other, names, per_item, seed)
        single = t.get(single_key)
        if single:
            field = _FIELD.findall(single)
            if len(field) == 1:
                prompts += [(i, *slot_prompt(single, field[0], w)) for i, w in enumerate(names)]
        if not prompts:
            continue
        reps = representations_at(model, [(a, b) for _, a, b in prompts], sites)
        groups = np.array([i for i, _, _ in prompts])
        y = np.array([table[names[i]] for i in groups], dtype=np.float64)
        out[attribute] = {"X": reps, "y": y, "groups": groups, "names": names}
    return out


def analogy_pairs(ground_truth: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(relation, family, a, b) for every analogy pair; a capital triple (country, capital, language)
    gives two relations, country -> capital and country -> language."""
    pairs = []
    for family, items in (ground_truth.get("analogies") or {}).items():
        for item in items:
            if len(item) == 3 and family == "capital":
                pairs.append(("capital", family, item[0], item[1]))
                pairs.append(("language", family, item[0], item[2]))
            elif len(item) >= 2:
                pairs.append((family, family, item[0], item[1]))
    return pairs


def analogy_representations(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str]) -> dict[str, Any]:
    """Mean representation of each analogy word over its family's context templates (word read at its
    own position); words with no template are read alone after BOS."""
    t = _templates(ground_truth)
    contexts = t.get("analogy_context") or {}
    analogies = ground_truth.get("analogies") or {}
    prompts: list[tuple[str, str, str]] = []
    for family, items in analogies.items():
        templates = list(contexts.get(family) or []) + ([t["analogy"][family]] if family in (t.get("analogy") or {}) else [])
        for item in items:
            words = {str(i): w for i, w in enumerate(item)}
            for slot, word in words.items():
                used = False
                for template in templates:
                    if "{" + slot + "}" in template:
                        prompts.append((word, *slot_prompt(template, slot, word, words)))
                        used = True
                if not used:
                    prompts.append((word, word, word))
    if not prompts:
        return {}
    reps = representations_at(model, [(a, b) for _, a, b in prompts], sites)
    words = np.array([w for w, _, _ in prompts])
    vocabulary = sorted(set(words.tolist()))
    return {"words": vocabulary,
            "means": {s: {w: reps[s][words == w].mean(0) for w in vocabulary} for s in sites}}


# ---------------------------------------------------------------------------------------------
# ground-truth geometry: circles, crystals, concepts, probes
# ---------------------------------------------------------------------------------------------
CIRCLE_LOCATIONS = ("token", "answer position")


def _circle_entry(M: np.ndarray, n_permutations: int, seed: int) -> dict[str, Any] | None:
    """Circularity (any frequency) of one [k, d] table of item means, with its top-5 PCA; None when
    every row is the same (nothing to score)."""
    from core.metrics.circles import circularity

    if np.ptp(M) == 0:
        return None
    c = circularity(M, n_permutations=n_permutations, seed=seed)
    Mc = M - M.mean(0)
    _, s, vt = np.linalg.svd(Mc, full_matrices=False)
    n_pc = min(5, vt.shape[0])
    return {"circularity": _circularity_summary(c), "pcs": Mc @ vt[:n_pc].T,
            "pc_variance": (s[:n_pc] ** 2) / max(float((s ** 2).sum()), 1e-300)}


def _score_sites(tables: Mapping[str, np.ndarray], n_permutations: int, seed: int) -> dict[str, dict[str, Any]]:
    """`_circle_entry` of each site's [k, d] table of item means, sites with nothing to score left out."""
    per_site = {}
    for site, M in tables.items():
        scored = _circle_entry(M, n_permutations, seed)
        if scored is not None:
            per_site[site] = scored
    return per_site


def circles_from_tokens(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                        n_permutations: int = 200, seed: int = 0) -> dict[str, Any]:
    """Circularity at any Fourier frequency (Engels et al. 2024; METHODS.md section 7) of the mean
    token representations of each cyclic set per layer (read at the weekday / month token), and of
    its unembedding rows; with the top-5 PCA of the items (for the PC-pair scatter).

    {name: {"words", "sites" (resid sites, then "unembed"), "per_site": {site: {circularity, pcs, pc_variance}}}}
    """
    sites = list(sites or _resid_sites(model))
    reps = cyclic_representations(model, ground_truth, sites)
    W_U = _numpy(model.W_U)
    out = {}
    for name, entry in reps.items():
        words = entry["words"]
        ids = [model.encode(w)[-1] for w in words]
        tables = dict(entry["means"])
        tables["unembed"] = W_U[:, ids].T
        per_site = _score_sites(tables, n_permutations, seed)
        out[name] = {"words": words, "sites": list(per_site), "per_site": per_site}
    return out


def _cycle_kind(name: str) -> tuple[str, str]:
    """("weekday", "day") or ("month", "month"): the template family and slot of a cyclic set."""
    return ("weekday", "day") if name.startswith(("week", "day")) else ("month", "month")


def cyclic_arithmetic_facts(ground_truth: Mapping[str, Any], name: str, words: Sequence[str]) -> list[tuple[int, str]]:
    """(index of the answer in `words`, prompt) for each cyclic-arithmetic fact of a cyclic set
    ("three days after friday is" -> monday): the ground truth's eval_facts of the family
    `weekday_arith` / `month_arith`, train and held out; without them, prompts built from the
    family's template ("{n} days after {day} is", answer i + n mod k; "before": i - n) and `numbers`."""
    kind, slot = _cycle_kind(name)
    family = f"{kind}_arith"
    index = {w: i for i, w in enumerate(words)}
    facts = ground_truth.get("eval_facts") or {}
    out = []
    for split in ("train", "held_out"):
        for fact in ((facts.get(split) or {}).get(family) or []):
            if isinstance(fact, (list, tuple)) and len(fact) == 2 and fact[1] in index:
                out.append((index[fact[1]], str(fact[0])))
    if out:
        return out
    template = _templates(ground_truth).get(family)
    numbers = list(ground_truth.get("numbers") or [])
    if not (isinstance(template, str) and "{n}" in template and "{" + slot + "}" in template and numbers):
        return []
    sign = 1 if " after " in template else -1 if " before " in template else 0
    k = len(words)
    if sign == 0 or len(numbers) < k:
        return []
    return [((i + sign * n) % k, fill_template(template, {slot: word, "n": numbers[n]}))
            for i, word in enumerate(words) for n in range(1, k)]


def answer_position_representations(model: Any, ground_truth: Mapping[str, Any],
                                    sites: Sequence[str]) -> dict[str, Any]:
    """Mean residual at the last position of the cyclic-arithmetic prompts (where the model must hold
    the answer), grouped by the answer: {name: {"words", "means": {site: [k, d]}, "n_prompts": [k]}}.
    A cyclic set is left out unless every item is the answer of at least one prompt."""
    out = {}
    for name, words in (ground_truth.get("cyclic") or {}).items():
        words = list(words)
        facts = cyclic_arithmetic_facts(ground_truth, name, words)
        answers = np.array([i for i, _ in facts], dtype=np.int64)
        counts = np.bincount(answers, minlength=len(words)) if facts else np.zeros(len(words), np.int64)
        if len(words) < 3 or not np.all(counts > 0):
            continue
        reps = representations_at(model, [(prompt, prompt) for _, prompt in facts], sites)
        out[name] = {"words": words, "n_prompts": counts,
                     "means": {s: np.stack([reps[s][answers == i].mean(0) for i in range(len(words))])
                               for s in sites}}
    return out


def circles_at_answer(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                      n_permutations: int = 200, seed: int = 0) -> dict[str, Any]:
    """Circularity (Engels et al. 2024; METHODS.md section 7) of the answer-position means of the
    cyclic-arithmetic prompts per layer: a model that does arithmetic on the cycle may hold its
    circle where it computes the answer rather than at the weekday / month token.

    {name: {"words", "sites", "per_site": {site: {circularity, pcs, pc_variance}}, "n_prompts": [k]}}
    """
    sites = list(sites or _resid_sites(model))
    out = {}
    for name, entry in answer_position_representations(model, ground_truth, sites).items():
        per_site = _score_sites(entry["means"], n_permutations, seed)
        out[name] = {"words": entry["words"], "sites": list(per_site), "per_site": per_site,
                     "n_prompts": entry["n_prompts"]}
    return out


def best_circle(locations: Mapping[str, Mapping[str, Any]], alpha: float = 0.05) -> dict[str, Any] | None:
    """The strongest circle over locations and sites: circles first (p < alpha at a frequency with a
    2-D Fourier plane, i.e. not f = k/2), then the smallest p, then the largest share.
    {"location", "site", "layer", "frequency", "share", "p_value", "circle", ...} or None."""
    candidates = []
    for location, entry in locations.items():
        for site in entry.get("sites", []):
            c = entry["per_site"][site]["circularity"]
            planar = 2 * int(c["best_frequency"]) != int(c["k"])
            circle = bool(c["p_value"] < alpha and planar)
            candidates.append(((not circle, c["p_value"], -c["best_share"]), {
                "location": location, "site": site, "layer": layer_of(site) if site != "unembed" else None,
                "frequency": int(c["best_frequency"]), "share": c["best_share"], "p_value": c["p_value"],
                "coprime": c["coprime"], "visit_step": c["visit_step"], "regular_visit": c["regular_visit"], "circle_balance": c["circle_balance"],
                "circle": circle}))
    if not candidates:
        return None
    return min(candidates, key=lambda item: item[0])[1]


def cyclic_circles(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                   n_permutations: int = 200, seed: int = 0) -> dict[str, Any]:
    """Circles of each cyclic set (weekdays, months) at both locations, per layer, and the best one:

        {name: {"words", "locations": {"token": {...}, "answer position": {...}}, "best": best_circle}}

    "token": item means read at the weekday / month token (circles_from_tokens, unembedding rows
    included); "answer position": means at the last position of the cyclic-arithmetic prompts grouped
    by the answer (circles_at_answer)."""
    sites = list(sites or _resid_sites(model))
    found = {"token": circles_from_tokens(model, ground_truth, sites, n_permutations, seed),
             "answer position": circles_at_answer(model, ground_truth, sites, n_permutations, seed)}
    out = {}
    for name in (ground_truth.get("cyclic") or {}):
        locations = {loc: {k: v for k, v in found[loc][name].items() if k != "words"}
                     for loc in CIRCLE_LOCATIONS if name in found[loc]}
        if not locations:
            continue
        words = next(found[loc][name]["words"] for loc in CIRCLE_LOCATIONS if name in found[loc])
        out[name] = {"words": words, "locations": locations, "best": best_circle(locations)}
    return out


def crystals_from_tokens(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                         seed: int = 0) -> dict[str, Any]:
    """Analogy parallelograms (Li et al. 2024 crystals) per layer: within- vs across-relation cosine of
    difference vectors and the relation-cluster silhouette, raw and after held-out LDA; with 2-D
    projections (PCA, and LDA for display) for the arrows figure."""
    from core.metrics.crystals import crystal_projection, parallelogram_quality

    sites = list(sites or _resid_sites(model))
    pairs = analogy_pairs(ground_truth)
    if not pairs:
        return {}
    reps = analogy_representations(model, ground_truth, sites)
    known = set(_known_words(model, reps.get("words", [])))
    pairs = [p for p in pairs if p[2] in known and p[3] in known]
    relations = np.array([p[0] for p in pairs])
    per_site = {}
    for site in sites:
        means = reps["means"][site]
        A = np.stack([means[p[2]] for p in pairs])
        B = np.stack([means[p[3]] for p in pairs])
        try:
            quality = parallelogram_quality(A, B, relations, lda="heldout", seed=seed)
            pa, pb = crystal_projection(A, B, relations, use_lda=False)
            la, lb = crystal_projection(A, B, relations, use_lda=True)
        except AtlasError as error:
            per_site[site] = {"skipped": str(error)}
            continue
        per_site[site] = {"quality": quality.to_dict(), "pca": {"a": pa, "b": pb}, "lda": {"a": la, "b": lb}}
    return {"relations": relations, "words_a": [p[2] for p in pairs], "words_b": [p[3] for p in pairs],
            "sites": sites, "per_site": per_site}


def concepts_from_unembedding(model: Any, ground_truth: Mapping[str, Any], n_shuffles: int = 20,
                              seed: int = 0) -> dict[str, Any]:
    """Categorical and hierarchical concepts in the causal inner product (Park et al. 2024; METHODS.md
    section 8): per kingdom of the taxonomy, cos(ell_category - ell_kingdom, ell_kingdom) against row-
    shuffled and random-parent baselines; every category's vector and its words' rows of g, for the
    simplex of sibling categories."""
    from core.metrics.concepts import causal_inner_product_basis, hierarchical_orthogonality, vector_representation

    taxonomy = ground_truth.get("taxonomy") or {}
    if not taxonomy:
        return {}
    g = causal_inner_product_basis(_numpy(model.W_U))
    kingdoms = {}
    categories = {}
    for kingdom, cats in taxonomy.items():
        child_ids = {}
        for cat, species in cats.items():
            words = _known_words(model, species)
            if len(words) >= 2:
                child_ids[cat] = [model.encode(w)[-1] for w in words]
                vec = vector_representation(g, child_ids[cat])
                categories[cat] = {"kingdom": kingdom, "words": words, "ell": vec.ell,
                                   "word_rows": g[child_ids[cat]]}
        parent = sorted({i for ids in child_ids.values() for i in ids})
        if len(child_ids) >= 1 and len(parent) >= 2:
            result = hierarchical_orthogonality(g, parent, child_ids, n_shuffles=n_shuffles, seed=seed)
            kingdoms[kingdom] = result.to_dict()
    return {"kingdoms": kingdoms, "categories": categories, "d_model": int(g.shape[1])}


def probes_from_tokens(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                       per_item: int = 12, seed: int = 0) -> dict[str, Any]:
    """Space (city longitude, latitude) and time (birth year) ridge probes per layer, with whole
    entities held out (Gurnee & Tegmark 2023; METHODS.md section 9)."""
    from core.metrics.probes import probe_per_layer

    sites = list(sites or _resid_sites(model))
    samples = probe_samples(model, ground_truth, sites, per_item=per_item, seed=seed)
    out = {}
    for attribute, sample in samples.items():
        try:
            result = probe_per_layer(sample["X"], sample["y"], seed=seed, groups=sample["groups"])
        except AtlasError as error:
            out[attribute] = {"skipped": str(error)}
            continue
        d = result.to_dict()
        d["item_names"] = [sample["names"][i] for i in sample["groups"]]
        out[attribute] = d
    return out


def ground_truth_geometry(model: Any, ground_truth: Mapping[str, Any] | None, store: Any = None,
                          progress: ProgressFn | None = None, seed: int = 0) -> dict[str, Any]:
    """Circles, crystals, concepts and probes from running the model on the ground truth's prompts.

    Without a ground truth (a real model and no word lists) every part is skipped with a reason.
    """
    if not ground_truth:
        return {"skipped": "No ground truth: these analyses need the organism's planted world, or word "
                           "lists in its schema (cyclic, analogies, taxonomy, cities, people)."}
    parts = {"model": model_identity(model), "ground_truth": ground_truth_digest(ground_truth), "seed": seed}

    def compute() -> dict:
        sites = _resid_sites(model)
        out: dict[str, Any] = {"sites": sites, "layers": [layer_of(s) for s in sites]}
        steps = [("circles", lambda: cyclic_circles(model, ground_truth, sites, seed=seed)),
                 ("crystals", lambda: crystals_from_tokens(model, ground_truth, sites, seed=seed)),
                 ("concepts", lambda: concepts_from_unembedding(model, ground_truth, seed=seed)),
                 ("probes", lambda: probes_from_tokens(model, ground_truth, sites, seed=seed))]
        for i, (name, call) in enumerate(steps):
            _say(progress, i / len(steps), name)
            out[name] = _guard(call)
        _say(progress, 1.0, "done")
        return out

    return _cached(store, "ground_truth_geometry", parts, compute)


def cyclic_token_ids(model: Any, ground_truth: Mapping[str, Any] | None) -> dict[str, list[int]]:
    """Token ids of each cyclic set (weekdays, months), for ranking decoder clusters."""
    out = {}
    for name, words in ((ground_truth or {}).get("cyclic") or {}).items():
        if len(_known_words(model, list(words))) == len(words):
            out[name] = [model.encode(w)[-1] for w in words]
    return out


def organism_ground_truth(model: Any) -> dict[str, Any] | None:
    """The organism's ground truth when `model` is the organism (from its directory), else None."""
    spec = getattr(model, "spec", None)
    if spec is None or getattr(spec, "source", None) != "organism":
        return None
    from core.organism.loading import ORGANISM_DIR, OrganismError, load_ground_truth

    try:
        return load_ground_truth(spec.path or ORGANISM_DIR)
    except OrganismError:
        return None


# ---------------------------------------------------------------------------------------------
# everything
# ---------------------------------------------------------------------------------------------
def run_all(model: Any, saes: Sequence[Any], harvest: Any, ground_truth: Mapping[str, Any] | None = None,
            store: Any = None, progress: ProgressFn | None = None, checkpoints: bool | Sequence[str] = False,
            n_permutations: int = 100, checkpoint_max_tokens: int = 4096,
            harvest_key: str | None = None) -> dict[str, Any]:
    """Every analysis these inputs allow; {"spectra", "superposition", "geometry", "ground_truth",
    ["checkpoints"], "artifact_keys"}. The organism's ground truth is used when none is given and the
    model is the organism. Checkpoint phases run only when asked (they load every checkpoint):
    `checkpoints` True for all of the organism's checkpoints, or a list of their identifiers, each
    harvested on `checkpoint_max_tokens` tokens. `n_permutations`: the lobes' AMI null."""
    if ground_truth is None:
        ground_truth = organism_ground_truth(model)
    hkey = harvest_key or harvest_key_of(harvest)
    out: dict[str, Any] = {}
    _say(progress, 0.0, "spectra")
    out["spectra"] = spectra_by_layer(harvest, store, harvest_key=hkey)
    _say(progress, 0.2, "superposition")
    out["superposition"] = superposition_by_layer(harvest, saes, model, store, harvest_key=hkey) if saes else \
        {"skipped": "no SAE loaded"}
    _say(progress, 0.35, "geometry")
    out["geometry"] = geometry_by_layer(harvest, saes, store, n_permutations=n_permutations,
                                        cyclic_token_ids=cyclic_token_ids(model, ground_truth),
                                        harvest_key=hkey) if saes else {"skipped": "no SAE loaded"}
    _say(progress, 0.7, "ground-truth geometry")
    out["ground_truth"] = ground_truth_geometry(model, ground_truth, store)
    if checkpoints and getattr(getattr(model, "spec", None), "source", None) == "organism":
        from core.organism.loading import ORGANISM_DIR

        names = None if checkpoints is True else list(checkpoints)
        _say(progress, 0.8, f"spectra over {'all' if names is None else len(names)} checkpoints")
        out["checkpoints"] = spectra_over_checkpoints(model.spec.path or ORGANISM_DIR, names,
                                                      max_tokens=checkpoint_max_tokens, store=store)
    _say(progress, 1.0, "done")
    out["artifact_keys"] = [v["key"] for v in out.values() if isinstance(v, dict) and "key" in v]
    return out
