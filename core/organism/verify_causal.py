"""The causal rows of the ground-truth card (issue 14 item 8; docs/INTERVENTIONS.md, "The card's causal rows").

Four kinds of rows, each against its control, appended after the card's other rows:
- months / weekdays: the cycle is fitted at every block's resid_post from the answer position of the
  *training* cyclic-arithmetic facts; at the strongest circle (largest best-frequency share) the answer
  position of held-out facts is turned by s = 1..k-1 steps (core.interventions.rotation_experiment):
  how often the argmax moves by exactly s, against the same-norm change in a random plane;
- latitude: a ridge probe from the city tokens of the training city_direction prompts to latitude, at
  the embeddings and every resid_post; at the site with the best held-out R^2 its direction is erased
  (core.interventions.erasure_experiment) while held-out facts are answered: north/south answers should
  change, east/west much less, unrelated families not at all, and random directions should change nothing;
- each SAE's loss recovered when its reconstruction is spliced in, read from the harvest
  (core.harvest.splice.SpliceQuality; no model run here).

The expectations are the ones pre-registered in docs/INTERVENTIONS.md for the full experiment (written
before it was first measured) and, for the splice rows, LOSS_RECOVERED_MIN below, written before the
card's rows were first measured. The card uses a seeded subset of CARD_PROMPTS held-out facts per family
(QUICK_PROMPTS with --quick) and CONTROL_DIRECTIONS random directions, so the rows add seconds, not
minutes: `python -m core.interventions organism` runs every held-out fact at every site (~800 s).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.figures.style import site_label
from core.organism.card_rows import FAIL, PASS, SKIPPED, CardRow, _fmt

CAUSAL = "causal"  # CardRow.kind of every row here
CARD_PROMPTS = 24  # held-out facts per family on the card (a seeded subset; every fact when fewer)
QUICK_PROMPTS = 10  # the same with --quick
CONTROL_DIRECTIONS = 3  # random directions erased as the latitude control (the full experiment: 5)
SEED = 0


@dataclass(frozen=True)
class RotationExpectation:
    """Turning the circle by s steps moves the argmax answer by exactly s in at least `min_success` of
    the trials, at least `min_ratio` times as often as the same-norm random-plane control, and the
    control does so in under `max_control` of its trials."""

    min_success: float
    min_ratio: float = 3.0
    max_control: float = 0.05

    def text(self) -> str:
        return (f"circle >= {self.min_success:.0%} of trials and >= {self.min_ratio:g}x the random plane; "
                f"random plane < {self.max_control:.0%}")

    def met(self, moved: int, trials: int, control_moved: int, control_trials: int) -> bool:
        if trials <= 0 or control_trials <= 0:
            return False
        rate, control = moved / trials, control_moved / control_trials
        return rate >= self.min_success and rate >= self.min_ratio * control and control < self.max_control


# Pre-registered in docs/INTERVENTIONS.md ("Expectations (written before measuring)").
ROTATION_EXPECTATIONS = {"months": RotationExpectation(min_success=0.30),
                         "weekdays": RotationExpectation(min_success=0.20)}


@dataclass(frozen=True)
class ErasureExpectation:
    """Erasing the latitude probe's direction lowers north/south accuracy by at least `min_drop_points`
    points and east/west accuracy by less than `east_west_fraction` of that drop; it changes under
    `max_unrelated_changed` of the answers of every unrelated family; random directions erased the same
    way change under `max_control_changed` of the answers of every family."""

    min_drop_points: float = 20.0
    east_west_fraction: float = 0.5
    max_unrelated_changed: float = 0.02
    max_control_changed: float = 0.02

    def directions_met(self, north_south_drop: float, east_west_drop: float) -> bool:
        return north_south_drop >= self.min_drop_points and east_west_drop < self.east_west_fraction * north_south_drop

    def unrelated_met(self, changed_shares: Sequence[float]) -> bool:
        return all(share < self.max_unrelated_changed for share in changed_shares)

    def control_met(self, control_shares: Sequence[float]) -> bool:
        return all(share < self.max_control_changed for share in control_shares)


ERASURE_EXPECTATION = ErasureExpectation()  # pre-registered in docs/INTERVENTIONS.md

# Splice-in quality (written before the card's rows were first measured): SAEBench's good residual-stream
# SAEs recover 0.9-0.99 of the loss against zero-ablation; the organism's top-k SAEs (k = 16, 8x wide)
# should too, and splicing one in should move the next-token distribution less than mean-ablating the site.
LOSS_RECOVERED_MIN = 0.9

NORTH_SOUTH, EAST_WEST = "city_direction north/south", "city_direction east/west"


def causal_rows(model: Any, harvest: Any, ground_truth: dict | None, *, quick: bool = False, seed: int = SEED,
                progress: Callable[[str], None] | None = None) -> list[CardRow]:
    """Every causal row of the module docstring: the splice rows from `harvest`, the intervention rows
    from `model` (a LoadedModel) and its ground truth. A part that cannot run is a skipped row saying why."""
    with _one_thread():
        return _causal_rows(model, harvest, ground_truth, quick=quick, seed=seed,
                            say=progress or (lambda _text: None))


@contextmanager
def _one_thread() -> Iterator[None]:
    """Torch (core.device.single_thread) and BLAS on one thread for the block, restored after. The rows are
    many small forward passes and ridge fits, where thread hand-offs cost more than they save: on the shared
    2-core machine two threads made them 8-12x slower (docs/INTERVENTIONS.md). The numbers are the same."""
    from threadpoolctl import threadpool_limits

    from core.device import single_thread

    with single_thread(), threadpool_limits(limits=1):
        yield


def _causal_rows(model: Any, harvest: Any, ground_truth: dict | None, *, quick: bool, seed: int,
                 say: Callable[[str], None]) -> list[CardRow]:
    rows = splice_rows(harvest)
    n_prompts = QUICK_PROMPTS if quick else CARD_PROMPTS
    if not ground_truth or not ground_truth.get("eval_facts"):
        reason = "no ground truth with held-out facts (the organism's world)"
        return rows + [CardRow(f"{c}: circle turn vs random plane", reason, ROTATION_EXPECTATIONS[c].text(), SKIPPED,
                               CAUSAL) for c in ROTATION_EXPECTATIONS] + [
            CardRow("latitude erasure: north/south answers", reason, _directions_text(), SKIPPED, CAUSAL)]
    for concept, expectation in ROTATION_EXPECTATIONS.items():
        say(f"causal rows: turning the {concept} circle ({n_prompts} held-out prompts)")

        def turn(concept: str = concept) -> list[CardRow]:  # bound now: _guarded calls it within this iteration
            return [rotation_row(model, ground_truth, concept, n_prompts, seed)]

        rows.append(_guarded(f"{concept}: circle turn vs random plane", expectation.text(), turn))
    say(f"causal rows: erasing the latitude probe direction ({n_prompts} held-out prompts per family)")
    rows += _guarded("latitude erasure: north/south answers", _directions_text(),
                     lambda: latitude_rows(model, ground_truth, n_prompts, seed), many=True)
    return rows


def _guarded(label: str, expected: str, compute: Callable[[], list[CardRow]], many: bool = False) -> Any:
    from core.errors import AtlasError

    try:
        rows = compute()
    except AtlasError as error:  # e.g. a cycle item no training fact answers (a tiny world)
        rows = [CardRow(label, str(error), expected, SKIPPED, CAUSAL)]
    return rows if many else rows[0]


def held_out_subset(items: Sequence[Any], n: int, seed: int = SEED) -> list[Any]:
    """`n` of `items` chosen at random with `seed`, in their original order (all of them when fewer)."""
    if len(items) <= n:
        return list(items)
    chosen = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[int(i)] for i in chosen]


# ---- splice-in quality ---------------------------------------------------------------------------
def splice_rows(harvest: Any) -> list[CardRow]:
    expected = (f"loss recovered >= {LOSS_RECOVERED_MIN} vs zero-ablation; "
                "KL(clean || spliced) < KL(clean || mean-ablated)")
    rows = []
    for sae in harvest.saes.values():
        name = f"loss recovered, SAE spliced in ({site_label(sae.hook_name)})"
        q = sae.splice
        if q is None:
            rows.append(CardRow(name, "not measured (the harvest's splice_tokens is 0)", expected, SKIPPED, CAUSAL))
            continue
        rows.append(CardRow(
            name,
            f"{_fmt(q.loss_recovered_zero)} vs zero-abl., {_fmt(q.loss_recovered_mean)} vs mean-abl.; CE clean "
            f"{_fmt(q.ce_clean)}, spliced {_fmt(q.ce_spliced)}, zero {_fmt(q.ce_zero_ablated)}, mean "
            f"{_fmt(q.ce_mean_ablated)}; KL {_fmt(q.kl_spliced)} (mean-abl. {_fmt(q.kl_mean_ablated)}); {q.tokens} tokens",
            expected, PASS if splice_met(q) else FAIL, CAUSAL))
    return rows


def splice_met(q: Any) -> bool:
    finite = all(isinstance(v, (int, float)) and math.isfinite(v)
                 for v in (q.loss_recovered_zero, q.kl_spliced, q.kl_mean_ablated))
    return finite and q.loss_recovered_zero >= LOSS_RECOVERED_MIN and q.kl_spliced < q.kl_mean_ablated


# ---- circle turns ----------------------------------------------------------------------------------
def rotation_row(model: Any, ground_truth: dict, concept: str, n_prompts: int, seed: int = SEED) -> CardRow:
    from core.interventions import fit_cycles, rotation_experiment
    from core.interventions.organism import CYCLES, _facts

    family = CYCLES[concept]
    words = list((ground_truth.get("cyclic") or {}).get(concept) or [])
    sites = [f"blocks.{layer}.hook_resid_post" for layer in range(model.n_layers)]
    fits = fit_cycles(model, _facts(ground_truth, "train", family), words, sites=sites)
    fit = max(fits, key=lambda f: f.best_share)
    prompts = [p for p, _ in held_out_subset(_facts(ground_truth, "held_out", family), n_prompts, seed)]
    experiment = rotation_experiment(model, fit, prompts, seed=seed)
    return rotation_card_row(concept, experiment)


def rotation_card_row(concept: str, experiment: Any) -> CardRow:
    """The card row of one RotationExperiment against ROTATION_EXPECTATIONS[concept]."""
    expectation = ROTATION_EXPECTATIONS[concept]
    circle, control = experiment.outcome("circle"), experiment.outcome("random plane")
    target, every = experiment.outcome("circle to target mean"), experiment.outcome("all Fourier planes")
    ratio = (f"{_fmt(circle.success_rate / control.success_rate, 2)}x" if control.moved_by_steps
             else "the control never moved it")
    measured = (f"circle {_share(circle)} vs random plane {_share(control)} ({ratio}); "
                f"target mean {_rate(target)}, all planes {_rate(every)}; f = {experiment.frequency} "
                f"(share {_fmt(experiment.share, 2)}); {experiment.n_prompts} held-out prompts"
                + (f" ({experiment.n_excluded} left out: clean answer not an item)" if experiment.n_excluded else ""))
    return CardRow(f"{concept}: circle turn vs random plane ({site_label(experiment.site)})", measured,
                   expectation.text(),
                   PASS if expectation.met(circle.moved_by_steps, circle.n_trials, control.moved_by_steps,
                                           control.n_trials) else FAIL, CAUSAL)


def _rate(outcome: Any) -> str:
    return f"{outcome.moved_by_steps / outcome.n_trials:.1%}" if outcome.n_trials else "n/a"


def _share(outcome: Any) -> str:
    rate = outcome.moved_by_steps / outcome.n_trials if outcome.n_trials else math.nan
    return f"{outcome.moved_by_steps}/{outcome.n_trials} = {rate:.1%}" if outcome.n_trials else "0/0"


# ---- latitude erasure ------------------------------------------------------------------------------
def _directions_text() -> str:
    e = ERASURE_EXPECTATION
    return (f"north/south accuracy -{e.min_drop_points:g} points or more; east/west drop < "
            f"{e.east_west_fraction:g}x that")


def latitude_rows(model: Any, ground_truth: dict, n_prompts: int, seed: int = SEED) -> list[CardRow]:
    from core.interventions import erasure_experiment, fit_probe_direction
    from core.interventions.organism import UNRELATED_FAMILIES, _facts, city_latitude_samples

    sites = ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(model.n_layers)]
    X, latitude, groups = city_latitude_samples(model, ground_truth, sites)
    probes = [fit_probe_direction(X[s], latitude, site=s, attribute="latitude", groups=groups, seed=seed)
              for s in sites]
    probe = max(probes, key=lambda p: p.r2_held_out if math.isfinite(p.r2_held_out) else -math.inf)
    city = _facts(ground_truth, "held_out", "city_direction")
    families = {NORTH_SOUTH: [f for f in city if f[1] in ("north", "south")],
                EAST_WEST: [f for f in city if f[1] in ("east", "west")]}
    families.update({f: _facts(ground_truth, "held_out", f) for f in UNRELATED_FAMILIES})
    families = {name: held_out_subset(facts, n_prompts, seed) for name, facts in families.items()}
    experiment = erasure_experiment(model, probe, families, n_random=CONTROL_DIRECTIONS, seed=seed)
    return erasure_card_rows(experiment)


def erasure_card_rows(experiment: Any) -> list[CardRow]:
    """Three rows of one ErasureExperiment against ERASURE_EXPECTATION: the direction answers, the
    unrelated families, the random-direction control."""
    e = ERASURE_EXPECTATION
    where = f"({_site_name(experiment.site)})"
    probe = f"probe R^2 {_fmt(experiment.r2_held_out, 2)}; "
    by_name = {f.family: f for f in experiment.families}
    rows = []
    ns, ew = by_name.get(NORTH_SOUTH), by_name.get(EAST_WEST)
    label = f"latitude erasure: north/south answers {where}"
    if ns is None or ew is None:
        rows.append(CardRow(label, "no held-out city_direction facts", _directions_text(), SKIPPED, CAUSAL))
    else:
        ns_drop, ew_drop = _drop_points(ns), _drop_points(ew)
        rows.append(CardRow(
            label,
            f"{probe}north/south correct {ns.correct_before} -> {ns.correct_after} of {ns.n} ({_points(ns_drop)}; "
            f"random directions -> {ns.control_correct_after:.1f}); east/west {ew.correct_before} -> "
            f"{ew.correct_after} of {ew.n} ({_points(ew_drop)})",
            _directions_text(), PASS if e.directions_met(ns_drop, ew_drop) else FAIL, CAUSAL))
    unrelated = [f for f in experiment.families if f.family not in (NORTH_SOUTH, EAST_WEST)]
    rows.append(CardRow(
        f"latitude erasure: unrelated answers {where}",
        probe + ", ".join(f"{f.family} {f.changed}/{f.n}" for f in unrelated) + " changed",
        f"under {e.max_unrelated_changed:.0%} of each unrelated family's answers change",
        PASS if unrelated and e.unrelated_met([f.changed / f.n for f in unrelated]) else FAIL, CAUSAL))
    rows.append(CardRow(
        f"latitude erasure: random-direction control {where}",
        f"mean of {experiment.n_random} random directions: "
        + ", ".join(f"{f.family.removeprefix('city_direction ')} {f.control_changed:.1f}/{f.n}"
                    for f in experiment.families) + " changed",
        f"under {e.max_control_changed:.0%} of every family's answers change",
        PASS if experiment.families and e.control_met([f.control_changed / f.n for f in experiment.families])
        else FAIL, CAUSAL))
    return rows


def _site_name(site: str) -> str:
    """"embeddings" for blocks.0.hook_resid_pre, "L2" for blocks.2.hook_resid_post, else the hook name."""
    if site == "blocks.0.hook_resid_pre":
        return "embeddings"
    return site_label(site) if site.endswith("hook_resid_post") else site


def _points(drop: float) -> str:
    """An accuracy change for the card: "-4.2 points", "+1.0 points", "no change"."""
    return "no change" if abs(drop) < 0.05 else f"{-drop:+.1f} points"


def _drop_points(family: Any) -> float:
    """Accuracy lost with the direction erased, in percentage points."""
    return 100.0 * (family.correct_before - family.correct_after) / family.n if family.n else 0.0
