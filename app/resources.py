"""Cached resources shared by every browser session, and the one way a page gets its data.

How a page gets its data:
    sources = current_sources()          # the last valid sidebar choice (Sources: model, saes, corpus specs)
    model = get_model(sources.model)     # st.cache_resource: one LoadedModel per spec, shared by all sessions
    saes = get_saes(sources)             # list[LoadedSAE], in layer order
    harvest, key = get_harvest(sources)  # HarvestResult from the artifact store; computed once under a
                                         # progress bar when missing; `key` is recorded for sessions
    store = get_store()                  # core.store.ArtifactStore for the page's own cached results
or, in one call that shows any error and stops the page:
    model, saes, harvest, key = load_view_inputs()
Decoder rows as numpy: decoder_weights(sae) (copied once per loaded SAE). An analysis that caches itself
in the store: cached_view(label, lambda: core.analysis.<view>(...)) runs it under a collapsed st.status.
Hook-using calls (model.run, core.probe.probe_prompt, anything that runs the model) hold
`model.lock`; LoadedModel.run takes it itself, and it is re-entrant.

Environment: ATLAS_ORGANISM_DIR points every organism source at another organism directory (tests
use a tiny one); ATLAS_CACHE_DIR is the artifact store; ATLAS_HOME holds sessions.sqlite and uploads;
ATLAS_RAY_ADDRESS ("local" or a cluster address) runs harvests on Ray (core.harvest.distributed).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from core.sources.corpus import CorpusSpec  # noqa: E402
from core.sources.models import ModelSpec  # noqa: E402
from core.sources.saes import SAESpec  # noqa: E402


@dataclass(frozen=True)
class Sources:
    model: ModelSpec
    saes: tuple[SAESpec, ...]
    corpus: CorpusSpec


def default_sources() -> Sources:
    from core.sources.saes import organism_sae_specs

    try:
        saes = tuple(organism_sae_specs())
    except Exception:  # no organism yet: an empty SAE set; the sidebar reports the problem
        saes = ()
    return Sources(ModelSpec(source="organism", checkpoint="final"), saes,
                   CorpusSpec(source="world", max_chunks=None))


def current_sources() -> Sources:
    """The sources the pages use: the sidebar's last choice that loaded without error."""
    return st.session_state.get("valid_sources") or default_sources()


@st.cache_resource(show_spinner=False, max_entries=4)
def get_model(spec: ModelSpec):
    from core.sources.models import load_model

    return load_model(spec)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_saes(model_spec: ModelSpec, sae_specs: tuple[SAESpec, ...]):
    from core.hooks import site_order
    from core.sources.saes import load_sae

    model = get_model(model_spec)
    saes = [load_sae(spec, model) for spec in sae_specs]
    return sorted(saes, key=lambda s: site_order(s.hook_name))


def get_saes(sources: Sources | None = None) -> list[Any]:
    sources = sources or current_sources()
    return _load_saes(sources.model, sources.saes)


@st.cache_resource(show_spinner=False, max_entries=4)
def get_corpus(corpus_spec: CorpusSpec, model_spec: ModelSpec):
    from core.sources.corpus import load_corpus

    return load_corpus(corpus_spec, get_model(model_spec))


@st.cache_resource(show_spinner=False)
def get_store():
    from core.store import ArtifactStore

    return ArtifactStore()


@st.cache_resource(show_spinner=False)
def get_session_store():
    from core.sessions import SessionStore

    return SessionStore()


def atlas_home() -> Path:
    home = os.environ.get("ATLAS_HOME")
    return Path(home) if home else Path.home() / ".atlas"


def harvest_settings():
    from core.harvest import HarvestSettings

    tokens = st.session_state.get("harvest_tokens") or None
    return HarvestSettings(max_tokens=int(tokens) if tokens else None)


