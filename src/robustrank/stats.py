"""Intervals, paired comparisons and verdicts for the reproduction report (numpy + math only).

Every number the report prints is a mean over seeds with a 95% Student-t interval over seeds
(:func:`seed_summary`); every fooling ratio / robust accuracy can also carry its sampling
interval over the evaluation inputs (:func:`wilson_interval`, Wilson 1927). A comparison
between two models is a difference with a 95% interval, paired over the same test inputs and
seeds (:func:`paired_difference`, hierarchical paired bootstrap; exact McNemar test for one
seed) or over seeds only (:func:`seed_difference`), and gets one :class:`Verdict`.

The Student-t quantile is computed here (no scipy): the t CDF through the regularised
incomplete beta function (continued fraction with the modified Lentz method, Numerical
Recipes 3rd ed. section 6.4) inverted by a safeguarded Newton iteration; the normal quantile
is Acklam's rational approximation refined by Halley steps with ``math.erfc``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np

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

_EPS = 1e-15
_FPMIN = 1e-300
# Above this many degrees of freedom the t quantile comes from the Cornish-Fisher expansion
# (Abramowitz & Stegun 26.7.5; truncation error O(df^-5)) instead of the beta-function CDF,
# whose log-gamma differences and continued fraction lose accuracy/speed for huge df.
_LARGE_DF = 1e4


# ---------------------------------------------------------------------------------------------
# Special functions
# ---------------------------------------------------------------------------------------------


def _check_probability(p: float, name: str = "p") -> float:
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {p}")
    return p


def _check_df(df: float) -> float:
    df = float(df)
    if math.isnan(df) or df <= 0:
        raise ValueError(f"degrees of freedom must be > 0 (or math.inf), got {df}")
    return df


def normal_cdf(x: float) -> float:
    """Standard normal CDF ``Phi(x) = erfc(-x / sqrt 2) / 2``."""
    return 0.5 * math.erfc(-float(x) / math.sqrt(2.0))


_ACKLAM_A = (
    -3.969683028665376e01,
    2.209460984245205e02,
    -2.759285104469687e02,
    1.383577518672690e02,
    -3.066479806614716e01,
    2.506628277459239e00,
)
_ACKLAM_B = (
    -5.447609879822406e01,
    1.615858368580409e02,
    -1.556989798598866e02,
    6.680131188771972e01,
    -1.328068155288572e01,
)
_ACKLAM_C = (
    -7.784894002430293e-03,
    -3.223964580411365e-01,
    -2.400758277161838e00,
    -2.549732539343734e00,
    4.374664141464968e00,
    2.938163982698783e00,
)
_ACKLAM_D = (
    7.784695709041462e-03,
    3.224671290700398e-01,
    2.445134137142996e00,
    3.754408661907416e00,
)


def _poly(coefs: Sequence[float], x: float) -> float:
    acc = 0.0
    for c in coefs:
        acc = acc * x + c
    return acc


def _acklam_lower(p: float) -> float:
    """Acklam's rational approximation of the normal quantile for ``p <= 0.5``."""
    if p < 0.02425:
        q = math.sqrt(-2.0 * math.log(p))
        return _poly(_ACKLAM_C, q) / (_poly(_ACKLAM_D, q) * q + 1.0)
    q = p - 0.5
    r = q * q
    return _poly(_ACKLAM_A, r) * q / (_poly(_ACKLAM_B, r) * r + 1.0)


def normal_quantile(p: float) -> float:
    """Standard normal quantile ``Phi^-1(p)``.

    Acklam's rational approximation (relative error 1.2e-9) refined by two Halley steps on
    ``Phi(x) - p`` with ``math.erfc``; computed in the lower tail for full relative accuracy.
    """
    p = _check_probability(p)
    if p > 0.5:
        return -normal_quantile(1.0 - p)  # 1 - p is exact for p in [0.5, 1)
    if p == 0.5:
        return 0.0
    x = _acklam_lower(p)
    for _ in range(2):
        e = normal_cdf(x) - p
        u = e * math.sqrt(2.0 * math.pi) * math.exp(0.5 * x * x)
        x = x - u / (1.0 + 0.5 * x * u)
    return x


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; NR 6.4)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
    h = d
    max_iter = int(1000 + 20 * math.sqrt(max(a, b)))
    for m in range(1, max_iter + 1):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > _FPMIN else _FPMIN)
            c = 1.0 + aa / c
            c = c if abs(c) > _FPMIN else _FPMIN
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b})")


