"""Cache keys and the cache itself for analysis views: a view is computed once per (what it read, its settings, ANALYSIS_VERSION)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from core.errors import AtlasError
from core.hooks import sorted_sites
from core.jsonable import jsonable as to_json

ANALYSIS_VERSION = "analysis-3"  # 2: circles at the token and at the answer position; 3: toy lab from one model
ProgressFn = Callable[[float, str], None]  # (fraction done in [0, 1], what is running)


class AnalysisError(AtlasError):
    """An analysis cannot run on these inputs (a missing artifact, too few items, ...)."""


# ---------------------------------------------------------------------------------------------
# JSON, keys, cache
# ---------------------------------------------------------------------------------------------
def harvest_key_of(harvest: Any) -> str:
    """The store key of a harvest, recomputed from what it records (equals core.harvest.harvest_key)."""
    from core.store import artifact_key

    return artifact_key(kind="harvest", sources=harvest.sources, settings=harvest.settings)


def model_identity(model: Any) -> dict[str, Any]:
    """What identifies a model's weights for a cache key (name, source, origin, revision, dtype)."""
    card = getattr(model, "card", None)
    if card is None:
        return {"name": type(model).__name__, "id": id(model)}
    return {k: getattr(card, k, None) for k in ("name", "source", "origin", "revision", "dtype")}


def ground_truth_digest(ground_truth: Mapping[str, Any]) -> str:
    text = json.dumps(to_json(ground_truth), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def analysis_key(name: str, **parts: Any) -> str:
    from core.store import artifact_key

    return artifact_key(kind=f"analysis:{name}", analysis_version=ANALYSIS_VERSION, **to_json(parts))


def cached_result(store: Any, name: str, parts: Mapping[str, Any], compute: Callable[[], dict]) -> dict:
    """compute() unless the store holds the result under the key of (name, parts); JSON-safe result
    with its "key" and "name" set."""
    key = analysis_key(name, **parts)
    if store is not None:
        artifact = store.load(key)
        if artifact is not None and "result" in artifact.meta:
            return artifact.meta["result"]
    result = to_json(compute())
    result["key"] = key
    result["name"] = name
    if store is not None:
        store.save(key, {}, {"kind": f"analysis:{name}", "result": result})
    return result


def report(progress: ProgressFn | None, fraction: float, text: str) -> None:
    if progress is not None:
        progress(float(min(1.0, max(0.0, fraction))), text)


def as_float64(t: Any) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64) if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def harvested_hooks(harvest: Any, saes: Sequence[Any]) -> tuple[dict[str, Any], list[str]]:
    """The loaded SAEs by hook name, and the hooks of those the harvest covered, in layer order."""
    by_hook = {s.hook_name: s for s in saes}
    hooks = sorted_sites([h for h in harvest.saes if h in by_hook])
    if not hooks:
        raise AnalysisError("None of the loaded SAEs was harvested: run the harvest with these SAEs.")
    return by_hook, hooks


def skip_on_error(call: Callable[[], dict]) -> dict:
    try:
        return call()
    except AtlasError as error:
        return {"skipped": str(error)}
