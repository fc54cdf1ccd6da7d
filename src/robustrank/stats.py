"""Per-seed summaries, paired comparisons and verdicts for the reproduction report.

Every number the report prints is a mean over seeds with a 95% Student-t interval over seeds
(:func:`seed_summary`); every fooling ratio / robust accuracy can also carry its sampling
interval over the evaluation inputs (:func:`wilson_interval`, Wilson 1927). A comparison
between two models is a difference with a 95% interval, paired over the same test inputs and
seeds (:func:`paired_difference`, hierarchical paired bootstrap; exact McNemar test for one
seed) or over seeds only (:func:`seed_difference`), and gets one :class:`Verdict`.

The interval and test primitives (t, Wilson, Newcombe, McNemar, the paired bootstrap; the
distributions from :mod:`scipy.stats`) live in :mod:`robustrank.intervals` and are
re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np

from .intervals import (
    Interval,
    binomial_cdf_half,
    check_confidence,
    format_interval,
    mcnemar_exact,
    newcombe_paired_interval,
    normal_cdf,
    normal_quantile,
    paired_bootstrap_interval,
    per_seed_values,
    t_cdf,
    t_interval,
    t_quantile,
    wilson_interval,
)

__all__ = [
    "normal_cdf",
    "normal_quantile",
    "t_cdf",
    "t_quantile",
    "Interval",
    "SeedStat",
    "seed_summary",
    "format_interval",
    "wilson_interval",
    "newcombe_paired_interval",
    "binomial_cdf_half",
    "mcnemar_exact",
    "Direction",
    "Verdict",
    "verdict",
    "summarise",
    "Comparison",
    "seed_difference",
    "paired_difference",
]


# ---------------------------------------------------------------------------------------------
# Per-seed summaries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedStat:
    """A metric over seeds: mean, 95% t-interval over seeds (``None`` for one seed)."""

    mean: float
    ci95: Interval | None
    n_seeds: int
    per_seed: tuple[float, ...]

    @property
    def half_width(self) -> float:
        """Half-width of the t-interval (``nan`` when there is no interval)."""
        return math.nan if self.ci95 is None else self.ci95.half_width

    def format(self, digits: int = 3) -> str:
        """``"0.934 ± 0.012"``; just ``"0.934"`` for one seed."""
        return format_interval(self.mean, self.ci95, digits)

    def to_dict(self) -> dict:
        """``{"mean", "ci95": [lo, hi] | None, "n_seeds", "per_seed": [...]}`` (JSON)."""
        return {
            "mean": self.mean,
            "ci95": None if self.ci95 is None else self.ci95.to_list(),
            "n_seeds": self.n_seeds,
            "per_seed": list(self.per_seed),
        }


def seed_summary(values: Sequence[float], confidence: float = 0.95) -> SeedStat:
    """Mean over seeds and its Student (1908) t-interval (:func:`robustrank.intervals.t_interval`).

    ``mean ± t_{(1+c)/2, n-1} s / sqrt(n)`` with the sample standard deviation ``s``
    (ddof=1); with one seed there is no interval.
    """
    c = check_confidence(confidence)
    x = per_seed_values(values, "values")
    return SeedStat(
        mean=float(x.mean()),
        ci95=t_interval(x, c),
        n_seeds=int(x.size),
        per_seed=tuple(float(v) for v in x),
    )


# ---------------------------------------------------------------------------------------------
# Verdicts and comparisons
# ---------------------------------------------------------------------------------------------

Direction = Literal["greater", "less"]


class Verdict(StrEnum):
    """The verdict on one comparison (or, via :func:`summarise`, on a claim)."""

    supported = "supported"
    contradicted = "contradicted"
    inconclusive = "inconclusive"


def _check_direction(direction: str) -> Direction:
    if direction not in ("greater", "less"):
        raise ValueError(
            f"direction must be 'greater' or 'less' (the claimed sign of the difference a - b), "
            f"got {direction!r}"
        )
    return direction  # type: ignore[return-value]


def verdict(ci: Interval | None, direction: Direction) -> Verdict:
    """``supported`` if ``ci`` excludes 0 in the claimed direction of the difference,
    ``contradicted`` if it excludes 0 in the other direction, else ``inconclusive``.

    ``direction="less"`` claims the difference is below 0 (e.g. regularised minus natural
    fooling ratio); no interval (one seed) is ``inconclusive``.
    """
    direction = _check_direction(direction)
    if ci is None:
        return Verdict.inconclusive
    if ci.lo > 0:
        return Verdict.supported if direction == "greater" else Verdict.contradicted
    if ci.hi < 0:
        return Verdict.supported if direction == "less" else Verdict.contradicted
    return Verdict.inconclusive


def summarise(comparisons: Sequence[Comparison]) -> Verdict:
    """A claim's verdict from its comparisons.

    Rule: ``contradicted`` if any comparison is contradicted (one reversed effect, significant
    at 95%, refutes the claim as stated); else ``supported`` if every comparison is
    supported; else ``inconclusive``.
    """
    if not comparisons:
        raise ValueError("a claim needs at least one comparison to get a verdict; pass them all")
    verdicts = [Verdict(c.verdict) for c in comparisons]
    if Verdict.contradicted in verdicts:
        return Verdict.contradicted
    if all(v == Verdict.supported for v in verdicts):
        return Verdict.supported
    return Verdict.inconclusive


def _jsonable(value: Any) -> Any:
    if isinstance(value, Interval):
        return value.to_list()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class Comparison:
    """A difference ``a - b`` with its 95% interval and verdict (one row of a forest plot).

    ``caveat``: a limit of the verdict to print beside it (e.g. that a one-seed interval
    covers test-set sampling noise only); in :meth:`to_dict` only when set.
    """

    label: str
    difference: float
    ci95: Interval | None
    verdict: Verdict
    direction: Direction
    method: str
    n_seeds: int
    n_examples: int | None = None
    p_value: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    caveat: str | None = None

    def format(self, digits: int = 3) -> str:
        """``"-0.120 ± 0.031"`` (conservative half-width for asymmetric intervals)."""
        return format_interval(self.difference, self.ci95, digits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"label", "difference", "ci95": [lo, hi] | None, "verdict", ...}``,
        with ``"caveat"`` last when there is one."""
        extra = {} if self.caveat is None else {"caveat": self.caveat}
        return _jsonable(
            {
                "label": self.label,
                "difference": float(self.difference),
                "ci95": None if self.ci95 is None else self.ci95.to_list(),
                "verdict": str(self.verdict),
                "direction": self.direction,
                "method": self.method,
                "n_seeds": int(self.n_seeds),
                "n_examples": None if self.n_examples is None else int(self.n_examples),
                "p_value": None if self.p_value is None else float(self.p_value),
                "details": self.details,
                **extra,
            }
        )


