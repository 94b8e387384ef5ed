"""Harvest benchmarks, each a ratio measured in the same run on identical inputs.

(a) throughput: the harvest against its floor, measured round-robin (A B A B ...) with wall and CPU time
    (this process's CPU time: what a single-threaded run costs, whatever else the shared machine runs).
    Floor = the forward pass to the last SAE hook plus every SAE's encode + decode (the least any SAE
    statistic can cost). The harvest without the splice-in evaluation is compared with the floor; the
    default harvest (splice-in evaluation on its first splice_tokens tokens) with the floor plus the model
    work that evaluation needs (clean logits and three continuations per SAE over those tokens).
    Also shown: the bare forward pass (model(tokens) -> logits).
(b) harvest vs a naive baseline written the way peers do it, computing the same set of statistics:
    run_with_cache of every hook, keep every activation and SAE code, vectorised covariance /
    token sample / reconstruction / L1 prefix sums, then per-feature Python loops for counts, L1,
    max, top-k contexts, histograms, quantile-band samples and co-occurrence rows.
(c) peak memory against corpus length: each length in a fresh process, peak RSS above the
    process's level after a small warm-up harvest (goal: flat).

    python -m bench.bench_harvest [--tokens N] [--repeats R] [--device cpu|cuda] [--gpt2-shape]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from dataclasses import replace

from bench.common import (
    Sources,
    interleaved_seconds,
    median_seconds,
    organism_sources,
    random_corpus,
    random_sources,
)
from core.harvest import HarvestSettings, harvest, snapshot_counts


def _corpus_for(sources: Sources, n_tokens: int):
    model = sources.model
    context = min(64, model.n_ctx)
    if sources.label.startswith("organism"):
        from core.sources.corpus import CorpusSpec, load_corpus

        try:
            corpus = load_corpus(CorpusSpec(source="world", split="eval", context_size=context,
                                            max_chunks=max(1, n_tokens // context)), model)
            if corpus.tokens.numel() >= n_tokens // 2:
                return corpus
        except Exception as error:  # noqa: BLE001
            print(f"(world corpus not usable: {error}; random tokens instead)")
    return random_corpus(n_tokens, context, model.d_vocab, model.bos_token_id)


def bare_forward(model, corpus, batch_size: int) -> None:
    for start in range(0, corpus.tokens.shape[0], batch_size):
        model.logits(corpus.tokens[start:start + batch_size])


def forward_to_hooks(model, saes, corpus, batch_size: int, encode: bool) -> None:
    hooks = list(dict.fromkeys(s.hook_name for s in saes))
    with torch.no_grad():
        for start in range(0, corpus.tokens.shape[0], batch_size):
            acts = model.run(corpus.tokens[start:start + batch_size], hooks)
            if encode:
                for sae in saes:
                    x = acts[sae.hook_name].reshape(-1, sae.d_in)
                    sae.decode(sae.encode(x))


def naive_baseline(model, saes, corpus, batch_size: int, settings: HarvestSettings) -> dict:
    """How feature dashboards are usually built: cache everything, then loop over features.

    The same set of statistics as the harvest, each computed the way peers write it: run_with_cache of
    every hook over the corpus, the activations of each site and every SAE code kept in memory; then
    vectorised numpy/torch where that is the obvious way (covariance, a random sample of tokens,
    reconstruction quality, L1 prefix sums), and per-feature Python loops for firing count, L1, max,
    top-k contexts with their token windows, the histogram, quantile-band samples and co-occurrence.
    """
    hooked = model.model
    bos = model.bos_token_id
    sites = list(dict.fromkeys(s.hook_name for s in saes))
    acts = {h: [] for h in sites}
    codes = {s.hook_name: [] for s in saes}
    places = []
    with torch.no_grad():
        for start in range(0, corpus.tokens.shape[0], batch_size):
            tokens = corpus.tokens[start:start + batch_size].to(model.device)
            _, cache = hooked.run_with_cache(tokens)  # every hook of every layer
            keep = (tokens != bos).reshape(-1) if bos is not None else torch.ones(tokens.numel(), dtype=torch.bool)
            rows = torch.arange(start, start + tokens.shape[0]).repeat_interleave(tokens.shape[1])
            cols = torch.arange(tokens.shape[1]).repeat(tokens.shape[0])
            places.append(torch.stack([rows, cols], 1)[keep.cpu()])
            for hook in sites:
                acts[hook].append(cache[hook].reshape(-1, cache[hook].shape[-1])[keep])
            for sae in saes:
                codes[sae.hook_name].append(sae.encode(cache[sae.hook_name].reshape(-1, sae.d_in)[keep]))
            del cache
    place = torch.cat(places).numpy()
    token_array = corpus.tokens.numpy()
    rng = np.random.default_rng(0)
    out: dict = {"sites": {}, "saes": {}}
    for hook in sites:  # covariance and a random sample of tokens, vectorised
        x = torch.cat(acts[hook]).double().numpy()
        sample = rng.choice(x.shape[0], size=min(settings.reservoir_size, x.shape[0]), replace=False)
        out["sites"][hook] = (x.mean(0), np.cov(x, rowvar=False, bias=True), x[sample])
    edges = settings.hist_edges
    bands = settings.quantile_edges
    windows = np.arange(-settings.window_left, settings.window_right + 1)
    ctx = token_array.shape[1]
    if ctx >= settings.cooc_chunk_tokens:  # the harvest's co-occurrence chunks (see core.harvest)
        chunk_of = place[:, 0] * -(-ctx // settings.cooc_chunk_tokens) + place[:, 1] // settings.cooc_chunk_tokens
    else:
        chunk_of = place[:, 0] // (settings.cooc_chunk_tokens // ctx)
    row_of = {(int(c), int(p)): i for i, (c, p) in enumerate(place)}  # kept token -> row of the codes
    for sae in saes:
        z = torch.cat(codes[sae.hook_name])
        x = torch.cat(acts[sae.hook_name])
        x_hat = sae.decode(z)
        sse = float(((x - x_hat) ** 2).sum())
        sst = float(((x - x.mean(0)) ** 2).sum())
        snapshots = [z[:count].clamp(min=0).sum(0) for count in snapshot_counts(z.shape[0])]
        stats = []
        for feature in range(z.shape[1]):  # the per-feature Python loop
            column = z[:, feature]
            fired = column > 0
            values, index = torch.topk(column, settings.top_k)
            contexts, window_acts = [], []
            for i in index.tolist():  # token window around each top activation, with the feature's activations
                chunk, pos = place[i]
                where = pos + windows
                contexts.append([int(token_array[chunk, w]) if 0 <= w < token_array.shape[1] else -1 for w in where])
                window_acts.append([float(column[row_of.get((chunk, w), -1)]) if (chunk, w) in row_of else 0.0
                                    for w in where])
            column_np = column.numpy()
            active = column_np[column_np > 0]
            hist, _ = np.histogram(active, bins=edges)
            samples = []
            for lo, hi in zip(bands[:-1], bands[1:]):  # contexts sampled from each activation band
                in_band = np.flatnonzero((column_np >= max(lo, np.nextafter(0, 1))) & (column_np < hi))
                samples.append(rng.choice(in_band, size=min(settings.quantile_samples, in_band.size), replace=False))
            stats.append((int(fired.sum()), float(active.sum()), float(column.max()), values, contexts, hist, samples,
                          window_acts))
        fires = (z > settings.cooc_threshold).numpy()
        per_chunk = np.zeros((chunk_of.max() + 1, z.shape[1]), dtype=bool)
        np.logical_or.at(per_chunk, chunk_of, fires)
        cooc = np.zeros((z.shape[1], z.shape[1]), dtype=np.int64)
        for feature in range(z.shape[1]):  # co-occurrence, one feature's row at a time
            cooc[feature] = (per_chunk[:, feature:feature + 1] & per_chunk).sum(0)
        out["saes"][sae.hook_name] = (stats, cooc, snapshots, 1 - sse / sst, sse / x.numel(),
                                      float((z > 0).sum(1).float().mean()))
    return out


def splice_forwards(model, saes, corpus, settings: HarvestSettings) -> None:
    """The model work of the splice-in evaluation alone: clean logits, and per SAE three continuations from
    its hook (the SAE, zero and mean replacements cost the same), over the evaluation sequences."""
    from core.harvest.splice import _continue, n_eval_sequences

    ctx = corpus.tokens.shape[1]
    n = n_eval_sequences(settings.splice_tokens, ctx, corpus.tokens.shape[0])
    hooks = list(dict.fromkeys(s.hook_name for s in saes))
    with torch.no_grad():
        for start in range(0, n, settings.batch_size):
            tokens = corpus.tokens[start:min(n, start + settings.batch_size)].to(model.device)
            acts = model.run(tokens, hooks)
            torch.log_softmax(model.logits(tokens), -1)
            for sae in saes:
                x = acts[sae.hook_name]
                sae.decode(sae.encode(x))
                for _ in range(3):
                    torch.log_softmax(_continue(model, sae.hook_name, tokens, x), -1)


def throughput(sources: Sources, n_tokens: int, repeats: int, batch_size: int) -> dict:
    model, saes = sources.model, sources.saes
    corpus = _corpus_for(sources, n_tokens)
    tokens = corpus.tokens.numel()
    settings = HarvestSettings(batch_size=batch_size)
    no_splice = replace(settings, splice_tokens=0)
    t = interleaved_seconds({
        "bare_forward": lambda: bare_forward(model, corpus, batch_size),
        "floor_forward_plus_sae": lambda: forward_to_hooks(model, saes, corpus, batch_size, True),
        "splice_forwards": lambda: splice_forwards(model, saes, corpus, settings),
        "harvest_without_splice": lambda: harvest(model, saes, corpus, no_splice),
        "harvest": lambda: harvest(model, saes, corpus, settings),
    }, repeats, model.device)
    ratios = {}
    for clock in ("cpu", "wall", "cpu_min", "wall_min"):
        floor = t["floor_forward_plus_sae"][clock]
        ratios[clock] = {
            "harvest_without_splice_vs_floor": floor / t["harvest_without_splice"][clock],
            "harvest_vs_floor_plus_splice_forwards": (floor + t["splice_forwards"][clock]) / t["harvest"][clock],
            "harvest_vs_bare_forward": t["bare_forward"][clock] / t["harvest"][clock],
            "splice_share_of_harvest": 1 - t["harvest_without_splice"][clock] / t["harvest"][clock],
        }
    return {"tokens": tokens, "batch_size": batch_size, "corpus": corpus.description,
            "splice_tokens": settings.splice_tokens, "seconds": t,
            "tok_per_s_cpu": {name: tokens / v["cpu"] for name, v in t.items() if name != "splice_forwards"},
            "ratios": ratios}


def versus_naive(sources: Sources, n_tokens: int, repeats: int, batch_size: int) -> dict:
    model, saes = sources.model, sources.saes
    corpus = _corpus_for(sources, n_tokens)
    settings = HarvestSettings(batch_size=batch_size, splice_tokens=0)  # the naive pipeline has no splice eval
    t_harvest = median_seconds(lambda: harvest(model, saes, corpus, settings), repeats, model.device)
    t_naive = median_seconds(
        lambda: naive_baseline(model, saes, corpus, batch_size, settings),
        max(1, repeats // 2), model.device, warmup=0)
    return {"tokens": corpus.tokens.numel(), "harvest_s": t_harvest, "naive_s": t_naive,
            "speedup_harvest_vs_naive": t_naive / t_harvest}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def memory_child(n_tokens: int, batch_size: int, device: str, gpt2_shape: bool, random_organism: bool) -> dict:
    sources = _sources(device, gpt2_shape, random_organism)
    corpus = _corpus_for(sources, n_tokens)
    small = random_corpus(batch_size * 4 * corpus.tokens.shape[1], corpus.tokens.shape[1], sources.model.d_vocab,
                          sources.model.bos_token_id)
    settings = HarvestSettings(batch_size=batch_size)
    harvest(sources.model, sources.saes, small, settings)  # warm-up: allocators, buffers, first-call costs
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = _peak_rss_mb()
    start = time.perf_counter()
    harvest(sources.model, sources.saes, corpus, settings)
    out = {"tokens": corpus.tokens.numel(), "peak_rss_increase_mb": _peak_rss_mb() - before,
           "seconds": time.perf_counter() - start}
    if torch.device(device).type == "cuda":
        out["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def memory_curve(lengths: list[int], batch_size: int, device: str, gpt2_shape: bool,
                 random_organism: bool) -> list[dict]:
    rows = []
    for n in lengths:
        args = [sys.executable, "-m", "bench.bench_harvest", "--memory-child", str(n), "--batch-size",
                str(batch_size), "--device", device] + (["--gpt2-shape"] if gpt2_shape else []) + (["--random-organism"] if random_organism else [])
        done = subprocess.run(args, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def _sources(device: str, gpt2_shape: bool, random_organism: bool = False) -> Sources:
    if random_organism:
        from core.organism.train import TrainConfig

        c = TrainConfig()
        return random_sources(c.n_layers, c.d_model, c.n_heads, c.d_mlp, c.n_ctx, d_vocab=1024,
                              d_sae=c.sae_expansion * c.d_model, k=c.sae_k, device=device,
                              label="random organism-shaped")
    if gpt2_shape:  # a TransformerLens model of GPT-2 small's shape (random weights: no hub here)
        return random_sources(12, 768, 12, 3072, 1024, 50257, d_sae=24576, k=32, device=device,
                              label="random gpt2-small-shaped", sae_layers=[3, 6, 9])
    return organism_sources(device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per throughput measurement")
    parser.add_argument("--naive-tokens", type=int, default=8192, help="tokens for the naive comparison")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpt2-shape", action="store_true", help="random GPT-2-small-shaped TL model + 3 SAEs")
    parser.add_argument("--random-organism", action="store_true",
                        help="a random model of the default organism's shape, even when assets/organism exists")
    parser.add_argument("--memory-lengths", default="8192,32768,131072")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: throughput,naive,memory")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(memory_child(args.memory_child, args.batch_size, args.device, args.gpt2_shape,
                                             args.random_organism)))
        return 0
    skip = set(filter(None, args.skip.split(",")))
    sources = _sources(args.device, args.gpt2_shape, args.random_organism)
    print(f"sources: {sources.label}; device {sources.model.device}; torch threads {torch.get_num_threads()}")
    report = {"sources": sources.label, "device": str(sources.model.device)}
    if "throughput" not in skip:
        report["throughput"] = throughput(sources, args.tokens, args.repeats, args.batch_size)
        print("(a) throughput", json.dumps(report["throughput"], indent=2))
    if "naive" not in skip:
        report["naive"] = versus_naive(sources, args.naive_tokens, args.repeats, args.batch_size)
        print("(b) versus naive", json.dumps(report["naive"], indent=2))
    if "memory" not in skip:
        lengths = [int(n) for n in args.memory_lengths.split(",")]
        report["memory"] = memory_curve(lengths, args.batch_size, args.device, args.gpt2_shape,
                                        args.random_organism)
        print("(c) memory vs corpus length", json.dumps(report["memory"], indent=2))
    print("RESULT", json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
