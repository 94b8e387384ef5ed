"""A feature's activation on every token of its top and quantile context windows.

The harvest keeps, for each feature, the corpus place (chunk, position) and the token ids of a
window around each of its top-k and quantile-sampled activations (`SAEResult.top_tokens`
[d_sae, k, W], `quantile_tokens` [d_sae, bands, m, W], W = window_left + 1 + window_right). To
shade every token of a window (as Neuronpedia and SAEDashboard do), the feature's activation on
each token is needed too. `feature_context_acts` is the one place that provides it:

- from the harvest when it stored them (`top_token_acts` [d_sae, k, W], `quantile_token_acts`
  [d_sae, bands, m, W]);
- otherwise recomputed (`window_activations`): the corpus sequences that hold the windows run
  through the model once, up to the window's last token (the model is causal, so the prefix gives
  the same activations as the harvest's full sequence), and the SAE encodes the window positions.

`centre_codes` gives every feature's code at the centre tokens (a feature's strongest activations),
for token-level co-firing where chunk co-occurrence says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class ContextActs:
    """Per-token activations of one feature on its context windows (0 on empty slots and outside the text).

    top [k, W] (rows like SAEResult.top_tokens[feature]); quantile [bands, m, W]; source: "harvest"
    when they were stored by the harvest, "recomputed" when the model ran on the windows.
    """

    top: np.ndarray
    quantile: np.ndarray
    source: str


@dataclass(frozen=True)
class WindowCodes:
    """acts [n, W]: one feature's activation on each window token; centre_codes [n, d_sae] or None:
    every feature's code at each window's centre token."""

    acts: np.ndarray
    centre_codes: np.ndarray | None


def window_activations(model: Any, sae: Any, corpus_tokens: torch.Tensor | np.ndarray, chunk: np.ndarray,
                       pos: np.ndarray, feature: int, *, left: int, right: int, centre_codes: bool = False,
                       batch_size: int = 8) -> WindowCodes:
    """Activation of `feature` on every token of the windows around (chunk, pos), recomputed.

    chunk / pos [n] (chunk < 0: an empty slot, all zeros). Runs each needed corpus sequence once,
    cut after the furthest window token it holds, in batches of `batch_size` sequences; only the
    window positions are encoded by the SAE.
    """
    chunk = np.asarray(chunk, dtype=np.int64).reshape(-1)
    pos = np.asarray(pos, dtype=np.int64).reshape(-1)
    width = left + 1 + right
    acts = np.zeros((len(chunk), width), dtype=np.float32)
    centres = np.zeros((len(chunk), int(sae.d_sae)), dtype=np.float32) if centre_codes else None
    tokens = torch.as_tensor(corpus_tokens)
    ctx = tokens.shape[1]
    valid = np.flatnonzero(chunk >= 0)
    if len(valid) == 0:
        return WindowCodes(acts, centres)
    rows = np.unique(chunk[valid])
    for start in range(0, len(rows), batch_size):
        batch_rows = rows[start:start + batch_size]
        slots = valid[np.isin(chunk[valid], batch_rows)]
        length = int(min(ctx, pos[slots].max() + right + 1))
        batch = tokens[torch.as_tensor(batch_rows)][:, :length]
        resid = model.run(batch, [sae.hook_name])[sae.hook_name]            # [b, length, d_in]
        row_of = {int(r): i for i, r in enumerate(batch_rows)}
        offsets = np.arange(-left, right + 1)
        where = pos[slots, None] + offsets                                   # [s, W]
        inside = (where >= 0) & (where < length)
        seq = np.array([row_of[int(c)] for c in chunk[slots]])
        x = resid[torch.as_tensor(np.repeat(seq, inside.sum(1))), torch.as_tensor(where[inside])]
        z = sae.encode(x)                                                    # [n_inside, d_sae]
        column = z[:, feature].float().cpu().numpy()
        block = np.zeros(where.shape, dtype=np.float32)
        block[inside] = column
        acts[slots] = block
        if centres is not None:
            flat = np.cumsum(inside.ravel()).reshape(inside.shape) - 1        # index of each window token in z
            centres[slots] = z[torch.as_tensor(flat[:, left])].float().cpu().numpy()
    return WindowCodes(acts, centres)


def feature_context_acts(stats: Any, feature: int, recompute: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> ContextActs:
    """The per-token activations of `feature` on its top and quantile windows.

    stats: core.harvest.SAEResult; when it holds `top_token_acts` / `quantile_token_acts` they are read
    from it; otherwise `recompute(chunk [n], pos [n]) -> acts [n, W]` provides them (for instance
    `lambda c, p: window_activations(model, sae, corpus.tokens, c, p, feature, left=..., right=...).acts`).
    """
    stored_top = getattr(stats, "top_token_acts", None)
    stored_quantile = getattr(stats, "quantile_token_acts", None)
    if stored_top is not None and stored_quantile is not None:
        return ContextActs(np.asarray(stored_top[feature], dtype=np.float32),
                           np.asarray(stored_quantile[feature], dtype=np.float32), "harvest")
    top_chunk = np.asarray(stats.top_chunk[feature]).reshape(-1)
    q_chunk = np.asarray(stats.quantile_chunk[feature])
    chunk = np.concatenate([top_chunk, q_chunk.reshape(-1)])
    pos = np.concatenate([np.asarray(stats.top_pos[feature]).reshape(-1),
                          np.asarray(stats.quantile_pos[feature]).reshape(-1)])
    acts = np.asarray(recompute(chunk, pos), dtype=np.float32)
    k = len(top_chunk)
    return ContextActs(acts[:k], acts[k:].reshape(*q_chunk.shape, acts.shape[-1]), "recomputed")


def token_cofiring(centre_codes: np.ndarray, values: np.ndarray, feature: int, k: int = 10) -> list[tuple[int, int, float]]:
    """Features that fire on the same tokens as `feature`'s strongest activations.

    centre_codes [n, d_sae]: every feature's code at the centre token of `feature`'s top windows;
    values [n]: `feature`'s harvested activation there (0 = empty slot, skipped). Returns up to `k`
    (other feature, tokens where both fire, its mean activation on them), most shared first.
    """
    codes = np.asarray(centre_codes, dtype=np.float32)[np.asarray(values) > 0]
    if len(codes) == 0:
        return []
    fired = codes > 0
    together = fired.sum(0)
    together[feature] = 0
    sums = np.where(fired, codes, 0.0).sum(0)
    candidates = np.flatnonzero(together > 0)
    order = candidates[np.lexsort((-sums[candidates], -together[candidates]))][:k]
    return [(int(j), int(together[j]), float(sums[j] / together[j])) for j in order]
