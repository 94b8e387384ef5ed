"""Running the dashboard's intervention requests (core.interventions.requests) with the app's store, progress
and session bookkeeping: one call for the Steer page and the "What does this feature do?" action.

    result = stored_or_run(request, model, sae, run_now=clicked, purpose="steer:steering")

A result is looked up under its request's content key, first in this machine's store, then (for a session
opened from a bundle) in that import's read-only namespace; it is computed only when asked (`run_now`) and
missing, under a progress bar, and saved in the local store. Either way its key is recorded for the session
(app.state.remember_artifact), so "Save session" and bundles carry it and a reopened session shows it
without running anything.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.feature_labels import sae_key
from app.resources import get_store, peek_harvest, restored_namespace
from app.state import remember_artifact
from app.widgets import working
from core.interventions.requests import (
    RESULT_TYPES,
    PatchRequest,
    Request,
    load_result,
    needs_harvest,
    request_key,
    run_request,
)

LABELS = {"SteerRequest": "Generating the unsteered and the steered completions...",
          "AblationRequest": "Ablating...", "PatchRequest": "Patching every layer and position..."}


def harvest_stats(hook: str) -> tuple[Any, str | None]:
    """(the SAE's harvest statistics, the harvest's key) when the harvest is at hand, else (None, None).
    Never harvests: max-activation strengths and mean ablation ask for it in their message."""
    harvested = peek_harvest()
    if harvested is None or hook not in harvested[0].saes:
        return None, None
    return harvested[0].saes[hook], harvested[1]


def key_of(request: Request, model: Any, sae: Any = None) -> str:
    harvest_key = harvest_stats(request.hook_name)[1] if needs_harvest(request) else None  # type: ignore[union-attr]
    return request_key(model, request, sae_id=None if isinstance(request, PatchRequest) else sae_key(sae),
                       harvest_key=harvest_key)


def stored_result(request: Request, model: Any, sae: Any = None) -> Any | None:
    """The request's stored result (local store, then a restored bundle's namespace), or None."""
    from core.store import StoreView

    store = get_store()
    namespace = restored_namespace()
    view = StoreView(store, store.namespace(namespace)) if namespace else store
    return load_result(view, key_of(request, model, sae), RESULT_TYPES[type(request)])


def stored_or_run(request: Request, model: Any, sae: Any = None, *, run_now: bool, purpose: str) -> Any | None:
    """The stored result, else (when `run_now`) the computed one; None when neither. An AtlasError
    (InterventionError) propagates: callers wrap this in app.widgets.guarded."""
    key = key_of(request, model, sae)
    result = stored_result(request, model, sae)
    if result is None and run_now:
        stats = harvest_stats(request.hook_name)[0] if needs_harvest(request) else None  # type: ignore[union-attr]
        with working(LABELS[type(request).__name__], expanded=True):
            bar = st.progress(0.0, text="starting")

            def progress(done: int, total: int, seconds_left: float) -> None:
                bar.progress(min(1.0, done / max(total, 1)),
                             text=f"{done:,} / {total:,} steps, about {seconds_left:.0f} s left")

            result = run_request(get_store(), key, request, model, sae, stats=stats, progress=progress)
    if result is not None:
        remember_artifact(purpose, key)
    return result
