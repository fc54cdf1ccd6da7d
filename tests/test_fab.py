"""FAB (Croce & Hein, ICML 2020b): the box-constrained l_inf projection against independent
solvers, exactness on the closed-form linear model, invariants, hygiene, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from linear_reference import linear_problem
from robustrank.attacks import fab as fab_module
from robustrank.attacks import projection
from robustrank.attacks.compiled import compiled_kernels
from robustrank.attacks.fab import FAB
from robustrank.attacks.projection import (
    fab_step,
    project_linf_box,
    project_linf_box_rows,
    project_linf_box_torch,
)

needs_numba = pytest.mark.skipif(
    compiled_kernels() is None, reason="the compiled kernels need numba"
)

# --------------------------------------------------------------------------- projection


def _reach(t: np.ndarray, w: np.ndarray, lam: float) -> tuple[float, float]:
    """The range of <w, d> over |d_i| <= lam, 0 <= t + d <= 1 (coordinate-wise)."""
    lo_d, hi_d = np.maximum(-lam, -t), np.minimum(lam, 1 - t)
    return float(np.minimum(w * lo_d, w * hi_d).sum()), float(np.maximum(w * lo_d, w * hi_d).sum())


def _reference_norm(t: np.ndarray, w: np.ndarray, b: float) -> float:
    """Smallest lam with b - <w, t> reachable, by bisection on lam (inf if infeasible)."""
    need = b - float(w @ t)
    lo_r, hi_r = _reach(t, w, 1.0)
    if not lo_r - 1e-12 <= need <= hi_r + 1e-12:
        return math.inf
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        r_lo, r_hi = _reach(t, w, mid)
        if r_lo <= need <= r_hi:
            hi = mid
        else:
            lo = mid
    return hi


def _instances(n: int = 300, seed: int = 0):
    """Small random projection problems (float64): sparse weights, some infeasible."""
    g = torch.Generator().manual_seed(seed)
    d = 7
    t = torch.rand(n, d, generator=g, dtype=torch.float64)
    t[::5, 0] = 0.0  # points on the box faces
    t[1::5, 1] = 1.0
    w = torch.randn(n, d, generator=g, dtype=torch.float64)
    w[torch.rand(n, d, generator=g) < 0.2] = 0.0  # coordinates that cannot help
    # target value <w, z> for a random z in the box, sometimes pushed outside its reach
    z = torch.rand(n, d, generator=g, dtype=torch.float64)
    b = (w * z).sum(1) * torch.where(torch.arange(n) % 7 == 0, 3.0, 1.0)
    return t, w, b


_IMPLEMENTATIONS = {
    "torch": (project_linf_box_torch, "NEWTON_STEPS"),
    "compiled": (project_linf_box_rows, "ROW_NEWTON_STEPS"),
}


@pytest.mark.parametrize("newton_steps", [0, 1, 8])
@pytest.mark.parametrize("impl", ["torch", pytest.param("compiled", marks=needs_numba)])
def test_projection_matches_an_independent_bisection_solver(monkeypatch, impl, newton_steps):
    """Both implementations, every path: the sorted breakpoints alone (0 Newton steps),
    Newton for the rows it settles in one step and the sort for the rest (1), Newton
    throughout (the default)."""
    solve, steps_name = _IMPLEMENTATIONS[impl]
    monkeypatch.setattr(projection, steps_name, newton_steps)
    t, w, b = _instances()
    d = solve(t, w, b)
    z = t + d
    assert bool((z >= -1e-12).all() and (z <= 1 + 1e-12).all())
    assert bool((d[w == 0] == 0).all())
    n_feasible = n_infeasible = 0
    for i in range(len(t)):
        ti, wi, bi = t[i].numpy(), w[i].numpy(), float(b[i])
        ref = _reference_norm(ti, wi, bi)
        if math.isfinite(ref):
            n_feasible += 1
            assert float(d[i].abs().max()) == pytest.approx(ref, abs=1e-9)
            assert float(w[i] @ z[i]) == pytest.approx(bi, abs=1e-9)
        else:  # infeasible: the box corner closest to the hyperplane
            n_infeasible += 1
            lo_r, hi_r = _reach(ti, wi, 1.0)
            best = lo_r if bi - wi @ ti < lo_r else hi_r
            assert float(w[i] @ d[i]) == pytest.approx(best, abs=1e-9)
    assert n_feasible > 150 and n_infeasible > 10  # both branches exercised


@pytest.mark.parametrize("impl", ["torch", pytest.param("compiled", marks=needs_numba)])
def test_projection_matches_linprog(impl):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    t, w, b = _instances(60, seed=1)
    d = _IMPLEMENTATIONS[impl][0](t, w, b)
    dim = t.shape[1]
    for i in range(len(t)):
        # variables (d, tau): min tau s.t. -tau <= d <= tau, 0 <= t + d <= 1, <w, t + d> = b
        c = np.r_[np.zeros(dim), 1.0]
        eye = np.eye(dim)
        a_ub = np.block([[eye, -np.ones((dim, 1))], [-eye, -np.ones((dim, 1))]])
        bounds = [(-ti, 1 - ti) for ti in t[i].tolist()] + [(0, None)]
        res = scipy_optimize.linprog(
            c,
            A_ub=a_ub,
            b_ub=np.zeros(2 * dim),
            A_eq=np.r_[w[i].numpy(), 0.0][None],
            b_eq=[float(b[i] - w[i] @ t[i])],
            bounds=bounds,
        )
        if res.status == 0:
            assert float(d[i].abs().max()) == pytest.approx(res.fun, abs=1e-7)


@pytest.mark.parametrize("impl", ["torch", pytest.param("compiled", marks=needs_numba)])
def test_projection_without_box_contact_is_the_dual_norm_step(impl):
    """Far from the faces: d = gap / ||w||_1 * sign(w) (Hoelder), the classical formula."""
    g = torch.Generator().manual_seed(3)
    t = 0.4 + 0.2 * torch.rand(50, 30, generator=g, dtype=torch.float64)
    w = torch.randn(50, 30, generator=g, dtype=torch.float64)
    b = (w * t).sum(1) + 0.05 * torch.randn(50, generator=g, dtype=torch.float64)
    gap = b - (w * t).sum(1)
    expected = (gap / w.abs().sum(1))[:, None] * w.sign()
    d = _IMPLEMENTATIONS[impl][0](t, w, b)
    torch.testing.assert_close(d, expected, rtol=0, atol=1e-12)


def _image_rows(n: int, seed: int, dtype: torch.dtype = torch.float32):
    """FAB-like rows: 784 pixels, most of them on a face of the box, dense normals."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 784, generator=g, dtype=dtype)
    t[t < 0.5] = 0.0
    t[t > 0.95] = 1.0
    w = torch.randn(n, 784, generator=g, dtype=dtype)
    w[torch.rand(n, 784, generator=g) < 0.05] = 0.0
    b = (w * torch.rand(n, 784, generator=g, dtype=dtype)).sum(1)
    return t, w, b


