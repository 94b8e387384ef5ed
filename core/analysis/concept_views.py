"""The Geometry views of concept sets on any model (docs/CONCEPTS.md; METHODS.md sections 6-9).

Every view reads a set through the one read-out of core.concepts (`read_concepts`: the tokenization rule,
the read position, words the model cannot represent listed with the reason), so the library's sets, a
user's file and the organism's own sets (core.concepts.organism_concept_sets) take the same path:

    circles    cyclic sets: circularity at any Fourier frequency with its shuffled-label null, per site,
               at the item's own token ("token", + the items' unembedding rows) and at the last token of
               the set's relation templates grouped by the answer ("answer position") (Engels et al. 2024)
    crystals   analogy sets, one relation each: within- vs across-relation cosine of the word -> pair
               arrows, raw and after held-out LDA (Li et al. 2024); needs two relations or more
    concepts   hierarchical sets (root > ... > category) and categorical sets (the set > category):
               hierarchical orthogonality in the causal inner product against shuffled rows and random
               parents, and each category's vector for the simplex (Park et al. 2024)
    probes     spatial (longitude, latitude), temporal and ordinal sets: held-out ridge R^2 per site from
               each item's mean representation (Gurnee & Tegmark 2023)

`concept_geometry` returns the same `GroundTruthGeometry` the organism's card reads, with one `SetReading`
per set read (what was dropped and why, split words, skipped templates), cached in the store by a content
key of the model, the sets' text and the settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from core.analysis.circles import best_circle, score_sites
from core.analysis.keys import ProgressFn, as_float64, cached_result, model_identity, report, skip_on_error
from core.analysis.prompts import resid_sites
from core.analysis.results import (
    AttributeProbes,
    Category,
    CircleLocation,
    Circles,
    Concepts,
    CrystalArrows,
    CrystalFit,
    Crystals,
    CycleCircles,
    DroppedWord,
    GroundTruthGeometry,
    Probes,
    SetReading,
    SiteCrystal,
    Skipped,
)
from core.concepts.experiments import probe_target, unembedding_ids
from core.concepts.files import set_to_text
from core.concepts.readout import ConceptReadout, check_tokenization, read_concepts
from core.concepts.schema import SPATIAL_VALUES, ConceptError, ConceptSet
from core.sources.faces import ModelFace

if TYPE_CHECKING:
    from core.store import ArtifactStore

# 1: circles, crystals, concepts and probes of concept sets through core.concepts.read_concepts
CONCEPT_VIEWS_VERSION = "concept-views-1"
VIEWS = ("circles", "crystals", "concepts", "probes")
VIEW_KINDS: dict[str, tuple[str, ...]] = {
    "circles": ("cyclic",),
    "crystals": ("analogy",),
    "concepts": ("hierarchical", "categorical"),
    "probes": ("spatial", "temporal", "ordinal"),
}
NOT_ASKED = "not asked for"
# The Geometry page reads a seeded sample of this many items of a larger probe set (1000 cities x 4 templates is
# slow on a CPU); the organism's prebuilt snapshot computes its default views with the same cap.
PAGE_MAX_PROBE_ITEMS = 300
# What the Geometry page's views open on when nothing was chosen: the library's sets; on the organism, its own.
LIBRARY_DEFAULTS: dict[str, tuple[str, ...]] = {
    "circles": ("weekdays", "months"),
    "crystals": ("analogy_male_female", "analogy_singular_plural", "analogy_base_comparative"),
    "concepts": ("noun_taxonomy",),
    "probes": ("world_cities", "historical_figures"),
}


def default_sets(model: ModelFace, view: str) -> list[ConceptSet]:
    """The sets the Geometry page's `view` opens on for `model` (app/concept_sets.default_labels, same order)."""
    from core.concepts import load_library, organism_concept_sets

    spec = getattr(model, "spec", None)
    if getattr(spec, "source", None) == "organism":
        own = sets_for_view(list(organism_concept_sets(getattr(spec, "path", None)).values()), view)
        if own:
            return own
    library = load_library()
    return sets_for_view([library[name] for name in LIBRARY_DEFAULTS[view] if name in library], view)


