"""Figures of the circle dial (core.interventions.dial.CircleDial): the model's probability of each item
of the cycle, placed around a circle in cyclic order, before the turn, after it and with the control."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from core.figures.style import apply_layout

# before, turned on the circle, control: grey, the house blue, orange
SERIES_COLOURS = ("#9e9e9e", "#1f77b4", "#ff7f0e")


def dial_item_figure(dial: Any, title: str | None = None) -> go.Figure:
    """Polar bars: one angle per item of the cycle (item i at 360 i / k degrees, clockwise from the top),
    the bar's length its next-token probability; clean, turned and control side by side."""
    turn = dial.turn
    words = list(turn.words)
    k = len(words)
    angles = [360.0 * i / k for i in range(k)]
    width = 360.0 / k / 3.5
    series = (("before", turn.item_probs_before, -width),
              (f"turned {turn.steps:g} step(s) on the circle", turn.item_probs_after, 0.0),
              ("control: same norm, random plane", dial.control_item_probs, width))
    fig = go.Figure()
    for (name, probs, offset), colour in zip(series, SERIES_COLOURS):
        fig.add_trace(go.Barpolar(r=list(probs), theta=[a + offset for a in angles], width=[width] * k, name=name,
                                  marker_color=colour, customdata=words,
                                  hovertemplate="%{customdata}: p = %{r:.3f}<extra>" + name + "</extra>"))
    fig.update_layout(polar=dict(angularaxis=dict(tickmode="array", tickvals=angles, ticktext=words,
                                                  direction="clockwise", rotation=90),
                                 radialaxis=dict(range=[0, 1], tickformat=".1f")),
                      legend=dict(orientation="h", y=-0.1))
    default = (f"{turn.answer_before} -> {turn.answer_after} (control: {dial.control_answer}) at {turn.site}")
    return apply_layout(fig, title or default, margin=dict(l=40, r=40, t=60, b=40))


def dial_top_tokens_figure(dial: Any, title: str = "Top next tokens") -> go.Figure:
    """Horizontal bars of the top tokens with their probabilities: before, turned, control (one panel each)."""
    from plotly.subplots import make_subplots

    panels = (("before", dial.top_before), ("turned", dial.top_after), ("control", dial.top_control))
    fig = make_subplots(rows=1, cols=3, subplot_titles=[name for name, _ in panels], horizontal_spacing=0.14)
    for col, ((name, tops), colour) in enumerate(zip(panels, SERIES_COLOURS), start=1):
        tokens = [t.token for t in tops][::-1]
        fig.add_trace(go.Bar(x=[t.probability for t in tops][::-1], y=[f"{tok!r}" for tok in tokens], orientation="h",
                             marker_color=colour, name=name, showlegend=False,
                             hovertemplate="%{y}: p = %{x:.3f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(range=[0, 1], title_text="probability", row=1, col=col)
    return apply_layout(fig, title, margin=dict(l=80, r=20, t=70, b=45))
