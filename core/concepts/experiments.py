"""The papers' concept-geometry experiments as functions of (model, concept sets) -> typed results.

- `engels_circles`: circularity at any Fourier frequency of cyclic sets (weekdays, months) at every
  resid_post site, at the items' own tokens and at the answer position of their arithmetic prompts
  (Engels et al. 2024; METHODS.md section 7; core.metrics.circles.circularity).
- `park_hierarchy`: hierarchical orthogonality of a taxonomy in the causal inner product, with row-
  shuffled and random-parent baselines, and the cosine of two sibling categories against its shuffled
  baseline (Park et al. 2024; METHODS.md section 8; core.metrics.concepts).
- `gurnee_probes`: held-out R^2 of ridge probes per layer from entity representations to their
  coordinates or year (Gurnee & Tegmark 2023; METHODS.md section 9; core.metrics.probes).

PUBLISHED holds what METHODS.md reports for each, printed next to the measured values by
`python -m core concepts reproduce`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import numpy as np

from core.concepts.readout import ConceptReadout, DroppedItem, ProgressFn, read_concepts
from core.concepts.schema import SPATIAL_VALUES, ConceptError, ConceptSet
from core.jsonable import Result

PUBLISHED = {
    "engels": "GPT-2 small (SAE clusters at blocks.7.hook_resid_pre): weekdays and months each trace a circle "
              "in calendar order (f = 1, PCs 2-3); Mistral 7B / Llama 3 8B: circles at the day/month token of "
              "'Let's do some day of the week math. Two days from Monday is'. No share is published: Atlas's "
              "test is the Fourier share at some f with p < 0.05 against shuffled labels.",
    "park": "Gemma-2B unembeddings: cos(ell_reptile, ell_mammal) = 0.198 vs 0.031 with shuffled rows; child - parent "
            "vectors orthogonal to the parent (cos ~ 0), far below the shuffled baseline.",
    "gurnee": "Llama-2 7B-70B: linear probes recover latitude/longitude (world places) and death years (historical "
              "figures) from the entity's last token; R^2 rises through the early layers, plateaus from about "
              "mid-depth, and grows with model size. (No GPT-2 numbers are published.)",
}


# ---- Engels et al.: circles --------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CircleRow(Result):
    location: str  # "word" | "answer"
    site: str
    frequency: int
    share: float  # share of the item means' variance at that frequency
    p_value: float  # shuffled labels, max over f
    circle: bool  # p < alpha at a frequency with a 2-D plane (not f = k/2)
    visit_step: int
    regular_visit: bool


@dataclass(frozen=True, eq=False)
class CircleSetResult(Result):
    set_name: str
    k: int
    rows: tuple[CircleRow, ...]  # every (location, site) that could be scored
    best: CircleRow | None
    skipped: tuple[str, ...]  # locations that could not be scored, with the reason
    dropped: tuple[DroppedItem, ...]


@dataclass(frozen=True, eq=False)
class EngelsResult(Result):
    sets: tuple[CircleSetResult, ...]
    position: str
    published: str = PUBLISHED["engels"]


def circle_rows(readout: ConceptReadout, k: int, *, n_permutations: int = 200, seed: int = 0,
                alpha: float = 0.05) -> list[CircleRow]:
    """Circularity of each site's [k, d] item means; the readout must hold every item of the cycle."""
    from core.metrics.circles import circularity

    rows = []
    for site in readout.sites:
        M = readout.arrays[site]
        if np.ptp(M) == 0:
            continue
        c = circularity(M, n_permutations=n_permutations, seed=seed)
        rows.append(CircleRow(readout.location, site, c.best_frequency, c.best_share, c.p_value,
                              bool(c.p_value < alpha and 2 * c.best_frequency != k), c.visit_step, c.regular_visit))
    return rows


