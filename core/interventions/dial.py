"""The circle dial (issue 14 item 6): turn one prompt's answer position k steps along a cyclic concept's
fitted circle and read the model's answer before and after, beside the control.

    fits = cycle_fits_from_ground_truth(model, ground_truth, "months")    # one CycleFit per resid_post
    dial = circle_dial(model, strongest_fit(fits), "one month after january is", 3)
    dial.turn.answer_after; dial.top_after[0].token; dial.control_answer

The turn is core.interventions.turn_on_circle (the best frequency's plane; fractional steps turn part of
the way). The control moves the same position by the same norm in a random 2-D plane (x's component
there rotated by the same angle, the change rescaled to the turn's norm: `random_plane_delta`, as in
`rotation_experiment`), so a new answer that the turn gives and the control does not is the circle's doing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.interventions.circles import (
    CircleTurn,
    CycleFit,
    fit_cycles,
    last_position_activations,
    last_position_edit,
    random_plane_delta,
    rotation_delta,
    turn_on_circle,
)
from core.interventions.common import InterventionError, prompt_tokens, token_id
from core.interventions.hooks import forward_logits
from core.jsonable import Result

# ground_truth["cyclic"] concept -> the eval_facts family whose answers are its items
CYCLE_FAMILIES = {"months": "month_arith", "weekdays": "weekday_arith"}


@dataclass(frozen=True, eq=False)
class TokenProb(Result):
    token: str
    probability: float


@dataclass(frozen=True, eq=False)
class CircleDial(Result):
    turn: CircleTurn  # answers and item probabilities before and after the turn
    control_answer: str  # argmax with the same-norm random-plane change instead
    control_item_probs: list[float]
    change_norm: float  # ||x' - x|| of the turn (the control's too)
    resid_norm: float  # ||x|| at the site and position, for scale
    expected_answer: str  # the clean answer's item moved by `steps` ("" when the clean answer is not an item
    #                       or the steps are fractional)
    top_before: list[TokenProb]
    top_after: list[TokenProb]
    top_control: list[TokenProb]
    seed: int

    @property
    def moved_as_expected(self) -> bool:
        return bool(self.expected_answer) and self.turn.answer_after == self.expected_answer


def cycle_fits_from_ground_truth(model: Any, ground_truth: Mapping[str, Any], concept: str,
                                 sites: Sequence[str] | None = None) -> list[CycleFit]:
    """The concept's cycle fitted at `sites` (default: every block's resid_post) from the answer position
    of the training cyclic-arithmetic facts of an organism's ground truth."""
    if concept not in CYCLE_FAMILIES:
        raise InterventionError(f"No dial for {concept!r}: the cyclic concepts are {sorted(CYCLE_FAMILIES)}.")
    words = list((ground_truth.get("cyclic") or {}).get(concept) or [])
    facts = cycle_facts(ground_truth, concept, "train")
    if not words or not facts:
        raise InterventionError(f"The ground truth has no {concept} items or training facts to fit the circle on.")
    sites = list(sites) if sites is not None else [f"blocks.{layer}.hook_resid_post" for layer in range(model.n_layers)]
    return fit_cycles(model, facts, words, sites=sites)


def cycle_facts(ground_truth: Mapping[str, Any], concept: str, split: str) -> list[tuple[str, str]]:
    """(prompt, answer) facts of the concept's arithmetic family in `split` ("train" | "held_out")."""
    family = CYCLE_FAMILIES.get(concept, "")
    facts = ((ground_truth.get("eval_facts") or {}).get(split) or {}).get(family) or []
    return [(str(p), str(a)) for p, a in facts]


def strongest_fit(fits: Sequence[CycleFit]) -> CycleFit:
    """The fit whose best frequency holds the largest share of the item means' variance."""
    if not fits:
        raise InterventionError("No circle was fitted.")
    return max(fits, key=lambda f: f.best_share)


def circle_dial(model: Any, fit: CycleFit, prompt: str, steps: float, *, top_k: int = 5, seed: int = 0) -> CircleDial:
    """Turn the prompt's last position by `steps` items on `fit`'s circle, and by the same norm in a random
    plane (seeded); the answers, item probabilities and top-k next tokens of all three."""
    if not 1 <= int(top_k) <= 50:
        raise InterventionError("Show between 1 and 50 top tokens.")
    turn = turn_on_circle(model, fit, prompt, steps)
    acts, _ = last_position_activations(model, [prompt], [fit.site])
    x = acts[fit.site]
    delta = rotation_delta(fit, x, steps)
    norm = float(np.linalg.norm(delta))
    angle = 2 * np.pi * fit.best_frequency * float(steps) / fit.k
    control = random_plane_delta(x, np.array([angle]), np.array([norm]), np.random.default_rng(seed))
    deltas = torch.tensor(np.concatenate([np.zeros_like(delta), delta, control]), dtype=torch.float32)
    tokens = prompt_tokens(model, prompt).repeat(3, 1)
    logits = forward_logits(model, tokens, [(fit.site, last_position_edit(deltas))])[:, -1].double()
    probs = torch.softmax(logits, -1).cpu()
    ids = [token_id(model, w, "cycle item") for w in fit.words]
    tops = [_top(model, probs[row], top_k) for row in range(3)]
    return CircleDial(turn=turn, control_answer=model.to_str_tokens([int(probs[2].argmax())])[0],
                      control_item_probs=probs[2, ids].tolist(), change_norm=norm,
                      resid_norm=float(np.linalg.norm(x)), expected_answer=_expected(fit, turn),
                      top_before=tops[0], top_after=tops[1], top_control=tops[2], seed=int(seed))


def _top(model: Any, probs: torch.Tensor, k: int) -> list[TokenProb]:
    values, ids = probs.topk(min(int(k), probs.shape[-1]))
    words = model.to_str_tokens([int(i) for i in ids])
    return [TokenProb(token=w, probability=float(v)) for w, v in zip(words, values)]


def _expected(fit: CycleFit, turn: CircleTurn) -> str:
    if turn.answer_before not in fit.words or not float(turn.steps).is_integer():
        return ""
    return fit.words[(fit.words.index(turn.answer_before) + int(turn.steps)) % fit.k]
