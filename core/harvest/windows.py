"""Activation windows: a feature's activation on the tokens around a context, read from retained sparse codes.

Looking windows up when a context enters a top-k or quantile buffer would pay for every entry that a
later batch evicts (in the first batches every feature's buffers fill, and most of those entries leave
again). So the harvest keeps the sparse codes of the last few batches (`RetainedCodes`), names a
context that enters a buffer by its retained row, and looks windows up only for the entries still in
the buffers when it flushes: every `FLUSH_BATCHES` batches, once the retained codes of all SAEs hold
`FLUSH_ENTRIES` entries, and before a state is merged or finalized. Memory: at most FLUSH_BATCHES
batches of sparse codes (rows, features, values: 20 bytes per non-zero code) per SAE, plus one dense
scratch block of at most SCRATCH_FLOATS floats while a flush runs; the numbers equal an immediate lookup.
"""

from __future__ import annotations

import torch

FLUSH_BATCHES = 8  # batches whose codes are retained before the windows of their surviving contexts are read
FLUSH_ENTRIES = 1 << 22  # ... or fewer: the retained codes of every SAE of a state together hold at most ~this many
SCRATCH_FLOATS = 1 << 23  # the largest dense [d_sae, sequences, left + context + right] block of one lookup (32 MB)


class RetainedCodes:
    """The positive codes (rows, feats, vals) of one SAE for the batches since the last flush.

    Rows are numbered across the retained batches (the first batch's kept rows, then the next
    batch's ...), so a context waiting for its window is one integer. `windows(rows, feats)` ->
    [q, left + 1 + right] float32: feature feats[i]'s activation on the tokens around retained row
    rows[i], within its own sequence; positions outside the sequence and tokens the harvest did not
    encode (BOS when excluded) read 0. Every context lies inside the batch that holds its sequence.
    """

    def __init__(self, d_sae: int, context: int, left: int, right: int):
        self.d_sae, self.context, self.left, self.right = d_sae, context, left, right
        self.batches: list[tuple[int, torch.Tensor, int, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.places: list[tuple[torch.Tensor, torch.Tensor]] = []  # per batch: (chunk, pos) of each kept row
        self.n_rows = 0
        self.n_entries = 0

    def add(self, keep_idx: torch.Tensor, n_positions: int, rows: torch.Tensor, feats: torch.Tensor,
            vals: torch.Tensor, chunk: torch.Tensor, pos: torch.Tensor) -> int:
        """Retain one batch: keep_idx [n] the flat position (sequence * context + pos) of each kept row,
        codes in row-major order, chunk / pos [n] the corpus place of each kept row (tensors are kept by
        reference, not copied). Returns the retained number of the batch's first row."""
        first = self.n_rows
        self.batches.append((first, keep_idx, n_positions, rows, feats, vals))
        self.places.append((chunk, pos))
        self.n_rows += int(keep_idx.numel())
        self.n_entries += int(rows.numel())
        return first

    def clear(self) -> None:
        self.batches, self.places, self.n_rows, self.n_entries = [], [], 0, 0

    def lookup(self, rows: torch.Tensor, feats: torch.Tensor, scratch: dict | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(windows(rows, feats) [q, W], chunk [q], pos [q]) of retained rows."""
        chunk = torch.cat([c for c, _ in self.places]) if len(self.places) > 1 else self.places[0][0]
        pos = torch.cat([p for _, p in self.places]) if len(self.places) > 1 else self.places[0][1]
        return self.windows(rows, feats, scratch), chunk.index_select(0, rows), pos.index_select(0, rows)

    def windows(self, rows: torch.Tensor, feats: torch.Tensor, scratch: dict | None = None) -> torch.Tensor:
        """scratch: a dict that keeps the zeroed dense block between calls (one flush of several SAEs)."""
        width = self.left + 1 + self.right
        out = torch.zeros((rows.numel(), width), dtype=torch.float32, device=rows.device)
        if rows.numel() == 0 or not self.batches:
            return out
        firsts = torch.tensor([b[0] for b in self.batches], dtype=rows.dtype, device=rows.device)
        which = torch.searchsorted(firsts, rows, right=True) - 1
        single = len(self.batches) == 1
        for i, (first, keep_idx, n_positions, c_rows, c_feats, c_vals) in enumerate(self.batches):
            sel = None if single else (which == i).nonzero(as_tuple=True)[0]
            if sel is not None and sel.numel() == 0:
                continue
            q_rows, q_feats = (rows, feats) if sel is None else (rows[sel], feats[sel])
            found = self._batch_windows(keep_idx, n_positions, c_rows, c_feats, c_vals, q_rows - first, q_feats,
                                        {} if scratch is None else scratch)
            if sel is None:
                out = found
            else:
                out[sel] = found
        return out

    def _batch_windows(self, keep_idx, n_positions, c_rows, c_feats, c_vals, q_rows, q_feats, cache) -> torch.Tensor:
        """Windows of one batch: its codes scattered into a zeroed dense block laid out [sequence, feature,
        left pad + context + right pad], so that each window is `width` adjacent floats (one gather), never
        reaching into another sequence, and the row-major codes write one sequence's region at a time.
        Blocks of whole sequences when [all sequences, d_sae] is too large."""
        ctx, left, width = self.context, self.left, self.left + 1 + self.right
        stride = ctx + left + self.right  # one padded sequence
        n_seq = n_positions // ctx
        per_block = max(1, min(n_seq, SCRATCH_FLOATS // (self.d_sae * stride)))
        seq_span = self.d_sae * stride  # one sequence's region of the block
        # each kept row's padded place in its sequence's region (feature 0): a table of n rows, read by index
        padded = (keep_idx // ctx) * seq_span + left + keep_idx % ctx
        size = self.d_sae * per_block * stride + width
        scratch = cache.get(c_vals.device)
        if scratch is None or scratch.numel() < size:
            scratch = cache[c_vals.device] = torch.zeros(size, dtype=torch.float32, device=c_vals.device)
        view = scratch.as_strided((scratch.numel() - width + 1, width), (1, 1))
        if per_block >= n_seq:
            return self._block(scratch, view, stride, padded, c_rows, c_feats, c_vals, q_rows, q_feats)
        out = torch.zeros((q_rows.numel(), width), dtype=torch.float32, device=c_vals.device)
        q_seq = keep_idx.index_select(0, q_rows) // ctx
        firsts = torch.arange(0, n_seq + per_block, per_block, device=keep_idx.device) * ctx
        bounds = torch.searchsorted(c_rows, torch.searchsorted(keep_idx, firsts)).tolist()
        for block, s0 in enumerate(range(0, n_seq, per_block)):
            sel = ((q_seq >= s0) & (q_seq < s0 + per_block)).nonzero(as_tuple=True)[0]
            if sel.numel() == 0:
                continue
            lo, hi = bounds[block], bounds[block + 1]
            out[sel] = self._block(scratch, view, stride, padded - s0 * seq_span, c_rows[lo:hi], c_feats[lo:hi],
                                   c_vals[lo:hi], q_rows[sel], q_feats[sel])
        return out

    def _block(self, scratch, view, stride, padded, c_rows, c_feats, c_vals, q_rows, q_feats) -> torch.Tensor:
        where = torch.add(padded.index_select(0, c_rows), c_feats, alpha=stride)
        scratch.scatter_(0, where, c_vals.to(torch.float32))
        # the window of the token at padded place p starts at p - left
        found = view.index_select(0, torch.add(padded.index_select(0, q_rows) - self.left, q_feats, alpha=stride))
        scratch.scatter_(0, where, 0.0)  # the block stays zero for the next one
        return found
