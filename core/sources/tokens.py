"""The one tokenization path: texts -> BOS-led, right-padded token batches.

Every caller that turns text into a batch (LoadedModel.to_tokens, the organism's trainer, its
evaluation and structure report) goes through `tokenize_batch`, so BOS and padding are decided once:
BOS first when asked and the tokenizer has one, each row cut to `n_ctx`, right padding with the pad
id (a causal model then sees every real token at the position it has when run alone).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def token_rows(tokenizer: Any, texts: Sequence[str], *, bos_token_id: int | None, n_ctx: int,
               prepend_bos: bool = True) -> list[list[int]]:
    """Token ids of each text (no special tokens but the BOS we add), cut to n_ctx."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    head = [bos_token_id] if prepend_bos and bos_token_id is not None else []
    return [(head + list(ids))[:n_ctx] for ids in encoded]


def pad_rows(rows: Sequence[Sequence[int]], pad_token_id: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """([batch, width] long tensor right-padded with pad_token_id, [batch] lengths); width defaults to the
    longest row (at least 1)."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = width if width is not None else max(int(lengths.max()) if len(rows) else 0, 1)
    out = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    for i, row in enumerate(rows):
        row = list(row)[:width]
        if row:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out, lengths.clamp(max=width)


def tokenize_batch(tokenizer: Any, texts: Sequence[str], *, bos_token_id: int | None, pad_token_id: int,
                   n_ctx: int, prepend_bos: bool = True, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [batch, width], lengths [batch]) of `texts`: see the module docstring."""
    rows = token_rows(tokenizer, texts, bos_token_id=bos_token_id, n_ctx=n_ctx, prepend_bos=prepend_bos)
    return pad_rows(rows, pad_token_id, width)
