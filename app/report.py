"""Figures for a session's static HTML report (the bundle's report.html)."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import AtlasError
from core.sessions import Session
from core.sources.corpus import CorpusSpec
from core.sources.models import ModelSpec
from core.sources.saes import SAESpec


def session_sources(session: Session):
    from app.resources import Sources

    src = session.sources
    return Sources(ModelSpec(**src["model"]), tuple(SAESpec(**s) for s in src["saes"]), CorpusSpec(**src["corpus"]))


def report_figures(session: Session) -> list[tuple[str, Any]]:
    """Probe heatmap of the session's prompt, the feature map, and the selected feature's histogram."""
    from app.resources import decoder_weights, get_model, get_saes, get_store
    from app.state import layout_method
    from core import feature_map as fm
    from core.figures.features import activation_histogram, feature_map_figure, probe_heatmap
    from core.harvest import HarvestResult
    from core.probe import probe_prompt

    figures: list[tuple[str, Any]] = []
    try:
        sources = session_sources(session)
        model = get_model(sources.model)
        saes = get_saes(sources)
    except (AtlasError, TypeError) as error:
        return [("Sources could not be loaded", _message_figure(str(error)))]
    if session.prompt.strip():
        try:
            result = probe_prompt(model, saes, session.prompt)
            figures.append(("Prompt: reconstruction error per token and layer",
                            probe_heatmap(result.layer_matrix("recon_error"), result.str_tokens, result.hook_names,
                                          "error", result.unknown_positions)))
        except AtlasError:
            pass
    store = get_store()
    sae = next((s for s in saes if s.hook_name == session.selected_layer), saes[0] if saes else None)
    if sae is not None:
        fmap = fm.feature_map(decoder_weights(sae), store, layout_method(session.settings.get("map_method") or ""))
        figures.append((f"Feature map of {sae.hook_name} ({fmap.method.upper()})",
                        feature_map_figure(fmap.coords, np.zeros(len(fmap.coords)), "-", categorical=False,
                                           selected=session.selected_feature)))
        for key in session.artifact_keys:
            artifact = store.load(key)
            if artifact is None or artifact.meta.get("kind") != "harvest":
                continue
            harvest = HarvestResult.from_arrays(artifact.arrays, artifact.meta)
            stats = harvest.saes.get(sae.hook_name)
            f = session.selected_feature
            if stats is not None and f is not None and 0 <= f < stats.d_sae:
                hist = np.asarray(stats.hist[f])[1:-1]
                figures.append((f"Feature {f}: activation histogram",
                                activation_histogram(hist, np.asarray(stats.hist_edges), f)))
            break
    return figures


def _message_figure(text: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig
