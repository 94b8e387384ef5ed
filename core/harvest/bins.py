"""Log-spaced bins without a binary search per value: the same indices as torch.bucketize, found from log2."""

from __future__ import annotations

import torch


class LogBins:
    """index(values) == torch.bucketize(values, edges, right=True) (the number of edges <= each value) for
    ascending, roughly log-spaced float32 edges and values > 0.

    log2 puts each value within one bin of its index (float32 rounding is ~1e-5 of a bin); one comparison
    with the neighbouring edges on each side then makes the index exact, and a second round checks it
    (a value the estimate misses by more, which log-spaced edges never produce, falls back to bucketize).
    """

    def __init__(self, edges: torch.Tensor):
        self.edges = edges
        n = edges.numel()
        self.n = n
        lo, hi = float(torch.log2(edges[0])), float(torch.log2(edges[-1]))
        self.scale = (n - 1) / (hi - lo) if n > 1 and hi > lo else 0.0
        self.offset = 1.0 - lo * self.scale
        nan = torch.tensor([float("nan")], dtype=edges.dtype, device=edges.device)
        # below[i] = the largest edge <= a value of index i (-inf for 0); above[i] = the smallest edge > it
        # (NaN past the last edge: no comparison is true there, so +inf stays in the last bin)
        self.below = torch.cat([torch.tensor([-float("inf")], dtype=edges.dtype, device=edges.device), edges])
        self.above = torch.cat([edges, nan])

    def index(self, values: torch.Tensor) -> torch.Tensor:
        if values.numel() == 0 or self.scale == 0.0:
            return torch.bucketize(values, self.edges, right=True)
        est = torch.log2(values).mul_(self.scale).add_(self.offset).floor_().clamp_(0, self.n)
        index = est.to(torch.int64)
        for _ in range(2):
            up = self.above.index_select(0, index) <= values
            down = self.below.index_select(0, index) > values
            if not bool((up | down).any()):
                return index
            index = index + up.to(torch.int64) - down.to(torch.int64)
        return torch.bucketize(values, self.edges, right=True)

    def coarser(self, coarse_edges: torch.Tensor) -> torch.Tensor | None:
        """table [n + 1] with table[index(v)] == bucketize(v, coarse_edges, right=True) for every v, when
        every coarse edge is one of these edges (then each bin lies inside one coarse bin); else None."""
        if not bool(torch.isin(coarse_edges, self.edges).all()):
            return None
        return torch.bucketize(self.below, coarse_edges, right=True)