def seed_difference(
    a: Sequence[float],
    b: Sequence[float],
    direction: Direction,
    label: str = "",
    confidence: float = 0.95,
) -> Comparison:
    """Paired-by-seed difference of per-seed metrics ``a[s] - b[s]`` (e.g. effective rank).

    Mean difference with its t-interval over seeds and the two-sided paired t-test p-value
    (Student 1908). One seed gives no interval and an ``inconclusive`` verdict.
    """
    direction = _check_direction(direction)
    xa, xb = per_seed_values(a, "a"), per_seed_values(b, "b")
    if xa.shape != xb.shape:
        raise ValueError(
            f"a and b must hold one value per seed for the same seeds, got {xa.size} and "
            f"{xb.size} values: pass the seeds in the same order for both"
        )
    stat = seed_summary(xa - xb, confidence)
    details: dict[str, Any] = {"per_seed_difference": list(stat.per_seed)}
    p_value = None
    if stat.ci95 is None:
        details["reason"] = "one seed: no interval over seeds; run at least 2 seeds per model"
    else:
        p_value = _paired_t_p_value(stat)
    return Comparison(
        label=label,
        difference=stat.mean,
        ci95=stat.ci95,
        verdict=verdict(stat.ci95, direction),
        direction=direction,
        method="paired t-interval over seeds",
        n_seeds=stat.n_seeds,
        n_examples=None,
        p_value=p_value,
        details=details,
    )


def _paired_t_p_value(stat: SeedStat) -> float:
    """Two-sided p-value of the one-sample t-test of the per-seed differences against 0."""
    sd = float(np.std(stat.per_seed, ddof=1))
    if sd == 0.0:
        return 1.0 if stat.mean == 0.0 else 0.0
    t = stat.mean / (sd / math.sqrt(stat.n_seeds))
    return min(1.0, 2.0 * t_cdf(-abs(t), stat.n_seeds - 1))


