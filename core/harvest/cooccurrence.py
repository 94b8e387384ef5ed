"""Chunk-level feature co-occurrence (METHODS.md section 6, brain scale), without a d_sae x d_sae matrix.

What is kept is the incidence itself: for each counted chunk of tokens, the sorted ids of the features
that fired in it (activation > cooc_threshold). Every pair count is then one sparse product away
(`ChunkCooccurrence` in core.harvest.result): C = A.T @ A over the [chunks, d_sae] incidence A. Memory
is bounded by the sample: at most `cooc_sample_chunks` chunks are held, chosen as the chunks with the
smallest hash keys hash(seed + 2, chunk id) (bottom-k sampling: uniform, and exact under shard merges
in any order). A harvest with no more chunks than that holds every chunk and its counts are exact;
a longer one estimates phi from a uniform sample of S chunks (standard error about 1 / sqrt(S) for
uncorrelated features).
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np
import torch

from core.harvest.sampling import hash_keys_np
from core.harvest.settings import HarvestSettings

_EMPTY = np.zeros(0, dtype=np.int32)
_BITMAP_CELLS = 1 << 26  # chunks x features of one batch up to which distinct pairs are read from a bitmap


class Cooccurrence:
    """Chunk incidence of one SAE's features: a bottom-k sample of chunks, each with its fired feature ids.

    Chunk ids come from the caller (`cooc_chunk_ids`); `seqs_per_chunk` > 1 means a chunk spans several
    corpus sequences and may stay open across batches (or shards) until all of them were seen.
    """

    def __init__(self, d_sae: int, settings: HarvestSettings, seqs_per_chunk: int,
                 device: torch.device | str = "cpu"):
        self.d_sae = d_sae
        self.threshold = settings.cooc_threshold
        self.seqs_per_chunk = seqs_per_chunk
        self.capacity = settings.cooc_sample_chunks
        self.seed = settings.seed + 2
        self.n_total = 0  # complete chunks with kept tokens, sampled or not
        self.sample: dict[int, tuple[int, np.ndarray]] = {}  # chunk id -> (key, sorted fired feature ids)
        self._heap: list[tuple[int, int]] = []  # (-key, -chunk): the largest (key, chunk) of the sample on top
        # open chunks: id -> (fired ids so far, sequences seen, holds kept tokens)
        self.pending: dict[int, tuple[np.ndarray, int, bool]] = {}

    # -- update -----------------------------------------------------------------------
    def update_sparse(self, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor,
                      token_chunk_ids: torch.Tensor, batch_chunk_ids: torch.Tensor) -> None:
        """The positive codes (rows, feats, vals) of the kept tokens; token_chunk_ids [n] the co-occurrence
        chunk of each kept token; batch_chunk_ids [batch] the co-occurrence chunk of every sequence of the
        batch (kept tokens or not). Codes are >= 0 and the threshold >= 0, so only these entries count."""
        if token_chunk_ids.numel() == 0 and self.seqs_per_chunk == 1:
            return
        if self.threshold > 0:
            fired = (vals > self.threshold).nonzero(as_tuple=True)[0]
            rows, feats = rows[fired], feats[fired]
        ordered = token_chunk_ids.numel() < 2 or bool((token_chunk_ids[1:] >= token_chunk_ids[:-1]).all())
        ids, inverse = (torch.unique_consecutive if ordered else torch.unique)(token_chunk_ids, return_inverse=True)
        # one sorted list of the distinct (chunk slot, feature) pairs of the batch, split per chunk on the host:
        # marked in a [slots, d_sae] bitmap and read back in order (no sort) when that is small
        pair = torch.add(feats, inverse.index_select(0, rows), alpha=self.d_sae)
        if ids.numel() * self.d_sae <= _BITMAP_CELLS:
            marks = torch.zeros(ids.numel() * self.d_sae, dtype=torch.bool, device=pair.device)
            marks.index_fill_(0, pair, True)
            pairs = marks.nonzero().view(-1).cpu().numpy()
        else:
            pairs = torch.unique(pair).cpu().numpy()
        chunk_ids = ids.cpu().numpy()
        bounds = np.searchsorted(pairs // self.d_sae, np.arange(chunk_ids.size + 1))
        features = (pairs % self.d_sae).astype(np.int32)
        vectors = {int(c): features[bounds[i]:bounds[i + 1]] for i, c in enumerate(chunk_ids)}
        if self.seqs_per_chunk == 1:
            keys = _chunk_keys(self.seed, chunk_ids)
            for (chunk_id, vector), key in zip(vectors.items(), keys):
                self.n_total += 1
                self._offer(self.sample, self._heap, int(key), chunk_id, vector)
            return
        # chunks spanning several sequences: count the sequences seen per chunk
        seq_ids, seq_counts = torch.unique(batch_chunk_ids, return_counts=True)
        seen = dict(zip(seq_ids.tolist(), seq_counts.tolist()))
        keys = _chunk_keys(self.seed, chunk_ids).tolist()  # hashed once per batch, not per chunk
        for (chunk_id, vector), key in zip(vectors.items(), keys):
            self._join_open(chunk_id, vector, seen.pop(chunk_id), True, key)
        for chunk_id, count in seen.items():  # sequences with no kept token
            self._join_open(chunk_id, _EMPTY, count, False)

    def _join_open(self, chunk_id: int, vector: np.ndarray, count: int, has: bool, key: int | None = None) -> None:
        """Add `count` sequences of chunk `chunk_id` (their fired ids; `has`: they hold kept tokens) to what
        is held open for it; count the chunk once all its sequences were seen (dropped without kept tokens).
        key: the chunk's sampling key when the caller has it."""
        held = self.pending.pop(chunk_id, None)
        if held is not None:
            vector = np.union1d(held[0], vector).astype(np.int32)
            count, has = count + held[1], has or held[2]
        if count < self.seqs_per_chunk:
            self.pending[chunk_id] = (vector, count, has)
        elif has:
            self.n_total += 1
            if key is None:
                key = int(_chunk_keys(self.seed, np.array([chunk_id]))[0])
            self._offer(self.sample, self._heap, key, chunk_id, vector)

    def _offer(self, sample: dict, heap: list, key: int, chunk_id: int, vector: np.ndarray) -> None:
        """Keep the chunk when it is among the `capacity` smallest (key, chunk id) seen."""
        if chunk_id in sample:  # the same chunk offered twice (only by a merge of overlapping shards)
            return
        if len(sample) < self.capacity:
            sample[chunk_id] = (key, vector)
            heapq.heappush(heap, (-key, -chunk_id))
            return
        worst_key, worst_chunk = -heap[0][0], -heap[0][1]
        if (key, chunk_id) < (worst_key, worst_chunk):
            heapq.heapreplace(heap, (-key, -chunk_id))
            del sample[worst_chunk]
            sample[chunk_id] = (key, vector)

    # -- merge ------------------------------------------------------------------------
    def merge(self, other: "Cooccurrence") -> "Cooccurrence":
        self.n_total += other.n_total
        for chunk_id, (key, vector) in other.sample.items():
            self._offer(self.sample, self._heap, key, chunk_id, vector)
        for chunk_id, (vector, count, has) in other.pending.items():
            self._join_open(chunk_id, vector, count, has)
        return self

    # -- result -----------------------------------------------------------------------
    def result(self) -> dict[str, Any]:
        """The sampled incidence in CSR form, chunks in id order:
        cooc_chunks [S] i64 (chunk ids), cooc_offsets [S + 1] i64, cooc_ids [nnz] i32 (fired feature ids,
        ascending within a chunk), cooc_n_chunks = S, cooc_total_chunks (every counted chunk).

        Chunks still open (the corpus ended inside them) are counted here without changing the state.
        """
        sample, heap, total = dict(self.sample), list(self._heap), self.n_total
        for chunk_id, (vector, _, has) in sorted(self.pending.items()):
            if has:
                total += 1
                self._offer(sample, heap, int(_chunk_keys(self.seed, np.array([chunk_id]))[0]), chunk_id, vector)
        chunks = np.array(sorted(sample), dtype=np.int64)
        lengths = np.array([sample[int(c)][1].size for c in chunks], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        ids = np.concatenate([sample[int(c)][1] for c in chunks]).astype(np.int32) if chunks.size else _EMPTY
        return {"cooc_chunks": chunks, "cooc_offsets": offsets, "cooc_ids": ids,
                "cooc_n_chunks": int(chunks.size), "cooc_total_chunks": int(total)}


def _chunk_keys(seed: int, chunk_ids: np.ndarray) -> np.ndarray:
    """hash_keys(seed, chunk_ids) computed with numpy (a handful of ids per batch: no torch call overhead)."""
    return hash_keys_np(seed, np.asarray(chunk_ids, dtype=np.int64))


def cooc_chunk_ids(chunk: torch.Tensor, pos: torch.Tensor, context: int, chunk_tokens: int) -> tuple[torch.Tensor, int]:
    """Co-occurrence chunk id of tokens at (corpus chunk, pos), and sequences per chunk."""
    if context >= chunk_tokens:
        per_seq = -(-context // chunk_tokens)
        return chunk * per_seq + pos // chunk_tokens, 1
    seqs = max(1, chunk_tokens // context)
    return chunk // seqs, seqs
