"""The concept interventions on the model organism (issue 14 item 4; docs/INTERVENTIONS.md).

- Months and weekdays: the cycle is fitted (`fit_cycles`) at every block's resid_post from the
  answer position of the *training* cyclic-arithmetic facts (ground_truth eval_facts.train), and
  turned on the *held-out* facts (eval_facts.held_out): circle vs random-plane control vs every
  Fourier plane, at every layer; the strongest circle is the layer with the largest best-frequency share.
- Latitude: a ridge probe from the city tokens of the training city_direction prompts to the city's
  latitude, per layer; at the layer with the best held-out R^2 (whole cities held out) its direction
  is erased and the held-out answers of city directions (north/south and east/west apart) and of
  unrelated families are compared with random-direction erasure.

    python -m core.interventions organism [--dir DIR] [--json FILE]
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from core.interventions.circles import RotationExperiment, fit_cycles, rotation_experiment
from core.interventions.common import InterventionError, ProgressFn, Result, prompt_tokens
from core.interventions.linear import ErasureExperiment, fit_probe_direction, erasure_experiment

CYCLES = {"months": "month_arith", "weekdays": "weekday_arith"}
UNRELATED_FAMILIES = ("number_compare", "number_add", "taxonomy_inherit", "people_order", "month_arith")


@dataclass(frozen=True)
class CycleInterventions(Result):
    concept: str  # "months" | "weekdays"
    strongest_site: str  # the layer with the largest best-frequency share of the training-fact item means
    experiments: list[RotationExperiment]  # one per resid_post site, in layer order

    def strongest(self) -> RotationExperiment:
        return next(e for e in self.experiments if e.site == self.strongest_site)


@dataclass(frozen=True)
class OrganismInterventions(Result):
    cycles: list[CycleInterventions]
    latitude_sites: list[str]
    latitude_r2: list[float]  # held-out R^2 per site (whole cities held out)
    latitude: ErasureExperiment  # at the best site
    seed: int
    seconds: float


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
    stages = len(CYCLES) * len(sites) + 2
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
    X, latitude, groups = city_latitude_samples(model, ground_truth, sites)
    probes = {s: fit_probe_direction(X[s], latitude, site=s, attribute="latitude", groups=groups, seed=seed) for s in sites}
    best = max(sites, key=lambda s: probes[s].r2_held_out)
    tick()
    city = _facts(ground_truth, "held_out", "city_direction")
    families = {"city_direction north/south": [f for f in city if f[1] in ("north", "south")],
                "city_direction east/west": [f for f in city if f[1] in ("east", "west")]}
    families.update({f: _facts(ground_truth, "held_out", f) for f in UNRELATED_FAMILIES})
    erasure = erasure_experiment(model, probes[best], families, seed=seed)
    tick()
    return OrganismInterventions(cycles=cycles, latitude_sites=sites, latitude_r2=[probes[s].r2_held_out for s in sites],
                                 latitude=erasure, seed=int(seed), seconds=time.perf_counter() - started)


def _pct(n: float, d: int) -> str:
    return f"{n / d:.1%}" if d else "n/a"


def render_markdown(result: OrganismInterventions) -> str:
    """The tables of docs/INTERVENTIONS.md."""
    lines = []
    for cyc in result.cycles:
        lines += [f"#### {cyc.concept}: turn the answer position by s = 1..k-1 steps (held-out prompts)", "",
                  "| site | circle f (share) | prompts (excluded) | circle: moved by s | random plane: moved by s | "
                  "all Fourier planes: moved by s | changed at all: circle / random | mean change norm / resid norm |",
                  "|---|---|---|---|---|---|---|---|"]
        for e in cyc.experiments:
            c, r, a = (e.outcome(m) for m in ("circle", "random plane", "all Fourier planes"))
            mark = " (strongest circle)" if e.site == cyc.strongest_site else ""
            lines.append(
                f"| {e.site}{mark} | f={e.frequency} ({e.share:.2f}) | {e.n_prompts} ({e.n_excluded}) | "
                f"{c.moved_by_steps}/{c.n_trials} = {_pct(c.moved_by_steps, c.n_trials)} | "
                f"{r.moved_by_steps}/{r.n_trials} = {_pct(r.moved_by_steps, r.n_trials)} | "
                f"{a.moved_by_steps}/{a.n_trials} = {_pct(a.moved_by_steps, a.n_trials)} | "
                f"{_pct(c.changed, c.n_trials)} / {_pct(r.changed, r.n_trials)} | "
                f"{c.mean_change_norm:.2f} / {e.mean_resid_norm:.2f} |")
        s = cyc.strongest()
        c = s.outcome("circle")
        lines += ["", f"Per step s at {s.site} (circle): " + ", ".join(
            f"s={i + 1}: {m}/{t}" for i, (m, t) in enumerate(zip(c.per_step_moved, c.per_step_trials))), ""]
    lat = result.latitude
    lines += ["#### latitude: erase the ridge-probe direction (held-out prompts)", "",
              "Held-out R^2 of the latitude probe (whole cities held out) per site: " + ", ".join(
                  f"{s} {r:.3f}" for s, r in zip(result.latitude_sites, result.latitude_r2)), "",
              f"Erased at {lat.site} (best R^2 {lat.r2_held_out:.3f}); control: {lat.n_random} random directions (mean).", "",
              "| family | prompts | correct, clean | correct, latitude erased | changed | correct, random erased | changed (random) |",
              "|---|---|---|---|---|---|---|"]
    for f in lat.families:
        lines.append(f"| {f.family} | {f.n} | {f.correct_before} ({_pct(f.correct_before, f.n)}) | "
                     f"{f.correct_after} ({_pct(f.correct_after, f.n)}) | {f.changed} ({_pct(f.changed, f.n)}) | "
                     f"{f.control_correct_after:.1f} ({_pct(f.control_correct_after, f.n)}) | "
                     f"{f.control_changed:.1f} ({_pct(f.control_changed, f.n)}) |")
    lines += ["", f"({result.seconds:.0f} s, seed {result.seed})"]
    return "\n".join(lines)
