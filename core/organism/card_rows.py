"""One row of the ground-truth card and its formatting helpers, shared by core/organism/verify.py and
core/organism/verify_causal.py (kept apart so that neither imports the other's module back)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from core.jsonable import Result

PASS, FAIL, INFO, SKIPPED = "pass", "FAIL", "info", "skipped"


@dataclass(frozen=True, eq=False)
class CardRow(Result):
    measurement: str
    measured: str
    expected: str
    status: str  # pass | FAIL | info | skipped
    kind: str  # sanity | structure | info | causal (core/organism/verify_causal.py)


def _ok(flag: bool) -> str:
    return PASS if flag else FAIL


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):  # NaN: a number that could not be measured
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)
