"""Attacks: closed forms, an independent GNM, budgets, mode/grad hygiene, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustrank.attacks import FGSM, GNM, PGD, Attack, check_model
from robustrank.models import create_model

C, H, W = 5, 4, 4  # small multiclass problem on 1 x 4 x 4 "images"


class MLP(nn.Module):
    """A small multiclass tanh MLP on N x 1 x H x W inputs (float64 for exact comparisons)."""

    def __init__(self, seed: int = 0, classes: int = C, hidden: int = 12) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(H * W, hidden).double()
        self.fc2 = nn.Linear(hidden, classes).double()
        self.drop = nn.Dropout(0.5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 1.5)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.fc1(x.flatten(1)))))


def data(n: int = 16, seed: int = 0, classes: int = C):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, H, W, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return x, y


ATTACKS = {
    "fgsm": lambda m, eps: FGSM(m, eps),
    "pgd": lambda m, eps: PGD(m, eps, alpha=max(eps, 0.01) / 4, steps=7, seed=0),
    "pgd-noclip": lambda m, eps: PGD(m, eps, alpha=max(eps, 0.01) / 4, steps=7, seed=0, clip=False),
    "gnm": lambda m, eps: GNM(m, eps, steps=3),
    "gnm-t1": lambda m, eps: GNM(m, eps, steps=1),
}


# --------------------------------------------------------------------------- FGSM / PGD


def test_fgsm_matches_closed_form_on_linear_softmax_model():
    torch.manual_seed(0)
    lin = nn.Linear(H * W, C).double()
    model = nn.Sequential(nn.Flatten(), lin)
    x, y = data(32)
    eps = 0.1
    x_adv = FGSM(model, eps)(x, y)

    # grad_x CE = W^T (softmax(W x + b) - onehot(y)), by hand in numpy
    Wm, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    xf = x.reshape(len(x), -1).numpy()
    z = xf @ Wm.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(x)), y.numpy()] -= 1.0
    grad = p @ Wm
    expected = np.clip(xf + eps * np.sign(grad), 0.0, 1.0)
    np.testing.assert_allclose(x_adv.reshape(len(x), -1).numpy(), expected, atol=1e-12)
    # clip=False leaves the box
    unclipped = FGSM(model, eps, clip=False)(x, y).reshape(len(x), -1).numpy()
    np.testing.assert_allclose(unclipped, xf + eps * np.sign(grad), atol=1e-12)


def test_pgd_one_step_without_random_start_is_fgsm():
    model = MLP(1)
    x, y = data(20, seed=1)
    eps = 0.07
    pgd = PGD(model, eps, alpha=eps, steps=1, random_start=False)(x, y)
    fgsm = FGSM(model, eps)(x, y)
    torch.testing.assert_close(pgd, fgsm, rtol=0, atol=0)


def test_pgd_matches_manual_madry_iteration():
    """An independent PGD loop with the documented random start reproduces the attack."""
    model = MLP(2).eval()
    x, y = data(10, seed=2)
    eps, alpha, steps = 0.1, 0.03, 5
    got = PGD(model, eps, alpha, steps, seed=123)(x, y)

    g = torch.Generator().manual_seed(123)
    u = torch.rand(x.shape, generator=g, dtype=x.dtype)
    xa = (x + (2 * u - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        xa = xa.clone().requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        (grad,) = torch.autograd.grad(loss, xa)
        xa = xa.detach() + alpha * grad.sign()
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    torch.testing.assert_close(got, xa, rtol=0, atol=1e-12)


def test_pgd_seed_reproducible_and_generator_supported():
    model = MLP(3)
    x, y = data(8)
    a = PGD(model, 0.1, 0.02, 3, seed=5)(x, y)
    b = PGD(model, 0.1, 0.02, 3, seed=5)(x, y)
    c = PGD(model, 0.1, 0.02, 3, seed=6)(x, y)
    d = PGD(model, 0.1, 0.02, 3, generator=torch.Generator().manual_seed(5))(x, y)
    assert torch.equal(a, b) and torch.equal(a, d)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("eps", [0.0, 0.03, 0.3])
def test_adversarial_examples_stay_in_ball_and_box(name, eps):
    model = MLP(4)
    x, y = data(24, seed=4)
    x[:4] = 0.0  # pixels on the box edges
    x[4:8] = 1.0
    attack = ATTACKS[name](model, eps)
    x_adv = attack(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert not x_adv.requires_grad
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    if name != "pgd-noclip":
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    if eps == 0:
        torch.testing.assert_close(x_adv, x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 4])
def test_gnm_unclipped_moves_in_multiples_of_eps_over_t(steps):
    model = MLP(5)
    x, y = data(16, seed=5)
    eps = 0.2
    x_adv = GNM(model, eps, steps=steps, clip=False)(x, y)
    k = ((x_adv - x).abs() / (eps / steps)).numpy()
    np.testing.assert_allclose(k, np.round(k), atol=1e-6)
    assert k.max() <= steps + 1e-6
    if steps == 1:  # generic gradients have no zero entries: every pixel moves by eps
        np.testing.assert_allclose(k, 1.0, atol=1e-9)


# --------------------------------------------------------------------------- GNM reference


def gnm_per_sample(model, x, y, eps, steps, clip):
    """Independent GNM: one sample at a time, one autograd call per competing class."""
    step = eps / steps
    out = []
    for xi, k in zip(x, y.tolist(), strict=True):
        n = torch.zeros_like(xi)
        for _ in range(steps):
            xt = (xi + n).clone().requires_grad_(True)
            f = model(xt.unsqueeze(0))[0]
            best, best_g = None, None
            for j in range(f.shape[0]):
                if j == k:
                    continue
                (g,) = torch.autograd.grad(f[k] - f[j], xt, retain_graph=True)
                margin = float((f[k] - f[j]).detach()) - step * float(g.abs().sum())
                if best is None or margin < best:
                    best, best_g = margin, g
            n = n - step * torch.sign(best_g)
            if clip:
                n = (xi + n).clamp(0, 1) - xi
        out.append(xi + n)
    return torch.stack(out)


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("steps", [1, 3])
def test_gnm_matches_independent_per_sample_implementation(clip, steps):
    model = MLP(6).eval()
    x, y = data(12, seed=6)
    eps = 0.25  # large enough that clipping is active for some pixels
    got = GNM(model, eps, steps=steps, clip=clip)(x, y)
    ref = gnm_per_sample(model, x, y, eps, steps, clip)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-10)
    if clip:
        assert not torch.allclose(got, gnm_per_sample(model, x, y, eps, steps, False))


def test_gnm_t1_moves_towards_the_linearised_closest_class_on_linear_model():
    """For a linear model the T=1 step is the exact l_inf minimiser of the worst margin."""
    torch.manual_seed(1)
    lin = nn.Linear(H * W, C).double()
    model = nn.Sequential(nn.Flatten(), lin)
    x, y = data(10, seed=7)
    eps = 0.05
    x_adv = GNM(model, eps, steps=1, clip=False)(x, y)
    Wm = lin.weight.detach()
    z_adv = model(x_adv).detach()
    z = model(x).detach()
    for i, k in enumerate(y.tolist()):
        # best achievable margin for class j with ||d||_inf <= eps: z_k - z_j - eps ||w_k - w_j||_1
        margins = {
            j: float(z[i, k] - z[i, j] - eps * (Wm[k] - Wm[j]).abs().sum())
            for j in range(C)
            if j != k
        }
        j = min(margins, key=margins.get)
        assert float(z_adv[i, k] - z_adv[i, j]) == pytest.approx(margins[j], abs=1e-10)


# --------------------------------------------------------------------------- hygiene


class ModeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


class Wrapped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = MLP(7)
        self.rec = ModeRecorder()

    def forward(self, x):
        return self.rec(self.body(x))


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("initial", ["train", "eval", "mixed"])
def test_attacks_restore_modes_and_leave_parameter_grads_alone(name, initial):
    model = Wrapped()
    model.train(initial != "eval")
    if initial == "mixed":
        model.body.fc2.eval()  # a submodule in a different mode than its parent
    before = {n: m.training for n, m in model.named_modules()}
    model.body.fc1.weight.grad = torch.full_like(model.body.fc1.weight, 0.5)
    saved = model.body.fc1.weight.grad.clone()
    params = [p.detach().clone() for p in model.parameters()]
    x, y = data(6)
    ATTACKS[name](model, 0.1).run(x, y, early_stop=True)
    ATTACKS[name](model, 0.1)(x, y)
    assert model.rec.seen and not any(model.rec.seen)  # every forward in eval mode
    assert {n: m.training for n, m in model.named_modules()} == before
    assert torch.equal(model.body.fc1.weight.grad, saved)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "body.fc1.weight")
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters(), strict=True))


@pytest.mark.parametrize("name", ["fgsm", "pgd", "gnm"])
def test_channels_last_fast_path_matches_plain_call_and_leaves_model_alone(name):
    torch.manual_seed(3)
    model = create_model("cnn", channels=8, hidden=16).train()
    x, y = torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    kwargs = {"fgsm": {}, "pgd": {"alpha": 0.01, "steps": 4, "seed": 1}, "gnm": {"steps": 3}}
    cls = {"fgsm": FGSM, "pgd": PGD, "gnm": GNM}[name]
    fast = cls(model, 0.05, channels_last=True, **kwargs[name]).run(x, y, early_stop=True)
    plain = cls(model, 0.05, channels_last=False, **kwargs[name]).run(x, y, early_stop=True)
    # the same attack up to float round-off: a sign may flip only where a gradient is ~0
    assert (fast.x_adv != plain.x_adv).float().mean() < 1e-3
    assert torch.equal(fast.fooled, plain.fooled)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k][0]) and v.stride() == before[k][1]


def test_channels_last_must_be_a_bool_or_none():
    with pytest.raises(TypeError, match="channels_last"):
        FGSM(create_model("fcnn"), 0.05, channels_last="yes")


def test_mode_restored_when_the_attack_raises():
    model = MLP(8)
    model.train()
    x, y = data(4)
    y[0] = C + 3
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        PGD(model, 0.1, 0.01, 2)(x, y)
    assert all(m.training for m in model.modules())


def test_attack_works_under_no_grad_and_inference_mode():
    model = MLP(9)
    x, y = data(4)
    ref = FGSM(model, 0.1)(x, y)
    with torch.no_grad():
        assert torch.equal(FGSM(model, 0.1)(x, y), ref)
    with torch.inference_mode():
        xi, yi = x.clone(), y.clone()
        assert torch.equal(FGSM(model, 0.1)(xi, yi), ref)


def test_run_reports_misclassification_of_returned_examples():
    model = MLP(10).eval()
    x, y = data(32, seed=10)
    for attack in (PGD(model, 0.2, 0.05, 5, seed=0), GNM(model, 0.2, 3), FGSM(model, 0.2)):
        for es in (False, True):
            x_adv, fooled = attack.run(x, y, early_stop=es)
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != y
            assert torch.equal(fooled, wrong)


def test_early_stop_returns_first_fooling_iterate_of_pgd():
    """With early_stop, PGD returns the first misclassified iterate (checked step by step)."""
    model = MLP(11).eval()
    x, y = data(40, seed=11)
    eps, alpha, steps = 0.15, 0.02, 8
    x_adv, fooled = PGD(model, eps, alpha, steps, seed=3).run(x, y, early_stop=True)
    g = torch.Generator().manual_seed(3)
    xa = (x + (2 * torch.rand(x.shape, generator=g, dtype=x.dtype) - 1) * eps).clamp(0, 1)
    first = xa.clone()
    hit = torch.zeros(len(x), dtype=torch.bool)
    for t in range(steps + 1):
        xa.requires_grad_(True)
        logits = model(xa)
        new = (logits.argmax(1) != y) & ~hit
        first[new] = xa.detach()[new]
        hit |= new
        if t == steps:
            break
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), xa)
        xa = torch.min(torch.max(xa.detach() + alpha * grad.sign(), x - eps), x + eps)
        xa = xa.clamp(0, 1)
    first[~hit] = xa.detach()[~hit]
    assert torch.equal(fooled, hit)
    torch.testing.assert_close(x_adv, first, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda m: FGSM(m, -0.1), ValueError, r"eps must be an l_inf budget in \[0, 1\]"),
        (lambda m: FGSM(m, float("nan")), ValueError, r"eps must be an l_inf budget in \[0, 1\]"),
        (lambda m: FGSM(m, float("inf")), ValueError, r"eps must be an l_inf budget in \[0, 1\]"),
        (lambda m: FGSM(m, "0.1"), TypeError, "eps must be a real number"),
        (lambda m: PGD(m, 0.1, 0.01, 0), ValueError, "steps must be an integer >= 1"),
        (lambda m: PGD(m, 0.1, 0.01, 2.5), TypeError, "steps must be an integer"),
        (lambda m: PGD(m, 0.1, 0.0, 3), ValueError, "alpha .* > 0"),
        (lambda m: PGD(m, 0.1, -1.0, 3), ValueError, "alpha .* > 0"),
        (
            lambda m: PGD(m, 0.1, 0.01, 3, seed=1, generator=torch.Generator()),
            ValueError,
            "not both",
        ),
        (lambda m: GNM(m, 0.1, steps=0), ValueError, "steps must be an integer >= 1"),
        (lambda m: GNM("model", 0.1), TypeError, "torch.nn.Module"),
    ],
)
def test_bad_constructor_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make(MLP(0))


def _bad_inputs():
    x, y = data(4)
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    big = x.clone()
    big[1, 0, 2, 2] = 1.5
    neg = x.clone()
    neg[1, 0, 2, 2] = -0.2
    yn = y.clone()
    yn[2] = -1
    yo = y.clone()
    yo[2] = C
    return [
        (nan, y, ValueError, "NaN or infinite"),
        (big, y, ValueError, r"must lie in \[0, 1\]"),
        (neg, y, ValueError, r"must lie in \[0, 1\]"),
        (x, yn, ValueError, "labels must be >= 0"),
        (x, yo, ValueError, r"labels must lie in \[0, 5\)"),
        (x, y[:3], ValueError, "same batch"),
        (x, y.float(), TypeError, "integer class labels"),
        (x[:, 0], y, ValueError, "N x C x H x W"),
        ((x * 255).to(torch.uint8), y, TypeError, "floating-point"),
        (x.numpy(), y, TypeError, "torch.Tensor"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_inputs())))
@pytest.mark.parametrize("name", ["fgsm", "pgd", "gnm"])
def test_bad_inputs_raise_clear_errors(case, name):
    x, y, exc, match = _bad_inputs()[case]
    with pytest.raises(exc, match=match):
        ATTACKS[name](MLP(0), 0.1)(x, y)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_round_off_just_outside_the_box_is_accepted(name):
    """Inputs off [0, 1] by round-off (within RANGE_TOLERANCE) are attacked, not refused:
    the result is a valid adversarial example and the same (up to the round-off) as
    the attack on the input clamped to [0, 1]."""
    model = MLP(1)
    x, y = data(4)
    x[0, 0, 0, 0] = -1e-8
    x[1, 0, 0, 0] = 1 + 1e-8
    eps = 0.1
    x_adv = ATTACKS[name](model, eps)(x, y)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert bool(torch.isfinite(x_adv).all())
    assert float((x_adv - x).abs().max()) <= eps + 1e-12
    if name != "pgd-noclip":
        assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    reference = ATTACKS[name](model, eps)(x.clamp(0, 1), y)
    torch.testing.assert_close(x_adv, reference, rtol=0, atol=1e-7)


def test_empty_batch_and_int32_labels():
    model = MLP(1)
    x, y = data(4)
    assert FGSM(model, 0.1)(x[:0], y[:0]).shape == (0, 1, H, W)
    torch.testing.assert_close(FGSM(model, 0.1)(x, y.int()), FGSM(model, 0.1)(x, y))


def test_base_class_is_abstract_and_repr_lists_settings():
    with pytest.raises(NotImplementedError):
        Attack(MLP(0), 0.1)(*data(2))
    assert repr(PGD(MLP(0), 0.05, 0.005, 20, seed=1)) == (
        "PGD(eps=0.05, alpha=0.005, steps=20, random_start=True, clip=True, seed=1)"
    )


# --------------------------------------------------------------------------- checks


def test_check_model_flags_softmax_outputs_and_zero_gradients():
    x, y = data(8)
    soft = nn.Sequential(MLP(0), nn.Softmax(dim=1)).eval()
    msgs = check_model(soft, x, y, warn=False)
    assert any("probabilities" in m for m in msgs)

    class Dead(nn.Module):  # saturated: constant logits, zero input gradient
        def forward(self, x):
            return torch.zeros(len(x), C, dtype=x.dtype) + 0.0 * x.flatten(1)[:, :1]

    assert any("exactly zero" in m for m in check_model(Dead(), x, y, warn=False))
    healthy = MLP(0).eval()
    assert check_model(healthy, x, y, warn=False) == []
    healthy.train()
    with pytest.warns(UserWarning, match="training mode"):
        check_model(healthy, x, y)
    assert healthy.training


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_attacks_run_on_cuda():
    model = MLP(0).cuda()
    x, y = data(8)
    for name in ATTACKS:
        x_adv, fooled = ATTACKS[name](model, 0.1).run(x.cuda(), y.cuda(), early_stop=True)
        assert x_adv.is_cuda and fooled.is_cuda
