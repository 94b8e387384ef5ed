"""Atlas's harvest against SAEDashboard's runner (sae-dashboard 0.8.0, the engine behind Neuronpedia's
feature dashboards), side by side on the same model, SAE and tokens, in the same run.

SAEDashboard pins transformer-lens 2.x, transformers 4.x and numpy 1.x, so it runs in a venv of its own
outside the repo (default ~/.cache/atlas-bench/saedashboard-venv, or $ATLAS_SAEDASHBOARD_VENV), made by
`--setup` (or by hand):
    python3 -m venv ~/.cache/atlas-bench/saedashboard-venv
    ~/.cache/atlas-bench/saedashboard-venv/bin/pip install torch==2.13.0 sae-dashboard==0.8.0 "pyarrow<22"
    ~/.cache/atlas-bench/saedashboard-venv/bin/pip uninstall -y torchvision   # its build does not match torch 2.13
The inputs cross over as files (model config + safetensors weights, the SAE's SAELens directory, tokens.npy);
bench/saedashboard_child.py runs `SaeVisRunner(SaeVisConfig(hook_point, features=all)).run(...)`
there (SaeVisConfig's defaults: the model runs once per batch of 256 features; with --cache, activations are
cached on disk between feature batches, as Neuronpedia's runner sets it) and prints its time. Atlas runs
`core.harvest.harvest` with its default settings (every statistic, context activations, splice quality) on the
same tokens with the same SAE, its moments and reservoir at that SAE's site only (sites=(hook,): the per-SAE
product SAEDashboard makes); both single-threaded unless --threads says otherwise.

    python -m bench saedashboard [--setup] [--organism-tokens 16384,61440] [--gpt2-tokens 2048] [--skip ...]
                                 [--gpt2-features 2048,4096]

At GPT-2 scale SAEDashboard's runner does not fit this 24 GB machine for all 24,576 features (the kernel killed it
at 20.9 GB resident, after ~10 minutes): `--gpt2-features` runs it on the first N features instead (each N its own
process; time and peak memory grow with N, as it processes features in batches and keeps every feature's data), and
the row projects its time to every feature by a line through the measured points. Atlas harvests every feature.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from bench.common import organism_sources, random_corpus, random_sources

DEFAULT_VENV = Path(os.environ.get("ATLAS_SAEDASHBOARD_VENV", "~/.cache/atlas-bench/saedashboard-venv")).expanduser()
CHILD = Path(__file__).with_name("saedashboard_child.py")


def setup_venv(venv: Path) -> None:
    """Create SAEDashboard's venv (torch held at 2.13.0; torchvision removed; pyarrow < 22)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run(pip + ["torch==2.13.0", "sae-dashboard==0.8.0", "pyarrow<22"], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "uninstall", "-y", "-q", "torchvision"], check=False)


def _json_safe(cfg: dict) -> dict:
    out = {}
    for key, value in cfg.items():
        if key in ("device", "dtype", "tokenizer_name", "n_params", "model_name", "original_architecture"):
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
    return out


def export_inputs(model, sae, tokens: torch.Tensor, directory: Path, threads: int, cache: bool,
                  features: int | None = None) -> None:
    from safetensors.torch import save_file

    hooked = model.model
    (directory / "model_cfg.json").write_text(json.dumps(_json_safe(hooked.cfg.to_dict())))
    weights = {k: v.detach().contiguous() for k, v in hooked.state_dict().items() if not k.endswith((".mask", "IGNORE"))}
    save_file(weights, str(directory / "model.safetensors"))  # attention masks are rebuilt there
    sae.sae.save_model(str(directory / "sae"))
    np.save(directory / "tokens.npy", tokens.numpy())
    (directory / "threads.json").write_text(json.dumps(threads))
    (directory / "options.json").write_text(json.dumps({"cache_activations": cache, "features": features}))