def default_concept_views(model: ModelFace, *, store: ArtifactStore, progress: ProgressFn | None = None
                          ) -> tuple[str, ...]:
    """The Geometry page's concept views on their default sets, read at the last token, stored (their keys):
    what the page reads on a first visit instead of reading the sets through the model."""
    keys = []
    for i, view in enumerate(VIEWS):
        chosen = default_sets(model, view)
        if chosen:
            report(progress, i / len(VIEWS), f"concept {view}")
            keys.append(concept_geometry(model, chosen, views=(view,), position="last", store=store,
                                         max_probe_items=PAGE_MAX_PROBE_ITEMS).key)
    return tuple(k for k in keys if k)


def _reads(progress: ProgressFn | None, start: float, width: float, text: str) -> Callable[[int, int], None] | None:
    """A read_concepts callback (prompts done, prompts in all) that drives [start, start + width] of `progress`."""
    if progress is None:
        return None
    return lambda done, total: report(progress, start + width * done / max(total, 1), text)


def sets_for_view(sets: Sequence[ConceptSet], view: str) -> list[ConceptSet]:
    """The sets whose kind the view reads (VIEW_KINDS)."""
    return [s for s in sets if s.kind in VIEW_KINDS[view]]


def _reading(concept_set: ConceptSet, view: str, position: str, readout: ConceptReadout | None, *,
             n_read: int | None = None, dropped: Sequence[DroppedWord] = (), notes: Sequence[str] = ()) -> SetReading:
    found = [DroppedWord(word=d.word, reason=d.reason) for d in (readout.dropped if readout else ())]
    found += [d for d in dropped if all(d.word != f.word for f in found)]
    return SetReading(
        set_name=concept_set.name, kind=concept_set.kind, view=view, n_items=len(concept_set),
        n_read=(len(readout) if readout is not None else 0) if n_read is None else n_read, position=position, dropped=tuple(found),
        split=tuple(w.word for w in readout.split) if readout else (),
        skipped_templates=tuple(f"{t.template} ({t.reason})" for t in readout.skipped_templates) if readout else (),
        notes=tuple(notes))


# ---- circles -----------------------------------------------------------------------------------
def set_circles(model: ModelFace, concept_set: ConceptSet, sites: Sequence[str], *, position: str = "last",
                n_permutations: int = 200, seed: int = 0, progress: ProgressFn | None = None
                ) -> tuple[CycleCircles | None, SetReading]:
    """Circles of one cyclic set at "token" (and the unembedding rows of the words' single-token forms) and
    at "answer position" (relation templates with offset answers, grouped by the answer). A location needs
    every item of the cycle; one that cannot have them is noted, not scored."""
    k = len(concept_set)
    locations: dict[str, CircleLocation] = {}
    notes: list[str] = []
    word = read_concepts(model, concept_set, location="word", position=position, sites=sites,
                         progress=_reads(progress, 0.0, 0.5, f"{concept_set.name}: at the word"))
    if len(word) == k:
        tables = dict(word.arrays)
        ids = [unembedding_ids(model, form)[:1] for form in word.forms]
        if all(ids):
            tables["unembed"] = as_float64(model.W_U)[:, [i[0] for i in ids]].T
        else:
            notes.append("unembed: some words have no single-token form, so their unembedding rows are not scored")
        locations["token"] = CircleLocation(
            per_site=score_sites(tables, n_permutations=n_permutations, seed=seed), n_prompts=None)
    else:
        notes.append(f"token: {len(word)} of the {k} items could be read; a circle needs all")
    answer = None
    if not concept_set.relation_templates:
        notes.append("answer position: the set has no relation templates")
    else:
        try:
            answer = read_concepts(model, concept_set, location="answer", group="answer", sites=sites,
                                   progress=_reads(progress, 0.5, 0.5, f"{concept_set.name}: at the answer"))
        except ConceptError as error:
            notes.append(f"answer position: {error}")
        if answer is not None and len(answer) == k:
            locations["answer position"] = CircleLocation(
                per_site=score_sites(answer.arrays, n_permutations=n_permutations, seed=seed),
                n_prompts=answer.n_prompts)
        elif answer is not None:
            notes.append(f"answer position: {len(answer)} of the {k} items are the answer of a readable prompt; "
                         "a circle needs all")
    extra = [DroppedWord(word=d.word, reason=d.reason) for d in (answer.dropped if answer else ())]
    reading = _reading(concept_set, "circles", position, word, dropped=extra, notes=notes)
    if not locations:
        return None, reading
    return CycleCircles(words=tuple(concept_set.words), locations=locations, best=best_circle(locations)), reading


