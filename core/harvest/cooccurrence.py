"""Chunk-level feature co-occurrence counts (METHODS.md section 6, brain scale)."""

from __future__ import annotations

from typing import Any

import torch

from core.harvest.sampling import to_numpy
from core.harvest.settings import HarvestSettings


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
        return {"cooc": to_numpy(counts), "cooc_features": to_numpy(self.features), "cooc_n_chunks": n}


def cooc_chunk_ids(chunk: torch.Tensor, pos: torch.Tensor, context: int, chunk_tokens: int) -> tuple[torch.Tensor, int]:
    """Co-occurrence chunk id of tokens at (corpus chunk, pos), and sequences per chunk."""
    if context >= chunk_tokens:
        per_seq = -(-context // chunk_tokens)
        return chunk * per_seq + pos // chunk_tokens, 1
    seqs = max(1, chunk_tokens // context)
    return chunk // seqs, seqs