@needs_numba
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_projection_equals_the_tensor_one_on_image_rows(dtype):
    """The two implementations solve the same problems; the compiled one sums in float64,
    so they agree to the round-off of the tensors' dtype, and the dispatcher uses it."""
    t, w, b = _image_rows(300, 5, dtype)
    compiled = project_linf_box_rows(t, w, b)
    assert compiled.dtype == dtype and compiled.shape == t.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(compiled, project_linf_box_torch(t, w, b), rtol=0, atol=tol)
    torch.testing.assert_close(project_linf_box(t, w, b), compiled, rtol=0, atol=0)
    z = (t + compiled).double()
    assert bool((z >= -1e-7).all() and (z <= 1 + 1e-7).all())
    feasible = compiled.abs().amax(1) < 1  # reached the hyperplane, not a corner
    assert int(feasible.sum()) > 100
    gap = (w.double() * z).sum(1) - b.double()
    scale = (w.double().abs() * t.double()).sum(1) + b.double().abs()
    assert float((gap.abs() / scale)[feasible].max()) < 100 * torch.finfo(dtype).eps


@needs_numba
def test_fab_step_compiled_equals_the_tensor_step(monkeypatch):
    """FAB's update (two projections, the adaptive alpha, the mix) compiled per row and
    with tensors: the same points up to float32 round-off."""
    t, w, b = _image_rows(200, 6)
    xo = torch.rand_like(t)
    compiled = fab_step(t, xo, w, b, 1.05, 0.1, 1e-8)
    monkeypatch.setattr(projection, "kernels_for", lambda *t: None)
    tensor = fab_step(t, xo, w, b, 1.05, 0.1, 1e-8)
    torch.testing.assert_close(compiled, tensor, rtol=0, atol=1e-5)
    assert bool((compiled >= 0).all() and (compiled <= 1).all())