def _betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """Regularised incomplete beta ``I_x(a, b)``; pass ``y = 1 - x`` when it is known exactly."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def _lgamma_half_ratio(a: float) -> float:
    """``ln Gamma(a + 1/2) - ln Gamma(a)``, accurate also for huge ``a``.

    For ``a >= 20`` the Stirling series with Bernoulli polynomials (DLMF 5.11.8):
    ``ln a / 2 + sum_k (2^(1-k) - 2) B_k / (k (k-1) a^(k-1))`` over even k up to 10.
    """
    if a < 20.0:
        return math.lgamma(a + 0.5) - math.lgamma(a)
    inv = 1.0 / a
    inv2 = inv * inv
    series = -1 / 8 + inv2 * (1 / 192 + inv2 * (-1 / 640 + inv2 * (17 / 14336 - inv2 * 31 / 18432)))
    return 0.5 * math.log(a) + series * inv


def _t_upper(t: float, df: float) -> float:
    """``P(T > t)`` for ``t >= 0``: ``I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``.

    The front factor ``x^a y^b / B(a, b)`` is formed in logs with ``log1p`` and
    :func:`_lgamma_half_ratio`, so the tail keeps its relative accuracy for large df.
    """
    if t == 0.0:
        return 0.5
    if math.isinf(t):
        return 0.0
    a, t2 = 0.5 * df, t * t
    x, y = df / (df + t2), t2 / (df + t2)
    log_x = -math.log1p(t2 / df)
    log_y = 2.0 * math.log(t) - math.log(df + t2)
    log_beta = math.lgamma(0.5) - _lgamma_half_ratio(a)  # ln B(a, 1/2)
    front = math.exp(a * log_x + 0.5 * log_y - log_beta)
    if x < (a + 1.0) / (a + 2.5):
        return 0.5 * front * _betacf(a, 0.5, x) / a
    return 0.5 * (1.0 - 2.0 * front * _betacf(0.5, a, y))


def _t_pdf(t: float, df: float) -> float:
    log_c = _lgamma_half_ratio(0.5 * df) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - 0.5 * (df + 1.0) * math.log1p(t * t / df))


def t_cdf(t: float, df: float) -> float:
    """Student-t CDF ``P(T <= t)`` with ``df`` degrees of freedom (``math.inf`` = normal).

    Through the regularised incomplete beta function (Abramowitz & Stegun 26.7.1, 26.5.27).
    """
    df = _check_df(df)
    t = float(t)
    if math.isnan(t):
        raise ValueError("t must not be NaN")
    if math.isinf(df):
        return normal_cdf(t)
    upper = _t_upper(abs(t), df)
    return upper if t < 0 else 1.0 - upper


def _cornish_fisher(z: float, df: float) -> float:
    """t quantile from the normal quantile ``z`` (Abramowitz & Stegun 26.7.5)."""
    z2 = z * z
    g1 = (z2 + 1.0) * z / 4.0
    g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
    g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
    g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
    return z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df


def _t_upper_quantile(q: float, df: float) -> float:
    """The ``t >= 0`` with ``P(T > t) = q`` (``q <= 0.5``): bracket, then safeguarded Newton."""
    guess = _cornish_fisher(-normal_quantile(q), df)
    lo, hi = 0.0, max(guess, 1.0)
    while _t_upper(hi, df) > q:  # the tail is decreasing in t: grow until it brackets q
        lo, hi = hi, 2.0 * hi
    t = guess if lo < guess < hi else 0.5 * (lo + hi)
    for _ in range(300):
        f = _t_upper(t, df) - q
        if f > 0:
            lo = t
        else:
            hi = t
        step = f / _t_pdf(t, df)  # Newton: d/dt P(T > t) = -pdf(t)
        t_new = t + step
        if not lo < t_new < hi:  # outside the bracket: bisect instead
            t_new = 0.5 * (lo + hi)
        if abs(t_new - t) <= 1e-14 * max(t_new, 1e-300) or hi - lo <= 1e-15 * hi:
            return t_new
        t = t_new
    raise ArithmeticError(f"t quantile did not converge (q={q}, df={df})")


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile ``t_{p, df}``: ``P(T <= t) = p`` (``df = math.inf``: normal).

    Inverts :func:`t_cdf` by a bracketed Newton iteration started from the Cornish-Fisher
    expansion (A&S 26.7.5), which is used directly for ``df > 1e4``. Relative accuracy ~1e-12.
    """
    p = _check_probability(p)
    df = _check_df(df)
    if math.isinf(df):
        return normal_quantile(p)
    if p == 0.5:
        return 0.0
    q = 1.0 - p if p > 0.5 else p
    if df > _LARGE_DF:
        t = _cornish_fisher(-normal_quantile(q), df)
    else:
        t = _t_upper_quantile(q, df)
    return t if p > 0.5 else -t


