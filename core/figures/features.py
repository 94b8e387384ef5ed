"""Figures and HTML for the feature views (Probe and Features pages, and the session report).

Every token that reaches HTML goes through `html.escape`: a prompt or corpus text holding
`<script>` is shown as text, never run.
"""

from __future__ import annotations

import html
from typing import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

HIGHLIGHT_RGB = (230, 97, 1)     # activations: orange
ERROR_RGB = (94, 60, 153)        # reconstruction error: purple
TOKEN_STYLE = ("display:inline-block;margin:1px 0;padding:1px 2px;border-radius:3px;"
               "font-family:ui-monospace,monospace;font-size:0.9em;white-space:pre;")


def _show_token(token: str) -> str:
    # Make whitespace visible and keep empty tokens clickable.
    return token.replace("\n", "\u21b5").replace("\t", "\u21e5") if token else "\u2205"


def highlight_tokens_html(str_tokens: Sequence[str], values: Sequence[float] | np.ndarray | None = None, *,
                          vmax: float | None = None, rgb: tuple[int, int, int] = HIGHLIGHT_RGB,
                          unknown_positions: Sequence[int] = (), focus: int | None = None,
                          value_label: str = "activation") -> str:
    """Tokens as inline spans, background opacity proportional to value / vmax (escaped HTML).

    Unknown tokens (UNK) get a red dashed border and a tooltip; `focus` underlines one position.
    """
    n = len(str_tokens)
    vals = np.zeros(n) if values is None else np.nan_to_num(np.asarray(values, dtype=np.float64)[:n])
    top = float(vmax) if vmax else float(np.max(np.abs(vals))) if n and np.max(np.abs(vals)) > 0 else 1.0
    unknown = set(int(p) for p in unknown_positions)
    spans = []
    for i, token in enumerate(str_tokens):
        alpha = float(np.clip(abs(vals[i]) / top, 0.0, 1.0)) if top > 0 else 0.0
        style = TOKEN_STYLE + f"background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{alpha:.3f});"
        title = f"position {i} | {value_label} {vals[i]:.3f} | token {token!r}"
        if i in unknown:
            style += "border:1px dashed #c00;"
            title += " | UNK: the model does not know this word"
        if focus is not None and i == focus:
            style += "text-decoration:underline 2px;font-weight:600;"
        shown = _show_token(str(token))
        spans.append(f'<span style="{style}" title="{html.escape(title, quote=True)}">{html.escape(shown)}</span>')
    return '<div style="line-height:1.9">' + "".join(spans) + "</div>"


def context_html(str_tokens: Sequence[str], values: Sequence[float], *, vmax: float | None = None,
                 center: int | None = None) -> str:
    """One activating context (a token window) with the feature's activation highlighted."""
    return highlight_tokens_html(str_tokens, values, vmax=vmax, focus=center)


def probe_heatmap(matrix: np.ndarray, str_tokens: Sequence[str], layer_labels: Sequence[str],
                  quantity_label: str, unknown_positions: Sequence[int] = ()) -> go.Figure:
    """Tokens (x) by layers (y) heatmap of one per-token quantity."""
    unknown = set(unknown_positions)
    x = [f"{i}:{t}{' (UNK)' if i in unknown else ''}" for i, t in enumerate(str_tokens)]
    fig = go.Figure(go.Heatmap(z=matrix, x=x, y=list(layer_labels), colorscale="Viridis",
                               colorbar={"title": quantity_label},
                               hovertemplate="token %{x}<br>%{y}<br>" + quantity_label + " %{z:.3f}<extra></extra>"))
    fig.update_layout(height=120 + 40 * len(layer_labels), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis={"tickangle": -45, "type": "category"}, yaxis={"type": "category", "autorange": "reversed"})
    return fig


def logit_lens_figure(probs: np.ndarray, words: list[list[str]], layer_labels: Sequence[str]) -> go.Figure:
    """Logit lens at one position: layers (y) by rank (x), cell text = token, colour = probability."""
    k = probs.shape[1]
    fig = go.Figure(go.Heatmap(z=probs, x=[f"#{r + 1}" for r in range(k)], y=list(layer_labels),
                               text=words, texttemplate="%{text}", colorscale="Blues", zmin=0, zmax=1,
                               colorbar={"title": "p"},
                               hovertemplate="%{y}, %{x}: %{text} p=%{z:.3f}<extra></extra>"))
    fig.update_layout(height=120 + 40 * len(layer_labels), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      yaxis={"type": "category", "autorange": "reversed"})
    return fig