def circles_of_sets(model: ModelFace, sets: Sequence[ConceptSet], sites: Sequence[str], *, position: str = "last",
                    n_permutations: int = 200, seed: int = 0, progress: ProgressFn | None = None
                    ) -> tuple[Circles | Skipped, list[SetReading]]:
    cycles, readings = {}, []
    chosen = sets_for_view(sets, "circles")
    for i, concept_set in enumerate(chosen):
        part = None if progress is None else (lambda f, text, i=i: progress((i + f) / len(chosen), text))
        cycle, reading = set_circles(model, concept_set, sites, position=position, n_permutations=n_permutations,
                                     seed=seed, progress=part)
        readings.append(reading)
        if cycle is not None:
            cycles[concept_set.name] = cycle
    if not cycles:
        why = "; ".join(f"{r.set_name}: {', '.join(r.notes)}" for r in readings if r.notes)
        return Skipped("No cyclic set could be scored" + (f" ({why})." if why else ": choose a cyclic set.")), readings
    return Circles(cycles=cycles), readings


# ---- crystals ----------------------------------------------------------------------------------
def crystal_fit(A: np.ndarray, B: np.ndarray, relations: np.ndarray, *, seed: int = 0) -> CrystalFit:
    """Parallelogram quality of the arrows A -> B (one relation label per row), raw and after held-out LDA,
    with the 2-D pictures (PCA; LDA fitted on every pair, for display)."""
    from core.metrics.crystals import crystal_projection, parallelogram_quality

    quality = parallelogram_quality(A, B, relations, lda="heldout", seed=seed)
    pa, pb = crystal_projection(A, B, relations, use_lda=False)
    la, lb = crystal_projection(A, B, relations, use_lda=True)
    return CrystalFit(quality=quality, pca=CrystalArrows(a=pa, b=pb), lda=CrystalArrows(a=la, b=lb))


def crystals_of_sets(model: ModelFace, sets: Sequence[ConceptSet], sites: Sequence[str], *, position: str = "last",
                     seed: int = 0, progress: ProgressFn | None = None) -> tuple[Crystals | Skipped, list[SetReading]]:
    """One relation per analogy set: each item's word and its pair read in the set's context templates
    (a template with {pair} reads the pair word at its own tokens)."""
    readings, relations, words_a, words_b = [], [], [], []
    A: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    B: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    chosen = sets_for_view(sets, "crystals")
    for i, concept_set in enumerate(chosen):
        readout = read_concepts(model, concept_set, location="word", position=position, sites=sites,
                                progress=_reads(progress, i / len(chosen), 1 / len(chosen), concept_set.name))
        if readout.pair_arrays is None:
            readings.append(_reading(concept_set, "crystals", position, readout, n_read=0,
                                     notes=["no context template reads the pair word ({pair}): nothing to compare"]))
            continue
        readings.append(_reading(concept_set, "crystals", position, readout))
        for site in sites:
            A[site].append(readout.arrays[site])
            B[site].append(readout.pair_arrays[site])
        relations += [concept_set.name] * len(readout)
        words_a += list(readout.words)
        words_b += [concept_set.items[i].pair or "" for i in readout.items]
    if len(set(relations)) < 2:
        return Skipped("Crystals compare relations with each other: choose at least two analogy sets whose pairs "
                       "the model can read."), readings
    labels = np.array(relations)

    def fit(site: str) -> CrystalFit:
        return crystal_fit(np.concatenate(A[site]), np.concatenate(B[site]), labels, seed=seed)

    return Crystals(relations=tuple(relations), words_a=tuple(words_a), words_b=tuple(words_b),
                    per_site=tuple(SiteCrystal(site=site, fit=skip_on_error(lambda: fit(site))) for site in sites)
                    ), readings


