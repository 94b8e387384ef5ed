"""The house style shared by the figure modules: title, axis titles, template and margins; category colours
that stay distinct, in natural order, with small categories grouped; short site names for tick labels."""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

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


def short_site(site: str) -> str:
    """A site name short enough for a tick label that stays unique per site: "blocks.3.hook_resid_post" ->
    "L3 resid_post", "blocks.0.attn.hook_z" -> "L0 attn.z"; any other site as it is."""
    if site.startswith("blocks."):
        _, layer, rest = site.split(".", 2)
        return f"L{layer} " + rest.replace("hook_", "")
    return site


# ---------------------------------------------------------------- categories

# Plotly's Dark24: 24 colours, every pair at least 26 apart in CIELAB (Delta E 1976); the default
# Plotly + D3 pair holds 20 colours but only ~10 hues (blues, oranges and greens twice, Delta E 11).
CATEGORY_COLOURS: tuple[str, ...] = tuple(qualitative.Dark24)
OTHER_COLOUR = "#c8c8c8"   # the "other" group: light grey, apart from every category colour
MAX_CATEGORIES = len(CATEGORY_COLOURS)


def natural_key(label: object) -> tuple:
    """Sort key that reads numbers as numbers: "lobe 2" < "lobe 10"; "other" and "no ..." go last."""
    text = str(label)
    last = text == "other" or text.startswith("no ")
    parts = re.split(r"(-?\d+(?:\.\d+)?)", text)
    return (last,) + tuple((0, float(p), "") if re.fullmatch(r"-?\d+(?:\.\d+)?", p) else (1, 0.0, p) for p in parts)


def category_order(labels: Sequence[object] | np.ndarray) -> list[str]:
    """The distinct labels as strings, in natural order (the legend's order)."""
    return sorted({str(label) for label in labels}, key=natural_key)


def group_small_categories(labels: Sequence[object] | np.ndarray, max_categories: int = MAX_CATEGORIES,
                           other: str = "other") -> np.ndarray:
    """Labels as strings with the smallest categories merged into `other` so that at most
    `max_categories` remain (the `other` group counts as one); ties keep the earlier category."""
    text = np.asarray([str(label) for label in labels], dtype=object)
    names, counts = np.unique(text, return_counts=True)
    if len(names) <= max_categories:
        return text
    order = sorted(range(len(names)), key=lambda i: (-counts[i], natural_key(names[i])))
    kept = {names[i] for i in order[:max_categories - 1]}
    return np.asarray([t if t in kept else other for t in text], dtype=object)


def category_colours(categories: Sequence[str], other: str = "other") -> dict[str, str]:
    """One colour per category, in the order given: `CATEGORY_COLOURS` (distinct) while they last,
    grey for `other`; more categories than colours is a ValueError (group them first)."""
    named = [c for c in categories if c != other]
    if len(named) > len(CATEGORY_COLOURS):
        raise ValueError(f"{len(named)} categories but {len(CATEGORY_COLOURS)} distinct colours: "
                         "group the small ones first (group_small_categories).")
    colours = dict(zip(named, CATEGORY_COLOURS))
    if other in categories:
        colours[other] = OTHER_COLOUR
    return colours
