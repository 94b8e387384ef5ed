"""Cache keys and the cache itself for analysis views: a view is computed once per (what it read, its settings, ANALYSIS_VERSION)."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

import numpy as np
import torch

from core.analysis.results import Skipped
from core.errors import AtlasError
from core.hooks import sorted_sites
from core.jsonable import Result, ResultFormatError
from core.jsonable import jsonable as to_json
from core.sources.faces import ModelFace, SAEFace

if TYPE_CHECKING:
    from core.harvest.result import HarvestResult
    from core.store import ArtifactStore

# 2: circles at the token and at the answer position; 3: toy lab from one model; 4: typed results (core.analysis.results)
ANALYSIS_VERSION = "analysis-4"
ProgressFn = Callable[[float, str], object]  # (fraction done in [0, 1], what is running); its return is ignored
R = TypeVar("R", bound=Result)
T = TypeVar("T")


class AnalysisError(AtlasError):
    """An analysis cannot run on these inputs (a missing artifact, too few items, ...)."""


# ---------------------------------------------------------------------------------------------
# JSON, keys, cache
# ---------------------------------------------------------------------------------------------
def harvest_key_of(harvest: HarvestResult) -> str:
    """The store key of a harvest, recomputed from what it records (equals core.harvest.harvest_key)."""
    from core.store import artifact_key

    return artifact_key(kind="harvest", sources=harvest.sources, settings=harvest.settings)


def model_identity(model: ModelFace) -> dict[str, Any]:
    """What identifies a model's weights for a cache key (name, source, origin, revision, dtype)."""
    card = getattr(model, "card", None)
    if card is None:
        return {"name": type(model).__name__, "id": id(model)}
    from core.harvest.run import key_origin

    return {**{k: getattr(card, k, None) for k in ("name", "source", "revision", "dtype")}, "origin": key_origin(card)}


def ground_truth_digest(ground_truth: Mapping[str, Any]) -> str:
    text = json.dumps(to_json(ground_truth), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def analysis_key(name: str, **parts: Any) -> str:
    from core.store import artifact_key

    return artifact_key(kind=f"analysis:{name}", analysis_version=ANALYSIS_VERSION, **to_json(parts))


def cached_result(store: ArtifactStore | None, name: str, parts: Mapping[str, Any], compute: Callable[[], R],
                  kind: type[R]) -> R:
    """compute() unless the store holds the result under the key of (name, parts); the result carries
    its `key`. The store keeps `result.to_dict()` (JSON) and gives back `kind.from_dict` of it; a
    fresh result goes through the same round trip, so a view reads the same whether it was cached or
    not (NaN stays NaN, arrays are float64 / int64 as the type declares). A stored document that no
    longer fits the type (written by other code) is computed afresh and replaced."""
    key = analysis_key(name, **parts)
    if store is not None:
        artifact = store.load(key)
        if artifact is not None and "result" in artifact.meta:
            try:
                return kind.from_dict(artifact.meta["result"])
            except ResultFormatError:
                pass
    document = {**compute().to_dict(), "key": key}
    if store is not None:
        store.save(key, {}, {"kind": f"analysis:{name}", "result": document})
    return kind.from_dict(document)


def report(progress: ProgressFn | None, fraction: float, text: str) -> None:
    if progress is not None:
        progress(float(min(1.0, max(0.0, fraction))), text)


def as_float64(t: torch.Tensor | np.ndarray) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64) if isinstance(t, torch.Tensor) else np.asarray(t, np.float64)


def harvested_hooks(harvest: HarvestResult, saes: Sequence[SAEFace]) -> tuple[dict[str, SAEFace], list[str]]:
    """The loaded SAEs by hook name, and the hooks of those the harvest covered, in layer order."""
    by_hook = {s.hook_name: s for s in saes}
    hooks = sorted_sites([h for h in harvest.saes if h in by_hook])
    if not hooks:
        raise AnalysisError("None of the loaded SAEs was harvested: run the harvest with these SAEs.")
    return by_hook, hooks


def skip_on_error(call: Callable[[], T]) -> T | Skipped:
    """call(), or Skipped(the message) when it raises an AtlasError (these inputs do not allow it)."""
    try:
        return call()
    except AtlasError as error:
        return Skipped(str(error))
