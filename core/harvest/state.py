"""The running state of one harvest (or shard): every statistic, updated batch by batch, merged across shards."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from core.errors import AtlasError
from core.harvest.cooccurrence import Cooccurrence, cooc_chunk_ids
from core.harvest.feature_stats import FeatureStats
from core.harvest.sampling import hash_keys
from core.harvest.settings import HarvestSettings
from core.harvest.site_stats import ActivationMoments, Reservoir
from core.harvest.splice import SpliceStats
from core.harvest.windows import FLUSH_BATCHES, FLUSH_ENTRIES, RetainedCodes


def sae_hook_name(sae: Any) -> str:
    name = getattr(sae, "hook_name", None)
    if name is None:  # a bare SAELens SAE
        name = sae.cfg.metadata.hook_name
    return str(name)


def sae_labels(saes: Sequence[Any]) -> list[str]:
    """Result key of each SAE: its hook name, with '#2', '#3' ... for further SAEs on one hook."""
    labels: list[str] = []
    seen: dict[str, int] = {}
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
    splice: dict[str, SpliceStats] = field(default_factory=dict)  # only the shard that starts at sequence 0
    n_tokens: int = 0  # kept (non-BOS) tokens
    n_positions: int = 0  # all positions read
    n_sequences: int = 0
    token_offset: int = 0  # kept tokens of the corpus before this state's first (harvest_shard sets it)
    _fast_decoders: dict[str, Any] = field(default_factory=dict, repr=False)
    # per SAE, the sparse codes of the batches since the last flush (core.harvest.windows)
    _retained: dict[str, RetainedCodes] = field(default_factory=dict, repr=False)

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
        flat = {name: a.reshape(b * ctx, -1).index_select(0, keep_idx).to(torch.float32) for name, a in acts.items()}
        res_keys = hash_keys(s.seed, chunk, pos) if s.reservoir_size else None
        # the quantile-sample key of each token: the same for every SAE, so hashed once per batch
        quantile_hash = hash_keys(s.seed + 1, chunk, pos) if s.quantile_samples and saes else None
        sae_sites = {sae_hook_name(sae) for sae in saes}
        for site in sites:
            x = flat[site]
            if site not in self.moments:
                self.moments[site] = ActivationMoments(x.shape[1], device)
                self.reservoirs[site] = Reservoir(x.shape[1], s.reservoir_size, s.seed, device)
            if site not in sae_sites:  # an SAE's site: below, from the float64 copy its statistics share
                self.moments[site].update(x)
            self.reservoirs[site].update(x, chunk, pos, token, keys=res_keys)
        x64: tuple[str, torch.Tensor] | None = None
        updated: set[str] = set()  # SAE sites whose moments this batch has updated
        cooc_ids, seqs_per_chunk = cooc_chunk_ids(chunk, pos, ctx, s.cooc_chunk_tokens)
        batch_cooc_ids = cooc_chunk_ids(chunk_index, torch.zeros_like(chunk_index), ctx, s.cooc_chunk_tokens)[0]
        for sae, label in zip(saes, labels):
            site = sae_hook_name(sae)
            x = flat[site]
            if x64 is None or x64[0] != site:
                x64 = (site, x.to(torch.float64))
                if site in sites and site not in updated:
                    self.moments[site].update(x64[1])
                    updated.add(site)
            rows, feats, vals, z = _sparse_codes(sae, x)
            d_sae = int(z.shape[1]) if z is not None else int(sae.d_sae)
            x_hat = self._decode(sae, label, x.shape[0], d_sae, rows, feats, vals, z)
            if label not in self.features:
                self.features[label] = FeatureStats(d_sae, x.shape[1], s, ctx, device,
                                                    token_offset=self.token_offset + self.n_tokens)
                self.cooc[label] = Cooccurrence(d_sae, s, seqs_per_chunk, device)
            if label not in self._retained:
                self._retained[label] = RetainedCodes(d_sae, ctx, s.window_left, s.window_right)
            first_row = self._retained[label].add(keep_idx, b * ctx, rows, feats, vals, chunk, pos)
            self.features[label].update_sparse(x.shape[0], rows, feats, vals, x64[1], x_hat, chunk, pos,
                                               token_hash=quantile_hash, first_row=first_row)
            self.cooc[label].update_sparse(rows, feats, vals, cooc_ids, batch_cooc_ids)
        self.n_tokens += int(keep_idx.numel())
        self.n_positions += b * ctx
        self.n_sequences += b
        retained = list(self._retained.values())
        if retained and (len(retained[0].batches) >= FLUSH_BATCHES
                         or sum(r.n_entries for r in retained) >= FLUSH_ENTRIES):
            self.flush()

    def flush(self) -> None:
        """Read the activation windows of the contexts that entered a buffer since the last flush and are
        still there, then drop the retained codes (core.harvest.windows). Called every few batches and
        before a state is merged, finalized or returned by harvest_shard; the numbers never depend on when."""
        scratch: dict = {}  # one zeroed dense block for every SAE of this flush
        for label, stats in self.features.items():
            retained = self._retained.get(label)
            if retained is None:
                continue
            stats.flush(lambda rows, feats, codes=retained: codes.lookup(rows, feats, scratch))
            retained.clear()

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
        self.flush()
        other.flush()
        for table, mine in (("moments", self.moments), ("reservoirs", self.reservoirs),
                            ("features", self.features), ("cooc", self.cooc), ("splice", self.splice)):
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
    counts = torch.bincount(rows, minlength=n)
    offsets = torch.cumsum(counts, 0) - counts  # each row's first entry (rows ascend)
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