# ---------------------------------------------------------------------------------------------
# Intervals and per-seed summaries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A closed interval ``[lo, hi]`` (a confidence interval)."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        lo, hi = float(self.lo), float(self.hi)
        if math.isnan(lo) or math.isnan(hi):
            raise ValueError(f"interval bounds must not be NaN, got [{lo}, {hi}]")
        if lo > hi:
            raise ValueError(f"interval lower bound {lo} exceeds upper bound {hi}")
        object.__setattr__(self, "lo", lo)
        object.__setattr__(self, "hi", hi)

    def contains(self, x: float) -> bool:
        """Whether ``lo <= x <= hi``."""
        return self.lo <= x <= self.hi

    @property
    def half_width(self) -> float:
        """``(hi - lo) / 2``."""
        return 0.5 * (self.hi - self.lo)

    def to_list(self) -> list[float]:
        """``[lo, hi]`` as plain floats (JSON)."""
        return [self.lo, self.hi]


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {c}")
    return c


def _finite_values(values: Sequence[float], what: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of per-seed values, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what} is empty: pass one value per seed (at least one seed)")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(
            f"{what} contains NaN/inf at seed positions {bad.tolist()}: a metric failed for "
            "those seeds; fix or rerun those runs (or drop them explicitly) before summarising"
        )
    return x


