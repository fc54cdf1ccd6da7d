"""The claims' verdicts on constructed runs: a clear effect is supported, no effect is
inconclusive, a reversed effect is contradicted, and no verdict rests on a difference whose
interval contains 0. Also the per-example masks, the metrics over seeds and the table rows.
"""

import numpy as np
import pytest

from robustrank.evaluation import decode_mask, encode_mask
from robustrank.experiments.claims import ONE_SEED_CAVEAT, assess_claims
from robustrank.experiments.summary import (
    Outcomes,
    PresetSummary,
    RunKind,
    RunSummary,
    _table_row,
    strong_attack_of,
    table_metrics,
)

N_INPUTS = 400
# Student's t quantiles t_{0.975, df} (tabulated; Abramowitz & Stegun, Table 26.10).
T975 = {1: 12.706204736174707, 2: 4.302652729911275}


def _run(
    preset, kind, k, *, fooled=None, correct=None, rank=4.0, sparsity=100.0, strong_attack=None,
    **extra,
):  # fmt: skip
    """One seed's RunSummary with per-example outcomes (pgd on the paper subset, the
    strong attack, autoattack unless named, on the strong subset) when ``fooled`` is given."""
    outcomes = {}
    fooling, strong = {}, {}
    attack = strong_attack or "autoattack"
    if fooled is not None:
        correct = np.ones(N_INPUTS, bool) if correct is None else correct
        fooled = fooled & correct
        o = Outcomes(N_INPUTS, 1, correct, {"pgd": fooled, attack: fooled})
        outcomes = {"paper": o, "strong": o}
        fooling = {"pgd": float(fooled.sum() / correct.sum())}
        strong = {f"ra_{attack}": float(o.robust(attack).mean())}
    family = extra.pop("family", "fcnn")
    s = RunSummary(
        preset, family, preset, None, None, 0.9, fooling, {"W1": rank}, {"W1": sparsity}, 1, None
    )
    s.kind, s.seed, s.seed_index, s.outcomes, s.strong = RunKind(kind), k, k, outcomes, strong
    s.strong_attack = attack if strong else None
    for key, value in extra.items():
        setattr(s, key, value)
    return s


def _masks(rate, seeds, rng):
    return [rng.random(N_INPUTS) < rate for _ in range(seeds)]


def _presets(*groups):
    return {g[0].preset: PresetSummary.from_runs(list(g)) for g in groups}


def _case(nat_rate, reg_rate, nat_ranks, reg_ranks, seed=0):
    """A natural and a regularised fine-tune of it, one run per seed."""
    rng = np.random.default_rng(seed)
    n = len(nat_ranks)
    nat_f, reg_f = _masks(nat_rate, n, rng), _masks(reg_rate, n, rng)
    reg = dict(parent="nat", l1={"1": 0.01})
    nat = [_run("nat", "natural", k, fooled=nat_f[k], rank=nat_ranks[k]) for k in range(n)]
    regs = [
        _run("reg", "regularised", k, fooled=reg_f[k], rank=reg_ranks[k], **reg) for k in range(n)
    ]
    return assess_claims(_presets(nat, regs))


def _by_title(claims, start):
    return next(c for c in claims if c.claim.startswith(start))


def _assert_consistent(claims):
    """Every verdict follows from its interval (none rests on an interval containing 0)."""
    for claim in claims:
        for c in claim.comparisons:
            if c.ci95 is None or c.ci95.contains(0.0):
                assert c.verdict == "inconclusive", c.label
            elif (c.ci95.hi < 0) == (c.direction == "less"):
                assert c.verdict == "supported", c.label
            else:
                assert c.verdict == "contradicted", c.label


