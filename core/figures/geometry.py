"""Plotly figures for concept geometry: galaxy, lobes, crystals, circles, concepts, probes.

Each function takes the results of `core.metrics.{geometry, circles, crystals, concepts, probes}`
(or plain arrays) and returns a `go.Figure`; pages only arrange them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from core.figures.declutter import label_mask
from core.figures.features import plotly_text
from core.figures.style import CATEGORY_COLOURS, apply_layout, category_colours, category_order, group_small_categories
from core.metrics.circles import Circularity
from core.metrics.concepts import HierarchicalOrthogonality, SimplexProjection
from core.metrics.geometry import GalaxySpectrum, LobeAgreement
from core.metrics.probes import LayerProbes, ProbeResult

PALETTE = qualitative.Plotly + qualitative.D3


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


GEOMETRY_MARGIN = dict(l=50, r=20, t=50, b=45)  # tighter top than the house style: these titles are one line


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    return apply_layout(fig, title, x, y, margin=GEOMETRY_MARGIN)


# ---------------------------------------------------------------- galaxy


def galaxy_spectrum_figure(result: GalaxySpectrum, title: str = "Decoder-cloud eigenvalue spectrum") -> go.Figure:
    """Log-log eigenvalues of cov(W_dec) against rank, with the fitted power law over its fit range."""
    lam = np.asarray(result.eigenvalues)
    rank = np.arange(1, lam.size + 1)
    pos = lam > 0
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=rank[pos], y=lam[pos], mode="lines+markers", name="eigenvalues",
                             marker=dict(size=4)))
    fit_rank = rank[result.fit_start:result.fit_stop]
    fit_line = 10 ** (result.intercept - result.alpha * np.log10(fit_rank))
    fig.add_trace(go.Scatter(x=fit_rank, y=fit_line, mode="lines", name=f"fit: alpha = {result.alpha:.3f}",
                             line=dict(dash="dash", width=3)))
    fig.update_xaxes(type="log")
    fig.update_yaxes(type="log")
    # The fit note goes under the title: below the plot it sat on the x-axis title.
    shown = f"{title}<br><sup>{plotly_text(result.note)}</sup>" if result.note else title
    return _layout(fig, shown, "rank (log scale)", "eigenvalue (log scale)")


def alpha_per_layer_figure(layers: Sequence[str | int], alphas: Sequence[float],
                           isotropic_reference: float | None = None) -> go.Figure:
    """Galaxy power-law exponent alpha per layer (Li et al. 2024 find it peaks mid-depth), with the alpha of
    random Gaussian directions of the same shape (`captions.isotropic_galaxy_alpha`) as a dotted line named in
    the legend; the y axis starts at 0 so the distance from that null reads true."""
    x = [str(layer) for layer in layers]
    fig = go.Figure(go.Scatter(x=x, y=list(alphas), mode="lines+markers", name="alpha (decoder cloud)"))
    if isotropic_reference is not None:
        fig.add_hline(y=isotropic_reference, line_dash="dot", line_color="grey", showlegend=True,
                      name=f"random directions, same shape: {isotropic_reference:.2f}")
    top = max([float(a) for a in alphas] + [isotropic_reference or 0.0])
    fig.update_yaxes(range=[0, top * 1.15 if top > 0 else 1])
    fig.update_layout(legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0))
    return _layout(fig, "Power-law exponent of the decoder cloud per layer", "layer", "alpha")


# ---------------------------------------------------------------- lobes


def lobe_agreement_figure(result: LobeAgreement, title: str = "Lobes vs geometry (AMI)") -> go.Figure:
    """Histogram of the label-permutation null AMIs with the observed AMI as a line."""
    fig = go.Figure(go.Histogram(x=np.asarray(result.null), name="permutation null", nbinsx=30, opacity=0.7))
    fig.add_vline(x=result.ami, line_color="crimson", line_width=3,
                  annotation_text=f"observed AMI = {result.ami:.3f} (p = {result.p_value:.3g})")
    return _layout(fig, title, "adjusted mutual information", "permutations")


def lobe_map_figure(coords: np.ndarray, labels: Sequence[int] | np.ndarray, hover: Sequence[str] | None = None,
                    title: str = "Feature lobes", axis_titles: tuple[str, str] = ("map 1", "map 2")) -> go.Figure:
    """Features at 2-D coordinates (UMAP/PCA of decoder rows), coloured by lobe.

    Every lobe gets its own colour from a palette of distinct ones (`style.CATEGORY_COLOURS`); beyond
    that many lobes the smallest are merged into a grey "other". The legend lists the lobes in their
    order (lobe 0, 1, 2, ..., 10, then other) with their sizes. `axis_titles` name the axes
    (e.g. `map_axis_titles(...)`: "PC 1 (31% var)" or "UMAP 1")."""
    xy = np.asarray(coords, dtype=float)
    names = group_small_categories([f"lobe {label}" for label in np.asarray(labels)])
    order = category_order(names)
    colours = category_colours(order)
    fig = go.Figure()
    for name in order:
        sel = np.flatnonzero(names == name)
        text = None if hover is None else [hover[i] for i in sel.tolist()]
        fig.add_trace(go.Scattergl(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=f"{name} ({sel.size})",
                                   text=text, marker=dict(size=5, color=colours[name]),
                                   hovertemplate=f"{name}<br>%{{text}}<extra></extra>"))
    fig.update_layout(legend=dict(title="lobe (features)", traceorder="normal", itemsizing="constant"))
    return _layout(fig, title, *axis_titles)


# ---------------------------------------------------------------- crystals


def crystals_figure(points_a: np.ndarray, points_b: np.ndarray, relation_labels: Sequence,
                    words_a: Sequence[str] | None = None, words_b: Sequence[str] | None = None,
                    use_lda: bool = False) -> go.Figure:
    """Word pairs in 2-D (from `crystal_projection`) with an arrow a -> b per pair, coloured by relation.

    Words are written only where their label overlaps no other (`declutter.label_mask`; every relation
    gets one written word first, as an anchor); every pair names itself in the hover text.
    """
    A = np.asarray(points_a, dtype=float)
    B = np.asarray(points_b, dtype=float)
    labels = np.asarray([str(r) for r in relation_labels], dtype=object)
    order = category_order(labels)
    colours = category_colours(order) if len(order) <= len(CATEGORY_COLOURS) else {r: _colour(j) for j, r in
                                                                                   enumerate(order)}
    n = len(labels)
    shown_a = shown_b = np.zeros(n, dtype=bool)
    if words_a is not None and words_b is not None:
        texts = [str(w) for w in words_a] + [str(w) for w in words_b]
        shown = label_mask(np.vstack([A, B]), texts, groups=np.concatenate([labels, labels]),
                           above=np.r_[np.ones(n, dtype=bool), np.zeros(n, dtype=bool)])
        shown_a, shown_b = shown[:n], shown[n:]
    fig = go.Figure()
    for rel in order:
        idx = np.flatnonzero(labels == rel)
        colour = colours[rel]
        xs = np.stack([A[idx, 0], B[idx, 0], np.full(idx.size, np.nan)], 1).ravel()
        ys = np.stack([A[idx, 1], B[idx, 1], np.full(idx.size, np.nan)], 1).ravel()
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=1.5), opacity=0.6,
                                 name=rel, legendgroup=rel, hoverinfo="skip"))
        pair = ([plotly_text(f"{words_a[i]} -> {words_b[i]} ({rel})") for i in idx.tolist()]
                if words_a is not None and words_b is not None else [rel] * idx.size)
        text_b = [plotly_text(words_b[i]) if shown_b[i] else "" for i in idx.tolist()] if words_b is not None else None
        text_a = [plotly_text(words_a[i]) if shown_a[i] else "" for i in idx.tolist()] if words_a is not None else None
        fig.add_trace(go.Scatter(x=B[idx, 0], y=B[idx, 1], mode="markers+text", showlegend=False, legendgroup=rel,
                                 marker=dict(symbol="arrow", angleref="previous", size=11, color=colour), text=text_b,
                                 textposition="bottom center", hovertext=pair, hoverinfo="text"))
        fig.add_trace(go.Scatter(x=A[idx, 0], y=A[idx, 1], mode="markers+text", showlegend=False, legendgroup=rel,
                                 text=text_a,
                                 textposition="top center", marker=dict(size=6, color=colour),
                                 hovertext=pair, hoverinfo="text"))
    view = "LDA directions" if use_lda else "PCA"
    # Tall enough that the written words have room; the words in near-black over the lighter arrows.
    fig.update_layout(legend=dict(title="relation", traceorder="normal"), height=620,
                      font=dict(color="#222"))
    title = f"Analogy parallelograms ({view})"
    if words_a is not None and int(shown_a.sum() + shown_b.sum()) < 2 * n:
        title += "; overlapping words hidden (hover a point)"
    return _layout(fig, title, f"{view} 1", f"{view} 2")


# ---------------------------------------------------------------- circles


def circle_pcs_figure(projections: np.ndarray, item_labels: Sequence[str], pcs: tuple[int, int] = (0, 1),
                      cycle_order: Sequence[int] | None = None, title: str = "Items on principal components",
                      axis_label: str = "PC") -> go.Figure:
    """Items (one row of `projections` each, e.g. mean PCA coordinates of each month) on a pair of axes,
    labelled and joined in `cycle_order` (default 0, 1, ..., k-1, 0). `axis_label` names the axes
    ("PC" for principal components, "Fourier" for the cos/sin plane of a frequency)."""
    P = np.asarray(projections, dtype=float)
    a, b = pcs
    order = list(range(P.shape[0])) if cycle_order is None else list(cycle_order)
    loop = order + order[:1]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=P[loop, a], y=P[loop, b], mode="lines",
                             name="cycle order" if cycle_order is None else "visiting order",
                             line=dict(color="lightgray")))
    fig.add_trace(go.Scatter(x=P[:, a], y=P[:, b], mode="markers+text", text=list(item_labels),
                             textposition="top center", name="items",
                             marker=dict(size=9, color=np.arange(P.shape[0]), colorscale="HSV")))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    if axis_label == "PC":
        return _layout(fig, title, f"PC {a + 1}", f"PC {b + 1}")
    return _layout(fig, title, f"{axis_label} cos", f"{axis_label} sin")


def fourier_shares_figure(result: Circularity, title: str = "Share of variance per Fourier frequency") -> go.Figure:
    """Bars: share of the items' variance at each frequency f, against the shuffled-label mean and 95%."""
    f = [str(x) for x in np.asarray(result.frequencies)]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=f, y=np.asarray(result.shares), name="items in cycle order"))
    fig.add_trace(go.Scatter(x=f, y=np.asarray(result.null_share_mean), mode="markers+lines",
                             name="shuffled labels: mean", line=dict(dash="dot")))
    fig.add_trace(go.Scatter(x=f, y=np.asarray(result.null_share_q95), mode="markers+lines",
                             name="shuffled labels: 95%", line=dict(dash="dash")))
    fig.add_annotation(text=f"best f = {result.best_frequency}, share {result.best_share:.2f}, p = {result.p_value:.3g}",
                       xref="paper", yref="paper", x=1, y=1.08, showarrow=False, xanchor="right")
    return _layout(fig, title, "frequency f", "share of variance")


