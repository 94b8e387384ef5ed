"""Plotly figures for spectral measurements: eigenspectra, layer profiles, checkpoint heatmaps, phases.

Each function takes results of `core.metrics.spectral` / `core.metrics.intrinsic_dim` (or plain
arrays) and returns a `go.Figure`; pages only arrange them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core.figures.style import apply_layout as _layout
from core.metrics.spectral import (
    PHASE_COMPRESSION,
    PHASE_ENTROPY,
    PHASE_WARMUP,
    AlphaReqResult,
    MetricInputError,
    PhaseSegmentation,
)

PALETTE = qualitative.Plotly
MAX_ANNOTATED_CELLS = 240
PHASE_COLOURS = {PHASE_WARMUP: "rgba(150,150,150,0.18)", PHASE_ENTROPY: "rgba(44,160,44,0.15)",
                 PHASE_COMPRESSION: "rgba(214,39,40,0.13)"}


def eigenspectrum_figure(eigenvalues, fit: AlphaReqResult | None = None,
                         title: str = "Eigenspectrum of the representations") -> go.Figure:
    """Eigenvalues against rank, log-log, with the alpha-ReQ power law over its (shaded) fit range.

    Traces: the eigenvalues, then (with `fit`) the fitted line lam = C * r**-alpha.
    """
    lam = np.asarray(eigenvalues, dtype=float)
    rank = np.arange(1, lam.size + 1)
    positive = lam > 0
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=rank[positive], y=lam[positive], mode="lines+markers", name="eigenvalue",
                             marker=dict(size=3), hovertemplate="rank %{x}<br>eigenvalue %{y:.3g}"))
    if fit is not None and np.isfinite(fit.alpha):
        r = np.arange(fit.first_rank, fit.last_rank + 1)
        fig.add_trace(go.Scatter(x=r, y=np.exp(fit.log_intercept) * r ** (-fit.alpha), mode="lines",
                                 name=f"power law, alpha = {fit.alpha:.3f}", line=dict(dash="dash", width=3)))
        # On a log axis Plotly places shapes in data units but annotations in log10 units.
        fig.add_shape(type="rect", xref="x", yref="paper", x0=fit.first_rank,
                      x1=fit.last_rank, y0=0, y1=1, fillcolor="rgba(255,165,0,0.12)",
                      line_width=0, layer="below")
        note = f"fit over ranks {fit.first_rank}..{fit.last_rank}"
        if fit.adapted:
            note += " (adapted: d < 100)"
        fig.add_annotation(x=np.log10(np.sqrt(fit.first_rank * fit.last_rank)), y=1.0, xref="x",
                           yref="paper", text=note, showarrow=False, yanchor="bottom")
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log", exponentformat="power")
    return _layout(fig, title, "rank (log scale)", "eigenvalue = variance along the PC (log scale)")


def layer_profile_figure(layers: Sequence, rankme: Sequence[float], alpha: Sequence[float],
                         participation_ratio: Sequence[float],
                         intrinsic_dimension: Mapping[str, Sequence[float | None]] | None = None,
                         title: str = "Spectral profile across layers") -> go.Figure:
    """RankMe and PR (effective dimensions), alpha-ReQ, and intrinsic dimension, side by side per layer.

    Traces, in order: RankMe, participation ratio, alpha-ReQ, then one per intrinsic-dimension
    estimator in `intrinsic_dimension` (e.g. {"TwoNN": [...], "MLE": [...]}).
    """
    x = [str(layer) for layer in layers]
    if not (len(x) == len(rankme) == len(alpha) == len(participation_ratio)):
        raise MetricInputError("Every per-layer series must have one value per layer.")
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "effective dimension of the spectrum", "alpha-ReQ (spectral decay)", "intrinsic dimension"))
    fig.add_trace(go.Scatter(x=x, y=list(rankme), mode="lines+markers", name="RankMe",
                             line=dict(color=PALETTE[0])), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=list(participation_ratio), mode="lines+markers",
                             name="participation ratio", line=dict(color=PALETTE[1])), row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=list(alpha), mode="lines+markers", name="alpha-ReQ",
                             line=dict(color=PALETTE[2])), row=1, col=2)
    for i, (name, values) in enumerate((intrinsic_dimension or {}).items()):
        if len(values) != len(x):
            raise MetricInputError(f"Intrinsic dimension '{name}' needs one value per layer.")
        fig.add_trace(go.Scatter(x=x, y=list(values), mode="lines+markers", name=f"ID ({name})",
                                 line=dict(color=PALETTE[3 + i % (len(PALETTE) - 3)])), row=1, col=3)
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="layer", row=1, col=col)
    fig.update_yaxes(title_text="dimensions", row=1, col=1)
    fig.update_yaxes(title_text="alpha (higher = faster decay)", row=1, col=2)
    fig.update_yaxes(title_text="dimensions", row=1, col=3)
    return _layout(fig, title)


def checkpoint_heatmap_figure(values, steps: Sequence[int], layers: Sequence,
                              metric: str = "RankMe",
                              title: str | None = None) -> go.Figure:
    """A layer x checkpoint table as a heatmap (one trace). Checkpoints are evenly spaced columns
    labelled with their training step, since checkpoints are usually log-spaced."""
    table = np.asarray(values, dtype=float)
    if table.shape != (len(layers), len(steps)):
        raise MetricInputError(
            f"The table must be [layers, checkpoints] = [{len(layers)}, {len(steps)}]; got {table.shape}."
        )
    # Each cell shows its value (tables up to MAX_ANNOTATED_CELLS cells; beyond, the text would not fit).
    text = [[f"{v:.3g}" if np.isfinite(v) else "" for v in row] for row in table] \
        if table.size <= MAX_ANNOTATED_CELLS else None
    fig = go.Figure(go.Heatmap(
        z=[[float(v) if np.isfinite(v) else None for v in row] for row in table], x=[f"{int(s):,}" for s in steps],
        y=[str(layer) for layer in layers], colorscale="Viridis", colorbar=dict(title=metric),
        text=text, texttemplate="%{text}" if text is not None else None, textfont=dict(size=11),
        hovertemplate="layer %{y}<br>step %{x}<br>" + metric + " %{z:.3g}<extra></extra>"))
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category")
    return _layout(fig, title or f"{metric} by layer and training checkpoint", "training step", "layer")


def phase_figure(segmentation: PhaseSegmentation,
                 title: str = "Spectral phases over training") -> go.Figure:
    """RankMe (raw points, smoothed line) and alpha-ReQ against training step, with the phases shaded.

    Traces, in order: RankMe raw, RankMe smoothed, then (when alpha was given) alpha raw and
    alpha smoothed on the right axis. Step 0 is drawn at step + 1 = 1 on the log axis.
    """
    seg = segmentation
    x = np.asarray(seg.steps, dtype=float) + 1.0
    fig = make_subplots(specs=[[{"secondary_y": seg.alpha_raw is not None}]])
    fig.add_trace(go.Scatter(x=x, y=seg.rankme_raw, mode="markers", name="RankMe (raw)",
                             marker=dict(color=PALETTE[0], size=6, opacity=0.6)))
    fig.add_trace(go.Scatter(x=x, y=seg.rankme_smooth, mode="lines", name="RankMe (smoothed)",
                             line=dict(color=PALETTE[0], width=3)))
    if seg.alpha_raw is not None:
        fig.add_trace(go.Scatter(x=x, y=seg.alpha_raw, mode="markers", name="alpha-ReQ (raw)",
                                 marker=dict(color=PALETTE[1], size=5, symbol="diamond", opacity=0.6)),
                      secondary_y=True)
        fig.add_trace(go.Scatter(x=x, y=seg.alpha_smooth, mode="lines", name="alpha-ReQ (smoothed)",
                                 line=dict(color=PALETTE[1], width=2, dash="dot")), secondary_y=True)
        fig.update_yaxes(title_text="alpha-ReQ", secondary_y=True)
    for segment in seg.segments:
        x0, x1 = np.log10(segment.start_step + 1.0), np.log10(segment.end_step + 1.0)
        # On a log axis Plotly places shapes in data units but annotations in log10 units.
        fig.add_shape(type="rect", xref="x", yref="paper", x0=10 ** x0, x1=10 ** x1, y0=0, y1=1, line_width=0,
                      fillcolor=PHASE_COLOURS.get(segment.label, "rgba(0,0,0,0.05)"), layer="below")
        fig.add_annotation(x=(x0 + x1) / 2, y=1.0, xref="x", yref="paper", text=segment.label,
                           showarrow=False, yanchor="bottom", font=dict(size=11))
    fig.update_xaxes(type="log", title_text="training step + 1 (log scale)")
    fig.update_yaxes(title_text="RankMe (effective rank)", secondary_y=False)
    return _layout(fig, title + f" (smoothing width {seg.smoothing:g} in log-step)")
