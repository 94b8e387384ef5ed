"""Generation with an edit at one site, many variants side by side in one batch.

Row 0 of the batch is the unedited model; rows 1.. carry the edits (one per strength of a sweep). Each
step runs the whole sequence again without a key-value cache, so a hook always sees absolute
positions ("from position p on" means the same thing at every step, for prompt and generated tokens)
and the loop is the same for HookedTransformer and TransformerBridge. At 20 new tokens this costs a
few forward passes more than a cached loop; bench/bench_steer.py measures it.

Sampling is Gumbel-max with one noise draw per step shared by every row (common random numbers): the
same seed gives the same unsteered completion whatever else is in the batch, and steered rows differ
from it only through the edit. temperature 0 is greedy (argmax).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from core.interventions.common import InterventionError, ProgressFn
from core.interventions.hooks import intervene

# edit(activation [rows, pos, d]) -> new activation; row 0 must come back unchanged
RowEdit = Callable[[torch.Tensor], torch.Tensor]


def check_start(start: int | None, last: int) -> int:
    """First position an edit touches: None = every position (0); else 0 <= start <= last."""
    if start is None:
        return 0
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= last:
        raise InterventionError(f"from_position must be a position 0..{last} (the first token, BOS when the model "
                                f"has one, is 0), not {start!r}.")
    return start


def additive_edit(deltas: torch.Tensor, start: int) -> RowEdit:
    """x[r, p] += deltas[r] for p >= start (deltas [rows, d]; row 0 zero)."""

    def edit(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        out[:, start:] += deltas.to(act.device, act.dtype)[:, None, :]
        return out

    return edit


def clamp_edit(sae: Any, features: Sequence[int], values: torch.Tensor, start: int) -> RowEdit:
    """Through the SAE, rows 1..: z = encode(x); z'_i = values[r, i]; x <- x + decode(z') - decode(z).

    x - decode(z) (the SAE's error term) is kept, so only the clamped features change (METHODS 10).
    values [rows, n_features]; row 0 is left alone.
    """
    index = torch.as_tensor(list(features), dtype=torch.long)

    def edit(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        x = act[1:, start:]
        if x.numel() == 0:
            return out
        z = sae.encode(x)
        z_new = z.clone()
        z_new[..., index.to(z.device)] = values[1:, None, :].to(z.device, z.dtype)
        delta = sae.decode(z_new) - sae.decode(z)
        out[1:, start:] += delta.to(act.device, act.dtype)
        return out

    return edit


def generate_rows(model: Any, prompt: torch.Tensor, n_rows: int, site: str, edit: RowEdit | None, *,
                  max_new_tokens: int, temperature: float, seed: int, stop_at_eos: bool = True,
                  progress: ProgressFn | None = None) -> list[list[int]]:
    """New token ids per row ([n_rows] lists, each cut after the end-of-text token when one comes, unless
    stop_at_eos is False)."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InterventionError(f"max_new_tokens must be a positive whole number, not {max_new_tokens!r}.")
    if not (isinstance(temperature, (int, float)) and temperature >= 0):
        raise InterventionError(f"temperature must be 0 (greedy) or positive, not {temperature!r}.")
    prompt_len = int(prompt.shape[1])
    if prompt_len + max_new_tokens > model.n_ctx:
        raise InterventionError(
            f"The prompt ({prompt_len} tokens) plus {max_new_tokens} new tokens exceeds the model's context of "
            f"{model.n_ctx}; ask for at most {max(0, model.n_ctx - prompt_len)} new tokens.")
    eos = getattr(model.tokenizer, "eos_token_id", None) if stop_at_eos else None
    generator = torch.Generator().manual_seed(int(seed))
    tokens = prompt.to(model.device).repeat(n_rows, 1)
    finished = torch.zeros(n_rows, dtype=torch.bool)
    new: list[list[int]] = [[] for _ in range(n_rows)]
    hooks = [] if edit is None else [(site, lambda act, hook: edit(act))]
    started = time.perf_counter()
    with intervene(model, hooks), torch.inference_mode():
        for step in range(max_new_tokens):
            logits = model.logits(tokens)[:, -1].double()
            if temperature > 0:
                uniform = torch.rand(logits.shape[-1], generator=generator, dtype=torch.float64)
                gumbel = -torch.log(-torch.log(uniform.clamp(1e-300, 1.0 - 1e-16)))
                logits = logits / float(temperature) + gumbel.to(logits.device)
            chosen = logits.argmax(-1).cpu()
            for row in range(n_rows):
                if not finished[row]:
                    new[row].append(int(chosen[row]))
                    finished[row] = eos is not None and int(chosen[row]) == int(eos)
            if progress is not None:
                elapsed = time.perf_counter() - started
                progress(step + 1, max_new_tokens, elapsed / (step + 1) * (max_new_tokens - step - 1))
            if bool(finished.all()):
                break
            tokens = torch.cat([tokens, chosen.to(tokens.device)[:, None]], dim=1)
    if progress is not None:
        progress(max_new_tokens, max_new_tokens, 0.0)
    return new
