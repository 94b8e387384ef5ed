"""The house style shared by the figure modules: one place for title, axis titles, template and margins."""

from __future__ import annotations

import plotly.graph_objects as go

STANDARD_MARGIN = dict(l=55, r=20, t=60, b=45)


def apply_layout(fig: go.Figure, title: str, x: str | None = None, y: str | None = None,
                 margin: dict[str, int] | None = None) -> go.Figure:
    """Title, optional axis titles, the white template and the margins (the standard ones unless
    `margin` is given); returns `fig`."""
    fig.update_layout(title=title, template="plotly_white", margin=dict(margin or STANDARD_MARGIN))
    if x is not None:
        fig.update_layout(xaxis_title=x)
    if y is not None:
        fig.update_layout(yaxis_title=y)
    return fig


def site_label(site: str) -> str:
    """Short name of a representation site for axes and tables: "blocks.3.hook_resid_post" -> "L3";
    any other site ("unembed", "hook_embed") as it is."""
    if site.startswith("blocks."):
        return "L" + site.split(".")[1]
    return site