# ---------------------------------------------------------------- concepts


def simplex_figure(projection: SimplexProjection, category_names: Sequence[str],
                   point_labels: Sequence[str] | None = None, point_categories: Sequence[int] | None = None,
                   title: str = "Sibling categories on the span of their vectors") -> go.Figure:
    """Category vectors (arrows from the origin) and member words on the span of the sibling vectors:
    2-D when it has 2 dimensions, 3-D when it has 3 or more (first three coordinates)."""
    V = np.asarray(projection.vector_coords, dtype=float)
    P = None if projection.point_coords is None else np.asarray(projection.point_coords, dtype=float)
    dims = V.shape[1]
    if dims == 1:
        V = np.hstack([V, np.zeros_like(V)])
        P = None if P is None else np.hstack([P, np.zeros_like(P)])
        dims = 2
    three = dims >= 3
    fig = go.Figure()
    cats = None if point_categories is None else np.asarray(point_categories)
    for j, name in enumerate(category_names):
        colour = _colour(j)
        if three:
            fig.add_trace(go.Scatter3d(x=[0, V[j, 0]], y=[0, V[j, 1]], z=[0, V[j, 2]], mode="lines+text",
                                       text=["", name], line=dict(color=colour, width=6), name=name))
        else:
            fig.add_trace(go.Scatter(x=[0, V[j, 0]], y=[0, V[j, 1]], mode="lines+markers+text", text=["", name],
                                     line=dict(color=colour, width=3), name=name))
    if P is not None:
        colours = [_colour(int(c)) for c in cats] if cats is not None else "gray"
        if three:
            fig.add_trace(go.Scatter3d(x=P[:, 0], y=P[:, 1], z=P[:, 2], mode="markers", text=point_labels,
                                       marker=dict(size=3, color=colours), name="words"))
        else:
            fig.add_trace(go.Scatter(x=P[:, 0], y=P[:, 1], mode="markers", text=point_labels,
                                     marker=dict(size=6, color=colours), name="words"))
    fig.update_layout(title=title, template="plotly_white")
    return fig


