"""A page's start-up: its inputs loaded (errors follow the idiom of app/widgets.py), and what the view
relies on recorded for sessions and bundles (the loaders in app/resources.py never write session state).

    model, saes, harvest, key = load_view_inputs()          # records the harvest
    model, saes = load_model_inputs()                       # pages that need no harvest
    result = cached_view("Geometry...", lambda: analysis.geometry_by_layer(...))
    fmap = feature_map(W_dec, method, purpose=f"feature_map:{hook}")   # records the map
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import streamlit as st

from app.resources import current_sources, get_feature_map, get_harvest, get_model, get_saes
from app.state import remember_artifact
from app.widgets import working

if TYPE_CHECKING:
    from core.harvest import HarvestResult


class ModelInputs(NamedTuple):
    model: Any                  # LoadedModel
    saes: list[Any]             # LoadedSAE, in layer order ([] when none was needed and none loaded)


class ViewInputs(NamedTuple):
    model: Any                  # LoadedModel
    saes: list[Any]             # LoadedSAE, in layer order ([] when none was needed and none loaded)
    harvest: HarvestResult
    key: str                    # the harvest's artifact key


def load_model_inputs(*, require_saes: bool = True, no_saes: str | None = None) -> ModelInputs:
    """The current sources' model and SAEs.

    An AtlasError propagates (main.py shows it and the page stops). Without SAEs, `no_saes` (when given) is
    shown as an info line and the page stops; with `require_saes=False` the page goes on with `saes == []`.
    """
    return _model_inputs(current_sources(), require_saes, no_saes)


def load_view_inputs(*, require_saes: bool = True, no_saes: str | None = None) -> ViewInputs:
    """`load_model_inputs` and the sources' harvest, which is recorded for sessions."""
    sources = current_sources()
    model, saes = _model_inputs(sources, require_saes, no_saes)
    result, key = get_harvest(sources)
    remember_artifact("harvest", key)
    return ViewInputs(model, saes, result, key)


def _model_inputs(sources: Any, require_saes: bool, no_saes: str | None) -> ModelInputs:
    model = get_model(sources.model)
    saes = get_saes(sources)
    if (note := checkpoint_mismatch(sources)) is not None:
        st.warning(note)
    if require_saes and not saes:
        st.info(no_saes or "This page needs SAEs: choose them in the sidebar under Sources.")
        st.stop()
    return ModelInputs(model, saes)


def checkpoint_mismatch(sources: Any) -> str | None:
    """A note when the organism's SAEs (trained on its final checkpoint) read an earlier checkpoint: their
    codes then describe another model, and densities near 0.5 or dead features are the sign, not a finding."""
    checkpoint = sources.model.checkpoint
    if sources.model.source != "organism" or checkpoint in (None, "final"):
        return None
    if not any(spec.source == "organism" for spec in sources.saes):
        return None
    return (f"The organism's SAEs were trained on its final checkpoint, and the model now is {checkpoint}: their "
            "features do not describe this checkpoint's activations (expect odd densities and dead features). "
            "Compare checkpoints on the Spectra page, which needs no SAEs, or choose the final checkpoint.")


def cached_view(label: str, compute: Callable[..., Any], *, progress: bool = False) -> Any:
    """`compute()` (an analysis that caches itself in the store) under a status box that goes away when it
    is done. With `progress`, `compute` gets a (fraction, text) callback driving a bar in the box. An
    AtlasError propagates (main.py shows it)."""
    with working(label):
        if progress:
            bar = st.progress(0.0)
            return compute(lambda f, text: bar.progress(min(1.0, max(0.0, f)), text=text))
        return compute()


def feature_map(W_dec: Any, method: str, purpose: str) -> Any:
    """The feature map of W_dec (app.resources.get_feature_map), recorded under `purpose` for sessions."""
    result = get_feature_map(W_dec, method)
    remember_artifact(purpose, result.key)
    return result
