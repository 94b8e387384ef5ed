"""JSON for the whole code base: `jsonable` (the one converter to plain JSON values) and `Result` (the
base of every result dataclass: `to_dict` through `jsonable`, `from_dict` rebuilt from the type hints).

Conventions, the same everywhere (analysis results, metric results, artifact keys, store meta, sessions):
- arrays and tuples become lists; an array with no elements and more than one axis becomes
  {"shape": [...]} so that it reads back with its shape;
- NaN and +-inf become None (JSON has neither); a `float` field reads None back as NaN, a
  `float | None` field as None (so in an optional float NaN comes back as None, and inf as NaN anywhere);
- numpy scalars become Python numbers, sets sorted lists, paths strings; dataclasses become dicts of
  their fields; anything else becomes its str, or a TypeError with `strict=True` (artifact keys).

`Result.from_dict` is the inverse for the types in the class's annotations: bool, int, float, str,
None, Literal, `X | Y` unions (a union of several dataclasses is told apart by the dict's keys),
tuple, list, dict with string keys, nested Result dataclasses, and numpy arrays (the dtype from
`FloatArray` / `IntArray` / `BoolArray` / `StrArray`, inferred from the values for a bare
`np.ndarray`). JSON that does not fit the annotations raises ResultFormatError.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import PurePath
from typing import Any, Literal, Mapping, Union

import numpy as np
import numpy.typing as npt

from core.errors import AtlasError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
StrArray = npt.NDArray[np.str_]


class ResultFormatError(AtlasError):
    """A JSON document that does not have the shape of the result it is read as (a stale or foreign file)."""


def jsonable(value: Any, *, strict: bool = False) -> Any:
    """Plain JSON values (see the module docstring). `strict`: a TypeError for a value of no known kind
    instead of its str (what goes into an artifact key must not depend on an object's repr)."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return jsonable(value.to_dict(), strict=strict)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), strict=strict) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, strict=strict) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, strict=strict) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(jsonable(v, strict=strict) for v in value)
    if isinstance(value, np.ndarray):
        if value.size == 0 and value.ndim > 1:
            return {"shape": list(value.shape)}
        return jsonable(value.tolist(), strict=strict)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if strict:
        raise TypeError(f"cannot put a {type(value).__name__} into JSON")
    return str(value)


class Result:
    """Base of the result dataclasses (frozen, eq=False): `to_dict()` gives plain JSON values,
    `from_dict(d)` rebuilds the instance from its annotations, and `==` compares field by field with
    arrays compared by value (NaN equal to NaN), so `Type.from_dict(x.to_dict()) == x`."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> typing.Self:
        if not isinstance(data, Mapping):
            raise ResultFormatError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}.")
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(fields)
        if unknown:
            raise ResultFormatError(f"{cls.__name__}: unknown field(s) {', '.join(sorted(unknown))}.")
        hints = _hints(cls)
        values = {}
        for name, f in fields.items():
            if name in data:
                values[name] = from_json(hints[name], data[name], f"{cls.__name__}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ResultFormatError(f"{cls.__name__}: the field {name!r} is missing.")
        return cls(**values)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(values_equal(getattr(self, f.name), getattr(other, f.name))
                   for f in dataclasses.fields(self))  # type: ignore[arg-type]

    __hash__ = None  # type: ignore[assignment]  # arrays inside: not hashable


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a result class (cached: resolving them is slow)."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _required_and_all(cls: type) -> tuple[set[str], set[str]]:
    fields = dataclasses.fields(cls)
    required = {f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    return required, {f.name for f in fields}


def _is_result(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, Result) and dataclasses.is_dataclass(hint)


def _array_dtype(hint: Any) -> np.dtype | None:
    """The dtype an ndarray annotation declares (NDArray[np.float64] -> float64), None for a bare np.ndarray."""
    args = typing.get_args(hint)  # ndarray[shape, dtype[scalar]]
    if len(args) == 2:
        scalar = typing.get_args(args[1])
        if scalar and isinstance(scalar[0], type) and issubclass(scalar[0], np.generic):
            return np.dtype(scalar[0])
    return None


def _inferred_dtype(value: Any) -> np.dtype:
    flat = [value]
    while flat and any(isinstance(v, list) for v in flat):
        flat = [x for v in flat for x in (v if isinstance(v, list) else [v])]
    if flat and all(isinstance(v, bool) for v in flat):
        return np.dtype(bool)
    if flat and all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
        return np.dtype(np.int64)
    if flat and all(isinstance(v, str) for v in flat):
        return np.dtype(str)
    return np.dtype(np.float64)


def _to_array(hint: Any, value: Any, where: str) -> np.ndarray:
    dtype = _array_dtype(hint)
    if isinstance(value, Mapping) and set(value) == {"shape"}:
        return np.empty([int(n) for n in value["shape"]], dtype=dtype or np.float64)
    if not isinstance(value, list):
        raise ResultFormatError(f"{where}: expected a list of numbers, got {type(value).__name__}.")
    dtype = dtype or _inferred_dtype(value)
    try:
        if dtype.kind == "f":
            return np.array(value, dtype=dtype)  # None -> NaN
        if dtype.kind == "U":
            return np.array(value, dtype=str) if value else np.array([], dtype=dtype)
        return np.array(value, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise ResultFormatError(f"{where}: not an array of {dtype}: {error}") from None


def from_json(hint: Any, value: Any, where: str = "value") -> Any:
    """`value` (plain JSON) as the type `hint` (see the module docstring); `where` names it in errors."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is type(None):
        if value is not None:
            raise ResultFormatError(f"{where}: expected null.")
        return None
    if origin in (Union, types.UnionType):
        return _from_union(typing.get_args(hint), value, where)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ResultFormatError(f"{where}: {value!r} is not one of {typing.get_args(hint)}.")
        return value
    if _is_result(hint):
        return hint.from_dict(value)
    if hint is np.ndarray or origin is np.ndarray:
        return _to_array(hint, value, where)
    if hint is float:
        if value is None:
            return math.nan
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, list):
            args = typing.get_args(hint)
            if origin is list:
                return [from_json(args[0] if args else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(from_json(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
            if len(args) == len(value):
                return tuple(from_json(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    elif origin is dict:
        if isinstance(value, Mapping):
            _, item = typing.get_args(hint)
            return {str(k): from_json(item, v, f"{where}[{k!r}]") for k, v in value.items()}
    else:
        raise ResultFormatError(f"{where}: no JSON reading for the type {hint!r}.")
    raise ResultFormatError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {type(value).__name__}.")


def _from_union(options: tuple[Any, ...], value: Any, where: str) -> Any:
    if value is None and type(None) in options:
        return None
    options = tuple(o for o in options if o is not type(None))
    results = [o for o in options if _is_result(o)]
    if isinstance(value, Mapping) and len(results) > 1:
        fits = [o for o in results if _required_and_all(o)[0] <= set(value) <= _required_and_all(o)[1]]
        if len(fits) != 1:
            names = ", ".join(o.__name__ for o in results)
            raise ResultFormatError(f"{where}: the keys {sorted(value)} fit {len(fits)} of {names}, not exactly one.")
        return fits[0].from_dict(value)
    errors = []
    for option in options:
        try:
            return from_json(option, value, where)
        except ResultFormatError as error:
            errors.append(str(error))
    raise ResultFormatError("; ".join(errors) or f"{where}: no type fits.")


def values_equal(a: Any, b: Any) -> bool:
    """Equality that compares arrays by value (NaN equal to NaN) and recurses into containers."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return False
        try:
            return bool(np.array_equal(a, b, equal_nan=True))
        except TypeError:  # strings: no NaN to compare
            return bool(np.array_equal(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return bool(a == b)
