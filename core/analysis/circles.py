"""Circles of cyclic concepts (weekdays, months) per layer, at the item token and at the answer position
(Engels et al. 2024; METHODS.md section 7)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from core.analysis.keys import (
    as_float64,
)
from core.analysis.prompts import (
    cycle_kind,
    cyclic_representations,
    fill_template,
    known_words,
    representations_at,
    resid_sites,
    templates_of,
)
from core.hooks import layer_of

CIRCLE_LOCATIONS = ("token", "answer position")


def circle_entry(M: np.ndarray, n_permutations: int, seed: int) -> dict[str, Any] | None:
    """Circularity (any frequency) of one [k, d] table of item means, with its top-5 PCA; None when
    every row is the same (nothing to score)."""
    from core.metrics.circles import circularity

    if np.ptp(M) == 0:
        return None
    c = circularity(M, n_permutations=n_permutations, seed=seed)
    Mc = M - M.mean(0)
    _, s, vt = np.linalg.svd(Mc, full_matrices=False)
    n_pc = min(5, vt.shape[0])
    return {"circularity": circularity_summary(c), "pcs": Mc @ vt[:n_pc].T,
            "pc_variance": (s[:n_pc] ** 2) / max(float((s ** 2).sum()), 1e-300)}


def score_sites(tables: Mapping[str, np.ndarray], n_permutations: int, seed: int) -> dict[str, dict[str, Any]]:
    """`circle_entry` of each site's [k, d] table of item means, sites with nothing to score left out."""
    per_site = {}
    for site, M in tables.items():
        scored = circle_entry(M, n_permutations, seed)
        if scored is not None:
            per_site[site] = scored
    return per_site


def circles_from_tokens(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                        n_permutations: int = 200, seed: int = 0) -> dict[str, Any]:
    """Circularity at any Fourier frequency (Engels et al. 2024; METHODS.md section 7) of the mean
    token representations of each cyclic set per layer (read at the weekday / month token), and of
    its unembedding rows; with the top-5 PCA of the items (for the PC-pair scatter).

    {name: {"words", "sites" (resid sites, then "unembed"), "per_site": {site: {circularity, pcs, pc_variance}}}}
    """
    sites = list(sites or resid_sites(model))
    reps = cyclic_representations(model, ground_truth, sites)
    W_U = as_float64(model.W_U)
    out = {}
    for name, entry in reps.items():
        words = entry["words"]
        ids = [model.encode(w)[-1] for w in words]
        tables = dict(entry["means"])
        tables["unembed"] = W_U[:, ids].T
        per_site = score_sites(tables, n_permutations, seed)
        out[name] = {"words": words, "sites": list(per_site), "per_site": per_site}
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


def answer_position_representations(model: Any, ground_truth: Mapping[str, Any],
                                    sites: Sequence[str]) -> dict[str, Any]:
    """Mean residual at the last position of the cyclic-arithmetic prompts (where the model must hold
    the answer), grouped by the answer: {name: {"words", "means": {site: [k, d]}, "n_prompts": [k]}}.
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
        out[name] = {"words": words, "n_prompts": counts,
                     "means": {s: np.stack([reps[s][answers == i].mean(0) for i in range(len(words))])
                               for s in sites}}
    return out


def circles_at_answer(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                      n_permutations: int = 200, seed: int = 0) -> dict[str, Any]:
    """Circularity (Engels et al. 2024; METHODS.md section 7) of the answer-position means of the
    cyclic-arithmetic prompts per layer: a model that does arithmetic on the cycle may hold its
    circle where it computes the answer rather than at the weekday / month token.

    {name: {"words", "sites", "per_site": {site: {circularity, pcs, pc_variance}}, "n_prompts": [k]}}
    """
    sites = list(sites or resid_sites(model))
    out = {}
    for name, entry in answer_position_representations(model, ground_truth, sites).items():
        per_site = score_sites(entry["means"], n_permutations, seed)
        out[name] = {"words": entry["words"], "sites": list(per_site), "per_site": per_site,
                     "n_prompts": entry["n_prompts"]}
    return out


def best_circle(locations: Mapping[str, Mapping[str, Any]], alpha: float = 0.05) -> dict[str, Any] | None:
    """The strongest circle over locations and sites: circles first (p < alpha at a frequency with a
    2-D Fourier plane, i.e. not f = k/2), then the smallest p, then the largest share.
    {"location", "site", "layer", "frequency", "share", "p_value", "circle", ...} or None."""
    candidates = []
    for location, entry in locations.items():
        for site in entry.get("sites", []):
            c = entry["per_site"][site]["circularity"]
            planar = 2 * int(c["best_frequency"]) != int(c["k"])
            circle = bool(c["p_value"] < alpha and planar)
            candidates.append(((not circle, c["p_value"], -c["best_share"]), {
                "location": location, "site": site, "layer": layer_of(site) if site != "unembed" else None,
                "frequency": int(c["best_frequency"]), "share": c["best_share"], "p_value": c["p_value"],
                "coprime": c["coprime"], "visit_step": c["visit_step"], "regular_visit": c["regular_visit"], "circle_balance": c["circle_balance"],
                "circle": circle}))
    if not candidates:
        return None
    return min(candidates, key=lambda item: item[0])[1]


def cyclic_circles(model: Any, ground_truth: Mapping[str, Any], sites: Sequence[str] | None = None,
                   n_permutations: int = 200, seed: int = 0) -> dict[str, Any]:
    """Circles of each cyclic set (weekdays, months) at both locations, per layer, and the best one:

        {name: {"words", "locations": {"token": {...}, "answer position": {...}}, "best": best_circle}}

    "token": item means read at the weekday / month token (circles_from_tokens, unembedding rows
    included); "answer position": means at the last position of the cyclic-arithmetic prompts grouped
    by the answer (circles_at_answer)."""
    sites = list(sites or resid_sites(model))
    found = {"token": circles_from_tokens(model, ground_truth, sites, n_permutations, seed),
             "answer position": circles_at_answer(model, ground_truth, sites, n_permutations, seed)}
    out = {}
    for name in (ground_truth.get("cyclic") or {}):
        locations = {loc: {k: v for k, v in found[loc][name].items() if k != "words"}
                     for loc in CIRCLE_LOCATIONS if name in found[loc]}
        if not locations:
            continue
        words = next(found[loc][name]["words"] for loc in CIRCLE_LOCATIONS if name in found[loc])
        out[name] = {"words": words, "locations": locations, "best": best_circle(locations)}
    return out


def cyclic_token_ids(model: Any, ground_truth: Mapping[str, Any] | None) -> dict[str, list[int]]:
    """Token ids of each cyclic set (weekdays, months), for ranking decoder clusters."""
    out = {}
    for name, words in ((ground_truth or {}).get("cyclic") or {}).items():
        if len(known_words(model, list(words))) == len(words):
            out[name] = [model.encode(w)[-1] for w in words]
    return out

def circularity_summary(result: Any) -> dict[str, Any]:
    d = result.to_dict()
    d.pop("null_best_shares", None)
    return d