class _HarvestMemory:
    """Loaded harvests by key (one per process, the newest `size`): a revisit costs nothing."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.items: OrderedDict[str, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
            return self.items.get(key)

    def put(self, key: str, result: Any) -> None:
        with self.lock:
            self.items[key] = result
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)


@st.cache_resource(show_spinner=False)
def _harvest_memory() -> _HarvestMemory:
    return _HarvestMemory()


@st.cache_resource(show_spinner=False, max_entries=16)
def _harvest_key(sources: Sources, settings) -> str:
    """The harvest's store key, worked out once per (sources, settings): it hashes the corpus's tokens."""
    from core.harvest import harvest_key

    return harvest_key(get_model(sources.model), get_saes(sources), get_corpus(sources.corpus, sources.model),
                       settings)


def get_harvest(sources: Sources | None = None):
    """(HarvestResult, key) for the sources; computed under a progress bar only when the store lacks it."""
    from core.harvest import HarvestResult
    from core.harvest.distributed import cluster_from_env, harvest_cached_on

    sources = sources or current_sources()
    settings = harvest_settings()
    key = _harvest_key(sources, settings)
    memory = _harvest_memory()
    # A session restored from a bundle reads the bundle's harvest from that import's read-only namespace
    # (core.store): imported artifacts never enter the local store, and they are remembered here under
    # their own name so that another browser session computing the same key never gets them.
    namespace = restored_namespace()
    memory_key = f"{namespace}/{key}" if namespace else key
    result = memory.get(key) or (memory.get(memory_key) if namespace else None)
    if result is None:
        store = get_store()
        result = HarvestResult.load(store, key)
        imported = False
        if result is None and namespace:
            result = HarvestResult.load(store.namespace(namespace), key)
            imported = result is not None
        if result is None:
            model = get_model(sources.model)
            saes = get_saes(sources)
            corpus = get_corpus(sources.corpus, sources.model)
            with st.status(f"Harvesting {corpus.description} through {len(saes)} SAE(s)...",
                           expanded=True) as status:
                bar = st.progress(0.0, text="starting")

                def progress(done: int, total: int, seconds_left: float) -> None:
                    bar.progress(min(1.0, done / max(total, 1)),
                                 text=f"{done:,} / {total:,} tokens, about {seconds_left:.0f} s left")

                # on the Ray cluster $ATLAS_RAY_ADDRESS names, when set (docs/SCALING.md); else here
                result, key = harvest_cached_on(cluster_from_env(), model, saes, corpus, settings, store, progress,
                                                key=key)
                status.update(label="Harvest done and cached.", state="complete", expanded=False)
        memory.put(memory_key if imported else key, result)
    from app.state import remember_artifact

    remember_artifact("harvest", key)
    return result, key


def restored_namespace() -> str | None:
    """The artifact namespace of the session this browser session opened from an imported bundle, if any."""
    opened = st.session_state.get("opened_session")
    if not opened:
        return None
    from core.errors import AtlasError

    try:
        return get_session_store().artifact_namespace(opened[0])
    except AtlasError:
        return None


def session_artifacts(session_id: str):
    """The artifacts a saved session can read: this machine's store, then (for a session imported from a
    bundle) its own read-only namespace. Read-only (core.store.StoreView)."""
    from core.store import StoreView

    store = get_store()
    namespace = get_session_store().artifact_namespace(session_id)
    return StoreView(store, store.namespace(namespace)) if namespace else store


def peek_harvest(sources: Sources | None = None):
    """(HarvestResult, key) when the sources' harvest is already in memory or in the store, else None.

    Never harvests: for pages that can do without (Probe shows top tokens beside feature ids when it can).
    """
    from core.errors import AtlasError
    from core.harvest import HarvestResult

    sources = sources or current_sources()
    try:
        key = _harvest_key(sources, harvest_settings())
        namespace = restored_namespace()
        memory = _harvest_memory()
        result = memory.get(key) or (memory.get(f"{namespace}/{key}") if namespace else None)
        if result is None:
            store = get_store()
            result = HarvestResult.load(store, key)
            if result is None and namespace:  # the restored bundle's harvest, as get_harvest reads it
                result = HarvestResult.load(store.namespace(namespace), key)
            if result is None:
                return None
    except AtlasError:
        return None
    return result, key


@st.cache_resource(show_spinner=False, max_entries=32)
def _decoder_array(identity: tuple[int, SAESpec], _sae) -> np.ndarray:
    return _sae.W_dec.detach().cpu().numpy()


def decoder_weights(sae) -> np.ndarray:
    """The SAE's decoder rows [d_sae, d_in] as numpy, copied off the device once per loaded SAE
    (keyed by the object's identity and spec; the spec guards against a reused id)."""
    return _decoder_array((id(sae), sae.spec), sae)


def cached_view(label: str, compute: Callable[..., Any], *, progress: bool = False,
                done: str | None = None) -> Any | None:
    """`compute()` (an analysis that caches itself in the store) under a collapsed st.status.

    A cache hit finishes at once; a miss shows `label` while it runs. With `progress`, `compute` is
    called with a (fraction, text) callback that drives a progress bar inside the status. AtlasErrors
    are shown (through `guarded`) and give None.
    """
    from app.widgets import guarded

    with st.status(label, expanded=False) as status:
        if progress:
            bar = st.progress(0.0)
            result = guarded(lambda: compute(lambda f, text: bar.progress(min(1.0, max(0.0, f)), text=text)))
        else:
            result = guarded(compute)
        status.update(label=done or label.rstrip(". ") + ": ready.", state="complete" if result is not None else "error")
    return result


def get_feature_map(W_dec, method: str, purpose: str):
    """Feature map coordinates from the store; a first UMAP fit runs under st.status."""
    from core import feature_map as fm

    store = get_store()
    method = fm.resolve_method(W_dec, method)
    key = fm.feature_map_key(W_dec, method, 15, 0.1, 0)
    if method == "umap" and not store.has(key):
        with st.status("Computing the UMAP feature map (the first fit in a process compiles numba: ~40 s)...",
                       expanded=True) as status:
            result = fm.feature_map(W_dec, store, method, progress=st.write, key=key)
            status.update(label=f"UMAP done in {result.seconds:.1f} s and cached.", state="complete", expanded=False)
    else:
        result = fm.feature_map(W_dec, store, method, key=key)
    from app.state import remember_artifact

    remember_artifact(purpose, result.key)
    return result


class ViewInputs(NamedTuple):
    model: Any                  # LoadedModel
    saes: list[Any]             # LoadedSAE, in layer order ([] when none was needed and none loaded)
    harvest: Any | None         # HarvestResult (None when not asked for)
    key: str | None             # the harvest's artifact key


def load_view_inputs(harvest: bool = True, require_saes: bool = True, no_saes: str | None = None) -> ViewInputs:
    """A page's start-up: the current sources' model, SAEs and (when `harvest`) the harvest under its status.

    Every failure is shown where the page stands (an AtlasError as `st.error`, through `guarded`) and the
    page stops cleanly with st.stop(), so the code after this call always has what it asked for. Without
    SAEs, `no_saes` (when given) is shown as an info line before stopping; with `require_saes=False` the
    page goes on with `saes == []`.
    """
    from app.widgets import guarded

    sources = current_sources()
    model = guarded(lambda: get_model(sources.model))
    if model is None:
        st.stop()
    saes = guarded(lambda: get_saes(sources)) or []
    if require_saes and not saes:
        if no_saes:
            st.info(no_saes)
        st.stop()
    if not harvest:
        return ViewInputs(model, saes, None, None)
    loaded = guarded(lambda: get_harvest(sources))
    if loaded is None:
        st.stop()
    result, key = loaded
    return ViewInputs(model, saes, result, key)
