"""Session-state glue: the keys every page shares, session documents in and out, `?session=<id>`.

Widgets use these keys directly (`key=...`), and main.py re-assigns them at the top of every run so
Streamlit does not drop the value of a widget that the current page does not draw.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core.errors import AtlasError
from core.jsonable import jsonable
from core.sessions import Session

# key -> default. Sources (sidebar) first, then what the pages show.
DEFAULTS: dict[str, Any] = {
    "model_source": "organism",
    "tl_name": "gpt2",
    "hf_dir": "",
    "checkpoint": "final",
    "tl_checkpoint": "",
    "sae_source": "organism",
    "sae_hooks": None,            # organism: list of hook names; None = every layer
    "sae_release": None,
    "sae_id": None,
    "sae_dir": "",
    "corpus_source": "world",
    "corpus_path": "",
    "corpus_column": "text",
    "hf_dataset": "",
    "hf_split": "train",
    "device": "auto",
    "harvest_tokens": 100_000,
    "prompt": "on monday the king of france went to paris",
    "layer": None,                # selected SAE hook name
    "feature": None,              # selected feature id; None = not chosen yet (Features opens the top feature)
    "color_by": "Reconstruction error",
    "heatmap_quantity": "recon_error",
    "map_method": "PCA (quick)",
    "map_color": "density",
    "position": 1,
    "search": "",
}
PERSISTENT_KEYS = tuple(DEFAULTS)
SETTING_KEYS = ("color_by", "heatmap_quantity", "map_method", "map_color", "position", "search",
                "harvest_tokens", "device")
SOURCE_KEYS = ("model_source", "tl_name", "hf_dir", "checkpoint", "tl_checkpoint", "sae_source",
               "sae_hooks", "sae_release", "sae_id", "sae_dir", "corpus_source", "corpus_path",
               "corpus_column", "hf_dataset", "hf_split")


def init_state() -> None:
    """Fill missing keys with defaults and keep widget values alive across pages."""
    for key, value in DEFAULTS.items():
        if key not in st.session_state:
            st.session_state[key] = value
        else:
            # Re-assigning keeps a widget's value when the page that draws it is not shown.
            st.session_state[key] = st.session_state[key]
    st.session_state.setdefault("artifact_keys", {})   # purpose -> artifact key, for sessions/bundles


def remember_artifact(purpose: str, key: str | None) -> None:
    """Record an artifact the current view relies on (saved with the session, shipped in bundles)."""
    if key:
        st.session_state.setdefault("artifact_keys", {})[purpose] = key


def layout_method(choice: str | None = None) -> str:
    """"umap" or "pca" for a Layout choice of the Features page ("UMAP" / "PCA (quick)"); without one,
    this browser session's current choice."""
    if choice is None:
        choice = st.session_state.get("map_method")
    return "umap" if (choice or "").startswith("UMAP") else "pca"


def set_page(name: str) -> None:
    st.session_state["page"] = name


def current_session(title: str, notes: str, sources: Any) -> Session:
    """The session document of what this browser session shows now (`sources`: app.resources.Sources)."""
    ui = {k: jsonable(st.session_state.get(k)) for k in SOURCE_KEYS}
    settings = {k: jsonable(st.session_state.get(k)) for k in SETTING_KEYS}
    settings.update({f"ui_{k}": v for k, v in ui.items() if v is not None})
    feature = st.session_state.get("feature")
    return Session(
        title=title.strip() or "Untitled session",
        notes=notes,
        sources={"model": _spec_dict(sources.model), "checkpoint": sources.model.checkpoint,
                 "saes": [_spec_dict(s) for s in sources.saes], "corpus": _spec_dict(sources.corpus)},
        settings=settings,
        page=st.session_state.get("page", "home"),
        prompt=st.session_state.get("prompt") or "",
        selected_feature=int(feature) if feature is not None else None,
        selected_layer=st.session_state.get("layer"),
        artifact_keys=sorted(set(st.session_state.get("artifact_keys", {}).values())),
    )


def apply_session(session: Session) -> None:
    """Put a session's choices back into the widgets' state (call before the widgets are drawn)."""
    for key, value in session.settings.items():
        target = key[3:] if key.startswith("ui_") else key
        if target in DEFAULTS:
            st.session_state[target] = list(value) if isinstance(value, list) else value
    st.session_state["prompt"] = session.prompt
    if session.selected_feature is not None:
        st.session_state["feature"] = session.selected_feature
    st.session_state["layer"] = session.selected_layer
    st.session_state["page"] = session.page
    st.session_state["artifact_keys"] = {f"session_{i}": k for i, k in enumerate(session.artifact_keys)}
    st.session_state["pending_page"] = session.page


def apply_query_session(session_store: Any) -> None:
    """On the first run of a browser session, open `?session=<id>` (from `session_store`) when the URL has one."""
    if st.session_state.get("_query_applied"):
        return
    st.session_state["_query_applied"] = True
    session_id = st.query_params.get("session")
    if not session_id:
        return
    try:
        session = session_store.load(session_id)
    except AtlasError as error:
        st.session_state["_startup_error"] = str(error)
        return
    apply_session(session)
    st.session_state["opened_session"] = (session_id, session.title)


def _spec_dict(spec: Any) -> dict[str, Any]:
    return jsonable(spec)
