"""APGD and APGD-T (Croce & Hein, ICML 2020, Algorithm 1) against independent references.

* the checkpoint schedule, against the reference's counter loop;
* the step-size rule, on a scripted model whose losses and gradient signs are read from a
  table, against a scalar per-input implementation of Algorithm 1 written here;
* the linear model of ``tests/linear_reference.py``, whose exact robust accuracy is known;
* the framework's invariants on a tiny conv net (both memory layouts).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from linear_reference import linear_problem
from robustrank.attacks import APGD, APGDT, PGD
from robustrank.attacks.apgd import apgd_checkpoints


@pytest.fixture(scope="module")
def problem():
    return linear_problem(n=200, eps=0.05, seed=0)


# --------------------------------------------------------------------------- checkpoints


def _checkpoints_by_counter(n: int) -> list[int]:
    """The reference's loop: a counter reset at each check, the interval shrinking."""
    k, k_min, decr = max(int(0.22 * n), 1), max(int(0.06 * n), 1), max(int(0.03 * n), 1)
    out, counter = [], 0
    for i in range(n):
        counter += 1
        if counter == k:
            out.append(i + 1)
            k = max(k - decr, k_min)
            counter = 0
    return out


def test_checkpoints_for_100_steps_and_against_the_counter_loop():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    for n in (1, 2, 3, 5, 10, 17, 33, 50, 99, 101, 250, 1000):
        assert apgd_checkpoints(n) == _checkpoints_by_counter(n), n
    assert apgd_checkpoints(1) == [1]
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        apgd_checkpoints(0)


# --------------------------------------------------------------------------- the step size

STEPS, EPS, RHO = 100, 2.0**-6, 0.75  # eps a power of two: lo, hi and eta exact in float


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def _simulate(losses, signs, x0, lo, hi, flip=None):
    """Algorithm 1 for one input and one coordinate, as the reference's loop.

    ``losses[j]`` / ``signs[j]`` are the loss and gradient sign at iterate ``j`` (``j = 0``
    is the start ``x0``). Returns the iterates, the best point and eta after each check.
    ``flip``: invert the halving decision at that check (to show the test can see it).
    """

    def proj(v):
        return min(max(v, lo), hi)

    k, k_min, decr = max(int(0.22 * STEPS), 1), max(int(0.06 * STEPS), 1), max(int(0.03 * STEPS), 1)
    x, x_old, g = x0, x0, signs[0]
    best, x_best, g_best = losses[0], x0, signs[0]
    eta, best_check, reduced, counter = 2 * EPS, losses[0], True, 0
    hist, xs, etas = [0.0] * STEPS, [x0], []
    for i in range(STEPS):
        a = 1.0 if i == 0 else 0.75
        z = proj(x + eta * g)
        x, x_old = proj(x + a * (z - x) + (1 - a) * (x - x_old)), x
        xs.append(x)
        hist[i], g = losses[i + 1], signs[i + 1]
        if hist[i] > best:
            best, x_best, g_best = hist[i], x, g
        counter += 1
        if counter == k:
            ups = sum(hist[i - c] > hist[i - c - 1] for c in range(k))  # hist[-1]: last row
            halve = ups <= k * RHO or (not reduced and best_check >= best)
            halve = halve != (flip == len(etas))
            reduced, best_check = halve, best
            if halve:
                eta, x, g = eta / 2, x_best, g_best
            etas.append(eta)
            k, counter = max(k - decr, k_min), 0
    return xs, x_best, etas


def _designed_losses() -> dict[str, list[float]]:
    """Pre-softplus logits ``L_j`` (loss ``softplus(L_j)``) per iterate j = 0..STEPS."""
    j = range(STEPS + 1)
    rows = {
        "rising": [-6 + 0.04 * t for t in j],
        "falling": [-1 - 0.04 * t for t in j],
        # window 1 rises; window 2 rises in 18 of 19 steps but stays below the best, so
        # only condition (2) halves at check 2; then new bests
        "stall": [-5 + 0.05 * t if t <= 22 else -4.5 + 0.02 * (t - 23) for t in j[:42]]
        + [-3.8 + 0.03 * (t - 42) for t in j[42:]],
        # window 1 falls (condition (1)); windows 2-3 rise below the best: condition (2)
        # is blocked at check 2 (halved at check 1) and fires at check 3
        "blocked": [-2 - 0.04 * t for t in j[:23]]
        + [-4 + 0.02 * (t - 23) for t in j[23:58]]
        + [-1.9 + 0.01 * (t - 58) for t in j[58:]],
        # window 1: 16 genuine increases in 21 steps, plus the first step compared with the
        # reference's still-zero last row: 17 > rho * 22 = 16.5, no halving at check 1
        "zero-row": [-1.0]
        + [-5 + 0.05 * t - (0.5 if t in (5, 9, 13, 17, 21) else 0) for t in j[1:23]]
        + [-0.99 + 0.005 * (t - 23) for t in j[23:]],
        # window 2 flat at the best: halved at check 2, back to the FIRST best point (x_22)
        "plateau": [-5 + 0.05 * min(t, 22) for t in j[:42]]
        + [-3.8 + 0.03 * (t - 42) for t in j[42:]],
        # window 3 (16 steps) has exactly rho * 16 = 12 increases: halved, "at most"
        "boundary": [-6 + 0.04 * t - (0.5 if t in (44, 48, 52, 56) else 0) for t in j],
        # rising, misclassified at iterate 30 (logit > 0): leaves the batch there
        "fooled": [-6 + 0.04 * t if t != 30 else 1.0 for t in j],
    }
    g = torch.Generator().manual_seed(7)
    for r in range(3):  # random walks with random step sizes
        steps = (torch.rand(STEPS + 1, generator=g, dtype=torch.float64) - 0.45) * 0.3
        rows[f"random{r}"] = (-4 + steps.cumsum(0)).clamp(max=-0.2).tolist()
    return rows


