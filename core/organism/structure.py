"""Evidence that the planted structure is in the organism, per layer.

Token representations are context-averaged: the mean of `blocks.{L}.hook_resid_post` over every
occurrence of the token in the world's eval documents (site "resid_L"), plus the embedding rows
W_E[t] ("embed") and unembedding columns W_U[:, t] ("unembed").

- circles (Engels et al. 2024, "Not all language model features are linear"; Karkada et al.,
  "Symmetry in language statistics shapes the geometry of model representations"): the share of
  the centred variance of the k mean vectors at each Fourier frequency f = 1..k//2
  (`core.metrics.circles.fourier_shares`; the shares sum to 1, chance level 2 / (k - 1) per
  frequency for random vectors); we report the best frequency coprime with k. Circle
  order (unsupervised, here only): in the best pair of the top 5 principal components, the items'
  angles give a cyclic order (`core.metrics.circles.angular_visit_order`); `neighbour_step` is the
  most common index step between angular neighbours and `neighbour_consistency` the share of
  neighbours exactly that step apart (1.0 = a perfect circle going round in that step; step 1 =
  calendar order, step s at frequency f with f * s = +-1 mod k).
- city probe: `core.metrics.probes.ridge_probe` from representations of city-token occurrences to
  (lon, lat), grouped by city: R^2 on the cities held out (Gurnee & Tegmark 2023).
- analogies: difference vectors v(b) - v(a) for each pair of a family; mean cosine between pairs of
  the same family vs pairs of different families (`core.metrics.crystals.parallelogram_score`;
  parallelogram structure, Mikolov et al. 2013; Li et al. 2024 crystals).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.metrics.circles import angular_visit_order, fourier_shares
from core.metrics.crystals import parallelogram_score
from core.metrics.probes import ridge_probe
from core.organism.train import encode_documents
from core.sources.organism import load_ground_truth, load_organism, world_corpus_texts
from core.sources.tokens import tokenize_batch


@torch.no_grad()
def token_representations(model, texts: list[str], sample_ids: list[int], max_occurrences: int = 64) -> tuple[dict[str, np.ndarray], dict[str, dict[int, list[np.ndarray]]]]:
    """Per site, [d_vocab, d_model] mean representation of each token (NaN where unseen); and per site
    a capped list of single-occurrence vectors for each token of `sample_ids` (probes grouped by token)."""
    tokens = encode_documents(texts, model.tokenizer, model.cfg.n_ctx)
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    d_vocab, d_model = model.cfg.d_vocab, model.cfg.d_model
    sums = {n: torch.zeros(d_vocab, d_model) for n in names}
    counts = torch.zeros(d_vocab)
    samples: dict[str, dict[int, list[np.ndarray]]] = {n: {} for n in names}
    wanted = torch.tensor(sorted(set(sample_ids)), dtype=torch.long)
    for chunk in tokens.split(64):
        _, cache = model.run_with_cache(chunk, names_filter=names)
        flat = chunk.reshape(-1)
        counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.float))
        for n in names:
            acts = cache[n].reshape(-1, d_model).float()
            sums[n].index_add_(0, flat, acts)
            for pos in torch.nonzero(torch.isin(flat, wanted)).flatten().tolist():
                token = int(flat[pos])
                bucket = samples[n].setdefault(token, [])
                if len(bucket) < max_occurrences:
                    bucket.append(acts[pos].numpy())
    means = {f"resid_{i}": (sums[n] / counts[:, None]).numpy() for i, n in enumerate(names)}
    means["embed"] = model.W_E.detach().float().numpy()
    means["unembed"] = model.W_U.detach().float().T.numpy()
    return means, {f"resid_{i}": samples[n] for i, n in enumerate(names)}


@torch.no_grad()
def answer_position_means(model, facts: list[list[str]], answers: list[str]) -> dict[str, np.ndarray]:
    """Per layer, [len(answers), d_model]: mean resid_post at the last prompt position over the facts
    whose answer is each word (where the model must have computed the answer)."""
    vocab = model.tokenizer.get_vocab()
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    grouped: dict[str, list[str]] = {a: [] for a in answers}
    for prompt, answer in facts:
        if answer in grouped:
            grouped[answer].append(prompt)
    out = {f"answer_{i}": np.full((len(answers), model.cfg.d_model), np.nan) for i in range(len(names))}
    for row, answer in enumerate(answers):
        prompts = grouped[answer]
        if not prompts:
            continue
        tokens, lengths = tokenize_batch(model.tokenizer, prompts, bos_token_id=vocab["<bos>"],
                                         pad_token_id=vocab["<pad>"], n_ctx=model.cfg.n_ctx)
        _, cache = model.run_with_cache(tokens, names_filter=names)
        for i, name in enumerate(names):
            out[f"answer_{i}"][row] = cache[name][torch.arange(len(prompts)), lengths - 1].float().mean(0).numpy()
    return out


def _angular_steps(coords: np.ndarray) -> tuple[int, float]:
    """Most common index step (mod k, either direction) between angular neighbours, and its share."""
    k = coords.shape[0]
    _, steps = angular_visit_order(coords)
    distances = [min(int(s), k - int(s)) for s in steps]  # direction of travel does not matter
    step, count = Counter(distances).most_common(1)[0]
    return step, count / k


def circle_order(vectors: np.ndarray, n_components: int = 5) -> dict:
    """Best pair of the top principal components for a circle: the pair whose angular neighbours
    are most often one constant index step apart (unsupervised: the plane is not fitted to the
    labels, unlike the Fourier-basis plane of `core.metrics.circles.circularity`, which shows a
    circle even for random vectors)."""
    k = vectors.shape[0]
    centred = vectors - vectors.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    m = min(n_components, k - 1, vt.shape[0])
    projected = centred @ vt[:m].T
    best: tuple[tuple[float, float], int, float, tuple[int, int]] | None = None
    for a in range(m):
        for b in range(a + 1, m):
            step, consistency = _angular_steps(projected[:, [a, b]])
            key = (consistency, singular[a] ** 2 + singular[b] ** 2)
            if best is None or key > best[0]:
                best = (key, step, consistency, (a, b))
    if best is None:
        raise ValueError(f"A circle needs two principal components: at least 3 vectors of 2+ dimensions; got {k}.")
    _, step, consistency, pair = best
    return {"neighbour_step": step, "neighbour_consistency": round(consistency, 3), "pcs": list(pair)}


def circle_report(vectors: np.ndarray) -> dict:
    """Fourier variance shares per frequency (`core.metrics.circles.fourier_shares`), the best
    frequency coprime with k, and the best-PC-pair circle order."""
    k = vectors.shape[0]
    shares = dict(enumerate(fourier_shares(vectors).tolist(), start=1))  # f -> share, f = 1..k//2
    coprime = {f: s for f, s in shares.items() if math.gcd(f, k) == 1}
    best = max(coprime, key=lambda f: coprime[f])
    return {"shares": {str(f): round(s, 3) for f, s in shares.items()}, "best_coprime_frequency": best,
            "best_share": round(coprime[best], 3), "calendar_share": round(shares[1], 3),
            "chance_share": round(2 / (k - 1), 3), **circle_order(vectors)}


def city_probe_r2(samples: dict[int, list[np.ndarray]], city_ids: list[int], coords: np.ndarray, seed: int = 0) -> float:
    """`core.metrics.probes.ridge_probe` from single occurrences to (lon, lat), grouped by city so that
    whole cities are held out; its held-out R^2 (NaN when too few cities occur to hold some out)."""
    xs, ys, groups = [], [], []
    for city, token in enumerate(city_ids):
        for vec in samples.get(token, []):
            xs.append(vec)
            ys.append(coords[city])
            groups.append(city)
    if len(set(groups)) < 4:
        return float("nan")  # too few cities seen in the documents for a held-out-city probe
    return ridge_probe(np.array(xs), np.array(ys), seed=seed, groups=np.array(groups)).r2


def analogy_parallelism(means: np.ndarray, vocab: dict[str, int], analogies: dict[str, list[list[str]]]) -> dict:
    """Mean cosine of difference vectors v(b) - v(a) within a family vs across families
    (`core.metrics.crystals.parallelogram_score`), overall and per family."""
    diffs, labels = [], []
    for family, pairs in analogies.items():
        for pair in pairs:
            a, b = means[vocab[pair[0]]], means[vocab[pair[1]]]
            if np.isfinite(a).all() and np.isfinite(b).all():
                diffs.append(b - a)
                labels.append(family)
    D, families = np.array(diffs), np.array(labels)
    overall = parallelogram_score(D, families)
    per_family = {family: round(parallelogram_score(D[families == family], families[families == family]).within_cos, 3)
                  for family in dict.fromkeys(labels)}
    return {"within": round(overall.within_cos, 3), "across": round(overall.across_cos, 3),
            "per_family": per_family}


def structure_report(directory: Path | None = None, checkpoint: str = "final", max_docs: int = 1000) -> dict:
    """Circles (weekdays, months), city probe R^2 and analogy parallelism at every site."""
    model = load_organism(directory, checkpoint=checkpoint)
    truth = load_ground_truth(directory)
    if model.tokenizer is None:
        raise ValueError("load_organism attaches the organism's tokenizer; this model has none.")
    vocab = model.tokenizer.get_vocab()
    cities = truth["cities"]
    city_ids = [vocab[c] for c in cities]
    means, samples = token_representations(model, world_corpus_texts(directory, "eval")[:max_docs], city_ids)
    coords = np.array(list(cities.values()), dtype=float)
    report: dict[str, dict] = {}
    for site, table in means.items():
        entry: dict[str, Any] = {}
        for name, words in truth["cyclic"].items():
            rows = table[[vocab[w] for w in words]]
            if np.isfinite(rows).all():  # a word that never occurs in the eval documents has no mean
                entry[name] = circle_report(rows)
        entry["analogies"] = analogy_parallelism(table, vocab, truth["analogies"])
        if site in samples:
            entry["city_probe_r2"] = round(city_probe_r2(samples[site], city_ids, coords), 3)
        report[site] = entry
    # Where the answer is computed: mean resid at the last prompt position of the cyclic-arithmetic
    # facts (train and held out), grouped by the answer word.
    facts = truth["eval_facts"]
    for name, family in (("weekdays", "weekday_arith"), ("months", "month_arith")):
        words = truth["cyclic"][name]
        both = facts["train"].get(family, []) + facts["held_out"].get(family, [])
        for site, table in answer_position_means(model, both, words).items():
            if np.isfinite(table).all():
                report.setdefault(site, {})[name] = circle_report(table)
    return report
