"""Cached loaders shared by every browser session. They return values and never write session state;
a page's start-up (app/page.py) records what the view relies on.

    sources = current_sources()          # the last valid sidebar choice (app.sources.Sources)
    model = get_model(sources.model)     # st.cache_resource: one LoadedModel per spec, shared by all sessions
    saes = get_saes(sources)             # list[LoadedSAE] in layer order; each SAE cached on its own, so adding
                                         # one to the set loads only that one
    harvest, key = get_harvest(sources)  # HarvestResult from the artifact store; computed once under a
                                         # progress bar when missing
    store = get_store()                  # core.store.ArtifactStore for the page's own cached results
    resolve_sources(request)             # the sidebar's request, loaded, with the corpus chunked for the SAEs
Decoder rows as numpy: decoder_weights(sae) (copied once per loaded SAE). Progress shows in a status box
that goes away when the work is done (app.widgets.working).
Hook-using calls (model.run, core.probe.probe_prompt, anything that runs the model) hold
`model.lock`; LoadedModel.run takes it itself, and it is re-entrant.

Environment: ATLAS_ORGANISM_DIR points every organism source at another organism directory (tests
use a tiny one); ATLAS_CACHE_DIR is the artifact store; ATLAS_HOME holds sessions.sqlite, uploads/ and
known_dirs.sqlite; ATLAS_RAY_ADDRESS ("local" or a cluster address) runs harvests on Ray (core.harvest.distributed).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from app.sources import Sources, default_sources  # noqa: E402
from app.widgets import working  # noqa: E402
from core.errors import SAEMismatchError  # noqa: E402
from core.sources.corpus import CorpusSpec  # noqa: E402
from core.sources.models import ModelSpec  # noqa: E402
from core.sources.saes import SAESpec  # noqa: E402

if TYPE_CHECKING:
    from core.harvest import HarvestResult


def current_sources() -> Sources:
    """The sources the pages use: the sidebar's last choice that loaded without error."""
    return st.session_state.get("valid_sources") or default_sources()


@st.cache_resource(show_spinner=False, max_entries=4)
def get_model(spec: ModelSpec):
    from core.sources.models import load_model

    return load_model(spec)


@st.cache_resource(show_spinner=False, max_entries=40)   # a full set (app.sources.MAX_SAES) and some
def _load_sae(model_spec: ModelSpec, sae_spec: SAESpec):
    """One SAE, cached on its own: changing the set loads only the SAEs that are new to it."""
    from core.sources.saes import load_sae

    return load_sae(sae_spec, get_model(model_spec))


def get_saes(sources: Sources | None = None) -> list[Any]:
    """The sources' SAEs in layer order (the set's order does not matter)."""
    from core.hooks import site_order

    sources = sources or current_sources()
    saes = [_load_sae(sources.model, spec) for spec in sources.saes]
    return sorted(saes, key=lambda s: (site_order(s.hook_name), s.spec.source, str(s.spec)))


def resolve_sources(wanted: Sources) -> tuple[Sources, str | None]:
    """The sidebar's request loaded (model and every SAE; errors are AtlasErrors), with the corpus cut into
    chunks the SAEs were trained on (core.sources.chunking), and the note saying why when they disagree.
    Refuses two SAEs on one site: every view shows one SAE per site."""
    from core.sources.chunking import chunking_for_saes

    get_model(wanted.model)
    saes = get_saes(wanted)
    hooks = [s.hook_name for s in saes]
    shared = sorted({h for h in hooks if hooks.count(h) > 1})
    if shared:
        raise SAEMismatchError(f"Several of the chosen SAEs read {', '.join(shared)}. Atlas compares SAEs across "
                               "sites and shows one SAE per site: keep one of them in the SAE set.")
    corpus, note = chunking_for_saes(saes, wanted.corpus)
    return Sources(wanted.model, wanted.saes, corpus), note


@st.cache_resource(show_spinner=False, max_entries=4)
def get_corpus(corpus_spec: CorpusSpec, model_spec: ModelSpec):
    from core.sources.corpus import load_corpus

    return load_corpus(corpus_spec, get_model(model_spec))


