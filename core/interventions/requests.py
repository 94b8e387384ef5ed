"""What the dashboard asks of the interventions: typed requests, read from the Steer page's text inputs,
checked before anything runs, and their results cached in the artifact store under a key made from the
request (docs/INTERVENTIONS.md, "In the dashboard").

    request = steering_request(model, sae, prompt=..., features="12:4, 87:-2", scales="0.5, 1, 2", ...)
    key = request_key(model, request, sae_id=..., harvest_key=...)   # content key: same request, same key
    result = load_result(store, key, SteeringResult)                 # None when not stored (or unreadable)
    result = run_request(store, key, request, model, sae, stats=..., progress=...)

A request is a `core.jsonable.Result`: the Steer page keeps its inputs in session state (app/registry.py)
and rebuilds the request from them, so a reopened session finds its results in the store (or in a bundle's
namespace) without running anything. Bad input (an empty prompt, an unknown feature, a target that is not
one token, prompts of different length) is an InterventionError raised here, before any forward pass.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from core.interventions.ablation import AblationResult, ablate, feature_means
from core.interventions.common import InterventionError, ProgressFn, check_features, prompt_tokens, token_id
from core.interventions.patching import PATCH_COMPONENTS, PatchingResult, patch_activations
from core.interventions.steering import SteeringResult, clamp, steer
from core.jsonable import Result, ResultFormatError

# 1: first version of the dashboard's requests
REQUEST_VERSION = "intervention-request-1"
MAX_FEATURES = 16
MAX_SCALES = 8
MAX_NEW_TOKENS = 64
SteerMode = Literal["add", "clamp"]
AblationMode = Literal["zero", "mean"]
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


@dataclass(frozen=True, eq=False)
class SteerRequest(Result):
    prompt: str
    hook_name: str
    features: tuple[tuple[int, float], ...]  # (feature, strength)
    mode: SteerMode = "add"
    scales: tuple[float, ...] = (1.0,)
    relative: bool = False                   # strengths x the feature's max activation in the harvest
    from_position: int = 0                   # 0 = every position
    max_new_tokens: int = 20
    temperature: float = 0.0                 # 0 = greedy
    seed: int = 0


@dataclass(frozen=True, eq=False)
class AblationRequest(Result):
    prompt: str
    hook_name: str
    features: tuple[int, ...]
    mode: AblationMode = "zero"
    target: str = ""                         # a token whose logit change is reported ("" = none)
    top_k: int = 10


@dataclass(frozen=True, eq=False)
class PatchRequest(Result):
    clean_prompt: str
    corrupted_prompt: str
    correct: str
    wrong: str
    components: tuple[str, ...] = tuple(PATCH_COMPONENTS)


Request = SteerRequest | AblationRequest | PatchRequest
RESULT_TYPES: dict[type, type[Result]] = {SteerRequest: SteeringResult, AblationRequest: AblationResult,
                                  PatchRequest: PatchingResult}
KINDS = {SteerRequest: "steering", AblationRequest: "ablation", PatchRequest: "patching"}


# ---- reading the page's text inputs ----------------------------------------------------------------------
def parse_feature_strengths(text: str, d_sae: int, *, default_strength: float = 1.0) -> tuple[tuple[int, float], ...]:
    """'12:4, 87:-2.5' (feature:strength, or a bare feature at `default_strength`) -> ((12, 4.0), (87, -2.5))."""
    pairs = []
    for item in _items(text, "feature"):
        feature, _, strength = item.partition(":")
        pairs.append((_feature_id(feature), _float(strength, f"strength of {item!r}") if strength.strip()
                      else float(default_strength)))
    if len(pairs) > MAX_FEATURES:
        raise InterventionError(f"At most {MAX_FEATURES} features at once; {len(pairs)} were given.")
    check_features([f for f, _ in pairs], d_sae)
    return tuple(pairs)


def parse_features(text: str, d_sae: int) -> tuple[int, ...]:
    """'12, 87' -> (12, 87), each a feature of the SAE (0..d_sae-1), no repeats."""
    ids = [_feature_id(item) for item in _items(text, "feature")]
    if len(ids) > MAX_FEATURES:
        raise InterventionError(f"At most {MAX_FEATURES} features at once; {len(ids)} were given.")
    return tuple(check_features(ids, d_sae))


def parse_scales(text: str) -> tuple[float, ...]:
    """'0.5, 1, 2' -> (0.5, 1.0, 2.0): the sweep, one steered completion per scale."""
    scales = tuple(_float(item, "scale") for item in _items(text, "scale"))
    if len(scales) > MAX_SCALES:
        raise InterventionError(f"At most {MAX_SCALES} scales in a sweep; {len(scales)} were given.")
    if len(set(scales)) != len(scales):
        raise InterventionError("A scale is listed twice in the sweep.")
    return scales


def _items(text: str, what: str) -> list[str]:
    text = re.sub(r"\s*:\s*", ":", str(text or ""))          # '12 : 4' reads as '12:4'
    items = [t for t in re.split(r"[,;\s]+", text) if t]
    if not items:
        raise InterventionError(f"Name at least one {what} (e.g. {'12:4, 87:-2' if what == 'feature' else '0.5, 1, 2'}).")
    return items


def _feature_id(text: str) -> int:
    text = text.strip().lstrip("#")
    if not text.isdigit():
        raise InterventionError(f"{text!r} is not a feature id (a whole number such as 12).")
    return int(text)


def _float(text: str, what: str) -> float:
    text = text.strip()
    if not re.fullmatch(_NUMBER, text) or not np.isfinite(float(text)):
        raise InterventionError(f"The {what} {text!r} is not a number.")
    return float(text)


def _prompt(model: Any, text: str, what: str = "prompt") -> int:
    """The prompt's token count (BOS included); an InterventionError for an empty or too long prompt."""
    if not str(text or "").strip():
        raise InterventionError(f"The {what} is empty: type some text.")
    return int(prompt_tokens(model, text).shape[1])


