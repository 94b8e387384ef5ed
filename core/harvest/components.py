"""The harvest in the store, per SAE and per site, so that a new SAE set computes only what is new.

Layout (all in one ArtifactStore):
    kind "harvest-site"   one per (model, corpus, site, site settings): mean, cov, reservoir arrays
    kind "harvest-sae"    one per (model, corpus, SAE, SAE settings): every SAE statistic + its meta
    kind "harvest"        one per (model, corpus, SAE set, settings) = `harvest_key(...)`: the arrays of its
                          components under "site{i}__" / "sae{i}__" names, hard-linked from the component
                          artifacts (bytes written once), plus the meta `HarvestResult.from_arrays` reads
A harvest artifact is self-contained (a bundle exports it alone), and its components are what
`harvest_cached` looks for first: a harvest for another SAE set reuses every SAE and site already there.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

SITE_ARRAYS = ("mean", "cov", "reservoir", "reservoir_chunk", "reservoir_pos", "reservoir_token")
SAE_ARRAYS = ("l1_mass", "fire_count", "max_act", "hist", "hist_edges", "top_values", "top_chunk", "top_pos",
              "top_tokens", "top_acts", "quantile_edges", "q_cells", "q_values", "q_chunk", "q_pos", "q_tokens",
              "q_acts", "cooc_chunks", "cooc_offsets", "cooc_ids", "l1_snapshot_tokens", "l1_snapshots")


def compact(name: str, array: np.ndarray) -> np.ndarray:
    """Integer arrays stored in the smallest of int16 / int32 that holds them (the rest as they are)."""
    array = np.asarray(array)
    if array.dtype.kind not in "iu" or name in ("fire_count", "l1_snapshot_tokens") or array.size == 0:
        return array
    lo, hi = int(array.min()), int(array.max())
    for dtype in (np.int16, np.int32):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return array.astype(dtype) if np.dtype(dtype).itemsize < array.dtype.itemsize else array
    return array


# settings that change only per-SAE statistics, or only per-site ones ("sites" changes neither)
SAE_FIELDS = ("top_k", "window_left", "window_right", "hist_min", "hist_max", "hist_bins_per_decade",
              "quantile_bands_per_decade", "quantile_samples", "cooc_chunk_tokens", "cooc_threshold",
              "cooc_sample_chunks", "splice_tokens")
SITE_FIELDS = ("reservoir_size",)


def _settings_for(settings: dict[str, Any], leave_out: Sequence[str]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "sites" and k not in leave_out}


def site_key(sources: dict[str, Any], settings: dict[str, Any], site: str) -> str:
    from core.store import artifact_key

    return artifact_key(kind="harvest-site", site=site, model=sources.get("model"), corpus=sources.get("corpus"),
                        settings=_settings_for(settings, SAE_FIELDS))


def sae_key(sources: dict[str, Any], settings: dict[str, Any], index: int) -> str:
    """Key of the index-th SAE of `sources` (its description, not its place in the set)."""
    from core.store import artifact_key

    return artifact_key(kind="harvest-sae", sae=sources["saes"][index], model=sources.get("model"),
                        corpus=sources.get("corpus"), settings=_settings_for(settings, SITE_FIELDS))


def save_site(store: Any, sources: dict[str, Any], settings: dict[str, Any], name: str,
              arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    store.save(site_key(sources, settings, name), {a: compact(a, arrays[a]) for a in SITE_ARRAYS},
               {"kind": "harvest-site", "site": name, **meta})


def save_sae(store: Any, sources: dict[str, Any], settings: dict[str, Any], index: int,
             arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    store.save(sae_key(sources, settings, index), {a: compact(a, arrays[a]) for a in SAE_ARRAYS},
               {"kind": "harvest-sae", **meta})


def missing_components(store: Any, sources: dict[str, Any], settings: dict[str, Any], sites: Sequence[str],
                       n_saes: int) -> tuple[list[str], list[int]]:
    """(sites, SAE indices) whose component artifacts the store lacks."""
    # load, not has: a component that fails the store's checks is removed by it (with a notice) and is
    # then missing, so it is recomputed instead of being linked into a new harvest
    return ([s for s in sites if store.load(site_key(sources, settings, s)) is None],
            [i for i in range(n_saes) if store.load(sae_key(sources, settings, i)) is None])


def assemble(store: Any, key: str, sources: dict[str, Any], settings: dict[str, Any], sites: Sequence[str],
             labels: Sequence[str], seconds: float | None = None) -> None:
    """The harvest artifact `key` from its component artifacts (hard links; see the module docstring)."""
    files, site_meta, saes_meta, shared = {}, {}, {}, None
    for i, name in enumerate(sites):
        k = site_key(sources, settings, name)
        artifact = store.load(k)
        for a in SITE_ARRAYS:
            files[f"site{i}__{a}"] = artifact.path / f"{a}.npy"
        site_meta[name] = {"index": i, "n": int(artifact.meta["n"])}
        shared = shared or artifact.meta
    for i, label in enumerate(labels):
        k = sae_key(sources, settings, i)
        artifact = store.load(k)
        for a in SAE_ARRAYS:
            files[f"sae{i}__{a}"] = artifact.path / f"{a}.npy"
        info = {f: artifact.meta[f] for f in artifact.meta if f not in ("kind", "settings", "seconds")}
        saes_meta[label] = {**info, "index": i, "hook_name": label.split("#")[0]}
        shared = shared or artifact.meta
    shared = shared or {}
    meta = {"kind": "harvest", "sites": site_meta, "saes": saes_meta, "settings": settings, "sources": sources,
            "seconds": float(seconds if seconds is not None else shared.get("seconds", 0.0)),
            "components": {"sites": {n: site_key(sources, settings, n) for n in sites},
                           "saes": {label: sae_key(sources, settings, i) for i, label in enumerate(labels)}},
            **{f: int(shared.get(f, 0)) for f in ("n_tokens", "n_positions", "n_sequences", "context")}}
    store.save_linked(key, files, meta)


def link_components(store: Any, key: str) -> list[str]:
    """The component artifacts of the harvest `key` (as `HarvestResult.save` writes them), made from the
    harvest's own files by hard links: a harvest that arrived whole (the prebuilt snapshot, core.snapshot)
    then serves other SAE sets like one computed here. Returns the component keys written (none when the
    harvest is missing, has no recorded components, or they are all present)."""
    artifact = store.load(key)
    if artifact is None or artifact.meta.get("kind") != "harvest" or "components" not in artifact.meta:
        return []
    meta = artifact.meta
    shared = {f: meta[f] for f in ("n_tokens", "n_positions", "n_sequences", "context", "settings", "seconds")}
    written = []
    for name, info in meta["sites"].items():
        k = meta["components"]["sites"].get(name)
        if k and store.load(k) is None:
            files = {a: artifact.path / f"site{info['index']}__{a}.npy" for a in SITE_ARRAYS}
            store.save_linked(k, files, {"kind": "harvest-site", "site": name, **shared, "n": int(info["n"])})
            written.append(k)
    for label, info in meta["saes"].items():
        k = meta["components"]["saes"].get(label)
        if k and store.load(k) is None:
            files = {a: artifact.path / f"sae{info['index']}__{a}.npy" for a in SAE_ARRAYS}
            own = {f: v for f, v in info.items() if f != "index"}
            store.save_linked(k, files, {"kind": "harvest-sae", **shared, **own})
            written.append(k)
    return written


__all__ = ["SAE_ARRAYS", "SAE_FIELDS", "SITE_ARRAYS", "SITE_FIELDS", "assemble", "compact", "link_components", "missing_components",
           "sae_key", "save_sae", "save_site", "site_key"]
