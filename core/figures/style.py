"""The house style shared by the figure modules: one place for title, axis titles, template and margins."""

from __future__ import annotations

import plotly.graph_objects as go


def apply_layout(fig: go.Figure, title: str, x: str | None = None, y: str | None = None) -> go.Figure:
    """Title, optional axis titles, the white template and the standard margins; returns `fig`."""
    fig.update_layout(title=title, template="plotly_white", margin=dict(l=55, r=20, t=60, b=45))
    if x is not None:
        fig.update_layout(xaxis_title=x)
    if y is not None:
        fig.update_layout(yaxis_title=y)
    return fig
