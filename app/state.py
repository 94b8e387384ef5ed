"""Session state, derived from the registry (app/registry.py): init, session documents in and out, the URL.

    init_state()                    defaults on a new browser session; keeps widget values alive across pages
    current_session(title, notes)   the session document of what this browser session shows
    restore_values(session)         a document's values, each checked against its widget's domain:
                                    (values, notices); a refused value keeps its default and gets a notice
    apply_session(session, id)      those values into session state, remembered as the opened session
    open_from_url(session_store)    the first run of a browser session: ?session=<id>, else the sources the
                                    URL names (a reload starts a new browser session: this is what keeps them)
    remember_loaded_sources()       the sidebar's sources loaded: they become the URL's parameters
    sync_url()                      the browser's URL <- those parameters (+ session=<id> while the view is it)

Everything restored from a document or a URL is untrusted input (docs/ARCHITECTURE.md, App): the checks
refuse a value no widget could have produced, and a file corpus only ever comes from Atlas's uploads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import streamlit as st

from app.registry import KEYS, REGISTRY, in_url
from app.sources import StateValues
from core.errors import AtlasError
from core.inputs import InvalidValue, PartlyInvalid, printable
from core.jsonable import jsonable
from core.sessions import Session

SESSION_PARAM = "session"
FEATURE_LINK_PARAMS = ("layer", "feature")   # app.feature_links.link_params
LEGACY_SAE_KEYS = ("sae_source", "sae_hooks", "sae_release", "sae_id", "sae_dir")


def init_state() -> None:
    """Fill missing keys with defaults and keep widget values alive across pages."""
    for key in REGISTRY:
        if key.name not in st.session_state:
            st.session_state[key.name] = key.fresh_default()
        else:
            # Re-assigning keeps a widget's value when the page that draws it is not shown.
            st.session_state[key.name] = st.session_state[key.name]


def remember_artifact(purpose: str, key: str | None) -> None:
    """Record an artifact the current view relies on (saved with the session, shipped in bundles).
    Pages call this (app.page does it for the harvest and feature maps); cached loaders never do."""
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


# ---- session documents ------------------------------------------------------------------------------------
def current_session(title: str, notes: str, sources: Any) -> Session:
    """The session document of what this browser session shows now (`sources`: app.sources.Sources)."""
    fields: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for key in REGISTRY:
        if key.saved is None:
            continue
        value = jsonable(st.session_state.get(key.name, key.default))
        if key.saved == "ui":
            if value is not None:
                settings[f"ui_{key.name}"] = value
        elif key.saved == "settings":
            settings[key.name] = value
        else:
            fields[key.saved] = value
    feature = fields.get("selected_feature")
    return Session(
        title=title.strip() or "Untitled session",
        notes=notes,
        sources={"model": _spec_dict(sources.model), "checkpoint": sources.model.checkpoint,
                 "saes": [_spec_dict(s) for s in sources.saes], "corpus": _spec_dict(sources.corpus)},
        settings=settings,
        page=fields.get("page") or "home",
        prompt=fields.get("prompt") or "",
        selected_feature=int(feature) if feature is not None else None,
        selected_layer=fields.get("selected_layer"),
        artifact_keys=sorted(set(st.session_state.get("artifact_keys", {}).values())),
    )


def restore_values(session: Session) -> tuple[dict[str, Any], list[str]]:
    """The saved keys' values of `session`, each checked against its widget's domain, and a notice for each
    value that was refused (that key then has its default). Keys the document lacks get their defaults."""
    raw: dict[str, Any] = {}
    settings = _migrate_legacy(dict(session.settings))
    for key in REGISTRY:
        if key.saved == "ui" and f"ui_{key.name}" in settings:
            raw[key.name] = settings[f"ui_{key.name}"]
        elif key.saved == "settings" and key.name in settings:
            raw[key.name] = settings[key.name]
        elif key.saved not in (None, "ui", "settings"):
            raw[key.name] = getattr(session, key.saved)
    values, notices = check_values(raw, "session's")
    return {**{k.name: k.fresh_default() for k in REGISTRY if k.saved}, **values}, notices


def check_values(raw: Mapping[str, Any], origin: str) -> tuple[dict[str, Any], list[str]]:
    """Each of `raw`'s values checked by its key's domain; (accepted values, notices for the refused ones).
    `origin` names where they came from in a notice ("session's", "link's")."""
    values: dict[str, Any] = {}
    notices: list[str] = []
    for name, value in raw.items():
        key = KEYS.get(name)
        if key is None:
            continue
        try:
            values[name] = key.check(value) if key.check else value
        except PartlyInvalid as error:
            values[name] = error.kept
            notices.append(f"The {origin} {key.label}: {error}.")
        except InvalidValue as error:
            notices.append(f"The {origin} {key.label} {error}, so it was not used (kept: {_shown(key.default)}).")
    # A source kind whose own value was refused falls back too: a file corpus without an upload is no corpus.
    for kind_key, kind, needed in (("corpus_source", "file", "corpus_file"), ("model_source", "hf_dir", "hf_dir")):
        if values.get(kind_key) == kind and not values.get(needed):
            values[kind_key] = KEYS[kind_key].default
            notices.append(f"The {origin} {KEYS[kind_key].label} could not be used without its "
                           f"{KEYS[needed].label} (kept: {_shown(KEYS[kind_key].default)}).")
    return values, notices


def apply_session(session: Session, session_id: str) -> None:
    """Put a session's checked choices into the widgets' state (call before the widgets are drawn)."""
    values, notices = restore_values(session)
    for name, value in values.items():
        st.session_state[name] = value
    st.session_state["artifact_keys"] = {f"session_{i}": k for i, k in enumerate(session.artifact_keys)}
    st.session_state["pending_page"] = values["page"]
    st.session_state["_notices"] = notices
    st.session_state["opened_session"] = {
        "id": session_id, "title": printable(session.title), "notes": printable(session.notes),
        "created": printable(session.created), "url": url_params(values)}


def _migrate_legacy(settings: dict[str, Any]) -> dict[str, Any]:
    """Documents saved before the SAE set and upload names: one SAE source + its fields, a corpus path."""
    if "ui_sae_set" not in settings and any(f"ui_{k}" in settings for k in LEGACY_SAE_KEYS):
        old = {k: settings.pop(f"ui_{k}", None) for k in LEGACY_SAE_KEYS}
        if old["sae_source"] == "organism" and old["sae_hooks"] is not None:
            hooks = old["sae_hooks"] if isinstance(old["sae_hooks"], list) else []
            settings["ui_sae_set"] = [f"org:{h}" for h in hooks]
        elif old["sae_source"] == "release":
            settings["ui_sae_set"] = [f"rel:{old['sae_release']}/{old['sae_id']}"]
        elif old["sae_source"] == "dir":
            from core.known_dirs import KnownDirectories

            path = old["sae_dir"] if isinstance(old["sae_dir"], str) else ""
            settings["ui_sae_set"] = [f"dir:{KnownDirectories.id_for('sae', path)}"] if path else []
    if "ui_corpus_path" in settings and "ui_corpus_file" not in settings:
        settings["ui_corpus_file"] = settings.pop("ui_corpus_path")
    return settings


# ---- the URL -----------------------------------------------------------------------------------------------
def url_params(values: StateValues) -> dict[str, str | list[str]]:
    """The sources of `values` as query parameters: only keys that matter for the chosen source kinds and
    differ from their defaults, so the default view has a bare URL."""
    params: dict[str, str | list[str]] = {}
    for key in REGISTRY:
        if not in_url(key, values):
            continue
        value = values.get(key.name, key.default)
        if value == key.default:
            continue
        encoded = key.to_url(value) if key.to_url else value
        if encoded is None:
            continue
        params[key.url] = [str(v) for v in encoded] if key.repeated else str(encoded)  # type: ignore[index]
    return params


def values_from_url(params: Mapping[str, list[str]]) -> tuple[dict[str, Any], list[str]]:
    """The sources a URL names (`params`: name -> every value given), checked like a session's values."""
    raw: dict[str, Any] = {}
    notices: list[str] = []
    for key in REGISTRY:
        given = params.get(key.url) if key.url else None
        if not given:
            continue
        try:
            text = given if key.repeated else given[-1]
            value = key.from_url(text) if key.from_url else text
            if isinstance(key.default, int) and not isinstance(key.default, bool):
                value = _integer(value)
        except InvalidValue as error:
            notices.append(f"The link's {key.label} {error}, so it was not used (kept: {_shown(key.default)}).")
            continue
        raw[key.name] = value
    values, more = check_values(raw, "link's")
    return values, notices + more


