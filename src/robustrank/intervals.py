"""Interval and test primitives: Student-t, Wilson, Newcombe, exact McNemar, paired bootstrap.

Every function here maps numbers or counts to an :class:`Interval` or a p-value; what the
report makes of them (per-seed summaries, comparisons, verdicts) lives in
:mod:`robustrank.stats`, which re-exports the names below that callers use.

Distributions come from :mod:`scipy.stats`: the Student-t and normal quantiles and CDFs
(``scipy.stats.t``, ``scipy.stats.norm``) and the binomial CDF (``scipy.stats.binom``). The
wrappers only add robustrank's argument checks and return plain floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

__all__ = [
    "Interval",
    "format_interval",
    "check_confidence",
    "check_count",
    "per_seed_values",
    "normal_cdf",
    "normal_quantile",
    "t_cdf",
    "t_quantile",
    "t_interval",
    "wilson_interval",
    "newcombe_paired_interval",
    "binomial_cdf_half",
    "mcnemar_exact",
    "paired_bootstrap_interval",
]


# ---------------------------------------------------------------------------------------------
# Intervals and argument checks
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


def format_interval(mean: float, ci: Interval | None, digits: int = 3) -> str:
    """``"mean ± half-width"`` (``"mean"`` alone without an interval).

    For an asymmetric interval (Wilson, bootstrap) the printed half-width is the larger of
    ``hi - mean`` and ``mean - lo``, so ``mean ± h`` always covers the interval.
    """
    if ci is None:
        return f"{mean:.{digits}f}"
    h = max(ci.hi - mean, mean - ci.lo, 0.0)
    return f"{mean:.{digits}f} ± {h:.{digits}f}"


def check_confidence(confidence: float) -> float:
    """``confidence`` as a float in (0, 1), else a ``ValueError`` that names it."""
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {c}")
    return c


def check_count(k: int, name: str) -> int:
    """``k`` as a non-negative ``int`` (integral floats allowed, booleans refused)."""
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"{name} must be a non-negative integer count, got {k!r}")
    return int(k)


def per_seed_values(values: Sequence[float], what: str) -> np.ndarray:
    """``values`` as a non-empty, finite 1-D float64 array (one value per seed)."""
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


def _check_probability(p: float) -> float:
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    return p


def _check_df(df: float) -> float:
    df = float(df)
    if math.isnan(df) or df <= 0:
        raise ValueError(f"degrees of freedom must be > 0 (or math.inf), got {df}")
    return df


# ---------------------------------------------------------------------------------------------
# Normal and Student-t (scipy.stats)
# ---------------------------------------------------------------------------------------------


def _scipy_stats() -> ModuleType:
    """:mod:`scipy.stats`, imported on first use: it is slow to import, and most processes
    (the training and evaluation workers) never need it."""
    from scipy import stats

    return stats


def normal_cdf(x: float) -> float:
    """Standard normal CDF ``Phi(x)`` (``scipy.stats.norm.cdf``)."""
    return float(_scipy_stats().norm.cdf(float(x)))


def normal_quantile(p: float) -> float:
    """Standard normal quantile ``Phi^-1(p)`` (``scipy.stats.norm.ppf``)."""
    return float(_scipy_stats().norm.ppf(_check_probability(p)))


def t_cdf(t: float, df: float) -> float:
    """Student-t CDF ``P(T <= t)`` with ``df`` degrees of freedom (``scipy.stats.t.cdf``).

    ``df = math.inf`` is the standard normal (Student 1908; Abramowitz & Stegun 26.7).
    """
    df = _check_df(df)
    t = float(t)
    if math.isnan(t):
        raise ValueError("t must not be NaN")
    if math.isinf(df):
        return normal_cdf(t)
    return float(_scipy_stats().t.cdf(t, df))


def t_quantile(p: float, df: float) -> float:
    """Student-t quantile ``t_{p, df}``, ``P(T <= t) = p`` (``scipy.stats.t.ppf``).

    ``df = math.inf`` gives the normal quantile :func:`normal_quantile` exactly.
    """
    p = _check_probability(p)
    df = _check_df(df)
    if math.isinf(df):
        return normal_quantile(p)
    return float(_scipy_stats().t.ppf(p, df))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval | None:
    """Student (1908) t-interval of the mean, ``mean ± t_{(1+c)/2, n-1} s / sqrt(n)``.

    ``values``: finite per-seed values (checked by :func:`per_seed_values`); ``s`` is the sample
    standard deviation (ddof=1). ``None`` for a single value (no spread to estimate).
    """
    c = check_confidence(confidence)
    x = per_seed_values(values, "values")
    n = int(x.size)
    if n < 2:
        return None
    mean = float(x.mean())
    h = t_quantile(0.5 * (1.0 + c), n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean - h, mean + h)


# ---------------------------------------------------------------------------------------------
# Proportions: Wilson, Newcombe, McNemar
# ---------------------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson (1927) score interval for a binomial proportion ``successes / n``.

    ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``z = Phi^-1((1+c)/2)``.
    """
    c = check_confidence(confidence)
    k, n = check_count(successes, "successes"), check_count(n, "n")
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
    counts = [check_count(v, name) for v, name in ((n11, "n11"), (n10, "n10"), (n01, "n01"))]
    a, b, c_ = counts
    d = check_count(n00, "n00")
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
    """``P(X <= k)`` for ``X ~ Binomial(n, 1/2)`` (``scipy.stats.binom.cdf``)."""
    k, n = check_count(k, "k"), check_count(n, "n")
    if k >= n:
        return 1.0
    return float(_scipy_stats().binom.cdf(k, n, 0.5))


def mcnemar_exact(b01: int, b10: int) -> float:
    """Exact McNemar (1947) test: two-sided binomial test of the discordant pairs against 1/2.

    ``p = min(1, 2 P(X <= min(b01, b10)))`` with ``X ~ Binomial(b01 + b10, 1/2)``; 1 when
    there are no discordant pairs.
    """
    b01, b10 = check_count(b01, "b01"), check_count(b10, "b10")
    n = b01 + b10
    if n == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf_half(min(b01, b10), n))


# ---------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------


def _resample_counts(rng: np.random.Generator, m: int, k: int) -> np.ndarray:
    """(m, k) counts of k draws with replacement from k items, for m replicates."""
    idx = rng.integers(0, k, size=(m, k)) + (np.arange(m) * k)[:, None]
    return np.bincount(idx.ravel(), minlength=m * k).reshape(m, k)


def _bootstrap_means(d: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Crossed (seeds x examples) bootstrap replicates of ``mean(d)``, vectorised in chunks.

    Each replicate draws seeds with replacement and one set of example indices with
    replacement, used for every drawn seed (column i is the same input for every seed); the
    replicate is the weighted mean of ``d``.
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


def paired_bootstrap_interval(
    d: np.ndarray, n_boot: int, seed: int, confidence: float = 0.95
) -> Interval:
    """Percentile interval of the crossed bootstrap of ``mean(d)``, ``d = a - b`` per input.

    ``d``: shape (n_seeds, n_examples), row s from seed s, column i the same test input, so
    resampling an input keeps a and b paired. Efron & Tibshirani (1993, ch. 13) percentile
    interval; seeds and inputs resampled independently (Owen 2007, "pigeonhole" bootstrap);
    ``numpy.random.default_rng(seed)`` draws the replicates.
    """
    c = check_confidence(confidence)
    boot = _bootstrap_means(np.asarray(d), int(n_boot), np.random.default_rng(seed))
    lo, hi = np.quantile(boot, [0.5 * (1.0 - c), 0.5 * (1.0 + c)])
    return Interval(float(lo), float(hi))
