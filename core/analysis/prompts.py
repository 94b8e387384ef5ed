"""Token representations from prompts: templates, the position of a word, and the ground truth's prompt families."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from core.analysis.keys import (
    AnalysisError,
)
from core.sources.faces import ModelFace


@dataclass(frozen=True)
class ItemMeans:
    """Mean representation of each item of a set, per site: means[site] is [k, d] in item order."""

    words: tuple[str, ...]
    means: dict[str, np.ndarray]
    n_prompts: np.ndarray | None = None  # prompts averaged per item, when it varies


@dataclass(frozen=True)
class WordMeans:
    """Mean representation of each word, per site: means[site][word] is [d]."""

    words: tuple[str, ...]
    means: dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class ProbeSample:
    """Probe inputs of one attribute: X[site] [n, d], targets y [n, ...], the item of each row."""

    X: dict[str, np.ndarray]
    y: np.ndarray
    groups: np.ndarray  # index into `names` of each row
    names: tuple[str, ...]

DEFAULT_TEMPLATES: dict[str, Any] = {
    "weekday_mention": "we met on {day} and again on",
    "month_mention": "we met in {month} and again in",
    "city_direction": "going from {a} to {b} you travel",
    "city_mention": "i drove from {a} to",
    "people_order": "of {a} and {b} the older is",
    "people_birth": "{person} was born in",
    "analogy_context": {},
    "analogy": {},
}


_FIELD = re.compile(r"\{(\w+)\}")


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Replace {name} fields with values (missing names left as they are)."""
    return _FIELD.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


