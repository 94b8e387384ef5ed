"""Interventions (issue 14): steer with a feature, ablate it, patch activations, turn a concept's circle.

Every intervention goes through one hook mechanism, `intervene(model, hooks)` (hooks.py): TransformerLens
hooks added under the model's lock and removed however the block is left. Results are
`core.jsonable.Result` dataclasses with `to_dict` / `from_dict` (plain JSON). Definitions and measured numbers:
docs/INTERVENTIONS.md.
"""

from core.interventions.ablation import ABLATION_MODES, AblationResult, TokenShift, ablate, feature_means
from core.interventions.circles import (
    ROTATION_METHODS,
    CircleTurn,
    CycleFit,
    RotationExperiment,
    RotationOutcome,
    fit_cycle,
    fit_cycles,
    rotation_delta,
    rotation_experiment,
    turn_on_circle,
)
from core.interventions.common import InterventionError, ProgressFn
from core.interventions.hooks import active_hook_count, forward_logits, intervene
from core.interventions.linear import (
    ErasureExperiment,
    FamilyOutcome,
    ProbeDirection,
    ShiftExperiment,
    ShiftOutcome,
    erasure_experiment,
    fit_probe_direction,
    shift_experiment,
)
from core.interventions.patching import PATCH_COMPONENTS, PatchingResult, patch_activations
from core.interventions.steering import Completion, SteeringFeature, SteeringResult, clamp, steer, steer_vector
from core.jsonable import Result

__all__ = [
    "ABLATION_MODES",
    "PATCH_COMPONENTS",
    "ROTATION_METHODS",
    "AblationResult",
    "CircleTurn",
    "Completion",
    "CycleFit",
    "ErasureExperiment",
    "FamilyOutcome",
    "InterventionError",
    "PatchingResult",
    "ProbeDirection",
    "ProgressFn",
    "Result",
    "RotationExperiment",
    "RotationOutcome",
    "ShiftExperiment",
    "ShiftOutcome",
    "SteeringFeature",
    "SteeringResult",
    "TokenShift",
    "ablate",
    "active_hook_count",
    "clamp",
    "erasure_experiment",
    "feature_means",
    "fit_cycle",
    "fit_cycles",
    "fit_probe_direction",
    "forward_logits",
    "intervene",
    "patch_activations",
    "rotation_delta",
    "rotation_experiment",
    "shift_experiment",
    "steer",
    "steer_vector",
    "turn_on_circle",
]
