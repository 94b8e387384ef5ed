"""Shared pieces of the interventions: the error type, typed results that round-trip through JSON,
prompt and answer tokens, and the progress callback.

Results are frozen dataclasses of JSON-friendly fields (str, int, float, bool, lists of those, nested
results), so `to_dict()` is plain JSON and `from_dict(to_dict())` gives an equal object back.
`from_dict` validates what it reads (sessions and bundles come from users): a missing or unknown
field, or a value of the wrong kind, is an InterventionError naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from core.errors import AtlasError

# progress(done, total, seconds_left): the same signature as core.harvest's ProgressFn
ProgressFn = Callable[[int, int, float], None]


class InterventionError(AtlasError):
    """An intervention that cannot run as asked (bad feature, token, position, prompt pair, ...)."""


# ---- typed results -------------------------------------------------------------------------------
class Result:
    """Mixin for the frozen result dataclasses: `to_dict` / `from_dict` through plain JSON values."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        return _from_json(cls, data, cls.__name__)


def _to_json(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def _from_json(kind: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) == 1:
            return _from_json(inner[0], value, where)
        raise InterventionError(f"{where}: unsupported field type {kind}.")  # pragma: no cover
    if origin is list:
        if not isinstance(value, list):
            raise InterventionError(f"{where} should be a list, not {type(value).__name__}.")
        (item,) = typing.get_args(kind)
        return [_from_json(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(kind, type) and issubclass(kind, Result):
        if not isinstance(value, Mapping):
            raise InterventionError(f"{where} should be an object, not {type(value).__name__}.")
        hints = typing.get_type_hints(kind)
        names = [f.name for f in dataclasses.fields(kind)]  # type: ignore[arg-type]
        unknown = sorted(set(value) - set(names))
        missing = [n for n in names if n not in value]
        if unknown or missing:
            raise InterventionError(f"{where} ({kind.__name__}) has unknown fields {unknown} / lacks {missing}.")
        return kind(**{n: _from_json(hints[n], value[n], f"{where}.{n}") for n in names})
    if kind is float:
        if value is None:
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InterventionError(f"{where} should be a number, not {value!r}.")
        return float(value)
    if kind is int or kind is bool or kind is str:
        if kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if type(value) is not kind:
            raise InterventionError(f"{where} should be {kind.__name__}, not {value!r}.")
        return value
    raise InterventionError(f"{where}: unsupported field type {kind}.")  # pragma: no cover


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
