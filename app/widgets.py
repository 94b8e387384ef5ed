"""Small widgets shared by pages, and the app's error idiom.

The error idiom (every page): an AtlasError carries a message written for the user.
- A failure that leaves the page nothing to show: let the AtlasError propagate. app/main.py shows it once
  as st.error with its message, and the page stops there cleanly (what was drawn before it stays).
- A failure of one optional part (a figure, a table): `guarded(call)` shows it in place and returns None;
  the rest of the page goes on.
Any other exception is a bug: main.py logs its traceback on the server and shows the user what to do,
never the traceback (the server's client.showErrorDetails is "none" too).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from core.errors import AtlasError
from core.inputs import printable

UNEXPECTED = ("Atlas hit an unexpected problem on this page; nothing you saved is lost. Try the page again, or "
              "another choice in the sidebar; if it happens again, report it with the server's log, which has "
              "the details.")
# Links, images, HTML, LaTeX, code, emphasis and tables: what could make user text act or look like something
# else. (List markers and headings only restyle a line; they are left alone.)
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>$~|])")


def show_error(error: AtlasError) -> None:
    """Core errors carry messages written for the user: show them as they are (as text, not markdown)."""
    st.error(escape_markdown(str(error)))


def guarded(call: Callable[[], Any]) -> Any | None:
    """Run `call`; on an AtlasError show it in place and return None (the page keeps drawing)."""
    try:
        return call()
    except AtlasError as error:
        show_error(error)
        return None


def escape_markdown(text: str) -> str:
    """`text` shown literally by st.markdown / st.info (user text: titles, notes, messages naming files)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", printable(text)).replace("\n", "  \n")


@contextmanager
def working(label: str, *, expanded: bool = False, where: Any = None) -> Iterator[Any]:
    """A status box while the work inside runs, gone once it finishes, so finished boxes never stay on the
    page pushing the content down. Yields the st.status (for progress bars and label updates). `where`:
    a container (st.sidebar); default the page."""
    placeholder = (where or st).empty()
    try:
        with placeholder.container(), st.status(label, expanded=expanded) as status:
            yield status
    finally:
        placeholder.empty()


def _forget_feature() -> None:
    # A feature id means nothing on another SAE: the page opens the new layer's own top feature.
    st.session_state["feature"] = None


def layer_picker(hooks: list[str], label: str = "Layer (SAE site)", key: str = "layer") -> str:
    """Select one SAE hook; the choice is shared by every page through st.session_state[key]. Changing it
    clears the selected feature (None: the page picks that layer's top feature). Without hooks the page
    says so and stops."""
    if not hooks:
        st.warning("No SAE is loaded: choose SAEs in the sidebar under Sources.")
        st.stop()
    if st.session_state.get(key) not in hooks:
        if st.session_state.get(key) is not None:
            _forget_feature()
        st.session_state[key] = hooks[0]
    choice = st.selectbox(label, hooks, key=key, on_change=_forget_feature)
    return hooks[0] if choice is None else choice


def feature_picker(d_sae: int, key: str = "feature", default: int = 0) -> int:
    """Number input for a feature id; a missing (None) or out-of-range choice becomes `default`."""
    value = st.session_state.get(key)
    if not isinstance(value, int) or not 0 <= value < d_sae:
        st.session_state[key] = default if 0 <= default < d_sae else 0
    return int(st.number_input(f"Feature id (0-{d_sae - 1})", min_value=0, max_value=d_sae - 1, step=1, key=key))