class _Scripted(nn.Module):
    """Logits ``(L, 0)``: ``L`` and the sign of its gradient on pixel 1 are read from tables
    by call number and input id (encoded in pixel 0); pixel 1 is recorded at every call."""

    def __init__(self, logit: Tensor, sign: Tensor) -> None:
        super().__init__()
        self.logit, self.sign = logit, sign
        self.calls: list[tuple[Tensor, Tensor]] = []

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1)
        ids = (flat[:, 0] * 20).floor().long()
        t = len(self.calls)
        self.calls.append((ids, flat[:, 1].detach().clone()))
        probe = flat[:, 1]
        z = self.logit[t, ids] + self.sign[t, ids] * (probe - probe.detach())
        return torch.stack([z, torch.zeros_like(z)], 1)

    def trajectory(self, r: int) -> list[float]:
        """Pixel 1 of input ``r`` at the attack's calls (the clean call excluded)."""
        return [float(p[ids == r][0]) for ids, p in self.calls[1:] if bool((ids == r).any())]


def _scripted_run(names: list[str]):
    losses = _designed_losses()
    g = torch.Generator().manual_seed(3)
    table = torch.tensor(list(losses.values()), dtype=torch.float32).T  # (STEPS + 1, ids)
    sign = torch.randint(0, 2, table.shape, generator=g).float() * 2 - 1
    # call 0 is the clean forward pass: correct, with the start's loss
    model = _Scripted(torch.cat([table[:1], table]), torch.cat([sign[:1], sign]))
    ids = torch.tensor([list(losses).index(n) for n in names])
    x = torch.full((len(names), 1, 1, 2), 0.5)
    x[:, 0, 0, 0] = (ids + 0.5) / 20
    attack = APGD(model, EPS, steps=STEPS, loss="ce", seed=0, channels_last=False)
    res = attack.run(x, torch.ones(len(names), dtype=torch.long))
    return model, ids, table, sign, res, attack


def test_step_size_halving_matches_the_reference_rule():
    names = list(_designed_losses())
    model, ids, table, sign, res, attack = _scripted_run(names)
    lo, hi = 0.5 - EPS, 0.5 + EPS
    etas = {}
    for r, name in enumerate(names):
        i = int(ids[r])
        seen = model.trajectory(i)
        losses = [_softplus(v) for v in table[:, i].double().tolist()]
        xs, x_best, etas[name] = _simulate(losses, sign[:, i].tolist(), seen[0], lo, hi)
        if name == "fooled":  # dropped at iterate 30, which is returned
            assert len(seen) == 31 and bool(res.fooled[r])
            assert seen == pytest.approx(xs[:31], abs=1e-6)
            assert float(res.x_adv[r, 0, 0, 1]) == seen[30]
            continue
        assert not bool(res.fooled[r])
        assert seen == pytest.approx(xs, abs=1e-6), name
        assert float(res.x_adv[r, 0, 0, 1]) == pytest.approx(x_best, abs=1e-6)
        for check in range(6):  # every decision shows in the trajectory
            other, _, _ = _simulate(losses, sign[:, i].tolist(), seen[0], lo, hi, flip=check)
            assert other != pytest.approx(seen, abs=1e-6), (name, check)
    e = 2 * EPS
    assert etas["rising"] == [e] * 8  # steady increase: never halved
    assert etas["falling"] == [e / 2**c for c in range(1, 9)]  # no increase: every check
    assert etas["stall"] == [e] + [e / 2] * 7  # condition (2) alone at check 2
    assert etas["blocked"] == [e / 2] * 2 + [e / 4] * 6  # (2) waits one check after a halving
    assert etas["zero-row"] == [e] * 8
    assert etas["plateau"] == [e] + [e / 2] * 7
    assert etas["boundary"] == [e] * 2 + [e / 2] * 6
    # the ids decode at every call; the fooled input left at iterate 30: the forward count
    # is one clean pass plus the iterates each input was evaluated at
    assert all(set(c[0].tolist()) <= set(ids.tolist()) for c in model.calls)
    assert attack.counts()["forward"] == len(names) + sum(len(c[0]) for c in model.calls[1:])
    assert sum(len(c[0]) for c in model.calls[1:]) == (len(names) - 1) * (STEPS + 1) + 31


