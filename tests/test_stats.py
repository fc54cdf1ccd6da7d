"""robustrank.stats and robustrank.intervals: intervals, paired comparisons and verdicts.

The distributions come from scipy.stats; these tests check robustrank's use of them and its own
logic against independent references: closed forms written out here (Student-t for df 1, 2, 4;
the Wilson score equation; binomial sums with math.comb), published table values, scipy's own
implementations of the same procedures (Wilson interval, one-sample t-test), second tiny
implementations written here (Newcombe's method 10, the crossed bootstrap), and coverage
simulations with fixed seeds.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from robustrank import intervals, stats
from robustrank.intervals import paired_bootstrap_interval, t_interval
from robustrank.plots import plot_forest
from robustrank.stats import (
    Comparison,
    Interval,
    SeedStat,
    Verdict,
    binomial_cdf_half,
    format_interval,
    mcnemar_exact,
    newcombe_paired_interval,
    normal_cdf,
    normal_quantile,
    paired_difference,
    seed_difference,
    seed_summary,
    summarise,
    t_cdf,
    t_quantile,
    verdict,
    wilson_interval,
)

Z975 = 1.959963984540054  # Phi^-1(0.975), tabulated

# ---------------------------------------------------------------------------------------------
# Quantile wrappers (scipy.stats): argument order, tails, df = inf, validation
# ---------------------------------------------------------------------------------------------


def test_stats_reexports_the_interval_primitives():
    for name in stats.__all__:
        assert hasattr(stats, name), name
    for name in ("Interval", "format_interval", "wilson_interval", "t_quantile", "mcnemar_exact"):
        assert getattr(stats, name) is getattr(intervals, name)


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.706204736),
        (0.975, 2, 4.302652730),
        (0.975, 5, 2.570581836),
        (0.975, 10, 2.228138852),
        (0.975, 30, 2.042272456),
        (0.9, 3, 1.637744354),
    ],
)
def test_t_quantile_matches_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, rel=1e-8)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, rel=1e-8)


def _t_closed_form(p: float, df: int) -> float:
    """Closed-form Student-t quantiles (df 1: Cauchy; 2; 4: Hill 1970 / trigonometric)."""
    if df == 1:
        return -1.0 / math.tan(math.pi * p) if p != 0.5 else 0.0
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    a = 4 * p * (1 - p)
    q = math.cos(math.acos(math.sqrt(a)) / 3) / math.sqrt(a)
    return math.copysign(2 * math.sqrt(q - 1), p - 0.5)


@pytest.mark.parametrize("df", [1, 2, 4])
@pytest.mark.parametrize("p", [0.005, 0.025, 0.05, 0.3, 0.5, 0.9, 0.95, 0.975, 0.995])
def test_t_quantile_and_cdf_match_closed_forms(p, df):
    t = t_quantile(p, df)
    assert t == pytest.approx(_t_closed_form(p, df), rel=1e-10, abs=1e-14)
    assert t_cdf(t, df) == pytest.approx(p, rel=1e-10)


def test_infinite_df_is_the_normal():
    for p in (0.025, 0.5, 0.9, 0.975, 0.995):
        z = normal_quantile(p)
        assert t_quantile(p, math.inf) == z  # exactly the normal quantile
        assert normal_cdf(z) == pytest.approx(p, rel=1e-14)
        assert (
            t_cdf(z, math.inf)
            == normal_cdf(z)
            == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)), rel=1e-14)
        )
    assert normal_quantile(0.975) == Z975


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, float("nan")])
def test_quantiles_reject_bad_probabilities(bad):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        t_quantile(bad, 3)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        normal_quantile(bad)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_quantile(0.9, 0)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t_cdf(1.0, float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        t_cdf(float("nan"), 3)


# ---------------------------------------------------------------------------------------------
# Seed summaries
# ---------------------------------------------------------------------------------------------


def test_seed_summary_matches_hand_computation():
    values = [0.91, 0.93, 0.96, 0.92]
    mean = (0.91 + 0.93 + 0.96 + 0.92) / 4
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    half = 3.182446305 * s / math.sqrt(4)  # t_{0.975, 3} from tables
    stat = seed_summary(values)
    assert stat.mean == pytest.approx(mean, rel=1e-14)
    assert stat.ci95.lo == pytest.approx(mean - half, rel=1e-9)
    assert stat.ci95.hi == pytest.approx(mean + half, rel=1e-9)
    assert stat.half_width == pytest.approx(half, rel=1e-9)
    assert stat.n_seeds == 4 and stat.per_seed == tuple(values)
    assert stat.format() == f"{mean:.3f} ± {half:.3f}"
    d = json.loads(json.dumps(stat.to_dict()))
    assert d == {"mean": stat.mean, "ci95": [stat.ci95.lo, stat.ci95.hi], "n_seeds": 4,
                 "per_seed": values}  # fmt: skip
    # 90% interval uses t_{0.95, 3} = 2.353363435
    assert seed_summary(values, 0.9).half_width == pytest.approx(2.353363435 * s / 2, rel=1e-9)


def test_seed_summary_one_seed_and_bad_values():
    one = seed_summary([0.934])
    assert isinstance(one, SeedStat)
    assert one.ci95 is None and math.isnan(one.half_width)
    assert one.format() == "0.934"
    assert one.to_dict() == {"mean": 0.934, "ci95": None, "n_seeds": 1, "per_seed": [0.934]}
    with pytest.raises(ValueError, match=r"NaN/inf at seed positions \[1\].*rerun"):
        seed_summary([0.9, float("nan"), 0.8])
    with pytest.raises(ValueError, match="empty"):
        seed_summary([])


@pytest.mark.parametrize("n", [2, 3, 5])
def test_seed_summary_uses_the_right_t_quantile(n):
    # df = n - 1 = 1, 2, 4: t_{0.975, df} from the closed forms; the interval also equals
    # scipy's own t-interval of a mean (scipy.stats.t.interval with the standard error)
    values = np.random.default_rng(n).normal(0.9, 0.02, size=n).round(4).tolist()
    mean = sum(values) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) / math.sqrt(n)
    stat = seed_summary(values)
    assert stat.half_width == pytest.approx(_t_closed_form(0.975, n - 1) * se, rel=1e-10)
    lo, hi = sps.t.interval(0.95, n - 1, loc=mean, scale=se)
    assert stat.ci95.lo == pytest.approx(lo, rel=1e-12)
    assert stat.ci95.hi == pytest.approx(hi, rel=1e-12)
    assert t_interval(values) == stat.ci95
    assert t_interval([0.5]) is None
    with pytest.raises(ValueError, match="confidence"):
        t_interval(values, 95)


def test_t_interval_coverage_with_three_seeds():
    rng = np.random.default_rng(2024)
    true_mean, reps = 0.7, 4000
    draws = rng.normal(true_mean, 0.05, size=(reps, 3))
    covered = sum(seed_summary(row).ci95.contains(true_mean) for row in draws)
    assert abs(covered / reps - 0.95) <= 0.02


def test_format_interval_covers_asymmetric_intervals():
    assert format_interval(0.1, Interval(0.05, 0.2), 2) == "0.10 ± 0.10"
    assert format_interval(0.1, None) == "0.100"
    iv = Interval(-1, 3)
    assert iv.contains(0) and not iv.contains(3.5) and iv.half_width == 2
    assert iv.to_list() == [-1.0, 3.0]
    with pytest.raises(ValueError, match="exceeds"):
        Interval(1, 0)


# ---------------------------------------------------------------------------------------------
# Wilson
# ---------------------------------------------------------------------------------------------


def test_wilson_closed_forms():
    z2 = Z975**2
    iv = wilson_interval(0, 10)
    assert iv.lo == 0.0 and iv.hi == pytest.approx(z2 / (10 + z2), rel=1e-12)
    iv = wilson_interval(10, 10)
    assert iv.hi == 1.0 and iv.lo == pytest.approx(10 / (10 + z2), rel=1e-12)
    iv = wilson_interval(5, 10)
    assert iv.lo + iv.hi == pytest.approx(1.0, abs=1e-12)
    # Wilson's bounds are the roots of the score equation (p_hat - p)^2 = z^2 p (1 - p) / n
    for k, n in ((1, 10), (37, 100), (912, 1000), (3, 7)):
        p_hat = k / n
        for p in wilson_interval(k, n).to_list():
            assert (p_hat - p) ** 2 == pytest.approx(Z975**2 * p * (1 - p) / n, rel=1e-9)


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_matches_scipy_wilson(confidence):
    # scipy's independent implementation: BinomTestResult.proportion_ci(method="wilson")
    for n in (1, 7, 10, 100, 1000):
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            ref = sps.binomtest(k, n).proportion_ci(confidence, method="wilson")
            iv = wilson_interval(k, n, confidence)
            assert iv.lo == pytest.approx(ref.low, rel=1e-12, abs=1e-15), (k, n)
            assert iv.hi == pytest.approx(ref.high, rel=1e-12), (k, n)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError, match=r"n=0.*evaluate"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="exceeds"):
        wilson_interval(5, 4)
    with pytest.raises(ValueError, match="non-negative integer"):
        wilson_interval(1.5, 4)


def test_wilson_coverage_over_grid():
    rng = np.random.default_rng(7)
    coverages = []
    for n in (100, 500, 1000):
        for p in np.arange(0.05, 0.951, 0.05):
            ks, counts = np.unique(rng.binomial(n, p, size=2000), return_counts=True)
            hit = [wilson_interval(int(k), n).contains(p) for k in ks]
            coverages.append(float(np.dot(hit, counts)) / counts.sum())
    assert abs(np.mean(coverages) - 0.95) <= 0.02
    assert min(coverages) > 0.9  # no grid point badly off


# ---------------------------------------------------------------------------------------------
# McNemar, Newcombe
# ---------------------------------------------------------------------------------------------


def _binom_two_sided(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


def test_mcnemar_exact_matches_hand_computation():
    assert mcnemar_exact(0, 5) == pytest.approx(2 * 0.5**5, rel=1e-12)
    assert mcnemar_exact(5, 0) == pytest.approx(0.0625, rel=1e-12)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(7, 7) == 1.0
    for b, c in ((1, 9), (12, 30), (40, 60), (180, 230)):
        assert mcnemar_exact(b, c) == pytest.approx(_binom_two_sided(b, c), rel=1e-10)
    assert binomial_cdf_half(3, 10) == pytest.approx(
        sum(math.comb(10, i) for i in range(4)) / 1024, rel=1e-12
    )


def _newcombe_reference(e: int, f: int, g: int, h: int, confidence: float = 0.95):
    """Newcombe (1998) method 10 as written in the paper, on scipy's Wilson limits.

    Pairs: (1, 1) e times, (1, 0) f, (0, 1) g, (0, 0) h; theta = (f - g) / n.
    """
    n = e + f + g + h
    p1, p2 = (e + f) / n, (e + g) / n
    ci1 = sps.binomtest(e + f, n).proportion_ci(confidence, method="wilson")
    ci2 = sps.binomtest(e + g, n).proportion_ci(confidence, method="wilson")
    l2, u2, l3, u3 = ci1.low, ci1.high, ci2.low, ci2.high
    a_prod = (e + f) * (g + h) * (e + g) * (f + h)
    if e * h > f * g + n / 2:
        c = e * h - f * g - n / 2
    elif e * h >= f * g:
        c = 0.0
    else:
        c = e * h - f * g
    phi = 0.0 if a_prod == 0 else c / math.sqrt(a_prod)
    delta = (p1 - l2) ** 2 - 2 * phi * (p1 - l2) * (u3 - p2) + (u3 - p2) ** 2
    eps = (u2 - p1) ** 2 - 2 * phi * (u2 - p1) * (p2 - l3) + (p2 - l3) ** 2
    theta = (f - g) / n
    return max(-1.0, theta - math.sqrt(max(delta, 0.0))), min(1.0, theta + math.sqrt(max(eps, 0.0)))


def test_newcombe_matches_a_second_implementation():
    rng = np.random.default_rng(3)
    tables = [(30, 0, 0, 70), (0, 5, 0, 0), (59, 6, 16, 80), (10, 0, 10, 0), (1, 1, 7, 12)]
    tables += [tuple(int(v) for v in rng.integers(0, 60, size=4)) for _ in range(100)]
    for table in tables:
        if sum(table) == 0:
            continue
        for confidence in (0.9, 0.95):
            lo, hi = _newcombe_reference(*table, confidence)
            iv = newcombe_paired_interval(*table, confidence)
            assert iv.lo == pytest.approx(lo, rel=1e-10, abs=1e-13), table
            assert iv.hi == pytest.approx(hi, rel=1e-10, abs=1e-13), table


def test_newcombe_interval_properties():
    # no discordant pairs and balanced margins: a point difference of 0 inside the interval
    iv = newcombe_paired_interval(30, 0, 0, 70)
    assert iv.contains(0.0) and iv.lo < 0 < iv.hi
    # swapping a and b mirrors the interval
    iv1 = newcombe_paired_interval(59, 6, 16, 80)
    iv2 = newcombe_paired_interval(59, 16, 6, 80)
    assert iv1.lo == pytest.approx(-iv2.hi) and iv1.hi == pytest.approx(-iv2.lo)
    assert iv1.contains((6 - 16) / 161)
    # for huge n it approaches the Wald interval of the paired difference
    n10, n01, n = 30_000, 20_000, 1_000_000
    d = (n10 - n01) / n
    se = math.sqrt((n10 + n01) / n - d * d) / math.sqrt(n)
    iv = newcombe_paired_interval(400_000, n10, n01, n - 400_000 - n10 - n01)
    assert iv.lo == pytest.approx(d - Z975 * se, rel=2e-3)
    assert iv.hi == pytest.approx(d + Z975 * se, rel=2e-3)


# ---------------------------------------------------------------------------------------------
# Paired bootstrap
# ---------------------------------------------------------------------------------------------


def _paired_outcomes(rng, n_seeds, n_ex, seed_sd=0.0, shift=0.05):
    """Per-input probabilities shared across seeds, a per-seed shift of model a's outcome
    probability (mean 0), and common uniforms (positive pairing). E[a - b] = ``shift``."""
    v, w = rng.random(n_ex), rng.random(n_ex)
    pa = 0.25 + 0.4 * v + shift + rng.uniform(-seed_sd, seed_sd, size=(n_seeds, 1))
    pb = 0.15 + 0.4 * v + 0.2 * w
    u = rng.random((n_seeds, n_ex))
    return (u < pa).astype(np.int8), (u < pb).astype(np.int8)


def _crossed_bootstrap_reference(d: np.ndarray, n_boot: int, seed: int, confidence: float):
    """Loop version of the crossed bootstrap: replicate r averages d over the drawn seeds x the
    drawn inputs (one input draw shared by every drawn seed, and by a and b through d)."""
    rng = np.random.default_rng(seed)
    n_seeds, n_ex = d.shape
    seed_draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    input_draws = rng.integers(0, n_ex, size=(n_boot, n_ex))
    reps = [d[np.ix_(s, i)].mean() for s, i in zip(seed_draws, input_draws)]
    return np.quantile(reps, [(1 - confidence) / 2, (1 + confidence) / 2])


@pytest.mark.parametrize(("n_seeds", "confidence"), [(1, 0.95), (3, 0.95), (4, 0.9)])
def test_paired_bootstrap_matches_loop_reference(n_seeds, confidence):
    a, b = _paired_outcomes(np.random.default_rng(n_seeds), n_seeds, 60, seed_sd=0.1)
    d = a.astype(int) - b
    lo, hi = _crossed_bootstrap_reference(d, 400, 17, confidence)
    iv = paired_bootstrap_interval(d, 400, 17, confidence)
    assert iv.lo == pytest.approx(lo, abs=1e-12) and iv.hi == pytest.approx(hi, abs=1e-12)
    comp = paired_difference(a, b, "greater", n_boot=400, seed=17, confidence=confidence)
    assert comp.ci95 == iv


def test_paired_bootstrap_agrees_with_newcombe_one_seed():
    rng = np.random.default_rng(11)
    a, b = _paired_outcomes(rng, 1, 1000)
    comp = paired_difference(a[0], b[0], "greater", n_boot=4000, seed=3)
    n11 = int(((a == 1) & (b == 1)).sum())
    n10 = int(((a == 1) & (b == 0)).sum())
    n01 = int(((a == 0) & (b == 1)).sum())
    ref = newcombe_paired_interval(n11, n10, n01, 1000 - n11 - n10 - n01)
    assert comp.difference == pytest.approx((n10 - n01) / 1000)
    assert comp.ci95.lo == pytest.approx(ref.lo, abs=0.004)
    assert comp.ci95.hi == pytest.approx(ref.hi, abs=0.004)
    assert comp.p_value == pytest.approx(_binom_two_sided(n10, n01), rel=1e-10)
    assert comp.n_seeds == 1 and comp.n_examples == 1000


def test_paired_bootstrap_spread_matches_closed_form_variance():
    # bootstrap sd of a paired difference vs the plug-in sd sqrt((p10 + p01 - d^2) / n)
    rng = np.random.default_rng(5)
    a, b = _paired_outcomes(rng, 1, 2000)
    comp = paired_difference(a, b, "greater", n_boot=4000, seed=9)
    p10, p01 = ((a == 1) & (b == 0)).mean(), ((a == 0) & (b == 1)).mean()
    sd = math.sqrt((p10 + p01 - (p10 - p01) ** 2) / 2000)
    assert comp.ci95.hi - comp.ci95.lo == pytest.approx(2 * Z975 * sd, rel=0.08)


def _coverage(rng, n_seeds, seed_sd, reps=250, **kw) -> float:
    hits = 0
    for r in range(reps):
        a, b = _paired_outcomes(rng, n_seeds, 200, seed_sd=seed_sd, shift=0.05)
        comp = paired_difference(a, b, "greater", n_boot=300, seed=r, **kw)
        hits += comp.ci95.contains(0.05)
    return hits / reps


def test_paired_bootstrap_coverage_one_seed():
    assert 0.9 <= _coverage(np.random.default_rng(100), 1, 0.0) <= 0.985


def test_paired_bootstrap_coverage_over_seeds():
    # without a seed effect the crossed bootstrap is at least nominal (mildly conservative)
    assert _coverage(np.random.default_rng(101), 3, 0.0, reps=150) >= 0.92
    # with a large seed-to-seed spread (plain bootstrap ~0.8 here), the conservative interval
    # (hull with the t-interval over seeds) stays close to nominal with three seeds
    assert _coverage(np.random.default_rng(102), 3, 0.1, reps=400, conservative=True) >= 0.9


def _constructed(n10: int, n01: int, n: int = 1000, n_seeds: int = 2):
    """Outcomes with exactly n10 (a=1, b=0) and n01 (a=0, b=1) pairs in every seed."""
    a = np.zeros((n_seeds, n), dtype=int)
    b = np.zeros((n_seeds, n), dtype=int)
    a[:, :n10] = 1
    b[:, n10 : n10 + n01] = 1
    a[:, n - n // 4 :] = b[:, n - n // 4 :] = 1  # concordant fooled inputs
    return a, b


def test_verdicts_on_constructed_cases():
    a, b = _constructed(0, 120)  # a fooled far less often: a - b = -0.12
    clear = paired_difference(a, b, "less", label="clear")
    assert clear.verdict == Verdict.supported and clear.ci95.hi < 0
    assert paired_difference(a, b, "greater").verdict == Verdict.contradicted
    a, b = _constructed(60, 60)  # same rate, many discordant pairs both ways
    none = paired_difference(a, b, "less")
    assert none.difference == 0 and none.verdict == Verdict.inconclusive
    a, b = _constructed(120, 0)
    assert paired_difference(a, b, "less").verdict == Verdict.contradicted
    # one seed: the exact McNemar test agrees with the verdict
    a, b = _constructed(0, 120, n_seeds=1)
    one = paired_difference(a, b, "less")
    assert one.verdict == Verdict.supported and one.p_value == pytest.approx(2 * 0.5**120)


def test_verdict_rule_and_seed_difference():
    assert verdict(Interval(0.01, 0.2), "greater") == Verdict.supported
    assert verdict(Interval(0.01, 0.2), "less") == Verdict.contradicted
    assert verdict(Interval(-0.2, -0.01), "less") == Verdict.supported
    assert verdict(Interval(-0.2, 0.0), "less") == Verdict.inconclusive  # touches 0
    assert verdict(None, "less") == Verdict.inconclusive
    with pytest.raises(ValueError, match="'greater' or 'less'"):
        verdict(Interval(0, 1), "bigger")
    ranks_reg, ranks_nat = [3.1, 3.3, 3.0], [9.8, 10.4, 10.1]
    comp = seed_difference(ranks_reg, ranks_nat, "less", label="eff rank W1")
    ref = seed_summary([r - n for r, n in zip(ranks_reg, ranks_nat)])
    assert comp.ci95 == ref.ci95 and comp.verdict == Verdict.supported
    ttest = sps.ttest_1samp([r - n for r, n in zip(ranks_reg, ranks_nat)], 0.0)
    assert comp.p_value == pytest.approx(ttest.pvalue, rel=1e-10)
    assert seed_difference([1.0, 1.2], [1.1, 1.0], "greater").verdict == Verdict.inconclusive
    single = seed_difference([3.0], [10.0], "less")
    assert single.ci95 is None and single.verdict == Verdict.inconclusive
    assert "one seed" in single.details["reason"]
    with pytest.raises(ValueError, match="same seeds"):
        seed_difference([1.0, 2.0], [1.0], "less")


def _comp(v: Verdict) -> Comparison:
    return Comparison("x", 0.0, Interval(-1, 1), v, "less", "test", 1)


def test_summarise_rule():
    s, c, i = Verdict.supported, Verdict.contradicted, Verdict.inconclusive
    assert summarise([_comp(s), _comp(s)]) == s
    assert summarise([_comp(s), _comp(i)]) == i
    assert summarise([_comp(s), _comp(c)]) == c
    assert summarise([_comp(i), _comp(c), _comp(s)]) == c
    assert summarise([_comp(i)]) == i
    with pytest.raises(ValueError, match="at least one comparison"):
        summarise([])


def test_paired_difference_validates_and_serialises():
    a, b = _constructed(10, 20, n=200, n_seeds=3)
    comp = paired_difference(a, b, "less", label="fr", n_boot=500, seed=4)
    assert comp.difference == pytest.approx(-10 / 200)
    again = paired_difference(a, b, "less", label="fr", n_boot=500, seed=4)
    assert again.ci95 == comp.ci95  # reproducible for a fixed seed
    d = json.loads(json.dumps(comp.to_dict(), allow_nan=False))
    assert d["ci95"] == comp.ci95.to_list() and d["verdict"] == str(comp.verdict)
    assert d["n_seeds"] == 3 and d["n_examples"] == 200 and d["details"]["seed_t_ci95"]
    # conservative: the hull of the bootstrap interval and the t-interval over seeds
    a, b = _paired_outcomes(np.random.default_rng(8), 3, 200, seed_sd=0.15)
    plain = paired_difference(a, b, "greater", n_boot=500, seed=4)
    wide = paired_difference(a, b, "greater", n_boot=500, seed=4, conservative=True)
    boot, seed_ci = plain.ci95, seed_summary(plain.details["per_seed_difference"]).ci95
    assert seed_ci.half_width > boot.half_width  # the widening is not vacuous here
    assert wide.details["seed_t_ci95"] == seed_ci.to_list()
    assert wide.details["bootstrap_ci95"] == boot.to_list()
    assert wide.ci95 == Interval(min(boot.lo, seed_ci.lo), max(boot.hi, seed_ci.hi))
    with pytest.raises(ValueError, match="same shape"):
        paired_difference(a, b[:, :-1], "less")
    with pytest.raises(ValueError, match="0/1 outcomes"):
        paired_difference(a * 0.5, b, "less")
    with pytest.raises(ValueError, match="n_boot"):
        paired_difference(a, b, "less", n_boot=10)


def test_plot_forest_writes_png(tmp_path):
    a, b = _constructed(0, 120)
    comps = [
        paired_difference(a, b, "less", label="FR PGD: l1 - natural", n_boot=200),
        paired_difference(b, a, "less", label="reversed", n_boot=200),
        seed_difference([3.0], [10.0], "less", label="eff rank (one seed)"),
    ]
    out = plot_forest(comps, tmp_path / "claim1.png", "Claim 1")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = plot_forest([c.to_dict() for c in comps], tmp_path / "claim1-dicts.png", "Claim 1")
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="at least one comparison"):
        plot_forest([], tmp_path / "empty.png", "none")
