"""Activation windows: a feature's activation on the tokens around a context, read from one batch's sparse codes."""

from __future__ import annotations

import torch


class WindowLookup:
    """windows(rows [q], feats [q]) -> [q, left + 1 + right] float32: feature feats[i]'s activation on the tokens
    around kept token rows[i], within its own sequence.

    Built once per batch and SAE from the batch's positive codes (rows, feats, vals) in row-major order
    (rows ascending, features ascending within a row), or from the dense code z when the encoder made one.
    Positions outside the sequence and tokens the harvest did not encode (BOS when excluded) read 0.
    Every context lies inside the batch that holds its sequence, so no value is ever missing.
    """

    def __init__(self, keep_idx: torch.Tensor, n_positions: int, context: int, left: int, right: int,
                 rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor, d_sae: int,
                 z: torch.Tensor | None = None):
        device = keep_idx.device
        self.keep_idx, self.context, self.d_sae = keep_idx, context, d_sae
        self.offsets = torch.arange(-left, right + 1, device=device)
        self.row_of_flat = torch.full((n_positions,), -1, dtype=torch.int64, device=device)
        self.row_of_flat[keep_idx] = torch.arange(keep_idx.numel(), device=device)
        self.rows, self.feats, self.vals, self.z = rows, feats, vals, z
        self.n_rows = int(keep_idx.numel())
        self._codes: torch.Tensor | None = None  # rows * d_sae + feats, ascending (built on first use)

    def __call__(self, q_rows: torch.Tensor, q_feats: torch.Tensor) -> torch.Tensor:
        flat = self.keep_idx[q_rows]
        pos = flat % self.context
        where = pos[:, None] + self.offsets
        inside = (where >= 0) & (where < self.context)
        other = self.row_of_flat[(flat - pos)[:, None] + where.clamp(0, self.context - 1)]
        other = torch.where(inside, other, -1)
        found = other >= 0
        feats = q_feats[:, None].expand_as(other)
        cells = self.n_rows * self.d_sae
        if self.z is None and cells <= 1 << 23 and other.numel() * 32 > cells // 8:
            # enough lookups into a small batch code (measured on the organism: from ~400 contexts of 21 tokens
            # into 2,048 x 1,024 codes; the first batches fill every feature's buffers): one memset and one
            # scatter to a dense [n, d_sae] code cost less than the binary searches, and make each lookup a gather
            self.z = torch.zeros(self.n_rows, self.d_sae, dtype=torch.float32, device=self.vals.device)
            self.z.view(-1)[self.rows * self.d_sae + self.feats] = self.vals.to(torch.float32)
        if self.z is not None:
            values = self.z.reshape(-1)[other.clamp(min=0) * self.d_sae + feats].clamp(min=0)   # 1-D: one gather
        elif self.vals.numel() == 0:
            return torch.zeros(other.shape, dtype=torch.float32, device=other.device)
        else:
            if self._codes is None:
                self._codes = self.rows * self.d_sae + self.feats
            query = other.clamp(min=0) * self.d_sae + feats
            at = torch.searchsorted(self._codes, query).clamp(max=self._codes.numel() - 1)
            values = torch.where(self._codes[at] == query, self.vals[at], 0.0)
        return torch.where(found, values.to(torch.float32), 0.0)