def engels_circles(model: Any, cyclic_sets: Sequence[ConceptSet], *, position: str = "last",
                   sites: Sequence[str] | None = None, n_permutations: int = 200, seed: int = 0,
                   progress: ProgressFn | None = None) -> EngelsResult:
    results = []
    for concept_set in cyclic_sets:
        if concept_set.kind != "cyclic":
            raise ConceptError(f"Circles need a cyclic set; {concept_set.name!r} is {concept_set.kind}.")
        k = len(concept_set)
        rows: list[CircleRow] = []
        skipped, dropped = [], []
        for location, group in (("word", "item"), ("answer", "answer")):
            if location == "answer" and not concept_set.relation_templates:
                skipped.append("answer: the set has no relation templates")
                continue
            readout = read_concepts(model, concept_set, location=location, group=group, position=position,
                                    sites=sites, progress=progress)
            dropped += [d for d in readout.dropped if d not in dropped]
            if len(readout) < k:
                skipped.append(f"{location}: {len(readout)} of the {k} items could be read; a circle needs all")
                continue
            rows += circle_rows(readout, k, n_permutations=n_permutations, seed=seed)
        best = min(rows, key=lambda r: (not r.circle, r.p_value, -r.share)) if rows else None
        results.append(CircleSetResult(concept_set.name, k, tuple(rows), best, tuple(skipped), tuple(dropped)))
    return EngelsResult(tuple(results), position)


# ---- Park et al.: hierarchical orthogonality ---------------------------------------------------
@dataclass(frozen=True, eq=False)
class ParentOrthogonality(Result):
    parent: str
    children: tuple[str, ...]
    cos_child_minus_parent: tuple[float, ...]
    mean_abs_cos: float
    shuffled_rows_mean: float
    random_parent_mean: float
    p_value_shuffled: float


@dataclass(frozen=True, eq=False)
class ParkResult(Result):
    set_name: str
    n_words: int  # words with a single-token form (their unembedding rows are used)
    parents: tuple[ParentOrthogonality, ...]
    mean_abs_cos: float  # over every parent's children
    shuffled_rows_mean: float
    sibling_pair: tuple[str, str] | None
    sibling_cos: float | None  # cos(ell_a, ell_b)
    sibling_cos_shuffled: float | None  # the same with the rows of g permuted (mean over shuffles)
    dropped: tuple[DroppedItem, ...]
    published: str = PUBLISHED["park"]


def unembedding_ids(model: Any, word: str) -> list[int]:
    """Vocabulary ids of the single-token forms of `word` (" word", "word", " Word", "Word"): Park et al.
    read a category from the unembedding rows of its words, so only single-token forms count."""
    unk = getattr(model, "unk_token_id", None)
    ids = []
    for form in dict.fromkeys((f" {word}", word, f" {word.capitalize()}", word.capitalize())):
        encoded = model.encode(form)
        if len(encoded) == 1 and encoded[0] != unk and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


def park_hierarchy(model: Any, taxonomy: ConceptSet, *, n_shuffles: int = 20, seed: int = 0, min_words: int = 2,
                   sibling_pair: tuple[str, str] = ("reptile", "mammal")) -> ParkResult:
    from core.metrics.concepts import causal_inner_product_basis, hierarchical_orthogonality, vector_representation

    if taxonomy.kind not in ("hierarchical", "categorical"):
        raise ConceptError(f"Park et al.'s test needs a hierarchical set; {taxonomy.name!r} is {taxonomy.kind}.")
    ids_of: dict[str, list[int]] = {}
    dropped = []
    for word in taxonomy.words:
        ids = unembedding_ids(model, word)
        if ids:
            ids_of[word] = ids
        else:
            dropped.append(DroppedItem(word, "no single-token form; Park et al. use unembedding rows of single tokens"))
    g = causal_inner_product_basis(np.asarray(model.W_U.detach().cpu().numpy(), dtype=np.float64))
    category_ids: dict[str, list[int]] = {}
    root_of: dict[str, str] = {}
    for item in taxonomy.items:
        if item.word in ids_of:
            category_ids.setdefault(item.parents[-1], []).extend(ids_of[item.word])
            root_of[item.parents[-1]] = item.parents[0]
    category_ids = {c: sorted(set(v)) for c, v in category_ids.items() if len(set(v)) >= min_words}
    parents = []
    rng = np.random.default_rng(seed)
    for root in dict.fromkeys(root_of.values()):
        children = {c: ids for c, ids in category_ids.items() if root_of[c] == root and c != root}
        parent_ids = sorted({i for ids in children.values() for i in ids})
        if not children or len(parent_ids) < 2:
            continue
        r = hierarchical_orthogonality(g, parent_ids, children, n_shuffles=n_shuffles, seed=int(rng.integers(2**31)))
        parents.append(ParentOrthogonality(root, tuple(children), tuple(float(c) for c in r.cos_child_minus_parent),
                                           r.mean_abs_cos, r.shuffled_rows_mean, r.random_parent_mean,
                                           r.p_value_shuffled))
    if not parents and not category_ids:
        raise ConceptError(f"None of {taxonomy.name!r}'s categories has {min_words} words with a single-token form "
                           "in this model's vocabulary.")
    pair, cos, cos_shuffled = None, None, None
    if all(name in category_ids for name in sibling_pair):
        pair = sibling_pair
        a, b = (category_ids[name] for name in sibling_pair)
        cos = _cos(vector_representation(g, a).ell, vector_representation(g, b).ell)
        shuffled = []
        for _ in range(n_shuffles):  # rows of g permuted: only the rows a and b land on matter
            rows = rng.permutation(g.shape[0])[: len(a) + len(b)]
            ra, rb = g[rows[: len(a)]], g[rows[len(a):]]
            shuffled.append(_cos(vector_representation(ra, range(len(a))).ell,
                                 vector_representation(rb, range(len(b))).ell))
        cos_shuffled = float(np.mean(shuffled))
    all_cos = [abs(c) for p in parents for c in p.cos_child_minus_parent]
    return ParkResult(taxonomy.name, len(ids_of), tuple(parents), float(np.mean(all_cos)) if all_cos else float("nan"),
                      float(np.mean([p.shuffled_rows_mean for p in parents])) if parents else float("nan"),
                      pair, cos, cos_shuffled, tuple(dropped))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


