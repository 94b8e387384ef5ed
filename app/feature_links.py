"""Feature ids as links: every id on the Features and Probe pages opens that feature, with its layer.

Three ways in, all landing on the Features page with `?layer=<hook>&feature=<id>`:
- `feature_link` / `feature_link_list`: st.page_link anchors (client-side navigation: the browser
  session, its sources and state are kept; middle-click opens a new tab on the same URL);
- `clickable_features`: a dataframe whose row click opens the row's feature (tables of many rows);
- `open_feature`: from code, e.g. a click on the feature map.
The Features page calls `apply_feature_link` before drawing its pickers, and `sync_feature_url` after,
so the address bar always names the open feature (a copied URL reopens it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import streamlit as st

FEATURES_PAGE = "../pages/features.py"   # relative to app/main.py, the main script
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$])")


def md_escape(text: str) -> str:
    """Text shown literally in a Markdown label (tokens like '*' or '[' stay as they are)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def link_params(hook: str, feature: int) -> dict[str, str]:
    return {"layer": str(hook), "feature": str(int(feature))}


def feature_link(hook: str, feature: int, text: str = "", *, prefix: str = "") -> None:
    """One link to `feature` on `hook`: '#17 · text' (text: its label or top tokens)."""
    label = f"{prefix}**#{int(feature)}**" + (f" \u00b7 {md_escape(text)}" if text else "")
    st.page_link(FEATURES_PAGE, label=label, query_params=link_params(hook, feature))


def feature_link_list(rows: Iterable[tuple[str, int, str]], *, empty: str = "None.") -> None:
    """Links for (hook, feature, text) rows, one per line, in a compact container."""
    rows = list(rows)
    if not rows:
        st.caption(empty)
        return
    with st.container(gap="small"):
        for hook, feature, text in rows:
            feature_link(hook, feature, text)


def apply_feature_link(hooks: Sequence[str], d_sae_of: dict[str, int]) -> str | None:
    """Open the feature named in the URL (?layer=...&feature=...) once per new link: sets the pickers' state.

    Returns a message when the link names a layer or feature this session does not have, else None.
    Call before the layer and feature pickers are drawn.
    """
    feature = st.query_params.get("feature")
    if feature is None:
        return None
    layer = st.query_params.get("layer") or st.session_state.get("layer")
    link = (layer, feature)
    if st.session_state.get("_applied_link") == link:
        return None
    st.session_state["_applied_link"] = link
    if not isinstance(layer, str) or layer not in hooks:
        return f"The link names layer {layer!r}, which the loaded SAEs do not have; showing {hooks[0]!r}."
    if not str(feature).isdigit() or not 0 <= int(feature) < d_sae_of[layer]:
        return f"The link names feature {feature!r}; {layer} has features 0-{d_sae_of[layer] - 1}."
    st.session_state["layer"] = layer
    st.session_state["feature"] = int(feature)
    return None


def sync_feature_url(hook: str, feature: int) -> None:
    """Write the open feature into the URL, and remember it as applied (no loop back into the pickers)."""
    params = link_params(hook, feature)
    st.session_state["_applied_link"] = (params["layer"], params["feature"])
    # Written on every run: after a link to this same page the server already holds the new parameters
    # while the browser's address bar still shows the old ones.
    st.query_params.update(params)


def open_feature(hook: str, feature: int) -> None:
    """Go to the Features page on `feature` of `hook` (ends this script run); the page applies the link."""
    st.switch_page(FEATURES_PAGE, query_params=link_params(hook, feature))


def clickable_features(frame: Any, *, key: str, hooks: Sequence[str] | str, ids: Sequence[int] | None = None,
                       **dataframe_kwargs: Any) -> None:
    """st.dataframe where clicking a row opens its feature on the Features page.

    hooks: one hook for every row, or a hook per row; ids: the feature per row (default: the "feature"
    column). The table's widget key changes after each open, so coming back shows no stale selection.
    """
    ids = [int(i) for i in (ids if ids is not None else frame["feature"].tolist())]
    row_hooks = [hooks] * len(ids) if isinstance(hooks, str) else list(hooks)
    generation = st.session_state.get(f"_{key}_generation", 0)
    widget_key = f"{key}_{generation}"

    def on_select() -> None:
        rows = st.session_state[widget_key].selection.rows
        if rows:
            st.session_state["_pending_open"] = (row_hooks[rows[0]], ids[rows[0]])
            st.session_state[f"_{key}_generation"] = generation + 1

    st.dataframe(frame, key=widget_key, on_select=on_select, selection_mode="single-row", hide_index=True,
                 **dataframe_kwargs)


def follow_pending_open() -> None:
    """After the widgets: go to the feature a table click asked for (switching pages cannot run in a callback)."""
    pending = st.session_state.pop("_pending_open", None)
    if pending is not None:
        open_feature(*pending)
