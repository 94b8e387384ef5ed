"""Feature steering and clamping (METHODS.md section 10), side by side with the unsteered completion.

- `steer`: add SAE decoder directions at a site, x <- x + sum_i c_i * W_dec[i] (Templeton et al. 2024;
  Neuronpedia's steering), at every position or from a chosen position on. c_i is the feature's
  strength, or strength x the feature's max activation over the harvest when `max_activations` is
  given (so 1.0 means "as strongly as the feature ever fires").
- `clamp`: through the SAE at its own site: z = encode(x), z'_i = value, x <- x + decode(z') - decode(z);
  the error term x - decode(z) stays, so only the clamped features change.
- `steer_vector`: add any direction (a probe's, a circle's) at a site.

Every call generates the unsteered completion and one steered completion per entry of `scales` (a
sweep: each strength or clamp value times the scale) in one batch; greedy at temperature 0, else
seeded sampling with noise shared by every row (core.interventions.generation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.interventions.common import (
    InterventionError,
    ProgressFn,
    check_features,
    check_site,
    prompt_tokens,
)
from core.interventions.generation import additive_edit, check_start, clamp_edit, generate_rows
from core.jsonable import Result


@dataclass(frozen=True, eq=False)
class SteeringFeature(Result):
    feature: int
    strength: float  # steer: the coefficient c (times the max activation when scaled); clamp: the value z_i is set to


@dataclass(frozen=True, eq=False)
class Completion(Result):
    scale: float  # multiplier of every strength in this row (0.0 for the unsteered completion)
    text: str  # the generated text only (the prompt not repeated)
    tokens: list[str]
    token_ids: list[int]


@dataclass(frozen=True, eq=False)
class SteeringResult(Result):
    mode: str  # "add" (steer) | "clamp" | "vector" (steer_vector)
    prompt: str
    prompt_tokens: list[str]
    site: str
    features: list[SteeringFeature]  # empty for "vector"
    coefficients: list[float]  # per feature what scale 1.0 adds / clamps to (after max-activation scaling)
    scaled_by_max_activation: bool
    vector_norm: float | None  # norm of what scale 1.0 adds at one position ("add", "vector"); None for "clamp"
    from_position: int  # first edited position (0 = every position; BOS counts as 0)
    max_new_tokens: int
    temperature: float  # 0.0 = greedy
    seed: int
    unsteered: Completion
    steered: list[Completion]  # one per scale of the sweep, in the order given

    def completion(self, scale: float) -> Completion:
        for row in self.steered:
            if row.scale == scale:
                return row
        raise KeyError(f"no completion at scale {scale}; the sweep has {[r.scale for r in self.steered]}")


def _features(features: Sequence[SteeringFeature | tuple[int, float]], d_sae: int) -> list[SteeringFeature]:
    out = []
    for item in features:
        if isinstance(item, SteeringFeature):
            out.append(item)
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            out.append(SteeringFeature(feature=item[0], strength=item[1]))
        else:
            raise InterventionError(f"Give each feature as SteeringFeature(feature, strength) or (feature, strength), not {item!r}.")
    ids = check_features([f.feature for f in out], d_sae)
    return [SteeringFeature(feature=i, strength=_number(f.strength, "strength")) for i, f in zip(ids, out)]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not np.isfinite(value):
        raise InterventionError(f"The {what} must be a finite number, not {value!r}.")
    return float(value)


def _scales(scales: Sequence[float]) -> list[float]:
    out = [_number(s, "scale") for s in scales]
    if not out:
        raise InterventionError("Give at least one scale (1.0 steers at the strengths as given).")
    return out


def _coefficients(features: list[SteeringFeature], max_activations: Any, d_sae: int) -> list[float]:
    if max_activations is None:
        return [f.strength for f in features]
    peaks = np.asarray(max_activations, dtype=np.float64).ravel()
    if peaks.shape[0] != d_sae:
        raise InterventionError(f"max_activations needs one value per feature ({d_sae}); got {peaks.shape[0]}.")
    out = []
    for f in features:
        if not peaks[f.feature] > 0:
            raise InterventionError(f"Feature {f.feature} never fired in the harvest (max activation 0), so a strength "
                                    "relative to it means nothing; steer with a raw strength instead.")
        out.append(f.strength * float(peaks[f.feature]))
    return out


def _check_sae_site(model: Any, sae: Any, site: str) -> str:
    if site not in model.hook_names():
        raise InterventionError(f"Steering works on the block sites ({', '.join(sorted({n.split('.', 2)[2] for n in model.hook_names()}))}); "
                                f"{site!r} is not one of them.")
    if int(sae.d_in) != int(model.d_model):
        raise InterventionError(f"The SAE reads vectors of width {sae.d_in}; the model's width is {model.d_model}.")
    return check_site(model, site)


def _completion(model: Any, scale: float, ids: list[int]) -> Completion:
    return Completion(scale=scale, text=model.to_string(ids) if ids else "", tokens=model.to_str_tokens(ids),
                      token_ids=[int(i) for i in ids])


def _result(model: Any, mode: str, prompt: str, tokens: torch.Tensor, site: str, features: list[SteeringFeature],
            coefficients: list[float], scaled: bool, norm: float | None, start: int, scales: list[float],
            rows: list[list[int]], max_new_tokens: int, temperature: float, seed: int) -> SteeringResult:
    return SteeringResult(
        mode=mode, prompt=prompt, prompt_tokens=model.to_str_tokens(tokens[0]), site=site, features=features,
        coefficients=coefficients, scaled_by_max_activation=scaled, vector_norm=norm, from_position=start,
        max_new_tokens=max_new_tokens, temperature=float(temperature), seed=int(seed),
        unsteered=_completion(model, 0.0, rows[0]),
        steered=[_completion(model, s, r) for s, r in zip(scales, rows[1:])])


def steer(model: Any, sae: Any, prompt: str, features: Sequence[SteeringFeature | tuple[int, float]], *,
          scales: Sequence[float] = (1.0,), site: str | None = None, from_position: int | None = None,
          max_new_tokens: int = 20, temperature: float = 0.0, seed: int = 0,
          max_activations: Any = None, progress: ProgressFn | None = None) -> SteeringResult:
    """Generate from `prompt` with x <- x + scale * sum_i c_i W_dec[i] at `site` (default: the SAE's own hook).

    features: (feature, strength) pairs; c_i = strength, or strength x max_activations[feature] when
    `max_activations` (the harvest's SAEResult.max_act) is given. scales: the sweep (one completion each).
    from_position: first position edited (None = every position, BOS included).
    """
    feats = _features(features, int(sae.d_sae))
    site = _check_sae_site(model, sae, site or sae.hook_name)
    coefficients = _coefficients(feats, max_activations, int(sae.d_sae))
    scale_list = _scales(scales)
    W = sae.W_dec[torch.as_tensor([f.feature for f in feats])].double()
    vector = (torch.as_tensor(coefficients, dtype=torch.float64)[:, None] * W).sum(0)
    return _run_additive(model, "add", prompt, site, vector, feats, coefficients, max_activations is not None,
                         scale_list, from_position, max_new_tokens, temperature, seed, progress)


def steer_vector(model: Any, prompt: str, vector: Any, *, site: str, scales: Sequence[float] = (1.0,),
                 from_position: int | None = None, max_new_tokens: int = 20, temperature: float = 0.0, seed: int = 0,
                 progress: ProgressFn | None = None) -> SteeringResult:
    """Generate from `prompt` with x <- x + scale * vector at `site` (any d_model-wide block site)."""
    v = torch.as_tensor(np.asarray(vector, dtype=np.float64)).ravel()
    if not torch.isfinite(v).all():
        raise InterventionError("The steering vector holds NaN or infinite values.")
    check_site(model, site, d=int(v.shape[0]))
    if site not in model.hook_names():
        raise InterventionError(f"Steering works on the block sites; {site!r} is not one of them.")
    return _run_additive(model, "vector", prompt, site, v, [], [], False, _scales(scales), from_position,
                         max_new_tokens, temperature, seed, progress)


def _run_additive(model: Any, mode: str, prompt: str, site: str, vector: torch.Tensor, feats: list[SteeringFeature],
                  coefficients: list[float], scaled: bool, scales: list[float], from_position: int | None,
                  max_new_tokens: int, temperature: float, seed: int, progress: ProgressFn | None) -> SteeringResult:
    tokens = prompt_tokens(model, prompt)
    start = check_start(from_position, int(tokens.shape[1]))
    deltas = torch.stack([torch.zeros_like(vector)] + [s * vector for s in scales]).float()
    rows = generate_rows(model, tokens, len(scales) + 1, site, additive_edit(deltas, start),
                         max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, progress=progress)
    return _result(model, mode, prompt, tokens, site, feats, coefficients, scaled, float(vector.norm()), start,
                   scales, rows, max_new_tokens, temperature, seed)


def clamp(model: Any, sae: Any, prompt: str, features: Sequence[SteeringFeature | tuple[int, float]], *,
          scales: Sequence[float] = (1.0,), from_position: int | None = None, max_new_tokens: int = 20,
          temperature: float = 0.0, seed: int = 0, max_activations: Any = None,
          progress: ProgressFn | None = None) -> SteeringResult:
    """Generate from `prompt` with each feature clamped to scale x its value (x max activation when
    `max_activations` is given) through the SAE at its own hook, the SAE error term kept."""
    feats = _features(features, int(sae.d_sae))
    site = _check_sae_site(model, sae, sae.hook_name)
    values = _coefficients(feats, max_activations, int(sae.d_sae))
    scale_list = _scales(scales)
    tokens = prompt_tokens(model, prompt)
    start = check_start(from_position, int(tokens.shape[1]))
    table = torch.tensor([[0.0] * len(values)] + [[s * v for v in values] for s in scale_list])
    rows = generate_rows(model, tokens, len(scale_list) + 1, site, clamp_edit(sae, [f.feature for f in feats], table, start),
                         max_new_tokens=max_new_tokens, temperature=temperature, seed=seed, progress=progress)
    return _result(model, "clamp", prompt, tokens, site, feats, values, max_activations is not None, None,
                   start, scale_list, rows, max_new_tokens, temperature, seed)