def test_clear_effect_is_supported():
    claims = _case(0.9, 0.3, [4.0, 4.2, 3.9], [3.0, 3.1, 2.8])
    _assert_consistent(claims)
    robust = _by_title(claims, "Claim 2: ")
    assert robust.verdict == "supported"
    (c,) = robust.comparisons
    assert c.direction == "less" and c.ci95.hi < 0 and c.n_seeds == 3
    assert c.n_examples == N_INPUTS and "widened to the t-interval" in c.method
    assert c.difference == pytest.approx(c.details["mean_a"] - c.details["mean_b"])
    premise = _by_title(claims, "Claim 2, premise")
    rank = next(c for c in premise.comparisons if "effective rank" in c.label)
    assert rank.verdict == "supported"
    assert rank.difference == pytest.approx(np.mean([3.0 - 4.0, 3.1 - 4.2, 2.8 - 3.9]))
    autoattack = _by_title(claims, "Claim 2 under AutoAttack")
    assert autoattack.verdict == "supported"
    assert autoattack.comparisons[0].direction == "greater"  # robust accuracy rises
    assert robust.evidence[0] == "1 supported, 0 inconclusive, 0 contradicted of 1 comparisons"


def test_no_effect_is_inconclusive():
    claims = _case(0.6, 0.6, [4.0, 4.3, 3.8], [4.1, 4.0, 3.9], seed=1)
    _assert_consistent(claims)
    for title in ("Claim 2: ", "Claim 2, premise", "Claim 2 under AutoAttack"):
        claim = _by_title(claims, title)
        assert claim.verdict == "inconclusive", title
        assert all(c.ci95.contains(0.0) for c in claim.comparisons)


def test_identical_models_are_inconclusive_never_supported():
    rng = np.random.default_rng(2)
    masks = _masks(0.5, 3, rng)
    nat = [_run("nat", "natural", k, fooled=masks[k]) for k in range(3)]
    reg = [
        _run("reg", "regularised", k, fooled=masks[k], parent="nat", l1={"1": 0.01})
        for k in range(3)
    ]
    claims = assess_claims(_presets(nat, reg))
    _assert_consistent(claims)
    c = _by_title(claims, "Claim 2: ").comparisons[0]
    assert c.difference == 0.0 and c.verdict == "inconclusive"


def test_reversed_effect_is_contradicted():
    claims = _case(0.4, 0.9, [3.0, 3.2, 2.9], [4.0, 4.1, 4.0])
    _assert_consistent(claims)
    assert _by_title(claims, "Claim 2: ").verdict == "contradicted"
    assert _by_title(claims, "Claim 2, premise").verdict == "contradicted"
    assert _by_title(claims, "Claim 2 under AutoAttack").verdict == "contradicted"


def test_a_claim_summarises_its_comparisons():
    # two regularised runs: one clearly more robust, one no different
    rng = np.random.default_rng(3)
    nat_f, good_f, same_f = _masks(0.9, 3, rng), _masks(0.3, 3, rng), _masks(0.9, 3, rng)
    reg = dict(parent="nat", l1={"1": 0.01})
    runs = _presets(
        [_run("nat", "natural", k, fooled=nat_f[k]) for k in range(3)],
        [_run("good", "regularised", k, fooled=good_f[k], **reg) for k in range(3)],
        [_run("same", "regularised", k, fooled=same_f[k], **reg) for k in range(3)],
    )
    claim = _by_title(assess_claims(runs), "Claim 2: ")
    assert [c.verdict for c in claim.comparisons] == ["supported", "inconclusive"]
    assert claim.verdict == "inconclusive"
    assert claim.counts() == {"supported": 1, "inconclusive": 1, "contradicted": 0, "total": 2}
    assert claim.evidence[0].startswith("1 supported, 1 inconclusive, 0 contradicted of 2")
    assert len(claim.evidence) == 3 and "[supported]" in claim.evidence[1]
    # one reversed comparison refutes the claim as stated
    runs["same"] = PresetSummary.from_runs(
        [_run("same", "regularised", k, fooled=np.ones(N_INPUTS, bool), **reg) for k in range(3)]
    )
    assert _by_title(assess_claims(runs), "Claim 2: ").verdict == "contradicted"
    first = claim.to_dict()["comparisons"][0]
    assert first["verdict"] == "supported"
    assert {"difference", "ci95", "direction", "method", "n_seeds"} <= set(first)