# ---- building requests (every check that needs no forward pass) ------------------------------------------
def steering_request(model: Any, sae: Any, *, prompt: str, features: str, scales: str = "1", mode: str = "add",
                     relative: bool = False, from_position: int = 0, max_new_tokens: int = 20,
                     temperature: float = 0.0, seed: int = 0) -> SteerRequest:
    n_tokens = _prompt(model, prompt)
    if not 0 <= int(from_position) < n_tokens:
        raise InterventionError(f"'From position' must be 0..{n_tokens - 1} (the prompt has {n_tokens} tokens, "
                                "BOS included); 0 steers every position.")
    if mode not in ("add", "clamp"):
        raise InterventionError(f"Unknown steering mode {mode!r}; choose add or clamp.")
    if not 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS:
        raise InterventionError(f"Generate 1..{MAX_NEW_TOKENS} new tokens, not {max_new_tokens}.")
    if not 0.0 <= float(temperature) <= 5.0:
        raise InterventionError(f"The temperature must be in 0..5 (0 = greedy), not {temperature}.")
    return SteerRequest(prompt=prompt, hook_name=sae.hook_name, features=parse_feature_strengths(features, int(sae.d_sae)),
                        mode=mode, scales=parse_scales(scales), relative=bool(relative),  # type: ignore[arg-type]
                        from_position=int(from_position), max_new_tokens=int(max_new_tokens),
                        temperature=float(temperature), seed=int(seed))


def ablation_request(model: Any, sae: Any, *, prompt: str, features: str, mode: str = "zero",
                     target: str = "") -> AblationRequest:
    _prompt(model, prompt)
    if mode not in ("zero", "mean"):
        raise InterventionError(f"Unknown ablation mode {mode!r}; choose zero or mean.")
    if target:
        token_id(model, target, "token to follow")
    return AblationRequest(prompt=prompt, hook_name=sae.hook_name, features=parse_features(features, int(sae.d_sae)),
                           mode=mode, target=target)  # type: ignore[arg-type]


def patch_request(model: Any, *, clean_prompt: str, corrupted_prompt: str, correct: str, wrong: str) -> PatchRequest:
    n_clean = _prompt(model, clean_prompt, "clean prompt")
    n_corrupted = _prompt(model, corrupted_prompt, "corrupted prompt")
    if n_clean != n_corrupted:
        raise InterventionError(
            f"The clean prompt is {n_clean} tokens and the corrupted prompt {n_corrupted} (BOS included); "
            "patching position by position needs the same length. Reword one of them.")
    if not correct or not wrong:
        raise InterventionError("Name the correct and the wrong answer token (one token each).")
    if token_id(model, correct, "correct answer") == token_id(model, wrong, "wrong answer"):
        raise InterventionError("The correct and the wrong answer are the same token; the logit difference would be 0.")
    return PatchRequest(clean_prompt=clean_prompt, corrupted_prompt=corrupted_prompt, correct=correct, wrong=wrong)


def needs_harvest(request: Request) -> bool:
    """Whether the request reads the harvest's statistics (max activations, mean activations)."""
    return (isinstance(request, SteerRequest) and request.relative) or (
        isinstance(request, AblationRequest) and request.mode == "mean")


# ---- keys, cache, running -----------------------------------------------------------------------------
def request_key(model: Any, request: Request, *, sae_id: str | None = None, harvest_key: str | None = None) -> str:
    """The artifact key of a request's result: the model's identity, the SAE's (its decoder fingerprint,
    `sae_id`), the request, and the harvest's key when the request reads the harvest."""
    from core.analysis.keys import model_identity
    from core.store import artifact_key

    if needs_harvest(request) and not harvest_key:
        raise InterventionError("This needs the harvest's statistics (max or mean activations): open the Features "
                                "page once to harvest, or use raw strengths / zero ablation.")
    return artifact_key(kind=f"intervention:{KINDS[type(request)]}", version=REQUEST_VERSION,
                        model=model_identity(model), sae=sae_id if not isinstance(request, PatchRequest) else None,
                        request=request.to_dict(), harvest=harvest_key if needs_harvest(request) else None)


