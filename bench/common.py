"""Shared helpers of the benchmarks: the sources they run on, and timing."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch


@dataclass
class Sources:
    model: Any  # core.sources.models.LoadedModel
    saes: list  # core.sources.saes.LoadedSAE
    label: str


def organism_sources(device: str = "cpu") -> Sources:
    """The committed organism with its SAEs when assets/organism holds it, else a random model of the
    organism's shape (4 layers x 128, TopK SAEs 1024 wide, k = 16) with random TopK SAEs."""
    from core.sources.models import ModelSpec, load_model
    from core.sources.saes import load_sae, organism_sae_specs

    try:
        model = load_model(ModelSpec(device=device))
        saes = [load_sae(spec, model) for spec in organism_sae_specs()]
        if saes:
            return Sources(model, saes, f"organism ({model.card.n_params} params, {len(saes)} SAEs x {saes[0].d_sae})")
    except Exception as error:  # noqa: BLE001 - any failure means: no usable committed organism
        print(f"(organism not usable here: {error}; using a random model of its shape)")
    from core.organism.train import TrainConfig

    c = TrainConfig()
    return random_sources(c.n_layers, c.d_model, c.n_heads, c.d_mlp, c.n_ctx, d_vocab=1024,
                          d_sae=c.sae_expansion * c.d_model, k=c.sae_k, device=device, label="random organism-shaped")


def random_sources(n_layers: int, d_model: int, n_heads: int, d_mlp: int, n_ctx: int, d_vocab: int, d_sae: int,
                   k: int, device: str, label: str, sae_layers: list[int] | None = None, *,
                   rescale_acts_by_decoder_norm: bool = False) -> Sources:
    """A random HookedTransformer behind LoadedModel and random TopK SAEs on resid_post.

    `rescale_acts_by_decoder_norm`: the TopK option SAELens's training sets (the organism's SAEs have it); runners
    that fold decoder norms into the encoder (SAEDashboard's) refuse TopK SAEs without it."""
    from sae_lens import TopKSAE, TopKSAEConfig
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from core.sources.models import ModelSpec, from_hooked_transformer
    from core.sources.saes import wrap_sae

    torch.manual_seed(0)
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=d_model, n_ctx=n_ctx, d_head=d_model // n_heads,
                                  n_heads=n_heads, d_mlp=d_mlp, d_vocab=d_vocab, act_fn="gelu",
                                  normalization_type="LN", device=device)
    hooked = HookedTransformer(cfg, tokenizer=_word_tokenizer())
    hooked.eval()
    model = from_hooked_transformer(hooked, ModelSpec(source="organism", name=label, device=device), origin="bench")
    model.bos_token_id = 0
    saes = []
    for layer in sae_layers if sae_layers is not None else range(n_layers):
        sae_cfg = TopKSAEConfig(d_in=d_model, d_sae=d_sae, k=k, device=device,
                                rescale_acts_by_decoder_norm=rescale_acts_by_decoder_norm)
        sae_cfg.metadata.hook_name = f"blocks.{layer}.hook_resid_post"
        sae_cfg.metadata.model_name = label
        saes.append(wrap_sae(TopKSAE(sae_cfg)))
    return Sources(model, saes, f"{label} ({n_layers} x {d_model}, {len(saes)} TopK SAEs x {d_sae})")


def _word_tokenizer():
    """A small word-level tokenizer (LoadedModel needs one; the benchmarks feed token ids directly)."""
    import tempfile
    from pathlib import Path

    from tests.fixtures_models import build_word_tokenizer

    return build_word_tokenizer(Path(tempfile.mkdtemp(prefix="atlas-bench-tok-")))


def random_corpus(n_tokens: int, context: int, d_vocab: int, bos: int | None, seed: int = 0):
    from core.sources.corpus import Corpus, CorpusSpec

    generator = torch.Generator().manual_seed(seed)
    n_chunks = max(1, n_tokens // context)
    tokens = torch.randint(1, d_vocab, (n_chunks, context), generator=generator)
    if bos is not None:
        tokens[:, 0] = bos
    return Corpus(CorpusSpec(context_size=context), tokens, f"random tokens ({n_chunks} x {context})")


def sync(device: Any) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], Any], repeats: int, device: Any = "cpu", warmup: int = 1) -> float:
    """Median wall time of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
        sync(device)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(fns: dict[str, Callable[[], Any]], repeats: int, device: Any = "cpu",
                        warmup: int = 1) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds of each function, measured round-robin (A B C A B C ...) so that the load of a
    shared machine falls on all of them alike: {name: {"wall", "cpu", "wall_min", "cpu_min"}} (medians and
    minima over `repeats` rounds). CPU time (this process's, time.process_time) is what a single-threaded
    run costs whatever else the machine runs; on a GPU only the wall time means anything."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync(device)
    walls: dict[str, list[float]] = {name: [] for name in fns}
    cpus: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(time.process_time() - cpu)
    return {name: {"wall": statistics.median(walls[name]), "cpu": statistics.median(cpus[name]),
                   "wall_min": min(walls[name]), "cpu_min": min(cpus[name])} for name in fns}
