"""Square (Andriushchenko et al., ECCV 2020) against independent references.

* the p schedule and the window side, against the published table and hand-computed sides;
* a recorded trace of every query on the linear model of ``tests/linear_reference.py``,
  replayed here with an independent greedy random search bookkeeping: window sizes,
  vertices, acceptance, first fooling point, query counts;
* the linear model's exact robust accuracy (soundness, and most breakable inputs broken);
* the framework's invariants (no gradients, modes, determinism, layouts, arguments).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from linear_reference import linear_problem
from robustrank.attacks import square as square_module
from robustrank.attacks.compiled import compiled_kernels
from robustrank.attacks.losses import margin
from robustrank.attacks.square import Square, square_p, square_side

EPS = 0.05


@pytest.fixture(params=["compiled", "tensors"])
def impl(request, monkeypatch):
    """Both implementations of the proposal: compiled per row (CPU, numba) and tensors."""
    if request.param == "tensors":
        monkeypatch.setattr(square_module, "kernels_for", lambda *t: None)
    elif compiled_kernels() is None:
        pytest.skip("the compiled kernels need numba")
    return request.param


@pytest.fixture(scope="module")
def problem():
    return linear_problem(n=200, eps=EPS, seed=0)


class Recorder(nn.Module):
    """Wraps a model; records every input batch, its logits and whether grad was on."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[tuple[Tensor, Tensor, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        out = self.inner(x)
        self.calls.append((x.detach().clone(), out.detach().clone(), torch.is_grad_enabled()))
        return out


def tiny_convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Flatten(),
        nn.Linear(4 * 8 * 8, 10),
    )


# --------------------------------------------------------------------------- schedule

# the published schedule (Andriushchenko et al. 2020; p_selection of fra31/auto-attack):
# (iteration, divisor of p_init), at both ends of every interval
P_TABLE = [
    (0, 1), (10, 1), (11, 2), (50, 2), (51, 4), (200, 4), (201, 8), (500, 8), (501, 16),
    (1000, 16), (1001, 32), (2000, 32), (2001, 64), (4000, 64), (4001, 128), (6000, 128),
    (6001, 256), (8000, 256), (8001, 512), (9999, 512), (10000, 512), (50000, 512),
]  # fmt: skip


def test_square_p_matches_the_published_table():
    for it, div in P_TABLE:
        assert square_p(0.8, it, 10000) == 0.8 / div, it
        assert square_p(0.05, it, 5000) == 0.05 / div, it  # n_queries unused without rescale


def test_square_p_rescaled_to_10000_queries():
    # int(it / n * 10000): n = 1000 maps it = 100 onto 1000 (/16) and 101 onto 1010 (/32)
    cases = [(0, 1000, 1), (1, 1000, 1), (2, 1000, 2), (5, 1000, 2), (6, 1000, 4),
             (100, 1000, 16), (101, 1000, 32), (999, 1000, 512),
             (2500, 5000, 128), (1000, 5000, 32), (1001, 5000, 64),
             (1, 3, 64), (2, 3, 256)]  # fmt: skip
    for it, n, div in cases:
        assert square_p(0.8, it, n, rescale=True) == 0.8 / div, (it, n)
    # with a 10000-query budget rescaling is the identity
    for it in range(0, 10001, 7):
        assert square_p(0.8, it, 10000, rescale=True) == square_p(0.8, it, 10000)


# sides over the schedule, computed by hand: round(sqrt(0.8 / div * H * W)), half to even
SIDES_28x28x1 = {1: 25, 2: 18, 4: 13, 8: 9, 16: 6, 32: 4, 64: 3, 128: 2, 256: 2, 512: 1}
SIDES_32x32x3 = {1: 29, 2: 20, 4: 14, 8: 10, 16: 7, 32: 5, 64: 4, 128: 3, 256: 2, 512: 1}
SIDES_8x8x1 = {1: 7, 2: 5, 4: 4, 8: 3, 16: 2, 32: 1}


def test_window_side_on_mnist_and_cifar_shapes():
    for div, s in SIDES_28x28x1.items():
        assert square_side(0.8 / div, 1, 28, 28) == s, div
    for div, s in SIDES_32x32x3.items():
        assert square_side(0.8 / div, 3, 32, 32) == s, div  # per channel: 32 * 32 pixels
    for div, s in SIDES_8x8x1.items():
        assert square_side(0.8 / div, 1, 8, 8) == s, div