def load_result(store: Any, key: str, kind: type[Result]) -> Any | None:
    """The stored result under `key` (an ArtifactStore or a StoreView), or None when absent or unreadable."""
    if store is None:
        return None
    artifact = store.load(key)
    if artifact is None or "result" not in artifact.meta:
        return None
    try:
        return kind.from_dict(artifact.meta["result"])
    except (InterventionError, ResultFormatError, TypeError, ValueError):
        return None   # written by other code: computed afresh


def compute(request: Request, model: Any, sae: Any = None, *, stats: Any = None,
            progress: ProgressFn | None = None) -> Any:
    """Run the request (no cache). `stats`: the SAE's harvest statistics (SAEResult) when `needs_harvest`."""
    if needs_harvest(request) and stats is None:
        raise InterventionError("This needs the harvest's statistics: open the Features page once to harvest.")
    if isinstance(request, SteerRequest):
        run = steer if request.mode == "add" else clamp
        return run(model, sae, request.prompt, list(request.features), scales=request.scales,
                   from_position=request.from_position or None, max_new_tokens=request.max_new_tokens,
                   temperature=request.temperature, seed=request.seed,
                   max_activations=np.asarray(stats.max_act) if request.relative else None, progress=progress)
    if isinstance(request, AblationRequest):
        return ablate(model, sae, request.prompt, list(request.features), mode=request.mode,
                      mean_activations=feature_means(stats) if request.mode == "mean" else None,
                      target=request.target or None, top_k=request.top_k)
    return patch_activations(model, request.clean_prompt, request.corrupted_prompt, correct=request.correct,
                             wrong=request.wrong, components=request.components, progress=progress)


def run_request(store: Any, key: str, request: Request, model: Any, sae: Any = None, *, stats: Any = None,
                progress: ProgressFn | None = None) -> Any:
    """The stored result under `key`, else the request computed and saved there (meta only: JSON)."""
    kind = RESULT_TYPES[type(request)]
    stored = load_result(store, key, kind)
    if stored is not None:
        return stored
    result = compute(request, model, sae, stats=stats, progress=progress)
    if store is not None:
        store.save(key, {}, {"kind": f"intervention:{KINDS[type(request)]}", "request": request.to_dict(),
                             "result": result.to_dict()})
    return kind.from_dict(result.to_dict())   # what a reader of the store gets (NaN, floats) either way


def patching_note(result: PatchingResult, *, min_gap: float = 0.5) -> str | None:
    """A warning when LD_clean - LD_corrupted is small: every score divides by it, so they are noise-sized."""
    gap = result.ld_clean - result.ld_corrupted
    if abs(gap) >= min_gap:
        return None
    return (f"The clean and the corrupted prompt give almost the same logit difference ({result.ld_clean:.3f} vs "
            f"{result.ld_corrupted:.3f}); every score is divided by that gap ({gap:+.3g}), so the map shows noise "
            "scaled up. Choose prompts on which the model prefers different answers.")


# ---- "what does this feature do?" (the Features and Probe pages' action) ----------------------------------
EFFECT_SCALES = (-2.0, 2.0, 6.0)
EFFECT_NEW_TOKENS = 12


def feature_effect_requests(model: Any, sae: Any, feature: int, prompt: str, *, relative: bool,
                            strength: float = 1.0) -> tuple[AblationRequest, SteerRequest]:
    """The two requests behind "What does this feature do?": zero-ablate `feature` on `prompt`, and a small
    steering sweep (EFFECT_SCALES x strength; strength x the max activation when `relative`) from it.
    They are ordinary Steer page requests, so that page opens on them and finds their results stored."""
    ablation = ablation_request(model, sae, prompt=prompt, features=str(int(feature)))
    steering = steering_request(model, sae, prompt=prompt, features=f"{int(feature)}:{float(strength):g}",
                                scales=", ".join(f"{s:g}" for s in EFFECT_SCALES), relative=relative,
                                max_new_tokens=EFFECT_NEW_TOKENS)
    return ablation, steering


def context_prompt(model: Any, window: Any, center: int) -> str:
    """A harvested context as a prompt that ends on the token where the feature fired: the window's tokens
    (ids, -1 outside the text) up to and including `center`, from after the last BOS before it (a packed
    corpus joins documents with BOS: the prompt keeps the document the feature fired in, and gets its own BOS)."""
    ids = [int(t) for t in np.asarray(window)[: int(center) + 1] if int(t) >= 0]
    if model.bos_token_id is not None and model.bos_token_id in ids:
        ids = ids[len(ids) - ids[::-1].index(model.bos_token_id):]
    if not ids:
        raise InterventionError("This feature has no harvested context to test on.")
    return model.to_string(ids).strip()
