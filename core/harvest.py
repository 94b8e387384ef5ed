"""The harvest: one streaming pass over a corpus computes every statistic the views need.

For each batch of corpus sequences the model runs ONCE with hooks on every needed site, each SAE
encodes (and decodes) its site, and small mergeable statistics absorb the batch:

per site (hook name)
    ActivationMoments   count, mean, covariance; float64, Chan et al. (1979) pairwise update/merge
    Reservoir           a uniform sample of token activations (bottom-k of hashed random keys)
per SAE
    FeatureStats        L1 mass, firing count, max, log-spaced histogram, top-k contexts,
                        contexts sampled from lower activation bands, L1-mass snapshots,
                        reconstruction quality (explained variance, MSE, L0)
    Cooccurrence        per chunk of tokens f = (Z[chunk] > threshold).any(0); C += f.T @ f

Every statistic has an update (`update` / `update_sparse`), `merge(other)` and `result()`. Randomness never comes from a
stateful generator: sampling keys are a hash of (seed, corpus chunk index, position[, feature]),
so a harvest split into shards and merged equals one pass over the whole (exactly for counts, max,
histograms, top-k, reservoirs and co-occurrence; to float tolerance for moments and sums).

Choices (documented here because the views and metrics depend on them):
- BOS positions (token == model.bos_token_id) are excluded from every token statistic when
  `exclude_bos` is set (the default): they are attention sinks whose norms dominate means,
  covariances and top-k lists.
- A feature "fires" where its activation is > 0 (SAELens encoders return non-negative codes);
  L1 mass is the sum of the positive activations.
- Histogram bins: `hist_bins_per_decade` log-spaced bins on [hist_min, hist_max] (default
  1e-3..1e3, 10 per decade -> 60 bins) plus an underflow column (0 < a < hist_min, index 0) and an
  overflow column (a >= hist_max, last index): `hist` is [d_sae, n_bins + 2], and each row sums to
  the feature's firing count. `hist_edges` holds the n_bins + 1 inner edges.
- Quantile contexts (one pass, no second pass over the corpus): activations are split into coarse
  absolute log bands (`quantile_bands_per_decade`, default 2 per decade on [hist_min, hist_max],
  plus one band above hist_max); for every (feature, band) a uniform sample of
  `quantile_samples` contexts is kept (bottom-k of hashed keys, exact under merge). A view shows, for
  a feature with maximum M, the bands below M: contexts at about M/3, M/10, M/30 ... The band edges
  are stored as `quantile_edges` ([n_bands + 1], last edge = inf).
- Co-occurrence chunks: when the corpus context is >= `cooc_chunk_tokens`, each sequence is cut
  into windows of cooc_chunk_tokens positions; when it is shorter, cooc_chunk_tokens // context
  consecutive corpus sequences form one chunk (the corpus is a packed stream). Chunks that span
  batch (or shard) boundaries are held open until all their sequences are seen; the last
  incomplete chunk is closed by result(). Counts are dense int32 [d_sae, d_sae] up to
  `cooc_max_features` features; above that a seeded random subset of cooc_max_features features
  (sorted ids in `cooc_features`) is tracked: a sampled path whose phi coefficients are exact for
  the pairs it holds.
- L1-mass snapshots: the cumulative L1 mass vector is recorded when the number of harvested tokens
  reaches each of the log-spaced counts in `snapshot_counts` (exactly at that token, not at batch
  ends), so F (effective features, METHODS.md §1) can be plotted against sample count. A merge
  appends the other shard's snapshots offset by this shard's totals (as if read after it).
- Covariance is the population covariance (divide by n), as in METHODS.md §4 (Hc.T @ Hc / n).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from core.errors import AtlasError

ProgressFn = Callable[[int, int, float], None]

_MASK32 = 0xFFFFFFFF
_EMPTY_KEY = 1 << 62  # larger than any (32-bit) sampling key
_TOP_EMPTY = (1 << 63) - 1  # larger than any top-k order key (< 2^62)


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HarvestSettings:
    """Everything that changes a harvest's numbers (part of the cache key)."""

    batch_size: int = 16  # corpus sequences per forward pass
    max_tokens: int | None = None  # read whole sequences until this many tokens (None: all)
    sites: tuple[str, ...] | None = None  # moment/reservoir sites; None: every resid_post + SAE hooks
    reservoir_size: int = 2048
    top_k: int = 16
    window_left: int = 16  # context tokens kept left of a top-k / quantile position
    window_right: int = 4
    hist_min: float = 1e-3
    hist_max: float = 1e3
    hist_bins_per_decade: int = 10
    quantile_bands_per_decade: int = 2
    quantile_samples: int = 4
    cooc_chunk_tokens: int = 256
    cooc_threshold: float = 0.0
    cooc_max_features: int = 16384
    exclude_bos: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, "batch size must be at least 1"),
            (self.max_tokens is None or self.max_tokens >= 1, "max tokens must be at least 1"),
            (self.reservoir_size >= 0, "reservoir size must be >= 0"),
            (self.top_k >= 1, "top-k must be at least 1"),
            (self.window_left >= 0 and self.window_right >= 0, "context windows must be >= 0"),
            (0 < self.hist_min < self.hist_max, "histogram range must satisfy 0 < min < max"),
            (self.hist_bins_per_decade >= 1, "histogram needs >= 1 bin per decade"),
            (self.quantile_bands_per_decade >= 1, "quantile bands need >= 1 band per decade"),
            (self.quantile_samples >= 0, "quantile samples must be >= 0"),
            (self.cooc_chunk_tokens >= 1, "co-occurrence chunk must be >= 1 token"),
            (self.cooc_max_features >= 1, "co-occurrence needs >= 1 feature"),
            (self.cooc_threshold >= 0, "co-occurrence threshold must be >= 0 (SAE codes are non-negative)"),
        ]
        for ok, message in checks:
            if not ok:
                raise AtlasError(f"Harvest settings: {message}.")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sites"] = list(self.sites) if self.sites is not None else None
        return d

    @property
    def hist_edges(self) -> np.ndarray:
        return _log_edges(self.hist_min, self.hist_max, self.hist_bins_per_decade)

    @property
    def quantile_edges(self) -> np.ndarray:
        inner = _log_edges(self.hist_min, self.hist_max, self.quantile_bands_per_decade)
        return np.concatenate([inner, [np.inf]])


def _log_edges(lo: float, hi: float, per_decade: int) -> np.ndarray:
    n = max(1, int(round(math.log10(hi / lo) * per_decade)))
    return np.logspace(math.log10(lo), math.log10(hi), n + 1)