def open_from_url(session_store: Any) -> None:
    """On the first run of a browser session, restore what the URL names: `?session=<id>` (from
    `session_store`), else the sources in its parameters. Notices go to st.session_state["_notices"]."""
    if st.session_state.get("_url_opened"):
        return
    st.session_state["_url_opened"] = True
    params = {name: st.query_params.get_all(name) for name in st.query_params}
    session_ids = params.get(SESSION_PARAM) or []
    session_id = session_ids[-1] if session_ids else None
    if session_id:
        try:
            apply_session(session_store.load(session_id), session_id)
        except AtlasError as error:
            st.session_state["_notices"] = [f"The link's session could not be opened: {error}"]
        return
    values, notices = values_from_url(params)
    for name, value in values.items():
        st.session_state[name] = value
    st.session_state["_notices"] = notices


def remember_loaded_sources() -> None:
    """The sidebar's current values loaded without error: keep them as the URL's parameters."""
    st.session_state["_url_params"] = url_params(st.session_state)


def sync_url() -> None:
    """Keep the browser's URL on the last sources that loaded, with `session=<id>` while they are still the
    opened session's (changing the sources leaves the session: its banner and its id go)."""
    wanted = dict(st.session_state.get("_url_params") or {})
    opened = st.session_state.get("opened_session")
    if opened:
        if opened["url"] == wanted:
            wanted[SESSION_PARAM] = opened["id"]
        else:
            st.session_state["opened_session"] = None
    # A feature link's parameters (app.feature_links: ?layer=&feature=) belong to the Features page, which
    # applies them and keeps them current; they are not sources, so they are kept as they are.
    for name in FEATURE_LINK_PARAMS:
        if name in st.query_params:
            wanted[name] = st.query_params[name]
    current = {name: st.query_params.get_all(name) for name in st.query_params}
    if current != {k: v if isinstance(v, list) else [v] for k, v in wanted.items()}:
        st.query_params.from_dict(wanted)