# ---- Gurnee & Tegmark: space and time probes ---------------------------------------------------
@dataclass(frozen=True, eq=False)
class ProbeCurve(Result):
    set_name: str
    target: tuple[str, ...]  # the values probed (latitude, longitude) or (death_year,)
    n_items: int  # entities read (each one row; whole entities are held out)
    sites: tuple[str, ...]
    r2: tuple[float, ...]  # held-out R^2 per site
    best_site: str
    best_r2: float
    dropped: tuple[DroppedItem, ...]


@dataclass(frozen=True, eq=False)
class GurneeResult(Result):
    curves: tuple[ProbeCurve, ...]
    position: str
    published: str = PUBLISHED["gurnee"]


def probe_target(concept_set: ConceptSet) -> tuple[str, ...]:
    """What Gurnee & Tegmark probe: coordinates for places, the death year (else the first value) for people."""
    if concept_set.kind == "spatial":
        return SPATIAL_VALUES
    if concept_set.kind in ("temporal", "ordinal"):
        return ("death_year",) if "death_year" in concept_set.value_names else (concept_set.value_names[0],)
    raise ConceptError(f"A probe needs a spatial, temporal or ordinal set; {concept_set.name!r} is {concept_set.kind}.")


def gurnee_probes(model: Any, sets: Sequence[ConceptSet], *, position: str = "last",
                  sites: Sequence[str] | None = None, seed: int = 0, test_fraction: float = 0.25,
                  max_items: int | None = None, progress: ProgressFn | None = None) -> GurneeResult:
    """Ridge probe per site from each entity's mean representation (over the set's context templates, at
    the entity's last token by default) to its target; a seeded `test_fraction` of entities held out.
    `max_items` reads a seeded sample of that many entities (for speed on large sets)."""
    from core.metrics.probes import probe_per_layer

    curves = []
    for concept_set in sets:
        target = probe_target(concept_set)
        if max_items is not None and len(concept_set) > max_items:
            keep = sorted(np.random.default_rng(seed).choice(len(concept_set), size=max_items, replace=False))
            concept_set = replace(concept_set, items=tuple(concept_set.items[i] for i in keep))
        readout = read_concepts(model, concept_set, location="word", position=position, sites=sites, progress=progress)
        if len(readout) < 8:
            raise ConceptError(f"Only {len(readout)} entities of {concept_set.name!r} could be read on this model; "
                               "a held-out probe needs at least 8.")
        y = np.stack([readout.values(concept_set, name) for name in target], axis=1)
        result = probe_per_layer({s: readout.arrays[s] for s in readout.sites}, y, test_fraction=test_fraction,
                                 seed=seed)
        curves.append(ProbeCurve(concept_set.name, target, len(readout), readout.sites,
                                 tuple(float(v) for v in result.r2), result.best_layer, result.best_r2, readout.dropped))
    return GurneeResult(tuple(curves), position)

