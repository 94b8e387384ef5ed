"""Geometry of the SAE decoder cloud and the harvest: galaxy spectrum, clustering entropy, lobes, decoder-cluster circles
(Li et al. 2024; Engels et al. 2024)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import torch

from core.analysis.keys import (
    AnalysisError,
    ProgressFn,
    as_float64,
    cached_result,
    harvest_key_of,
    harvested_hooks,
    report,
    skip_on_error,
)
from core.analysis.results import (
    DecoderCluster,
    DecoderClusters,
    GeometryByLayer,
    Lobes,
    LobesView,
    SAEGeometry,
    Skipped,
)
from core.errors import AtlasError
from core.metrics.circles import Circularity
from core.sources.faces import SAEFace

if TYPE_CHECKING:
    from core.harvest.result import HarvestResult, SAEResult, SiteResult
    from core.store import ArtifactStore


MAX_CODES_BYTES = 3 * 2**30  # decoder circles encode the reservoir densely: reservoir x d_sae float64


def default_clusters(n: int, per_cluster: int, low: int = 2, high: int = 64) -> int:
    return int(min(high, max(low, round(n / per_cluster))))


def lobes_for_sae(stats: SAEResult, W_dec: np.ndarray, *, n_lobes: int | None = None, affinity: str = "phi",
                  max_features: int = 1500, n_permutations: int = 100, seed: int = 0) -> Lobes | Skipped:
    """Lobes of one SAE (Li et al. 2024): co-occurrence affinity over chunks -> spectral clusters,
    decoder-angle spectral clusters, and their AMI against a label-permutation null.

    Features used: those that fired in some but not every counted chunk (a constant feature has phi 0
    with everything), the `max_features` most frequent of them when there are more (a documented sample:
    at any d_sae the affinities are [max_features, max_features], 18 MB at 1,500). The counts are read
    through the harvest's accessors (`cooc_fired`, `cooc_submatrix`): no d_sae x d_sae matrix is built.
    """
    from core.metrics.geometry import (
        cooccurrence_affinity,
        geometric_clusters,
        lobe_agreement,
        lobes,
    )

    n_chunks = int(stats.cooc_n_chunks)
    if n_chunks < 2:
        return Skipped(f"only {n_chunks} co-occurrence chunk(s): harvest more tokens for lobes")
    fired = np.asarray(stats.cooc_fired(), dtype=np.int64)
    usable = np.flatnonzero((fired > 0) & (fired < n_chunks))
    if usable.size > max_features:
        usable = usable[np.argsort(-fired[usable], kind="stable")[:max_features]]
        usable.sort()
    if usable.size < 8:
        return Skipped(f"only {usable.size} features vary across chunks: harvest more tokens for lobes")
    k = int(n_lobes) if n_lobes else default_clusters(usable.size, 25, 2, 20)
    k = max(2, min(k, usable.size // 2))
    sub = np.asarray(stats.cooc_submatrix(usable), dtype=np.float64)
    A = cooccurrence_affinity(sub, n_chunks, kind=affinity)
    lobe_labels = lobes(A, k, offset=1.0 if affinity == "phi" else 0.0, seed=seed)
    W = np.asarray(W_dec, dtype=np.float64)[usable]
    geo = geometric_clusters(W, k, seed=seed)
    agreement = lobe_agreement(geo, lobe_labels, n_permutations=n_permutations, seed=seed)
    return Lobes(features=usable, n_lobes=k, affinity=affinity, n_chunks=n_chunks, labels=lobe_labels,
                 geometric=geo, agreement=agreement, lobe_sizes=np.bincount(lobe_labels, minlength=k))


def decoder_circles_for_sae(sae: SAEFace, site: SiteResult, W_dec: np.ndarray, *, n_clusters: int | None = None,
                            cyclic_token_ids: Mapping[str, Sequence[int]] | None = None, top_clusters: int = 6,
                            max_points: int = 600, seed: int = 0) -> DecoderClusters | Skipped:
    """Engels et al. 2024: spectral clusters of decoder directions, then the PCA of each cluster's
    reconstructions r_t = sum_{i in cluster, z_ti > 0} z_ti W_dec[i] over the harvest's reservoir tokens.

    Clusters are ranked by the share of their reconstruction mass on the cyclic tokens (weekdays,
    months) when `cyclic_token_ids` is given, else by total mass; the top ones keep their PCA.
    """
    from core.metrics.circles import circularity, cluster_reconstruction_pca, decoder_clusters
    from core.metrics.knn import EXACT_MAX_ROWS

    n_samples, d_sae = int(site.reservoir.shape[0]), int(W_dec.shape[0])
    if n_samples < 10:
        return Skipped("the harvest kept fewer than 10 reservoir samples at this site")
    codes_bytes = n_samples * d_sae * 8
    if codes_bytes > MAX_CODES_BYTES:  # said before anything is encoded; the other parts still run
        return Skipped(f"the codes of {n_samples:,} reservoir samples x {d_sae:,} features would take "
                       f"{codes_bytes / 1e9:.1f} GB (limit {MAX_CODES_BYTES / 1e9:.1f} GB): harvest with a "
                       f"smaller reservoir_size")
    X = torch.from_numpy(np.array(site.reservoir, dtype=np.float32))  # a writable copy of the mmap
    tokens = np.asarray(site.reservoir_token, dtype=np.int64)
    Z = sae.encode(X).cpu().numpy().astype(np.float64)
    W = np.asarray(W_dec, dtype=np.float64)
    k = int(n_clusters) if n_clusters else default_clusters(W.shape[0], 20, 2, 200)
    labels = decoder_clusters(W, k, seed=seed)
    method = ("exact spectral clustering of every decoder row" if d_sae <= EXACT_MAX_ROWS else
              f"spectral clustering of a uniform sample of {EXACT_MAX_ROWS:,} of {d_sae:,} decoder rows; "
              f"the others by their 5 nearest sampled rows")
    cyclic = {name: set(int(t) for t in ids) for name, ids in (cyclic_token_ids or {}).items()}
    cyc_all = set().union(*cyclic.values()) if cyclic else set()
    on_cyclic = np.isin(tokens, list(cyc_all)) if cyc_all else np.zeros(tokens.size, bool)
    scores = []
    for c in range(k):
        members = np.flatnonzero(labels == c)
        mass = np.clip(Z[:, members], 0, None).sum(1)
        total = float(mass.sum())
        share = float(mass[on_cyclic].sum() / total) if total > 0 else 0.0
        scores.append((share if cyc_all else total, total, c))
    ranked = [c for _, total, c in sorted(scores, reverse=True) if total > 0][:top_clusters]
    score_of = {c: score for score, _, c in scores}
    clusters = []
    for c in ranked:
        members = np.flatnonzero(labels == c)
        try:
            pca = cluster_reconstruction_pca(Z, W, members, n_components=5, seed=seed)
        except AtlasError:
            continue
        keep = pca.token_indices
        sel = np.arange(keep.size)
        if sel.size > max_points:
            sel = np.sort(np.random.default_rng(seed).choice(sel.size, max_points, replace=False))
        tok = tokens[keep]
        counts = np.bincount(tok, minlength=1)
        top_tokens = np.argsort(-counts)[:8]
        # Circularity of the cluster: the mean reconstruction PCs of each cyclic item, when all occur.
        circles: dict[str, Circularity] = {}
        for name, ids in (cyclic_token_ids or {}).items():
            ids = list(ids)
            present = [np.flatnonzero(tok == t) for t in ids]
            if all(p.size for p in present) and len(ids) >= 3:
                means = np.stack([pca.projections[p].mean(0) for p in present])
                if np.ptp(means) > 0:  # every item the same: nothing to score
                    circles[name] = circularity(means, n_permutations=200, seed=seed)
        clusters.append(DecoderCluster(
            cluster=int(c), features=members, score=float(score_of[c]), n_tokens=int(keep.size),
            explained_variance_ratio=pca.explained_variance_ratio, projections=pca.projections[sel],
            tokens=tok[sel], top_tokens=tuple(int(t) for t in top_tokens if counts[t] > 0),
            circularity=circles))
    return DecoderClusters(n_clusters=k, cluster_sizes=np.bincount(labels, minlength=k), clusters=tuple(clusters),
                           ranked_by="share of mass on cyclic tokens" if cyc_all else "total reconstruction mass",
                           method=method)


def lobes_view(harvest: HarvestResult, sae: SAEFace, *, store: ArtifactStore | None = None,
               n_lobes: int | None = None, affinity: str = "phi", n_permutations: int = 100,
               harvest_key: str | None = None) -> LobesView:
    """`lobes_for_sae` for one harvested SAE with other settings than geometry_by_layer's, cached."""
    if sae.hook_name not in harvest.saes:
        raise AnalysisError(f"The SAE on {sae.hook_name} was not harvested: run the harvest with it.")
    parts = {"harvest": harvest_key or harvest_key_of(harvest), "hook": sae.hook_name, "n_lobes": n_lobes,
             "affinity": affinity, "n_permutations": n_permutations}
    return cached_result(store, "lobes_view", parts, lambda: LobesView(hook_name=sae.hook_name, lobes=lobes_for_sae(
        harvest.saes[sae.hook_name], as_float64(sae.W_dec), n_lobes=n_lobes, affinity=affinity,
        n_permutations=n_permutations)), LobesView)