# ---- concepts (Park et al.) --------------------------------------------------------------------
def concepts_of_sets(model: ModelFace, sets: Sequence[ConceptSet], *, n_shuffles: int = 20,
                     seed: int = 0) -> tuple[Concepts | Skipped, list[SetReading]]:
    """Categorical and hierarchical concepts in the causal inner product (Park et al. 2024; METHODS.md
    section 8). A hierarchical item's parents run root first: its root is the parent concept, its nearest
    parent the category; a categorical set is the parent of its categories. Each word is one unembedding
    row: its first single-token form (" word", "word", " Word", "Word"); words without one are listed."""
    from core.metrics.concepts import causal_inner_product_basis, hierarchical_orthogonality, vector_representation

    chosen = sets_for_view(sets, "concepts")
    if not chosen:
        return Skipped("Choose a hierarchical or categorical set."), []
    g = causal_inner_product_basis(as_float64(model.W_U))
    taxonomy: dict[str, dict[str, list[tuple[str, int]]]] = {}
    readings = []
    for concept_set in chosen:
        report_ = check_tokenization(model, concept_set)
        dropped = [DroppedWord(word=d.word, reason=d.reason) for d in report_.dropped]
        n_read = 0
        for item in concept_set.items:
            form = report_.forms.get(item.word)
            if form is None:
                continue
            ids = unembedding_ids(model, form)[:1]
            if not ids:
                dropped.append(DroppedWord(word=item.word, reason="no single-token form; Park et al. use the "
                                                                  "unembedding rows of single tokens"))
                continue
            n_read += 1
            root = item.parents[0] if concept_set.kind == "hierarchical" and len(item.parents) >= 2 else concept_set.name
            taxonomy.setdefault(root, {}).setdefault(item.parents[-1], []).append((item.word, ids[0]))
        readings.append(SetReading(set_name=concept_set.name, kind=concept_set.kind, view="concepts",
                                   n_items=len(concept_set), n_read=n_read, position="unembedding row",
                                   dropped=tuple(dropped), split=(), skipped_templates=(), notes=()))
    kingdoms, categories = {}, {}
    for kingdom, cats in taxonomy.items():
        child_ids = {}
        for cat, members in cats.items():
            if len(members) >= 2:
                name = cat if cat not in categories else f"{kingdom}/{cat}"
                child_ids[name] = [i for _, i in members]
                vec = vector_representation(g, child_ids[name])
                categories[name] = Category(kingdom=kingdom, words=tuple(w for w, _ in members), ell=vec.ell,
                                            word_rows=g[child_ids[name]])
        parent = sorted({i for ids in child_ids.values() for i in ids})
        if len(child_ids) >= 1 and len(parent) >= 2:
            kingdoms[kingdom] = hierarchical_orthogonality(g, parent, child_ids, n_shuffles=n_shuffles, seed=seed)
    if not categories:
        return Skipped("No category has two words with a single-token form in this model's vocabulary."), readings
    return Concepts(kingdoms=kingdoms, categories=categories, d_model=int(g.shape[1])), readings


# ---- probes (Gurnee & Tegmark) -----------------------------------------------------------------
def probe_columns(concept_set: ConceptSet) -> tuple[str, ...]:
    """The values probed, as the map draws them: (longitude, latitude) for places (x, y), else
    core.concepts.probe_target (the death year, else the first value)."""
    return tuple(reversed(SPATIAL_VALUES)) if concept_set.kind == "spatial" else probe_target(concept_set)


