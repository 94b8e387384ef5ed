"""Crystals, categorical/hierarchical concepts and probes from the ground truth's word lists
(Li et al. 2024; Park et al. 2024; Gurnee & Tegmark 2023)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from core.analysis.circles import cyclic_circles
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
from core.errors import AtlasError
from core.hooks import layer_of


def crystals_from_tokens(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                         seed: int = 0) -> dict[str, Any]:
    """Analogy parallelograms (Li et al. 2024 crystals) per layer: within- vs across-relation cosine of
    difference vectors and the relation-cluster silhouette, raw and after held-out LDA; with 2-D
    projections (PCA, and LDA for display) for the arrows figure."""
    from core.metrics.crystals import crystal_projection, parallelogram_quality

    sites = list(sites or resid_sites(model))
    pairs = analogy_pairs(ground_truth)
    if not pairs:
        return {}
    reps = analogy_representations(model, ground_truth, sites)
    known = set(known_words(model, reps.get("words", [])))
    pairs = [p for p in pairs if p[2] in known and p[3] in known]
    relations = np.array([p[0] for p in pairs])
    per_site = {}
    for site in sites:
        means = reps["means"][site]
        A = np.stack([means[p[2]] for p in pairs])
        B = np.stack([means[p[3]] for p in pairs])
        try:
            quality = parallelogram_quality(A, B, relations, lda="heldout", seed=seed)
            pa, pb = crystal_projection(A, B, relations, use_lda=False)
            la, lb = crystal_projection(A, B, relations, use_lda=True)
        except AtlasError as error:
            per_site[site] = {"skipped": str(error)}
            continue
        per_site[site] = {"quality": quality.to_dict(), "pca": {"a": pa, "b": pb}, "lda": {"a": la, "b": lb}}
    return {"relations": relations, "words_a": [p[2] for p in pairs], "words_b": [p[3] for p in pairs],
            "sites": sites, "per_site": per_site}


def concepts_from_unembedding(model: Any, ground_truth: Mapping[str, Any], n_shuffles: int = 20,
                              seed: int = 0) -> dict[str, Any]:
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
        return {}
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
                categories[cat] = {"kingdom": kingdom, "words": words, "ell": vec.ell,
                                   "word_rows": g[child_ids[cat]]}
        parent = sorted({i for ids in child_ids.values() for i in ids})
        if len(child_ids) >= 1 and len(parent) >= 2:
            result = hierarchical_orthogonality(g, parent, child_ids, n_shuffles=n_shuffles, seed=seed)
            kingdoms[kingdom] = result.to_dict()
    return {"kingdoms": kingdoms, "categories": categories, "d_model": int(g.shape[1])}


def probes_from_tokens(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                       per_item: int = 12, seed: int = 0) -> dict[str, Any]:
    """Space (city longitude, latitude) and time (birth year) ridge probes per layer, with whole
    entities held out (Gurnee & Tegmark 2023; METHODS.md section 9)."""
    from core.metrics.probes import probe_per_layer

    sites = list(sites or resid_sites(model))
    samples = probe_samples(model, ground_truth, sites, per_item=per_item, seed=seed)
    out = {}
    for attribute, sample in samples.items():
        try:
            result = probe_per_layer(sample["X"], sample["y"], seed=seed, groups=sample["groups"])
        except AtlasError as error:
            out[attribute] = {"skipped": str(error)}
            continue
        d = result.to_dict()
        d["item_names"] = [sample["names"][i] for i in sample["groups"]]
        out[attribute] = d
    return out


def ground_truth_geometry(model: Any, ground_truth: Mapping[str, Any] | None, store: Any = None,
                          progress: ProgressFn | None = None, seed: int = 0) -> dict[str, Any]:
    """Circles, crystals, concepts and probes from running the model on the ground truth's prompts.

    Without a ground truth (a real model and no word lists) every part is skipped with a reason.
    """
    if not ground_truth:
        return {"skipped": "No ground truth: these analyses need the organism's planted world, or word "
                           "lists in its schema (cyclic, analogies, taxonomy, cities, people)."}
    parts = {"model": model_identity(model), "ground_truth": ground_truth_digest(ground_truth), "seed": seed}

    def compute() -> dict:
        sites = resid_sites(model)
        out: dict[str, Any] = {"sites": sites, "layers": [layer_of(s) for s in sites]}
        steps = [("circles", lambda: cyclic_circles(model, ground_truth, sites, seed=seed)),
                 ("crystals", lambda: crystals_from_tokens(model, ground_truth, sites, seed=seed)),
                 ("concepts", lambda: concepts_from_unembedding(model, ground_truth, seed=seed)),
                 ("probes", lambda: probes_from_tokens(model, ground_truth, sites, seed=seed))]
        for i, (name, call) in enumerate(steps):
            report(progress, i / len(steps), name)
            out[name] = skip_on_error(call)
        report(progress, 1.0, "done")
        return out

    return cached_result(store, "ground_truth_geometry", parts, compute)


def organism_ground_truth(model: Any) -> dict[str, Any] | None:
    """The organism's ground truth when `model` is the organism (from its directory), else None."""
    spec = getattr(model, "spec", None)
    if spec is None or getattr(spec, "source", None) != "organism":
        return None
    from core.sources.organism import OrganismError, load_ground_truth

    try:
        return load_ground_truth(spec.path)
    except OrganismError:
        return None