def activation_histogram(hist: np.ndarray, edges: np.ndarray, feature: int) -> go.Figure:
    """Histogram of a feature's nonzero activations over the corpus (counts on a log axis)."""
    hist = np.asarray(hist, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure(go.Bar(x=centers, y=hist, width=np.diff(edges), marker_color="rgb(230,97,1)",
                           hovertemplate="activation %{x:.3f}<br>tokens %{y}<extra></extra>"))
    fig.update_layout(title=f"Feature {feature}: activation histogram (active tokens)", height=280,
                      xaxis_title="activation", yaxis_title="tokens", yaxis_type="log",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, bargap=0)
    return fig


def logit_effects_figure(top: list[tuple[str, float]], bottom: list[tuple[str, float]], feature: int) -> go.Figure:
    """Horizontal bars: the tokens this feature's decoder direction promotes (top) and suppresses (bottom)."""
    words = [w for w, _ in bottom[::-1]] + [w for w, _ in top[::-1]]
    values = [v for _, v in bottom[::-1]] + [v for _, v in top[::-1]]
    labels = [f"{i}. {w!r}" for i, w in enumerate(words)]  # unique labels even when tokens repeat
    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h",
                           marker_color=["rgb(33,102,172)" if v < 0 else "rgb(178,24,43)" for v in values],
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(title=f"Feature {feature}: logit effects (W_dec[i] @ W_U)", height=60 + 18 * len(words),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis_title="direct effect on the logit")
    return fig


def feature_map_figure(coords: np.ndarray, color: np.ndarray, color_label: str, *, categorical: bool,
                       hover: Sequence[str] | None = None, highlight: dict[int, float] | None = None,
                       selected: int | None = None, title: str = "") -> go.Figure:
    """The feature map: one point per feature; `highlight` (id -> value) rings the prompt's active features.

    Each point's `customdata` holds its feature id, so a click (selection) tells the page which one.
    """
    n = len(coords)
    frame = pd.DataFrame({"x": coords[:, 0], "y": coords[:, 1], "feature": np.arange(n),
                          color_label: [str(c) for c in color] if categorical else np.asarray(color),
                          "info": list(hover) if hover is not None else [""] * n})
    common = dict(x="x", y="y", color=color_label, custom_data=["feature"],
                  hover_data={"x": False, "y": False, "feature": True, "info": True})
    if categorical:
        fig = px.scatter(frame, **common, color_discrete_sequence=px.colors.qualitative.Dark24)
    else:
        fig = px.scatter(frame, **common, color_continuous_scale="Viridis")
    fig.update_traces(marker={"size": 5 if n > 2000 else 7, "opacity": 0.8})
    if highlight:
        ids = np.array(sorted(highlight), dtype=int)
        ids = ids[ids < n]
        fig.add_trace(go.Scatter(x=coords[ids, 0], y=coords[ids, 1], mode="markers", name="active in prompt",
                                 customdata=ids[:, None], marker={"size": 12, "color": "rgba(0,0,0,0)",
                                                                  "line": {"width": 2, "color": "red"}},
                                 hovertemplate="feature %{customdata[0]} (active in the prompt)<extra></extra>"))
    if selected is not None and 0 <= selected < n:
        fig.add_trace(go.Scatter(x=[coords[selected, 0]], y=[coords[selected, 1]], mode="markers",
                                 name=f"feature {selected}", customdata=[[selected]],
                                 marker={"size": 16, "symbol": "star", "color": "gold",
                                         "line": {"width": 1, "color": "black"}},
                                 hovertemplate="feature %{customdata[0]} (selected)<extra></extra>"))
    fig.update_layout(title=title, height=520, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"visible": False}, yaxis={"visible": False}, legend={"itemsizing": "constant"},
                      clickmode="event+select", dragmode="pan")
    return fig
