"""Train the organism end to end: world -> tokenizer -> transformer (with checkpoints) -> SAEs.

`run_pipeline(config, out_dir)` writes the directory layout that `core.sources.organism` reads
(docs/ORGANISM.md). Weights are safetensors, configs plain JSON; nothing is pickled.

SAEs: one TopK SAE per layer on `blocks.{L}.hook_resid_post`, built from SAELens' own
`TopKTrainingSAE` (its forward pass and TopK auxiliary dead-feature loss) but driven by a short
loop here instead of `LanguageModelSAETrainingRunner`: one pass of the model harvests every layer
at once, which the runner (one model pass per SAE) cannot do on a 2-core CPU budget. Features
count as dead for the auxiliary loss after `dead_feature_window` steps without firing (SAELens'
default of 1000 is longer than these runs, and ~30% of features then die; DESIGN.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from core.organism.evaluate import evaluate_model, lm_loss  # noqa: E402
from core.organism.tokenizer import build_tokenizer, save_tokenizer  # noqa: E402
from core.organism.world import World, WorldConfig, build_world, ground_truth  # noqa: E402
from core.sources.tokens import tokenize_batch  # noqa: E402

MODEL_NAME = "atlas-organism"


@dataclass(frozen=True)
class TrainConfig:
    name: str = "default"
    seed: int = 0
    # model
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    n_ctx: int = 64
    # optimisation
    steps: int = 3000
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1.0  # 0.3 memorised cyclic arithmetic (held-out months 8%); 1.0 gave 49%
    warmup_steps: int = 100
    min_lr_fraction: float = 0.1
    n_checkpoints: int = 13  # including step 0; log-spaced
    # data
    held_out_fraction: float = 0.2
    n_eval_docs: int = 1000
    n_train_text_docs: int = 2000  # a sample of training documents written beside the model
    # SAEs
    sae_expansion: int = 8
    sae_k: int = 16
    sae_train_tokens: int = 150_000  # activations harvested per layer
    sae_steps: int = 2000
    sae_batch_size: int = 1024
    sae_lr: float = 1e-3
    dead_feature_window: int = 50
    threads: int = 2


CONFIGS: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    "tiny": TrainConfig(
        name="tiny", n_layers=2, d_model=32, n_heads=2, d_mlp=64, n_ctx=32, steps=40, batch_size=16,
        warmup_steps=5, n_checkpoints=12, n_eval_docs=40, n_train_text_docs=40, sae_expansion=4,
        sae_k=4, sae_train_tokens=4000, sae_steps=60, sae_batch_size=256, dead_feature_window=20,
        threads=1,
    ),
}


def log_spaced_steps(total: int, n: int) -> list[int]:
    """Step 0 plus n-1 distinct steps spaced evenly in log between 1 and `total` (inclusive)."""
    if total < n - 1:
        raise ValueError(f"{total} steps cannot hold {n} distinct checkpoints")
    count = n - 1
    while True:
        steps = sorted({int(round(s)) for s in np.geomspace(1, total, count)})
        if len(steps) >= n - 1 or count > 10 * n:
            return [0] + steps
        count += 1


def code_version() -> str:
    """The git commit of the repository (plus "+dirty" if it has changes), or "unknown"."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "core/organism"], cwd=root, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "") if head.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def model_config_dict(config: TrainConfig, d_vocab: int) -> dict:
    """Plain-JSON arguments of HookedTransformerConfig (the stored config.json)."""
    return {
        "model_name": MODEL_NAME, "n_layers": config.n_layers, "d_model": config.d_model,
        "n_heads": config.n_heads, "d_head": config.d_model // config.n_heads, "d_mlp": config.d_mlp,
        "n_ctx": config.n_ctx, "d_vocab": d_vocab, "act_fn": "gelu", "normalization_type": "LN",
        "positional_embedding_type": "standard", "default_prepend_bos": True, "seed": config.seed,
        "original_architecture": "AtlasOrganism",
    }


def encode_documents(docs: list[str], tokenizer, n_ctx: int) -> torch.Tensor:
    """[n_docs, n_ctx] ids: BOS + words, right-padded with PAD (every doc fits by construction)."""
    tokens, _ = tokenize_batch(tokenizer, docs, bos_token_id=tokenizer.bos_token_id,
                               pad_token_id=tokenizer.pad_token_id, n_ctx=n_ctx, width=n_ctx)
    return tokens


