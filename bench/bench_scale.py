"""Scale rehearsal: random models and SAEs of the real shapes, harvested and analysed end to end.

    python -m bench scale --shape gpt2-small|gemma-2-2b|tiny [--layers 0,1,...] [--sae-width N] [--tokens N]
                          [--batch-size B] [--splice-tokens N] [--umap] [--keep DIR] [--json PATH]
    python -m bench scale --shape gpt2-small --geometry-curve 4096,16384,65536   # decoder clusters alone

Nothing is downloaded: a TransformerLens HookedTransformer is built from a HookedTransformerConfig with the
real model's dimensions, vocabulary and context (random init, seed 0), and SAELens SAEs of the real widths
(random init; TopK k = 32 and JumpReLU alternate by layer; each JumpReLU threshold is set per feature so that
about 64 features fire per token on the model's own activations, as trained SAEs do). The corpus is random
tokens drawn from a Zipf law over the vocabulary (p(rank r) ~ 1 / (r + 2.7)), BOS first, chunks of 128 tokens
(the SAEs' context_size): synthetic text, so every cost of real text is there but none of its structure.
The harvest uses HarvestSettings' defaults except the batch size and 512 splice-in tokens instead of 2,048 (each
splice-in token costs SAEs x 3 ablations forwards from the SAE's block to the logits: at 2,048 tokens 80% of the
GPT-2 run's work; the Gemma slice takes 256, each token there costing a 256,000-wide unembedding per SAE and
ablation; --splice-tokens 2048 measures the default).

Shapes (dimensions from the models' published configs):
  gpt2-small  12 layers x 768, 12 heads, d_mlp 3072, vocab 50,257, n_ctx 1024; SAEs 24,576 wide on every
              layer's resid_post (the 12 x 24,576 of the OpenAI / jbloom GPT-2 small SAEs)
  gemma-2-2b  a slice: the first L+1 of Gemma-2-2B's 26 blocks (d_model 2304, 8 heads of 256 with 4 KV heads,
              gated d_mlp 9216, RMSNorm before and after, soft-capped attention and logits, local/global
              attention), full 256,000-token vocabulary and n_ctx 8192; JumpReLU SAEs 16,384 wide (Gemma Scope)
              on the chosen layers (default 3 and 5, so 6 blocks)
  tiny        2 layers x 32, vocab 512, SAEs 256 wide: the test's shape (seconds)

Printed (and written as JSON with --json): peak resident memory (sampled every 50 ms, and getrusage's
maxrss), harvest throughput, the store's size on disk by artifact kind, the time of every analysis in
core.analysis.run_all, and the time each page's computation takes a second time from the stored artifacts
(the harvest read back from disk, every view a cache hit, plus the Features page's table, map, neighbours,
co-occurrence and logit effects, and one probe). docs/PERFORMANCE.md records the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

CONTEXT = 128  # the SAEs' context_size (GPT-2 small SAEs were trained on 128-token contexts)
TOPK_K = 32
JUMPRELU_L0 = 64


@dataclass(frozen=True)
class Shape:
    name: str
    cfg: dict[str, Any]  # HookedTransformerConfig arguments (n_layers set from the layers)
    full_layers: int  # the real model's depth
    layers: tuple[int, ...]  # default SAE layers
    sae_width: int
    architectures: tuple[str, ...]  # cycled over the layers
    batch_size: int
    tokens: int
    splice_tokens: int = 512  # HarvestSettings says 2048: 12 SAEs x 3 ablations x 2048 tokens of forward would
    # be 80% of the GPT-2 run, 2048 x 256k-wide logits per SAE and ablation most of the Gemma one


SHAPES = {
    "gpt2-small": Shape("gpt2-small", dict(d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024,
                                           act_fn="gelu_new", normalization_type="LN"),
                        12, tuple(range(12)), 24576, ("topk", "jumprelu"), 16, 4096),
    "gemma-2-2b": Shape("gemma-2-2b", dict(d_model=2304, n_heads=8, d_head=256, n_key_value_heads=4, d_mlp=9216,
                                           d_vocab=256000, n_ctx=8192, act_fn="gelu_pytorch_tanh",
                                           normalization_type="RMS", positional_embedding_type="rotary",
                                           rotary_dim=256, rotary_base=10000, gated_mlp=True,
                                           final_rms=True, use_normalization_before_and_after=True,
                                           attn_scores_soft_cap=50.0, output_logits_soft_cap=30.0,
                                           window_size=4096, use_attn_scale=True, attn_scale=16.0,
                                           eps=1e-6, original_architecture="Gemma2ForCausalLM"),
                        26, (3, 5), 16384, ("jumprelu",), 4, 2048, 256),
    "tiny": Shape("tiny", dict(d_model=32, n_heads=2, d_head=16, d_mlp=64, d_vocab=512, n_ctx=CONTEXT, act_fn="gelu",
                               normalization_type="LN"), 2, (0, 1), 256, ("topk", "jumprelu"), 8, 1024),
}


class PeakMemory:
    """Resident memory of this process sampled every `interval` seconds on a thread; `mark(name)` starts a
    phase, `phases` holds each phase's peak (MB)."""

    def __init__(self, interval: float = 0.05):
        import psutil

        self._process, self._interval = psutil.Process(), interval
        self.peak_mb, self.phase, self.phases = 0.0, "start", {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self._interval)

    def sample(self) -> float:
        rss = self._process.memory_info().rss / 2**20
        self.peak_mb = max(self.peak_mb, rss)
        self.phases[self.phase] = max(self.phases.get(self.phase, 0.0), rss)
        return rss

    def mark(self, phase: str) -> None:
        self.sample()
        self.phase = phase
        self.sample()

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


