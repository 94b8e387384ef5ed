"""Plotly figures for superposition: effective features per site, convergence, interference, toy lab.

Each function takes results of `core.metrics.superposition` / `core.metrics.toy` (or plain arrays)
and returns a `go.Figure`; pages only arrange them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from core.figures.declutter import label_mask, spread_positions
from core.figures.features import plotly_text
from core.figures.style import CATEGORY_COLOURS, STANDARD_MARGIN, category_colours, short_site
from core.figures.style import apply_layout as _layout
from core.metrics.spectral import MetricInputError
from core.metrics.superposition import ConvergenceCurve, EffectiveFeatures, InterferenceStats
from core.metrics.toy import DIMENSIONALITY_REFERENCES, SparsitySweep, ToyGeometry

PALETTE = qualitative.Plotly
SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon")
REFERENCE_LABEL_GAP = 0.05   # dimensions per feature between two reference labels (~14 px on a 1.1-high axis)
REFERENCE_LABELS = {1.0: "1", 3 / 4: "3/4", 2 / 3: "2/3", 1 / 2: "1/2 (antipodal)", 2 / 5: "2/5 (pentagon)",
                    3 / 8: "3/8"}


def effective_features_figure(sites: Sequence[str], results: Sequence[EffectiveFeatures],
                              title: str = "Effective features per site") -> go.Figure:
    """Left: F = exp(H) and alive features per site; right: psi = F / N (features per neuron).

    Traces, in order: F (bars), alive features (markers), psi (bars; 0 where N is unknown); the psi = 1
    reference is a line shape named in the legend. Sites are written short ("L3 resid_post").
    """
    if len(sites) != len(results):
        raise MetricInputError("One result per site is needed.")
    names = [short_site(str(s)) for s in sites]
    full = [str(s) for s in sites]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("F = exp(H)", "psi = F / N"))
    fig.add_trace(go.Bar(x=names, y=[r.F for r in results], name="effective features F",
                         marker_color=PALETTE[0], customdata=full,
                         hovertemplate="%{customdata}<br>F = %{y:.1f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=names, y=[r.alive for r in results], mode="markers", name="alive features",
                             marker=dict(symbol="diamond", size=10, color=PALETTE[1]), customdata=full,
                             hovertemplate="%{customdata}<br>alive = %{y}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=names, y=[r.psi if r.psi is not None else 0.0 for r in results], name="psi = F / N",
                         marker_color=PALETTE[2], customdata=full,
                         hovertemplate="%{customdata}<br>psi = %{y:.2f}<extra></extra>"), row=1, col=2)
    # The psi = 1 reference is named in the legend, not by a text annotation that would sit on the bars.
    fig.add_hline(y=1.0, line_dash="dot", line_color="grey", row=1, col=2, showlegend=True,
                  name="psi = 1: one feature per neuron")
    fig.update_xaxes(title_text="site", row=1, col=1)
    fig.update_xaxes(title_text="site", row=1, col=2)
    fig.update_yaxes(title_text="features", row=1, col=1)
    fig.update_yaxes(title_text="features per neuron", row=1, col=2)
    # Legend under the plots: on the right it takes the width the two panels' titles need.
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.32, x=0))
    return _layout(fig, title, margin=dict(STANDARD_MARGIN, b=120))


def convergence_figure(curves: Mapping[str, ConvergenceCurve],
                       title: str = "Convergence of effective features with sample count") -> go.Figure:
    """F against the number of tokens it was measured on (log x), one line per site.
    A curve that flattens on the right has converged (Pythia-70M: ~2e4 samples)."""
    fig = go.Figure()
    for i, (name, curve) in enumerate(curves.items()):
        fig.add_trace(go.Scatter(x=np.asarray(curve.token_counts), y=np.asarray(curve.F),
                                 mode="lines+markers", name=str(name),
                                 line=dict(color=PALETTE[i % len(PALETTE)])))
    fig.update_xaxes(type="log")
    return _layout(fig, title, "tokens seen (log scale)", "effective features F")


def interference_figure(names: Sequence[str], stats: Sequence[InterferenceStats],
                        title: str = "Interference of feature directions against random vectors") -> go.Figure:
    """Mean-squared |cos| between directions (y) against 1/m (x), one point per matrix, with the
    line y = 1/m that random unit vectors sit on (strong superposition lies near it; below it the
    directions avoid each other more than chance, above it they crowd together).

    Traces, in order: one per matrix (named in the legend, no text beside the points), the random-vector line.
    """
    if len(names) != len(stats):
        raise MetricInputError("One name per interference result is needed.")
    x = np.array([s.reference_msq for s in stats])
    y = np.array([s.msq_overlap for s in stats])
    fig = go.Figure()
    # One legend entry per matrix instead of text beside the points: nearby points' labels would overlap.
    colours = category_colours([str(n) for n in names]) if len(names) <= len(CATEGORY_COLOURS) else {}
    for i, (name, stat) in enumerate(zip(names, stats)):
        fig.add_trace(go.Scatter(
            x=[x[i]], y=[y[i]], mode="markers", name=str(name), legendgroup="measured",
            legendgrouptitle_text="measured" if i == 0 else None,
            marker=dict(size=11, color=colours.get(str(name), PALETTE[i % len(PALETTE)]),
                        symbol=SYMBOLS[i % len(SYMBOLS)], line=dict(width=1, color="white")),
            customdata=[[stat.mean_overlap, stat.n_rows, stat.width]],
            hovertemplate=(f"{plotly_text(name)}<br>msq |cos| = %{{y:.4g}}<br>1/m = %{{x:.4g}}<br>mean |cos| = "
                           "%{customdata[0]:.3f}<br>rows %{customdata[1]}, m = %{customdata[2]}<extra></extra>")))
    lo, hi = float(min(x.min(), y.min())) * 0.7, float(max(x.max(), y.max())) * 1.4
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="random unit vectors: msq = 1/m",
                             line=dict(dash="dash", color="grey")))
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    fig.update_layout(legend=dict(traceorder="grouped"))
    return _layout(fig, title, "1/m (m = width of the space, log scale)",
                   "mean-squared |cos| between rows (log scale)")


def toy_weights_figure(W, importance=None, title: str = "Toy model: feature directions in the hidden space") -> go.Figure:
    """The columns of a toy W [m, n] as arrows from the origin (m = 2 drawn as is; m > 2 projected
    on the top two principal directions of the columns, and the title says so).

    Traces, in order: the arrows (one trace), the arrow tips (coloured by importance when given).
    """
    w = np.asarray(W, dtype=float)
    if w.ndim != 2:
        raise MetricInputError("W must be a matrix [m, n].")
    projected = w.shape[0] != 2
    if projected:
        _, _, vt = np.linalg.svd(w.T, full_matrices=False)
        w = (w.T @ vt[:2].T).T
        title += f" (projected from {np.asarray(W).shape[0]} dims to its top 2 PCs)"
    xs, ys = [], []
    for i in range(w.shape[1]):
        xs += [0.0, w[0, i], None]
        ys += [0.0, w[1, i], None]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="feature direction W[:, i]",
                             line=dict(color="grey", width=2), hoverinfo="skip"))
    marker = dict(size=11, color=PALETTE[0])
    if importance is not None:
        marker = dict(size=11, color=np.asarray(importance, dtype=float), colorscale="Viridis",
                      colorbar=dict(title="importance"), showscale=True)
    numbers = [str(i) for i in range(w.shape[1])]
    shown = label_mask(w.T, numbers, priority=-np.arange(w.shape[1]), above=np.ones(w.shape[1], dtype=bool))
    fig.add_trace(go.Scatter(x=w[0], y=w[1], mode="markers+text", text=[t if k else "" for t, k in zip(numbers, shown)],
                             textposition="top center", name="feature i (tip of W[:, i])", marker=marker,
                             customdata=numbers,
                             hovertemplate="feature %{customdata}<br>(%{x:.2f}, %{y:.2f})<extra></extra>"))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    # The legend goes under the plot: on the right it would sit on the importance colour bar.
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, x=0))
    return _layout(fig, title, "hidden dimension 1", "hidden dimension 2", margin=dict(l=55, r=20, t=60, b=90))


def _reference_lines(fig: go.Figure, extra: Mapping[str, float] | None = None) -> None:
    """Dotted lines at the reference dimensionalities, labelled in the right margin at heights spread
    apart (2/5 and 3/8 are 0.025 apart: their labels would overlap at their own heights)."""
    labels = {REFERENCE_LABELS.get(v, f"{v:.3g}"): v for v in DIMENSIONALITY_REFERENCES}
    for value in DIMENSIONALITY_REFERENCES:
        fig.add_hline(y=value, line_dash="dot", line_color="rgba(0,0,0,0.35)")
    labels.update(extra or {})
    heights = spread_positions(list(labels.values()), REFERENCE_LABEL_GAP)
    for (text, value), height in zip(labels.items(), heights):
        fig.add_annotation(x=1.0, xref="paper", xanchor="left", y=float(height), yref="y", text=text,
                           showarrow=False, font=dict(size=10), xshift=4)
    # The right margin holds the labels, so the legend goes under the plot.
    fig.update_layout(margin=dict(STANDARD_MARGIN, r=110, b=100),
                      legend=dict(orientation="h", yanchor="top", y=-0.22, x=0))


def feature_dimensionality_figure(geometry: ToyGeometry,
                                  title: str = "Dimensions per feature D_i") -> go.Figure:
    """Stick plot of D_i per feature, with the reference values 1, 3/4, 2/3, 1/2, 2/5, 3/8 (Elhage
    et al. 2022) and D* = m / ||W||_F**2 as a dashed line. Traces: the sticks, the stick heads."""
    d_i = np.asarray(geometry.D_i, dtype=float)
    idx = np.arange(d_i.size)
    xs, ys = [], []
    for i, v in zip(idx, d_i):
        xs += [int(i), int(i), None]
        ys += [0.0, float(v), None]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name="D_i", line=dict(color=PALETTE[0], width=3),
                             hoverinfo="skip", showlegend=False))
    fig.add_trace(go.Scatter(x=idx, y=d_i, mode="markers", name="D_i (0 = not learned)",
                             marker=dict(size=9, color=PALETTE[0]),
                             customdata=np.c_[geometry.represented, geometry.superposition],
                             hovertemplate=("feature %{x}<br>D_i = %{y:.3f}<br>||W_i|| = %{customdata[0]:.2f}"
                                            "<br>superposition = %{customdata[1]:.2f}<extra></extra>")))
    fig.add_hline(y=geometry.D_star, line_dash="dash", line_color=PALETTE[1])
    fig.update_yaxes(range=[0, 1.1])
    _layout(fig, title, "feature i (importance falls to the right)", "dimensions per feature")
    _reference_lines(fig, {f"D* = {geometry.D_star:.2f}": float(geometry.D_star)})
    return fig


def dimensionality_sweep_figure(sparsity, D_i: Sequence, D_star,
                                title: str = "Feature dimensionality against sparsity") -> go.Figure:
    """D_i of every feature of every toy model (points) and D* (line) against 1 / (1 - S), log x,
    with the reference values; D* sticks at 1 and 1/2 as sparsity grows (Elhage et al. 2022).
    Traces: D_i points, D* line."""
    s = np.asarray(sparsity, dtype=float)
    x = 1.0 / (1.0 - s)
    if len(D_i) != s.size or np.asarray(D_star).size != s.size:
        raise MetricInputError("One D_i array and one D* per sparsity are needed.")
    px, py = [], []
    for xv, d in zip(x, D_i):
        d = np.asarray(d, dtype=float)
        px += [xv] * int((d > 0).sum())
        py += d[d > 0].tolist()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=px, y=py, mode="markers", name="D_i of a learned feature",
                             marker=dict(size=6, opacity=0.6, color=PALETTE[0])))
    fig.add_trace(go.Scatter(x=x, y=np.asarray(D_star, dtype=float), mode="lines+markers", name="D*",
                             line=dict(color=PALETTE[1], width=3)))
    fig.update_xaxes(type="log")
    fig.update_yaxes(range=[0, 1.1])
    _layout(fig, title, "1 / (1 - S) = 1 / feature probability (log scale)", "dimensions per feature")
    _reference_lines(fig)
    return fig


def toy_sweep_figure(sweep: SparsitySweep,
                     title: str = "Effective features: measured through an SAE vs ground truth") -> go.Figure:
    """SAE-measured F against the toy's ground-truth F, one point per sparsity, with y = x.
    Traces: the points, the line y = x."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=sweep.F_true, y=sweep.F_sae, mode="markers+text",
                             text=[f"S={s:g}" for s in sweep.sparsity], textposition="top center",
                             name=f"toy models (Pearson r = {sweep.pearson_r:.3f})",
                             marker=dict(size=10, color=PALETTE[0])))
    lo = float(min(np.min(sweep.F_true), np.min(sweep.F_sae))) * 0.9
    hi = float(max(np.max(sweep.F_true), np.max(sweep.F_sae))) * 1.1
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="perfect agreement",
                             line=dict(dash="dash", color="grey")))
    return _layout(fig, title + f" ({sweep.n_features} features in {sweep.n_hidden} neurons)",
                   "ground-truth F (true features the toy represents)", "F measured through the SAE")
