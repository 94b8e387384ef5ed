"""Feature ablation through the SAE (METHODS.md section 10) and its effect on the next token.

At the SAE's own hook, for every position from `from_position` on (default: all):

    z = encode(x);  z'_i = 0 (zero ablation) or mean_i (mean ablation) for the chosen features;
    x <- x + decode(z') - decode(z)            # the SAE's error term x - decode(z) is kept

mean_i is the feature's mean activation over the harvest's tokens, SAEResult.l1_mass / n_tokens
(`feature_means`). The result compares the next-token distribution at the last position, clean (p)
against ablated (q): KL(p || q) in nats, the tokens whose probability rose and fell most, and the
change in logit and probability of a token the user names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.interventions.common import (
    InterventionError,
    check_features,
    prompt_tokens,
    token_id,
    token_text,
)
from core.interventions.generation import check_start, clamp_edit
from core.interventions.hooks import forward_logits
from core.jsonable import Result

ABLATION_MODES = ("zero", "mean")


@dataclass(frozen=True, eq=False)
class TokenShift(Result):
    token: str
    token_id: int
    prob_before: float
    prob_after: float
    logit_before: float
    logit_after: float

    @property
    def prob_change(self) -> float:
        return self.prob_after - self.prob_before

    @property
    def logit_change(self) -> float:
        return self.logit_after - self.logit_before


@dataclass(frozen=True, eq=False)
class AblationResult(Result):
    prompt: str
    prompt_tokens: list[str]
    site: str
    mode: str  # "zero" | "mean"
    features: list[int]
    values: list[float]  # what each feature was set to (0, or its harvest mean)
    activations: list[float]  # each feature's activation at the last position before the ablation
    from_position: int  # first ablated position (0 = every position)
    kl_divergence: float  # KL(clean || ablated) of the next-token distribution at the last position, nats
    rose: list[TokenShift]  # largest probability increases, largest first
    fell: list[TokenShift]  # largest probability decreases, largest first
    top_clean: list[TokenShift]  # the clean top tokens, with their ablated probabilities
    target: TokenShift | None  # the token the user named


def feature_means(sae_result: Any) -> np.ndarray:
    """Mean activation of every feature over the harvest's tokens: l1_mass / n_tokens (SAEResult)."""
    n = int(sae_result.n_tokens)
    if n <= 0:
        raise InterventionError("The harvest saw no tokens, so it has no mean activations; run a harvest first.")
    return np.asarray(sae_result.l1_mass, dtype=np.float64) / n


def _shift(model: Any, i: int, p: torch.Tensor, q: torch.Tensor, lp: torch.Tensor, lq: torch.Tensor) -> TokenShift:
    return TokenShift(token=token_text(model, i), token_id=int(i), prob_before=float(p[i]), prob_after=float(q[i]),
                      logit_before=float(lp[i]), logit_after=float(lq[i]))


def ablate(model: Any, sae: Any, prompt: str, features: Sequence[int], *, mode: str = "zero",
           mean_activations: Any = None, target: str | int | None = None, top_k: int = 10,
           from_position: int | None = None) -> AblationResult:
    """Zero- or mean-ablate `features` of `sae` on `prompt`; the change in the next-token distribution.

    mean_activations: one value per feature (`feature_means(harvest.saes[hook])`), needed for mode "mean".
    target: a token (its text, exactly one token, or its id) whose logit and probability change is reported.
    """
    if mode not in ABLATION_MODES:
        raise InterventionError(f"Unknown ablation mode {mode!r}; choose {' or '.join(ABLATION_MODES)}.")
    feats = check_features(list(features), int(sae.d_sae))
    if sae.hook_name not in model.hook_names():
        raise InterventionError(f"The SAE's site {sae.hook_name!r} is not a block site of the model.")
    if mode == "mean":
        if mean_activations is None:
            raise InterventionError("Mean ablation needs the features' mean activations (from a harvest: feature_means).")
        means = np.asarray(mean_activations, dtype=np.float64).ravel()
        if means.shape[0] != int(sae.d_sae) or not np.all(np.isfinite(means)):
            raise InterventionError(f"mean_activations needs one finite value per feature ({sae.d_sae}).")
        values = [float(means[f]) for f in feats]
    else:
        values = [0.0] * len(feats)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InterventionError(f"top_k must be a positive whole number, not {top_k!r}.")
    target_id = None if target is None or target == "" else token_id(model, target, "target token")
    tokens = prompt_tokens(model, prompt)
    start = check_start(from_position, int(tokens.shape[1]) - 1)
    captured: dict[str, torch.Tensor] = {}
    edit = clamp_edit(sae, feats, torch.tensor([[0.0] * len(feats), values]), start)

    def hook(act: torch.Tensor, hook: Any) -> torch.Tensor:
        captured["x"] = act[0, -1].detach().clone()
        return edit(act)

    logits = forward_logits(model, tokens.repeat(2, 1), [(sae.hook_name, hook)])[:, -1].double().cpu()
    activations = sae.encode(captured["x"][None])[0, feats].double().cpu().tolist()
    lp, lq = logits[0], logits[1]
    logp, logq = torch.log_softmax(lp, -1), torch.log_softmax(lq, -1)
    p, q = logp.exp(), logq.exp()
    kl = float((p * (logp - logq)).sum().clamp_min(0.0))
    change = q - p
    k = min(top_k, change.shape[0])
    up = [int(i) for i in torch.topk(change, k).indices if change[i] > 0]
    down = [int(i) for i in torch.topk(-change, k).indices if change[i] < 0]
    return AblationResult(
        prompt=prompt, prompt_tokens=model.to_str_tokens(tokens[0]), site=sae.hook_name, mode=mode, features=feats,
        values=values, activations=[float(a) for a in activations], from_position=start, kl_divergence=kl,
        rose=[_shift(model, i, p, q, lp, lq) for i in up], fell=[_shift(model, i, p, q, lp, lq) for i in down],
        top_clean=[_shift(model, int(i), p, q, lp, lq) for i in torch.topk(p, k).indices],
        target=None if target_id is None else _shift(model, target_id, p, q, lp, lq))
