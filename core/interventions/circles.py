"""Turning a cyclic concept along its circle (Engels et al. 2024; METHODS.md sections 7 and 10).

Fit (`fit_cycle`): at one site, the mean representation M_i of the answer position of prompts whose
answer is item i (i = 0..k-1 of a cycle: weekdays, months) is written in the Fourier basis of the
cycle,

    Mc_i = M_i - center = sum_f a_f cos(2 pi f i / k) + b_f sin(2 pi f i / k),   f = 1..k//2

(a_f, b_f in R^d; exact for the k - 1 frequencies; the share of variance at each f is
core.metrics.circles.fourier_shares). The circle of frequency f is the plane spanned by a_f, b_f;
item i sits at angle 2 pi f i / k on it.

Turn (`rotation_delta`): the representation x is read in the basis [a_f, b_f] (least squares, so the
ellipse the items trace is followed, not only a round circle), its coordinates are rotated by
2 pi f s / k and mapped back; everything off the plane is left as it is:

    (alpha, beta) = pinv([a_f b_f]) (x - center);  x' = x + [a_f b_f] (R(2 pi f s / k) (alpha, beta) - (alpha, beta))

An item mean lying on the fitted ellipse goes exactly to the ellipse point of item i + s. Rotating in
every Fourier plane at once (`frequencies="all"`) moves item mean i exactly to item mean i + s (the
whole item subspace shifted), the upper reference for what a 2-D intervention can achieve.
We rotate rather than replace the plane component with the target item's mean (METHODS 10's other
option) because the rotation needs no knowledge of the current item and works for any dial angle.

Experiment (`rotation_experiment`): on held-out prompts, move the answer position at the site by
s = 1..k-1 steps and count how often the model's argmax answer moves from its own clean answer a to
a + s (mod k). Control: the same-norm change in a random 2-D plane (x's component in a random plane
rotated by the same angle, the change rescaled to the circle change's norm). Two more rows: "circle to
target mean" puts x's plane coordinates at those of the mean of item a + s (`target_delta`, which needs
the current item: the model's clean answer), and "all Fourier planes" rotates every plane.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.interventions.common import InterventionError, ProgressFn, check_site, prompt_tokens, token_id
from core.interventions.hooks import forward_logits, intervene
from core.jsonable import Result

ROTATION_METHODS = ("circle", "circle to target mean", "random plane", "all Fourier planes")


@dataclass(frozen=True, eq=False)
class CycleFit(Result):
    site: str
    words: list[str]  # the items in cyclic order
    n_prompts: list[int]  # prompts behind each item mean
    frequencies: list[int]  # 1..k//2
    shares: list[float]  # share of the item means' variance at each frequency
    best_frequency: int
    center: list[float]  # [d] mean of the item means
    cos_coef: list[list[float]]  # [frequency][d]: a_f
    sin_coef: list[list[float]]  # [frequency][d]: b_f (zero at f = k/2)

    @property
    def k(self) -> int:
        return len(self.words)

    @property
    def best_share(self) -> float:
        return self.shares[self.frequencies.index(self.best_frequency)]


def fourier_coefficients(M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(center [d], a [n_freq, d], b [n_freq, d]) with M_i = center + sum_f a_f cos(2 pi f i/k) + b_f sin(2 pi f i/k)."""
    M = np.asarray(M, dtype=np.float64)
    k = M.shape[0]
    center = M.mean(0)
    Mc = M - center
    i = np.arange(k)
    a, b = [], []
    for f in range(1, k // 2 + 1):
        weight = 1.0 / k if 2 * f == k else 2.0 / k
        a.append(weight * np.cos(2 * np.pi * f * i / k) @ Mc)
        b.append(weight * np.sin(2 * np.pi * f * i / k) @ Mc if 2 * f != k else np.zeros(M.shape[1]))
    return center, np.array(a), np.array(b)


def cycle_from_means(M: np.ndarray, words: Sequence[str], site: str, n_prompts: Sequence[int] | np.ndarray) -> CycleFit:
    from core.metrics.circles import fourier_shares

    if len(words) != M.shape[0] or len(words) < 3:
        raise InterventionError("A cycle needs at least 3 items and one mean representation per item.")
    center, a, b = fourier_coefficients(M)
    shares = fourier_shares(M)
    freqs = list(range(1, len(words) // 2 + 1))
    return CycleFit(site=site, words=list(words), n_prompts=[int(n) for n in n_prompts], frequencies=freqs,
                    shares=[float(s) for s in shares], best_frequency=int(freqs[int(np.argmax(shares))]),
                    center=center.tolist(), cos_coef=a.tolist(), sin_coef=b.tolist())


def last_position_activations(model: Any, prompts: Sequence[str], sites: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({site: [n, d]} activations at each prompt's last token, [n] argmax next token), prompts run one by one
    length group at a time (no padding)."""
    for site in sites:
        check_site(model, site)
    tokens = [prompt_tokens(model, p) for p in prompts]
    acts = {s: np.zeros((len(prompts), model.d_model)) for s in sites}
    answers = np.zeros(len(prompts), dtype=np.int64)
    for length in sorted({int(t.shape[1]) for t in tokens}):
        idx = [i for i, t in enumerate(tokens) if t.shape[1] == length]
        batch = torch.cat([tokens[i] for i in idx])
        out = model.run(batch, list(sites), return_logits=True)
        for s in sites:
            acts[s][idx] = out[s][:, -1].double().cpu().numpy()
        answers[idx] = out["logits"][:, -1].argmax(-1).cpu().numpy()
    return acts, answers


def fit_cycle(model: Any, facts: Sequence[tuple[str, str]], words: Sequence[str], *, site: str) -> CycleFit:
    """The cycle's Fourier fit at `site` from (prompt, answer word) facts (every item must be an answer)."""
    return fit_cycles(model, facts, words, sites=[site])[0]


def fit_cycles(model: Any, facts: Sequence[tuple[str, str]], words: Sequence[str], *, sites: Sequence[str]) -> list[CycleFit]:
    """`fit_cycle` at each site (one forward pass over the facts for all of them)."""
    words = list(words)
    index = {w: i for i, w in enumerate(words)}
    kept = [(p, index[a]) for p, a in facts if a in index]
    counts = np.bincount([i for _, i in kept], minlength=len(words)) if kept else np.zeros(len(words), int)
    if not np.all(counts > 0):
        missing = [w for w, c in zip(words, counts) if c == 0]
        raise InterventionError(f"Every item of the cycle needs prompts whose answer it is; none for {missing}.")
    acts, _ = last_position_activations(model, [p for p, _ in kept], sites)
    labels = np.array([i for _, i in kept])
    return [cycle_from_means(np.stack([acts[s][labels == i].mean(0) for i in range(len(words))]), words, s, counts)
            for s in sites]


def _plane_basis(fit: CycleFit, frequencies: Sequence[int]) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Columns [a_f, b_f, ...] (zero columns left out) and (f, column of a_f, column of b_f or -1)."""
    cols: list[np.ndarray] = []
    layout: list[tuple[int, int, int]] = []
    for f in frequencies:
        j = fit.frequencies.index(f)
        a, b = np.asarray(fit.cos_coef[j]), np.asarray(fit.sin_coef[j])
        ca = len(cols)
        cols.append(a)
        cb = -1
        if np.any(b):
            cb = len(cols)
            cols.append(b)
        layout.append((f, ca, cb))
    return np.stack(cols, axis=1), layout


def rotation_delta(fit: CycleFit, x: np.ndarray, steps: np.ndarray | float, *,
                   frequencies: Sequence[int] | str | None = None) -> np.ndarray:
    """The change that turns x [n, d] by `steps` items along the cycle (module docstring); [n, d].

    frequencies: None = the best frequency's plane; "all" = every Fourier plane; or a list of frequencies.
    Fractional steps turn part of the way (a dial).
    """
    if frequencies is None:
        freqs = [fit.best_frequency]
    elif frequencies == "all":
        freqs = list(fit.frequencies)
    else:
        freqs = [int(f) for f in frequencies]
        bad = [f for f in freqs if f not in fit.frequencies]
        if bad:
            raise InterventionError(f"Frequencies {bad} are not on a cycle of {fit.k} items (1..{fit.k // 2}).")
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    s = np.broadcast_to(np.asarray(steps, dtype=np.float64), (x.shape[0],))
    B, layout = _plane_basis(fit, freqs)
    coords = (x - np.asarray(fit.center)) @ np.linalg.pinv(B).T  # [n, columns]
    new = coords.copy()
    for f, ca, cb in layout:
        angle = 2 * np.pi * f * s / fit.k
        if cb < 0:  # f = k/2: a 1-D component, cos(pi (i + s)) = cos(pi s) cos(pi i) for whole s
            new[:, ca] = np.cos(angle) * coords[:, ca]
            continue
        new[:, ca] = np.cos(angle) * coords[:, ca] - np.sin(angle) * coords[:, cb]
        new[:, cb] = np.sin(angle) * coords[:, ca] + np.cos(angle) * coords[:, cb]
    return (new - coords) @ B.T


def item_means(fit: CycleFit, items: np.ndarray) -> np.ndarray:
    """Centred mean representation of items (any real index: the Fourier series read between items) [n, d]."""
    i = np.asarray(items, dtype=np.float64)
    out = np.zeros((i.shape[0], len(fit.center)))
    for f, a, b in zip(fit.frequencies, fit.cos_coef, fit.sin_coef):
        theta = 2 * np.pi * f * i / fit.k
        out += np.outer(np.cos(theta), a) + np.outer(np.sin(theta), b)
    return out


def target_delta(fit: CycleFit, x: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The change that puts x's coordinates in the best plane at those of the mean of item `targets` [n]
    (METHODS 10's other option: replace the plane component by the target item's); [n, d]."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    B, _ = _plane_basis(fit, [fit.best_frequency])
    P = np.linalg.pinv(B)
    return (item_means(fit, targets) @ P.T - (x - np.asarray(fit.center)) @ P.T) @ B.T


def random_plane_delta(x: np.ndarray, angles: np.ndarray, norms: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Control: rotate each x's component in its own random 2-D plane by `angles`, change rescaled to `norms`."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    out = np.zeros_like(x)
    for r in range(x.shape[0]):
        Q, _ = np.linalg.qr(rng.standard_normal((x.shape[1], 2)))
        c = x[r] @ Q
        rot = np.array([[math.cos(angles[r]), -math.sin(angles[r])], [math.sin(angles[r]), math.cos(angles[r])]])
        change = Q @ (rot @ c - c)
        size = np.linalg.norm(change)
        out[r] = change * (norms[r] / size) if size > 0 else 0.0
    return out


def last_position_edit(deltas: torch.Tensor):
    """Hook: x[r, -1] += deltas[r]."""

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        out = act.clone()
        out[:, -1] += deltas.to(act.device, act.dtype)
        return out

    return hook


@dataclass(frozen=True, eq=False)
class CircleTurn(Result):
    prompt: str
    site: str
    steps: float
    frequencies: list[int]  # the planes turned
    words: list[str]
    answer_before: str  # the model's argmax next token
    answer_after: str
    item_probs_before: list[float]  # probability of each item word, clean
    item_probs_after: list[float]


def turn_on_circle(model: Any, fit: CycleFit, prompt: str, steps: float, *,
                   frequencies: Sequence[int] | str | None = None) -> CircleTurn:
    """The dial: turn the prompt's last position by `steps` items along the fitted cycle; the new answer."""
    if not (isinstance(steps, (int, float)) and not isinstance(steps, bool) and math.isfinite(steps)):
        raise InterventionError(f"steps must be a finite number, not {steps!r}.")
    check_site(model, fit.site)
    tokens = prompt_tokens(model, prompt)
    ids = [token_id(model, w, "cycle item") for w in fit.words]
    acts, _ = last_position_activations(model, [prompt], [fit.site])
    delta = rotation_delta(fit, acts[fit.site], steps, frequencies=frequencies)
    deltas = torch.tensor(np.concatenate([np.zeros_like(delta), delta]), dtype=torch.float32)
    logits = forward_logits(model, tokens.repeat(2, 1), [(fit.site, last_position_edit(deltas))])[:, -1].double()
    probs = torch.softmax(logits, -1).cpu()
    answers = model.to_str_tokens(logits.argmax(-1).cpu())
    used = [fit.best_frequency] if frequencies is None else list(fit.frequencies) if frequencies == "all" else [int(f) for f in frequencies]
    return CircleTurn(prompt=prompt, site=fit.site, steps=float(steps), frequencies=used, words=list(fit.words),
                      answer_before=answers[0], answer_after=answers[1], item_probs_before=probs[0, ids].tolist(),
                      item_probs_after=probs[1, ids].tolist())


@dataclass(frozen=True, eq=False)
class RotationOutcome(Result):
    method: str  # one of ROTATION_METHODS
    n_trials: int  # prompts x steps
    moved_by_steps: int  # trials whose argmax moved from the clean answer a to a + s (mod k)
    changed: int  # trials whose argmax changed at all
    per_step_moved: list[int]  # moved_by_steps for s = 1..k-1
    per_step_trials: list[int]
    mean_change_norm: float  # mean ||x' - x|| at the site

    @property
    def success_rate(self) -> float:
        return self.moved_by_steps / self.n_trials if self.n_trials else float("nan")


@dataclass(frozen=True, eq=False)
class RotationExperiment(Result):
    site: str
    words: list[str]
    frequency: int  # the circle's frequency (the best of the fit)
    share: float  # its share of the item means' variance
    n_prompts: int  # prompts whose clean answer is an item of the cycle (the trials' base)
    n_excluded: int  # prompts whose clean argmax is not an item (left out)
    mean_resid_norm: float  # mean ||x|| at the site and position, for scale
    seed: int
    outcomes: list[RotationOutcome]  # in the order of ROTATION_METHODS

    def outcome(self, method: str) -> RotationOutcome:
        return next(o for o in self.outcomes if o.method == method)


def rotation_experiment(model: Any, fit: CycleFit, prompts: Sequence[str], *, seed: int = 0, batch_rows: int = 512,
                        progress: ProgressFn | None = None) -> RotationExperiment:
    """Move each prompt's last position by s = 1..k-1 steps along the circle, in a random plane (control)
    and in every Fourier plane (reference); how often the argmax answer moves by exactly s (module docstring)."""
    check_site(model, fit.site)
    k = fit.k
    ids = np.array([token_id(model, w, "cycle item") for w in fit.words])
    acts, answers = last_position_activations(model, list(prompts), [fit.site])
    x_all = acts[fit.site]
    item_of = {int(t): i for i, t in enumerate(ids)}
    keep = [j for j, a in enumerate(answers) if int(a) in item_of]
    rng = np.random.default_rng(seed)
    steps = np.arange(1, k)
    rows = []  # (prompt index, step, method, delta)
    for j in keep:
        x = np.repeat(x_all[j][None], k - 1, axis=0)
        circle = rotation_delta(fit, x, steps)
        target = target_delta(fit, x, (item_of[int(answers[j])] + steps) % k)
        norms = np.linalg.norm(circle, axis=1)
        control = random_plane_delta(x, 2 * np.pi * fit.best_frequency * steps / k, norms, rng)
        every = rotation_delta(fit, x, steps, frequencies="all")
        for method, deltas in zip(ROTATION_METHODS, (circle, target, control, every)):
            rows += [(j, int(s), method, d) for s, d in zip(steps, deltas)]
    new_answers = _run_last_position_edits(model, list(prompts), rows, fit.site, batch_rows, progress)
    outcomes = []
    for method in ROTATION_METHODS:
        moved = np.zeros(k - 1, dtype=int)
        trials = np.zeros(k - 1, dtype=int)
        changed, norms = 0, []
        for (j, s, m, d), new in zip(rows, new_answers):
            if m != method:
                continue
            old = item_of[int(answers[j])]
            trials[s - 1] += 1
            moved[s - 1] += int(new == ids[(old + s) % k])
            changed += int(new != answers[j])
            norms.append(float(np.linalg.norm(d)))
        outcomes.append(RotationOutcome(method=method, n_trials=int(trials.sum()), moved_by_steps=int(moved.sum()),
                                        changed=changed, per_step_moved=moved.tolist(), per_step_trials=trials.tolist(),
                                        mean_change_norm=float(np.mean(norms)) if norms else 0.0))
    return RotationExperiment(site=fit.site, words=list(fit.words), frequency=fit.best_frequency, share=fit.best_share,
                              n_prompts=len(keep), n_excluded=len(prompts) - len(keep),
                              mean_resid_norm=float(np.linalg.norm(x_all[keep], axis=1).mean()) if keep else 0.0,
                              seed=int(seed), outcomes=outcomes)


def _run_last_position_edits(model: Any, prompts: list[str], rows: list, site: str, batch_rows: int,
                             progress: ProgressFn | None) -> list[int]:
    """Argmax next token of each row (prompt index, step, method, delta added at the last position)."""
    import time

    tokens = [prompt_tokens(model, p) for p in prompts]
    out = [0] * len(rows)
    groups: dict[int, list[int]] = {}
    for r, (j, _, _, _) in enumerate(rows):
        groups.setdefault(int(tokens[j].shape[1]), []).append(r)
    chunks = [g[i:i + batch_rows] for g in groups.values() for i in range(0, len(g), batch_rows)]
    started = time.perf_counter()
    with intervene(model, []):  # one lock for the whole experiment
        for n, chunk in enumerate(chunks):
            batch = torch.cat([tokens[rows[r][0]] for r in chunk])
            deltas = torch.tensor(np.stack([rows[r][3] for r in chunk]), dtype=torch.float32)
            logits = forward_logits(model, batch, [(site, last_position_edit(deltas))])
            for r, a in zip(chunk, logits[:, -1].argmax(-1).cpu().tolist()):
                out[r] = int(a)
            if progress is not None:
                elapsed = time.perf_counter() - started
                progress(n + 1, len(chunks), elapsed / (n + 1) * (len(chunks) - n - 1))
    return out
