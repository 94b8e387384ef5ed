"""Small widgets shared by pages."""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from core.errors import AtlasError


def show_error(error: AtlasError) -> None:
    """Core errors carry messages written for the user: show them as they are."""
    st.error(str(error))


def guarded(call: Callable[[], Any]) -> Any | None:
    """Run `call`; on an AtlasError show it and return None (the page keeps drawing)."""
    try:
        return call()
    except AtlasError as error:
        show_error(error)
        return None


def layer_picker(hooks: list[str], label: str = "Layer (SAE site)", key: str = "layer") -> str | None:
    """Select one SAE hook; the choice is shared by every page through st.session_state[key]."""
    if not hooks:
        st.warning("No SAE is loaded: choose SAEs in the sidebar.")
        return None
    if st.session_state.get(key) not in hooks:
        st.session_state[key] = hooks[0]
    return st.selectbox(label, hooks, key=key)


def feature_picker(d_sae: int, key: str = "feature", default: int = 0) -> int:
    """Number input for a feature id; a missing (None) or out-of-range choice becomes `default`."""
    value = st.session_state.get(key)
    if not isinstance(value, int) or not 0 <= value < d_sae:
        st.session_state[key] = default if 0 <= default < d_sae else 0
    return int(st.number_input(f"Feature id (0-{d_sae - 1})", min_value=0, max_value=d_sae - 1, step=1, key=key))

