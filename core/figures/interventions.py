"""Figures and tables for the interventions (the Steer page and the "What does this feature do?" action).

Inputs are the typed results of core.interventions: SteeringResult (completions side by side),
AblationResult (next-token probabilities that rose and fell), PatchingResult (recovered logit difference
per layer x position). Token text reaches Plotly through `plotly_text` (markup stays text).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.figures.features import plotly_text
from core.figures.style import apply_layout
from core.interventions.ablation import AblationResult
from core.interventions.patching import PatchingResult
from core.interventions.steering import SteeringResult

COMPONENT_TITLES = {"resid_pre": "residual stream (resid_pre)", "attn_out": "attention output (attn_out)",
                    "mlp_out": "MLP output (mlp_out)"}
ROSE_COLOUR, FELL_COLOUR = "#d6604d", "#4393c3"


def strength_label(result: SteeringResult, scale: float) -> str:
    """'x2' for a row of the sweep, with what that adds or clamps: '#12 +8.0, #87 -4.0'."""
    if result.mode == "vector":
        return f"x{scale:g}"
    parts = [f"#{f.feature} = {scale * c:.3g}" if result.mode == "clamp" else f"#{f.feature} {scale * c:+.3g}"
             for f, c in zip(result.features, result.coefficients)]
    return f"x{scale:g} ({', '.join(parts)})"


def completions_frame(result: SteeringResult) -> pd.DataFrame:
    """One row per completion, the unsteered one first: strength, the generated text, and whether it
    differs from the unsteered text (and from which new token on)."""
    base = result.unsteered.token_ids
    rows = [{"steering": "unsteered", "completion": result.unsteered.text, "differs from token": "-"}]
    for row in result.steered:
        first = next((i for i, (a, b) in enumerate(zip(row.token_ids, base)) if a != b), None)
        if first is None and len(row.token_ids) != len(base):
            first = min(len(row.token_ids), len(base))
        rows.append({"steering": strength_label(result, row.scale), "completion": row.text,
                     "differs from token": "same" if first is None else str(first + 1)})
    return pd.DataFrame(rows)


def ablation_figure(result: AblationResult, *, k: int = 10) -> go.Figure:
    """Horizontal bars: the change in next-token probability (after - before) of the tokens that rose
    most (red) and fell most (blue) when the features were ablated."""
    shifts = list(reversed(result.fell[:k])) + list(reversed(result.rose[:k]))   # fell at the bottom
    labels = [plotly_text(repr(s.token)) for s in shifts]
    changes = [s.prob_after - s.prob_before for s in shifts]
    fig = go.Figure(go.Bar(
        x=changes, y=labels, orientation="h",
        marker_color=[ROSE_COLOUR if c > 0 else FELL_COLOUR for c in changes],
        customdata=[[s.prob_before, s.prob_after, s.logit_after - s.logit_before] for s in shifts],
        hovertemplate="%{y}: p %{customdata[0]:.4f} -> %{customdata[1]:.4f}<br>logit change %{customdata[2]:+.3f}"
                      "<extra></extra>"))
    fig.update_layout(height=max(260, 24 * len(shifts) + 110), yaxis={"type": "category"})
    names = ", ".join(f"#{f}" for f in result.features)
    return apply_layout(fig, f"Next-token probability change, {result.mode}-ablating {names} "
                             f"(KL {result.kl_divergence:.4f} nats)", x="probability after - before")


def patching_figure(result: PatchingResult) -> go.Figure:
    """One heatmap per patched component: layer (rows) x position (columns, the corrupted prompt's tokens),
    the recovered logit difference (0 = nothing recovered, 1 = the clean logit difference), centred on 0."""
    n = len(result.components)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[COMPONENT_TITLES.get(c, c) for c in result.components])
    positions = [f"{i}: {plotly_text(t)}" for i, t in enumerate(result.corrupted_tokens)]
    clean = [plotly_text(t) for t in result.clean_tokens]
    grids = [result.grid(c) for c in result.components]
    bound = max(1.0, max((float(np.nanmax(np.abs(g))) for g in grids if g.size), default=1.0))
    for row, (component, grid) in enumerate(zip(result.components, grids), start=1):
        layers = [f"L{i}" for i in range(grid.shape[0])]
        hover = [[f"{component} L{layer}, position {p} (clean {clean[p]!s} / corrupted {positions[p]})"
                  for p in range(grid.shape[1])] for layer in range(grid.shape[0])]
        fig.add_trace(go.Heatmap(z=grid, x=positions, y=layers, zmin=-bound, zmax=bound, zmid=0,
                                 colorscale="RdBu", reversescale=True, showscale=(row == 1),
                                 colorbar={"title": "recovered"}, text=hover,
                                 hovertemplate="%{text}<br>recovered %{z:.3f}<extra></extra>"), row=row, col=1)
        fig.update_yaxes(title_text="layer", autorange="reversed", row=row, col=1)
    fig.update_layout(height=170 + 60 * sum(g.shape[0] for g in grids) + 40 * n)
    return apply_layout(fig, f"Activation patching: logit({plotly_text(result.correct)}) - "
                             f"logit({plotly_text(result.wrong)}) recovered (clean {result.ld_clean:.3f}, "
                             f"corrupted {result.ld_corrupted:.3f})")
