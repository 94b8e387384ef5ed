"""Circles of cyclic concepts (weekdays, months) per layer, at the item token and at the answer position
(Engels et al. 2024; METHODS.md section 7)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from core.analysis.keys import (
    as_float64,
)
from core.analysis.prompts import (
    ItemMeans,
    cycle_kind,
    cyclic_representations,
    fill_template,
    known_words,
    representations_at,
    resid_sites,
    templates_of,
)
from core.analysis.results import BestCircle, CircleLocation, CycleCircles, SiteCircle, Skipped
from core.sources.faces import ModelFace

CIRCLE_LOCATIONS = ("token", "answer position")


def circle_entry(site: str, M: np.ndarray, *, n_permutations: int, seed: int) -> SiteCircle | None:
    """Circularity (any frequency) of one [k, d] table of item means, with its top-5 PCA; None when
    every row is the same (nothing to score)."""
    from core.metrics.circles import circularity

    if np.ptp(M) == 0:
        return None
    c = circularity(M, n_permutations=n_permutations, seed=seed)
    Mc = M - M.mean(0)
    _, s, vt = np.linalg.svd(Mc, full_matrices=False)
    n_pc = min(5, vt.shape[0])
    return SiteCircle(site=site, circularity=c, pcs=Mc @ vt[:n_pc].T,
                      pc_variance=(s[:n_pc] ** 2) / max(float((s ** 2).sum()), 1e-300))


def score_sites(tables: Mapping[str, np.ndarray], *, n_permutations: int, seed: int) -> tuple[SiteCircle, ...]:
    """`circle_entry` of each site's [k, d] table of item means, sites with nothing to score left out."""
    scored = (circle_entry(site, M, n_permutations=n_permutations, seed=seed) for site, M in tables.items())
    return tuple(entry for entry in scored if entry is not None)


def _one_location(location: str, words: Sequence[str], found: CircleLocation) -> CycleCircles:
    locations = {location: found}
    return CycleCircles(words=tuple(words), locations=locations, best=best_circle(locations))


def circles_from_tokens(model: ModelFace, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None, *,
                        n_permutations: int = 200, seed: int = 0) -> dict[str, CycleCircles]:
    """Circularity at any Fourier frequency (Engels et al. 2024; METHODS.md section 7) of the mean
    token representations of each cyclic set per layer (read at the weekday / month token), and of
    its unembedding rows (site "unembed"); with the top-5 PCA of the items (for the PC-pair scatter).
    One location, "token", per cyclic set."""
    sites = list(sites or resid_sites(model))
    reps = cyclic_representations(model, ground_truth, sites)
    W_U = as_float64(model.W_U)
    out = {}
    for name, entry in reps.items():
        ids = [model.encode(w)[-1] for w in entry.words]
        tables = dict(entry.means)
        tables["unembed"] = W_U[:, ids].T
        found = CircleLocation(per_site=score_sites(tables, n_permutations=n_permutations, seed=seed), n_prompts=None)
        out[name] = _one_location("token", entry.words, found)
    return out


def cyclic_arithmetic_facts(ground_truth: Mapping[str, Any], name: str, words: Sequence[str]) -> list[tuple[int, str]]:
    """(index of the answer in `words`, prompt) for each cyclic-arithmetic fact of a cyclic set
    ("three days after friday is" -> monday): the ground truth's eval_facts of the family
    `weekday_arith` / `month_arith`, train and held out; without them, prompts built from the
    family's template ("{n} days after {day} is", answer i + n mod k; "before": i - n) and `numbers`."""
    kind, slot = cycle_kind(name)
    family = f"{kind}_arith"
    index = {w: i for i, w in enumerate(words)}
    facts = ground_truth.get("eval_facts") or {}
    out = []
    for split in ("train", "held_out"):
        for fact in ((facts.get(split) or {}).get(family) or []):
            if isinstance(fact, (list, tuple)) and len(fact) == 2 and fact[1] in index:
                out.append((index[fact[1]], str(fact[0])))
    if out:
        return out
    template = templates_of(ground_truth).get(family)
    numbers = list(ground_truth.get("numbers") or [])
    if not (isinstance(template, str) and "{n}" in template and "{" + slot + "}" in template and numbers):
        return []
    sign = 1 if " after " in template else -1 if " before " in template else 0
    k = len(words)
    if sign == 0 or len(numbers) < k:
        return []
    return [((i + sign * n) % k, fill_template(template, {slot: word, "n": numbers[n]}))
            for i, word in enumerate(words) for n in range(1, k)]


