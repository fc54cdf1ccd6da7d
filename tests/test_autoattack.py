"""AutoAttack ensemble, its registry entries and robustness curves, on models whose exact
robustness is known (tests/linear_reference.py) or checked independently."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from linear_reference import linear_problem
from robustrank.attacks import (
    AUTOATTACK_VERSIONS,
    PGD,
    AutoAttack,
    create_attack,
    get_attack,
    list_attacks,
)
from robustrank.evaluation import (
    confirm_curve,
    evaluate,
    is_minimal_perturbation,
    robustness_curve,
)

EVAL_ATTACKS = ["apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square", "autoattack"]


@pytest.fixture(scope="module")
def problem():
    return linear_problem(n=200, eps=0.05, seed=0)


@pytest.fixture(scope="module")
def aa_result(problem):
    aa = AutoAttack(problem.model, problem.eps)
    res = aa.run(problem.x, problem.y)
    return aa, res


def test_registry_has_every_evaluation_attack_after_the_papers():
    names = list_attacks()
    assert names[:3] == ["fgsm", "pgd", "gnm"]
    for name in EVAL_ATTACKS:
        assert name in names
    assert create_attack("apgd-dlr", nn.Linear(2, 2), 0.1).name == "apgd-dlr"
    assert create_attack("apgd-ce", nn.Linear(2, 2), 0.1).name == "apgd-ce"
    assert create_attack("fab-t", nn.Linear(2, 2), 0.1).name == "fab-t"
    assert get_attack("autoattack").defaults["version"] == "standard"


def test_autoattack_reaches_the_exact_robust_accuracy_of_a_linear_model(problem, aa_result):
    aa, res = aa_result
    breakable = problem.breakable()
    assert torch.equal(res.fooled, breakable)  # exactly the breakable inputs, no more, no less
    with torch.no_grad():
        pred = problem.model(res.x_adv).argmax(1)
    assert bool((pred[res.fooled] != problem.y[res.fooled]).all())
    assert float((res.x_adv - problem.x).abs().max()) <= problem.eps + 1e-6
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1


def test_autoattack_components_attack_only_what_is_still_robust(problem, aa_result):
    aa, res = aa_result
    names = [s.name for s in aa.stats]
    assert names == [n for n, _ in AUTOATTACK_VERSIONS["standard"]]
    attacked = problem.x.shape[0]
    for s in aa.stats:
        if s.n_attacked:
            assert s.n_attacked == attacked  # everything still robust, nothing more
        attacked -= s.n_broken
    assert sum(s.n_broken for s in aa.stats) == int(res.fooled.sum())
    assert aa.stats[0].backward > 0 and aa.stats[-1].backward == 0  # Square: no gradients
    assert aa.counts()["forward"] >= sum(s.forward for s in aa.stats)


def test_autoattack_is_deterministic_and_restores_modes(problem):
    inner = linear_problem(n=60, eps=0.05, seed=1).model
    model = nn.Sequential(nn.Dropout(0.5), inner).train()
    a = AutoAttack(model, problem.eps, seed=3).run(problem.x[:60], problem.y[:60])
    b = AutoAttack(model, problem.eps, seed=3).run(problem.x[:60], problem.y[:60])
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.fooled, b.fooled)
    assert model.training and model[1].training
    assert all(p.grad is None for p in model.parameters())


def test_custom_and_plus_ensembles_and_bad_arguments(problem):
    custom = AutoAttack(problem.model, problem.eps, attacks=["fgsm", ("pgd", {"steps": 5})])
    assert custom.version == "custom" and [c.name for c in custom.components] == ["fgsm", "pgd"]
    res = custom.run(problem.x, problem.y)
    pgd = PGD(problem.model, problem.eps, alpha=0.01, steps=5, seed=0).run(problem.x, problem.y)
    assert bool((res.fooled | ~pgd.fooled).all())  # never weaker than its last member alone
    plus = AutoAttack(problem.model, problem.eps, version="plus", steps=10, n_queries=50)
    assert [c.name for c in plus.components] == [n for n, _ in AUTOATTACK_VERSIONS["plus"]]
    assert all(c.params().get("steps", 10) == 10 for c in plus.components)
    with pytest.raises(ValueError, match="unknown AutoAttack version 'strong'"):
        AutoAttack(problem.model, 0.05, version="strong")
    with pytest.raises(ValueError, match="cannot contain another AutoAttack"):
        AutoAttack(problem.model, 0.05, attacks=["autoattack"])
    with pytest.raises(ValueError, match="non-empty list"):
        AutoAttack(problem.model, 0.05, attacks=[])


def test_evaluate_reports_the_components_and_model_evaluations(problem):
    aa = create_attack("autoattack", problem.model, problem.eps, steps=20, n_queries=200)
    res = evaluate(problem.model, aa, problem.x, problem.y, early_stop=True)
    parts = res.details["components"]
    assert [p["name"] for p in parts] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert sum(p["n_broken"] for p in parts) == res.n_fooled
    assert res.forward >= sum(p["forward"] for p in parts) > 0 and res.backward > 0
    assert res.fooled is not None and int(res.fooled.sum()) == res.n_fooled
    assert "fooled" not in res.to_dict()
    # a second evaluation with the same object starts its counts afresh
    again = evaluate(problem.model, aa, problem.x, problem.y, early_stop=True)
    assert again.forward == res.forward
    assert [p["n_broken"] for p in again.details["components"]] == [p["n_broken"] for p in parts]


# --------------------------------------------------------------------------- curves


def test_fab_curve_matches_the_closed_form_minimal_norms(problem):
    assert is_minimal_perturbation("fab") and not is_minimal_perturbation("pgd")
    grid = [0.0, 0.02, 0.05, 0.08, 0.2]
    curve = robustness_curve(problem.model, problem.x, problem.y, grid, "fab")
    assert curve.method == "minimal"
    exact = problem.min_norm()
    assert torch.allclose(curve.breaking_eps, exact, rtol=1e-3, atol=1e-5)
    for e, ra in zip(grid, curve.robust_accuracy):
        assert abs(ra - problem.exact_robust_accuracy(e)) <= 0.01  # 2 inputs at a boundary
    assert curve.robust_accuracy[0] == 1.0 and curve.robust_accuracy[-1] == 0.0
    assert curve.fooling_ratio == pytest.approx([1 - r for r in curve.robust_accuracy])


def test_sweep_curve_is_monotone_and_never_below_the_exact_curve(problem):
    grid = [0.01, 0.03, 0.05, 0.1]
    curve = robustness_curve(
        problem.model, problem.x, problem.y, grid, "pgd", steps=10, alpha=0.01, seed=0
    )
    assert curve.method == "sweep"
    ra = curve.robust_accuracy
    assert all(b <= a for a, b in zip(ra, ra[1:]))
    for e, r in zip(grid, ra):
        assert r >= problem.exact_robust_accuracy(e) - 1e-12
    # every breaking eps is a grid point (the first budget that broke it) or inf
    finite = curve.breaking_eps[torch.isfinite(curve.breaking_eps)]
    assert set(finite.tolist()) <= set(grid)


def test_confirmation_folds_the_ensemble_in_per_example(problem):
    curve = robustness_curve(
        problem.model, problem.x, problem.y, [0.05], "fgsm", confirm="autoattack"
    )
    (record,) = curve.confirmations
    assert record["attack"] == "autoattack" and record["eps"] == 0.05
    assert curve.robust_accuracy_at(0.05) == pytest.approx(problem.exact_robust_accuracy())
    assert record["robust_accuracy_before"] >= record["robust_accuracy"]
    again = confirm_curve(curve, problem.model, problem.x, problem.y, "fgsm", 0.05)
    assert again["broken"] == 0  # nothing left that a weaker attack can add
    doc = curve.to_dict()
    assert doc["n"] == 200 and len(doc["confirmations"]) == 2
    assert math.isfinite(doc["median_breaking_eps"])


def test_robustness_curve_rejects_bad_grids(problem):
    with pytest.raises(ValueError, match="eps_grid is empty"):
        robustness_curve(problem.model, problem.x, problem.y, [], "fab")
    with pytest.raises(ValueError, match="finite and >= 0"):
        robustness_curve(problem.model, problem.x, problem.y, [-0.1, 0.1], "fab")
    with pytest.raises(ValueError, match="unknown attack"):
        robustness_curve(problem.model, problem.x, problem.y, [0.1], "fabb")


def test_curve_figure_is_written(problem, tmp_path):
    from robustrank.plots import plot_robustness_curves

    curve = robustness_curve(problem.model, problem.x, problem.y, [0.0, 0.05, 0.1], "fab")
    curve.fold("autoattack", 0.05, problem.breakable())
    path = plot_robustness_curves({"linear": curve, "copy": curve.to_dict()}, tmp_path / "c.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- bfloat16 search


def test_bfloat16_search_reaches_the_exact_robust_accuracy_of_a_linear_model(problem):
    aa = AutoAttack(problem.model, problem.eps, precision="bfloat16", steps=20, n_queries=200)
    res = aa.run(problem.x, problem.y)
    assert torch.equal(res.fooled, problem.breakable())
    with torch.no_grad():  # every input counted as broken is broken in float32
        pred = problem.model(res.x_adv).argmax(1)
    assert bool((pred[res.fooled] != problem.y[res.fooled]).all())
    assert float((res.x_adv - problem.x).abs().max()) <= problem.eps + 1e-6
    assert aa.params()["precision"] == "bfloat16"


class _RoundingFlip(nn.Module):
    """Logits independent of the input: class 1 beats class 0 by 4e-4 in float32, but
    bfloat16 rounds both to 1.0 and the tie goes to class 0. No input is breakable in
    float32 (4 classes: APGD-T's targeted DLR needs them)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.copy_(torch.tensor([1.0035, 1.0039, 0.0, 0.0]))

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_bfloat16_finds_that_float32_does_not_confirm_are_not_counted():
    model = _RoundingFlip()
    x, y = torch.rand(12, 1, 2, 2), torch.ones(12, dtype=torch.long)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert bool((model(x).float().argmax(1) == 0).all())  # bfloat16 is fooled
    assert bool((model(x).argmax(1) == 1).all())  # float32 is not
    aa = AutoAttack(model, 0.05, precision="bfloat16", steps=5, n_queries=20)
    res = aa.run(x, y)
    assert not bool(res.fooled.any())  # nothing counts: float32 confirms none of the finds
    first = aa.stats[0]
    assert first.n_unconfirmed == 12 and first.n_broken == 0  # then re-attacked in float32
    assert aa.counts()["forward"] >= first.forward > 0
    float32 = AutoAttack(model, 0.05, steps=5, n_queries=20)
    assert not bool(float32.run(x, y).fooled.any())
    assert float32.stats[0].n_unconfirmed == 0


def test_bad_precision_names_the_choices(problem):
    with pytest.raises(ValueError, match="float32, bfloat16"):
        AutoAttack(problem.model, problem.eps, precision="float16")


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_searches_in_bfloat16_only_where_the_device_has_it(
    problem, native, monkeypatch
):
    import warnings

    from robustrank.attacks import precision as precision_module
    from robustrank.attacks.precision import Autocast

    monkeypatch.setattr(precision_module, "native_bfloat16", lambda device: native)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # auto never warns
        aa = AutoAttack(problem.model, problem.eps, precision="auto", steps=5, n_queries=20)
    assert aa.params()["precision"] == ("bfloat16" if native else "float32")
    assert isinstance(aa.search_model, Autocast) is native
    assert aa.search_model is problem.model or native
    if native:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            AutoAttack(problem.model, problem.eps, precision="bfloat16")
    else:  # an explicit bfloat16 is kept, with a warning that it is emulated here
        with pytest.warns(UserWarning, match="no native bfloat16"):
            aa = AutoAttack(problem.model, problem.eps, precision="bfloat16")
        assert aa.params()["precision"] == "bfloat16"


def test_auto_precision_has_no_dtype_until_resolved():
    from robustrank.attacks.precision import Precision, resolve_precision

    with pytest.raises(ValueError, match="resolve_precision"):
        _ = Precision.auto.dtype
    assert resolve_precision("auto", torch.device("meta")) is Precision.float32
    assert resolve_precision("float32", torch.device("cpu")) is Precision.float32