def test_structure_comparisons_pair_seed_k_with_seed_k():
    # between-seed spread dwarfs the effect; paired by seed the effect is exact
    nat_ranks, adv_ranks = [1.0, 5.0, 9.0], [0.9, 4.9, 8.9]
    nat = [_run("nat", "natural", k, rank=nat_ranks[k]) for k in range(3)]
    adv = [
        _run("adv", "adversarial", k, rank=adv_ranks[k], parent="nat") for k in (2, 0, 1)
    ]  # any order
    claim = assess_claims(_presets(nat, adv))[0]
    rank = next(c for c in claim.comparisons if "effective rank" in c.label)
    assert rank.verdict == "supported" and rank.difference == pytest.approx(-0.1)
    assert rank.details["per_seed_difference"] == pytest.approx([-0.1, -0.1, -0.1])
    sparsity = next(c for c in claim.comparisons if "effective sparsity" in c.label)
    assert sparsity.difference == 0.0 and sparsity.verdict == "inconclusive"


def test_one_seed_gives_no_interval_over_seeds():
    nat = [_run("nat", "natural", 0, rank=4.0)]
    adv = [_run("adv", "adversarial", 0, rank=1.0, parent="nat")]
    claim = assess_claims(_presets(nat, adv))[0]
    assert claim.comparisons and all(c.ci95 is None for c in claim.comparisons)
    assert claim.verdict == "inconclusive"  # a big effect, but no interval: no verdict


def test_one_seed_verdicts_carry_the_sampling_noise_caveat():
    one = _case(0.9, 0.3, [4.0], [3.0])
    robust = _by_title(one, "Claim 2: ")
    (c,) = robust.comparisons
    # one seed: an interval over the test inputs only, and a verdict read off it
    assert c.n_seeds == 1 and c.ci95 is not None and c.verdict == "supported"
    assert c.to_dict()["caveat"] == ONE_SEED_CAVEAT == robust.to_dict()["caveat"]
    assert "sampling noise only" in ONE_SEED_CAVEAT and "--seeds 3" in ONE_SEED_CAVEAT
    # one seed without an interval (structure): no verdict, so nothing to caveat
    premise = _by_title(one, "Claim 2, premise")
    assert all(c.ci95 is None and c.caveat is None for c in premise.comparisons)
    assert "caveat" not in premise.to_dict()
    two = _case(0.9, 0.3, [4.0, 4.2], [3.0, 3.1])
    for claim in two:
        d = claim.to_dict()
        assert "caveat" not in d and not any("caveat" in c for c in d["comparisons"])
    # the caveat is the only field one seed adds
    two_fields = set(_by_title(two, "Claim 2: ").comparisons[0].to_dict())
    assert set(c.to_dict()) - {"caveat"} == two_fields


def test_fooling_ratio_comparison_uses_inputs_correct_for_both_models_under_every_seed():
    rng = np.random.default_rng(4)
    correct = [rng.random(N_INPUTS) < 0.8 for _ in range(4)]
    fooled = _masks(0.5, 4, rng)
    reg = dict(parent="nat", l1={"1": 0.01})
    runs = _presets(
        [_run("nat", "natural", k, fooled=fooled[k], correct=correct[k]) for k in range(2)],
        [
            _run("reg", "regularised", k, fooled=fooled[2 + k], correct=correct[2 + k], **reg)
            for k in range(2)
        ],
    )
    c = _by_title(assess_claims(runs), "Claim 2: ").comparisons[0]
    keep = correct[0] & correct[1] & correct[2] & correct[3]
    assert c.n_examples == int(keep.sum())
    mean_reg = np.mean([fooled[2][keep].mean(), fooled[3][keep].mean()])
    mean_nat = np.mean([fooled[0][keep].mean(), fooled[1][keep].mean()])
    assert c.difference == pytest.approx(mean_reg - mean_nat)
    # robust accuracy is compared on every input
    ra = _by_title(assess_claims(runs), "Claim 2 under AutoAttack").comparisons[0]
    assert ra.n_examples == N_INPUTS


