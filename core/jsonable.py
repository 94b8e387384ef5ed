"""Plain JSON values from results: the one converter shared by the metrics' `to_dict` and core.analysis."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np


def jsonable(value: Any) -> Any:
    """Plain JSON values: objects with `to_dict` through it, dataclasses field by field, mappings with string
    keys, tuples and arrays as lists, numpy scalars as Python ones, NaN/inf as None, anything else as str."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclass_fields(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def dataclass_fields(value: Any) -> dict[str, Any]:
    """A dataclass instance as a JSON-safe dict of its fields (what a result's `to_dict` returns; calling
    `jsonable(self)` there would recurse into `to_dict` again)."""
    return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}


class _ToDict:
    """Mixin for result dataclasses: `to_dict` is every field as plain JSON values (arrays become lists,
    NaN/inf become None, nested results go through their own `to_dict`)."""

    def to_dict(self) -> dict:
        return dataclass_fields(self)
