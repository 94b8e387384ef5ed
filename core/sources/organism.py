"""Load the committed organism (or any directory the trainer wrote): model, checkpoints, SAEs, world.

Only JSON and safetensors are read; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from core.errors import AtlasError  # noqa: E402

if TYPE_CHECKING:  # imported where used: loading transformers/TransformerLens takes seconds
    from transformer_lens import HookedTransformer
    from transformers import PreTrainedTokenizerFast

ORGANISM_DIR: Path = Path(__file__).resolve().parents[2] / "assets" / "organism"  # the committed one
ORGANISM_DIR_ENV = "ATLAS_ORGANISM_DIR"  # points every organism source at another directory (tests: a tiny one)


def resolve_dir(directory: str | os.PathLike | None = None) -> Path:
    """The organism directory to read: `directory` when given, else $ATLAS_ORGANISM_DIR, else the
    committed organism. Every caller (models, SAEs, corpus, analysis, app, tooling) goes through here."""
    if directory:
        return Path(directory)
    configured = os.environ.get(ORGANISM_DIR_ENV)
    return Path(configured) if configured else ORGANISM_DIR


def organism_identity(directory: str | os.PathLike | None = None) -> str:
    """What identifies an organism's weights in cache keys, wherever its directory lives: "organism:" and the
    sha256 of its manifest.json (which lists the sha256 of every file). The same organism in another checkout
    (a fresh clone, the prebuilt snapshot's machine) has the same keys; another organism never does. A
    directory without a manifest is identified by its path."""
    import hashlib

    path = resolve_dir(directory)
    try:
        return "organism:" + hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
    except OSError:
        return str(path)


class OrganismError(AtlasError):
    """The organism directory is missing a file, or a checkpoint name is unknown."""


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise OrganismError(f"The organism directory {path.parent} has no {path.name}; regenerate it with "
                            "`python -m core.organism train`.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise OrganismError(f"{path} is not valid JSON ({error}).") from error
    if not isinstance(data, dict):
        raise OrganismError(f"{path} should hold a JSON object.")
    return data


def checkpoint_steps(directory: str | os.PathLike | None = None) -> dict[str, int]:
    """Checkpoint name -> training step, in training order ("final" last)."""
    steps = _read_json(resolve_dir(directory) / "checkpoints.json")
    return dict(sorted(((str(k), int(v)) for k, v in steps.items()), key=lambda kv: (kv[1], kv[0] == "final")))


def list_checkpoints(directory: str | os.PathLike | None = None) -> list[str]:
    """["step_000000", ..., "final"] in training order."""
    return list(checkpoint_steps(directory))


def _weights_path(directory: Path, checkpoint: str) -> Path:
    if checkpoint == "final":
        return directory / "model.safetensors"
    if checkpoint not in checkpoint_steps(directory):
        raise OrganismError(f"Unknown organism checkpoint {checkpoint!r}; available: "
                            f"{', '.join(list_checkpoints(directory))}.")
    return directory / "checkpoints" / f"{checkpoint}.safetensors"


def load_organism_tokenizer(directory: str | os.PathLike | None = None) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    directory = resolve_dir(directory)
    if not (directory / "tokenizer.json").is_file():
        raise OrganismError(f"The organism directory {directory} has no tokenizer.json.")
    return PreTrainedTokenizerFast.from_pretrained(str(directory))  # plain JSON; nothing is executed


def load_organism(directory: str | os.PathLike | None = None, checkpoint: str = "final",
                  device: str = "cpu") -> HookedTransformer:
    """The organism as a TransformerLens HookedTransformer (float32) with its tokenizer attached."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    directory = resolve_dir(directory)
    cfg_dict = _read_json(directory / "config.json")
    weights = _weights_path(directory, checkpoint)
    if not weights.is_file():
        raise OrganismError(f"The organism checkpoint file {weights} is missing.")
    tokenizer = load_organism_tokenizer(directory)
    model = HookedTransformer(HookedTransformerConfig(**cfg_dict, device=device), tokenizer=tokenizer)
    state = {name: tensor.to(torch.float32) for name, tensor in load_file(str(weights)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    parameter_names = {name for name, _ in model.named_parameters()}
    if unexpected or parameter_names & set(missing):
        raise OrganismError(f"{weights} does not match config.json (missing {sorted(parameter_names & set(missing))[:3]}, "
                            f"unexpected {unexpected[:3]}).")
    # print_details=False: HookedTransformer.to prints "Moving model to device" to stdout otherwise, which
    # corrupts the JSON that `python -m core.organism structure` prints.
    model.to(device, print_details=False)
    model.eval()
    return model


def organism_sae_dirs(directory: str | os.PathLike | None = None) -> dict[str, Path]:
    """Hook name -> SAELens directory (cfg.json + sae_weights.safetensors), by layer."""
    root = resolve_dir(directory) / "saes"
    if not root.is_dir():
        return {}
    dirs = [d for d in root.iterdir() if (d / "cfg.json").is_file() and (d / "sae_weights.safetensors").is_file()]
    return {d.name: d for d in sorted(dirs, key=lambda d: int(d.name.split(".")[1]))}


def load_ground_truth(directory: str | os.PathLike | None = None) -> dict:
    """The planted structures (schema in docs/ORGANISM.md)."""
    return _read_json(resolve_dir(directory) / "world" / "ground_truth.json")


def world_corpus_texts(directory: str | os.PathLike | None = None, split: str = "eval") -> list[str]:
    """Documents of the synthetic world: "train" (a sample of the training stream) or "eval"."""
    if split not in ("train", "eval"):
        raise OrganismError(f"Unknown world corpus split {split!r}; use 'train' or 'eval'.")
    directory = resolve_dir(directory)
    path = directory / "world" / f"corpus_{split}.txt"
    if not path.is_file():
        raise OrganismError(f"The organism directory {directory} has no world/corpus_{split}.txt.")
    return [line for line in path.read_text().splitlines() if line.strip()]
