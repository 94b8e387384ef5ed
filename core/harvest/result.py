"""What a harvest measured, as plain numpy arrays: per-site and per-SAE results, saved to and loaded from the store."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.errors import AtlasError
from core.harvest.state import HarvestState


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