def answer_position_representations(model: ModelFace, ground_truth: Mapping[str, Any],
                                    sites: Sequence[str]) -> dict[str, ItemMeans]:
    """Mean residual at the last position of the cyclic-arithmetic prompts (where the model must hold
    the answer), grouped by the answer ([k, d] per site, with the prompts per answer).
    A cyclic set is left out unless every item is the answer of at least one prompt."""
    out = {}
    for name, words in (ground_truth.get("cyclic") or {}).items():
        words = list(words)
        facts = cyclic_arithmetic_facts(ground_truth, name, words)
        answers = np.array([i for i, _ in facts], dtype=np.int64)
        counts = np.bincount(answers, minlength=len(words)) if facts else np.zeros(len(words), np.int64)
        if len(words) < 3 or not np.all(counts > 0):
            continue
        reps = representations_at(model, [(prompt, prompt) for _, prompt in facts], sites)
        out[name] = ItemMeans(tuple(words), {s: np.stack([reps[s][answers == i].mean(0) for i in range(len(words))])
                                             for s in sites}, n_prompts=counts)
    return out


def circles_at_answer(model: ModelFace, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None, *,
                      n_permutations: int = 200, seed: int = 0) -> dict[str, CycleCircles]:
    """Circularity (Engels et al. 2024; METHODS.md section 7) of the answer-position means of the
    cyclic-arithmetic prompts per layer: a model that does arithmetic on the cycle may hold its
    circle where it computes the answer rather than at the weekday / month token.
    One location, "answer position", per cyclic set."""
    sites = list(sites or resid_sites(model))
    out = {}
    for name, entry in answer_position_representations(model, ground_truth, sites).items():
        found = CircleLocation(per_site=score_sites(entry.means, n_permutations=n_permutations, seed=seed),
                               n_prompts=entry.n_prompts)
        out[name] = _one_location("answer position", entry.words, found)
    return out


def best_circle(locations: Mapping[str, CircleLocation], *, alpha: float = 0.05) -> BestCircle | Skipped:
    """The strongest circle over locations and sites: circles first (p < alpha at a frequency with a
    2-D Fourier plane, i.e. not f = k/2), then the smallest p, then the largest share."""
    candidates = []
    for location, entry in locations.items():
        for scored in entry.per_site:
            c = scored.circularity
            planar = 2 * int(c.best_frequency) != int(c.k)
            circle = bool(c.p_value < alpha and planar)
            candidates.append(((not circle, c.p_value, -c.best_share), BestCircle(
                location=location, site=scored.site, layer=scored.layer, frequency=int(c.best_frequency),
                share=float(c.best_share), p_value=float(c.p_value), coprime=bool(c.coprime),
                visit_step=int(c.visit_step), regular_visit=bool(c.regular_visit),
                circle_balance=float(c.circle_balance), circle=circle)))
    if not candidates:
        return Skipped("no location could be scored")
    return min(candidates, key=lambda item: item[0])[1]


def cyclic_circles(model: ModelFace, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None, *,
                   n_permutations: int = 200, seed: int = 0) -> dict[str, CycleCircles]:
    """Circles of each cyclic set (weekdays, months) at both locations, per layer, and the best one.

    "token": item means read at the weekday / month token (circles_from_tokens, unembedding rows
    included); "answer position": means at the last position of the cyclic-arithmetic prompts grouped
    by the answer (circles_at_answer)."""
    sites = list(sites or resid_sites(model))
    found = {"token": circles_from_tokens(model, ground_truth, sites, n_permutations=n_permutations, seed=seed),
             "answer position": circles_at_answer(model, ground_truth, sites, n_permutations=n_permutations,
                                                  seed=seed)}
    out = {}
    for name in (ground_truth.get("cyclic") or {}):
        located = [found[loc][name] for loc in CIRCLE_LOCATIONS if name in found[loc]]
        if not located:
            continue
        locations = {loc: cycle.locations[loc] for cycle in located for loc in cycle.locations}
        out[name] = CycleCircles(words=located[0].words, locations=locations, best=best_circle(locations))
    return out


def cyclic_token_ids(model: ModelFace, ground_truth: Mapping[str, Any] | None) -> dict[str, list[int]]:
    """Token ids of each cyclic set (weekdays, months), for ranking decoder clusters."""
    out = {}
    for name, words in ((ground_truth or {}).get("cyclic") or {}).items():
        if len(known_words(model, list(words))) == len(words):
            out[name] = [model.encode(w)[-1] for w in words]
    return out