def format_interval(mean: float, ci: Interval | None, digits: int = 3) -> str:
    """``"mean ± half-width"`` (``"mean"`` alone without an interval).

    For an asymmetric interval (Wilson, bootstrap) the printed half-width is the larger of
    ``hi - mean`` and ``mean - lo``, so ``mean ± h`` always covers the interval.
    """
    if ci is None:
        return f"{mean:.{digits}f}"
    h = max(ci.hi - mean, mean - ci.lo, 0.0)
    return f"{mean:.{digits}f} ± {h:.{digits}f}"


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
    """Mean over seeds and its t-interval ``mean ± t_{(1+c)/2, n-1} s / sqrt(n)``.

    ``s`` is the sample standard deviation (ddof=1); with one seed there is no interval.
    """
    c = _check_confidence(confidence)
    x = _finite_values(values, "values")
    n = int(x.size)
    mean = float(x.mean())
    ci = None
    if n >= 2:
        h = t_quantile(0.5 * (1.0 + c), n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
        ci = Interval(mean - h, mean + h)
    return SeedStat(mean=mean, ci95=ci, n_seeds=n, per_seed=tuple(float(v) for v in x))


# ---------------------------------------------------------------------------------------------
# Proportions: Wilson, Newcombe, McNemar
# ---------------------------------------------------------------------------------------------


def _check_count(k: int, name: str) -> int:
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"{name} must be a non-negative integer count, got {k!r}")
    return int(k)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson (1927) score interval for a binomial proportion ``successes / n``.

    ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``z = Phi^-1((1+c)/2)``.
    """
    c = _check_confidence(confidence)
    k, n = _check_count(successes, "successes"), _check_count(n, "n")
    if n == 0:
        raise ValueError(
            "wilson_interval needs n >= 1 evaluated inputs, got n=0: evaluate the model on at "
            "least one input (EvaluationSpec.n) before computing an interval"
        )
    if k > n:
        raise ValueError(f"successes={k} exceeds n={n}: pass the count out of n trials")
    z = normal_quantile(0.5 * (1.0 + c))
    p, z2 = k / n, z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    h = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - h)
    hi = 1.0 if k == n else min(1.0, centre + h)
    return Interval(lo, hi)


def newcombe_paired_interval(
    n11: int, n10: int, n01: int, n00: int, confidence: float = 0.95
) -> Interval:
    """Newcombe's (1998, Stat Med 17:2635, method 10) interval for ``p_a - p_b``, paired.

    ``n10`` counts pairs with a=1, b=0, etc.; ``p_a = (n11+n10)/n``, ``p_b = (n11+n01)/n``.
    Square-and-add of the two Wilson intervals with the correlation estimate
    ``phi = max(AD - BC - n/2, 0) / sqrt(efgh)`` if ``AD > BC`` else ``(AD - BC)/sqrt(efgh)``
    (0 when a margin is empty), as in Fagerland, Lydersen & Laake (2017), chapter 8.
    """
    counts = [_check_count(v, name) for v, name in ((n11, "n11"), (n10, "n10"), (n01, "n01"))]
    a, b, c_ = counts
    d = _check_count(n00, "n00")
    n = a + b + c_ + d
    if n == 0:
        raise ValueError("newcombe_paired_interval needs at least one pair: all counts are 0")
    pa, pb = (a + b) / n, (a + c_) / n
    la, ua = wilson_interval(a + b, n, confidence).to_list()
    lb, ub = wilson_interval(a + c_, n, confidence).to_list()
    margins = (a + b) * (c_ + d) * (a + c_) * (b + d)
    phi = 0.0
    if margins > 0:
        cross = a * d - b * c_
        num = max(cross - n / 2.0, 0.0) if cross > 0 else float(cross)
        phi = num / math.sqrt(margins)
    diff = pa - pb
    lower = math.sqrt(max((pa - la) ** 2 - 2 * phi * (pa - la) * (ub - pb) + (ub - pb) ** 2, 0))
    upper = math.sqrt(max((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2, 0))
    return Interval(max(-1.0, diff - lower), min(1.0, diff + upper))


def binomial_cdf_half(k: int, n: int) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, 1/2)``, as ``I_{1/2}(n - k, k + 1)`` (A&S 26.5.24)."""
    k, n = _check_count(k, "k"), _check_count(n, "n")
    if k >= n:
        return 1.0
    return _betainc(float(n - k), float(k + 1), 0.5, 0.5)


