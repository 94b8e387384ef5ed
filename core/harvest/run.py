"""The pass itself: run the model over the corpus in batches, feed the state, finalize; and the cached entry point."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.errors import ArtifactError, AtlasError
from core.harvest.components import assemble, missing_components
from core.harvest.result import HarvestResult, finalize
from core.harvest.settings import HarvestSettings
from core.harvest.splice import SpliceEvaluator, n_eval_sequences
from core.harvest.state import HarvestState, default_sites, sae_hook_name, sae_labels

ProgressFn = Callable[[int, int, float], None]


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if device is not None:
        return torch.device(device)
    card = getattr(model, "card", None)
    return torch.device(getattr(card, "device", "cpu"))


def n_sequences_for(corpus_tokens: torch.Tensor, max_tokens: int | None) -> int:
    n_chunks, ctx = corpus_tokens.shape
    return n_chunks if max_tokens is None else min(n_chunks, max(1, -(-max_tokens // ctx)))


def kept_tokens(tokens: torch.Tensor, settings: HarvestSettings, bos_token_id: int | None) -> int:
    """How many of these token positions the statistics read (BOS excluded under exclude_bos)."""
    if settings.exclude_bos and bos_token_id is not None:
        return int((tokens != bos_token_id).sum())
    return int(tokens.numel())


def harvest_shard(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings,
                  start: int = 0, stop: int | None = None, progress: ProgressFn | None = None, *,
                  sites: Sequence[str] | None = None, token_offset: int | None = None) -> HarvestState:
    """Run the pass over corpus sequences [start, stop) and return the un-finalized state.

    sites: the moment/reservoir sites to harvest (default: settings.sites, else every resid_post plus
    the SAE hooks). The shard that starts at sequence 0 also measures the SAEs' splice-in quality on the
    first settings.splice_tokens tokens (core.harvest.splice), whatever its stop. token_offset: kept
    tokens in the sequences before `start` (counted from corpus.tokens when None); the L1 snapshots are
    taken at corpus-wide counts, so shards merged in order equal one pass."""
    tokens_all = corpus.tokens
    if tokens_all.ndim != 2 or tokens_all.shape[0] == 0:
        raise AtlasError("The corpus holds no token sequences to harvest.")
    n_harvested = n_sequences_for(tokens_all, settings.max_tokens)
    stop = n_harvested if stop is None else stop
    ctx = int(tokens_all.shape[1])
    n_ctx = getattr(model, "n_ctx", None)
    if n_ctx is not None and ctx > n_ctx:
        raise AtlasError(f"The corpus sequences hold {ctx} tokens, more than the model's context of {n_ctx}.")
    labels = sae_labels(saes)
    if sites is None:
        sites = list(settings.sites) if settings.sites is not None else default_sites(model, saes)
    sites = list(sites)
    sae_hooks = [sae_hook_name(s) for s in saes]
    hooks = list(dict.fromkeys(sites + sae_hooks))
    device = _model_device(model)
    bos = getattr(model, "bos_token_id", None)
    if token_offset is None:
        token_offset = kept_tokens(tokens_all[:start], settings, bos) if start else 0
    state = HarvestState(settings=settings, context=ctx, bos_token_id=bos, token_offset=token_offset)
    n_eval = n_eval_sequences(settings.splice_tokens, ctx, n_harvested) if (start == 0 and saes) else 0
    evaluator = (SpliceEvaluator(model, saes, labels, sae_hooks, n_eval, bos, settings.exclude_bos,
                                 settings.batch_size) if n_eval else None)
    total = (stop - start) * ctx
    began = time.perf_counter()
    # no_grad, not inference_mode: the statistics must stay ordinary tensors so shards can merge later
    with torch.no_grad():
        for first in range(start, stop, settings.batch_size):
            last = min(stop, first + settings.batch_size)
            batch = tokens_all[first:last].to(device)
            acts = model.run(batch, hooks)
            state.update(batch, torch.arange(first, last, device=device), acts, saes, labels, sites)
            if evaluator is not None and first < n_eval:
                evaluator.collect(first, batch, acts)
            if progress is not None:
                done = (last - start) * ctx
                elapsed = time.perf_counter() - began
                progress(done, total, elapsed / done * (total - done))
        if evaluator is not None:
            state.splice = evaluator.finish(tokens_all)
    state.flush()
    return state


def harvest(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings | None = None,
            progress: ProgressFn | None = None, sources: dict[str, Any] | None = None) -> HarvestResult:
    """One streaming pass over the corpus: every statistic of every site and SAE.

    model: core.sources.models.LoadedModel (run(tokens, hook_names) -> {name: [b, pos, d]}, bos_token_id, device);
    saes: core.sources.saes.LoadedSAE list (hook_name, encode, decode); corpus: core.sources.corpus.Corpus (tokens
    [n_chunks, ctx]); progress(done_tokens, total_tokens, seconds_left). Memory is bounded by the
    batch and the statistics' fixed sizes, whatever the corpus length. sources: describe_sources(model,
    saes, corpus) when the caller already has it (it hashes every corpus token).
    """
    settings = settings or HarvestSettings()
    began = time.perf_counter()
    state = harvest_shard(model, saes, corpus, settings, progress=progress)
    if sources is None:
        sources = describe_sources(model, saes, corpus)
    return finalize(state, corpus.tokens, sources=sources, seconds=time.perf_counter() - began)


# ---------------------------------------------------------------------------------------------
# caching
# ---------------------------------------------------------------------------------------------
def describe_sources(model: Any, saes: Sequence[Any], corpus: Any) -> dict[str, Any]:
    """What identifies the inputs of a harvest (part of the cache key)."""
    card = getattr(model, "card", None)
    model_part = {
        "name": getattr(card, "name", type(model).__name__),
        "source": getattr(card, "source", None),
        "origin": key_origin(card),
        "revision": getattr(card, "revision", None),
        "dtype": getattr(card, "dtype", None),
    }
    sae_parts = []
    for sae in saes:
        spec = getattr(sae, "spec", None)
        sae_parts.append({
            "hook_name": sae_hook_name(sae),
            "spec": asdict(spec) if spec is not None and hasattr(spec, "__dataclass_fields__") else None,
            "d_sae": int(getattr(sae, "d_sae", 0) or sae.cfg.d_sae),
            "architecture": str(getattr(sae, "architecture", None)),
            "model_name": getattr(sae, "model_name", None),
        })
    tokens = corpus.tokens
    spec = getattr(corpus, "spec", None)
    corpus_part = {
        "description": getattr(corpus, "description", None),
        "spec": asdict(spec) if spec is not None and hasattr(spec, "__dataclass_fields__") else None,
        "shape": list(tokens.shape),
        # content hash: two corpora with the same description but other tokens never share a key
        "sha256": _tokens_digest(tokens),
    }
    return {"model": model_part, "saes": sae_parts, "corpus": corpus_part}


def key_origin(card: Any) -> str | None:
    """The model card's origin as cache keys hold it: the organism by its content (a checkout's path would
    give every clone its own keys), other models by where they came from."""
    origin = getattr(card, "origin", None)
    if getattr(card, "source", None) == "organism" and origin:
        from core.sources.organism import organism_identity

        return organism_identity(origin)
    return origin


def _tokens_digest(tokens: torch.Tensor) -> str:
    import hashlib

    array = np.ascontiguousarray(tokens.cpu().numpy().astype(np.int64))
    return hashlib.sha256(array.tobytes()).hexdigest()


def harvest_key(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings,
                sources: dict[str, Any] | None = None) -> str:
    """The store key of a harvest; sources: describe_sources(model, saes, corpus) when already built."""
    from core.store import artifact_key

    if sources is None:
        sources = describe_sources(model, saes, corpus)
    return artifact_key(kind="harvest", sources=sources, settings=settings.to_dict())


PassFn = Callable[[Sequence[Any], list[str], ProgressFn | None], HarvestState]


def harvest_cached(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings | None = None,
                   store: Any = None, progress: ProgressFn | None = None,
                   key: str | None = None, *, run_pass: PassFn | None = None) -> tuple[HarvestResult, str]:
    """The harvest of these inputs from the store, computing only what the store lacks.

    Returns (result, key). The key covers the model (name, revision/checkpoint), the SAEs, the corpus
    (description + content hash of the slice), the settings and core.store.CODE_VERSION. key: the
    caller's harvest_key(model, saes, corpus, settings), when it already computed it.
    Statistics are stored per site and per SAE (core.harvest.components): when the harvest itself is
    missing, the pass runs only for the SAEs (and sites) whose artifacts are missing, and the harvest is
    assembled from the components by hard links. Adding or removing an SAE computes only what is new.
    run_pass(saes, sites, progress) -> HarvestState: the pass over the whole corpus for those SAEs and
    sites (default: harvest_shard in this process; core.harvest.distributed passes one on a Ray cluster).
    """
    from core.store import ArtifactStore

    settings = settings or HarvestSettings()
    store = store if store is not None else ArtifactStore()
    # describe_sources hashes every corpus token: build it at most once per call
    sources = None
    if key is None:
        sources = describe_sources(model, saes, corpus)
        key = harvest_key(model, saes, corpus, settings, sources=sources)
    cached = HarvestResult.load(store, key)
    if cached is not None:
        if progress is not None:
            progress(1, 1, 0.0)
        return cached, key
    began = time.perf_counter()
    sources = sources if sources is not None else describe_sources(model, saes, corpus)
    plain = settings.to_dict()
    sites = list(settings.sites) if settings.sites is not None else default_sites(model, saes)
    missing_sites, missing_saes = missing_components(store, sources, plain, sites, len(saes))
    if missing_sites or missing_saes:
        todo = [saes[i] for i in missing_saes]
        if run_pass is None:
            state = harvest_shard(model, todo, corpus, settings, progress=progress, sites=missing_sites)
        else:
            state = run_pass(todo, list(missing_sites), progress)
        partial = finalize(state, corpus.tokens, sources=sources, seconds=time.perf_counter() - began)
        partial.save_components(store, missing_sites, missing_saes)
    elif progress is not None:
        progress(1, 1, 0.0)
    assemble(store, key, sources, plain, sites, sae_labels(saes), seconds=time.perf_counter() - began)
    result = HarvestResult.load(store, key)
    if result is None:  # another process removed it between the write and this read
        raise ArtifactError(f"The harvest {key} vanished from the store at {store.root} right after it was written; "
                            "run again (and keep one process per cache directory).")
    return result, key