def test_compiled_projection_refuses_what_it_cannot_take():
    t, w, b = _image_rows(4, 7)
    with pytest.raises(RuntimeError, match="float32 or float64 CPU tensors"):
        project_linf_box_rows(t.to(torch.bfloat16), w, b)


# --------------------------------------------------------------------------- linear model


@pytest.fixture(scope="module")
def problem():
    return linear_problem(200, 0.05, 0)


def _check_adversarial(model, x, y, x_adv, eps=None):
    with torch.no_grad():
        assert bool((model(x_adv).argmax(1) != y).all())
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    if eps is not None:
        assert float((x_adv - x).abs().max()) <= eps + 1e-6


def test_minimal_perturbation_is_the_closed_form_minimal_norm(problem):
    p = problem
    exact = p.min_norm()
    assert float(exact.max()) < 0.25  # the box [0.25, 0.75] +- norm is never active
    x_adv, norms = FAB(p.model, 0.05, targeted=False).minimal_perturbation(p.x, p.y)
    assert norms.shape == (len(p.x),) and norms.dtype == p.x.dtype
    # bisection resolution 2^-20 relative, plus the round-off margin of the misclassified
    # test (8 ulps of the logits, about 1e-5, over a margin slope ||w_y - w_j||_1 ~ 40)
    assert bool(((norms.double() - exact).abs() <= 1e-4 * exact + 1e-6).all())
    assert torch.equal(norms, (x_adv - p.x).flatten(1).abs().amax(1))
    _check_adversarial(p.model, p.x, p.y, x_adv)


def test_targeted_minimal_perturbation_takes_the_minimum_over_the_targets(problem):
    p = problem
    x_adv, norms = FAB(p.model, 0.05, targeted=True, steps=10).minimal_perturbation(p.x, p.y)
    exact = p.min_norm()
    assert bool(((norms.double() - exact).abs() <= 1e-4 * exact + 1e-6).all())
    _check_adversarial(p.model, p.x, p.y, x_adv)
    # with a single target the norm is the distance to that class's hyperplane, not less
    one = FAB(p.model, 0.05, targeted=True, n_target_classes=1, steps=10)
    assert bool((one.minimal_perturbation(p.x, p.y)[1] >= norms).all())


def test_one_step_reaches_the_boundary_direction_of_a_linear_model(problem):
    """Step 1 from x: alpha = min(1/2, alpha_max), so x_1 = x + eta * d* with the exact l_inf
    projection d* = m / ||w_j - w_y||_1 * sign(w_j - w_y) onto the closest hyperplane."""
    p = problem
    w, bias = p.weights()
    f = p.x.flatten(1).double() @ w.T + bias
    j = (f.gather(1, p.y[:, None]) - f) / (w[p.y][:, None] - w[None]).abs().sum(2)
    j = j.scatter(1, p.y[:, None], math.inf).argmin(1)
    dw = w[j] - w[p.y]
    gap = f.gather(1, p.y[:, None]).squeeze(1) - f.gather(1, j[:, None]).squeeze(1)
    d_star = (gap / dw.abs().sum(1))[:, None] * dw.sign()
    fab = FAB(p.model, 0.05, targeted=False, steps=1, search_steps=0)
    x_adv, norms = fab.minimal_perturbation(p.x, p.y)
    expected = (p.x.flatten(1).double() + 1.05 * d_star).view_as(p.x)
    torch.testing.assert_close(x_adv.double(), expected, rtol=0, atol=2e-6)
    # ... and the line search makes that one step exact
    _, norms = FAB(p.model, 0.05, targeted=False, steps=1).minimal_perturbation(p.x, p.y)
    exact = p.min_norm()
    assert bool(((norms.double() - exact).abs() <= 1e-4 * exact + 1e-6).all())


