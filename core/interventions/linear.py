"""Erasing a linear concept: project a ridge probe's direction out of the residual stream
(Gurnee & Tegmark 2023 probes, METHODS.md sections 9 and 10).

Direction (`fit_probe_direction`): the probe of core.metrics.probes (features standardised, RidgeCV over
DEFAULT_ALPHAS) fitted to every sample; in the raw activation space it reads y_hat = w . x + const with
w = coef / scale. Its held-out R^2 (whole groups held out, `ridge_probe`) says how much to trust it.

Erasure (`erasure_edit`): at a site, for every position from `start` on (default 1: BOS, an attention
sink that carries no prompt content, is left alone),

    x <- x - ((x - mu) . u) u,     u = w / |w|,  mu = the probe samples' mean

so the probe reads the mean value everywhere, while everything orthogonal to u is untouched (moving
to mu's coordinate rather than to 0 keeps the activation on the data's scale).

Experiment (`erasure_experiment`): the share of prompts of each family whose argmax answer is correct
and whose answer changed, with the probe direction erased and, as a control, with random unit
directions erased the same way (mean over `n_random` directions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.interventions.common import InterventionError, ProgressFn, check_site, prompt_tokens, token_id
from core.interventions.hooks import forward_logits, intervene
from core.jsonable import Result


@dataclass(frozen=True, eq=False)
class ProbeDirection(Result):
    site: str
    attribute: str  # what the probe reads ("latitude")
    direction: list[float]  # u, unit length, raw activation space
    center: list[float]  # mu, mean of the samples
    weight_norm: float  # |w|: the probe's change of y per unit move along u
    r2_held_out: float  # ridge_probe's R^2 with whole groups held out
    alpha: float
    n_samples: int
    n_groups: int


def fit_probe_direction(X: np.ndarray, y: np.ndarray, *, site: str, attribute: str, groups: np.ndarray | None = None,
                        seed: int = 0) -> ProbeDirection:
    """The ridge probe's direction for y (1-D) from activations X [n, d], with its held-out R^2."""
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    from core.metrics.probes import DEFAULT_ALPHAS, ridge_probe

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    held_out = ridge_probe(X, y, seed=seed, groups=groups)
    scaler = StandardScaler().fit(X)
    probe = RidgeCV(alphas=list(DEFAULT_ALPHAS)).fit(scaler.transform(X), y)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    w = np.asarray(probe.coef_, dtype=np.float64).ravel() / scale
    norm = float(np.linalg.norm(w))
    if norm == 0:
        raise InterventionError(f"The {attribute} probe at {site} has a zero direction; nothing to erase.")
    return ProbeDirection(site=site, attribute=attribute, direction=(w / norm).tolist(), center=X.mean(0).tolist(),
                          weight_norm=norm, r2_held_out=float(held_out.r2), alpha=float(probe.alpha_),
                          n_samples=int(X.shape[0]), n_groups=len(np.unique(groups)) if groups is not None else int(X.shape[0]))


def erasure_edit(directions: torch.Tensor, centers: torch.Tensor, start: int = 1):
    """Hook: row r gets x <- x - ((x - c_r) . u_r) u_r at positions >= start (directions, centers [rows, d];
    a zero direction leaves its row alone)."""

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        out = act.clone()
        u = directions.to(act.device, act.dtype)[:, None, :]
        c = centers.to(act.device, act.dtype)[:, None, :]
        x = act[:, start:]
        out[:, start:] = x - ((x - c) * u).sum(-1, keepdim=True) * u
        return out

    return hook


@dataclass(frozen=True, eq=False)
class FamilyOutcome(Result):
    family: str
    n: int
    correct_before: int
    correct_after: int  # with the probe direction erased
    changed: int  # answers that differ from the clean ones
    control_correct_after: float  # mean over the random directions
    control_changed: float


@dataclass(frozen=True, eq=False)
class ErasureExperiment(Result):
    site: str
    attribute: str
    r2_held_out: float
    n_random: int
    seed: int
    families: list[FamilyOutcome]

    def family(self, name: str) -> FamilyOutcome:
        return next(f for f in self.families if f.family == name)


def erasure_experiment(model: Any, probe: ProbeDirection, families: Mapping[str, Sequence[tuple[str, str]]], *,
                       n_random: int = 5, seed: int = 0, start: int = 1,
                       progress: ProgressFn | None = None) -> ErasureExperiment:
    """Answers of each family's (prompt, answer) facts with the probe direction (and random ones) erased."""
    check_site(model, probe.site, d=len(probe.direction))
    if n_random < 1:
        raise InterventionError("The control needs at least one random direction.")
    rng = np.random.default_rng(seed)
    d = len(probe.direction)
    randoms = rng.standard_normal((n_random, d))
    randoms /= np.linalg.norm(randoms, axis=1, keepdims=True)
    variants = np.concatenate([np.zeros((1, d)), np.asarray(probe.direction)[None], randoms])  # clean, probe, random...
    centers = torch.tensor(np.repeat(np.asarray(probe.center)[None], len(variants), 0), dtype=torch.float32)
    directions = torch.tensor(variants, dtype=torch.float32)
    outcomes = []
    names = [n for n, facts in families.items() if facts]
    with intervene(model, []):
        for step, name in enumerate(names):
            facts = list(families[name])
            answers = np.array([token_id(model, a, "answer") for _, a in facts])
            chosen = _erased_answers(model, [p for p, _ in facts], probe.site, directions, centers, start)
            correct = chosen == answers[:, None]
            changed = chosen != chosen[:, :1]
            outcomes.append(FamilyOutcome(
                family=name, n=len(facts), correct_before=int(correct[:, 0].sum()), correct_after=int(correct[:, 1].sum()),
                changed=int(changed[:, 1].sum()), control_correct_after=float(correct[:, 2:].sum(0).mean()),
                control_changed=float(changed[:, 2:].sum(0).mean())))
            if progress is not None:
                progress(step + 1, len(names), 0.0)
    return ErasureExperiment(site=probe.site, attribute=probe.attribute, r2_held_out=probe.r2_held_out,
                             n_random=int(n_random), seed=int(seed), families=outcomes)