def run_saedashboard(venv: Path, model, sae, tokens: torch.Tensor, threads: int, cache: bool,
                     features: int | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="atlas-saedash-") as tmp:
        export_inputs(model, sae, tokens, Path(tmp), threads, cache, features)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
        # its dependencies' deprecation warnings would push a failure's traceback out of the tail shown
        done = subprocess.run([str(venv / "bin" / "python"), "-W", "ignore", str(CHILD), tmp], capture_output=True,
                              text=True,
                              env=env, cwd=tmp)
        if done.returncode != 0:
            killed = " (killed by a signal: most likely out of memory)" if done.returncode < 0 else ""
            raise RuntimeError(f"SAEDashboard's runner failed{killed}, exit {done.returncode}:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def run_atlas(model, sae, corpus) -> dict:
    from core.harvest import HarvestSettings, harvest

    # the per-SAE product SAEDashboard makes: the SAE's own site (not every layer's resid_post for spectra)
    settings = HarvestSettings(batch_size=32, sites=(sae.hook_name,))
    harvest(model, [sae], random_corpus(2 * corpus.tokens.shape[1], corpus.tokens.shape[1], model.d_vocab,
                                        model.bos_token_id), settings)  # warm-up (first-call costs)
    start, cpu = time.perf_counter(), time.process_time()
    result = harvest(model, [sae], corpus, settings)
    return {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,   # this process: model included
            "tokens": int(corpus.tokens.numel()), "splice": result.saes[sae.hook_name].splice is not None,
            "context_activations": list(result.saes[sae.hook_name].top_acts.shape)}


def compare(label: str, model, sae, corpus, venv: Path, threads: int, cache: bool,
            features: list[int] | None = None) -> dict:
    """One row: Atlas's harvest of every feature against SAEDashboard's runner on every feature, or (`features`)
    on the first N features for each N, with its time projected to every feature by a least-squares line."""
    atlas = run_atlas(model, sae, corpus)
    runs = [run_saedashboard(venv, model, sae, corpus.tokens, threads, cache, n) for n in features or [None]]
    row = {"case": label, "saedashboard_config": "cache_dir (activations cached)" if cache else "default",
           "tokens": atlas["tokens"], "atlas_s": atlas["seconds"], "atlas_cpu_s": atlas["cpu_seconds"],
           "atlas_peak_rss_mb": atlas["peak_rss_mb"], "d_sae": sae.d_sae,
           "saedashboard_runs": [{k: r[k] for k in ("features", "seconds", "cpu_seconds", "peak_rss_mb")}
                                 for r in runs],
           "atlas_kept": {"splice": atlas["splice"], "top_acts": atlas["context_activations"]},
           "saedashboard_weights_missing": runs[-1]["weights_missing"]}
    for clock in ("seconds", "cpu_seconds"):
        row[f"saedashboard_{clock}_all_features"] = _projected(runs, clock, sae.d_sae)
    row["ratio_wall"] = row["saedashboard_seconds_all_features"] / atlas["seconds"]
    row["ratio_cpu"] = row["saedashboard_cpu_seconds_all_features"] / atlas["cpu_seconds"]
    row["projected"] = any(r["features"] < sae.d_sae for r in runs)
    print(json.dumps(row), flush=True)
    return row


def _projected(runs: list[dict], clock: str, d_sae: int) -> float:
    """A clock's value at every feature: measured when one run covered them all, else a line through the runs
    (through the origin with one run)."""
    full = [r[clock] for r in runs if r["features"] >= d_sae]
    if full:
        return float(full[0])
    n = np.array([r["features"] for r in runs], dtype=float)
    t = np.array([r[clock] for r in runs], dtype=float)
    if len(runs) == 1:
        return float(t[0] * d_sae / n[0])
    slope, intercept = np.polyfit(n, t, 1)
    return float(slope * d_sae + intercept)


def _organism_corpus(model, n_tokens: int):
    from core.sources.corpus import CorpusSpec, load_corpus

    corpus = load_corpus(CorpusSpec(source="world", split="eval", context_size=64, max_chunks=n_tokens // 64), model)
    if corpus.tokens.numel() < n_tokens:  # the eval split is shorter: add the train split
        corpus = load_corpus(CorpusSpec(source="world", split="train", context_size=64, max_chunks=n_tokens // 64),
                             model)
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=str(DEFAULT_VENV), help="SAEDashboard's venv (outside the repo)")
    parser.add_argument("--setup", action="store_true", help="create the venv first when it is missing")
    parser.add_argument("--organism-tokens", default="16384,61440")
    parser.add_argument("--gpt2-tokens", type=int, default=2048, help="tokens for the GPT-2-small-shaped case")
    parser.add_argument("--gpt2-features", default="",
                        help="comma list: run SAEDashboard on the first N features for each N and project its time to "
                             "all of them (default: every feature, which needs more than 20 GB)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip", default="", help="comma list: organism,gpt2")
    parser.add_argument("--cache", action="store_true",
                        help="SAEDashboard with cache_dir (model activations cached on disk between feature "
                             "batches, as Neuronpedia's runner sets it); default: SaeVisConfig's defaults")
    args = parser.parse_args(argv)
    venv = Path(args.venv).expanduser()
    if not (venv / "bin" / "python").exists():
        if not args.setup:
            print(f"SAEDashboard's venv {venv} is missing: run `python -m bench saedashboard --setup` "
                  "(see this module's docstring for the commands). Skipped.")
            return 0
        setup_venv(venv)
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    rows = []
    if "organism" not in skip:
        sources = organism_sources("cpu")
        sae = next(s for s in sources.saes if s.hook_name == "blocks.1.hook_resid_post")
        for n in [int(t) for t in args.organism_tokens.split(",")]:
            rows.append(compare(f"organism layer-1 SAE ({sae.d_sae})", sources.model, sae,
                                _organism_corpus(sources.model, n), venv, args.threads, args.cache))
    if "gpt2" not in skip:
        sources = random_sources(12, 768, 12, 3072, 1024, 50257, d_sae=24576, k=32, device="cpu",
                                 label="random gpt2-small-shaped", sae_layers=[6],
                                 rescale_acts_by_decoder_norm=True)   # as trained TopK SAEs: SaeVisRunner folds norms
        corpus = random_corpus(args.gpt2_tokens, 128, sources.model.d_vocab, sources.model.bos_token_id)
        rows.append(compare("GPT-2-small-shaped random model, TopK SAE 24576 on layer 6, context 128",
                            sources.model, sources.saes[0], corpus, venv, args.threads, args.cache,
                            [int(n) for n in args.gpt2_features.split(",") if n] or None))
    print("RESULT", json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
