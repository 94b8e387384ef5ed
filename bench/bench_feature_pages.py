"""The Features page's own work at GPT-2-small and Gemma scale, piece by piece, against the naive way
measured side by side.

    python -m bench feature_pages [--features 24576] [--d 768] [--vocab 50257] [--repeat 5]

Only the shapes matter for timing. Printed: the once-per-layer table
build (cached by the page), what every rerun does (labels, search, the WebGL map and its JSON, one
feature's neighbours, co-occurrence and logit effects), and the ratios against the naive baselines
(a Python loop for the top tokens, a full sort of the vocabulary, an SVG map of the same points).
Synthetic harvest arrays: top-k windows [d_sae, 16, 21], chunk incidence of 4,000 chunks x 400 features.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from types import SimpleNamespace

import numpy as np


def _time(call, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - start)
    return best, result


def synthetic_stats(d_sae: int, vocab: int, k: int = 16, window: int = 21, n_chunks: int = 4000, seed: int = 0):
    from core.harvest.result import ChunkCooccurrence

    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, (d_sae, k, window)).astype(np.int32)
    tokens[:, :, window // 2 + 5] = rng.integers(0, 50, (d_sae, k))           # repeated centre tokens
    values = np.sort(rng.random((d_sae, k)).astype(np.float32), axis=1)[:, ::-1]
    values[rng.random(d_sae) < 0.05] = 0                                          # dead features
    fire = (values > 0).sum(1) * rng.integers(1, 500, d_sae)
    per_chunk = 400                                                               # features firing in a chunk
    ids = np.sort(rng.integers(0, d_sae, (n_chunks, per_chunk)), axis=1).ravel()
    cooc = ChunkCooccurrence(np.arange(n_chunks), np.arange(n_chunks + 1) * per_chunk, ids, d_sae)
    return SimpleNamespace(l1_mass=rng.random(d_sae), fire_count=fire, n_tokens=10**6, max_act=values[:, 0],
                           top_tokens=tokens, top_values=values, cooc=cooc, cooc_n_chunks=n_chunks)


def naive_top_tokens(top_tokens, top_values, center, n=3):
    """The page's former way: one np.unique per feature in a Python loop."""
    out = []
    for row, ok in zip(top_tokens[:, :, center], top_values > 0):
        ids, counts = np.unique(row[ok], return_counts=True)
        out.append(ids[np.argsort(-counts, kind="stable")][:n].tolist())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=24576)
    parser.add_argument("--d", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    import plotly.graph_objects as go
    import plotly.io as pio
    import torch

    from core import feature_map as fm
    from core import feature_views as fv
    from core.figures.features import feature_map_figure
    from core.labels import LabelBook

    n, r = args.features, args.repeat
    stats = synthetic_stats(n, args.vocab)
    center = 15
    rng = np.random.default_rng(1)
    W_dec = rng.standard_normal((n, args.d)).astype(np.float32)
    W_U = torch.randn(args.d, args.vocab)
    coords = rng.standard_normal((n, 2)).astype(np.float32)
    words = {i: f" w{i}" for i in range(args.vocab)}

    def decode(ids):
        return [words[i] for i in ids]

    print(f"Features page at {n:,} features x {args.d}, vocabulary {args.vocab:,} (best of {r})")
    t_frame, frame = _time(lambda: fv.feature_frame(stats, decode, center), 1)
    t_modes, _ = _time(lambda: fv.top_tokens(stats.top_tokens, stats.top_values, center), r)
    t_loop, _ = _time(lambda: naive_top_tokens(stats.top_tokens, stats.top_values, center), 1)
    print(f"  once per layer (cached): table with automatic descriptions {t_frame:6.2f} s")
    print(f"    top tokens vectorised {t_modes:6.3f} s vs a Python loop {t_loop:6.3f} s: {t_loop / t_modes:5.1f}x")

    book = LabelBook("a" * 24)
    for f in range(0, n, 50):
        book = book.with_label(f, f"label {f}", updated="t")
    user = {f: e.label for f, e in book.labels.items()}
    t_labels, labels = _time(lambda: fv.label_column(frame, user), r)
    t_search, mask = _time(lambda: fv.search_mask(frame, "w17", book.matching("w17")), r)
    hover = labels.str.slice(0, 80).tolist()
    t_fig, fig = _time(lambda: feature_map_figure(coords, np.log10(frame["density"].to_numpy() + 1e-7), "density",
                                                  categorical=False, hover=hover, matches=np.flatnonzero(mask),
                                                  selected=5), r)
    t_json, payload = _time(lambda: pio.to_json(fig, validate=False), r)
    svg = go.Figure(go.Scatter(x=coords[:, 0], y=coords[:, 1], mode="markers", text=hover))
    t_svg_json, svg_payload = _time(lambda: pio.to_json(svg, validate=False), r)
    unit = fv.unit_rows(W_dec)
    t_nb, _ = _time(lambda: fm.decoder_neighbours(W_dec, 7, W_unit=unit), r)
    t_cooc, view = _time(lambda: fv.cooccurrence_view(stats.cooc, stats.cooc_n_chunks, 3), r)
    t_topk, _ = _time(lambda: fm.logit_effects(W_dec[7], W_U, k=10), r)
    big_vocab = torch.randn(262_144)                                   # one feature's effect on Gemma's vocabulary
    t_select, _ = _time(lambda: (torch.topk(big_vocab, 10), torch.topk(-big_vocab, 10)), r)
    t_sort, _ = _time(lambda: np.argsort(big_vocab.numpy()).tolist(), r)
    per_run = t_labels + t_search + t_fig + t_json + t_nb + t_cooc + t_topk
    print(f"  every rerun: {per_run:6.3f} s in all")
    print(f"    labels joined {t_labels:6.3f} s, search {t_search:6.3f} s ({int(mask.sum())} hits)")
    print(f"    WebGL map built {t_fig:6.3f} s, to JSON {t_json:6.3f} s ({len(payload) / 1e6:.2f} MB; "
          f"the same points as an SVG scatter: {len(svg_payload) / 1e6:.2f} MB, {t_svg_json:6.3f} s)")
    print(f"    neighbours {t_nb * 1e3:6.1f} ms, co-occurrence ({view.status}) {t_cooc * 1e3:6.1f} ms")
    print(f"    logit effects {t_topk * 1e3:6.1f} ms (mostly the product W_dec[i] @ W_U); choosing the top and "
          f"bottom 10 of 262,144 logits: torch.topk {t_select * 1e3:6.2f} ms vs a full sort into a list "
          f"{t_sort * 1e3:6.1f} ms: {t_sort / t_select:5.0f}x")
    assert json.loads(payload)["data"][0]["type"] == "scattergl"
    assert Counter(len(x) for x in naive_top_tokens(stats.top_tokens[:50], stats.top_values[:50], center))


if __name__ == "__main__":
    main()
