"""Prompt probing on the organism: a 64-token prompt through every layer's SAE (plus the logit lens),
against the bare forward pass of the same tokens, medians side by side.

    python -m bench.bench_probe [--tokens 64] [--repeats 50]

Goal (issue 7): under 150 ms at the median on the server side, on CPU. When the organism's context
is shorter than the prompt, the prompt is cut to the context (printed).
"""

from __future__ import annotations

import argparse
import random

import torch

from bench.common import median_seconds, organism_sources


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from core.probe import probe_prompt

    sources = organism_sources(args.device)
    model, saes = sources.model, sources.saes
    vocab = [w for w, _ in sorted(model.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
             if w.isalpha() and not w.startswith("<")]
    rng = random.Random(0)
    text = " ".join(rng.choice(vocab) for _ in range(args.tokens - 1))   # + BOS = args.tokens tokens
    result = probe_prompt(model, saes, text)
    tokens = model.tokenize_prompt(text).tokens
    n = tokens.shape[1]
    probe_s = median_seconds(lambda: probe_prompt(model, saes, text), args.repeats, args.device)
    forward_s = median_seconds(lambda: model.logits(tokens), args.repeats, args.device)
    print(f"{sources.label}; torch threads {torch.get_num_threads()}")
    print(f"prompt: {n} tokens" + (f" (cut from {n + result.n_truncated}: the context is {model.n_ctx})"
                                   if result.n_truncated else ""))
    print(f"  bare forward pass            {forward_s * 1e3:8.2f} ms")
    print(f"  probe (all {len(saes)} SAEs + lens)   {probe_s * 1e3:8.2f} ms   goal < 150 ms: "
          f"{'met' if probe_s < 0.150 else 'NOT met'}")
    print(f"  probe / forward              {probe_s / forward_s:8.2f}x")


if __name__ == "__main__":
    main()