def snapshot_counts(limit: int = 10**13) -> np.ndarray:
    """Token counts at which cumulative L1 mass is recorded: 1, 2, 5 x 10^j (j >= 1) and 16, 32 ..."""
    counts = {c * 10**j for j in range(1, 14) for c in (1, 2, 5)}
    return np.array(sorted(c for c in counts if c <= limit), dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# hashing: deterministic uniform keys from (seed, chunk, position, ...)
# ---------------------------------------------------------------------------------------------
def _mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 integer hash on int64 tensors holding values in [0, 2^32).

    int64 products wrap in two's complement, so masking keeps the exact low 32 bits.
    """
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def hash_keys(seed: int, *parts: torch.Tensor) -> torch.Tensor:
    """A 32-bit key per element, uniform and deterministic in (seed, parts...)."""
    h = _mix32(torch.as_tensor(seed * 0x9E3779B9 + 0x632BE5AB, dtype=torch.int64))
    for part in parts:
        h = _mix32(h ^ _mix32(part.to(torch.int64) + 0x165667B1))
    return h


def _bottom_per_cell(cells: torch.Tensor, keys: torch.Tensor, n_cells: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For entries labelled by cell, the (up to) m entries with the smallest 32-bit key per cell.

    Returns (entry index [n_cells, m] with -1 for empty slots, key [n_cells, m] with _EMPTY_KEY).
    One sort of a composite int64 (cell << 32 | key); no Python loop over cells.
    """
    device = cells.device
    index = torch.full((n_cells, m), -1, dtype=torch.int64, device=device)
    out_keys = torch.full((n_cells, m), _EMPTY_KEY, dtype=torch.int64, device=device)
    if cells.numel() == 0 or m == 0:
        return index, out_keys
    composite = (cells.to(torch.int64) << 32) | keys
    order = torch.sort(composite, stable=True).indices  # stable: equal keys keep corpus order
    sorted_cells = cells[order]
    first = torch.searchsorted(sorted_cells, sorted_cells)  # first position of each entry's cell
    rank = torch.arange(order.numel(), device=device) - first
    keep = rank < m
    rows, slots, kept = sorted_cells[keep], rank[keep], order[keep]
    index[rows, slots] = kept
    out_keys[rows, slots] = keys[kept]
    return index, out_keys


def _float_order_key(values: torch.Tensor) -> torch.Tensor:
    """32-bit keys that sort positive float32 values descending (smaller key = larger value)."""
    bits = values.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return (0x7FFFFFFF - bits) & _MASK32


def _t2np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# per-site statistics
# ---------------------------------------------------------------------------------------------
class ActivationMoments:
    """Count, mean and covariance of activation vectors, accumulated in float64.

    Update and merge use the pairwise formula of Chan, Golub & LeVeque (1979):
        delta = mean_b - mean_a; n = n_a + n_b
        mean = mean_a + delta * n_b / n
        M2 = M2_a + M2_b + outer(delta, delta) * n_a * n_b / n
    where M2 = sum (x - mean)(x - mean)^T; each batch's M2 is computed around the batch mean
    (numerically stable, no catastrophic cancellation of raw second moments).
    """

    def __init__(self, d: int, device: torch.device | str = "cpu"):
        self.d = d
        self.n = 0
        self.mean = torch.zeros(d, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(d, d, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        """x: [n, d] activations of the kept (non-BOS) tokens."""
        if x.shape[0] == 0:
            return
        xb = x.to(torch.float64)
        mean_b = xb.mean(0)
        centred = xb - mean_b
        self._combine(xb.shape[0], mean_b, centred.T @ centred)

    def _combine(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n_a = self.n
        n = n_a + n_b
        delta = mean_b.to(self.mean.device) - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b.to(self.m2.device) + torch.outer(delta, delta) * (n_a * n_b / n)
        self.n = n

    def merge(self, other: "ActivationMoments") -> "ActivationMoments":
        if other.n:
            self._combine(other.n, other.mean, other.m2)
        return self

    def result(self) -> dict[str, np.ndarray]:
        """{"n": int, "mean": [d] f64, "cov": [d, d] f64 (population covariance, / n)}."""
        cov = self.m2 / self.n if self.n else torch.full_like(self.m2, float("nan"))
        return {"n": np.int64(self.n), "mean": _t2np(self.mean), "cov": _t2np(cov)}


class Reservoir:
    """A uniform sample without replacement of `size` token activations.

    Each token gets the key hash(seed, chunk, position) and the reservoir keeps the `size` smallest
    keys (bottom-k sampling, equivalent to reservoir sampling). Keys depend only on the token's
    place in the corpus, so all sites sample the same tokens and merges are exact.
    """

    def __init__(self, d: int, size: int, seed: int = 0, device: torch.device | str = "cpu"):
        self.d, self.size, self.seed = d, size, seed
        self.keys = torch.empty(0, dtype=torch.int64, device=device)
        self.data = torch.empty(0, d, dtype=torch.float32, device=device)
        self.chunk = torch.empty(0, dtype=torch.int64, device=device)
        self.pos = torch.empty(0, dtype=torch.int64, device=device)
        self.token = torch.empty(0, dtype=torch.int64, device=device)

    def update(self, x: torch.Tensor, chunk: torch.Tensor, pos: torch.Tensor, token: torch.Tensor,
               keys: torch.Tensor | None = None) -> None:
        if self.size == 0 or x.shape[0] == 0:
            return
        if keys is None:
            keys = hash_keys(self.seed, chunk, pos)
        self._absorb(keys, x.to(torch.float32), chunk, pos, token)

    def _absorb(self, keys, data, chunk, pos, token) -> None:
        keys = torch.cat([self.keys, keys.to(self.keys.device)])
        data = torch.cat([self.data, data.to(self.data.device)])
        chunk = torch.cat([self.chunk, chunk.to(self.chunk.device)])
        pos = torch.cat([self.pos, pos.to(self.pos.device)])
        token = torch.cat([self.token, token.to(self.token.device)])
        if keys.numel() > self.size:
            # ties (32-bit keys) broken by corpus place, so the choice is order-independent
            composite = (keys << 24) | ((chunk * 4099 + pos) & 0xFFFFFF)
            keep = torch.topk(composite, self.size, largest=False, sorted=False).indices
            keys, data, chunk, pos, token = keys[keep], data[keep], chunk[keep], pos[keep], token[keep]
        self.keys, self.data, self.chunk, self.pos, self.token = keys, data, chunk, pos, token

    def merge(self, other: "Reservoir") -> "Reservoir":
        if other.keys.numel():
            self._absorb(other.keys, other.data, other.chunk, other.pos, other.token)
        return self

    def result(self) -> dict[str, np.ndarray]:
        """Samples sorted by corpus place: data [k, d] f32, chunk/pos/token [k] int64."""
        order = torch.argsort(self.chunk * (1 << 20) + self.pos)
        return {
            "reservoir": _t2np(self.data[order]),
            "reservoir_chunk": _t2np(self.chunk[order]),
            "reservoir_pos": _t2np(self.pos[order]),
            "reservoir_token": _t2np(self.token[order]),
        }


# ---------------------------------------------------------------------------------------------
# per-SAE statistics
# ---------------------------------------------------------------------------------------------
class FeatureStats:
    """Per-feature statistics of one SAE, plus its reconstruction quality at its site.

    update_sparse(n, rows, feats, vals, x, x_hat, chunk, pos) with the positive codes of the n kept
    tokens as (rows, feats, vals), x / x_hat [n, d_in] (activations and reconstructions), chunk / pos [n]
    (corpus place of each token). Everything is vectorised over the non-zero codes; no Python loop
    runs over features.
    """

    def __init__(self, d_sae: int, d_in: int, settings: HarvestSettings, context: int,
                 device: torch.device | str = "cpu"):
        self.d_sae, self.d_in, self.settings, self.context = d_sae, d_in, settings, context
        s = settings
        self.hist_edges = torch.tensor(s.hist_edges, dtype=torch.float32, device=device)
        self.n_hist = self.hist_edges.numel() + 1  # inner bins + underflow + overflow
        self.band_edges = torch.tensor(s.quantile_edges[:-1], dtype=torch.float32, device=device)
        self.n_bands = self.band_edges.numel()  # inner bands + one band above hist_max
        k, m, nb = s.top_k, s.quantile_samples, self.n_bands
        f64, i64 = torch.float64, torch.int64
        self.n_tokens = 0
        self.l1 = torch.zeros(d_sae, dtype=f64, device=device)
        self.fire = torch.zeros(d_sae, dtype=i64, device=device)
        self.max = torch.zeros(d_sae, dtype=torch.float32, device=device)
        self.hist = torch.zeros(d_sae * self.n_hist, dtype=i64, device=device)
        self.top_val = torch.full((d_sae, k), -1.0, dtype=torch.float32, device=device)
        self.top_key = torch.full((d_sae, k), _TOP_EMPTY, dtype=i64, device=device)
        self.top_chunk = torch.full((d_sae, k), -1, dtype=i64, device=device)
        self.top_pos = torch.full((d_sae, k), -1, dtype=i64, device=device)
        self.q_key = torch.full((d_sae * nb, m), _EMPTY_KEY, dtype=i64, device=device)
        self.q_val = torch.zeros((d_sae * nb, m), dtype=torch.float32, device=device)
        self.q_chunk = torch.full((d_sae * nb, m), -1, dtype=i64, device=device)
        self.q_pos = torch.full((d_sae * nb, m), -1, dtype=i64, device=device)
        self._feature_hash = _mix32(torch.arange(d_sae, dtype=i64, device=device) + 0x165667B1)
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
                      token_hash: torch.Tensor | None = None) -> None:
        """The positive codes of n tokens as (rows, feats, vals) in row-major order (`(z > 0).nonzero()`);
        every statistic reads only these nnz entries, never a dense [n, d_sae] code.

        token_hash: hash_keys(settings.seed + 1, chunk, pos) when the caller already has it (it is the
        same for every SAE of a batch); computed here when None."""
        if n == 0:
            return
        vals = vals.to(torch.float32)
        vals64 = vals.to(torch.float64)
        self._snapshots(n, rows, feats, vals64)
        self.n_tokens += n
        self.l0_sum += int(rows.numel())
        self.l1.index_add_(0, feats, vals64)
        self.fire += torch.bincount(feats, minlength=self.d_sae)
        self.max.scatter_reduce_(0, feats, vals, reduce="amax")
        bins = torch.bucketize(vals, self.hist_edges, right=True)  # 0 under, n_edges over
        self.hist += torch.bincount(feats * self.n_hist + bins, minlength=self.hist.numel())
        self._update_top(rows, feats, vals, chunk, pos)
        self._update_quantiles(rows, feats, vals, chunk, pos, token_hash)
        xd = x.to(torch.float64)
        self.sse += ((xd - x_hat.to(torch.float64)) ** 2).sum()
        self.sum_x += xd.sum(0)
        self.sum_sq += (xd**2).sum()

    def _snapshots(self, n: int, rows, feats, vals64) -> None:
        start = self.n_tokens
        due = self.snap_counts[(self.snap_counts > start) & (self.snap_counts <= start + n)]
        for count in due.tolist():  # a handful per decade of tokens: log-spaced
            upto = rows < (count - start)
            partial = self.l1.clone().index_add_(0, feats[upto], vals64[upto])
            self.snap_taken.append(count)
            self.snap_l1.append(partial)

    def _update_top(self, rows, feats, vals, chunk, pos) -> None:
        k = self.settings.top_k
        # an entry below its feature's current k-th value can never enter (the k-th value only rises);
        # empty slots hold -1, so features with room keep every entry. Exact: ties are kept.
        can_enter = vals >= self.top_val[feats, -1]
        rows, feats, vals = rows[can_enter], feats[can_enter], vals[can_enter]
        idx, _ = _bottom_per_cell(feats, _float_order_key(vals), self.d_sae, k)
        valid = idx >= 0
        safe = idx.clamp(min=0)
        cand_val = torch.where(valid, vals[safe], torch.full_like(vals[safe], -1.0))
        cand_chunk = torch.where(valid, chunk[rows[safe]], -1)
        cand_pos = torch.where(valid, pos[rows[safe]], -1)
        self._merge_top(self._top_keys(cand_val, cand_chunk, cand_pos), cand_val, cand_chunk, cand_pos)

    def _top_keys(self, val, chunk, pos) -> torch.Tensor:
        """Order of top-k candidates: larger value first, then earlier corpus place (chunk, pos)
        (place taken modulo 2^31), so equal activations resolve the same way in any shard order."""
        place = (chunk * self.context + pos) & 0x7FFFFFFF
        key = (_float_order_key(val.clamp(min=0)) << 31) | place
        return torch.where(val > 0, key, torch.full_like(key, _TOP_EMPTY))

    def _merge_top(self, key, val, chunk, pos) -> None:
        # only features whose best candidate beats their current k-th entry can change
        rows = (key[:, 0] < self.top_key[:, -1]).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return
        if rows.numel() < self.d_sae:
            sub = (self.top_key[rows], self.top_val[rows], self.top_chunk[rows], self.top_pos[rows])
            new = self._merged_top(sub, (key[rows], val[rows], chunk[rows], pos[rows]))
            for buffer, values in zip((self.top_key, self.top_val, self.top_chunk, self.top_pos), new):
                buffer[rows] = values
            return
        self.top_key, self.top_val, self.top_chunk, self.top_pos = self._merged_top(
            (self.top_key, self.top_val, self.top_chunk, self.top_pos), (key, val, chunk, pos))

    def _merged_top(self, mine, theirs):
        all_key = torch.cat([mine[0], theirs[0]], 1)
        keep = torch.topk(all_key, self.settings.top_k, dim=1, largest=False).indices  # sorted: best first
        return tuple(torch.cat([a, b], 1).gather(1, keep) for a, b in zip(mine, theirs))

    def _update_quantiles(self, rows, feats, vals, chunk, pos, token_hash=None) -> None:
        m = self.settings.quantile_samples
        if m == 0:
            return
        band = torch.bucketize(vals, self.band_edges, right=True) - 1  # -1: below hist_min
        inside = band >= 0
        rows, feats, vals, band = rows[inside], feats[inside], vals[inside], band[inside]
        tok_chunk, tok_pos = chunk[rows], pos[rows]
        # = hash_keys(seed + 1, chunk, pos, feature), with the (chunk, pos) part hashed once per token
        # and the feature part read from a table: the hash is a chain, so the keys are the same bits
        if token_hash is None:
            token_hash = hash_keys(self.settings.seed + 1, chunk, pos)
        keys = _mix32(token_hash[rows] ^ self._feature_hash[feats])
        cells = feats * self.n_bands + band
        # a key above the largest kept key of a full cell can never enter it (empty slots: _EMPTY_KEY)
        can_enter = keys <= self.q_key[cells, -1]
        vals, tok_chunk, tok_pos, keys, cells = (vals[can_enter], tok_chunk[can_enter], tok_pos[can_enter],
                                                 keys[can_enter], cells[can_enter])
        idx, cand_key = _bottom_per_cell(cells, keys, self.q_key.shape[0], m)
        safe = idx.clamp(min=0)
        valid = idx >= 0
        self._merge_quantiles(
            cand_key,
            torch.where(valid, vals[safe], 0.0),
            torch.where(valid, tok_chunk[safe], -1),
            torch.where(valid, tok_pos[safe], -1),
        )

    def _merge_quantiles(self, key, val, chunk, pos) -> None:
        m = self.settings.quantile_samples
        rows = (key[:, 0] < self.q_key[:, -1]).nonzero(as_tuple=True)[0]  # cells that can change
        if rows.numel() == 0:
            return
        buffers = (self.q_key, self.q_val, self.q_chunk, self.q_pos)
        all_key = torch.cat([self.q_key[rows], key[rows]], 1)
        keep = torch.topk(all_key, m, dim=1, largest=False).indices
        for buffer, new in zip(buffers, (key, val, chunk, pos)):
            buffer[rows] = torch.cat([buffer[rows], new[rows]], 1).gather(1, keep)

    # -- merge ------------------------------------------------------------------------
    def merge(self, other: "FeatureStats") -> "FeatureStats":
        offset_l1 = self.l1.clone()
        for count, l1 in zip(other.snap_taken, other.snap_l1):
            self.snap_taken.append(self.n_tokens + count)
            self.snap_l1.append(offset_l1 + l1)
        self.n_tokens += other.n_tokens
        self.l0_sum += other.l0_sum
        self.l1 += other.l1
        self.fire += other.fire
        self.max = torch.maximum(self.max, other.max)
        self.hist += other.hist
        self._merge_top(other.top_key, other.top_val, other.top_chunk, other.top_pos)
        if self.settings.quantile_samples:
            self._merge_quantiles(other.q_key, other.q_val, other.q_chunk, other.q_pos)
        self.sse += other.sse
        self.sum_x += other.sum_x
        self.sum_sq += other.sum_sq
        return self

    # -- result -----------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        """Plain numpy arrays (shapes in the HarvestResult docstring) and reconstruction scalars."""
        n, d_sae, nb, m = self.n_tokens, self.d_sae, self.n_bands, self.settings.quantile_samples
        sst = self.sum_sq - (self.sum_x**2).sum() / n if n else torch.tensor(float("nan"))
        empty = self.top_val < 0
        q_empty = self.q_key == _EMPTY_KEY
        snaps = (
            torch.stack(self.snap_l1) if self.snap_l1 else torch.zeros(0, d_sae, dtype=torch.float64)
        )
        return {
            "n_tokens": n,
            "l1_mass": _t2np(self.l1),
            "fire_count": _t2np(self.fire),
            "max_act": _t2np(self.max),
            "hist": _t2np(self.hist.view(d_sae, self.n_hist)),
            "top_values": _t2np(torch.where(empty, 0.0, self.top_val)),
            "top_chunk": _t2np(self.top_chunk),
            "top_pos": _t2np(self.top_pos),
            "quantile_values": _t2np(torch.where(q_empty, 0.0, self.q_val).view(d_sae, nb, m)),
            "quantile_chunk": _t2np(self.q_chunk.view(d_sae, nb, m)),
            "quantile_pos": _t2np(self.q_pos.view(d_sae, nb, m)),
            "l1_snapshot_tokens": np.asarray(self.snap_taken, dtype=np.int64),
            "l1_snapshots": _t2np(snaps),
            "explained_variance": float(1.0 - self.sse / sst) if n else float("nan"),
            "mse": float(self.sse / (n * self.d_in)) if n else float("nan"),
            "l0": float(self.l0_sum / n) if n else float("nan"),
        }


class Cooccurrence:
    """Chunk-level feature co-occurrence counts (METHODS.md §6, brain scale).

    For every chunk of tokens: f = (Z[chunk] > threshold).any(0); C += f.T @ f; n += 1.
    Chunk ids come from the caller (see `cooc_chunk_ids`); `seqs_per_chunk` > 1 means a chunk spans
    several corpus sequences and may stay open across batches until all of them were seen.
    """

    def __init__(self, d_sae: int, settings: HarvestSettings, seqs_per_chunk: int,
                 device: torch.device | str = "cpu"):
        self.threshold = settings.cooc_threshold
        self.seqs_per_chunk = seqs_per_chunk
        if d_sae <= settings.cooc_max_features:
            self.features = torch.arange(d_sae, device=device)
        else:  # sampled path: a fixed, seeded subset of features
            generator = torch.Generator().manual_seed(settings.seed + 7919)
            chosen = torch.randperm(d_sae, generator=generator)[: settings.cooc_max_features]
            self.features = torch.sort(chosen).values.to(device)
        self.subset = self.features.numel() < d_sae
        self._slot = torch.full((d_sae,), -1, dtype=torch.int64, device=device)  # feature -> tracked slot
        self._slot[self.features] = torch.arange(self.features.numel(), device=device)
        n_f = self.features.numel()
        self.counts = torch.zeros(n_f, n_f, dtype=torch.int32, device=device)
        self.n_chunks = 0
        # open chunks: id -> (any-firing vector, sequences seen, has kept tokens)
        self.pending: dict[int, tuple[torch.Tensor, int, bool]] = {}

    def update_sparse(self, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor,
                      token_chunk_ids: torch.Tensor, batch_chunk_ids: torch.Tensor) -> None:
        """The positive codes (rows, feats, vals) of the kept tokens; token_chunk_ids [n] the
        co-occurrence chunk of each kept token; batch_chunk_ids [batch] the co-occurrence chunk of every
        sequence in the batch (kept tokens or not). Codes are >= 0 and the threshold >= 0, so only these
        count."""
        fired = vals > self.threshold
        rows, feats = rows[fired], feats[fired]
        if self.subset:  # tracked features only, renumbered 0..F-1
            slot = self._slot[feats]
            tracked = slot >= 0
            rows, feats = rows[tracked], slot[tracked]
        ids, inverse = torch.unique(token_chunk_ids, return_inverse=True)
        f = torch.zeros(ids.numel(), self.features.numel(), dtype=torch.bool, device=self.counts.device)
        f[inverse[rows], feats] = True
        if self.seqs_per_chunk == 1:
            self._add(f)
            return
        # chunks spanning several sequences: count sequences seen per chunk
        seq_ids, seq_counts = torch.unique(batch_chunk_ids, return_counts=True)
        seen = dict(zip(seq_ids.tolist(), seq_counts.tolist()))
        complete = []
        for row, chunk_id in enumerate(ids.tolist()):
            done = self._join_open(chunk_id, f[row].clone(), seen.pop(chunk_id), True)
            if done is not None:
                complete.append(done)
        for chunk_id, count in seen.items():  # sequences with no kept token
            done = self._join_open(chunk_id, None, count, False)
            if done is not None:
                complete.append(done)
        if complete:
            self._add(torch.stack(complete))

    def _join_open(self, chunk_id: int, vector: torch.Tensor | None, count: int, has: bool) -> torch.Tensor | None:
        """Add `count` sequences of chunk `chunk_id` (their any-firing vector, None when nothing fired;
        `has`: they hold kept tokens) to what is held open for it. Returns the chunk's any-firing vector
        once all its sequences were seen and it holds kept tokens (the caller counts it); otherwise
        keeps the chunk open (or drops it: complete with no kept token) and returns None."""
        held = self.pending.pop(chunk_id, None)
        if held is not None:
            vector = held[0] if vector is None else vector | held[0]
            count, has = count + held[1], has or held[2]
        if count >= self.seqs_per_chunk:
            return vector if has else None
        if vector is None:
            vector = torch.zeros(self.features.numel(), dtype=torch.bool, device=self.counts.device)
        self.pending[chunk_id] = (vector, count, has)
        return None

    def _add(self, f: torch.Tensor) -> None:
        if f.shape[0] == 0:
            return
        self.n_chunks += f.shape[0]
        active = f.any(0).nonzero(as_tuple=True)[0]
        if active.numel() == 0:
            return
        if active.numel() * 2 < f.shape[1]:  # only the active block changes
            fa = f[:, active].to(torch.float32)
            block = (fa.T @ fa).to(torch.int32)
            rows = self.counts.index_select(0, active)
            rows[:, active] += block
            self.counts.index_copy_(0, active, rows)
        else:
            ff = f.to(torch.float32)
            self.counts += (ff.T @ ff).to(torch.int32)

    def merge(self, other: "Cooccurrence") -> "Cooccurrence":
        self.counts += other.counts
        self.n_chunks += other.n_chunks
        for chunk_id, (vector, count, has) in other.pending.items():
            done = self._join_open(chunk_id, vector, count, has)
            if done is not None:
                self._add(done[None])
        return self

    def result(self) -> dict[str, Any]:
        """cooc [F, F] int32 (F = d_sae or cooc_max_features), cooc_features [F], n_chunks.

        Chunks still open (the corpus ended inside them) are counted here without changing the state.
        """
        counts, n = self.counts.clone(), self.n_chunks
        open_vectors = [v for v, _, has in self.pending.values() if has]
        if open_vectors:
            f = torch.stack(open_vectors).to(torch.float32)
            counts += (f.T @ f).to(torch.int32)
            n += len(open_vectors)
        return {"cooc": _t2np(counts), "cooc_features": _t2np(self.features), "cooc_n_chunks": n}


def cooc_chunk_ids(chunk: torch.Tensor, pos: torch.Tensor, context: int, chunk_tokens: int) -> tuple[torch.Tensor, int]:
    """Co-occurrence chunk id of tokens at (corpus chunk, pos), and sequences per chunk."""
    if context >= chunk_tokens:
        per_seq = -(-context // chunk_tokens)
        return chunk * per_seq + pos // chunk_tokens, 1
    seqs = max(1, chunk_tokens // context)
    return chunk // seqs, seqs


# ---------------------------------------------------------------------------------------------
# the pass
# ---------------------------------------------------------------------------------------------
def sae_hook_name(sae: Any) -> str:
    name = getattr(sae, "hook_name", None)
    if name is None:  # a bare SAELens SAE
        name = sae.cfg.metadata.hook_name
    return str(name)


def sae_labels(saes: Sequence[Any]) -> list[str]:
    """Result key of each SAE: its hook name, with '#2', '#3' ... for further SAEs on one hook."""
    labels, seen = [], {}
    for sae in saes:
        hook = sae_hook_name(sae)
        seen[hook] = seen.get(hook, 0) + 1
        labels.append(hook if seen[hook] == 1 else f"{hook}#{seen[hook]}")
    return labels


def default_sites(model: Any, saes: Sequence[Any]) -> list[str]:
    """Every layer's resid_post plus every SAE's hook, in forward order."""
    names = model.resid_post_hooks()
    names += [sae_hook_name(s) for s in saes]
    available = model.hook_names() if hasattr(model, "hook_names") else names
    order = {name: i for i, name in enumerate(available)}
    return sorted(dict.fromkeys(n for n in names if n in order), key=lambda n: order[n])


@dataclass
class HarvestState:
    """The running statistics of one harvest (or of one shard). Merge shards, then finalize."""

    settings: HarvestSettings
    context: int
    bos_token_id: int | None
    moments: dict[str, ActivationMoments] = field(default_factory=dict)
    reservoirs: dict[str, Reservoir] = field(default_factory=dict)
    features: dict[str, FeatureStats] = field(default_factory=dict)
    cooc: dict[str, Cooccurrence] = field(default_factory=dict)
    n_tokens: int = 0  # kept (non-BOS) tokens
    n_positions: int = 0  # all positions read
    n_sequences: int = 0
    _fast_decoders: dict[str, Any] = field(default_factory=dict, repr=False)

    def update(self, tokens: torch.Tensor, chunk_index: torch.Tensor, acts: dict[str, torch.Tensor],
               saes: Sequence[Any], labels: Sequence[str], sites: Sequence[str]) -> None:
        """tokens [b, ctx] on the model's device; chunk_index [b] corpus row of each sequence."""
        s = self.settings
        b, ctx = tokens.shape
        device = tokens.device
        flat_tokens = tokens.reshape(-1)
        keep = torch.ones_like(flat_tokens, dtype=torch.bool)
        if s.exclude_bos and self.bos_token_id is not None:
            keep = flat_tokens != self.bos_token_id
        keep_idx = keep.nonzero(as_tuple=True)[0]
        chunk_index = chunk_index.to(device)
        chunk = chunk_index.repeat_interleave(ctx)[keep_idx]
        pos = torch.arange(ctx, device=device).repeat(b)[keep_idx]
        token = flat_tokens[keep_idx]
        flat = {name: a.reshape(b * ctx, -1)[keep_idx].to(torch.float32) for name, a in acts.items()}
        res_keys = hash_keys(s.seed, chunk, pos) if s.reservoir_size else None
        # the quantile-sample key of each token: the same for every SAE, so hashed once per batch
        quantile_hash = hash_keys(s.seed + 1, chunk, pos) if s.quantile_samples and saes else None
        for site in sites:
            x = flat[site]
            if site not in self.moments:
                self.moments[site] = ActivationMoments(x.shape[1], device)
                self.reservoirs[site] = Reservoir(x.shape[1], s.reservoir_size, s.seed, device)
            self.moments[site].update(x)
            self.reservoirs[site].update(x, chunk, pos, token, keys=res_keys)
        cooc_ids, seqs_per_chunk = cooc_chunk_ids(chunk, pos, ctx, s.cooc_chunk_tokens)
        batch_cooc_ids = cooc_chunk_ids(chunk_index, torch.zeros_like(chunk_index), ctx, s.cooc_chunk_tokens)[0]
        for sae, label in zip(saes, labels):
            x = flat[sae_hook_name(sae)]
            rows, feats, vals, z = _sparse_codes(sae, x)
            d_sae = int(z.shape[1]) if z is not None else int(sae.d_sae)
            x_hat = self._decode(sae, label, x.shape[0], d_sae, rows, feats, vals, z)
            if label not in self.features:
                self.features[label] = FeatureStats(d_sae, x.shape[1], s, ctx, device)
                self.cooc[label] = Cooccurrence(d_sae, s, seqs_per_chunk, device)
            self.features[label].update_sparse(x.shape[0], rows, feats, vals, x, x_hat, chunk, pos,
                                               token_hash=quantile_hash)
            self.cooc[label].update_sparse(rows, feats, vals, cooc_ids, batch_cooc_ids)
        self.n_tokens += int(keep_idx.numel())
        self.n_positions += b * ctx
        self.n_sequences += b

    def _decode(self, sae: Any, label: str, n: int, d_sae: int, rows: torch.Tensor, feats: torch.Tensor,
                vals: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """sae.decode(z), computed from the positive codes only when that gives the same numbers.

        A sparse code (TopK: k of d_sae) makes z @ W_dec mostly multiplications by zero. On the first
        batch the sparse sum is checked against sae.decode; SAEs whose decode is not plain
        z @ W_dec + b_dec (normalisation, rescaling, hooks) fail the check and keep sae.decode.
        `z` is the dense code when the encoder produced one (None: codes known to be >= 0).
        """
        fast = self._fast_decoders.get(label, "unknown")
        dense_cheaper = rows.numel() * 8 > n * d_sae
        if fast is None or dense_cheaper or (z is not None and bool(z.lt(0).any())):
            return sae.decode(_dense_codes(n, d_sae, rows, feats, vals) if z is None else z)
        if fast == "unknown":
            # SAEs with a plain fast encoder (z is None) are checked on the first rows only; others on
            # the whole batch, whose dense decode is then used (their decode may hold per-batch state)
            head = n if z is not None else min(n, 256)
            sel = rows < head
            h_rows, h_feats, h_vals = rows[sel], feats[sel], vals[sel]
            reference = sae.decode(z if z is not None else _dense_codes(head, d_sae, h_rows, h_feats, h_vals))
            try:
                device = vals.device
                w_dec, b_dec = sae.W_dec.to(device), sae.b_dec.to(device)
                candidate = _sparse_decode(head, h_rows, h_feats, h_vals, w_dec, b_dec)
                scale = float(reference.abs().max()) + 1e-12 if reference.numel() else 1.0
                ok = candidate.shape == reference.shape and bool(
                    torch.allclose(candidate, reference, rtol=1e-4, atol=1e-5 * scale))
            except (AttributeError, RuntimeError):
                ok = False
            fast = self._fast_decoders[label] = (w_dec, b_dec) if ok else None
            if z is not None:
                return reference
            if fast is None:
                return sae.decode(_dense_codes(n, d_sae, rows, feats, vals))
        return _sparse_decode(n, rows, feats, vals, *fast)

    def merge(self, other: "HarvestState") -> "HarvestState":
        if other.settings != self.settings or other.context != self.context:
            raise AtlasError("Only harvests made with the same settings and context can be merged.")
        for table, mine in (("moments", self.moments), ("reservoirs", self.reservoirs),
                            ("features", self.features), ("cooc", self.cooc)):
            for name, stat in getattr(other, table).items():
                if name in mine:
                    mine[name].merge(stat)
                else:
                    mine[name] = stat
        self.n_tokens += other.n_tokens
        self.n_positions += other.n_positions
        self.n_sequences += other.n_sequences
        return self


def _sparse_decode(n: int, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor,
                   w_dec: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
    """z @ w_dec + b_dec summed over the positive entries (rows, feats, vals) of z only: [n, d_in].

    rows must be ascending (row-major codes). One embedding_bag: a weighted sum of decoder rows per
    token, reading nnz rows of w_dec instead of multiplying [n, d_sae] mostly-zero codes."""
    offsets = torch.searchsorted(rows, torch.arange(n, device=rows.device, dtype=rows.dtype))
    out = torch.nn.functional.embedding_bag(feats, w_dec.to(torch.float32), offsets, mode="sum",
                                            per_sample_weights=vals.to(torch.float32))
    return out + b_dec.to(torch.float32)


def _dense_codes(n: int, d_sae: int, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor) -> torch.Tensor:
    z = torch.zeros(n, d_sae, dtype=torch.float32, device=vals.device)
    z[rows, feats] = vals
    return z


def _sparse_codes(sae: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The positive codes of x [n, d_in] as (rows, feats, vals) in row-major order, plus the dense code
    z when one was computed (None when the SAE's fast encoder gives the sparse form directly, whose
    codes are >= 0 by construction: relu, TopK of relu, gates)."""
    available = getattr(sae, "fast_encode_available", None)
    if available is not None and available(x):
        rows, feats, vals = sae.encode_sparse(x)
        return rows, feats, vals, None
    z = sae.encode(x)
    rows, feats = (z > 0).nonzero(as_tuple=True)
    return rows, feats, z[rows, feats].to(torch.float32), z


def context_windows(corpus_tokens: torch.Tensor | np.ndarray, chunk: np.ndarray, pos: np.ndarray,
                    left: int, right: int) -> np.ndarray:
    """Token ids around each (chunk, pos): [..., left + 1 + right] int32, -1 outside the sequence or
    where chunk < 0 (an empty slot). The centre column (index `left`) is the token itself."""
    tokens = corpus_tokens.cpu().numpy() if isinstance(corpus_tokens, torch.Tensor) else np.asarray(corpus_tokens)
    ctx = tokens.shape[1]
    offsets = np.arange(-left, right + 1)
    where = pos[..., None] + offsets
    valid = (chunk[..., None] >= 0) & (where >= 0) & (where < ctx)
    rows = np.where(valid, chunk[..., None], 0)
    cols = np.where(valid, where, 0)
    return np.where(valid, tokens[rows, cols], -1).astype(np.int32)


@dataclass
class SiteResult:
    """Per hook site. n: tokens; mean [d] f64; cov [d, d] f64 (population);
    reservoir [k, d] f32 with reservoir_chunk / reservoir_pos / reservoir_token [k] int64."""

    n: int
    mean: np.ndarray
    cov: np.ndarray
    reservoir: np.ndarray
    reservoir_chunk: np.ndarray
    reservoir_pos: np.ndarray
    reservoir_token: np.ndarray


@dataclass
class SAEResult:
    """Per SAE (keyed by hook name). Shapes, with W = window_left + 1 + window_right:
    l1_mass [d_sae] f64; fire_count [d_sae] i64; max_act [d_sae] f32;
    hist [d_sae, n_bins + 2] i64 (col 0 underflow, last overflow), hist_edges [n_bins + 1];
    top_values [d_sae, k] f32 (descending; 0 = empty slot), top_chunk / top_pos [d_sae, k] i64 (-1 empty),
    top_tokens [d_sae, k, W] int32 (-1 outside the sequence; centre column = the token);
    quantile_edges [n_bands + 1] (last = inf), quantile_values [d_sae, n_bands, m] f32,
    quantile_chunk / quantile_pos [d_sae, n_bands, m] i64 (-1 empty), quantile_tokens [d_sae, n_bands, m, W];
    cooc [F, F] int32 chunk co-occurrence counts over features cooc_features [F], cooc_n_chunks;
    l1_snapshot_tokens [S] i64, l1_snapshots [S, d_sae] f64 (cumulative L1 mass at those token counts);
    explained_variance = 1 - SSE/SST, mse = SSE / (n d_in), l0 = mean active features per token."""

    hook_name: str
    n_tokens: int
    l1_mass: np.ndarray
    fire_count: np.ndarray
    max_act: np.ndarray
    hist: np.ndarray
    hist_edges: np.ndarray
    top_values: np.ndarray
    top_chunk: np.ndarray
    top_pos: np.ndarray
    top_tokens: np.ndarray
    quantile_edges: np.ndarray
    quantile_values: np.ndarray
    quantile_chunk: np.ndarray
    quantile_pos: np.ndarray
    quantile_tokens: np.ndarray
    cooc: np.ndarray
    cooc_features: np.ndarray
    cooc_n_chunks: int
    l1_snapshot_tokens: np.ndarray
    l1_snapshots: np.ndarray
    explained_variance: float
    mse: float
    l0: float

    @property
    def d_sae(self) -> int:
        return int(self.l1_mass.shape[0])


_SITE_ARRAYS = ("mean", "cov", "reservoir", "reservoir_chunk", "reservoir_pos", "reservoir_token")
_SAE_ARRAYS = ("l1_mass", "fire_count", "max_act", "hist", "hist_edges", "top_values", "top_chunk",
               "top_pos", "top_tokens", "quantile_edges", "quantile_values", "quantile_chunk",
               "quantile_pos", "quantile_tokens", "cooc", "cooc_features", "l1_snapshot_tokens",
               "l1_snapshots")
_SAE_SCALARS = ("n_tokens", "cooc_n_chunks", "explained_variance", "mse", "l0")


@dataclass
class HarvestResult:
    """Everything one harvest measured; plain numpy arrays (see SiteResult / SAEResult).

    sites: hook name -> SiteResult; saes: SAE label (its hook name) -> SAEResult;
    n_tokens: kept tokens; n_positions / n_sequences: read; context: positions per sequence;
    settings: HarvestSettings.to_dict(); sources: what was harvested (model, SAEs, corpus).
    """

    sites: dict[str, SiteResult]
    saes: dict[str, SAEResult]
    n_tokens: int
    n_positions: int
    n_sequences: int
    context: int
    settings: dict[str, Any]
    sources: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays: dict[str, np.ndarray] = {}
        site_meta, sae_meta = {}, {}
        for i, (name, site) in enumerate(self.sites.items()):
            for a in _SITE_ARRAYS:
                arrays[f"site{i}__{a}"] = getattr(site, a)
            site_meta[name] = {"index": i, "n": int(site.n)}
        for i, (label, sae) in enumerate(self.saes.items()):
            for a in _SAE_ARRAYS:
                arrays[f"sae{i}__{a}"] = getattr(sae, a)
            sae_meta[label] = {"index": i, "hook_name": sae.hook_name,
                               **{s: _json_number(getattr(sae, s)) for s in _SAE_SCALARS}}
        meta = {
            "kind": "harvest", "sites": site_meta, "saes": sae_meta, "n_tokens": self.n_tokens,
            "n_positions": self.n_positions, "n_sequences": self.n_sequences, "context": self.context,
            "settings": self.settings, "sources": self.sources, "seconds": self.seconds,
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "HarvestResult":
        if meta.get("kind") != "harvest":
            raise AtlasError("This cached artifact is not a harvest result.")
        sites = {}
        for name, info in meta["sites"].items():
            i = info["index"]
            sites[name] = SiteResult(n=int(info["n"]), **{a: arrays[f"site{i}__{a}"] for a in _SITE_ARRAYS})
        saes = {}
        for label, info in meta["saes"].items():
            i = info["index"]
            saes[label] = SAEResult(
                hook_name=info["hook_name"],
                n_tokens=int(info["n_tokens"]), cooc_n_chunks=int(info["cooc_n_chunks"]),
                explained_variance=float(info["explained_variance"]), mse=float(info["mse"]),
                l0=float(info["l0"]), **{a: arrays[f"sae{i}__{a}"] for a in _SAE_ARRAYS},
            )
        return cls(sites=sites, saes=saes, n_tokens=int(meta["n_tokens"]),
                   n_positions=int(meta["n_positions"]), n_sequences=int(meta["n_sequences"]),
                   context=int(meta["context"]), settings=dict(meta["settings"]),
                   sources=dict(meta.get("sources", {})), seconds=float(meta.get("seconds", 0.0)))

    def save(self, store: Any, key: str) -> None:
        arrays, meta = self.to_arrays()
        store.save(key, arrays, meta)

    @classmethod
    def load(cls, store: Any, key: str) -> "HarvestResult | None":
        artifact = store.load(key)
        return None if artifact is None else cls.from_arrays(artifact.arrays, artifact.meta)


def _json_number(value: Any) -> Any:
    value = float(value) if isinstance(value, (float, np.floating)) else int(value)
    return value if not (isinstance(value, float) and not math.isfinite(value)) else None


def finalize(state: HarvestState, corpus_tokens: torch.Tensor | np.ndarray, sources: dict | None = None,
             seconds: float = 0.0) -> HarvestResult:
    """Results of a (merged) state; context windows are read from the corpus tokens."""
    s = state.settings
    sites = {}
    for name, moments in state.moments.items():
        sites[name] = SiteResult(**{"n": int(moments.n)}, **{
            k: v for k, v in moments.result().items() if k != "n"}, **state.reservoirs[name].result())
    saes = {}
    for label, stats in state.features.items():
        r = stats.result()
        r.update(state.cooc[label].result())
        r["top_tokens"] = context_windows(corpus_tokens, r["top_chunk"], r["top_pos"], s.window_left, s.window_right)
        r["quantile_tokens"] = context_windows(
            corpus_tokens, r["quantile_chunk"], r["quantile_pos"], s.window_left, s.window_right)
        saes[label] = SAEResult(hook_name=label.split("#")[0], hist_edges=s.hist_edges,
                                quantile_edges=s.quantile_edges, **r)
    return HarvestResult(sites=sites, saes=saes, n_tokens=state.n_tokens, n_positions=state.n_positions,
                         n_sequences=state.n_sequences, context=state.context, settings=s.to_dict(),
                         sources=sources or {}, seconds=seconds)


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if device is not None:
        return torch.device(device)
    card = getattr(model, "card", None)
    return torch.device(getattr(card, "device", "cpu"))


def n_sequences_for(corpus_tokens: torch.Tensor, max_tokens: int | None) -> int:
    n_chunks, ctx = corpus_tokens.shape
    return n_chunks if max_tokens is None else min(n_chunks, max(1, -(-max_tokens // ctx)))


def harvest_shard(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings,
                  start: int = 0, stop: int | None = None, progress: ProgressFn | None = None) -> HarvestState:
    """Run the pass over corpus sequences [start, stop) and return the un-finalized state."""
    tokens_all = corpus.tokens
    if tokens_all.ndim != 2 or tokens_all.shape[0] == 0:
        raise AtlasError("The corpus holds no token sequences to harvest.")
    stop = n_sequences_for(tokens_all, settings.max_tokens) if stop is None else stop
    ctx = int(tokens_all.shape[1])
    n_ctx = getattr(model, "n_ctx", None)
    if n_ctx is not None and ctx > n_ctx:
        raise AtlasError(f"The corpus sequences hold {ctx} tokens, more than the model's context of {n_ctx}.")
    labels = sae_labels(saes)
    sites = list(settings.sites) if settings.sites is not None else default_sites(model, saes)
    hooks = list(dict.fromkeys(sites + [sae_hook_name(s) for s in saes]))
    device = _model_device(model)
    state = HarvestState(settings=settings, context=ctx, bos_token_id=getattr(model, "bos_token_id", None))
    total = (stop - start) * ctx
    began = time.perf_counter()
    # no_grad, not inference_mode: the statistics must stay ordinary tensors so shards can merge later
    with torch.no_grad():
        for first in range(start, stop, settings.batch_size):
            last = min(stop, first + settings.batch_size)
            batch = tokens_all[first:last].to(device)
            acts = model.run(batch, hooks)
            state.update(batch, torch.arange(first, last, device=device), acts, saes, labels, sites)
            if progress is not None:
                done = (last - start) * ctx
                elapsed = time.perf_counter() - began
                progress(done, total, elapsed / done * (total - done))
    return state


def harvest(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings | None = None,
            progress: ProgressFn | None = None, sources: dict[str, Any] | None = None) -> HarvestResult:
    """One streaming pass over the corpus: every statistic of every site and SAE.

    model: core.models.LoadedModel (run(tokens, hook_names) -> {name: [b, pos, d]}, bos_token_id, device);
    saes: core.saes.LoadedSAE list (hook_name, encode, decode); corpus: core.corpus.Corpus (tokens
    [n_chunks, ctx]); progress(done_tokens, total_tokens, seconds_left). Memory is bounded by the
    batch and the statistics' fixed sizes, whatever the corpus length. sources: describe_sources(model,
    saes, corpus) when the caller already has it (it hashes every corpus token).
    """
    settings = settings or HarvestSettings()
    began = time.perf_counter()
    state = harvest_shard(model, saes, corpus, settings, progress=progress)
    if sources is None:
        sources = describe_sources(model, saes, corpus)
    return finalize(state, corpus.tokens, sources=sources, seconds=time.perf_counter() - began)


# ---------------------------------------------------------------------------------------------
# caching
# ---------------------------------------------------------------------------------------------
def describe_sources(model: Any, saes: Sequence[Any], corpus: Any) -> dict[str, Any]:
    """What identifies the inputs of a harvest (part of the cache key)."""
    card = getattr(model, "card", None)
    model_part = {
        "name": getattr(card, "name", type(model).__name__),
        "source": getattr(card, "source", None),
        "origin": getattr(card, "origin", None),
        "revision": getattr(card, "revision", None),
        "dtype": getattr(card, "dtype", None),
    }
    sae_parts = []
    for sae in saes:
        spec = getattr(sae, "spec", None)
        sae_parts.append({
            "hook_name": sae_hook_name(sae),
            "spec": asdict(spec) if spec is not None and hasattr(spec, "__dataclass_fields__") else None,
            "d_sae": int(getattr(sae, "d_sae", 0) or sae.cfg.d_sae),
            "architecture": str(getattr(sae, "architecture", None)),
            "model_name": getattr(sae, "model_name", None),
        })
    tokens = corpus.tokens
    spec = getattr(corpus, "spec", None)
    corpus_part = {
        "description": getattr(corpus, "description", None),
        "spec": asdict(spec) if spec is not None and hasattr(spec, "__dataclass_fields__") else None,
        "shape": list(tokens.shape),
        # content hash: two corpora with the same description but other tokens never share a key
        "sha256": _tokens_digest(tokens),
    }
    return {"model": model_part, "saes": sae_parts, "corpus": corpus_part}


def _tokens_digest(tokens: torch.Tensor) -> str:
    import hashlib

    array = np.ascontiguousarray(tokens.cpu().numpy().astype(np.int64))
    return hashlib.sha256(array.tobytes()).hexdigest()


def harvest_key(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings,
                sources: dict[str, Any] | None = None) -> str:
    """The store key of a harvest; sources: describe_sources(model, saes, corpus) when already built."""
    from core.store import artifact_key

    if sources is None:
        sources = describe_sources(model, saes, corpus)
    return artifact_key(kind="harvest", sources=sources, settings=settings.to_dict())


def harvest_cached(model: Any, saes: Sequence[Any], corpus: Any, settings: HarvestSettings | None = None,
                   store: Any = None, progress: ProgressFn | None = None,
                   key: str | None = None) -> tuple[HarvestResult, str]:
    """The harvest of these inputs from the store, computed (and saved) only when missing.

    Returns (result, key). The key covers the model (name, revision/checkpoint), the SAEs, the corpus
    (description + content hash of the slice), the settings and core.store.CODE_VERSION. key: the
    caller's harvest_key(model, saes, corpus, settings), when it already computed it.
    """
    from core.store import ArtifactStore

    settings = settings or HarvestSettings()
    store = store if store is not None else ArtifactStore()
    # describe_sources hashes every corpus token: build it at most once per call
    sources = None
    if key is None:
        sources = describe_sources(model, saes, corpus)
        key = harvest_key(model, saes, corpus, settings, sources=sources)
    cached = HarvestResult.load(store, key)
    if cached is not None:
        if progress is not None:
            progress(1, 1, 0.0)
        return cached, key
    result = harvest(model, saes, corpus, settings, progress, sources=sources)
    result.save(store, key)
    return result, key

