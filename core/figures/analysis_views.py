"""Figures over the typed results of `core.analysis` that the family figure modules do not draw: circle
strength per layer, one decoder cluster's reconstructions, lines across layers, crystal quality per layer.
(The family modules core.figures.{spectral, superposition, geometry} draw the metric results that the
analysis results hold: `galaxy_spectrum_figure(entry.galaxy)`, `phase_figure(over.phases[site])`, ...)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from core.figures.style import apply_layout as _layout
from core.figures.style import site_label

if TYPE_CHECKING:
    from core.analysis.results import CircleLocation, DecoderCluster
    from core.metrics.crystals import CrystalQuality

PALETTE = qualitative.Plotly + qualitative.D3


def circularity_by_layer_figure(entry: CircleLocation, name: str, location: str | None = None) -> go.Figure:
    """Best Fourier share per site (bars, labelled with the frequency) against the shuffled-label 95%
    level at that frequency, with the p-value in the hover text. `entry` is one location of a cycle in
    core.analysis.cyclic_circles; `location` names it in the title."""
    best, q95, text, hover = [], [], [], []
    for scored in entry.per_site:
        c = scored.circularity
        f = int(c.best_frequency)
        best.append(c.best_share)
        q95.append(c.null_share_q95[f - 1])
        text.append(f"f={f}")
        hover.append(f"f = {f}, share {c.best_share:.2f}, p = {c.p_value:.3g}, balance {c.circle_balance:.2f}")
    labels = [site_label(s) for s in entry.sites]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=best, text=text, textposition="outside", hovertext=hover,
                         name="best-frequency share", marker_color=PALETTE[0]))
    fig.add_trace(go.Scatter(x=labels, y=q95, mode="markers+lines", name="shuffled labels: 95%",
                             line=dict(dash="dash", color="gray")))
    fig.update_yaxes(range=[0, 1.05])
    where = f" at the {location}" if location else ""
    return _layout(fig, f"{name}: circle strength per layer{where} (share of variance at the best frequency)",
                   "site", "share of variance")




def cluster_pca_figure(cluster: DecoderCluster, token_names: Sequence[str], pcs: tuple[int, int] = (0, 1),
                       highlight: Mapping[int, int] | None = None, title: str | None = None) -> go.Figure:
    """Reservoir tokens on a PC pair of one decoder cluster's reconstructions (Engels et al. 2024),
    coloured by token when it is one of `highlight` (token id -> item index, e.g. months), else grey."""
    P = np.asarray(cluster.projections, dtype=float)
    tokens = np.asarray(cluster.tokens, dtype=int)
    a, b = pcs
    if P.ndim != 2 or P.shape[1] <= max(a, b):
        a, b = 0, min(1, P.shape[1] - 1) if P.ndim == 2 else 0
    fig = go.Figure()
    highlight = dict(highlight or {})
    other = np.array([t not in highlight for t in tokens], dtype=bool)
    if other.any():
        fig.add_trace(go.Scattergl(x=P[other, a], y=P[other, b], mode="markers", name="other tokens",
                                   text=[token_names[int(i)] for i in np.flatnonzero(other)],
                                   marker=dict(size=5, color="lightgray")))
    for token, index in sorted(highlight.items(), key=lambda kv: kv[1]):
        sel = tokens == token
        if sel.any():
            fig.add_trace(go.Scattergl(x=P[sel, a], y=P[sel, b], mode="markers",
                                       name=token_names[int(np.flatnonzero(sel)[0])],
                                       marker=dict(size=8, color=PALETTE[index % len(PALETTE)])))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return _layout(fig, title or f"Cluster {cluster.cluster}: reconstructions on PCs {a + 1}-{b + 1}",
                   f"PC {a + 1}", f"PC {b + 1}")


def layer_lines_figure(layers: Sequence[int | str | None], series: Mapping[str, Sequence[float | None]], title: str,
                       y: str, reference: float | None = None, reference_label: str = "") -> go.Figure:
    """One line per named series across layers, with an optional horizontal reference."""
    fig = go.Figure()
    for i, (name, values) in enumerate(series.items()):
        fig.add_trace(go.Scatter(x=list(layers), y=[np.nan if v is None else v for v in values],
                                 mode="lines+markers", name=name, line=dict(color=PALETTE[i % len(PALETTE)])))
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dot", annotation_text=reference_label)
    return _layout(fig, title, "layer", y)


def crystal_quality_figure(layers: Sequence[int | str | None], per_site: Sequence[CrystalQuality],
                           use_lda: bool) -> go.Figure:
    """Within- and across-relation mean cosine of the analogy difference vectors per layer (raw, or after
    held-out LDA): parallelograms show as within far above across."""
    scores = [q.lda if use_lda else q.raw for q in per_site]
    within = [None if s is None else s.within_cos for s in scores]
    across = [None if s is None else s.across_cos for s in scores]
    return layer_lines_figure(layers, {"within a relation": within, "across relations": across},
                              "Analogy difference vectors: mean cosine" + (" after held-out LDA" if use_lda else ""),
                              "mean cosine", reference=0.0)
