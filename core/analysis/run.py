"""Every analysis these inputs allow, in one call (the CLI, the verify card and bundles use it)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from core.analysis.checkpoints import spectra_over_checkpoints
from core.analysis.circles import cyclic_token_ids
from core.analysis.concepts import ground_truth_geometry, organism_ground_truth
from core.analysis.geometry import geometry_by_layer
from core.analysis.keys import (
    ProgressFn,
    harvest_key_of,
    report,
)
from core.analysis.spectra import spectra_by_layer
from core.analysis.superposition import superposition_by_layer


def run_all(model: Any, saes: Sequence[Any], harvest: Any, ground_truth: Mapping[str, Any] | None = None,
            store: Any = None, progress: ProgressFn | None = None, checkpoints: bool | Sequence[str] = False,
            n_permutations: int = 100, checkpoint_max_tokens: int = 4096,
            harvest_key: str | None = None, cluster: Any = None) -> dict[str, Any]:
    """Every analysis these inputs allow; {"spectra", "superposition", "geometry", "ground_truth",
    ["checkpoints"], "artifact_keys"}. The organism's ground truth is used when none is given and the
    model is the organism. Checkpoint phases run only when asked (they load every checkpoint):
    `checkpoints` True for all of the organism's checkpoints, or a list of their identifiers, each
    harvested on `checkpoint_max_tokens` tokens (as parallel Ray tasks on `cluster`, a
    core.harvest.distributed.RayCluster, when given). `n_permutations`: the lobes' AMI null."""
    if ground_truth is None:
        ground_truth = organism_ground_truth(model)
    hkey = harvest_key or harvest_key_of(harvest)
    out: dict[str, Any] = {}
    report(progress, 0.0, "spectra")
    out["spectra"] = spectra_by_layer(harvest, store, harvest_key=hkey)
    report(progress, 0.2, "superposition")
    out["superposition"] = superposition_by_layer(harvest, saes, model, store, harvest_key=hkey) if saes else \
        {"skipped": "no SAE loaded"}
    report(progress, 0.35, "geometry")
    out["geometry"] = geometry_by_layer(harvest, saes, store, n_permutations=n_permutations,
                                        cyclic_token_ids=cyclic_token_ids(model, ground_truth),
                                        harvest_key=hkey) if saes else {"skipped": "no SAE loaded"}
    report(progress, 0.7, "ground-truth geometry")
    out["ground_truth"] = ground_truth_geometry(model, ground_truth, store)
    if checkpoints and getattr(getattr(model, "spec", None), "source", None) == "organism":
        names = None if checkpoints is True else list(checkpoints)
        report(progress, 0.8, f"spectra over {'all' if names is None else len(names)} checkpoints")
        out["checkpoints"] = spectra_over_checkpoints(model.spec.path, names,
                                                      max_tokens=checkpoint_max_tokens, store=store,
                                                      cluster=cluster)
    report(progress, 1.0, "done")
    out["artifact_keys"] = [v["key"] for v in out.values() if isinstance(v, dict) and "key" in v]
    return out
