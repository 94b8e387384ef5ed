"""A feature's activation on every token around its top activations, recomputed from the corpus.

The harvest stores, for each top-k and quantile context, the feature's activation on every token of
its window (`SAEResult.top_acts` [d_sae, k, W], `quantile_contexts(feature).acts`): the pages shade
contexts from those. What it cannot store is every *other* feature's code at those tokens. For a
feature that fires in every chunk, chunk co-occurrence says nothing (phi is 0/0), and the features
that fire on the same tokens as its strongest activations are what a researcher wants instead:
`window_activations` reruns the corpus sequences that hold the windows through the model, up to the
window's last token (the model is causal, so the prefix gives the harvest's activations), and the SAE
encodes the window positions; `token_cofiring` ranks the other features on the centre tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


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
