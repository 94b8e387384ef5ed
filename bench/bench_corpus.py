"""Corpus memory: one long single-line document and a budget of 4 chunks, tokenized the old way (the whole
document in one tokenizer call, as packing did before issue 12) and by load_corpus (bounded pieces that stop
at the budget), each in a fresh process, side by side: peak RSS above the process's start and seconds.

    python -m bench corpus [--mib 8]

Uses the organism's tokenizer (assets/organism/tokenizer.json) and a document of organism words.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = b"on monday the king of france went to paris and the queen stayed in rome "

_CHILD = r"""
import json, resource, sys, time, types
from transformers import PreTrainedTokenizerFast
from core.sources.corpus import CorpusSpec, load_corpus  # imported in both modes, before measuring
tok = PreTrainedTokenizerFast(tokenizer_file=sys.argv[3])
mode, path = sys.argv[1], sys.argv[2]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if mode == "whole":
    text = open(path, encoding="utf-8").read()
    ids = tok([text], add_special_tokens=False)["input_ids"][0]
    n = min(len(ids), 4 * 63)
else:
    model = types.SimpleNamespace(tokenizer=tok, bos_token_id=0, n_ctx=64)
    n = load_corpus(CorpusSpec(source="file", path=path, context_size=64, max_chunks=4), model).n_tokens
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "extra_mb": (peak - before) / 1024, "tokens": n}))
"""


def _run(mode: str, path: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, mode, path, str(ROOT / "assets/organism/tokenizer.json")],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=8.0, help="size of the one-line document (MiB)")
    args = parser.parse_args(argv)
    size = int(args.mib * 2**20)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "one-line.txt"
        path.write_bytes((WORDS * (size // len(WORDS) + 1))[:size])
        whole, pieces = _run("whole", str(path)), _run("pieces", str(path))
    print(f"corpus: a {args.mib:g} MiB single-line document, budget 4 chunks x 64 tokens")
    print(f"  whole document in one call   {whole['seconds']:7.2f} s   peak RSS +{whole['extra_mb']:7.0f} MB")
    print(f"  load_corpus (bounded pieces) {pieces['seconds']:7.2f} s   peak RSS +{pieces['extra_mb']:7.0f} MB   "
          f"({pieces['tokens']} tokens)")
    print(f"  memory whole / pieces = {whole['extra_mb'] / max(pieces['extra_mb'], 1):.0f}x, "
          f"time = {whole['seconds'] / max(pieces['seconds'], 1e-3):.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
