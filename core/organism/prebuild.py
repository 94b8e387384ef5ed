"""The first open, prebuilt: the default views of the organism computed once and shipped as a snapshot.

`python -m core.organism prebuild` computes what a fresh Atlas shows on the organism with the sidebar's
defaults (the 100,000-token harvest through every organism SAE, the Spectra, Superposition and Geometry
views, the checkpoint tables at 2,048 tokens, the PCA feature maps) in a fresh artifact store, and writes
those entries to `assets/prebuilt/organism.zip` (core.snapshot). The app seeds its store from it on first
use, so the first visit of every page reads stored artifacts instead of harvesting.

Every entry keeps the key the app computes (sources + settings + code/analysis versions), so a snapshot
made by older code is simply not found; tests/test_prebuilt.py fails when the shipped one no longer equals a
fresh run and prints the command above.
"""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# What the app shows on the organism before anything is changed (app/registry.py, pages/*.py).
DEFAULT_HARVEST_TOKENS = 100_000      # registry "harvest_tokens"
DEFAULT_CHECKPOINT_TOKENS = 2048      # pages/spectra.py "Tokens per checkpoint"
DEFAULT_SMOOTHING = 0.5               # pages/spectra.py "Smoothing width"
DEFAULT_MAP_METHOD = "pca"            # registry "map_method": "PCA (quick)"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class DefaultViews:
    """The keys of every artifact the default views read, and what each took to compute (seconds)."""

    keys: tuple[str, ...]
    harvest_key: str
    seconds: dict[str, float]


def default_inputs():
    """(model, saes, corpus) as the sidebar's defaults load them (app.sources.default_sources + chunking)."""
    from core.sources.chunking import chunking_for_saes
    from core.sources.corpus import CorpusSpec, load_corpus
    from core.sources.models import ModelSpec, load_model
    from core.sources.organism import organism_sae_dirs
    from core.sources.saes import SAESpec, load_sae

    model = load_model(ModelSpec(source="organism", checkpoint="final"))
    saes = [load_sae(SAESpec(source="organism", hook_name=hook), model) for hook in organism_sae_dirs()]
    corpus_spec, _ = chunking_for_saes(saes, CorpusSpec(source="world", max_chunks=None))
    return model, saes, load_corpus(corpus_spec, model)


def compute_default_views(store: Any, *, progress: Progress | None = None, ground_truth: bool = True,
                          checkpoints: bool = True, inputs: tuple | None = None) -> DefaultViews:
    """Every artifact the default pages read, computed into `store` (cached ones are read back).

    `ground_truth` / `checkpoints`: False leaves out the Geometry page's ground-truth prompts and the Spectra
    page's checkpoint tables (the slowest views; tests of the snapshot machinery do without them).
    `inputs`: (model, saes, corpus) from `default_inputs()` when the caller has them already."""
    from core import analysis
    from core import feature_map as fm
    from core.harvest import HarvestSettings, harvest_cached
    from core.sources.models import ModelSpec

    say = progress or (lambda text: None)
    seconds: dict[str, float] = {}
    keys: list[str] = []

    def timed(name: str, call: Callable[[], Any]) -> Any:
        say(f"{name}...")
        start = time.perf_counter()
        out = call()
        seconds[name] = round(time.perf_counter() - start, 2)
        return out

    model, saes, corpus = inputs if inputs is not None else timed("load", default_inputs)
    settings = HarvestSettings(max_tokens=DEFAULT_HARVEST_TOKENS)
    harvest, harvest_key = timed("harvest", lambda: harvest_cached(model, saes, corpus, settings, store=store))
    keys.append(harvest_key)
    keys.append(timed("spectra", lambda: analysis.spectra_by_layer(harvest, store=store,
                                                                     harvest_key=harvest_key)).key)
    keys.append(timed("superposition", lambda: analysis.superposition_by_layer(
        harvest, saes, model, store=store, harvest_key=harvest_key)).key)
    truth = analysis.organism_ground_truth(model)
    cyclic = analysis.cyclic_token_ids(model, truth)
    keys.append(timed("geometry", lambda: analysis.geometry_by_layer(
        harvest, saes, store=store, cyclic_token_ids=cyclic, harvest_key=harvest_key)).key)
    if truth and ground_truth:
        keys.append(timed("ground_truth_geometry", lambda: analysis.ground_truth_geometry(model, truth,
                                                                                         store=store)).key)
    if ground_truth:
        # The Geometry page's concept tabs on the organism open on its own sets of each view's kinds, in the
        # order organism_concept_sets gives them (app/concept_sets.default_labels), read at the last token.
        from core.concepts import organism_concept_sets

        own = list(organism_concept_sets(None).values())
        for view in analysis.VIEWS:
            chosen = [s for s in own if s.kind in analysis.VIEW_KINDS[view]]
            if chosen:
                keys.append(timed(f"concepts {view}", functools.partial(
                    analysis.concept_geometry, model, chosen, views=(view,), position="last", store=store,
                    max_probe_items=analysis.PAGE_MAX_PROBE_ITEMS)).key)
    if checkpoints:
        over = timed("checkpoints", lambda: analysis.spectra_over_checkpoints(
            ModelSpec(source="organism", checkpoint="final"), max_tokens=DEFAULT_CHECKPOINT_TOKENS, store=store,
            smoothing=DEFAULT_SMOOTHING))
        keys.extend([over.key, *over.checkpoint_keys])
    for sae in saes:
        W_dec = sae.W_dec.detach().cpu().numpy()
        method = fm.resolve_method(W_dec, DEFAULT_MAP_METHOD)
        key = fm.feature_map_key(W_dec, method, 15, 0.1, 0)
        timed(f"feature_map {sae.hook_name}", functools.partial(fm.feature_map, W_dec, store, method, key=key))
        keys.append(key)
    return DefaultViews(tuple(dict.fromkeys(keys)), harvest_key, seconds)


def prebuild(out: str | Path | None = None, *, progress: Progress | None = None) -> tuple[Path, DefaultViews]:
    """Compute the default views in a fresh store and write the snapshot (default: the shipped one)."""
    from core.snapshot import SNAPSHOT_PATH, write_snapshot
    from core.store import ArtifactStore

    out = Path(out) if out is not None else SNAPSHOT_PATH
    with tempfile.TemporaryDirectory(prefix="atlas-prebuild-") as tmp:
        store = ArtifactStore(Path(tmp) / "store")
        views = compute_default_views(store, progress=progress)
        write_snapshot(out, store, views.keys)
    return out, views