def test_window_side_rounding_and_caps():
    # sqrt(0.66015625 * 64) = 6.5 exactly: Python's round (the reference's) gives 6
    assert square_side(0.66015625, 1, 8, 8) == 6
    assert square_side(0.87890625, 2, 8, 8) == 8  # sqrt(56.25) = 7.5 -> 8
    assert square_side(1.0, 1, 8, 8) == 8  # the whole image
    assert square_side(1.0, 1, 8, 5) == 5  # capped at the shorter side
    assert square_side(1e-6, 3, 32, 32) == 1  # at least one pixel


# --------------------------------------------------------------------------- the trace


def _owner(points: Tensor, x: Tensor) -> Tensor:
    """The input each queried point belongs to (the l_inf-nearest clean input)."""
    return (points.flatten(1)[:, None] - x.flatten(1)[None]).abs().amax(2).argmin(1)


def _replay(rec: Recorder, x: Tensor, y: Tensor):
    """Per input, its queries in order (points, margins, wrong), from the recording."""
    per = [[] for _ in range(len(x))]
    for points, logits, _ in rec.calls[1:]:  # calls[0] is the clean check
        owner = _owner(points, x)
        m = margin(logits, y[owner])
        wrong = logits.argmax(1) != y[owner]
        for j in range(len(points)):
            per[int(owner[j])].append((points[j], float(m[j]), bool(wrong[j])))
    return per


def _bbox(diff: Tensor) -> tuple[slice, slice]:
    """The rows and columns spanned by the changed pixels (any channel)."""
    rows = torch.nonzero(diff.any(0).any(1)).squeeze(1)
    cols = torch.nonzero(diff.any(0).any(0)).squeeze(1)
    return slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1)


class Stats:
    """What the replay saw over all inputs."""

    def __init__(self, c: int) -> None:
        self.widest: dict[int, int] = {}  # side -> widest change while the side was s
        self.touched = torch.zeros(8, 8, dtype=torch.bool)  # pixels some window changed
        self.mixed = False  # a window with different signs in different channels
        self.c = c


def _check_step(pt: Tensor, best: Tensor, x0: Tensor, s: int, st: Stats) -> None:
    """One query: a vertex differing from the current best in one s x s window, with
    one sign per channel over the window."""
    diff = pt != best
    assert bool(diff.any())  # redrawn until the window changes the point
    rs, cs = _bbox(diff)
    h, w = rs.stop - rs.start, cs.stop - cs.start
    assert max(h, w) <= s  # the change fits in an s x s window
    st.widest[s] = max(st.widest.get(s, 0), h, w)
    up = (pt > x0)[:, rs, cs].flatten(1)  # the window's signs, per channel
    assert bool((up == up[:, :1]).all())  # one sign per channel
    st.mixed |= bool((up[:, 0] != up[0, 0]).any())
    st.touched |= diff.any(0)


def _check_input(q, x0, x_out, fooled, n_queries, st: Stats) -> tuple[float, int]:
    """Greedy random search replayed for one input (Andriushchenko et al. 2020, Alg. 1):
    returns its best margin and number of queries."""
    lo, hi = (x0 - EPS).clamp(min=0), (x0 + EPS).clamp(max=1)
    best, m_best = q[0][0], q[0][1]
    assert torch.equal(best, torch.where(best > x0, hi, lo))  # stripes: a vertex ...
    up = best > x0
    assert torch.equal(up, up[:, :1].expand_as(up))  # ... the same sign down each column
    first_wrong = 0 if q[0][2] else None
    for t, (pt, m, wrong) in enumerate(q[1:], start=1):
        assert first_wrong is None  # a fooled input is never queried again
        assert torch.equal(pt, torch.where(pt > x0, hi, lo))  # every query is a vertex
        s = SIDES_8x8x1[int(round(0.8 / square_p(0.8, t - 1, n_queries)))]
        _check_step(pt, best, x0, s, st)
        if wrong:
            first_wrong = t
        elif m < m_best:
            best, m_best = pt, m
    assert len(q) <= n_queries + 1
    assert fooled == (first_wrong is not None)
    assert torch.equal(x_out, q[first_wrong][0] if fooled else best)
    return m_best, len(q)


