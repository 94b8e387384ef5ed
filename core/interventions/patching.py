"""Activation patching (Meng et al. 2022; TransformerLens's `patching` utilities; METHODS.md section 10).

A clean and a corrupted prompt of the same token length. For each component (the residual stream
entering a block, `hook_resid_pre`; the attention output `hook_attn_out`; the MLP output
`hook_mlp_out`), each layer and each position, the clean activation at that (layer, position)
replaces the corrupted one in a run on the corrupted prompt, and the logit difference at the last
position is scored:

    LD = logit(correct) - logit(wrong)
    score = (LD_patched - LD_corrupted) / (LD_clean - LD_corrupted)

0 = the patch recovers nothing, 1 = it recovers the clean run's logit difference. This is the
normalised metric of TransformerLens's patching demos; `transformer_lens.patching.
get_act_patch_resid_pre` / `_attn_out` / `_mlp_out` (= `layer_pos_patch_setter`, one forward pass per
(layer, position)) with that metric give the same numbers (tests/test_interventions_patching.py
checks it). Atlas runs the positions of one layer as a batch (`batch_size` rows per pass).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.interventions.common import InterventionError, ProgressFn, prompt_tokens, token_id, token_text
from core.interventions.hooks import forward_logits
from core.jsonable import Result

PATCH_COMPONENTS = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}


@dataclass(frozen=True, eq=False)
class PatchingResult(Result):
    clean_prompt: str
    corrupted_prompt: str
    clean_tokens: list[str]
    corrupted_tokens: list[str]
    correct: str
    wrong: str
    correct_id: int
    wrong_id: int
    ld_clean: float  # logit(correct) - logit(wrong) at the last position, clean run
    ld_corrupted: float
    components: list[str]  # keys of PATCH_COMPONENTS, in the order of `scores`
    scores: list[list[list[float]]]  # [component][layer][position], the normalised recovered logit difference
    logit_diffs: list[list[list[float]]]  # [component][layer][position], LD of the patched run

    def grid(self, component: str) -> np.ndarray:
        """[n_layers, n_positions] scores of one component (for a heatmap)."""
        if component not in self.components:
            raise KeyError(f"{component!r} was not patched; components: {self.components}")
        return np.asarray(self.scores[self.components.index(component)], dtype=np.float64)


def _components(components: Sequence[str], model: Any) -> list[str]:
    out = list(dict.fromkeys(components))
    unknown = [c for c in out if c not in PATCH_COMPONENTS]
    if unknown or not out:
        raise InterventionError(f"Unknown patching component(s) {unknown or '(none given)'}; choose from {', '.join(PATCH_COMPONENTS)}.")
    missing = [c for c in out if not model.has_hook(f"blocks.0.{PATCH_COMPONENTS[c]}")]
    if missing:
        raise InterventionError(f"The model {model.spec.name!r} exposes no {', '.join(missing)} hooks to patch.")
    return out


def patch_activations(model: Any, clean_prompt: str, corrupted_prompt: str, *, correct: str | int, wrong: str | int,
                      components: Sequence[str] = tuple(PATCH_COMPONENTS), batch_size: int = 16,
                      progress: ProgressFn | None = None) -> PatchingResult:
    """Patch every (component, layer, position) from the clean into the corrupted prompt (module docstring).

    correct / wrong: the answer tokens of the logit difference (their text, exactly one token each, or ids).
    """
    clean = prompt_tokens(model, clean_prompt)
    corrupted = prompt_tokens(model, corrupted_prompt)
    if clean.shape[1] != corrupted.shape[1]:
        raise InterventionError(
            f"The clean prompt is {clean.shape[1]} tokens and the corrupted prompt {corrupted.shape[1]} "
            f"(BOS included); patching position by position needs the same length. Reword one of them.")
    correct_id = token_id(model, correct, "correct answer")
    wrong_id = token_id(model, wrong, "wrong answer")
    if correct_id == wrong_id:
        raise InterventionError("The correct and the wrong answer are the same token; the logit difference would be 0.")
    comps = _components(components, model)
    ld_clean, ld_corrupted, patched = patch_tokens(model, clean, corrupted, correct_id, wrong_id, components=comps,
                                                   batch_size=batch_size, progress=progress)
    scores = [[[(ld - ld_corrupted) / (ld_clean - ld_corrupted) for ld in row] for row in grid] for grid in patched]
    return PatchingResult(
        clean_prompt=clean_prompt, corrupted_prompt=corrupted_prompt, clean_tokens=model.to_str_tokens(clean[0]),
        corrupted_tokens=model.to_str_tokens(corrupted[0]), correct=token_text(model, correct_id),
        wrong=token_text(model, wrong_id), correct_id=correct_id, wrong_id=wrong_id, ld_clean=ld_clean,
        ld_corrupted=ld_corrupted, components=comps, scores=scores, logit_diffs=patched)


def patch_tokens(model: Any, clean: torch.Tensor, corrupted: torch.Tensor, correct_id: int, wrong_id: int, *,
                 components: Sequence[str], batch_size: int = 16,
                 progress: ProgressFn | None = None) -> tuple[float, float, list[list[list[float]]]]:
    """(LD_clean, LD_corrupted, LD_patched [component][layer][position]) for [1, pos] token tensors.

    Raises InterventionError when LD_clean == LD_corrupted (the normalised score would divide by 0).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InterventionError(f"batch_size must be a positive whole number, not {batch_size!r}.")
    n_pos = int(corrupted.shape[1])
    names = [f"blocks.{layer}.{PATCH_COMPONENTS[c]}" for c in components for layer in range(model.n_layers)]
    with model.lock:
        cache = model.run(clean, names, return_logits=True)
        ld_clean = _logit_diff(cache["logits"], correct_id, wrong_id)[0]
        ld_corrupted = _logit_diff(forward_logits(model, corrupted), correct_id, wrong_id)[0]
        if ld_clean == ld_corrupted:
            raise InterventionError(
                f"The clean and the corrupted prompt give the same logit difference ({ld_clean:.4g}), so there is "
                "nothing to recover; choose prompts whose answers differ.")
        chunks = [(s, min(s + batch_size, n_pos)) for s in range(0, n_pos, batch_size)]
        total, done, started = len(names) * len(chunks), 0, time.perf_counter()
        patched: list[list[list[float]]] = []
        for ci, _ in enumerate(components):
            grid = []
            for layer in range(model.n_layers):
                name = names[ci * model.n_layers + layer]
                source = cache[name][0]
                row: list[float] = []
                for first, stop in chunks:
                    row += _patched_chunk(model, corrupted, name, source, first, stop, correct_id, wrong_id)
                    done += 1
                    if progress is not None:
                        elapsed = time.perf_counter() - started
                        progress(done, total, elapsed / done * (total - done))
                grid.append(row)
            patched.append(grid)
    return ld_clean, ld_corrupted, patched


def _patched_chunk(model: Any, corrupted: torch.Tensor, name: str, source: torch.Tensor, first: int, stop: int,
                   correct_id: int, wrong_id: int) -> list[float]:
    """LD of the runs patching positions first..stop-1 (one row each, same as layer_pos_patch_setter)."""
    positions = torch.arange(first, stop)

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        out = act.clone()
        rows = torch.arange(positions.shape[0], device=act.device)
        out[rows, positions.to(act.device)] = source[positions.to(source.device)].to(act.device, act.dtype)
        return out

    logits = forward_logits(model, corrupted.repeat(stop - first, 1), [(name, hook)])
    return _logit_diff(logits, correct_id, wrong_id)


def _logit_diff(logits: torch.Tensor, correct_id: int, wrong_id: int) -> list[float]:
    last = logits[:, -1].double()
    return (last[:, correct_id] - last[:, wrong_id]).cpu().tolist()
