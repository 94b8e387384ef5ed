"""Per-SAE feature statistics: L1 mass, firing counts, max, histograms, top-k and quantile contexts (with
each context token's activation), L1 snapshots and reconstruction quality, all updated from the sparse codes only."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core.harvest.bins import LogBins
from core.harvest.sampling import EMPTY_KEY, TOP_EMPTY, bottom_per_cell, float_order_key, hash_keys, mix32, to_numpy
from core.harvest.settings import HarvestSettings, snapshot_counts


class FeatureStats:
    """Per-feature statistics of one SAE, plus its reconstruction quality at its site.

    update_sparse(n, rows, feats, vals, x, x_hat, chunk, pos, first_row=...) with the positive codes of the
    n kept tokens as (rows, feats, vals), x / x_hat [n, d_in] (activations and reconstructions), chunk / pos
    [n] (corpus place of each token), and first_row: the retained number of the batch's first row (see
    core.harvest.windows). Between flushes a top-k / quantile merge moves only each slot's order key and its
    source `src`: -1 - the retained row of an entry that entered since the last flush, else the slot it held
    then. `flush(lookup)` gives every slot its value, corpus place and activation window (looked up only for
    the entries still there), so the value / place / window buffers are current after a flush only.
    Everything is vectorised over the non-zero codes; no Python loop runs over features.
    """

    def __init__(self, d_sae: int, d_in: int, settings: HarvestSettings, context: int,
                 device: torch.device | str = "cpu", token_offset: int = 0):
        self.d_sae, self.d_in, self.settings, self.context = d_sae, d_in, settings, context
        # kept tokens of the corpus before this state's first one: L1 snapshots are taken at corpus-wide
        # token counts, so shards merged in corpus order hold exactly the one-pass snapshots
        self.token_offset = token_offset
        s = settings
        self.hist_edges = torch.tensor(s.hist_edges, dtype=torch.float32, device=device)
        self.n_hist = self.hist_edges.numel() + 1  # inner bins + underflow + overflow
        self.band_edges = torch.tensor(s.quantile_edges[:-1], dtype=torch.float32, device=device)
        self.n_bands = self.band_edges.numel()  # inner bands + one band above hist_max
        self._bins = LogBins(self.hist_edges)
        # the quantile band of each histogram bin (band edges are histogram edges by default): no second search
        self._band_of_bin = self._bins.coarser(self.band_edges)
        k, m, nb = s.top_k, s.quantile_samples, self.n_bands
        f64, i64 = torch.float64, torch.int64
        self.n_tokens = 0
        self.l1 = torch.zeros(d_sae, dtype=f64, device=device)
        self.max = torch.zeros(d_sae, dtype=torch.float32, device=device)
        self.hist = torch.zeros(d_sae * self.n_hist, dtype=i64, device=device)
        self.top_val = torch.full((d_sae, k), -1.0, dtype=torch.float32, device=device)
        self.top_key = torch.full((d_sae, k), TOP_EMPTY, dtype=i64, device=device)
        self.top_chunk = torch.full((d_sae, k), -1, dtype=i64, device=device)
        self.top_pos = torch.full((d_sae, k), -1, dtype=i64, device=device)
        self.q_key = torch.full((d_sae * nb, m), EMPTY_KEY, dtype=i64, device=device)
        self.q_val = torch.zeros((d_sae * nb, m), dtype=torch.float32, device=device)
        self.q_chunk = torch.full((d_sae * nb, m), -1, dtype=i64, device=device)
        self.q_pos = torch.full((d_sae * nb, m), -1, dtype=i64, device=device)
        # per-token activations of the feature around each kept context (float16: compact, exact under merges)
        width = s.window_left + 1 + s.window_right
        self.top_acts = torch.zeros((d_sae, k, width), dtype=torch.float16, device=device)
        self.q_acts = torch.zeros((d_sae * nb, m, width), dtype=torch.float16, device=device)
        self.top_src = torch.arange(d_sae * k, device=device).view(d_sae, k)
        self.q_src = torch.arange(d_sae * nb * m, device=device).view(d_sae * nb, m)
        self._moved = False  # whether a merge moved entries since the last flush
        self._feature_hash = mix32(torch.arange(d_sae, dtype=i64, device=device) + 0x165667B1)
        # reconstruction: streaming sums for 1 - SSE/SST, MSE and L0
        self.sse = torch.zeros((), dtype=f64, device=device)
        self.sum_x = torch.zeros(d_in, dtype=f64, device=device)
        self.sum_sq = torch.zeros((), dtype=f64, device=device)
        self.l0_sum = 0
        self.snap_counts = snapshot_counts()
        self.snap_taken: list[int] = []
        self.snap_l1: list[torch.Tensor] = []

    # -- update -----------------------------------------------------------------------
    def update_sparse(self, n: int, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor,
                      x: torch.Tensor, x_hat: torch.Tensor, chunk: torch.Tensor, pos: torch.Tensor,
                      token_hash: torch.Tensor | None = None, *, first_row: int) -> None:
        """The positive codes of n tokens as (rows, feats, vals) in row-major order (`(z > 0).nonzero()`);
        every statistic reads only these nnz entries, never a dense [n, d_sae] code.

        token_hash: hash_keys(settings.seed + 1, chunk, pos) when the caller already has it (it is the
        same for every SAE of a batch); computed here when None. first_row: see the class docstring."""
        if n == 0:
            return
        vals = vals.to(torch.float32)
        vals64 = vals.to(torch.float64)
        self._snapshots(n, rows, feats, vals64)
        self.n_tokens += n
        self.l0_sum += int(rows.numel())
        self.l1.index_add_(0, feats, vals64)
        self.max.scatter_reduce_(0, feats, vals, reduce="amax")
        bins = self._bins.index(vals)  # = bucketize(vals, hist_edges, right=True): 0 under, n_edges over
        self.hist += torch.bincount(torch.add(bins, feats, alpha=self.n_hist), minlength=self.hist.numel())
        self._update_top(rows, feats, vals, chunk, pos, first_row)
        if self.settings.quantile_samples:
            if self._band_of_bin is not None:
                band = self._band_of_bin.index_select(0, bins) - 1
            else:
                band = torch.bucketize(vals, self.band_edges, right=True) - 1
            if token_hash is None:
                token_hash = hash_keys(self.settings.seed + 1, chunk, pos)
            self._update_quantiles(rows, feats, band, token_hash, first_row)
        xd = x.to(torch.float64)  # a no-op when the caller passes float64 (HarvestState: shared with the moments)
        self.sse += torch.sub(xd, x_hat).pow_(2).sum()  # x_hat promoted to float64 elementwise: exact
        self.sum_x += xd.sum(0)
        self.sum_sq += (xd**2).sum()

    def _snapshots(self, n: int, rows, feats, vals64) -> None:
        start = self.token_offset + self.n_tokens
        due = self.snap_counts[(self.snap_counts > start) & (self.snap_counts <= start + n)]
        if due.size == 0:
            return
        # rows ascend, so the entries of the first c tokens are a prefix; each snapshot adds the entries
        # since the previous one to a copy of it (index_add_ adds in entry order: the same sums as one prefix)
        ends = torch.searchsorted(rows, torch.as_tensor(due - start, dtype=rows.dtype, device=rows.device)).tolist()
        partial, done = self.l1, 0
        for count, end in zip(due.tolist(), ends):  # a handful per decade of tokens: log-spaced
            partial = partial.clone().index_add_(0, feats[done:end], vals64[done:end])
            done = end
            self.snap_taken.append(count)
            self.snap_l1.append(partial)

    def _update_top(self, rows, feats, vals, chunk, pos, first_row) -> None:
        k = self.settings.top_k
        # an entry below its feature's current k-th value can never enter (the k-th value only rises);
        # empty slots read -1, so features with room keep every entry. Exact: ties are kept.
        sel = (vals >= self._kth_values().index_select(0, feats)).nonzero(as_tuple=True)[0]
        rows, feats, vals = rows.index_select(0, sel), feats.index_select(0, sel), vals.index_select(0, sel)
        cells, idx, _ = bottom_per_cell(feats, float_order_key(vals), k)   # features holding candidates
        valid = idx >= 0
        safe = idx.clamp(min=0).view(-1)
        cand_val = torch.where(valid, vals.index_select(0, safe).view_as(idx), -1.0)
        cand_row = rows.index_select(0, safe)
        key = self._top_keys(cand_val, chunk.index_select(0, cand_row).view_as(idx),
                             pos.index_select(0, cand_row).view_as(idx))
        # only features whose best candidate beats their current k-th entry can change
        enter = (key[:, 0] < self.top_key[:, -1].index_select(0, cells)).nonzero(as_tuple=True)[0]
        if enter.numel():
            src = torch.where(valid, -1 - first_row - cand_row.view_as(idx), 0)
            self._merge(self.top_key, self.top_src, cells.index_select(0, enter), key.index_select(0, enter),
                        src.index_select(0, enter), k)

    def _kth_values(self) -> torch.Tensor:
        """[d_sae] the value of each feature's k-th entry (-1 while it has room), read from its order key."""
        last = self.top_key[:, -1]
        bits = (0x7FFFFFFF - (last >> 31)).to(torch.int32)  # float_order_key inverted (values are > 0)
        return torch.where(last == TOP_EMPTY, -1.0, bits.view(torch.float32))

    def _top_keys(self, val, chunk, pos) -> torch.Tensor:
        """Order of top-k candidates: larger value first, then earlier corpus place (chunk, pos)
        (place taken modulo 2^31), so equal activations resolve the same way in any shard order."""
        place = (chunk * self.context + pos) & 0x7FFFFFFF
        key = (float_order_key(val.clamp(min=0)) << 31) | place
        return torch.where(val > 0, key, torch.full_like(key, TOP_EMPTY))

    def _merge(self, keys, srcs, rows, their_key, their_src, size) -> None:
        """Keep the `size` smallest keys of rows `rows` of (keys, srcs) [., size] and theirs [len(rows), c].
        Only the order key and the slot's source move; values, places and windows follow at the flush."""
        all_key = torch.cat([keys.index_select(0, rows), their_key], 1)
        keep = torch.topk(all_key, size, dim=1, largest=False).indices  # sorted: best (smallest key) first
        keys.index_copy_(0, rows, all_key.gather(1, keep))
        srcs.index_copy_(0, rows, torch.cat([srcs.index_select(0, rows), their_src], 1).gather(1, keep))
        self._moved = True

    def _update_quantiles(self, rows, feats, band, token_hash, first_row) -> None:
        """band: each entry's quantile band (-1: below hist_min)."""
        m = self.settings.quantile_samples
        # = hash_keys(seed + 1, chunk, pos, feature), with the (chunk, pos) part hashed once per token
        # and the feature part read from a table: the hash is a chain, so the keys are the same bits
        keys = mix32(token_hash.index_select(0, rows) ^ self._feature_hash.index_select(0, feats))
        cells = torch.add(band, feats, alpha=self.n_bands)
        # a key above the largest kept key of a full cell can never enter it (empty slots: EMPTY_KEY);
        # values below hist_min (band -1) belong to no cell. One selection for both tests.
        can_enter = (band >= 0) & (keys <= self.q_key[:, -1].index_select(0, cells.clamp(min=0)))
        sel = can_enter.nonzero(as_tuple=True)[0]
        rows, keys, cells = rows.index_select(0, sel), keys.index_select(0, sel), cells.index_select(0, sel)
        occupied, idx, cand_key = bottom_per_cell(cells, keys, m)   # cells holding candidates
        enter = (cand_key[:, 0] < self.q_key[:, -1].index_select(0, occupied)).nonzero(as_tuple=True)[0]
        if enter.numel() == 0:
            return
        idx = idx.index_select(0, enter)
        cand_row = rows.index_select(0, idx.clamp(min=0).view(-1)).view_as(idx)
        self._merge(self.q_key, self.q_src, occupied.index_select(0, enter), cand_key.index_select(0, enter),
                    torch.where(idx >= 0, -1 - first_row - cand_row, 0), m)

    # -- flush ------------------------------------------------------------------------
    def flush(self, lookup: Any, theirs: FeatureStats | None = None) -> None:
        """Give every slot its value, place and activation window: pending entries (src < 0) from
        lookup(retained rows, features) -> (windows [q, W] float32, chunk [q], pos [q]) (the value is the
        window's centre), the others from the buffers of the last flush (src >= 0), or, after a merge with
        `theirs`, from its buffers (src >= this state's slot count)."""
        if not self._moved and theirs is None:
            return
        k, m, nb, left = self.settings.top_k, self.settings.quantile_samples, self.n_bands, self.settings.window_left
        top = (self.top_val, self.top_chunk, self.top_pos, self.top_acts)
        self.top_val, self.top_chunk, self.top_pos, self.top_acts = _materialize(
            self.top_key == TOP_EMPTY, self.top_src, top, -1.0, k, left, lookup,
            None if theirs is None else (theirs.top_val, theirs.top_chunk, theirs.top_pos, theirs.top_acts))
        q = (self.q_val, self.q_chunk, self.q_pos, self.q_acts)
        self.q_val, self.q_chunk, self.q_pos, self.q_acts = _materialize(
            self.q_key == EMPTY_KEY, self.q_src, q, 0.0, m * nb, left, lookup,
            None if theirs is None else (theirs.q_val, theirs.q_chunk, theirs.q_pos, theirs.q_acts))
        self.top_src = torch.arange(self.top_src.numel(), device=self.top_src.device).view_as(self.top_src)
        self.q_src = torch.arange(self.q_src.numel(), device=self.q_src.device).view_as(self.q_src)
        self._moved = False

    # -- merge ------------------------------------------------------------------------
    def merge(self, other: "FeatureStats") -> "FeatureStats":
        offset_l1 = self.l1.clone()
        # other's counts start at its own offset: 0 when shards did not know theirs (then appended as if
        # read after this one), the end of this state when they did (then already corpus-wide)
        shift = self.token_offset + self.n_tokens - other.token_offset
        for count, l1 in zip(other.snap_taken, other.snap_l1):
            self.snap_taken.append(shift + count)
            self.snap_l1.append(offset_l1 + l1)
        self.n_tokens += other.n_tokens
        self.l0_sum += other.l0_sum
        self.l1 += other.l1
        self.max = torch.maximum(self.max, other.max)
        self.hist += other.hist
        # both flushed (HarvestState.merge): every src names a slot of its own state's buffers;
        # theirs are numbered after ours, and one flush reads the payloads of both
        if self._moved or other._moved:
            raise RuntimeError("FeatureStats.merge: flush both states first (HarvestState.merge does)")
        rows = (other.top_key[:, 0] < self.top_key[:, -1]).nonzero(as_tuple=True)[0]
        if rows.numel():
            self._merge(self.top_key, self.top_src, rows, other.top_key[rows],
                        other.top_src[rows] + self.top_src.numel(), self.settings.top_k)
        cells = (other.q_key[:, 0] < self.q_key[:, -1]).nonzero(as_tuple=True)[0]
        if self.settings.quantile_samples and cells.numel():
            self._merge(self.q_key, self.q_src, cells, other.q_key[cells], other.q_src[cells] + self.q_src.numel(),
                        self.settings.quantile_samples)
        if self._moved:
            self.flush(None, other)
        self.sse += other.sse
        self.sum_x += other.sum_x
        self.sum_sq += other.sum_sq
        return self

    # -- result -----------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        """Plain numpy arrays (shapes in the HarvestResult docstring) and reconstruction scalars."""
        if self._moved:
            raise RuntimeError("FeatureStats.result: flush first (finalize does)")
        n, d_sae, nb, m = self.n_tokens, self.d_sae, self.n_bands, self.settings.quantile_samples
        sst = self.sum_sq - (self.sum_x**2).sum() / n if n else torch.tensor(float("nan"))
        empty = self.top_val < 0
        q_empty = self.q_key == EMPTY_KEY
        snaps = (
            torch.stack(self.snap_l1) if self.snap_l1 else torch.zeros(0, d_sae, dtype=torch.float64)
        )
        return {
            "n_tokens": n,
            "l1_mass": to_numpy(self.l1),
            "fire_count": to_numpy(self.hist.view(d_sae, self.n_hist).sum(1)),  # every positive code has a bin
            "max_act": to_numpy(self.max),
            "hist": to_numpy(self.hist.view(d_sae, self.n_hist)),
            "top_values": to_numpy(torch.where(empty, 0.0, self.top_val)),
            "top_chunk": to_numpy(self.top_chunk),
            "top_pos": to_numpy(self.top_pos),
            "top_acts": to_numpy(torch.where(empty[..., None], 0.0, self.top_acts.float()).to(torch.float16)),
            "quantile_values": to_numpy(torch.where(q_empty, 0.0, self.q_val).view(d_sae, nb, m)),
            "quantile_chunk": to_numpy(self.q_chunk.view(d_sae, nb, m)),
            "quantile_pos": to_numpy(self.q_pos.view(d_sae, nb, m)),
            "quantile_acts": to_numpy(self.q_acts.view(d_sae, nb, m, -1)),
            "l1_snapshot_tokens": np.asarray(self.snap_taken, dtype=np.int64),
            "l1_snapshots": to_numpy(snaps),
            "explained_variance": float(1.0 - self.sse / sst) if n else float("nan"),
            "mse": float(self.sse / (n * self.d_in)) if n else float("nan"),
            "l0": float(self.l0_sum / n) if n else float("nan"),
        }


