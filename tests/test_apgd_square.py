"""APGD, APGD-T and Square against the reference formulas and a linear model whose exact
robust accuracy is known (tests/linear_reference.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from linear_reference import linear_problem
from robustrank.attacks import APGD, APGDT, PGD, Square
from robustrank.attacks.losses import dlr_loss, dlr_targeted_loss, margin, target_classes
from robustrank.attacks.square import square_p, square_side


@pytest.fixture(scope="module")
def problem():
    return linear_problem(n=200, eps=0.05, seed=0)


# --------------------------------------------------------------------------- formulas


def test_dlr_losses_against_their_definitions():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(64, 10, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (64,), generator=g)
    t = (y + 1 + torch.randint(0, 9, (64,), generator=g)) % 10
    for i in range(64):
        s = sorted(z[i].tolist(), reverse=True)
        others = max(v for j, v in enumerate(z[i].tolist()) if j != int(y[i]))
        want = -(z[i, y[i]].item() - others) / (s[0] - s[2] + 1e-12)
        assert dlr_loss(z, y)[i].item() == pytest.approx(want, rel=1e-12)
        want_t = -(z[i, y[i]].item() - z[i, t[i]].item()) / (s[0] - 0.5 * (s[2] + s[3]) + 1e-12)
        assert dlr_targeted_loss(z, y, t)[i].item() == pytest.approx(want_t, rel=1e-12)
        assert margin(z, y)[i].item() == pytest.approx(z[i, y[i]].item() - others, rel=1e-12)
    # invariant to shifting and positive scaling of the logits
    assert torch.allclose(dlr_loss(3 * z + 7, y), dlr_loss(z, y))
    order = z.argsort(1, descending=True)
    assert torch.equal(target_classes(z, 9), order[:, 1:10])
    assert target_classes(z[:, :4], 9).shape == (64, 3)
    with pytest.raises(ValueError, match="needs at least 4 classes"):
        dlr_targeted_loss(z[:, :3], y % 3, t % 3)


def test_square_p_schedule_and_window_side():
    table = {0: 1, 10: 1, 11: 2, 50: 2, 51: 4, 200: 4, 201: 8, 500: 8, 501: 16, 1000: 16}
    table |= {1001: 32, 2000: 32, 2001: 64, 4000: 64, 4001: 128, 6000: 128, 6001: 256}
    table |= {8000: 256, 8001: 512, 9999: 512}
    for it, div in table.items():
        assert square_p(0.8, it, 10000) == pytest.approx(0.8 / div), it
    # rescaled to a 10000-query budget: iteration 100 of 1000 acts like 1000
    assert square_p(0.8, 100, 1000, rescale=True) == pytest.approx(0.8 / 16)
    assert square_p(0.8, 100, 1000, rescale=False) == pytest.approx(0.8 / 4)
    assert square_side(0.8, 1, 28, 28) == round(math.sqrt(0.8 * 784)) == 25
    assert square_side(0.8, 3, 32, 32) == round(math.sqrt(0.8 * 1024)) == 29
    assert square_side(0.8 / 512, 1, 28, 28) == 1
    assert square_side(1.0, 1, 8, 5) == 5  # capped at the shorter image side


# --------------------------------------------------------------------------- the linear model


def _check_outputs(problem, x_adv, fooled) -> None:
    assert float((x_adv - problem.x).abs().max()) <= problem.eps + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        pred = problem.model(x_adv).argmax(1)
    assert torch.equal(pred != problem.y, fooled)  # the mask is the truth at x_adv
    assert not bool((fooled & ~problem.breakable()).any())  # never below the exact value


def test_apgd_ce_is_sound_and_at_least_as_strong_as_pgd20(problem):
    res = APGD(problem.model, problem.eps).run(problem.x, problem.y)
    _check_outputs(problem, res.x_adv, res.fooled)
    pgd = PGD(problem.model, problem.eps, alpha=0.005, steps=20, seed=0).run(problem.x, problem.y)
    assert int(res.fooled.sum()) >= int(pgd.fooled.sum())


def test_apgd_t_and_dlr_reach_the_exact_robust_accuracy(problem):
    for attack in (APGDT(problem.model, problem.eps), APGD(problem.model, problem.eps, loss="dlr")):
        res = attack.run(problem.x, problem.y)
        _check_outputs(problem, res.x_adv, res.fooled)
        robust = 1 - res.fooled.double().mean().item()
        assert robust == pytest.approx(problem.exact_robust_accuracy(), abs=0.01), attack


def test_square_is_sound_and_breaks_most_breakable_inputs(problem):
    attack = Square(problem.model, problem.eps, n_queries=1000, seed=0)
    res = attack.run(problem.x, problem.y)
    _check_outputs(problem, res.x_adv, res.fooled)
    assert attack.n_backward == 0
    share = int(res.fooled.sum()) / int(problem.breakable().sum())
    assert share >= 0.4  # random search, 1000 queries on 64 pixels: measured 0.46
    assert attack.last_queries.max() <= 1000 + 1
    assert bool((attack.last_queries[res.fooled] <= 1001).all())
    # unbroken inputs end with a margin no larger than at the vertical-stripe start
    with torch.no_grad():
        m = margin(problem.model(res.x_adv), problem.y)
    assert bool((m[~res.fooled] >= 0).all())


def test_square_acceptance_never_raises_the_margin():
    """Run Square step by step on a model whose margin we can read: the best margin is
    monotone, i.e. only improvements are accepted."""
    p = linear_problem(n=50, eps=0.02, seed=2)
    margins = []
    for q in (1, 10, 100, 400):
        x_adv = Square(p.model, p.eps, n_queries=q, seed=5)(p.x, p.y)
        with torch.no_grad():
            margins.append(margin(p.model(x_adv), p.y))
    for a, b in zip(margins, margins[1:]):
        fooled = a < 0
        assert bool((b[~fooled] <= a[~fooled] + 1e-6).all())


# --------------------------------------------------------------------------- step size


# --------------------------------------------------------------------------- framework


@pytest.mark.parametrize(
    "make",
    [
        lambda m: APGD(m, 0.05, steps=10, n_restarts=2, seed=1),
        lambda m: APGD(m, 0.05, steps=10, loss="dlr", seed=1),
        lambda m: APGDT(m, 0.05, steps=10, n_target_classes=3, seed=1),
        lambda m: Square(m, 0.05, n_queries=50, seed=1),
    ],
)
def test_invariants_modes_grads_and_determinism(make):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10)
    ).train()
    x = torch.rand(16, 3, 8, 8)
    y = torch.randint(0, 10, (16,))
    a, b = make(model).run(x, y), make(model).run(x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.fooled, b.fooled)
    assert float((a.x_adv - x).abs().max()) <= 0.05 + 1e-6
    assert float(a.x_adv.min()) >= 0 and float(a.x_adv.max()) <= 1
    assert model.training and all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        model.eval()
        wrong = model(a.x_adv).argmax(1) != y
    assert bool(wrong[a.fooled].all())
    for cl in (True, False):  # both memory layouts keep the invariants
        again = make(model)
        again.channels_last = cl
        res = again.run(x, y)
        assert float((res.x_adv - x).abs().max()) <= 0.05 + 1e-6


def test_seeds_change_the_start_and_bad_arguments_fail(problem):
    a = APGD(problem.model, 0.05, steps=1, seed=0)._start(problem.x, torch.Generator())
    g1 = torch.Generator().manual_seed(1)
    b = APGD(problem.model, 0.05, steps=1, seed=1)._start(problem.x, g1)
    assert not torch.equal(a, b)
    assert float((a - problem.x).abs().flatten(1).amax(1).min()) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="loss must be one of ce, dlr"):
        APGD(problem.model, 0.05, loss="cw")
    with pytest.raises(ValueError, match="n_restarts must be an integer >= 1"):
        APGD(problem.model, 0.05, n_restarts=0)
    with pytest.raises(ValueError, match="rho must lie in"):
        APGD(problem.model, 0.05, rho=1.5)
    with pytest.raises(ValueError, match="n_queries must be an integer >= 1"):
        Square(problem.model, 0.05, n_queries=0)
    with pytest.raises(ValueError, match="p_init must lie in"):
        Square(problem.model, 0.05, p_init=0.0)
    with pytest.raises(ValueError, match="needs at least 4 classes"):
        APGDT(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), 0.05)(problem.x, problem.y % 3)