def geometry_by_layer(harvest: HarvestResult, saes: Sequence[SAEFace], *, store: ArtifactStore | None = None,
                      n_lobes: int | None = None, affinity: str = "phi", n_permutations: int = 100,
                      n_clusters: int | None = None, cyclic_token_ids: Mapping[str, Sequence[int]] | None = None,
                      harvest_key: str | None = None, progress: ProgressFn | None = None) -> GeometryByLayer:
    """Galaxy spectrum and clustering entropy of the decoder cloud, lobes, and decoder-cluster circles
    per SAE (Li et al. 2024; Engels et al. 2024)."""
    from core.metrics.geometry import clustering_entropy, galaxy_spectrum

    by_hook, hooks = harvested_hooks(harvest, saes)
    hkey = harvest_key or harvest_key_of(harvest)
    parts = {"harvest": hkey, "n_lobes": n_lobes, "affinity": affinity, "n_permutations": n_permutations,
             "n_clusters": n_clusters, "cyclic": {k: list(v) for k, v in (cyclic_token_ids or {}).items()}}

    def sae_entry(hook: str) -> SAEGeometry:
        sae = by_hook[hook]
        W = as_float64(sae.W_dec)
        site = harvest.sites.get(hook)
        return SAEGeometry(
            hook_name=hook,
            galaxy=skip_on_error(lambda: galaxy_spectrum(W)),
            clustering_entropy=skip_on_error(lambda: clustering_entropy(
                W, n_samples=min(W.shape[0], 2000), n_dims=min(100, W.shape[1]), seed=0)),
            # through lobes_view: stored on their own too, so the Features page's lobe colours read them
            lobes=skip_on_error(lambda: lobes_view(harvest, sae, store=store, n_lobes=n_lobes, affinity=affinity,
                                                   n_permutations=n_permutations, harvest_key=hkey).lobes),
            circles=(skip_on_error(lambda: decoder_circles_for_sae(sae, site, W, n_clusters=n_clusters,
                                                                   cyclic_token_ids=cyclic_token_ids))
                     if site is not None else Skipped("the SAE's site was not harvested")))

    def compute() -> GeometryByLayer:
        per_sae = []
        for i, hook in enumerate(hooks):
            report(progress, i / len(hooks), f"geometry of {hook}")
            per_sae.append(sae_entry(hook))
        report(progress, 1.0, "done")
        return GeometryByLayer(per_sae=tuple(per_sae))

    return cached_result(store, "geometry_by_layer", parts, compute, GeometryByLayer)