def test_dropping_a_fooled_input_leaves_the_others_unchanged():
    """Rows are independent: with the fooled input last (so the random starts of the others
    are the same draws), the other inputs' iterates are bit-identical without it."""
    names = [n for n in _designed_losses() if n != "fooled"]
    with_it, ids, *_ = _scripted_run([*names, "fooled"])
    without, _, *_ = _scripted_run(names)
    assert len(with_it.calls[-1][0]) == len(names)  # it did leave the batch
    for r in ids[:-1].tolist():
        assert with_it.trajectory(r) == without.trajectory(r)


# --------------------------------------------------------------------------- linear model


def _check_sound(problem, x_adv: Tensor, fooled: Tensor) -> None:
    assert float((x_adv - problem.x).abs().max()) <= problem.eps + 1e-6
    assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        pred = problem.model(x_adv).argmax(1)
    assert torch.equal(pred != problem.y, fooled)  # the mask is the truth at x_adv
    assert not bool((fooled & ~problem.breakable()).any())  # never below the exact value


def test_apgd_ce_is_sound_and_at_least_as_strong_as_pgd20(problem):
    res = APGD(problem.model, problem.eps, loss="ce").run(problem.x, problem.y)
    _check_sound(problem, res.x_adv, res.fooled)
    robust = 1 - res.fooled.double().mean().item()
    assert robust >= problem.exact_robust_accuracy()
    pgd = PGD(problem.model, problem.eps, alpha=0.005, steps=20, seed=0).run(problem.x, problem.y)
    assert int(res.fooled.sum()) >= int(pgd.fooled.sum())
    assert not bool((pgd.fooled & ~res.fooled).any())  # measured: 100 vs 99, a superset


@pytest.mark.parametrize("seed", [0, 2])
def test_apgd_t_reaches_the_exact_robust_accuracy(seed):
    """Measured exact on seeds 0-3 (robust 0.485, 0.005, 0.11, 0): the borderline inputs
    are >= 8e-5 away from eps in minimal norm, far above float round-off, so no slack."""
    p = linear_problem(n=200, eps=0.05, seed=seed)
    res = APGDT(p.model, p.eps).run(p.x, p.y)
    _check_sound(p, res.x_adv, res.fooled)
    assert torch.equal(res.fooled, p.breakable())


def test_apgd_dlr_reaches_the_exact_robust_accuracy(problem):
    """On a linear model the DLR loss's steepest direction is the exact one, as for APGD-T."""
    res = APGD(problem.model, problem.eps, loss="dlr").run(problem.x, problem.y)
    _check_sound(problem, res.x_adv, res.fooled)
    robust = 1 - res.fooled.double().mean().item()
    assert robust == pytest.approx(problem.exact_robust_accuracy(), abs=0.01)


def test_restarts_draw_fresh_starts_for_the_robust_inputs_only(problem):
    seen: list[Tensor] = []
    hook = problem.model.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach()))
    try:
        steps = 3
        one = APGD(problem.model, problem.eps, steps=steps, seed=5).run(problem.x, problem.y)
        seen.clear()
        two = APGD(problem.model, problem.eps, steps=steps, n_restarts=2, seed=5)
        res = two.run(problem.x, problem.y)
    finally:
        hook.remove()
    x, eps = problem.x, problem.eps
    g = torch.Generator().manual_seed(5)
    starts = []
    for rows in (torch.ones(len(x), dtype=torch.bool), ~one.fooled):
        t = 2 * torch.rand(x[rows].shape, generator=g) - 1
        starts.append(x[rows] + eps * t / t.abs().flatten(1).amax(1).view(-1, 1, 1, 1))
    first, second = seen[1], seen[steps + 2]  # seen[0] is the clean pass
    assert 0 < len(second) < len(x)
    assert torch.allclose(first, starts[0], atol=1e-7)
    assert torch.allclose(second, starts[1], atol=1e-7)
    # an input robust in both runs keeps the higher-loss point of the two
    with torch.no_grad():
        ce_one = nn.functional.cross_entropy(problem.model(one.x_adv), problem.y, reduction="none")
        ce_two = nn.functional.cross_entropy(problem.model(res.x_adv), problem.y, reduction="none")
    both = ~res.fooled
    assert bool((ce_two[both] >= ce_one[both]).all())
    # every start is on the sphere of the l_inf ball (no input is near the box edge)
    assert torch.allclose((first - x).abs().flatten(1).amax(1), torch.full((len(x),), eps))