def mcnemar_exact(b01: int, b10: int) -> float:
    """Exact McNemar test: two-sided binomial test of the discordant pairs against 1/2.

    ``p = min(1, 2 P(X <= min(b01, b10)))`` with ``X ~ Binomial(b01 + b10, 1/2)``; 1 when
    there are no discordant pairs.
    """
    b01, b10 = _check_count(b01, "b01"), _check_count(b10, "b10")
    n = b01 + b10
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf_half(min(b01, b10), n))


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
    """A difference ``a - b`` with its 95% interval and verdict (one row of a forest plot)."""

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

    def format(self, digits: int = 3) -> str:
        """``"-0.120 ± 0.031"`` (conservative half-width for asymmetric intervals)."""
        return format_interval(self.difference, self.ci95, digits)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able ``{"label", "difference", "ci95": [lo, hi] | None, "verdict", ...}``."""
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
    xa, xb = _finite_values(a, "a"), _finite_values(b, "b")
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


def _resample_counts(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """(m, k) counts of k draws with replacement from k items, for m replicates."""
    idx = rng.integers(0, k, size=(m, k)) + (np.arange(m) * k)[:, None]
    return np.bincount(idx.ravel(), minlength=m * k).reshape(m, k)


def _bootstrap_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Crossed (seeds x examples) bootstrap replicates of ``mean(d)``, vectorised in chunks.

    Each replicate draws seeds with replacement and one set of example indices with
    replacement, used for every drawn seed (column i is the same input for every seed), and
    the same indices for a and b (``d = a - b``); the replicate is the weighted mean of ``d``.
    """
    n_seeds, n_ex = d.shape
    chunk = max(1, min(n_boot, 4_000_000 // max(n_ex, n_seeds)))
    out = np.empty(n_boot)
    df = d.astype(np.float64)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        w_seed = _resample_counts(rng, m, n_seeds).astype(np.float64)  # (m, R)
        w_ex = _resample_counts(rng, m, n_ex)  # (m, C)
        out[start : start + m] = np.einsum("mc,mc->m", w_seed @ df, w_ex)
    return out / (n_seeds * n_ex)


def _discordant(xa: np.ndarray, xb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-seed counts of (a=1, b=0) and (a=0, b=1) pairs."""
    return ((xa == 1) & (xb == 0)).sum(axis=1), ((xa == 0) & (xb == 1)).sum(axis=1)


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
    test input. Percentile interval of a hierarchical paired bootstrap (Efron & Tibshirani
    1993, ch. 13; crossed resampling of seeds and inputs, Owen 2007 "pigeonhole" bootstrap).
    One seed: the example bootstrap plus the exact McNemar p-value.

    With few seeds, resampling seeds underestimates the seed-to-seed spread (the bootstrap
    variance has factor (R-1)/R and normal, not t_{R-1}, tails), so the interval undercovers
    when models differ between training seeds. ``conservative=True`` reports the hull of the
    bootstrap interval and the t-interval of the per-seed differences (``details`` always
    holds both).
    """
    direction = _check_direction(direction)
    c = _check_confidence(confidence)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 100:
        raise ValueError(f"n_boot must be an integer >= 100 (2000 for reports), got {n_boot!r}")
    xa, xb = _paired_outcomes(a, b)
    boot = _bootstrap_means(xa - xb, int(n_boot), np.random.default_rng(seed))
    lo, hi = np.quantile(boot, [0.5 * (1.0 - c), 0.5 * (1.0 + c)])
    ci = Interval(float(lo), float(hi))
    n10, n01 = _discordant(xa, xb)
    details: dict[str, Any] = {
        "mean_a": float(xa.mean()),
        "mean_b": float(xb.mean()),
        "per_seed_difference": (xa.mean(axis=1) - xb.mean(axis=1)).tolist(),
        "n10_per_seed": n10.tolist(),
        "n01_per_seed": n01.tolist(),
        "n_boot": int(n_boot),
        "bootstrap_seed": int(seed),
    }
    p_value = None
    if xa.shape[0] == 1:
        method = "paired bootstrap over examples (percentile); exact McNemar p-value"
        p_value = mcnemar_exact(int(n01[0]), int(n10[0]))
        details["newcombe_ci95"] = _newcombe_from_outcomes(xa[0], xb[0], c).to_list()
    else:
        method = "hierarchical paired bootstrap over seeds and examples (percentile)"
        seed_ci = seed_summary(details["per_seed_difference"], c).ci95
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


def _newcombe_from_outcomes(a: np.ndarray, b: np.ndarray, confidence: float) -> Interval:
    """:func:`newcombe_paired_interval` from two paired 0/1 outcome vectors."""
    n11 = int(((a == 1) & (b == 1)).sum())
    n10 = int(((a == 1) & (b == 0)).sum())
    n01 = int(((a == 0) & (b == 1)).sum())
    return newcombe_paired_interval(n11, n10, n01, a.size - n11 - n10 - n01, confidence)