def _erased_answers(model: Any, prompts: list[str], site: str, directions: torch.Tensor, centers: torch.Tensor,
                    start: int, max_rows: int = 1024) -> np.ndarray:
    """[n_prompts, n_variants] argmax next token of each prompt with each variant's direction erased
    (prompts of one token length run together, every variant of a prompt in consecutive rows)."""
    n_var = directions.shape[0]
    tokens = [prompt_tokens(model, p) for p in prompts]
    chosen = np.zeros((len(prompts), n_var), dtype=np.int64)
    by_length: dict[int, list[int]] = {}
    for j, t in enumerate(tokens):
        by_length.setdefault(int(t.shape[1]), []).append(j)
    per_batch = max(1, max_rows // n_var)
    for group in by_length.values():
        for first in range(0, len(group), per_batch):
            idx = group[first:first + per_batch]
            batch = torch.cat([tokens[j] for j in idx]).repeat_interleave(n_var, dim=0)
            edit = erasure_edit(directions.repeat(len(idx), 1), centers.repeat(len(idx), 1), start)
            logits = forward_logits(model, batch, [(site, edit)])
            chosen[idx] = logits[:, -1].argmax(-1).cpu().numpy().reshape(len(idx), n_var)
    return chosen


@dataclass(frozen=True, eq=False)
class ShiftOutcome(Result):
    shift: float  # in the probe's units (degrees of latitude): the change of the probe's reading
    counts: list[int]  # prompts answering each of ShiftExperiment.answers, probe direction moved
    control_counts: list[float]  # the same with random directions moved by the same norm (mean)


@dataclass(frozen=True, eq=False)
class ShiftExperiment(Result):
    site: str
    attribute: str
    n_prompts: int
    answers: list[str]  # the answers counted ("north", "south", ...)
    clean_counts: list[int]
    outcomes: list[ShiftOutcome]  # one per shift


def shift_experiment(model: Any, probe: ProbeDirection, prompts: Sequence[str], positions: Sequence[int], *,
                     shifts: Sequence[float], answers: Sequence[str], n_random: int = 5,
                     seed: int = 0) -> ShiftExperiment:
    """Move each prompt's position `positions[j]` along the probe direction so that the probe reads
    `shift` more (x += shift / |w| * u), and count the answers; random unit directions moved by the same
    norm are the control. The complement of erasure: a direction the model reads moves its answers."""
    check_site(model, probe.site, d=len(probe.direction))
    if len(prompts) != len(positions) or not prompts:
        raise InterventionError("Give one position per prompt (and at least one prompt).")
    ids = [token_id(model, a, "answer") for a in answers]
    rng = np.random.default_rng(seed)
    d = len(probe.direction)
    randoms = rng.standard_normal((n_random, d))
    randoms /= np.linalg.norm(randoms, axis=1, keepdims=True)
    units = np.concatenate([np.asarray(probe.direction)[None], randoms])
    tokens = [prompt_tokens(model, p) for p in prompts]

    def count(vectors: np.ndarray) -> np.ndarray:  # [n_variants, len(answers)]
        out = np.zeros((len(vectors), len(ids)))
        groups: dict[tuple[int, int], list[int]] = {}
        for j, t in enumerate(tokens):
            groups.setdefault((int(t.shape[1]), int(positions[j])), []).append(j)
        for (_, pos), idx in groups.items():
            n_var = len(vectors)
            batch = torch.cat([tokens[j] for j in idx]).repeat_interleave(n_var, dim=0)
            deltas = torch.tensor(np.tile(vectors, (len(idx), 1)), dtype=torch.float32)

            def hook(act: torch.Tensor, hook: Any, pos: int = pos, deltas: torch.Tensor = deltas) -> torch.Tensor:
                out_act = act.clone()
                out_act[:, pos] += deltas.to(act.device, act.dtype)
                return out_act

            chosen = forward_logits(model, batch, [(probe.site, hook)])[:, -1].argmax(-1).cpu().numpy()
            chosen = chosen.reshape(len(idx), n_var)
            for a, token in enumerate(ids):
                out[:, a] += (chosen == token).sum(0)
        return out

    with intervene(model, []):
        clean = count(np.zeros((1, d)))[0]
        outcomes = []
        for shift in shifts:
            counted = count(units * (float(shift) / probe.weight_norm))
            outcomes.append(ShiftOutcome(shift=float(shift), counts=[int(c) for c in counted[0]],
                                         control_counts=[float(c) for c in counted[1:].mean(0)]))
    return ShiftExperiment(site=probe.site, attribute=probe.attribute, n_prompts=len(prompts), answers=list(answers),
                           clean_counts=[int(c) for c in clean], outcomes=outcomes)
