"""Crystals, categorical/hierarchical concepts and probes from the ground truth's word lists
(Li et al. 2024; Park et al. 2024; Gurnee & Tegmark 2023)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from core.analysis.concept_views import circles_of_sets, concepts_of_sets
from core.analysis.keys import (
    ProgressFn,
    as_float64,
    cached_result,
    ground_truth_digest,
    model_identity,
    report,
    skip_on_error,
)
from core.analysis.prompts import (
    analogy_pairs,
    analogy_representations,
    known_words,
    probe_samples,
    resid_sites,
)
from core.analysis.results import (
    AttributeProbes,
    Category,
    Concepts,
    CrystalArrows,
    CrystalFit,
    Crystals,
    GroundTruthGeometry,
    Probes,
    SetReading,
    SiteCrystal,
    Skipped,
)
from core.concepts.organism import concept_sets_from_ground_truth
from core.sources.faces import ModelFace

if TYPE_CHECKING:
    from core.store import ArtifactStore

NO_GROUND_TRUTH = ("No ground truth: these analyses need the organism's planted world, or word lists in its "
                   "schema (cyclic, analogies, taxonomy, cities, people).")


def crystals_from_tokens(model: ModelFace, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None, *,
                         seed: int = 0) -> Crystals | Skipped:
    """Analogy parallelograms (Li et al. 2024 crystals) per layer: within- vs across-relation cosine of
    difference vectors and the relation-cluster silhouette, raw and after held-out LDA; with 2-D
    projections (PCA, and LDA for display) for the arrows figure."""
    from core.metrics.crystals import crystal_projection, parallelogram_quality

    sites = list(sites or resid_sites(model))
    pairs = analogy_pairs(ground_truth)
    reps = analogy_representations(model, ground_truth, sites) if pairs else None
    if reps is None:
        return Skipped("No analogy pairs in the ground truth.")
    known = set(known_words(model, reps.words))
    pairs = [p for p in pairs if p[2] in known and p[3] in known]
    relations = np.array([p[0] for p in pairs])

    def fit(site: str) -> CrystalFit:
        means = reps.means[site]
        A = np.stack([means[p[2]] for p in pairs])
        B = np.stack([means[p[3]] for p in pairs])
        quality = parallelogram_quality(A, B, relations, lda="heldout", seed=seed)
        pa, pb = crystal_projection(A, B, relations, use_lda=False)
        la, lb = crystal_projection(A, B, relations, use_lda=True)
        return CrystalFit(quality=quality, pca=CrystalArrows(a=pa, b=pb), lda=CrystalArrows(a=la, b=lb))

    return Crystals(relations=tuple(str(r) for r in relations), words_a=tuple(p[2] for p in pairs),
                    words_b=tuple(p[3] for p in pairs),
                    per_site=tuple(SiteCrystal(site=site, fit=skip_on_error(lambda: fit(site))) for site in sites))


def concepts_from_unembedding(model: ModelFace, ground_truth: Mapping[str, Any], *, n_shuffles: int = 20,
                              seed: int = 0) -> Concepts | Skipped:
    """Categorical and hierarchical concepts in the causal inner product (Park et al. 2024; METHODS.md
    section 8): per kingdom of the taxonomy, cos(ell_category - ell_kingdom, ell_kingdom) against row-
    shuffled and random-parent baselines; every category's vector and its words' rows of g, for the
    simplex of sibling categories."""
    from core.metrics.concepts import (
        causal_inner_product_basis,
        hierarchical_orthogonality,
        vector_representation,
    )

    taxonomy = ground_truth.get("taxonomy") or {}
    if not taxonomy:
        return Skipped("No taxonomy in the ground truth.")
    g = causal_inner_product_basis(as_float64(model.W_U))
    kingdoms = {}
    categories = {}
    for kingdom, cats in taxonomy.items():
        child_ids = {}
        for cat, species in cats.items():
            words = known_words(model, species)
            if len(words) >= 2:
                child_ids[cat] = [model.encode(w)[-1] for w in words]
                vec = vector_representation(g, child_ids[cat])
                categories[cat] = Category(kingdom=kingdom, words=tuple(words), ell=vec.ell,
                                           word_rows=g[child_ids[cat]])
        parent = sorted({i for ids in child_ids.values() for i in ids})
        if len(child_ids) >= 1 and len(parent) >= 2:
            kingdoms[kingdom] = hierarchical_orthogonality(g, parent, child_ids, n_shuffles=n_shuffles, seed=seed)
    return Concepts(kingdoms=kingdoms, categories=categories, d_model=int(g.shape[1]))


def probes_from_tokens(model: ModelFace, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None, *,
                       per_item: int = 12, seed: int = 0) -> Probes:
    """Space (city longitude, latitude) and time (birth year) ridge probes per layer, with whole
    entities held out (Gurnee & Tegmark 2023; METHODS.md section 9)."""
    from core.metrics.probes import probe_per_layer

    sites = list(sites or resid_sites(model))
    samples = probe_samples(model, ground_truth, sites, per_item=per_item, seed=seed)
    attributes: dict[str, AttributeProbes | Skipped] = {}
    for attribute, sample in samples.items():
        attributes[attribute] = skip_on_error(lambda: AttributeProbes(
            probes=probe_per_layer(sample.X, sample.y, seed=seed, groups=sample.groups),
            item_names=tuple(sample.names[i] for i in sample.groups)))
    return Probes(attributes=attributes)


def ground_truth_geometry(model: ModelFace, ground_truth: Mapping[str, Any] | None, *,
                          store: ArtifactStore | None = None, progress: ProgressFn | None = None,
                          seed: int = 0) -> GroundTruthGeometry:
    """Circles, crystals, concepts and probes from running the model on the ground truth's prompts.

    Without a ground truth (a real model and no word lists) every part is skipped with a reason.
    """
    if not ground_truth:
        skipped = Skipped(NO_GROUND_TRUTH)
        return GroundTruthGeometry(sites=(), circles=skipped, crystals=skipped, concepts=skipped, probes=skipped)
    truth = ground_truth
    # The key is unchanged by the switch to concept sets: the same ground truth gives the same numbers (all 56 rows
    # of the verify card compared), so stored results, the prebuilt snapshot's included, stay valid.
    parts = {"model": model_identity(model), "ground_truth": ground_truth_digest(truth), "seed": seed}

    def compute() -> GroundTruthGeometry:
        sites = resid_sites(model)
        sets = list(concept_sets_from_ground_truth(truth).values())
        readings: list[SetReading] = []

        def through_sets(run: Callable[[], tuple[Any, list[SetReading]]]) -> Any:
            found = skip_on_error(run)
            if isinstance(found, Skipped):
                return found
            readings.extend(found[1])
            return found[0]

        report(progress, 0 / 4, "circles")
        circles = through_sets(lambda: circles_of_sets(model, sets, sites, seed=seed))
        report(progress, 1 / 4, "crystals")
        crystals = skip_on_error(lambda: crystals_from_tokens(model, truth, sites, seed=seed))
        report(progress, 2 / 4, "concepts")
        concepts = through_sets(lambda: concepts_of_sets(model, sets, seed=seed))
        report(progress, 3 / 4, "probes")
        probes = skip_on_error(lambda: probes_from_tokens(model, truth, sites, seed=seed))
        report(progress, 1.0, "done")
        return GroundTruthGeometry(sites=tuple(sites), circles=circles, crystals=crystals, concepts=concepts,
                                   probes=probes, readings=tuple(readings))

    return cached_result(store, "ground_truth_geometry", parts, compute, GroundTruthGeometry)


def organism_ground_truth(model: ModelFace) -> dict[str, Any] | None:
    """The organism's ground truth when `model` is the organism (from its directory), else None."""
    spec = getattr(model, "spec", None)
    if spec is None or getattr(spec, "source", None) != "organism":
        return None
    from core.sources.organism import OrganismError, load_ground_truth

    try:
        return load_ground_truth(spec.path)
    except OrganismError:
        return None
