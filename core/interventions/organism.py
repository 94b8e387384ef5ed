"""The concept interventions on the model organism (issue 14 item 4; docs/INTERVENTIONS.md).

- Months and weekdays: the cycle is fitted (`fit_cycles`) at every block's resid_post from the
  answer position of the *training* cyclic-arithmetic facts (ground_truth eval_facts.train), and
  turned on the *held-out* facts (eval_facts.held_out): circle vs random-plane control vs every
  Fourier plane, at every layer; the strongest circle is the layer with the largest best-frequency share.
- Latitude: a ridge probe from the city tokens of the training city_direction prompts to the city's
  latitude, at the embeddings (blocks.0.hook_resid_pre) and every resid_post; at each site its
  direction is erased and the held-out answers of city directions (north/south and east/west apart)
  and of unrelated families are compared with random-direction erasure; and the second city is moved
  along the direction by +-LATITUDE_SHIFT degrees (north/south answer counts against random
  directions moved as far). The headline site is the one with the best held-out R^2.

    python -m core.interventions organism [--dir DIR] [--json FILE]
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.interventions.circles import ROTATION_METHODS, RotationExperiment, fit_cycles, rotation_experiment
from core.interventions.common import InterventionError, ProgressFn, prompt_tokens
from core.interventions.linear import (
    ErasureExperiment,
    ShiftExperiment,
    erasure_experiment,
    fit_probe_direction,
    shift_experiment,
)
from core.jsonable import Result

CYCLES = {"months": "month_arith", "weekdays": "weekday_arith"}
UNRELATED_FAMILIES = ("number_compare", "number_add", "taxonomy_inherit", "people_order", "month_arith")
DIRECTIONS = ("north", "south", "east", "west")
LATITUDE_SHIFT = 20.0  # degrees: about the spread of the cities' latitudes


@dataclass(frozen=True, eq=False)
class CycleInterventions(Result):
    concept: str  # "months" | "weekdays"
    strongest_site: str  # the layer with the largest best-frequency share of the training-fact item means
    experiments: list[RotationExperiment]  # one per resid_post site, in layer order

    def strongest(self) -> RotationExperiment:
        return next(e for e in self.experiments if e.site == self.strongest_site)


@dataclass(frozen=True, eq=False)
class LatitudeSite(Result):
    site: str
    r2_held_out: float  # the probe's R^2 with whole cities held out
    erasure: ErasureExperiment
    shift: ShiftExperiment  # the second city moved by -LATITUDE_SHIFT and +LATITUDE_SHIFT degrees


@dataclass(frozen=True, eq=False)
class OrganismInterventions(Result):
    cycles: list[CycleInterventions]
    latitude_best_site: str  # the probed site with the best held-out R^2
    latitude: list[LatitudeSite]  # blocks.0.hook_resid_pre, then every resid_post
    seed: int
    seconds: float

    def latitude_site(self, site: str) -> LatitudeSite:
        return next(s for s in self.latitude if s.site == site)


def _facts(ground_truth: Mapping[str, Any], split: str, family: str) -> list[tuple[str, str]]:
    facts = ((ground_truth.get("eval_facts") or {}).get(split) or {}).get(family) or []
    return [(str(p), str(a)) for p, a in facts]


def city_latitude_samples(model: Any, ground_truth: Mapping[str, Any], sites: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Activations at every city token of the training city_direction prompts: ({site: X}, latitude, city index)."""
    cities = ground_truth.get("cities") or {}
    names = sorted(cities)
    index = {n: i for i, n in enumerate(names)}
    facts = _facts(ground_truth, "train", "city_direction")
    if not facts or len(names) < 8:
        raise InterventionError("The ground truth has no city_direction facts or fewer than 8 cities.")
    X: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    groups: list[int] = []
    by_length: dict[int, list[tuple[Any, list[int], list[int]]]] = {}
    for prompt, _ in facts:
        tokens = prompt_tokens(model, prompt)
        words = model.to_str_tokens(tokens[0])
        found = [(p, index[w]) for p, w in enumerate(words) if w in index]
        by_length.setdefault(int(tokens.shape[1]), []).append((tokens, [p for p, _ in found], [c for _, c in found]))
    import torch

    for items in by_length.values():
        out = model.run(torch.cat([t for t, _, _ in items]), sites)
        for row, (_, positions, city_ids) in enumerate(items):
            for s in sites:
                X[s] += [out[s][row, p].double().cpu().numpy() for p in positions]
            groups += city_ids
    groups_arr = np.array(groups)
    latitude = np.array([float(cities[names[g]][1]) for g in groups_arr])
    return {s: np.stack(v) for s, v in X.items()}, latitude, groups_arr