@dataclass
class Report:
    shape: str
    config: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    pages: dict[str, float] = field(default_factory=dict)
    disk_mb: dict[str, float] = field(default_factory=dict)
    memory_mb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def build_model(shape: Shape, n_layers: int):
    """A random HookedTransformer of `shape`'s dimensions with `n_layers` blocks, behind LoadedModel."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from bench.common import _word_tokenizer
    from core.sources.models import ModelSpec, from_hooked_transformer

    torch.manual_seed(0)
    extra = {}
    if shape.name == "gemma-2-2b":  # Gemma 2 alternates local (sliding window) and global attention
        extra["attn_types"] = ["local", "global"] * ((n_layers + 1) // 2)
        extra["attn_types"] = extra["attn_types"][:n_layers]
    cfg = HookedTransformerConfig(n_layers=n_layers, device="cpu", seed=0, **shape.cfg, **extra)
    hooked = HookedTransformer(cfg, tokenizer=_word_tokenizer(), move_to_device=False)
    hooked.eval()
    label = f"random {shape.name}-shaped" + (f" ({n_layers} of {shape.full_layers} blocks)"
                                             if n_layers < shape.full_layers else "")
    model = from_hooked_transformer(hooked, ModelSpec(source="transformer_lens", name=label, device="cpu"),
                                    origin="bench scale (random weights)")
    model.bos_token_id = 0
    return model


def zipf_corpus(n_tokens: int, d_vocab: int, bos: int, seed: int = 0):
    """Random tokens from p(rank r) ~ 1 / (r + 2.7) over a random ranking of the vocabulary, BOS first."""
    from core.sources.corpus import Corpus, CorpusSpec

    rng = np.random.default_rng(seed)
    weights = 1.0 / (np.arange(d_vocab - 1) + 2.7)
    ranking = rng.permutation(np.arange(1, d_vocab))
    n_chunks = max(1, -(-n_tokens // CONTEXT))
    tokens = ranking[rng.choice(d_vocab - 1, size=(n_chunks, CONTEXT), p=weights / weights.sum())]
    tokens[:, 0] = bos
    return Corpus(CorpusSpec(context_size=CONTEXT), torch.as_tensor(tokens, dtype=torch.long),
                  f"synthetic Zipf tokens ({n_chunks} x {CONTEXT})")


def build_saes(model, layers: list[int], width: int, architectures: tuple[str, ...], calibration) -> list:
    """Random SAELens SAEs on resid_post of `layers`; JumpReLU thresholds set so ~JUMPRELU_L0 features fire."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, TopKSAE, TopKSAEConfig

    from core.sources.saes import wrap_sae

    hooks = [f"blocks.{layer}.hook_resid_post" for layer in layers]
    acts = model.run(calibration, hooks)
    saes = []
    for i, (layer, hook) in enumerate(zip(layers, hooks)):
        torch.manual_seed(1000 + layer)
        kind = architectures[i % len(architectures)]
        if kind == "topk":
            cfg = TopKSAEConfig(d_in=model.d_model, d_sae=width, k=TOPK_K, device="cpu")
        else:
            cfg = JumpReLUSAEConfig(d_in=model.d_model, d_sae=width, device="cpu")
        cfg.metadata.hook_name, cfg.metadata.model_name = hook, model.card.name
        cfg.metadata.context_size, cfg.metadata.prepend_bos = CONTEXT, True
        sae = TopKSAE(cfg) if kind == "topk" else JumpReLUSAE(cfg)
        if kind == "jumprelu":
            with torch.no_grad():
                x = acts[hook][:, 1:].reshape(-1, model.d_model)  # not BOS: the harvest never encodes it
                pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc
                rank = max(1, int(round(x.shape[0] * JUMPRELU_L0 / width)))
                sae.threshold.copy_(torch.topk(pre, rank + 1, dim=0).values[-1].clamp(min=1e-3))
                del pre
        saes.append(wrap_sae(sae))
    del acts
    return saes