def lr_at(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.lr * (config.min_lr_fraction + (1 - config.min_lr_fraction) * cosine)


def save_weights(model, path: Path) -> None:
    """Floating parameters as fp16 safetensors (buffers such as masks are rebuilt on load)."""
    state = {name: p.detach().to(torch.float16).contiguous() for name, p in model.named_parameters()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def train_model(
    config: TrainConfig, world: World, tokenizer, out_dir: Path, log: Callable[[str], None] = print
) -> dict:
    """Train the transformer; save checkpoints at log-spaced steps and the final weights."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    vocab = tokenizer.get_vocab()
    pad_id = vocab["<pad>"]
    cfg_dict = model_config_dict(config, len(vocab))
    (out_dir / "config.json").write_text(json.dumps(cfg_dict, indent=2))
    torch.manual_seed(config.seed)
    model = HookedTransformer(HookedTransformerConfig(**cfg_dict))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.98))
    checkpoint_at = set(log_spaced_steps(config.steps, config.n_checkpoints)) - {config.steps}
    checkpoints: dict[str, int] = {}
    doc_rng = random.Random(config.seed + 1)
    eval_tokens = encode_documents(world.documents(config.n_eval_docs, seed=config.seed + 2), tokenizer, config.n_ctx)
    start, history = time.time(), []
    for step in range(config.steps + 1):
        if step in checkpoint_at:
            name = f"step_{step:06d}"
            save_weights(model, out_dir / "checkpoints" / f"{name}.safetensors")
            checkpoints[name] = step
        if step == config.steps:
            break
        batch = encode_documents([world.sample_document(doc_rng) for _ in range(config.batch_size)], tokenizer, config.n_ctx)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        loss = lm_loss(model, batch, pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % max(1, config.steps // 30) == 0 or step == config.steps - 1:
            with torch.no_grad():
                held = lm_loss(model, eval_tokens[:128], pad_id).item()
            history.append({"step": step, "train_loss": loss.item(), "eval_loss": held})
            log(f"step {step}/{config.steps} loss {loss.item():.3f} eval {held:.3f} "
                f"{(step + 1) * config.batch_size * config.n_ctx / (time.time() - start):.0f} tok/s")
    save_weights(model, out_dir / "model.safetensors")
    checkpoints["final"] = config.steps
    (out_dir / "checkpoints.json").write_text(json.dumps(checkpoints, indent=2))
    with torch.no_grad():
        held_loss = float(np.mean([lm_loss(model, chunk, pad_id).item() for chunk in eval_tokens.split(128)]))
    return {"eval_loss": held_loss, "train_seconds": time.time() - start, "history": history,
            "train_tokens": config.steps * config.batch_size * config.n_ctx}


@torch.no_grad()
def harvest_resid(model, tokens: torch.Tensor, pad_id: int, bos_id: int, max_tokens: int) -> dict[str, torch.Tensor]:
    """resid_post of every layer at non-BOS, non-PAD positions: {hook_name: [n, d_model]}."""
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    count = 0
    for chunk in tokens.split(64):
        _, cache = model.run_with_cache(chunk, names_filter=names)
        keep = (chunk != pad_id) & (chunk != bos_id)
        for n in names:
            out[n].append(cache[n][keep].float())
        count += int(keep.sum())
        if count >= max_tokens:
            break
    return {n: torch.cat(v)[:max_tokens] for n, v in out.items()}


def sae_metrics(sae, acts: torch.Tensor) -> dict:
    """Explained variance 1 - sum|x - x_hat|^2 / sum|x - mean x|^2, mean L0, never-firing fraction."""
    with torch.no_grad():
        feats = sae.encode(acts)
        recon = sae.decode(feats)
        ev = 1 - (acts - recon).pow(2).sum() / (acts - acts.mean(0)).pow(2).sum()
        fired = (feats > 0)
        return {"explained_variance": float(ev), "l0": float(fired.sum(-1).float().mean()),
                "dead_fraction": float((fired.sum(0) == 0).float().mean()), "n_eval_tokens": int(acts.shape[0])}


def train_sae(config: TrainConfig, hook_name: str, acts: torch.Tensor, log: Callable[[str], None] = print):
    """A SAELens TopKTrainingSAE fitted with Adam; dead-feature aux loss after the window."""
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.saes.sae import SAEMetadata, TrainStepInput

    d_in = acts.shape[1]
    sae_cfg = TopKTrainingSAEConfig(
        d_in=d_in, d_sae=config.sae_expansion * d_in, k=config.sae_k,
        metadata=SAEMetadata(model_name=MODEL_NAME, hook_name=hook_name, hook_head_index=None,
                             context_size=config.n_ctx, prepend_bos=True, dataset_path="atlas-world",
                             model_from_pretrained_kwargs={}),
    )
    torch.manual_seed(config.seed + int(hook_name.split(".")[1]))
    sae = TopKTrainingSAE(sae_cfg)
    with torch.no_grad():
        sae.b_dec.copy_(acts.mean(0))
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.sae_lr, betas=(0.9, 0.999))
    steps_since_fired = torch.zeros(sae_cfg.d_sae)
    generator = torch.Generator().manual_seed(config.seed)
    for step in range(config.sae_steps):
        idx = torch.randint(0, acts.shape[0], (config.sae_batch_size,), generator=generator)
        lr_scale = min(1.0, 5 * (config.sae_steps - step) / config.sae_steps)  # linear decay over the last 20%
        for group in optimizer.param_groups:
            group["lr"] = config.sae_lr * lr_scale
        output = sae.training_forward_pass(TrainStepInput(
            sae_in=acts[idx], coefficients={}, dead_neuron_mask=steps_since_fired > config.dead_feature_window,
            n_training_steps=step, is_logging_step=False,
        ))
        optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        optimizer.step()
        fired = (output.feature_acts > 0).any(0)
        steps_since_fired = torch.where(fired, torch.zeros_like(steps_since_fired), steps_since_fired + 1)
        if step % max(1, config.sae_steps // 5) == 0:
            log(f"  {hook_name} step {step} mse {output.losses['mse_loss'].item():.4f} "
                f"dead {(steps_since_fired > config.dead_feature_window).float().mean().item():.3f}")
    return sae


def train_saes(config: TrainConfig, model, tokenizer, world: World, out_dir: Path, log: Callable[[str], None] = print) -> dict:
    """One TopK SAE per layer on resid_post; saved by SAELens (cfg.json + sae_weights.safetensors)."""
    from sae_lens import SAE

    vocab = tokenizer.get_vocab()
    pad_id, bos_id = vocab["<pad>"], vocab["<bos>"]
    n_docs = config.sae_train_tokens // (config.n_ctx // 2) + 1
    train_tokens = encode_documents(world.documents(n_docs, seed=config.seed + 3), tokenizer, config.n_ctx)
    eval_tokens = encode_documents(world.documents(max(8, n_docs // 10), seed=config.seed + 2), tokenizer, config.n_ctx)
    train_acts = harvest_resid(model, train_tokens, pad_id, bos_id, config.sae_train_tokens)
    eval_acts = harvest_resid(model, eval_tokens, pad_id, bos_id, config.sae_train_tokens // 4)
    results = {}
    for hook_name, acts in train_acts.items():
        start = time.time()
        training_sae = train_sae(config, hook_name, acts, log)
        sae_dir = out_dir / "saes" / hook_name
        training_sae.save_inference_model(sae_dir)
        sae = SAE.load_from_disk(str(sae_dir))  # measure what was saved, as users will load it
        results[hook_name] = {**sae_metrics(sae, eval_acts[hook_name]), "train_seconds": time.time() - start,
                              "d_sae": sae.cfg.d_sae, "k": config.sae_k}
        log(f"  {hook_name}: {results[hook_name]}")
    return results


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(out_dir: Path, config: TrainConfig, metrics: dict) -> dict:
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest: dict[str, Any] = {
        "name": MODEL_NAME, "config": asdict(config), "code_version": code_version(),
        "torch_version": torch.__version__, "metrics": metrics,
        "files": {str(p.relative_to(out_dir)): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files},
    }
    manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def run_pipeline(config: TrainConfig, out_dir: Path, log: Callable[[str], None] = print) -> dict:
    """Regenerate every asset into `out_dir` (replaced); returns the manifest."""
    from core.sources.organism import load_organism

    torch.set_num_threads(config.threads)
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    world = build_world(WorldConfig(seed=config.seed, held_out_fraction=config.held_out_fraction, n_ctx=config.n_ctx))
    tokenizer = build_tokenizer(world.vocabulary())
    save_tokenizer(tokenizer, out_dir)
    world_dir = out_dir / "world"
    world_dir.mkdir()
    (world_dir / "ground_truth.json").write_text(json.dumps(ground_truth(world), indent=1))
    (world_dir / "corpus_train.txt").write_text("\n".join(world.documents(config.n_train_text_docs, seed=config.seed + 1)) + "\n")
    (world_dir / "corpus_eval.txt").write_text("\n".join(world.documents(config.n_eval_docs, seed=config.seed + 2)) + "\n")
    log(f"world: vocab {len(tokenizer.get_vocab())}, training {config.steps} steps")
    train_metrics = train_model(config, world, tokenizer, out_dir, log)
    model = load_organism(out_dir)
    accuracy = evaluate_model(model, world)
    log(f"accuracy: {json.dumps(accuracy)}")
    sae_results = train_saes(config, model, tokenizer, world, out_dir, log)
    metrics = {"eval_loss": train_metrics["eval_loss"], "train_seconds": train_metrics["train_seconds"],
               "train_tokens": train_metrics["train_tokens"], "accuracy": accuracy, "saes": sae_results,
               "loss_history": train_metrics["history"]}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return write_manifest(out_dir, config, metrics)


def config_by_name(name: str, seed: int | None = None, **overrides) -> TrainConfig:
    if name not in CONFIGS:
        raise ValueError(f"unknown organism config {name!r}; choose one of {sorted(CONFIGS)}")
    config = CONFIGS[name]
    if seed is not None:
        overrides["seed"] = seed
    return replace(config, **overrides)