def run_organism_interventions(model: Any, ground_truth: Mapping[str, Any], *, seed: int = 0,
                               progress: ProgressFn | None = None) -> OrganismInterventions:
    """Every concept intervention of the module docstring on `model` (the organism) and its ground truth."""
    started = time.perf_counter()
    sites = [f"blocks.{layer}.hook_resid_post" for layer in range(model.n_layers)]
    stages = len(CYCLES) * len(sites) + len(sites) + 1
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            elapsed = time.perf_counter() - started
            progress(done, stages, elapsed / done * (stages - done))

    cycles = []
    for concept, family in CYCLES.items():
        words = list((ground_truth.get("cyclic") or {}).get(concept) or [])
        fits = fit_cycles(model, _facts(ground_truth, "train", family), words, sites=sites)
        held_out = [p for p, _ in _facts(ground_truth, "held_out", family)]
        experiments = []
        for fit in fits:
            experiments.append(rotation_experiment(model, fit, held_out, seed=seed))
            tick()
        strongest = max(fits, key=lambda f: f.best_share).site
        cycles.append(CycleInterventions(concept=concept, strongest_site=strongest, experiments=experiments))
    probe_sites = ["blocks.0.hook_resid_pre", *sites]
    X, latitude, groups = city_latitude_samples(model, ground_truth, probe_sites)
    city = _facts(ground_truth, "held_out", "city_direction")
    families = {"city_direction north/south": [f for f in city if f[1] in ("north", "south")],
                "city_direction east/west": [f for f in city if f[1] in ("east", "west")]}
    families.update({f: _facts(ground_truth, "held_out", f) for f in UNRELATED_FAMILIES})
    city_prompts = [p for p, _ in city]
    second_city = [_last_city_position(model, p, ground_truth) for p in city_prompts]
    latitude_sites = []
    for site in probe_sites:
        probe = fit_probe_direction(X[site], latitude, site=site, attribute="latitude", groups=groups, seed=seed)
        erasure = erasure_experiment(model, probe, families, seed=seed)
        shift = shift_experiment(model, probe, city_prompts, second_city, shifts=(-LATITUDE_SHIFT, LATITUDE_SHIFT),
                                 answers=DIRECTIONS, seed=seed)
        latitude_sites.append(LatitudeSite(site=site, r2_held_out=probe.r2_held_out, erasure=erasure, shift=shift))
        tick()
    best = max(latitude_sites, key=lambda s: s.r2_held_out).site
    return OrganismInterventions(cycles=cycles, latitude_best_site=best, latitude=latitude_sites, seed=int(seed),
                                 seconds=time.perf_counter() - started)


def _last_city_position(model: Any, prompt: str, ground_truth: Mapping[str, Any]) -> int:
    cities = ground_truth.get("cities") or {}
    words = model.to_str_tokens(prompt_tokens(model, prompt)[0])
    positions = [p for p, w in enumerate(words) if w in cities]
    if not positions:
        raise InterventionError(f"The prompt {prompt!r} names no city of the ground truth.")
    return positions[-1]