def disk_by_kind(root: Path) -> dict[str, float]:
    """MB on disk per artifact kind; a file hard-linked into several artifacts (a harvest's arrays are links
    to its per-SAE and per-site components) is counted once, under the component."""
    entries = []
    for meta in root.rglob("meta.json"):
        try:
            inner = json.loads(meta.read_text()).get("meta", {})
        except (OSError, ValueError):
            inner = {}
        kind = str(inner.get("kind") or ("analysis view" if "result" in inner else "other"))
        entries.append((kind == "harvest", kind, meta.parent))
    seen, out = set(), {}
    for _, kind, directory in sorted(entries):
        for f in directory.iterdir():
            st = f.stat()
            if f.is_file() and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                out[kind] = out.get(kind, 0.0) + st.st_size / 1e6
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def timed(report: Report, table: dict[str, float], name: str, fn: Callable[[], Any], memory: PeakMemory) -> Any:
    memory.mark(name)
    start = time.perf_counter()
    try:
        return fn()
    except Exception as error:  # noqa: BLE001 - a rehearsal reports every failure and carries on
        report.notes.append(f"{name} failed: {type(error).__name__}: {error}")
        return None
    finally:
        table[name] = time.perf_counter() - start
        print(f"  {name:<44s} {table[name]:8.2f} s   (RSS {memory.sample():7.0f} MB)", flush=True)


