"""What a harvest measured, as plain numpy arrays: per-site and per-SAE results, with accessors that read
what a view needs (one feature's contexts, a block of co-occurrence counts) without densifying the rest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from core.errors import AtlasError
from core.harvest.components import SAE_ARRAYS, SITE_ARRAYS, assemble, compact, save_sae, save_site
from core.harvest.splice import SpliceQuality
from core.harvest.state import HarvestState
from core.jsonable import jsonable


def context_windows(corpus_tokens: torch.Tensor | np.ndarray, chunk: np.ndarray, pos: np.ndarray,
                    left: int, right: int) -> np.ndarray:
    """Token ids around each (chunk, pos): [..., left + 1 + right] int32, -1 outside the sequence or
    where chunk < 0 (an empty slot). The centre column (index `left`) is the token itself."""
    tokens = corpus_tokens.cpu().numpy() if isinstance(corpus_tokens, torch.Tensor) else np.asarray(corpus_tokens)
    ctx = tokens.shape[1]
    out = np.full(chunk.shape + (left + 1 + right,), -1, dtype=np.int32)
    filled = chunk >= 0  # only filled slots are looked up (most quantile cells are empty)
    c, p = chunk[filled], pos[filled]
    where = p[:, None] + np.arange(-left, right + 1)
    valid = (where >= 0) & (where < ctx)
    out[filled] = np.where(valid, tokens[c[:, None], np.clip(where, 0, ctx - 1)], -1)
    return out


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


class ChunkCooccurrence:
    """Co-occurrence counts over the sampled chunks, read from their incidence (never a dense d_sae^2 matrix).

    counts[i] -> [d_sae] chunks where features i and j both fired; diagonal() -> [d_sae] chunks where each
    fired; submatrix(ids) -> dense [n, n]. `n_chunks` is the number of chunks these counts cover.
    Works with core.feature_views.cooccurrence_view (which reads one row and the diagonal)."""

    def __init__(self, chunks: np.ndarray, offsets: np.ndarray, ids: np.ndarray, d_sae: int):
        from scipy import sparse

        n = int(len(chunks))
        data = np.ones(len(ids), dtype=np.int32)
        self.incidence = sparse.csr_matrix((data, np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64)),
                                           shape=(n, d_sae))
        self.by_feature = self.incidence.tocsc()
        self.n_chunks, self.d_sae = n, d_sae

    def diagonal(self) -> np.ndarray:
        return np.asarray(self.by_feature.getnnz(axis=0), dtype=np.int64)

    def __getitem__(self, feature: int) -> np.ndarray:
        chunks = self.by_feature.indices[self.by_feature.indptr[feature]:self.by_feature.indptr[feature + 1]]
        return np.asarray(self.incidence[chunks].sum(axis=0), dtype=np.int64).reshape(-1)

    def submatrix(self, feature_ids: np.ndarray) -> np.ndarray:
        block = self.by_feature[:, np.asarray(feature_ids, dtype=np.int64)]
        return np.asarray((block.T @ block).toarray(), dtype=np.int64)

    def dense(self) -> np.ndarray:
        """The full [d_sae, d_sae] counts: for small SAEs and tests only."""
        if self.d_sae > 8192:
            raise AtlasError(f"A dense {self.d_sae} x {self.d_sae} co-occurrence matrix is too large; "
                             "read rows or submatrices instead.")
        return self.submatrix(np.arange(self.d_sae))


@dataclass
class QuantileContexts:
    """One feature's sampled contexts, band by band: band [n] (index into quantile_edges), value [n] f32,
    chunk / pos [n] int64, tokens [n, W] int32 (-1 outside), acts [n, W] f32 (each token's activation)."""

    band: np.ndarray
    value: np.ndarray
    chunk: np.ndarray
    pos: np.ndarray
    tokens: np.ndarray
    acts: np.ndarray


@dataclass
class SAEResult:
    """Per SAE (keyed by hook name). Shapes, with W = window_left + 1 + window_right:
    l1_mass [d_sae] f64; fire_count [d_sae] i64; max_act [d_sae] f32;
    hist [d_sae, n_bins + 2] (col 0 underflow, last overflow), hist_edges [n_bins + 1];
    top_values [d_sae, k] f32 (descending; 0 = empty slot), top_chunk / top_pos [d_sae, k] (-1 empty),
    top_tokens [d_sae, k, W] int32 (-1 outside the sequence; centre column = the token),
    top_acts [d_sae, k, W] float16 (the feature's activation on each window token; 0 outside and at BOS);
    quantile_edges [n_bands + 1] (last = inf); quantile contexts stored sparsely (filled cells only):
    q_cells [n] (flat index into [d_sae, n_bands, m], ascending), q_values [n] f32, q_chunk / q_pos [n],
    q_tokens [n, W], q_acts [n, W] f16: read `quantile_contexts(feature)` (or the dense `quantile_*` views);
    co-occurrence: cooc_chunks [S] (sampled chunk ids), cooc_offsets [S + 1], cooc_ids [nnz] (fired features
    per chunk, CSR), cooc_n_chunks = S, cooc_total_chunks: read `cooc_fired()`, `cooc_submatrix(ids)`,
    `cooc_counts()`;
    l1_snapshot_tokens [S] i64, l1_snapshots [S, d_sae] f64 (cumulative L1 mass at those token counts);
    explained_variance = 1 - SSE/SST, mse = SSE / (n d_in), l0 = mean active features per token;
    splice: SpliceQuality (CE loss clean / spliced / ablated, loss recovered, KL) or None when not measured."""

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
    top_acts: np.ndarray
    quantile_edges: np.ndarray
    n_quantile_samples: int
    q_cells: np.ndarray
    q_values: np.ndarray
    q_chunk: np.ndarray
    q_pos: np.ndarray
    q_tokens: np.ndarray
    q_acts: np.ndarray
    cooc_chunks: np.ndarray
    cooc_offsets: np.ndarray
    cooc_ids: np.ndarray
    cooc_n_chunks: int
    cooc_total_chunks: int
    l1_snapshot_tokens: np.ndarray
    l1_snapshots: np.ndarray
    explained_variance: float
    mse: float
    l0: float
    splice: SpliceQuality | None = None

    @property
    def d_sae(self) -> int:
        return int(self.l1_mass.shape[0])

    # -- co-occurrence ----------------------------------------------------------------
    def cooc_counts(self) -> ChunkCooccurrence:
        return self._cooc

    @cached_property
    def _cooc(self) -> ChunkCooccurrence:
        return ChunkCooccurrence(self.cooc_chunks, self.cooc_offsets, self.cooc_ids, self.d_sae)

    def cooc_fired(self) -> np.ndarray:
        """[d_sae] chunks (of the cooc_n_chunks counted) in which each feature fired: the diagonal."""
        return self._cooc.diagonal()

    def cooc_submatrix(self, feature_ids: np.ndarray) -> np.ndarray:
        """Dense [n, n] int64 co-occurrence counts among `feature_ids` (over cooc_n_chunks chunks)."""
        return self._cooc.submatrix(feature_ids)

    @property
    def cooc_sampled(self) -> bool:
        """True when the counts cover a uniform sample of the chunks (phi's standard error ~ 1/sqrt(S))."""
        return self.cooc_n_chunks < self.cooc_total_chunks

    # -- quantile contexts ------------------------------------------------------------
    @property
    def n_bands(self) -> int:
        return int(len(self.quantile_edges) - 1)

    def quantile_contexts(self, feature: int) -> QuantileContexts:
        cell = self.n_bands * self.n_quantile_samples
        lo, hi = np.searchsorted(self.q_cells, [feature * cell, (feature + 1) * cell])
        band = (np.asarray(self.q_cells[lo:hi], dtype=np.int64) - feature * cell) // max(self.n_quantile_samples, 1)
        return QuantileContexts(band=band, value=np.asarray(self.q_values[lo:hi], dtype=np.float32),
                                chunk=np.asarray(self.q_chunk[lo:hi], dtype=np.int64),
                                pos=np.asarray(self.q_pos[lo:hi], dtype=np.int64),
                                tokens=np.asarray(self.q_tokens[lo:hi], dtype=np.int32),
                                acts=np.asarray(self.q_acts[lo:hi], dtype=np.float32))

    def _dense_quantile(self, values: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
        shape = (self.d_sae, self.n_bands, self.n_quantile_samples) + tuple(np.shape(values)[1:])
        out = np.full(shape, fill, dtype=dtype)
        out.reshape((-1,) + shape[3:])[np.asarray(self.q_cells, dtype=np.int64)] = values
        return out

    @property
    def quantile_values(self) -> np.ndarray:
        """Dense [d_sae, n_bands, m] f32 (0 = empty): for small SAEs; wide ones read quantile_contexts."""
        return self._dense_quantile(self.q_values, 0.0, np.float32)

    @property
    def quantile_chunk(self) -> np.ndarray:
        return self._dense_quantile(self.q_chunk, -1, np.int64)

    @property
    def quantile_pos(self) -> np.ndarray:
        return self._dense_quantile(self.q_pos, -1, np.int64)

    @property
    def quantile_tokens(self) -> np.ndarray:
        return self._dense_quantile(self.q_tokens, -1, np.int32)

    @property
    def quantile_acts(self) -> np.ndarray:
        return self._dense_quantile(self.q_acts, 0.0, np.float16)


SAE_SCALARS = ("n_tokens", "n_quantile_samples", "cooc_n_chunks", "cooc_total_chunks", "explained_variance",
               "mse", "l0")


def sae_meta(sae: SAEResult) -> dict[str, Any]:
    """The JSON part of one SAE's result (scalars and splice quality)."""
    return {"hook_name": sae.hook_name, **{s: jsonable(getattr(sae, s)) for s in SAE_SCALARS},
            "splice": jsonable(sae.splice)}


def sae_from_parts(arrays: Mapping[str, Any], info: dict[str, Any]) -> SAEResult:
    ints = ("n_tokens", "n_quantile_samples", "cooc_n_chunks", "cooc_total_chunks")
    # dict[str, Any]: the fields are spread by name below, each of its own type
    scalars: dict[str, Any] = {s: (int(info[s]) if s in ints else _float(info[s])) for s in SAE_SCALARS}
    splice = SpliceQuality.from_dict(info["splice"]) if info.get("splice") else None
    return SAEResult(hook_name=info["hook_name"], splice=splice, **scalars, **{a: arrays[a] for a in SAE_ARRAYS})


def site_from_parts(arrays: Mapping[str, Any], n: int) -> SiteResult:
    return SiteResult(n=int(n), **{a: arrays[a] for a in SITE_ARRAYS})


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

    def shared_meta(self) -> dict[str, Any]:
        return {"n_tokens": self.n_tokens, "n_positions": self.n_positions, "n_sequences": self.n_sequences,
                "context": self.context, "settings": self.settings, "sources": self.sources, "seconds": self.seconds}

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """One artifact's arrays ("site{i}__name", "sae{i}__name") and meta (kind "harvest")."""
        arrays: dict[str, np.ndarray] = {}
        site_meta, sae_meta_ = {}, {}
        for i, (name, site) in enumerate(self.sites.items()):
            for a in SITE_ARRAYS:
                arrays[f"site{i}__{a}"] = compact(a, getattr(site, a))
            site_meta[name] = {"index": i, "n": int(site.n)}
        for i, (label, sae) in enumerate(self.saes.items()):
            for a in SAE_ARRAYS:
                arrays[f"sae{i}__{a}"] = compact(a, getattr(sae, a))
            sae_meta_[label] = {"index": i, **sae_meta(sae)}
        return arrays, {"kind": "harvest", "sites": site_meta, "saes": sae_meta_, **self.shared_meta()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "HarvestResult":
        if meta.get("kind") != "harvest":
            raise AtlasError("This cached artifact is not a harvest result.")
        try:
            # in harvest order (the meta's JSON objects come back with sorted keys)
            site_items = sorted(meta["sites"].items(), key=lambda item: item[1]["index"])
            sae_items = sorted(meta["saes"].items(), key=lambda item: item[1]["index"])
            sites = {name: site_from_parts({a: arrays[f"site{info['index']}__{a}"] for a in SITE_ARRAYS}, info["n"])
                     for name, info in site_items}
            saes = {label: sae_from_parts({a: arrays[f"sae{info['index']}__{a}"] for a in SAE_ARRAYS}, info)
                    for label, info in sae_items}
        except KeyError as error:
            raise AtlasError(f"This harvest artifact lacks {error}: it was made by another version of Atlas; "
                             "harvest again.") from None
        return cls(sites=sites, saes=saes, n_tokens=int(meta["n_tokens"]),
                   n_positions=int(meta["n_positions"]), n_sequences=int(meta["n_sequences"]),
                   context=int(meta["context"]), settings=dict(meta["settings"]),
                   sources=dict(meta.get("sources", {})), seconds=float(meta.get("seconds", 0.0)))

    def save(self, store: Any, key: str) -> None:
        """Per-site and per-SAE artifacts (reused by harvests of other SAE sets), and the harvest under
        `key` assembled from them by hard links (written once; see core.harvest.components). A result
        without recorded sources has no component keys: it is saved as one artifact."""
        if not self.sources.get("saes") and not self.sources.get("model"):
            store.save(key, *self.to_arrays())
            return
        self.save_components(store, list(self.sites), range(len(self.saes)))
        assemble(store, key, self.sources, self.settings, list(self.sites), list(self.saes), seconds=self.seconds)

    def save_components(self, store: Any, sites: Any, sae_indices: Any) -> None:
        """This result's sites `sites` and its SAEs, in order, as the sae_indices-th SAEs of `self.sources`
        (a pass over the missing SAEs of a larger set saves them under their place in that set)."""
        shared = {k: v for k, v in self.shared_meta().items() if k != "sources"}
        for name in sites:
            site = self.sites[name]
            save_site(store, self.sources, self.settings, name, {a: getattr(site, a) for a in SITE_ARRAYS},
                      {"n": int(site.n), **shared})
        for index, sae in zip(sae_indices, self.saes.values()):
            save_sae(store, self.sources, self.settings, index, {a: getattr(sae, a) for a in SAE_ARRAYS},
                     {**sae_meta(sae), **shared})

    @classmethod
    def load(cls, store: Any, key: str) -> "HarvestResult | None":
        artifact = store.load(key)
        return None if artifact is None else cls.from_arrays(artifact.arrays, artifact.meta)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def finalize(state: HarvestState, corpus_tokens: torch.Tensor | np.ndarray, sources: dict | None = None,
             seconds: float = 0.0) -> HarvestResult:
    """Results of a (merged) state; context token windows are read from the corpus tokens."""
    state.flush()
    s = state.settings
    sites = {}
    for name, moments in state.moments.items():
        arrays: dict[str, Any] = {k: v for k, v in moments.result().items() if k != "n"}
        arrays.update(state.reservoirs[name].result())
        sites[name] = SiteResult(n=int(moments.n), **arrays)
    saes = {}
    for label, stats in state.features.items():
        r = stats.result()
        r.update(state.cooc[label].result())
        r["top_tokens"] = context_windows(corpus_tokens, r["top_chunk"], r["top_pos"], s.window_left, s.window_right)
        q_chunk = r.pop("quantile_chunk")
        cells = np.flatnonzero(q_chunk.reshape(-1) >= 0)
        r["q_cells"] = cells
        r["q_chunk"] = q_chunk.reshape(-1)[cells]
        r["q_pos"] = r.pop("quantile_pos").reshape(-1)[cells]
        r["q_values"] = r.pop("quantile_values").reshape(-1)[cells]
        r["q_acts"] = r.pop("quantile_acts").reshape(-1, r["top_acts"].shape[-1])[cells]
        r["q_tokens"] = context_windows(corpus_tokens, r["q_chunk"], r["q_pos"], s.window_left, s.window_right)
        splice = state.splice.get(label)
        saes[label] = SAEResult(hook_name=label.split("#")[0], hist_edges=s.hist_edges,
                                quantile_edges=s.quantile_edges, n_quantile_samples=s.quantile_samples,
                                splice=splice.result() if splice is not None else None, **r)
    return HarvestResult(sites=sites, saes=saes, n_tokens=state.n_tokens, n_positions=state.n_positions,
                         n_sequences=state.n_sequences, context=state.context, settings=s.to_dict(),
                         sources=sources or {}, seconds=seconds)