def test_reference_update_without_line_search_overshoots_by_half_a_percent(problem):
    """The reference's eta = 1.05 / beta = 0.9 dynamics on a linear model: the best iterate is
    the second one, (1 + 0.1 u / (1 + u)) times the minimal norm with u = 1 - 0.9 * 1.05."""
    p = problem
    _, norms = FAB(p.model, 0.05, targeted=False, search_steps=0).minimal_perturbation(p.x, p.y)
    u = 1 - 0.9 * 1.05
    exact = p.min_norm()
    ratio = norms.double() / exact
    # 2e-4 of dynamics plus float32 resolution of the iterates (inputs near 0.5 have an ulp
    # of 6e-8, which is 1.4e-4 of the smallest minimal norm here, 4.3e-4)
    tol = 2e-4 + 2 * 6e-8 / exact
    assert bool(((ratio - (1 + 0.1 * u / (1 + u))).abs() <= tol).all())


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("eps", [0.03, 0.05])
def test_fixed_eps_breaks_exactly_the_breakable_inputs(problem, targeted, eps):
    p = problem
    fab = FAB(p.model, eps, targeted=targeted, n_target_classes=9)
    x_adv, fooled = fab.run(p.x, p.y)
    breakable = p.breakable(eps)
    assert 0 < int(breakable.sum()) < len(p.x)
    assert torch.equal(fooled, breakable)
    assert float((~fooled).double().mean()) == p.exact_robust_accuracy(eps)
    _check_adversarial(p.model, p.x[fooled], p.y[fooled], x_adv[fooled], eps)
    assert torch.equal(x_adv[~fooled], p.x[~fooled])


def test_line_search_breaks_inputs_the_overshoot_misses(problem):
    """An input with eps / 1.0052 < min norm < eps: the reference's iterates never come
    within eps (their best is 1.0052 times the minimal norm); the final check at norm eps on
    the ray of the best iterate does."""
    p = problem
    exact = p.min_norm()
    k = int(exact.argsort()[len(exact) // 2])
    eps = float(exact[k]) * 1.002
    _, fooled_ref = FAB(p.model, eps, targeted=False, search_steps=0).run(p.x, p.y)
    assert not bool(fooled_ref[k]) and bool((fooled_ref <= p.breakable(eps)).all())
    x_adv, fooled = FAB(p.model, eps, targeted=False).run(p.x, p.y)
    assert bool(fooled[k]) and torch.equal(fooled, p.breakable(eps))
    _check_adversarial(p.model, p.x[fooled], p.y[fooled], x_adv[fooled], eps)


def test_fixed_eps_drops_broken_rows(problem):
    """One step, untargeted: every row costs K - 1 backward rows; only the unbroken rows
    get the (single) eps-scaled line-search check."""
    p = problem
    fab = FAB(p.model, 0.05, targeted=False, steps=1)
    _, fooled = fab.run(p.x, p.y)
    n, broken_first = len(p.x), int((p.min_norm() * 1.05 <= 0.05).sum())
    assert fab.counts() == {"forward": 3 * n + (n - broken_first), "backward": 9 * n}
    # the targets run at once, one row per (input, target): the step costs 2n backward rows
    fab_t = FAB(p.model, 0.05, targeted=True, n_target_classes=2, steps=1, search_steps=0)
    fooled_t = fab_t.run(p.x, p.y).fooled
    assert fab_t.counts()["backward"] == 2 * n and bool(fooled_t.any())


# --------------------------------------------------------------------------- invariants


class TanhMLP(nn.Module):
    def __init__(self, seed: int = 0, classes: int = 5) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1, self.fc2 = nn.Linear(16, 12).double(), nn.Linear(12, classes).double()
        self.drop = nn.Dropout(0.5)
        with torch.no_grad():
            for q in self.parameters():
                q.copy_(torch.randn(q.shape, generator=g, dtype=q.dtype) * 1.5)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.fc1(x.flatten(1)))))


def _mlp_data(n: int = 24):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 4, 4, generator=g, dtype=torch.float64)
    return x, torch.randint(0, 5, (n,), generator=g)


