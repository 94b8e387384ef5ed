"""Figures for a session's static HTML report (the bundle's report.html)."""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import AtlasError
from core.sessions import Session


def report_figures(session: Session) -> list[tuple[str, Any]]:
    """Probe heatmap of the session's prompt, the feature map, and the selected feature's histogram.

    The session's values are checked as on restore (app.state.restore_values): a bundle's report never
    loads a source or shows a value that the app itself would refuse to restore."""
    from app.resources import decoder_weights, get_model, get_saes, get_store
    from app.sources import request
    from app.state import layout_method, restore_values
    from core import feature_map as fm
    from core.figures.features import (
        activation_histogram,
        feature_map_figure,
        log_density,
        map_axis_titles,
        probe_heatmap,
    )
    from core.harvest import HarvestResult
    from core.probe import probe_prompt

    figures: list[tuple[str, Any]] = []
    values, _notices = restore_values(session)
    try:
        sources = request(values)
        model = get_model(sources.model)
        saes = get_saes(sources)
    except AtlasError as error:
        return [("Sources could not be loaded", _message_figure(str(error)))]
    if values["prompt"].strip():
        try:
            result = probe_prompt(model, saes, values["prompt"])
            figures.append(("Prompt: reconstruction error per token and layer",
                            probe_heatmap(result.layer_matrix("recon_error"), result.str_tokens, result.hook_names,
                                          "error", result.unknown_positions,
                                          title="Reconstruction error ||x - x_hat|| / ||x|| per token and SAE site")))
        except AtlasError:
            pass
    store = get_store()
    sae = next((s for s in saes if s.hook_name == values["layer"]), saes[0] if saes else None)
    feature = values["feature"]
    if sae is None:
        return figures
    stats = None
    for key in session.artifact_keys:
        artifact = store.load(key)
        if artifact is not None and artifact.meta.get("kind") == "harvest":
            stats = HarvestResult.from_arrays(artifact.arrays, artifact.meta).saes.get(sae.hook_name)
            break
    W_dec = decoder_weights(sae)
    fmap = fm.feature_map(W_dec, store, layout_method(values["map_method"]))
    selected = feature if feature is not None and 0 <= feature < sae.d_sae else None
    if stats is not None and stats.d_sae == len(fmap.coords):
        colour, caption = log_density(stats.fire_count, stats.n_tokens), "colour: log10 firing density"
    else:
        colour, caption = np.zeros(len(fmap.coords)), "one colour: the session holds no harvest of this SAE"
    figures.append((f"Feature map of {sae.hook_name} ({fmap.method.upper()}; {caption})",
                    feature_map_figure(fmap.coords, colour, "log10 density", categorical=False, selected=selected,
                                       axis_titles=map_axis_titles(fmap.method, fmap.coords, W_dec),
                                       title=f"{sae.hook_name}: decoder directions")))
    if stats is not None and selected is not None and selected < stats.d_sae:
        figures.append((f"Feature {selected}: activation histogram",
                        activation_histogram(np.asarray(stats.hist[selected]), np.asarray(stats.hist_edges), selected)))
    return figures


def _message_figure(text: str):
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_annotation(text=text, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    return fig