@st.cache_resource(show_spinner=False)
def get_store():
    """The artifact store, seeded once per process with the prebuilt default views of the organism
    (core.snapshot: a fresh clone's first visit of every page reads them instead of computing)."""
    from core.snapshot import seed_store
    from core.store import ArtifactStore

    store = ArtifactStore()
    seed_store(store)
    return store


_seeding_started = threading.Event()


def start_seeding() -> None:
    """Seed the artifact store from the prebuilt snapshot in a background thread, once per process (the
    server's first run calls it): on a fresh clone the copy overlaps the first page's model loading, and a
    later get_store() waits for it (core.snapshot.seed_store holds a lock) instead of doing it again."""
    if _seeding_started.is_set():
        return
    _seeding_started.set()

    def seed() -> None:
        from core.snapshot import seed_store
        from core.store import ArtifactStore

        try:
            seed_store(ArtifactStore())
        except Exception:  # noqa: BLE001 - get_store() seeds (and reports) again in the page that needs it
            import logging

            logging.getLogger("atlas.app").exception("Seeding the artifact store in the background failed")

    threading.Thread(target=seed, name="atlas-seed-store", daemon=True).start()


@st.cache_resource(show_spinner=False)
def get_session_store():
    from core.sessions import SessionStore

    return SessionStore()


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


def get_harvest(sources: Sources | None = None) -> tuple[HarvestResult, str]:
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
            with working(_harvest_label(model, saes, corpus, settings, store), expanded=True):
                bar = st.progress(0.0, text="starting")

                def progress(done: int, total: int, seconds_left: float) -> None:
                    bar.progress(min(1.0, done / max(total, 1)),
                                 text=f"{done:,} / {total:,} tokens, about {seconds_left:.0f} s left")

                # on the Ray cluster $ATLAS_RAY_ADDRESS names, when set (docs/SCALING.md); else here
                result, key = harvest_cached_on(cluster_from_env(), model, saes, corpus, settings, store, progress,
                                                key=key)
            st.toast("Harvest done and cached.")
        memory.put(memory_key if imported else key, result)
    return result, key


def _harvest_label(model, saes, corpus, settings, store) -> str:
    """What a missing harvest will compute: statistics are stored per SAE (core.harvest.components), so a
    changed SAE set harvests only the SAEs new to the store, and the label says so."""
    from core.harvest import describe_sources
    from core.harvest.components import missing_components
    from core.harvest.state import default_sites

    sites = list(settings.sites) if settings.sites is not None else default_sites(model, saes)
    _, todo = missing_components(store, describe_sources(model, saes, corpus), settings.to_dict(), sites, len(saes))
    if len(todo) == len(saes):
        return f"Harvesting {corpus.description} through {len(saes)} SAE(s)..."
    if not todo:
        return "Assembling the stored statistics of these SAEs..."
    return (f"Harvesting {corpus.description} through the {len(todo)} SAE(s) new to the store "
            f"({len(saes) - len(todo)} reused)...")


def restored_namespace() -> str | None:
    """The artifact namespace of the session this browser session opened from an imported bundle, if any."""
    opened = st.session_state.get("opened_session")   # app.registry: {"id", "title", ...} or None
    if not opened:
        return None
    from core.errors import AtlasError

    try:
        return get_session_store().artifact_namespace(opened["id"])
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


def get_feature_map(W_dec, method: str):
    """Feature map coordinates from the store; a first UMAP fit runs under a status box."""
    from core import feature_map as fm

    store = get_store()
    method = fm.resolve_method(W_dec, method)
    key = fm.feature_map_key(W_dec, method, 15, 0.1, 0)
    if method == "umap" and not store.has(key):
        with working("Computing the UMAP feature map (the first fit in a process compiles numba: ~40 s)...",
                     expanded=True):
            result = fm.feature_map(W_dec, store, method, progress=st.write, key=key)
        st.toast(f"UMAP done in {result.seconds:.1f} s and cached.")
        return result
    return fm.feature_map(W_dec, store, method, key=key)