def page_timings(report: Report, memory: PeakMemory, model, saes, store, hkey: str, umap: bool) -> None:
    """Each page's computation a second time, from the stored artifacts (harvest read back from disk)."""
    from core import analysis
    from core import feature_map as fm
    from core import feature_views as fv
    from core.harvest.result import HarvestResult
    from core.probe import probe_prompt

    pages = report.pages
    harvest = timed(report, pages, "read the harvest from the store", lambda: HarvestResult.load(store, hkey), memory)
    if harvest is None:
        return
    sae = saes[len(saes) // 2]
    stats = harvest.saes[sae.hook_name]
    timed(report, pages, "Spectra (cached view)",
          lambda: analysis.spectra_by_layer(harvest, store=store, harvest_key=hkey), memory)
    timed(report, pages, "Superposition (cached view)",
          lambda: analysis.superposition_by_layer(harvest, saes, model, store=store, harvest_key=hkey), memory)
    timed(report, pages, "Geometry (cached view)",
          lambda: analysis.geometry_by_layer(harvest, saes, store=store, harvest_key=hkey), memory)
    timed(report, pages, "Features: lobes view (first visit)",
          lambda: analysis.lobes_view(harvest, sae, store=store, harvest_key=hkey), memory)
    center = int(harvest.settings["window_left"])
    frame = timed(report, pages, "Features: feature table (one layer)",
                  lambda: fv.feature_frame(stats, lambda ids: [f"<{i}>" for i in ids], center), memory)
    W_dec = sae.W_dec.detach().cpu().numpy()
    timed(report, pages, "Features: map, PCA (first visit)", lambda: fm.feature_map(W_dec, store, "pca"), memory)
    if umap:
        timed(report, pages, "Features: map, UMAP (first visit)", lambda: fm.feature_map(W_dec, store, "umap"), memory)
        timed(report, pages, "Features: map, UMAP (stored)", lambda: fm.feature_map(W_dec, store, "umap"), memory)
    unit = fv.unit_rows(W_dec)
    feature = int(np.argmax(np.asarray(stats.fire_count)))
    timed(report, pages, "Features: one feature's neighbours",
          lambda: fm.decoder_neighbours(W_dec, feature, W_unit=unit), memory)
    timed(report, pages, "Features: one feature's co-occurrence",
          lambda: fv.cooccurrence_view(stats.cooc_counts(), int(stats.cooc_n_chunks), feature), memory)
    timed(report, pages, "Features: one feature's logit effects",
          lambda: fm.logit_effects(W_dec[feature], model.W_U, k=10), memory)
    timed(report, pages, "Probe: one 20-word prompt, every SAE",
          lambda: probe_prompt(model, saes, " ".join(["the"] * 20)), memory)
    if frame is not None:
        report.config["feature_table_rows"] = len(frame)


def rehearse(shape: Shape, *, layers: list[int], width: int, tokens: int, batch_size: int, umap: bool,
             store_root: Path, splice_tokens: int | None = None) -> Report:
    from core.analysis import run_all
    from core.harvest import HarvestSettings
    from core.harvest.run import harvest_cached
    from core.store import ArtifactStore

    report = Report(shape.name)
    n_layers = shape.full_layers if shape.name != "gemma-2-2b" else max(layers) + 1
    with PeakMemory() as memory:
        steps = report.seconds
        model = timed(report, steps, "build the random model", lambda: build_model(shape, n_layers), memory)
        corpus = zipf_corpus(tokens, model.d_vocab, bos=0)
        calibration = corpus.tokens[: max(2, 2048 // CONTEXT)]
        saes = timed(report, steps, f"build {len(layers)} random SAEs",
                     lambda: build_saes(model, layers, width, shape.architectures, calibration), memory)
        n_params = sum(p.numel() for p in model.model.parameters())
        report.config.update(shape=shape.name, n_layers=n_layers, d_model=model.d_model, d_vocab=model.d_vocab,
                             n_ctx=model.n_ctx, model_params=n_params, sae_layers=layers, sae_width=width,
                             sae_architectures=[s.architecture for s in saes], tokens=int(corpus.tokens.numel()),
                             context=CONTEXT, batch_size=batch_size, corpus=corpus.description,
                             torch_threads=torch.get_num_threads())
        store = ArtifactStore(store_root)
        settings = HarvestSettings(batch_size=batch_size, splice_tokens=shape.splice_tokens
                                   if splice_tokens is None else splice_tokens)
        report.config["splice_tokens"] = settings.splice_tokens
        shown = [-1]

        def harvest_progress(done, total, seconds_left):
            tenth = int(10 * done / max(total, 1))
            if tenth > shown[0]:
                shown[0] = tenth
                print(f"    harvest {done:,}/{total:,} tokens, ~{seconds_left or 0:.0f} s left "
                      f"(RSS {memory.sample():.0f} MB)", flush=True)
        result = timed(report, steps, "harvest (one pass, every SAE)",
                       lambda: harvest_cached(model, saes, corpus, settings, store=store, progress=harvest_progress),
                       memory)
        if result is None:
            report.memory_mb.update(memory.phases, peak=memory.peak_mb)
            return report
        harvest, hkey = result
        # a harvest read back from the store (--keep) carries the seconds its pass took
        seconds = float(harvest.seconds) if harvest.seconds > 0 else steps["harvest (one pass, every SAE)"]
        report.config["tokens_per_second"] = harvest.n_tokens / max(seconds, 1e-9)
        report.config["l0"] = {s.hook_name: float(harvest.saes[s.hook_name].l0) for s in saes}
        analyses = {}

        def analyse():
            def progress(fraction, text):
                now = time.perf_counter()
                if analyses.get("_last"):
                    name, began = analyses["_last"]
                    report.seconds[f"run_all: {name}"] = now - began
                analyses["_last"] = (text, now)
            out = run_all(model, saes, harvest, store=store, progress=progress, harvest_key=hkey)
            return out

        everything = timed(report, steps, "every analysis (core.analysis.run_all)", analyse, memory)
        if everything is not None:
            report.notes += skipped_parts(everything)
        report.disk_mb = disk_by_kind(Path(store_root))
        page_timings(report, memory, model, saes, store, hkey, umap)
    report.memory_mb = {**{k: round(v) for k, v in memory.phases.items()}, "peak (sampled)": round(memory.peak_mb),
                        "peak (getrusage maxrss)": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    return report


def geometry_curve(widths: list[int], d: int, n_clusters: int | None = None) -> list[dict[str, float]]:
    """Decoder clusters (core.metrics.circles.decoder_clusters, as the Geometry page runs them) of random unit
    rows [width, d]: CPU seconds and the peak of numpy's allocations (tracemalloc), one width after another."""
    import tracemalloc

    from core.analysis.geometry import default_clusters
    from core.metrics.circles import decoder_clusters
    from core.metrics.knn import EXACT_MAX_ROWS

    out = []
    for width in widths:
        W = np.random.default_rng(0).standard_normal((width, d))
        k = n_clusters or default_clusters(width, 20, 2, 200)
        tracemalloc.start()
        cpu, wall = time.process_time(), time.perf_counter()
        decoder_clusters(W, k, seed=0)
        row = {"width": width, "clusters": k, "path": "exact" if width <= EXACT_MAX_ROWS else "sampled",
               "cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
               "peak_mb": tracemalloc.get_traced_memory()[1] / 2**20}
        tracemalloc.stop()
        out.append(row)
        print(f"  decoder clusters of {width:>6,} x {d} ({k} clusters, {row['path']}): {row['cpu_s']:6.1f} s CPU, "
              f"{row['wall_s']:6.1f} s wall, peak {row['peak_mb']:6.0f} MB", flush=True)
    return out


def skipped_parts(everything) -> list[str]:
    """Every Skipped part of run_all's result, by path (what could not run, and why)."""
    from core.analysis.results import Skipped
    from core.jsonable import Result

    out = []

    def walk(value, path):
        if isinstance(value, Skipped):
            out.append(f"skipped {path}: {value.reason}")
        elif isinstance(value, Result):
            for name in value.__dataclass_fields__:
                walk(getattr(value, name), f"{path}.{name}" if path else name)
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                walk(item, f"{path}[{getattr(item, 'hook_name', getattr(item, 'site', i))}]")
    walk(everything, "")
    return out


def print_report(report: Report) -> None:
    c = report.config
    print(f"\n== scale rehearsal: {c.get('shape')} ==")
    print(f"model: {c.get('n_layers')} layers x {c.get('d_model')}, vocab {c.get('d_vocab'):,}, "
          f"{c.get('model_params', 0) / 1e6:.0f} M params (random init); SAEs: {len(c.get('sae_layers', []))} x "
          f"{c.get('sae_width'):,} ({', '.join(sorted(set(c.get('sae_architectures', []))))}); corpus: {c.get('corpus')}")
    if "tokens_per_second" in c:
        print(f"harvest throughput: {c['tokens_per_second']:.0f} tokens/s on {c['torch_threads']} threads; "
              f"L0 per SAE: {', '.join(f'{v:.0f}' for v in c['l0'].values())}")
    print("time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    print("pages from stored artifacts (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report.pages.items()))
    print("disk (MB by artifact kind): " + ", ".join(f"{k} {v:.1f}" for k, v in report.disk_mb.items())
          + f"; total {sum(report.disk_mb.values()):.1f}")
    print("peak RSS (MB): " + ", ".join(f"{k} {v}" for k, v in report.memory_mb.items()))
    for note in report.notes:
        print("note: " + note)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt2-small")
    parser.add_argument("--layers", help="comma-separated SAE layers (default: the shape's)")
    parser.add_argument("--sae-width", type=int, help="features per SAE (default: the shape's real width)")
    parser.add_argument("--tokens", type=int, help="corpus tokens (default: the shape's, a run of minutes)")
    parser.add_argument("--batch-size", type=int, help="sequences per forward pass")
    parser.add_argument("--splice-tokens", type=int, help="tokens of the splice-in evaluation (default: the shape's)")
    parser.add_argument("--geometry-curve", metavar="WIDTHS",
                        help="instead: time and peak memory of the decoder clustering alone at these comma-separated "
                             "widths (d = the shape's d_model), e.g. 4096,16384,65536")
    parser.add_argument("--umap", action="store_true", help="also time the first UMAP map (numba compile included)")
    parser.add_argument("--keep", help="keep the store in this directory (default: a temporary one, removed)")
    parser.add_argument("--json", help="write the report as JSON here")
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    if args.geometry_curve:
        curve = geometry_curve([int(w) for w in args.geometry_curve.split(",")], shape.cfg["d_model"])
        if args.json:
            Path(args.json).write_text(json.dumps(curve, indent=1))
        return 0
    layers = [int(x) for x in args.layers.split(",")] if args.layers else list(shape.layers)
    if shape.name != "gemma-2-2b" and max(layers) >= shape.full_layers:
        parser.error(f"{shape.name} has layers 0..{shape.full_layers - 1}")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix=f"atlas-scale-{shape.name}-"))
    try:
        report = rehearse(shape, layers=layers, width=args.sae_width or shape.sae_width,
                          tokens=args.tokens or shape.tokens, batch_size=args.batch_size or shape.batch_size,
                          umap=args.umap, store_root=root, splice_tokens=args.splice_tokens)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report.__dict__, indent=1, default=float))
    return 1 if any("failed" in n for n in report.notes) else 0


if __name__ == "__main__":
    raise SystemExit(main())
