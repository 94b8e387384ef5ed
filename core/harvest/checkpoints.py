"""Training checkpoints: list a model's checkpoints, and harvest one checkpoint's moments on a corpus slice.

Loading a checkpoint and running the pass over it belongs with the harvest; analysis
(core.analysis.checkpoints) only reads the stored results.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from core.errors import AtlasError


class CheckpointError(AtlasError):
    """A checkpoint that cannot be listed or loaded."""


TL_CHECKPOINTED_PREFIXES = ("EleutherAI/pythia", "stanford-crfm/")  # TL lists their checkpoints offline


def checkpoint_options(spec: Any) -> dict[str, int]:
    """Training checkpoints of the model `spec` (a core.sources.models.ModelSpec) names: identifier -> step,
    in training order; {} when the model has none that Atlas can list without a network call.

    Organism: its saved checkpoints ("step_000123", ..., "final"). TransformerLens: the Pythia and
    stanford-crfm families, whose steps TransformerLens keeps in its own tables; the identifier is the
    checkpoint_index as a string ("0".."153" for Pythia), as core.sources.models.parse_tl_checkpoint reads it.
    (NeelNanda's checkpointed models are left out: TL lists them by asking the Hugging Face Hub.)
    """
    if spec.source == "organism":
        from core.sources.organism import checkpoint_steps

        return checkpoint_steps(spec.path)
    if spec.source != "transformer_lens":
        return {}
    from core.sources.models import official_tl_name

    official = official_tl_name(spec.name)
    if not official.startswith(TL_CHECKPOINTED_PREFIXES):
        return {}
    from transformer_lens.loading_from_pretrained import get_checkpoint_labels

    labels, _ = get_checkpoint_labels(official)
    return {str(i): int(step) for i, step in enumerate(labels)}


def default_checkpoints(options: Mapping[str, int], n: int = 8) -> list[str]:
    """About `n` identifiers of `options` spread evenly in log(step + 1) (the axis of the phases),
    first and last included, in training order."""
    names = sorted(options, key=lambda c: options[c])
    if len(names) <= n:
        return names
    x = np.log1p(np.asarray([options[c] for c in names], dtype=np.float64))
    targets = np.linspace(x[0], x[-1], n)
    picked = {int(np.argmin(np.abs(x - t))) for t in targets}
    return [names[i] for i in sorted(picked)]


def checkpoint_spec(model: Any, device: str | None) -> Any:
    """The ModelSpec to vary: `model` itself, or the organism in directory `model` (None: the committed one)."""
    from core.sources.models import ModelSpec

    if isinstance(model, ModelSpec):
        return model if device is None else replace(model, device=device)
    from core.sources.organism import resolve_dir

    return ModelSpec(source="organism", path=str(resolve_dir(model)), device=device or "cpu")


def resolve_checkpoints(spec: Any, options: Mapping[str, int], checkpoints: Sequence[str] | None) -> list[str]:
    """The requested checkpoints as identifiers of `options` (TL "index:12" / "value:143000" -> "12"),
    deduplicated and in training order."""
    if not options:
        raise CheckpointError(f"The model {spec.name!r} has no training checkpoints that Atlas can list "
                            "(the organism, Pythia and stanford-crfm models have them).")
    if checkpoints is None:
        return list(options)
    names: list[str] = []
    unknown: list[str] = []
    for requested in checkpoints:
        name = str(requested)
        if spec.source == "transformer_lens" and name not in options:
            from core.sources.models import parse_tl_checkpoint

            parsed = parse_tl_checkpoint(name)
            if "checkpoint_index" in parsed:
                name = str(parsed["checkpoint_index"])
            elif "checkpoint_value" in parsed:
                name = next((c for c, s in options.items() if s == parsed["checkpoint_value"]), name)
        if name in options:
            names.append(name)
        else:
            unknown.append(str(requested))
    if unknown:
        listed = ", ".join(options) if len(options) <= 12 else f"{', '.join(list(options)[:12])}, ..."
        raise CheckpointError(f"Unknown checkpoint(s) {', '.join(unknown)}; the model has {listed}.")
    return sorted(dict.fromkeys(names), key=lambda c: options[c])


def checkpoint_identity(spec: Any) -> dict[str, Any]:
    """What identifies the weights behind `spec` apart from the checkpoint (part of the cache keys)."""
    if spec.source == "organism":
        from core.sources.organism import resolve_dir

        # by content (the manifest lists every file's sha256), not by path: every checkout shares the keys
        path = str(resolve_dir(spec.path))
        return {"source": "organism", "manifest": file_digest(path, "manifest.json") or path, "dtype": spec.dtype}
    from core.sources.models import official_tl_name

    return {"source": spec.source, "name": official_tl_name(spec.name), "dtype": spec.dtype}


def checkpoint_corpus(spec: Any, corpus: Any, max_tokens: int, n_ctx: int) -> Any:
    """The corpus slice a checkpoint is harvested on: the given CorpusSpec cut to about max_tokens, or
    for the organism (when none is given) its world's eval split."""
    from core.sources.corpus import CorpusSpec

    if corpus is not None:
        return replace(corpus, max_chunks=max(1, -(-int(max_tokens) // int(corpus.context_size))))
    if spec.source != "organism":
        raise CheckpointError("Choose a corpus (in the sidebar) to harvest the checkpoints on.")
    from core.sources.organism import resolve_dir

    return CorpusSpec(source="world", path=str(resolve_dir(spec.path)), split="eval",
                      max_chunks=max(1, -(-int(max_tokens) // n_ctx)))


def free_model(model: Any) -> None:
    """Drop a checkpoint's weights before loading the next (Pythia checkpoints are GBs on big sizes)."""
    import gc

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def file_digest(directory: Any, name: str) -> str | None:

    path = Path(directory) / name
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def harvest_checkpoint(spec: Any, checkpoint: str, max_tokens: int, store: Any = None, corpus: Any = None):
    """(HarvestResult, key) of a moments-only harvest (no SAEs, no reservoir) of `checkpoint` of the model
    `spec` names, on a corpus slice of about `max_tokens` tokens; the weights are freed afterwards."""
    from core.harvest.run import harvest_cached
    from core.harvest.settings import HarvestSettings
    from core.sources.corpus import load_corpus
    from core.sources.models import load_model

    model = load_model(replace(spec, checkpoint=checkpoint))
    try:
        sliced = load_corpus(checkpoint_corpus(spec, corpus, max_tokens, model.n_ctx), model)
        settings = HarvestSettings(max_tokens=int(max_tokens), reservoir_size=0, batch_size=32)
        return harvest_cached(model, [], sliced, settings, store)
    finally:
        free_model(model)