# --------------------------------------------------------------------------- framework


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Flatten(),
        nn.Linear(144, 10),
    ).train()


@pytest.mark.parametrize(
    "make",
    [
        lambda m, cl: APGD(m, 0.05, steps=10, n_restarts=2, seed=1, channels_last=cl),
        lambda m, cl: APGD(m, 0.05, steps=10, loss="dlr", seed=1, channels_last=cl),
        lambda m, cl: APGDT(m, 0.05, steps=10, n_target_classes=3, seed=1, channels_last=cl),
    ],
    ids=["apgd-ce", "apgd-dlr", "apgd-t"],
)
@pytest.mark.parametrize("channels_last", [True, False])
def test_invariants_modes_grads_and_determinism_on_a_conv_net(make, channels_last):
    model = _conv_net()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 8, 8, generator=g)
    x[:4] = x[:4].round()  # pixels at 0 and 1: the box constraint binds
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    y[-2:] = (y[-2:] + 1) % 10  # two inputs misclassified from the start
    model.train()
    attack = make(model, channels_last)
    a, b = attack.run(x, y), make(model, channels_last).run(x, y)
    again = attack.run(x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.fooled, b.fooled)
    assert torch.equal(a.x_adv, again.x_adv) and torch.equal(a.fooled, again.fooled)
    assert a.x_adv.dtype == x.dtype and not a.x_adv.requires_grad
    assert float((a.x_adv - x).abs().max()) <= 0.05 + 1e-6
    assert float(a.x_adv.min()) >= 0 and float(a.x_adv.max()) <= 1
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        model.eval()
        wrong = model(a.x_adv).argmax(1) != y
    assert torch.equal(wrong, a.fooled)
    assert 2 < int(a.fooled.sum()) < 16
    assert torch.equal(a.x_adv[-2:], x[-2:])  # misclassified at x: returned as they are


def test_seed_changes_the_start_and_same_seed_repeats_it(problem):
    starts = {}
    for seed in (0, 0, 1):
        seen: list[Tensor] = []
        hook = problem.model.register_forward_pre_hook(lambda m, a, s=seen: s.append(a[0]))
        try:
            APGD(problem.model, problem.eps, steps=1, seed=seed)(problem.x, problem.y)
        finally:
            hook.remove()
        starts.setdefault(seed, []).append(seen[1].detach())
    assert torch.equal(starts[0][0], starts[0][1])
    assert not torch.equal(starts[0][0], starts[1][0])


def test_target_count_is_capped_and_few_classes_fail(problem):
    # eps = 0: nothing can be fooled, so every run evaluates all inputs at every iterate
    five = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    x = problem.x[:8]
    with torch.no_grad():
        y = five(x).argmax(1)
    attack = APGDT(five, 0.0, steps=4, n_target_classes=9, n_restarts=2)
    res = attack.run(x, y)
    assert not bool(res.fooled.any()) and torch.equal(res.x_adv, x)
    assert attack.counts()["forward"] == 8 + 4 * 2 * 8 * (4 + 1)  # 4 = K - 1 targets
    assert attack.params()["n_target_classes"] == 9
    three = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ValueError, match=r"at least 4 classes.*APGD\(loss='ce'\)"):
        APGDT(three, 0.05)(x, y % 3)


def test_params_and_argument_checks(problem):
    m = problem.model
    assert APGD(m, 0.05).params() == {
        "eps": 0.05,
        "steps": 100,
        "n_restarts": 1,
        "rho": 0.75,
        "seed": 0,
        "loss": "ce",
    }
    assert APGDT(m, 0.03, steps=7, n_restarts=2, rho=0.5, seed=None).params() == {
        "eps": 0.03,
        "steps": 7,
        "n_restarts": 2,
        "rho": 0.5,
        "seed": None,
        "loss": "dlr-targeted",
        "n_target_classes": 9,
    }
    with pytest.raises(ValueError, match="loss must be one of ce, dlr"):
        APGD(m, 0.05, loss="cw")
    with pytest.raises(ValueError, match="n_restarts must be an integer >= 1"):
        APGD(m, 0.05, n_restarts=0)
    with pytest.raises(ValueError, match="rho must lie in"):
        APGD(m, 0.05, rho=1.5)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        APGDT(m, 0.05, steps=0)
    with pytest.raises(ValueError, match="n_target_classes must be an integer >= 1"):
        APGDT(m, 0.05, n_target_classes=0)
    with pytest.raises(TypeError, match="seed must be an integer or None"):
        APGD(m, 0.05, seed=1.5)