def _reference_targeted_fab(model, x, y, steps, eta=1.05, alpha_max=0.1, beta=0.9):
    """FAB-T with one target (the most likely other class) from ``x``, the reference's loop
    written out plainly: per step one forward and gradient at the iterate, the projection
    step, a separate forward to check it, the smallest adversarial iterate kept, a step back
    towards ``x`` after each success. Returns the best norms (inf where none)."""
    with torch.no_grad():
        logits = model(x)
    target = logits.scatter(1, y[:, None], -math.inf).argmax(1)
    rows = torch.arange(len(y))
    xa, best = x.clone(), torch.full((len(y),), math.inf, dtype=x.dtype)
    for _ in range(steps):
        xg = xa.clone().requires_grad_(True)
        out = model(xg)
        diff = out[rows, target] - out[rows, y]
        (g,) = torch.autograd.grad(diff.sum(), xg)
        w, t = g.flatten(1), xa.flatten(1)
        b = (w * t).sum(1) - diff.detach()
        xa = fab_step(t, x.flatten(1), w, b, eta, alpha_max, 1e-8).view_as(x)
        with torch.no_grad():
            adv = model(xa).argmax(1) != y
        norm = (xa - x).flatten(1).abs().amax(1)
        best = torch.where(adv & (norm < best), norm, best)
        xa = torch.where(adv[:, None, None, None], x + beta * (xa - x), xa)
    return best


def test_iterations_follow_the_reference_loop_on_a_nonlinear_model():
    """On a model whose gradient changes from point to point, FAB's batched iterates (the
    linearisation, the step, the check, the step back) are the reference's loop's, and a
    step costs the reference's passes: a forward and a backward at the iterate, a forward
    to check the new one."""
    model = TanhMLP().eval()
    x, y = _mlp_data(60)
    with torch.no_grad():
        right = model(x).argmax(1) == y
    x, y = x[right], y[right]
    steps = 12
    fab = FAB(model, 0.05, steps=steps, targeted=True, n_target_classes=1, search_steps=0)
    _, norms = fab.minimal_perturbation(x, y)
    expected = _reference_targeted_fab(model, x, y, steps)
    assert bool(torch.isfinite(expected).any()) and bool(torch.isinf(expected).any())
    torch.testing.assert_close(norms, expected, rtol=1e-9, atol=1e-12)
    # one clean forward for the targets, then two forwards and a backward per row and step
    assert fab.n_backward == steps * len(x)
    assert fab.n_forward == (2 * steps + 1) * len(x)


@pytest.mark.parametrize("max_rows", [1024, 650, 300])  # 3 targets, 2 + 1, 1 + 1 + 1
def test_targets_at_once_break_what_one_target_after_another_breaks(monkeypatch, max_rows):
    """FAB-T runs groups of targets in one working batch; a run from x is deterministic
    per row, so it breaks exactly the inputs that the reference's order breaks: target k
    (the (k + 2)-th largest clean logit) on the inputs the earlier targets left robust."""
    monkeypatch.setattr(fab_module, "MAX_BATCH_ROWS", max_rows)
    model = TanhMLP().eval()
    x, _ = _mlp_data(300)
    with torch.no_grad():
        y = model(x).argmax(1)  # every input starts correct
    eps = 0.3  # large enough that the 2nd and 3rd targets break inputs the 1st cannot
    x_adv, together = FAB(model, eps, targeted=True, n_target_classes=3).run(x, y)

    one_by_one = torch.zeros_like(together)
    by_target = []
    for k in range(3):  # the k-th target alone, chosen from the logits independently
        monkeypatch.setattr(
            fab_module,
            "target_classes",
            lambda z, n, k=k: z.argsort(1, descending=True)[:, 1 + k, None],
        )
        left = torch.nonzero(~one_by_one)[:, 0]
        broke = FAB(model, eps, targeted=True, n_target_classes=1).run(x[left], y[left]).fooled
        one_by_one[left[broke]] = True
        by_target.append(int(broke.sum()))
    assert torch.equal(together, one_by_one)
    assert by_target[0] > 0 and by_target[1] + by_target[2] > 0, by_target  # later targets count
    assert 0 < int(together.sum()) < len(x)
    _check_adversarial(model, x[together], y[together], x_adv[together], eps)