def _materialize(empty: torch.Tensor, src: torch.Tensor, payload: tuple, empty_val: float, per_feature: int,
                 left: int, lookup: Any, theirs: tuple | None) -> tuple:
    """payload (val, chunk, pos, acts) of slots [...] (acts [..., W]) rebuilt from src: slot src of the payload
    as it was (then theirs, numbered after it), or, for src < 0, looked up for retained row -1 - src and
    feature slot // per_feature. Empty slots hold (empty_val, -1, -1) as they always did."""
    flat_src = src.reshape(-1)
    safe = flat_src.clamp(min=0)
    out = []
    for i, mine in enumerate(payload):
        pool = mine.reshape(-1, *mine.shape[src.dim():])
        if theirs is not None:
            pool = torch.cat([pool, theirs[i].reshape(-1, *mine.shape[src.dim():])])
        out.append(pool.index_select(0, safe))
    val, chunk, pos, acts = out
    pending = (flat_src < 0).nonzero(as_tuple=True)[0]
    if pending.numel():
        windows, w_chunk, w_pos = lookup(-1 - flat_src.index_select(0, pending), pending // per_feature)
        val.index_copy_(0, pending, windows[:, left].contiguous())
        chunk.index_copy_(0, pending, w_chunk)
        pos.index_copy_(0, pending, w_pos)
        acts.index_copy_(0, pending, windows.to(acts.dtype))
    vacant = empty.reshape(-1).nonzero(as_tuple=True)[0]
    val.index_fill_(0, vacant, empty_val)
    chunk.index_fill_(0, vacant, -1)
    pos.index_fill_(0, vacant, -1)
    return tuple(t.view(p.shape) for t, p in zip(out, payload))