def _pct(n: float, d: int) -> str:
    return f"{n / d:.1%}" if d else "n/a"


def render_markdown(result: OrganismInterventions) -> str:
    """The tables of docs/INTERVENTIONS.md."""
    lines = []
    for cyc in result.cycles:
        lines += [f"#### {cyc.concept}: move the answer position by s = 1..k-1 steps (held-out prompts)", "",
                  ("| site | circle f (share) | prompts (excluded) | circle rotation | circle to target mean | "
                   "random plane (control) | all Fourier planes | changed at all: rotation / control | "
                   "change norm: rotation / target / all; resid norm |"),
                  "|---|---|---|---|---|---|---|---|---|"]
        for e in cyc.experiments:
            o = [e.outcome(m) for m in ROTATION_METHODS]
            mark = " (strongest circle)" if e.site == cyc.strongest_site else ""
            lines.append(
                f"| {e.site}{mark} | f={e.frequency} ({e.share:.2f}) | {e.n_prompts} ({e.n_excluded}) | "
                + " | ".join(f"{x.moved_by_steps}/{x.n_trials} = {_pct(x.moved_by_steps, x.n_trials)}" for x in o)
                + f" | {_pct(o[0].changed, o[0].n_trials)} / {_pct(o[2].changed, o[2].n_trials)} | "
                f"{o[0].mean_change_norm:.2f} / {o[1].mean_change_norm:.2f} / {o[3].mean_change_norm:.2f}; "
                f"{e.mean_resid_norm:.2f} |")
        strongest = cyc.strongest()
        for method in ("circle", "circle to target mean"):
            c = strongest.outcome(method)
            lines.append(f"\nPer step s at {strongest.site} ({method}): " + ", ".join(
                f"s={i + 1}: {m}/{t}" for i, (m, t) in enumerate(zip(c.per_step_moved, c.per_step_trials))))
        lines.append("")
    lines += ["#### latitude: erase the ridge-probe direction, and move the second city along it (held-out prompts)", "",
              (f"Best held-out R^2 (whole cities held out): {result.latitude_best_site}. Erasure: answers changed "
               f"with the probe direction erased / mean over {result.latitude[0].erasure.n_random} random directions."), "",
              "| site | probe R^2 | " + " | ".join(f.family for f in result.latitude[0].erasure.families) + " |",
              "|---|---|" + "---|" * len(result.latitude[0].erasure.families)]
    for lat in result.latitude:
        cells = [f"{f.changed}/{f.n} vs {f.control_changed:.1f}" for f in lat.erasure.families]
        lines.append(f"| {lat.site} | {lat.r2_held_out:.3f} | " + " | ".join(cells) + " |")
    lines += ["", "Correct answers, clean -> latitude erased (random erased), at the best site: " + "; ".join(
        f"{f.family} {f.correct_before} -> {f.correct_after} ({f.control_correct_after:.1f}) of {f.n}"
        for f in result.latitude_site(result.latitude_best_site).erasure.families), ""]
    first = result.latitude[0].shift
    lines += [(f"Second city moved along the probe direction ({first.n_prompts} held-out city_direction prompts; "
               f"answers {' / '.join(first.answers)}; probe direction vs random directions of the same norm, mean):"), "",
              "| site | clean | " + " | ".join(f"{o.shift:+.0f} deg: probe | {o.shift:+.0f} deg: random" for o in first.outcomes) + " |",
              "|---|---|" + "---|---|" * len(first.outcomes)]
    for lat in result.latitude:
        sh = lat.shift
        cells = [f"{'/'.join(map(str, o.counts))} | {'/'.join(f'{c:.0f}' for c in o.control_counts)}" for o in sh.outcomes]
        lines.append(f"| {lat.site} | {'/'.join(map(str, sh.clean_counts))} | " + " | ".join(cells) + " |")
    lines += ["", f"({result.seconds:.0f} s, seed {result.seed})"]
    return "\n".join(lines)