def slot_prompt(template: str, slot: str, word: str, others: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(full prompt, prompt up to and including `word`) with `word` in the {slot} field of `template`."""
    marker = "{" + slot + "}"
    if marker not in template:
        raise AnalysisError(f"The template {template!r} has no {marker} field.")
    values = dict(others or {})
    values[slot] = word
    head = template[: template.index(marker)]
    return fill_template(template, values), fill_template(head, values) + word


def representations_at(model: ModelFace, prompts: Sequence[tuple[str, str]], sites: Sequence[str], *,
                       batch_size: int = 64) -> dict[str, np.ndarray]:
    """Activations at the last token of each prompt's prefix: {site: [n_prompts, d]} (float64).

    Each prompt is (text, prefix) where prefix is the text up to and including the word of interest;
    its position is the token count of the prefix (BOS included) minus one, so multi-token words are
    read at their last token.
    """
    if not prompts:
        raise AnalysisError("No prompts to read representations from.")
    bos = 1 if getattr(model, "bos_token_id", None) is not None else 0
    positions = [len(model.encode(prefix)) + bos - 1 for _, prefix in prompts]
    n_ctx = int(model.n_ctx)
    out: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    for start in range(0, len(prompts), batch_size):
        texts = [t for t, _ in prompts[start:start + batch_size]]
        pos = torch.tensor([min(p, n_ctx - 1) for p in positions[start:start + batch_size]])
        tokens = model.to_tokens(texts)
        acts = model.run(tokens, list(sites))
        rows = torch.arange(len(texts))
        for s in sites:
            out[s].append(acts[s][rows, pos.to(acts[s].device)].cpu().numpy().astype(np.float64))
    return {s: np.concatenate(v) for s, v in out.items()}


def resid_sites(model: ModelFace) -> list[str]:
    return [f"blocks.{layer}.hook_resid_post" for layer in model.layers()
            if model.has_hook(f"blocks.{layer}.hook_resid_post")]


def templates_of(ground_truth: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(DEFAULT_TEMPLATES)
    merged.update(ground_truth.get("templates") or {})
    return merged


def known_words(model: ModelFace, words: Sequence[str]) -> list[str]:
    """Words the tokenizer knows (organism: not UNK); every word for tokenizers without UNK."""
    unk = getattr(model, "unk_token_id", None)
    return [w for w in words if not (unk is not None and unk in model.encode(w)) and model.encode(w)]


def cyclic_prompts(ground_truth: Mapping[str, Any], name: str, words: Sequence[str]) -> list[tuple[int, str, str]]:
    """(item index, text, prefix) prompts for each cyclic item: the mention template and, for the
    organism's arithmetic templates, one prompt per offset (varied left context, then averaged)."""
    t = templates_of(ground_truth)
    kind, slot = cycle_kind(name)
    numbers = list(ground_truth.get("numbers") or [])
    prompts = []
    for i, word in enumerate(words):
        mention = t.get(f"{kind}_mention")
        if mention and "{" + slot + "}" in mention:
            prompts.append((i, *slot_prompt(mention, slot, word)))
        arith = t.get(f"{kind}_arith")
        if arith and numbers and "{" + slot + "}" in arith:
            for n in numbers[1:len(words)]:
                prompts.append((i, *slot_prompt(arith, slot, word, {"n": n})))
    return prompts


def cyclic_representations(model: ModelFace, ground_truth: Mapping[str, Any],
                           sites: Sequence[str]) -> dict[str, ItemMeans]:
    """Mean representation of each cyclic item (weekdays, months) per site, [k, d], in cycle order."""
    out = {}
    for name, words in (ground_truth.get("cyclic") or {}).items():
        words = list(words)
        if len(known_words(model, words)) != len(words) or len(words) < 3:
            continue
        prompts = cyclic_prompts(ground_truth, name, words)
        if not prompts:
            continue
        reps = representations_at(model, [(a, b) for _, a, b in prompts], sites)
        index = np.array([i for i, _, _ in prompts])
        out[name] = ItemMeans(tuple(words), {s: np.stack([reps[s][index == i].mean(0) for i in range(len(words))])
                                             for s in sites})
    return out


def pair_prompts(template: str, slot: str, other_slot: str, names: Sequence[str], per_item: int,
                  seed: int) -> list[tuple[int, str, str]]:
    """Prompts with item i in `slot` and a seeded sample of other items in `other_slot`."""
    rng = np.random.default_rng(seed)
    prompts = []
    for i, word in enumerate(names):
        others = [j for j in range(len(names)) if j != i]
        for j in rng.permutation(others)[:per_item]:
            prompts.append((i, *slot_prompt(template, slot, word, {other_slot: names[j]})))
    return prompts


def probe_samples(model: ModelFace, ground_truth: Mapping[str, Any], sites: Sequence[str], *, per_item: int = 12,
                  seed: int = 0) -> dict[str, ProbeSample]:
    """Representations of city and person tokens in varied contexts, for the space and time probes
    (Gurnee & Tegmark 2023), by attribute ("space", "time")."""
    t = templates_of(ground_truth)
    out = {}
    specs = [("space", ground_truth.get("cities") or {}, "city_direction", "city_mention", "b", "a"),
             ("time", ground_truth.get("people") or {}, "people_order", "people_birth", "b", "a")]
    for attribute, table, pair_key, single_key, slot, other in specs:
        names = known_words(model, list(table))
        if len(names) < 8:
            continue
        prompts: list[tuple[int, str, str]] = []
        pair = t.get(pair_key)
        if pair and "{" + slot + "}" in pair and "{" + other + "}" in pair:
            prompts += pair_prompts(pair, slot, other, names, per_item, seed)
        single = t.get(single_key)
        if single:
            field = _FIELD.findall(single)
            if len(field) == 1:
                prompts += [(i, *slot_prompt(single, field[0], w)) for i, w in enumerate(names)]
        if not prompts:
            continue
        reps = representations_at(model, [(a, b) for _, a, b in prompts], sites)
        groups = np.array([i for i, _, _ in prompts])
        y = np.array([table[names[i]] for i in groups], dtype=np.float64)
        out[attribute] = ProbeSample(X=reps, y=y, groups=groups, names=tuple(names))
    return out


def analogy_pairs(ground_truth: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(relation, family, a, b) for every analogy pair; a capital triple (country, capital, language)
    gives two relations, country -> capital and country -> language."""
    pairs = []
    for family, items in (ground_truth.get("analogies") or {}).items():
        for item in items:
            if len(item) == 3 and family == "capital":
                pairs.append(("capital", family, item[0], item[1]))
                pairs.append(("language", family, item[0], item[2]))
            elif len(item) >= 2:
                pairs.append((family, family, item[0], item[1]))
    return pairs


def analogy_representations(model: ModelFace, ground_truth: Mapping[str, Any],
                            sites: Sequence[str]) -> WordMeans | None:
    """Mean representation of each analogy word over its family's context templates (word read at its
    own position); words with no template are read alone after BOS."""
    t = templates_of(ground_truth)
    contexts = t.get("analogy_context") or {}
    analogies = ground_truth.get("analogies") or {}
    prompts: list[tuple[str, str, str]] = []
    for family, items in analogies.items():
        templates = list(contexts.get(family) or []) + ([t["analogy"][family]] if family in (t.get("analogy") or {}) else [])
        for item in items:
            words = {str(i): w for i, w in enumerate(item)}
            for slot, word in words.items():
                used = False
                for template in templates:
                    if "{" + slot + "}" in template:
                        prompts.append((word, *slot_prompt(template, slot, word, words)))
                        used = True
                if not used:
                    prompts.append((word, word, word))
    if not prompts:
        return None
    reps = representations_at(model, [(a, b) for _, a, b in prompts], sites)
    read = np.array([w for w, _, _ in prompts])  # the word of each prompt
    vocabulary = sorted(set(read.tolist()))
    return WordMeans(tuple(vocabulary), {s: {w: reps[s][read == w].mean(0) for w in vocabulary} for s in sites})


def cycle_kind(name: str) -> tuple[str, str]:
    """("weekday", "day") or ("month", "month"): the template family and slot of a cyclic set."""
    return ("weekday", "day") if name.startswith(("week", "day")) else ("month", "month")