def probes_of_sets(model: ModelFace, sets: Sequence[ConceptSet], sites: Sequence[str], *, position: str = "last",
                   seed: int = 0, max_items: int | None = None, progress: ProgressFn | None = None
                   ) -> tuple[Probes | Skipped, list[SetReading]]:
    """Ridge probe per site from each item's mean representation (its set's context templates) to its
    values, a seeded quarter of the items held out; `max_items`: a seeded sample of that many items."""
    from core.metrics.probes import probe_per_layer

    chosen = sets_for_view(sets, "probes")
    if not chosen:
        return Skipped("Choose a spatial, temporal or ordinal set."), []
    attributes: dict[str, AttributeProbes | Skipped] = {}
    readings = []
    for i, concept_set in enumerate(chosen):
        notes = []
        if max_items is not None and len(concept_set) > max_items:
            keep = sorted(np.random.default_rng(seed).choice(len(concept_set), size=max_items, replace=False))
            notes.append(f"a seeded sample of {max_items} of the {len(concept_set)} items is read")
            concept_set = replace(concept_set, items=tuple(concept_set.items[i] for i in keep))
        readout = read_concepts(model, concept_set, location="word", position=position, sites=sites,
                                progress=_reads(progress, i / len(chosen), 1 / len(chosen), concept_set.name))
        readings.append(_reading(concept_set, "probes", position, readout, notes=notes))
        columns = probe_columns(concept_set)
        label = f"{concept_set.name} ({', '.join(columns)})"
        if len(readout) < 8:
            attributes[label] = Skipped(f"Only {len(readout)} items of {concept_set.name!r} could be read; a "
                                        "held-out probe needs at least 8.")
            continue
        y = np.stack([readout.values(concept_set, name) for name in columns], axis=1)
        attributes[label] = skip_on_error(lambda: AttributeProbes(
            probes=probe_per_layer({s: readout.arrays[s] for s in sites}, y, seed=seed),
            item_names=tuple(readout.words)))
    return Probes(attributes=attributes), readings


# ---- all of them, cached -----------------------------------------------------------------------
def sets_digest(sets: Sequence[ConceptSet]) -> str:
    """A content key of the sets (their canonical text, in order)."""
    digest = hashlib.sha256()
    for concept_set in sets:
        digest.update(set_to_text(concept_set).encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def concept_geometry(model: ModelFace, sets: Sequence[ConceptSet], *, views: Sequence[str] = VIEWS,
                     position: str = "last", store: ArtifactStore | None = None, progress: ProgressFn | None = None,
                     seed: int = 0, n_permutations: int = 200, max_probe_items: int | None = None
                     ) -> GroundTruthGeometry:
    """The views `views` of the concept sets that fit each (a view not asked for is Skipped), on any model,
    with one SetReading per set read; cached by the model, the sets' text and these settings."""
    unknown = [v for v in views if v not in VIEWS]
    if unknown:
        raise ConceptError(f"Unknown view(s) {', '.join(unknown)}; the views are {', '.join(VIEWS)}.")
    parts = {"model": model_identity(model), "sets": sets_digest(sets), "views": sorted(views), "position": position,
             "seed": seed, "n_permutations": n_permutations, "max_probe_items": max_probe_items,
             "version": CONCEPT_VIEWS_VERSION}

    def compute() -> GroundTruthGeometry:
        sites = resid_sites(model)
        found: dict[str, Any] = {v: Skipped(NOT_ASKED) for v in VIEWS}
        readings: list[SetReading] = []
        runs: dict[str, Callable[[ProgressFn | None], tuple[Any, list[SetReading]]]] = {
            "circles": lambda p: circles_of_sets(model, sets, sites, position=position, n_permutations=n_permutations,
                                                 seed=seed, progress=p),
            "crystals": lambda p: crystals_of_sets(model, sets, sites, position=position, seed=seed, progress=p),
            "concepts": lambda p: concepts_of_sets(model, sets, seed=seed),
            "probes": lambda p: probes_of_sets(model, sets, sites, position=position, seed=seed,
                                               max_items=max_probe_items, progress=p),
        }
        asked = [v for v in VIEWS if v in views]
        for n, view in enumerate(asked):
            report(progress, n / len(asked), f"{view} of {', '.join(s.name for s in sets_for_view(sets, view)) or 'no set'}")
            part = None if progress is None else (
                lambda f, text, n=n, view=view: report(progress, (n + f) / len(asked), f"{view}: {text}"))
            outcome = skip_on_error(lambda: runs[view](part))
            if isinstance(outcome, Skipped):
                found[view] = outcome
            else:
                found[view], more = outcome
                readings += more
        report(progress, 1.0, "done")
        return GroundTruthGeometry(sites=tuple(sites), circles=found["circles"], crystals=found["crystals"],
                                   concepts=found["concepts"], probes=found["probes"], position=position,
                                   readings=tuple(readings))

    return cached_result(store, "concept_geometry", parts, compute, GroundTruthGeometry)
