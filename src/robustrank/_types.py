"""Reusable validated field types for the pydantic configs (one message per constraint)."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import AfterValidator

__all__ = [
    "NonNegative",
    "Positive",
    "PositiveInt",
    "NonNegativeInt",
    "Budget",
    "check_non_negative",
    "check_budget",
]


def check_non_negative(value: float, what: str = "value") -> float:
    """``value`` if it is a finite number >= 0, else a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0 (0 disables it), got {value!r}")
    return float(value)


def check_budget(eps: float, what: str = "eps") -> float:
    """``eps`` if it is an l_inf budget in [0, 1] (inputs lie in [0, 1], so a budget above 1
    is the whole box and almost surely a typo, e.g. 8 for 8/255), else a ValueError."""
    if not math.isfinite(eps) or not 0 <= eps <= 1:
        raise ValueError(
            f"{what} must be an l_inf budget in [0, 1] (inputs lie in [0, 1]; e.g. 8/255 = "
            f"0.0314 rather than 8), got {eps}"
        )
    return float(eps)


def _non_negative(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a finite number >= 0, got {value}")
    return value


def _positive(value: float) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a finite number > 0, got {value}")
    return value


def _at_least(low: int):
    def check(value: int | None) -> int | None:
        if value is not None and value < low:
            raise ValueError(f"must be an integer >= {low}, got {value}")
        return value

    return check


NonNegative = Annotated[float, AfterValidator(_non_negative)]
Positive = Annotated[float, AfterValidator(_positive)]
PositiveInt = Annotated[int, AfterValidator(_at_least(1))]
NonNegativeInt = Annotated[int, AfterValidator(_at_least(0))]
Budget = Annotated[float, AfterValidator(check_budget)]
