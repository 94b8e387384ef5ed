"""The harvest: one streaming pass over a corpus computes every statistic the views need.

For each batch of corpus sequences the model runs ONCE with hooks on every needed site, each SAE
encodes (and decodes) its site, and small mergeable statistics absorb the batch:

per site (hook name)
    ActivationMoments   count, mean, covariance; float64, Chan et al. (1979) pairwise update/merge
    Reservoir           a uniform sample of token activations (bottom-k of hashed random keys)
per SAE
    FeatureStats        L1 mass, firing count, max, log-spaced histogram, top-k contexts,
                        contexts sampled from lower activation bands (both with every window token's
                        activation, float16), L1-mass snapshots, reconstruction quality (explained
                        variance, MSE, L0)
    Cooccurrence        per chunk of tokens the ids of the features that fired, for a bottom-k sample of
                        chunks (all of them up to cooc_sample_chunks); pair counts are sparse products
    SpliceStats         splice-in quality on the first splice_tokens tokens (core.harvest.splice)

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
  incomplete chunk is closed by result(). No d_sae x d_sae matrix exists: the harvest keeps, per
  counted chunk, the sorted ids of its fired features (CSR), for at most `cooc_sample_chunks` chunks
  chosen by smallest hash(seed + 2, chunk id). Up to that many chunks the counts are exact; past it
  they cover a uniform sample of chunks (phi's standard error ~ 1/sqrt(cooc_sample_chunks)), flagged
  by SAEResult.cooc_sampled. SAEResult.cooc_fired() / cooc_submatrix(ids) / cooc_counts() read them.
- Context activations: each top-k and quantile context keeps the feature's activation on every token
  of its window (top_acts, q_acts; float16; 0 outside the sequence and at BOS, which is not encoded),
  read from the retained sparse codes of the last few batches for the contexts still in a buffer when the
  state flushes (core.harvest.windows); exact under merges, and independent of when flushes happen.
- L1-mass snapshots: the cumulative L1 mass vector is recorded when the number of harvested tokens
  reaches each of the log-spaced counts in `snapshot_counts` (exactly at that token, not at batch
  ends), so F (effective features, METHODS.md §1) can be plotted against sample count. A merge
  appends the other shard's snapshots offset by this shard's totals (as if read after it).
- Covariance is the population covariance (divide by n), as in METHODS.md §4 (Hc.T @ Hc / n).
"""

from core.harvest.result import (
                                 ChunkCooccurrence,
                                 HarvestResult,
                                 QuantileContexts,
                                 SAEResult,
                                 SiteResult,
                                 context_windows,
                                 finalize,
)
from core.harvest.run import (
                              ProgressFn,
                              describe_sources,
                              harvest,
                              harvest_cached,
                              harvest_key,
                              harvest_shard,
                              n_sequences_for,
)
from core.harvest.settings import HarvestSettings, snapshot_counts
from core.harvest.site_stats import ActivationMoments, Reservoir
from core.harvest.splice import SpliceQuality
from core.harvest.state import HarvestState, sae_labels

__all__ = ["ActivationMoments", "ChunkCooccurrence", "HarvestResult", "QuantileContexts", "SpliceQuality", "HarvestSettings", "HarvestState", "ProgressFn", "Reservoir",
           "SAEResult", "SiteResult", "context_windows", "describe_sources", "finalize", "harvest", "harvest_cached",
           "harvest_key", "harvest_shard", "n_sequences_for", "sae_labels", "snapshot_counts"]