def test_without_outcomes_fooling_ratios_are_compared_over_seeds():
    nat = [_run("nat", "natural", k) for k in range(3)]
    reg = [_run("reg", "regularised", k, parent="nat", l1={"1": 0.01}) for k in range(3)]
    for k, (a, b) in enumerate(zip(nat, reg)):
        a.fooling, b.fooling = {"pgd": 0.9 + 0.01 * k}, {"pgd": 0.5 + 0.012 * k}
    c = _by_title(assess_claims(_presets(nat, reg)), "Claim 2: ").comparisons[0]
    assert c.method == "paired t-interval over seeds" and c.verdict == "supported"
    d = np.array([0.5 - 0.9, 0.512 - 0.91, 0.524 - 0.92])
    half = T975[2] * d.std(ddof=1) / np.sqrt(3)
    assert c.ci95.to_list() == pytest.approx([d.mean() - half, d.mean() + half])


def test_runs_evaluated_on_different_subsets_are_not_paired():
    nat = [_run("nat", "natural", 0, fooled=np.ones(N_INPUTS, bool))]
    reg = [_run("reg", "regularised", 0, fooled=np.ones(N_INPUTS, bool), parent="nat", l1={"1": 1})]
    reg[0].outcomes["paper"].seed = 7
    with pytest.raises(ValueError, match="different test subsets"):
        assess_claims(_presets(nat, reg))


def test_nuclear_claim_pairs_each_run_with_its_l1_only_twin():
    common = dict(parent="cnn-natural", l1={"1": 0.01, "2": 0.01}, family="cnn")
    groups = {}
    for name, w2_ranks, nuclear in (
        ("plain-l1", [5.0, 5.2, 4.9], {}),
        ("n-big", [4.0, 4.1, 3.8], {"2": 0.5}),
        ("n-small", [5.5, 5.8, 5.4], {"2": 0.1}),
    ):
        runs = [_run(name, "regularised", k, nuclear=nuclear, **common) for k in range(3)]
        for r, rank in zip(runs, w2_ranks):
            r.eff_rank = {"W1": 4.0, "W2": rank}
        groups[name] = PresetSummary.from_runs(runs)
    claim = next(c for c in assess_claims(groups) if c.claim.startswith("Nuclear-norm"))
    assert [c.details["a"] for c in claim.comparisons] == ["n-small", "n-big"]
    assert {c.details["b"] for c in claim.comparisons} == {"plain-l1"}
    assert [c.verdict for c in claim.comparisons] == ["contradicted", "supported"]
    assert claim.verdict == "contradicted"
    del groups["plain-l1"]  # no l1-only twin: nothing to compare
    assert not any(c.claim.startswith("Nuclear-norm") for c in assess_claims(groups))


def test_claims_classify_runs_by_config_not_by_name():
    # an adversarial run named like a regulariser, its natural parent under any name
    nat = [_run("base", "natural", k, rank=4.0 + 0.1 * k) for k in range(2)]
    odd = [_run("fcnn-l1-1e-2", "adversarial", k, rank=3.0, parent="base") for k in range(2)]
    c1, c2, premise = assess_claims(_presets(nat, odd))[:3]
    assert c1.comparisons and c1.comparisons[0].details["b"] == "base"
    assert c2.verdict == premise.verdict == "not measured"


def test_masks_round_trip_in_little_bit_order():
    mask = np.zeros(13, bool)
    mask[[0, 3, 8, 12]] = True
    # bit i of the byte string is input i: bytes 0b00001001, 0b00010001
    assert encode_mask(mask) == "0911"
    rng = np.random.default_rng(5)
    for n in (1, 8, 9, 300, 10000):
        m = rng.random(n) < 0.3
        assert np.array_equal(decode_mask(encode_mask(m), n), m)
    assert len(encode_mask(np.ones(10000, bool))) == 2500
    with pytest.raises(ValueError, match="evaluation.json"):
        decode_mask("0911", 30)