def hierarchy_figure(result: HierarchicalOrthogonality, parent_name: str = "parent") -> go.Figure:
    """|cos(ell_child - ell_parent, ell_parent)| per child against the two shuffled baselines."""
    fig = go.Figure(go.Bar(x=list(result.children), y=np.abs(np.asarray(result.cos_child_minus_parent)),
                           name=f"|cos(child - {parent_name}, {parent_name})|"))
    if np.size(result.shuffled_rows_abs_cos):
        fig.add_hline(y=result.shuffled_rows_mean, line_dash="dash", annotation_text="rows of g shuffled")
    if np.size(result.random_parent_abs_cos):
        fig.add_hline(y=result.random_parent_mean, line_dash="dot", annotation_text="random parent",
                      annotation_position="bottom right")
    return _layout(fig, f"Hierarchical orthogonality under '{parent_name}'", "child category", "|cosine|")


# ---------------------------------------------------------------- probes


def probe_r2_figure(result: LayerProbes, attribute: str = "attribute") -> go.Figure:
    """Held-out R^2 of the ridge probe per layer."""
    fig = go.Figure(go.Scatter(x=list(result.layers), y=np.asarray(result.r2), mode="lines+markers", name="R^2"))
    fig.add_hline(y=0, line_color="gray")
    return _layout(fig, f"Linear probe for {attribute}: held-out R^2 per layer", "layer", "held-out R^2")


