"""Harvest settings: everything that changes a harvest's numbers (part of its cache key)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from core.errors import AtlasError
from core.jsonable import Result


@dataclass(frozen=True)  # eq=True (unlike results): hashable, a cache key part
class HarvestSettings(Result):
    """Everything that changes a harvest's numbers (part of the cache key); `to_dict` / `from_dict` (Result)."""

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
    cooc_sample_chunks: int = 2048  # chunks whose fired features are kept (all of them up to this many)
    splice_tokens: int = 2048  # tokens (whole sequences from the corpus start) of the splice-in evaluation
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
            (self.cooc_sample_chunks >= 2, "co-occurrence needs a sample of >= 2 chunks"),
            (self.splice_tokens >= 0, "splice-in evaluation tokens must be >= 0 (0: off)"),
            (self.cooc_threshold >= 0, "co-occurrence threshold must be >= 0 (SAE codes are non-negative)"),
        ]
        for ok, message in checks:
            if not ok:
                raise AtlasError(f"Harvest settings: {message}.")

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