def _traced_problem(kind: str, problem):
    if kind == "linear":
        return problem.model, problem.x[:40], problem.y[:40]
    model = tiny_convnet(2).eval()
    x = 0.25 + 0.5 * torch.rand(30, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_trace_matches_an_independent_replay_of_the_random_search(kind, problem, impl):
    model, x, y = _traced_problem(kind, problem)
    rec = Recorder(model)
    n_queries = 600 if kind == "linear" else 300
    attack = Square(rec, EPS, n_queries=n_queries, seed=3)
    res = attack.run(x, y)
    assert all(not grad_on for *_, grad_on in rec.calls)  # no autograd at any query
    assert attack.n_backward == 0
    per = _replay(rec, x, y)
    st = Stats(x.shape[1])
    for i in range(len(x)):
        fooled = bool(res.fooled[i])
        m_best, n_q = _check_input(per[i], x[i], res.x_adv[i], fooled, n_queries, st)
        assert int(attack.last_queries[i]) == n_q
        if not fooled:  # monotone acceptance: never above the start's margin
            assert m_best <= per[i][0][1]
    assert bool(st.touched.all())  # every pixel, the last row and column too, is reachable
    sides = {7: 7, 5: 5, 4: 4, 3: 3, 2: 2} if kind == "linear" else {7: 7, 5: 5, 4: 4, 3: 3}
    assert st.widest == sides  # the windows do reach full size
    assert st.mixed == (kind == "conv")  # independent signs per channel
    assert attack.n_forward == len(x) + int(attack.last_queries.sum())


def test_ties_are_not_accepted(problem, impl):
    """A constant model: every query ties, so strict acceptance keeps the start."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.arange(10.0))
    x = problem.x[:5]
    y = torch.full((5,), 9)
    rec = Recorder(model)
    attack = Square(rec, EPS, n_queries=30, seed=0)
    x_adv, fooled = attack.run(x, y)
    assert not bool(fooled.any())
    assert torch.equal(x_adv, rec.calls[1][0])  # the stripes start
    assert bool((attack.last_queries == 31).all())


# --------------------------------------------------------------------------- linear model


def test_sound_and_breaks_most_breakable_inputs(problem, impl):
    breakable = problem.breakable()
    attack = Square(problem.model, EPS, n_queries=2000, seed=0)
    x_adv, fooled = attack.run(problem.x, problem.y)
    assert (x_adv - problem.x).abs().max() <= EPS + 1e-6
    with torch.no_grad():
        assert bool((problem.model(x_adv[fooled]).argmax(1) != problem.y[fooled]).all())
    assert not bool((fooled & ~breakable).any())  # only breakable inputs are broken
    robust_accuracy = 1 - fooled.double().mean().item()
    assert robust_accuracy >= problem.exact_robust_accuracy()
    # measured: all 103 breakable inputs broken with 1500-2000 queries (seeds 0 and 1);
    # at 1000 queries about 70%
    assert int(fooled.sum()) >= 0.9 * int(breakable.sum())
    assert attack.last_queries.max() <= 2001
    details = attack.details()
    assert details["n_broken"] == int(fooled.sum())
    assert details["queries_mean"] == pytest.approx(attack.last_queries[fooled].double().mean())
    attack.reset_counts()
    assert attack.details() == {"n_attacked": 0, "n_broken": 0}
    assert attack.counts() == {"forward": 0, "backward": 0}


def test_square_acceptance_never_raises_the_margin(impl):
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


def test_restarts_only_add_and_continue_the_first_run(problem, impl):
    x, y = problem.x[:60], problem.y[:60]
    n_single = n_restarted = 0
    for seed in (1, 2, 3):  # whether one seed's restarts break more is luck; three's is not
        one = Square(problem.model, EPS, n_queries=150, seed=seed)
        three = Square(problem.model, EPS, n_queries=150, n_restarts=3, seed=seed)
        r1, r3 = one.run(x, y), three.run(x, y)
        assert bool((r1.fooled <= r3.fooled).all())  # restart 1 is the single run
        assert torch.equal(r3.x_adv[r1.fooled], r1.x_adv[r1.fooled])
        n_single, n_restarted = n_single + int(r1.fooled.sum()), n_restarted + int(r3.fooled.sum())
        with torch.no_grad():
            m1, m3 = margin(problem.model(r1.x_adv), y), margin(problem.model(r3.x_adv), y)
        still = ~r3.fooled
        assert bool((m3[still] <= m1[still]).all())  # the best over restarts
        assert bool((three.last_queries[~r1.fooled] > 151).all())  # attacked again
        assert three.n_forward == len(x) + int(three.last_queries.sum())
    assert n_restarted > n_single


def test_misclassified_inputs_are_returned_unchanged_and_eps_zero(problem, impl):
    x, y = problem.x[:20], problem.y[:20].clone()
    y[:5] = (y[:5] + 1) % 10  # wrong labels: misclassified already
    attack = Square(problem.model, EPS, n_queries=20, seed=0)
    x_adv, fooled = attack.run(x, y)
    assert bool(fooled[:5].all()) and torch.equal(x_adv[:5], x[:5])
    assert bool((attack.last_queries[:5] == 0).all())
    x_adv, fooled = Square(problem.model, 0.0, n_queries=20).run(x, y)
    assert torch.equal(x_adv, x) and torch.equal(fooled, torch.arange(20) < 5)


# --------------------------------------------------------------------------- framework


def test_invariants_modes_and_grads_on_a_tiny_convnet():
    model = tiny_convnet().train()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(24, 3, 8, 8, generator=g)
    x[:4] = 0.0
    x[4:8] = 1.0  # on the box's faces
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    model.train()
    for cl in (True, False):
        attack = Square(model, 0.1, n_queries=100, seed=0, channels_last=cl)
        x_adv, fooled = attack.run(x, y)
        assert x_adv.dtype == x.dtype and not x_adv.requires_grad
        assert (x_adv - x).abs().max() <= 0.1 + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert all(m.training for m in model.modules())  # train mode restored
        assert all(p.grad is None for p in model.parameters())
        assert attack.n_backward == 0
        assert bool(fooled.any())
        with torch.no_grad():
            m = margin(model.eval()(x_adv), y)
        model.train()
        assert bool((m[fooled] < 1e-4).all())  # misclassified (up to layout round-off)


def test_deterministic_under_a_seed(impl):
    model = tiny_convnet(1).eval()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (16,), generator=torch.Generator().manual_seed(2))
    a, b = Square(model, 0.05, n_queries=60, seed=7), Square(model, 0.05, n_queries=60, seed=7)
    ra, rb = a.run(x, y), b.run(x, y)
    assert torch.equal(ra.x_adv, rb.x_adv) and torch.equal(ra.fooled, rb.fooled)
    assert torch.equal(a.last_queries, b.last_queries)
    again = a.run(x, y)  # re-seeded at every call
    assert torch.equal(again.x_adv, ra.x_adv) and torch.equal(again.fooled, ra.fooled)
    other = Square(model, 0.05, n_queries=60, seed=8).run(x, y)
    assert not torch.equal(other.x_adv, ra.x_adv)


def test_channels_last_inputs_give_the_same_points(impl):
    """The windows are read and written by logical offsets, whatever the memory layout."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).eval()
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = model(x).argmax(1)
    plain = Square(model, 0.05, n_queries=200, seed=0).run(x, y)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    cl = Square(model, 0.05, n_queries=200, seed=0).run(x_cl, y)
    assert torch.equal(plain.x_adv, cl.x_adv) and torch.equal(plain.fooled, cl.fooled)
    assert bool(plain.fooled.any()) and not bool(plain.fooled.all())


def test_params_and_bad_arguments(problem):
    m = problem.model
    attack = Square(m, 0.1, n_queries=10, p_init=1.0, n_restarts=2, seed=None)
    assert attack.params() == {
        "eps": 0.1,
        "n_queries": 10,
        "p_init": 1.0,
        "n_restarts": 2,
        "seed": None,
        "rescale_schedule": False,
    }
    with pytest.raises(ValueError, match="n_queries"):
        Square(m, 0.1, n_queries=0)
    with pytest.raises(TypeError, match="n_queries"):
        Square(m, 0.1, n_queries=10.5)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"p_init must lie in \(0, 1\]"):
            Square(m, 0.1, p_init=bad)
    with pytest.raises(ValueError, match="n_restarts"):
        Square(m, 0.1, n_restarts=0)
    with pytest.raises(TypeError, match="seed"):
        Square(m, 0.1, seed="0")
    with pytest.raises(TypeError, match="rescale_schedule"):
        Square(m, 0.1, rescale_schedule="yes")
    with pytest.raises(ValueError, match="eps"):
        Square(m, -0.1)
