"""Every analysis these inputs allow, in one call (the CLI, the verify card and bundles use it)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

from core.analysis.checkpoints import spectra_over_checkpoints
from core.analysis.circles import cyclic_token_ids
from core.analysis.concept_views import default_concept_views
from core.analysis.concepts import ground_truth_geometry, organism_ground_truth
from core.analysis.geometry import geometry_by_layer
from core.analysis.keys import (
    ProgressFn,
    harvest_key_of,
    report,
)
from core.analysis.results import AllAnalyses, Skipped, SpectraOverCheckpoints
from core.analysis.spectra import spectra_by_layer
from core.analysis.superposition import superposition_by_layer
from core.sources.faces import ModelFace, SAEFace

DEFAULT_MAP_METHOD = "pca"   # the pages' default layout (app registry "map_method": "PCA (quick)")

if TYPE_CHECKING:
    from core.harvest.distributed import RayCluster
    from core.harvest.result import HarvestResult
    from core.store import ArtifactStore


def run_all(model: ModelFace, saes: Sequence[SAEFace], harvest: HarvestResult,
            ground_truth: Mapping[str, Any] | None = None, *, store: ArtifactStore | None = None,
            progress: ProgressFn | None = None, checkpoints: bool | Sequence[str] = False,
            n_permutations: int = 100, checkpoint_max_tokens: int = 4096,
            harvest_key: str | None = None, cluster: RayCluster | None = None) -> AllAnalyses:
    """Every analysis these inputs allow (`AllAnalyses`; its `artifact_keys` are the stored views).
    The organism's ground truth is used when none is given and the model is the organism. Checkpoint
    phases run only when asked (they load every checkpoint): `checkpoints` True for all of the
    organism's checkpoints, or a list of their identifiers, each harvested on `checkpoint_max_tokens`
    tokens (as parallel Ray tasks on `cluster`, a core.harvest.distributed.RayCluster, when given).
    `n_permutations`: the lobes' AMI null."""
    if ground_truth is None:
        ground_truth = organism_ground_truth(model)
    hkey = harvest_key or harvest_key_of(harvest)
    no_saes = Skipped("no SAE loaded")
    report(progress, 0.0, "spectra")
    spectra = spectra_by_layer(harvest, store=store, harvest_key=hkey)
    report(progress, 0.2, "superposition")
    superposition = superposition_by_layer(harvest, saes, model, store=store, harvest_key=hkey) if saes else no_saes
    report(progress, 0.35, "geometry")
    geometry = geometry_by_layer(harvest, saes, store=store, n_permutations=n_permutations,
                                 cyclic_token_ids=cyclic_token_ids(model, ground_truth),
                                 harvest_key=hkey) if saes else no_saes
    report(progress, 0.7, "ground-truth geometry")
    truth = ground_truth_geometry(model, ground_truth, store=store)
    over: SpectraOverCheckpoints | Skipped = Skipped("checkpoint phases were not asked for" if not checkpoints
                        else "checkpoint phases run on the organism's own checkpoints only")
    if checkpoints and model.spec.source == "organism":
        names = None if checkpoints is True else list(checkpoints)
        report(progress, 0.8, f"spectra over {'all' if names is None else len(names)} checkpoints")
        over = spectra_over_checkpoints(model.spec.path, names, max_tokens=checkpoint_max_tokens, store=store,
                                        cluster=cluster)
    report(progress, 0.85, "feature maps, lobes and the default concept views")
    views: tuple[str, ...] = ()
    if store is not None:
        views = page_views(harvest, saes, store=store, harvest_key=hkey) + default_concept_views(model, store=store)
    report(progress, 1.0, "done")
    return AllAnalyses(spectra=spectra, superposition=superposition, geometry=geometry, ground_truth=truth,
                       checkpoints=over, page_views=views)


def page_views(harvest: HarvestResult, saes: Sequence[SAEFace], *, store: ArtifactStore,
               harvest_key: str | None = None) -> tuple[str, ...]:
    """What the Features and Probe pages read per SAE besides the views above, stored so that no page computes
    it on a first visit: the feature map in the pages' default layout (PCA: seconds at 24k features) and the
    lobes with the default settings (geometry_by_layer stores them when it ran with those; else computed).
    Returns their keys. The UMAP layout is the user's choice and is fitted when first asked for."""
    from core import feature_map as fm
    from core.analysis.geometry import lobes_view

    keys: list[str] = []
    for sae in saes:
        W_dec = sae.W_dec.detach().cpu().numpy()
        method = fm.resolve_method(W_dec, DEFAULT_MAP_METHOD)
        stored_map = fm.feature_map(W_dec, store, method, key=fm.feature_map_key(W_dec, method, 15, 0.1, 0))
        if stored_map.key:
            keys.append(stored_map.key)
        if sae.hook_name in harvest.saes:
            view = lobes_view(harvest, sae, store=store, harvest_key=harvest_key)
            if view.key:
                keys.append(view.key)
    return tuple(keys)