def test_metrics_are_means_with_t_intervals_and_wilson_intervals():
    runs = [_run("p", "natural", k) for k in range(2)]
    for r, (k, n) in zip(runs, [(30, 100), (50, 100)]):
        r.fooling = {"pgd": k / n}
        r.counts = {"fr_pgd": [k, n]}
    p = PresetSummary.from_runs(runs)
    m = p.metric("fr_pgd")
    assert m.stat.mean == pytest.approx(0.4)
    half = T975[1] * 0.2 / 2
    assert m.stat.ci95.to_list() == pytest.approx([0.4 - half, 0.4 + half])
    # Wilson (1927) for 80 of 200, z = 1.959963984540054, computed by hand
    z, k, n = 1.959963984540054, 80, 200
    centre = (k / n + z * z / (2 * n)) / (1 + z * z / n)
    h = z * np.sqrt(0.4 * 0.6 / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert m.pooled.to_list() == pytest.approx([centre - h, centre + h])
    assert [w.contains(v) for w, v in zip(m.wilson, [0.3, 0.5])] == [True, True]
    row = _table_row(p, ["pgd"])
    assert row["fr_pgd_mean"] == pytest.approx(0.4) and row["n_seeds"] == 2
    assert row["fr_pgd_ci_lo"] == pytest.approx(0.4 - half)
    assert row["fr_pgd_wilson_lo"] == pytest.approx(centre - h)
    assert row["fr_pgd"].startswith(f"0.400 ± {half:.3f} [±")
    one = PresetSummary.from_runs(runs[:1])
    assert one.metric("fr_pgd").stat.ci95 is None
    assert _table_row(one, ["pgd"])["fr_pgd"].startswith("0.300 [±")  # Wilson only


def test_the_strong_attack_is_named_by_the_evaluation_not_fixed_to_autoattack():
    """A profile whose strong attack is another registered one (APGD-CE here) gets its
    columns, labels and claim from the registry: ra_apgd-ce, "RA APGD-CE"."""
    rng = np.random.default_rng(3)
    nat_f, reg_f = _masks(0.9, 2, rng), _masks(0.3, 2, rng)
    nat = [_run("nat", "natural", k, fooled=nat_f[k], strong_attack="apgd-ce") for k in range(2)]
    reg = [
        _run("reg", "regularised", k, fooled=reg_f[k], strong_attack="apgd-ce", parent="nat",
             l1={"1": 0.01})
        for k in range(2)
    ]  # fmt: skip
    presets = _presets(nat, reg)
    claim = _by_title(assess_claims(presets), "Claim 2 under APGD-CE")
    assert claim.verdict == "supported"
    assert claim.comparisons[0].label == "reg vs nat, APGD-CE robust accuracy"
    labels = dict(table_metrics("fcnn", ["pgd"], strong_attack_of(presets.values())))
    assert labels["ra_apgd-ce"] == "RA APGD-CE" and "ra_autoattack" not in labels
    row = _table_row(presets["reg"], ["pgd"])
    expected = np.mean([(~f).mean() for f in reg_f])  # every input correct: RA = 1 - fooled
    assert row["ra_apgd-ce_mean"] == pytest.approx(expected)


def _twin_case(reg_rate, twin_rate, seed=0):
    """A natural run, a regularised fine-tune and its exact-structure twin, 3 seeds."""
    rng = np.random.default_rng(seed)
    nat_f, reg_f, twin_f = (_masks(r, 3, rng) for r in (0.7, reg_rate, twin_rate))
    nat = [_run("nat", "natural", k, fooled=nat_f[k]) for k in range(3)]
    reg = [_run("reg", "regularised", k, fooled=reg_f[k], parent="nat") for k in range(3)]
    twin = [_run("twin", "structured", k, fooled=twin_f[k], parent="nat") for k in range(3)]
    return assess_claims(_presets(nat, reg, twin), twins={"twin": "reg", "absent": "reg"})


def test_exact_twins_are_compared_with_their_penalty_and_with_natural_training():
    claims = _twin_case(0.5, 0.2)
    _assert_consistent(claims)
    twins = _by_title(claims, "Exact twins")
    (c,) = twins.comparisons  # the twin whose runs are absent is skipped
    assert c.details["a"] == "twin" and c.details["b"] == "reg" and c.direction == "greater"
    assert twins.verdict == "supported"  # robust accuracy 0.8 vs 0.5
    exact = _by_title(claims, "Claim 2 with exact structure")
    assert exact.verdict == "supported" and exact.comparisons[0].details["b"] == "nat"
    # the twin is not a regularised run: Claim 2 (the penalties) compares reg only
    assert [c.details["a"] for c in _by_title(claims, "Claim 2: ").comparisons] == ["reg"]
    reversed_claims = _twin_case(0.2, 0.5, seed=3)
    assert _by_title(reversed_claims, "Exact twins").verdict == "contradicted"
    same = _twin_case(0.4, 0.4, seed=4)
    assert _by_title(same, "Exact twins").verdict == "inconclusive"
    assert not any(c.claim.startswith("Exact twins") for c in assess_claims(_presets(
        [_run("nat", "natural", 0, fooled=np.ones(N_INPUTS, bool))]
    )))  # fmt: skip


def _certified_case(nat_rate, reg_rate, seed=0):
    """A natural run and a regularised fine-tune, 3 seeds, each certified by two methods at
    two eps; ``best`` is their union (what the summary computes)."""
    rng = np.random.default_rng(seed)
    runs = {}
    for name, kind, rate in (("nat", "natural", nat_rate), ("reg", "regularised", reg_rate)):
        seeds = []
        for k in range(3):
            masks = {}
            for eps, scale in ((0.01, 1.0), (0.05, 0.5)):
                a, b = (rng.random(N_INPUTS) < rate * scale for _ in range(2))
                masks |= {f"ibp@{eps:g}": a, f"crown@{eps:g}": a | b, f"best@{eps:g}": a | b}
            o = Outcomes(N_INPUTS, 1, np.ones(N_INPUTS, bool), {}, masks)
            extra = {"parent": "nat", "l1": {"1": 0.01}} if kind == "regularised" else {}
            seeds.append(_run(name, kind, k, outcomes={"certified": o}, **extra))
        runs[name] = seeds
    return assess_claims(_presets(runs["nat"], runs["reg"]))


def test_certified_claim_pairs_the_best_certificate_by_seed_and_input_at_every_eps():
    claims = _certified_case(0.2, 0.5)
    _assert_consistent(claims)
    claim = _by_title(claims, "Claim 2, certified")
    assert [c.details["metric"] for c in claim.comparisons] == ["ca_best@0.01", "ca_best@0.05"]
    assert claim.verdict == "supported"
    c = claim.comparisons[0]
    assert c.direction == "greater" and c.n_seeds == 3 and c.n_examples == N_INPUTS
    assert c.difference == pytest.approx(c.details["mean_a"] - c.details["mean_b"])
    assert _by_title(_certified_case(0.5, 0.2, seed=1), "Claim 2, certified").verdict == (
        "contradicted"
    )
    assert _by_title(_certified_case(0.3, 0.3, seed=2), "Claim 2, certified").verdict == (
        "inconclusive"
    )


def test_certified_training_is_judged_for_claim_1_by_its_structure():
    nat = [_run("nat", "natural", k, rank=4.0 + 0.1 * k) for k in range(3)]
    ibp = [_run("ibp", "certified", k, rank=2.0 + 0.1 * k, parent="nat") for k in range(3)]
    claims = assess_claims(_presets(nat, ibp))
    claim = _by_title(claims, "Claim 1, certified training")
    rank = next(c for c in claim.comparisons if "effective rank" in c.label)
    assert rank.verdict == "supported" and rank.difference == pytest.approx(-2.0)
    # certified training is neither adversarial (Claim 1) nor regularised (Claim 2)
    assert _by_title(claims, "Claim 1: ").verdict == "not measured"
    assert not any(c.claim.startswith("Claim 2, certified") for c in claims)
