"""Shared pieces of the interventions: the error type, prompt and answer tokens, feature and site checks,
and the progress callback.

Results are `core.jsonable.Result` dataclasses like every other result (frozen, eq=False): `to_dict()` is
plain JSON, `from_dict(to_dict())` gives an equal object back, and `from_dict` validates what it reads
(sessions and bundles come from users): an unknown or missing field, or a value of the wrong kind, is a
ResultFormatError naming the field.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from core.errors import AtlasError

# progress(done, total, seconds_left): the same signature as core.harvest's ProgressFn
ProgressFn = Callable[[int, int, float], None]


class InterventionError(AtlasError):
    """An intervention that cannot run as asked (bad feature, token, position, prompt pair, ...)."""


# ---- tokens ------------------------------------------------------------------------------------
def prompt_tokens(model: Any, prompt: str) -> torch.Tensor:
    """[1, pos] tokens of a prompt (BOS first when the model has one); an error when it does not fit."""
    tokenized = model.tokenize_prompt(prompt)  # PromptError on an empty prompt
    if tokenized.n_truncated:
        raise InterventionError(
            f"The prompt is {tokenized.tokens.shape[1] + tokenized.n_truncated} tokens long; the model's "
            f"context is {model.n_ctx}. Shorten the prompt.")
    return tokenized.tokens


def token_id(model: Any, token: str | int, role: str = "token") -> int:
    """The id of one token, named by its text (exactly one token, not the unknown token) or by its id."""
    if isinstance(token, bool):
        raise InterventionError(f"The {role} must be a token's text or id, not {token!r}.")
    if isinstance(token, int):
        if not 0 <= token < model.d_vocab:
            raise InterventionError(f"The {role} id {token} is outside the vocabulary (0..{model.d_vocab - 1}).")
        return int(token)
    text = str(token)
    ids = model.encode(text)
    if len(ids) != 1:
        pieces = model.to_str_tokens(ids) if ids else []
        raise InterventionError(
            f"The {role} {text!r} is {len(ids)} tokens ({pieces}), not one. Name a single token of the "
            "model's vocabulary (GPT-2-style tokenizers mark a leading space: ' Paris').")
    if model.unk_token_id is not None and ids[0] == model.unk_token_id and text != model.to_str_tokens(ids)[0]:
        raise InterventionError(f"The {role} {text!r} is not in the model's vocabulary (it reads as the unknown token).")
    return int(ids[0])


def token_text(model: Any, token: int) -> str:
    return model.to_str_tokens([int(token)])[0]


def check_features(features: Sequence[int], d_sae: int) -> list[int]:
    """Feature indices as ints, each in 0..d_sae-1, no repeats."""
    out = []
    for f in features:
        if isinstance(f, bool) or not isinstance(f, int) and not (hasattr(f, "__index__")):
            raise InterventionError(f"A feature is an index (an int), not {f!r}.")
        f = int(f)
        if not 0 <= f < d_sae:
            raise InterventionError(f"Feature {f} does not exist: the SAE has features 0..{d_sae - 1}.")
        if f in out:
            raise InterventionError(f"Feature {f} is listed twice.")
        out.append(f)
    if not out:
        raise InterventionError("Choose at least one feature.")
    return out


def check_site(model: Any, site: str, d: int | None = None) -> str:
    """A hook site the model has (TransformerLens name); with `d`, one whose width is d (the residual)."""
    from core.interventions.hooks import check_hook_names

    check_hook_names(model, [site])
    if d is not None and d != model.d_model:
        raise InterventionError(f"A vector of width {d} cannot be added at {site!r}: the model's width is {model.d_model}.")
    return site