def session_url(session_id: str) -> str:
    """The full link that reopens a session: this app's address as the browser sees it (st.context.url),
    or, where there is no browser (tests, scripts), the configured server address."""
    from urllib.parse import urlsplit

    base_path = (st.get_option("server.baseUrlPath") or "").strip("/")
    url = st.context.url
    if url:
        parts = urlsplit(url)
        root = f"{parts.scheme}://{parts.netloc}"
    else:
        root = f"http://{st.get_option('browser.serverAddress')}:{st.get_option('browser.serverPort')}"
    return f"{root}/{base_path + '/' if base_path else ''}?{SESSION_PARAM}={session_id}"


# ---- helpers -----------------------------------------------------------------------------------------------
def _integer(text: Any) -> int:
    if not isinstance(text, str) or not text.isdigit() or len(text) > 12:
        raise InvalidValue("is not a whole number")
    return int(text)


def _shown(default: Any) -> str:
    return "the default" if default in (None, "", [], {}) else repr(default)


def _spec_dict(spec: Any) -> dict[str, Any]:
    """A source spec for the document. A corpus file is written as its upload name: the document
    describes where data came from and never carries a server path in or out."""
    document = jsonable(asdict(spec))
    if getattr(spec, "source", None) == "file" and spec.path:
        from pathlib import Path

        document["path"] = Path(spec.path).name
    return document
