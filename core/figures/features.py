"""Figures and HTML for the feature views (Probe and Features pages, and the session report).

Every token that reaches HTML goes through `html.escape`: a prompt or corpus text holding
`<script>` is shown as text, never run.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from core.figures.style import category_colours, category_order, group_small_categories, short_site

HIGHLIGHT_RGB = (230, 97, 1)     # activations: orange
ERROR_RGB = (94, 60, 153)        # reconstruction error: purple
TOKEN_STYLE = ("display:inline-block;margin:1px 0;padding:1px 2px;border-radius:3px;"
               "font-family:ui-monospace,monospace;font-size:0.9em;white-space:pre;")


def _show_token(token: str) -> str:
    # Make whitespace visible and keep empty tokens clickable.
    return token.replace("\n", "\u21b5").replace("\t", "\u21e5") if token else "\u2205"


def plotly_text(text: str) -> str:
    """Text for Plotly labels and hovers, which read a subset of HTML: markup in a token stays text."""
    return html.escape(str(text), quote=False)


def _alpha(value: float, top: float) -> float:
    return float(np.clip(abs(value) / top, 0.0, 1.0)) if top > 0 else 0.0


def highlight_tokens_html(str_tokens: Sequence[str], values: Sequence[float] | np.ndarray | None = None, *,
                          vmax: float | None = None, rgb: tuple[int, int, int] = HIGHLIGHT_RGB,
                          unknown_positions: Sequence[int] = (), focus: int | None = None,
                          value_label: str = "activation", first_position: int = 0) -> str:
    """Tokens as inline spans, each shaded by its own value: background opacity value / vmax (escaped HTML).

    Hovering a token shows its position, value and text. Unknown tokens (UNK) get a red dashed border;
    `focus` underlines one position (a context's centre); `first_position` numbers the first token.
    """
    n = len(str_tokens)
    vals = np.zeros(n) if values is None else np.nan_to_num(np.asarray(values, dtype=np.float64)[:n])
    top = float(vmax) if vmax else float(np.max(np.abs(vals))) if n and np.max(np.abs(vals)) > 0 else 1.0
    unknown = {int(p) for p in unknown_positions}
    spans = []
    for i, token in enumerate(str_tokens):
        style = TOKEN_STYLE + f"background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{_alpha(vals[i], top):.3f});"
        title = f"position {first_position + i} | {value_label} {vals[i]:.3f} | token {token!r}"
        if i in unknown:
            style += "border:1px dashed #c00;"
            title += " | UNK: the model does not know this word"
        if focus is not None and i == focus:
            style += "text-decoration:underline 2px;font-weight:600;"
        shown = _show_token(str(token))
        spans.append(f'<span style="{style}" title="{html.escape(title, quote=True)}">{html.escape(shown)}</span>')
    return '<div style="line-height:1.9">' + "".join(spans) + "</div>"


def colour_legend_html(vmax: float, *, label: str = "activation", rgb: tuple[int, int, int] = HIGHLIGHT_RGB) -> str:
    """A small colour bar: transparent at 0, full colour at `vmax` (values above are shown at full colour)."""
    r, g, b = rgb
    vmax = float(vmax) if vmax and vmax > 0 else 1.0
    bar = (f"display:inline-block;width:160px;height:12px;vertical-align:middle;border:1px solid #ccc;"
           f"background:linear-gradient(to right, rgba({r},{g},{b},0), rgba({r},{g},{b},1));")
    return (f'<div style="font-size:0.8em;color:#444;margin:2px 0 6px 0">{html.escape(label)}: '
            f'<span style="margin-right:4px">0</span><span style="{bar}"></span>'
            f'<span style="margin-left:4px">{vmax:.3g}</span>'
            '<span style="color:#888"> (hover a token for its value)</span></div>')


@dataclass(frozen=True)
class ShadedContext:
    """One context window to draw: its tokens, the feature's activation on each, the centre token's
    index (underlined) and a caption (its activation, its band)."""

    str_tokens: list[str]
    acts: np.ndarray
    centre: int | None
    caption: str = ""


def contexts_html(contexts: Sequence[ShadedContext], *, vmax: float | None, label: str = "activation",
                  rgb: tuple[int, int, int] = HIGHLIGHT_RGB, legend: bool = True) -> str:
    """Several context windows, every token shaded by its activation on one scale, under one colour legend."""
    if vmax is None or vmax <= 0:
        vmax = max((float(np.max(c.acts)) for c in contexts if len(c.acts)), default=1.0) or 1.0
    parts = [colour_legend_html(vmax, label=label, rgb=rgb)] if legend else []
    for context in contexts:
        caption = (f'<span style="font-size:0.75em;color:#666;margin-right:6px">{html.escape(context.caption)}</span>'
                   if context.caption else "")
        body = highlight_tokens_html(context.str_tokens, context.acts, vmax=vmax, rgb=rgb, focus=context.centre,
                                     value_label=label)
        parts.append(f'<div style="margin-bottom:4px">{caption}{body}</div>')
    return "".join(parts)


def probe_heatmap(matrix: np.ndarray, str_tokens: Sequence[str], layer_labels: Sequence[str],
                  quantity_label: str, unknown_positions: Sequence[int] = (), *, title: str = "") -> go.Figure:
    """Tokens (x) by layers (y) heatmap of one per-token quantity.

    Every token gets its tick label ("3:king"; Plotly would thin out long category axes) and every row
    its site ("L2 resid_post"; the full hook name in the hover); both axes are titled, so the figure
    reads on its own in a report.
    """
    unknown = set(unknown_positions)
    x = [f"{i}:{plotly_text(_show_token(t))}{' (UNK)' if i in unknown else ''}" for i, t in enumerate(str_tokens)]
    rows = [short_site(str(label)) for label in layer_labels]
    full = [[plotly_text(str(label))] * len(x) for label in layer_labels]
    fig = go.Figure(go.Heatmap(z=matrix, x=x, y=rows, colorscale="Viridis", customdata=full,
                               colorbar={"title": quantity_label},
                               hovertemplate="token %{x}<br>%{customdata}<br>" + quantity_label
                                             + " %{z:.3f}<extra></extra>"))
    fig.update_layout(title=title or None, height=(170 if title else 140) + 40 * len(layer_labels),
                      margin={"l": 10, "r": 10, "t": 40 if title else 30, "b": 10}, template="plotly_white",
                      xaxis={"tickangle": -45, "type": "category", "tickmode": "array", "tickvals": x, "ticktext": x,
                             "title": "token (position:text)", "automargin": True},
                      yaxis={"type": "category", "autorange": "reversed", "title": "SAE site", "automargin": True})
    return fig


def logit_lens_figure(probs: np.ndarray, words: list[list[str]], layer_labels: Sequence[str]) -> go.Figure:
    """Logit lens at one position: layers (y) by rank (x); each cell shows its token and probability.

    The colour runs from 0 to the largest probability shown (not to 1), so small probabilities still
    differ; Plotly picks a dark or light text colour per cell.
    """
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    text = [[f"{plotly_text(_show_token(w))}<br>{p:.2f}" for w, p in zip(row_words, row)]
            for row_words, row in zip(words, probs)]
    hover = [[plotly_text(repr(w)) for w in row_words] for row_words in words]
    top = float(probs.max()) if probs.size and probs.max() > 0 else 1.0
    fig = go.Figure(go.Heatmap(z=probs, x=[f"#{r + 1}" for r in range(k)], y=list(layer_labels),
                               text=text, customdata=hover, texttemplate="%{text}", textfont={"size": 12},
                               colorscale="Blues", zmin=0, zmax=top, colorbar={"title": "p"}, xgap=2, ygap=2,
                               hovertemplate="%{y}, rank %{x}: %{customdata} p=%{z:.3f}<extra></extra>"))
    fig.update_layout(height=140 + 46 * len(layer_labels), margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      yaxis={"type": "category", "autorange": "reversed"}, xaxis={"title": "rank of the guess"})
    return fig


def activation_histogram(hist: np.ndarray, edges: np.ndarray, feature: int) -> go.Figure:
    """Histogram of a feature's nonzero activations over the corpus, fitted to its data.

    `hist` is the harvest's row: [bins + 2] counts with the tokens under the first edge first and over
    the last edge last (or the [bins] inner counts alone); `edges` are the [bins + 1] inner edges. The x
    range covers only the bins that hold tokens (and one empty bin either side), so a feature that fires
    between 0.1 and 0.6 is not a sliver of a 0.001-1000 axis; log-spaced bins (the harvest's) sit on a
    log x axis, where they are equally wide; counts are on a log y axis. Tokens outside the edges are
    counted in the title.
    """
    hist = np.asarray(hist, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    under = over = 0
    if hist.size == edges.size + 1:
        under, over, hist = int(hist[0]), int(hist[-1]), hist[1:-1]
    elif hist.size != edges.size - 1:
        raise ValueError(f"{hist.size} counts do not fit {edges.size} edges: pass [bins] or [bins + 2] counts.")
    filled = np.flatnonzero(hist)
    lo, hi = (max(int(filled[0]) - 1, 0), min(int(filled[-1]) + 2, hist.size)) if filled.size else (0, hist.size)
    hist, edges = hist[lo:hi], edges[lo:hi + 1]
    steps = np.diff(np.log(edges)) if np.all(edges > 0) else np.array([np.nan])
    log_x = bool(edges.size > 2 and np.all(np.isfinite(steps)) and np.allclose(steps, steps[0], rtol=1e-3))
    if log_x:
        # On a log axis Plotly reads bar positions and widths in log10 units.
        x, width = np.log10(edges[:-1]) + np.diff(np.log10(edges)) / 2, np.diff(np.log10(edges))
        x = 10 ** x
    else:
        x, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    low, high = edges[:-1], edges[1:]
    fig = go.Figure(go.Bar(x=x, y=hist, width=width, marker_color="rgb(230,97,1)", customdata=np.c_[low, high],
                           hovertemplate="activation %{customdata[0]:.3g} to %{customdata[1]:.3g}<br>"
                                         "tokens %{y}<extra></extra>"))
    outside = [f"{under:,} below {edges[0]:.3g}" if under else "", f"{over:,} above {edges[-1]:.3g}" if over else ""]
    note = "; ".join(t for t in outside if t)
    title = f"Feature {feature}: activation histogram ({int(hist.sum() + under + over):,} active tokens)"
    fig.update_layout(title=title + (f"<br><sup>outside the bins: {note}</sup>" if note else ""), height=300,
                      xaxis_title="activation" + (" (log scale)" if log_x else ""), yaxis_title="tokens (log scale)",
                      yaxis={"type": "log", "dtick": 1}, margin={"l": 10, "r": 10, "t": 60 if note else 40, "b": 10},
                      bargap=0, template="plotly_white")
    if log_x:
        fig.update_xaxes(type="log", range=[np.log10(edges[0]), np.log10(edges[-1])])
    else:
        fig.update_xaxes(range=[float(edges[0]), float(edges[-1])])
    return fig


def logit_effects_figure(top: list[tuple[str, float]], bottom: list[tuple[str, float]], feature: int) -> go.Figure:
    """Horizontal bars: the tokens this feature's decoder direction promotes (top) and suppresses (bottom).

    Bars sit at numeric positions labelled with their token, so a token that appears twice needs no
    numbering to stay apart.
    """
    pairs = bottom[::-1] + top[::-1]
    words = [plotly_text(repr(w)) for w, _ in pairs]
    values = [v for _, v in pairs]
    positions = list(range(len(pairs)))
    fig = go.Figure(go.Bar(x=values, y=positions, orientation="h", customdata=words,
                           marker_color=["rgb(33,102,172)" if v < 0 else "rgb(178,24,43)" for v in values],
                           hovertemplate="%{customdata}: %{x:.3f}<extra></extra>"))
    fig.update_layout(title=f"Feature {feature}: logit effects (W_dec[i] @ W_U)", height=80 + 20 * len(words),
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis_title="direct effect on the logit",
                      yaxis={"tickmode": "array", "tickvals": positions, "ticktext": words, "automargin": True})
    return fig


HOVER_LINE = 70        # characters per hover line
HOVER_LINES = 4        # lines per hover text: a feature's label and its top tokens, not cut at 80 characters


def hover_lines(text: str, width: int = HOVER_LINE, max_lines: int = HOVER_LINES) -> str:
    """Hover text in lines of `width` characters (escaped for Plotly), at most `max_lines`, with an ellipsis
    when longer: a long label keeps its top tokens instead of being cut to one line. Fixed-width cuts, not
    word wrapping: the map's hover is built for every feature on every rerun (24k+ strings)."""
    text = str(text)
    if len(text) <= width:
        return plotly_text(text)
    cut = text[:width * max_lines]
    lines = [plotly_text(cut[i:i + width]) for i in range(0, len(cut), width)]
    return "<br>".join(lines) + ("\u2026" if len(text) > len(cut) else "")


def _marker_size(n: int) -> int:
    return 4 if n > 5000 else 5 if n > 2000 else 7


MAP_GRID = 160   # cells per axis past which the map's points overlap on screen (520 px tall, markers 4 px)
MAP_THIN_ABOVE = 8_000   # maps of more features draw one point per occupied cell


def thin_map_points(coords: np.ndarray, priority: np.ndarray | None = None, grid: int = MAP_GRID) -> np.ndarray:
    """Indices of the points to draw: one per cell of a `grid` x `grid` grid over the coordinates' range (where
    more points only overlap on screen), the one of highest `priority` in each cell (default: the lowest index),
    in index order."""
    coords = np.asarray(coords, dtype=np.float64)
    low, span = coords.min(axis=0), np.ptp(coords, axis=0)
    cells = np.floor((coords - low) / np.where(span > 0, span, 1.0) * (grid - 1e-9)).astype(np.int64)
    cell = cells[:, 0] * grid + cells[:, 1]
    rank = np.zeros(len(coords)) if priority is None else -np.nan_to_num(np.asarray(priority, dtype=np.float64),
                                                                         nan=-np.inf)
    order = np.lexsort((np.arange(len(coords)), rank, cell))   # by cell, then highest priority, then index
    first = np.ones(len(order), dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    return np.sort(order[first])


def feature_map_figure(coords: np.ndarray, color: np.ndarray, color_label: str, *, categorical: bool,
                       hover: Sequence[str] | None = None, highlight: dict[int, float] | None = None,
                       selected: int | None = None, title: str = "", matches: np.ndarray | None = None,
                       match_label: str = "search", axis_titles: tuple[str, str] | None = None) -> go.Figure:
    """The feature map: one WebGL point per feature (Scattergl: 24k+ points stay responsive); past MAP_THIN_ABOVE
    features, one point per screen cell (`thin_map_points`: more would only overlap), the title says how many.

    `highlight` (id -> value) rings the prompt's active features, `matches` (ids) rings search results,
    `selected` stars the open feature. Each point's `customdata` is its feature id, so a click tells the
    page which feature to open. Categories (`categorical=True`) each get a distinct colour and are listed
    in natural order ("lobe 2" before "lobe 10"), the smallest merged into "other" past 24. `axis_titles`
    (from `map_axis_titles`) name the axes; the coordinates themselves carry no meaning, so no tick labels.
    """
    coords = np.asarray(coords, dtype=np.float32)
    n = len(coords)
    ids = np.arange(n)
    text = np.asarray([hover_lines(h) for h in hover] if hover is not None else [""] * n, dtype=object)
    size = _marker_size(n)
    template = "feature %{customdata}<br>%{text}<extra></extra>"
    fig = go.Figure()
    # past MAP_THIN_ABOVE points, one per screen cell (the most active there); the ringed and starred stay exact
    drawn = ids if n <= MAP_THIN_ABOVE else thin_map_points(coords, None if categorical else color)
    if len(drawn) < n:
        note = f"{len(drawn):,} of {n:,} drawn: one per screen cell"
        title = f"{title} ({note})" if title else note
    if categorical:
        labels = group_small_categories(color)
        order = category_order(labels)
        colours = category_colours(order)
        for category in order:
            mask = labels[drawn] == category
            fig.add_trace(go.Scattergl(x=coords[drawn[mask], 0], y=coords[drawn[mask], 1], mode="markers",
                                       name=category, customdata=drawn[mask], text=text[drawn[mask]],
                                       hovertemplate=template,
                                       marker={"size": size, "opacity": 0.8, "color": colours[category]}))
    else:
        fig.add_trace(go.Scattergl(x=coords[drawn, 0], y=coords[drawn, 1], mode="markers", name="features",
                                   customdata=drawn, text=text[drawn], hovertemplate=template, showlegend=False,
                                   marker={"size": size, "opacity": 0.8,
                                           "color": np.asarray(color, dtype=np.float32)[drawn],
                                           "colorscale": "Viridis", "colorbar": {"title": color_label}}))
    if matches is not None and len(matches):
        hits = np.asarray(sorted({int(m) for m in matches if 0 <= int(m) < n}), dtype=int)
        fig.add_trace(go.Scattergl(x=coords[hits, 0], y=coords[hits, 1], mode="markers",
                                   name=f"{match_label} ({len(hits)})", customdata=hits, text=text[hits],
                                   hovertemplate=template,
                                   marker={"size": size + 7, "color": "rgba(0,0,0,0)",
                                           "line": {"width": 2, "color": "#d62728"}}))
    if highlight:
        active = np.array(sorted(highlight), dtype=int)
        active = active[active < n]
        fig.add_trace(go.Scattergl(x=coords[active, 0], y=coords[active, 1], mode="markers", name="active in prompt",
                                   customdata=active, text=text[active],
                                   marker={"size": size + 7, "color": "rgba(0,0,0,0)", "line": {"width": 2, "color": "red"}},
                                   hovertemplate="feature %{customdata} (active in the prompt)<br>%{text}<extra></extra>"))
    if selected is not None and 0 <= selected < n:
        fig.add_trace(go.Scattergl(x=[coords[selected, 0]], y=[coords[selected, 1]], mode="markers",
                                   name=f"feature {selected}", customdata=[selected], text=[text[selected]],
                                   marker={"size": 16, "symbol": "star", "color": "gold",
                                           "line": {"width": 1, "color": "black"}},
                                   hovertemplate="feature %{customdata} (open)<br>%{text}<extra></extra>"))
    hidden = {"visible": False}
    axes = [{"title": t, "showticklabels": False, "showgrid": False, "zeroline": False} for t in axis_titles] \
        if axis_titles else [hidden, hidden]
    fig.update_layout(title=title, height=520, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis=axes[0], yaxis=axes[1],
                      legend={"itemsizing": "constant", "orientation": "h", "yanchor": "top", "y": -0.02, "x": 0},
                      clickmode="event+select", dragmode="pan", template="plotly_white")
    return fig


def map_axis_titles(method: str, coords: np.ndarray, W_dec: np.ndarray | None = None) -> tuple[str, str]:
    """Axis titles of a feature map: "UMAP 1" / "UMAP 2", or "PC 1 (31% var)" / "PC 2 (12% var)" where
    the share is each axis's variance over the total variance of the unit-normalised decoder rows
    (`core.feature_map.pca_layout`'s input); without `W_dec`, "PC 1" / "PC 2"."""
    if method != "pca":
        return f"{method.upper()} 1", f"{method.upper()} 2"
    if W_dec is None or not len(W_dec):
        return "PC 1", "PC 2"
    # Unit rows u_i: total variance = mean ||u_i - mean u||^2 = 1 - ||mean u||^2, with no normalised copy
    # of W (a 24k x 768 decoder is read once, by a product, on every rerun of the page).
    W = np.asarray(W_dec, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", W, W))
    alive = norms > 1e-8
    inverse = np.where(alive, 1.0 / np.maximum(norms, 1e-8), 0.0).astype(np.float32)
    mean = (W.T @ inverse).astype(np.float64) / len(W)
    total = float(alive.mean() - mean @ mean)
    shares = np.asarray(coords, dtype=np.float64).var(axis=0) / total if total > 0 else np.zeros(2)
    return f"PC 1 ({shares[0]:.0%} var)", f"PC 2 ({shares[1]:.0%} var)"


def log_density(fire_count: np.ndarray, n_tokens: int, floor: float = 1e-7) -> np.ndarray:
    """log10 of each feature's firing density (fire_count / n_tokens), dead features at log10(`floor`):
    the feature map's colour on the Features page and in the report."""
    density = np.asarray(fire_count, dtype=np.float64) / max(int(n_tokens), 1)
    return np.log10(np.maximum(density, floor))