def probe_map_figure(result: ProbeResult, names: Sequence[str] | None = None,
                     title: str = "Probe: predicted vs true coordinates",
                     target_names: Sequence[str] = ()) -> go.Figure:
    """Held-out items: true 2-D coordinates and the probe's predictions, joined by a line per item
    (1-D targets are shown as predicted against true). `target_names` name the target's coordinates
    on the axes (e.g. ("longitude", "latitude") or ("birth year",))."""
    y, p = np.asarray(result.y_test, dtype=float), np.asarray(result.y_pred, dtype=float)
    labels = None if names is None else [names[i] for i in np.asarray(result.test_indices)]
    fig = go.Figure()
    if y.shape[1] >= 2:
        xs = np.stack([y[:, 0], p[:, 0], np.full(len(y), np.nan)], 1).ravel()
        ys = np.stack([y[:, 1], p[:, 1], np.full(len(y), np.nan)], 1).ravel()
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="lightgray"), name="error"))
        fig.add_trace(go.Scatter(x=y[:, 0], y=y[:, 1], mode="markers", text=labels, name="true"))
        fig.add_trace(go.Scatter(x=p[:, 0], y=p[:, 1], mode="markers", text=labels, name="predicted",
                                 marker=dict(symbol="x")))
        first, second = (list(target_names) + ["target 1", "target 2"][len(target_names):])[:2]
        return _layout(fig, f"{title} (R^2 = {result.r2:.2f})", first, second)
    fig.add_trace(go.Scatter(x=y[:, 0], y=p[:, 0], mode="markers", text=labels, name="items"))
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(dash="dash"), name="y = x"))
    target = target_names[0] if target_names else "target"
    return _layout(fig, f"{title} (R^2 = {result.r2:.2f})", f"true {target}", f"predicted {target}")


def probe_figures_from_layers(results: Mapping[str, LayerProbes]) -> go.Figure:
    """Several attributes' R^2 curves on one plot (e.g. space and time)."""
    fig = go.Figure()
    for name, res in results.items():
        fig.add_trace(go.Scatter(x=list(res.layers), y=np.asarray(res.r2), mode="lines+markers", name=name))
    return _layout(fig, "Held-out R^2 per layer", "layer", "held-out R^2")