@pytest.mark.parametrize("targeted", [False, True])
def test_ball_box_modes_grads_and_determinism(targeted):
    model = TanhMLP()
    model.train()
    model.drop.eval()  # a mixed state must come back as it was
    x, y = _mlp_data()
    eps = 0.08
    fab = FAB(model, eps, steps=15, targeted=targeted, n_target_classes=3, n_restarts=2, seed=3)
    x_adv, fooled = fab.run(x, y)
    assert model.training and not model.drop.training
    assert all(q.grad is None for q in model.parameters())
    assert x_adv.dtype == x.dtype and x_adv.shape == x.shape and not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    assert bool((x_adv >= 0).all() and (x_adv <= 1).all())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x_adv).argmax(1) != y, fooled)
    model.train()
    assert 0 < int(fooled.sum()) < len(x)
    assert torch.equal(x_adv[~fooled], x[~fooled])
    again = fab.run(x, y)
    fresh = FAB(model, eps, steps=15, targeted=targeted, n_target_classes=3, n_restarts=2, seed=3)
    for other in (again, fresh.run(x, y)):
        assert torch.equal(other.x_adv, x_adv) and torch.equal(other.fooled, fooled)
    x_min, norms = fab.minimal_perturbation(x, y)
    assert torch.equal(fab.minimal_perturbation(x, y)[1], norms)
    assert model.training and all(q.grad is None for q in model.parameters())
    assert torch.equal(norms, (x_min - x).flatten(1).abs().amax(1))


def test_minimal_mode_misclassified_inputs_and_unbroken_inputs():
    model = TanhMLP().eval()
    x, y = _mlp_data()
    with torch.no_grad():
        wrong = model(x).argmax(1) != y
    assert bool(wrong.any()) and not bool(wrong.all())
    x_adv, norms = FAB(model, 0.1, steps=20, targeted=False).minimal_perturbation(x, y)
    assert bool((norms[wrong] == 0).all()) and torch.equal(x_adv[wrong], x[wrong])
    found = torch.isfinite(norms) & ~wrong
    assert bool(found.any())
    _check_adversarial(model, x[found], y[found], x_adv[found])
    assert torch.equal(norms, (x_adv - x).flatten(1).abs().amax(1))
    assert torch.equal(x_adv[~torch.isfinite(norms)], x[~torch.isfinite(norms)])
    # a fixed-budget run reports the clean mistakes as fooled, with x itself
    x_fix, fooled = FAB(model, 0.0, steps=5, targeted=False).run(x, y)
    assert torch.equal(fooled, wrong) and torch.equal(x_fix, x)


def test_tiny_conv_net_channels_last_path():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10)
    ).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)
    weight = model[0].weight.detach().clone()
    results = {}
    for cl in (True, False):
        fab = FAB(model, 0.02, steps=10, targeted=False, channels_last=cl)
        x_adv, norms = fab.minimal_perturbation(x, y)
        assert bool(torch.isfinite(norms).all())
        _check_adversarial(model, x, y, x_adv)
        results[cl] = norms
        x_fix, fooled = fab.run(x, y)
        _check_adversarial(model, x[fooled], y[fooled], x_fix[fooled], 0.02)
    # same algorithm, different float layout: the norms agree closely
    torch.testing.assert_close(results[True], results[False], rtol=1e-2, atol=1e-4)
    assert model[0].weight.is_contiguous() and torch.equal(model[0].weight, weight)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"steps": 0}, ValueError, "steps"),
        ({"targeted": "yes"}, TypeError, "targeted"),
        ({"n_target_classes": 0}, ValueError, "n_target_classes"),
        ({"n_restarts": 1.5}, TypeError, "n_restarts"),
        ({"alpha_max": 1.5}, ValueError, "alpha_max"),
        ({"eta": 0.9}, ValueError, "eta"),
        ({"eta": "1"}, TypeError, "eta"),
        ({"beta": 0.0}, ValueError, "beta"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"search_steps": -1}, ValueError, "search_steps"),
        ({"eps": -0.1}, ValueError, "eps"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, exc, match):
    args = {"eps": 0.05, **kwargs}
    with pytest.raises(exc, match=match):
        FAB(TanhMLP(), **args)


def test_minimal_perturbation_validates_inputs_and_handles_empty_batches():
    fab = FAB(TanhMLP(), 0.05, steps=2)
    x, y = _mlp_data(4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fab.minimal_perturbation(x + 2, y)
    with pytest.raises(ValueError, match="shape"):
        fab.minimal_perturbation(x, y[:2])
    with pytest.raises(ValueError, match="labels"):
        fab.minimal_perturbation(x, y + 10)
    x_adv, norms = fab.minimal_perturbation(x[:0], y[:0])
    assert x_adv.shape == (0, 1, 4, 4) and norms.shape == (0,)
    assert fab.params()["targeted"] is True and "FAB(" in repr(fab)