def _paired_outcomes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate paired 0/1 outcomes; a 1-D array is one seed. Returns int8 (n_seeds, n_ex)."""
    xs = []
    for name, x in (("a", a), ("b", b)):
        x = np.asarray(x)
        x = x[None, :] if x.ndim == 1 else x
        if x.ndim != 2 or x.size == 0:
            raise ValueError(
                f"{name} must be per-example outcomes of shape (n_seeds, n_examples), got shape "
                f"{np.shape(x)}: stack one row of 0/1 outcomes per seed"
            )
        if not np.isin(x, (0, 1)).all():
            raise ValueError(
                f"{name} must hold 0/1 outcomes (e.g. fooled, robust-correct); convert booleans "
                "per example rather than passing rates or scores"
            )
        xs.append(x.astype(np.int8))
    if xs[0].shape != xs[1].shape:
        raise ValueError(
            f"a and b are paired and need the same shape, got {xs[0].shape} and {xs[1].shape}: "
            "evaluate both models on the same inputs (same EvaluationSpec n/seed) for each seed"
        )
    return xs[0], xs[1]


def _discordant(xa: np.ndarray, xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed counts of (a=1, b=0) and (a=0, b=1) pairs."""
    return ((xa == 1) & (xb == 0)).sum(axis=1), ((xa == 0) & (xb == 1)).sum(axis=1)


def _check_n_boot(n_boot: int) -> int:
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100 (2000 for reports), got {n_boot!r}")
    return int(n_boot)


def paired_difference(
    a: np.ndarray,
    b: np.ndarray,
    direction: Direction,
    *,
    label: str = "",
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    conservative: bool = False,
) -> Comparison:
    """Difference ``mean(a) - mean(b)`` of paired 0/1 outcomes with a bootstrap interval.

    ``a``, ``b``: shape (n_seeds, n_examples); row s of both from seed s, column i the same
    test input. Percentile interval of a hierarchical paired bootstrap
    (:func:`robustrank.intervals.paired_bootstrap_interval`; Efron & Tibshirani 1993, ch. 13;
    Owen 2007). One seed: the example bootstrap plus the exact McNemar p-value.

    With few seeds, resampling seeds underestimates the seed-to-seed spread (the bootstrap
    variance has factor (R-1)/R and normal, not t_{R-1}, tails), so the interval undercovers
    when models differ between training seeds. ``conservative=True`` reports the hull of the
    bootstrap interval and the t-interval of the per-seed differences (``details`` always
    holds both).
    """
    direction = _check_direction(direction)
    c = check_confidence(confidence)
    n_boot = _check_n_boot(n_boot)
    xa, xb = _paired_outcomes(a, b)
    ci = paired_bootstrap_interval(xa - xb, n_boot, seed, c)
    details = _paired_details(xa, xb, n_boot, seed)
    p_value = None
    if xa.shape[0] == 1:
        method = "paired bootstrap over examples (percentile); exact McNemar p-value"
        p_value = mcnemar_exact(details["n01_per_seed"][0], details["n10_per_seed"][0])
        details["newcombe_ci95"] = _newcombe_from_outcomes(xa[0], xb[0], c).to_list()
    else:
        method = "hierarchical paired bootstrap over seeds and examples (percentile)"
        seed_ci = t_interval(details["per_seed_difference"], c)
        assert seed_ci is not None  # two or more seeds
        details["bootstrap_ci95"] = ci.to_list()
        details["seed_t_ci95"] = seed_ci.to_list()
        if conservative:
            method += ", widened to the t-interval over seeds"
            ci = Interval(min(ci.lo, seed_ci.lo), max(ci.hi, seed_ci.hi))
    return Comparison(
        label=label,
        difference=float(xa.mean() - xb.mean()),
        ci95=ci,
        verdict=verdict(ci, direction),
        direction=direction,
        method=method,
        n_seeds=xa.shape[0],
        n_examples=xa.shape[1],
        p_value=p_value,
        details=details,
    )


def _paired_details(xa: np.ndarray, xb: np.ndarray, n_boot: int, seed: int) -> dict[str, Any]:
    """The per-seed facts every paired comparison records (means, discordant counts)."""
    n10, n01 = _discordant(xa, xb)
    return {
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "per_seed_difference": (xa.mean(axis=1) - xb.mean(axis=1)).tolist(),
        "n10_per_seed": n10.tolist(),
        "n01_per_seed": n01.tolist(),
        "n_boot": int(n_boot),
        "bootstrap_seed": int(seed),
    }


def _newcombe_from_outcomes(a: np.ndarray, b: np.ndarray, confidence: float) -> Interval:
    """:func:`newcombe_paired_interval` from two paired 0/1 outcome vectors."""
    n11 = int(((a == 1) & (b == 1)).sum())
    n10 = int(((a == 1) & (b == 0)).sum())
    n01 = int(((a == 0) & (b == 1)).sum())
    return newcombe_paired_interval(n11, n10, n01, a.size - n11 - n10 - n01, confidence)
