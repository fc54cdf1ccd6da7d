"""The certifiers against closed forms and independent solvers: the exact worst case of
linear models, the triangle LP relaxation of a one-hidden-layer ReLU network (scipy's
linprog) and a fine grid; the public API's results, checks, errors and registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linprog
from torch import nn

from certify_reference import exact_linear_margins, margins_at, region
from robustrank.evaluation import (
    CertResult,
    UnsupportedModelError,
    certified_accuracy,
    certify,
    get_certifier,
    list_certifiers,
    logit_bounds,
    margin_bounds,
)
from robustrank.evaluation.certification import build_graph, register_certifier
from robustrank.evaluation.certification.registry import REGISTRY
from robustrank.models import create_model
from robustrank.registry import UnknownNameError

METHODS = ["lipschitz", "ibp", "crown", "crown-ibp", "alpha-crown"]
BACKWARD = ["crown", "crown-ibp"]


def _finite(m: torch.Tensor) -> torch.Tensor:
    """Margins with the label's +inf column set to 0 (the exact margin against itself)."""
    return torch.where(torch.isinf(m), torch.zeros_like(m), m)


# ------------------------------------------------------------------------------ linear models


class _NormalisedLinear(nn.Module):
    """(x - mean) / std with per-pixel buffers, flatten, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.rand(1, 2, 3, 3) * 0.5 + 0.2)
        self.register_buffer("std", torch.rand(1, 2, 3, 3) * 0.5 + 0.2)
        self.fc = nn.Linear(18, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(((x - self.mean) / self.std).flatten(1))


def _linear_case(normalised: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A linear model, its effective (W, b) on the raw input, inputs and labels."""
    torch.manual_seed(1)
    x = torch.rand(7, 2, 3, 3)
    x[0, 0, 0] = 0.0  # clipped by the box
    x[1, 1, 2] = 1.0
    y = torch.randint(0, 5, (7,))
    if not normalised:
        model = nn.Sequential(nn.Flatten(), nn.Linear(18, 5))
        return model, model[1].weight.detach(), model[1].bias.detach(), x, y
    model = _NormalisedLinear()
    scale = 1 / model.std.flatten()
    w = model.fc.weight.detach() * scale
    b = model.fc.bias.detach() - (w * model.mean.flatten()).sum(1)
    return model, w, b, x, y


@pytest.mark.parametrize("normalised", [False, True])
@pytest.mark.parametrize("method", ["ibp", "crown", "crown-ibp"])
def test_linear_models_are_bounded_exactly_over_the_clipped_ball(normalised, method):
    model, w, b, x, y = _linear_case(normalised)
    for eps in (0.0, 0.05, 0.3):
        exact = exact_linear_margins(w, b, x, y, eps)
        got = _finite(certify(model, x, y, eps, method).margins)
        torch.testing.assert_close(got, exact, atol=2e-5, rtol=1e-5)


def test_lipschitz_is_the_dual_norm_bound_for_a_linear_model():
    model, w, b, x, y = _linear_case(False)
    eps = 0.07
    d = w[y][:, None, :] - w[None, :, :]
    expected = (d * x.flatten(1)[:, None, :]).sum(-1) + b[y][:, None] - b[None, :]
    expected = expected - eps * d.abs().sum(-1)
    got = _finite(certify(model, x, y, eps, "lipschitz").margins)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_eps_zero_gives_the_clean_margins(method):
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)
    ).eval()
    x, y = torch.rand(5, 6), torch.randint(0, 3, (5,))
    got = _finite(certify(model, x, y, 0.0, method).margins)
    torch.testing.assert_close(got, margins_at(model, x, y).detach(), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------- one hidden layer, the LP


def _triangle_lp(w1, b1, w2, b2, lo, hi, c) -> float:
    """min c . (W2 a + b2) over the triangle relaxation (Ehlers 2017; Wong & Kolter 2018),
    with the exact interval bounds of z = W1 x + b1 over the box [lo, hi]."""
    n_in, n_hid = w1.shape[1], w1.shape[0]
    l_z = np.minimum(w1 * lo, w1 * hi).sum(1) + b1
    u_z = np.maximum(w1 * lo, w1 * hi).sum(1) + b1
    nv = n_in + 2 * n_hid  # x, z, a
    cost = np.zeros(nv)
    cost[n_in + n_hid :] = c @ w2
    a_eq = np.zeros((n_hid, nv))
    a_eq[:, :n_in], a_eq[:, n_in : n_in + n_hid] = w1, -np.eye(n_hid)
    eqs, ub_rows, ub_vals = [(a_eq, -b1)], [], []
    bounds = [(lo[i], hi[i]) for i in range(n_in)] + [(None, None)] * n_hid
    a_bounds = []
    for k in range(n_hid):
        z, a = n_in + k, n_in + n_hid + k
        if u_z[k] <= 0:
            a_bounds.append((0.0, 0.0))
        elif l_z[k] >= 0:
            row = np.zeros(nv)
            row[a], row[z] = 1.0, -1.0
            eqs.append((row[None], np.zeros(1)))
            a_bounds.append((None, None))
        else:
            a_bounds.append((0.0, None))
            row = np.zeros(nv)  # z - a <= 0
            row[z], row[a] = 1.0, -1.0
            ub_rows.append(row), ub_vals.append(0.0)
            slope = u_z[k] / (u_z[k] - l_z[k])  # a - slope z <= -slope l
            row = np.zeros(nv)
            row[a], row[z] = 1.0, -slope
            ub_rows.append(row), ub_vals.append(-slope * l_z[k])
    res = linprog(
        cost,
        A_ub=np.array(ub_rows) if ub_rows else None,
        b_ub=ub_vals or None,
        A_eq=np.vstack([e[0] for e in eqs]),
        b_eq=np.concatenate([e[1] for e in eqs]),
        bounds=bounds + a_bounds,
        method="highs",
    )
    assert res.status == 0, res.message
    return float(res.fun + c @ b2)


def test_crown_lies_below_the_triangle_lp_which_alpha_crown_reaches():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 7), nn.ReLU(), nn.Linear(7, 3)).double().eval()
    w1, b1, w2, b2 = (p.detach().numpy() for p in model.parameters())
    x = torch.rand(6, 2, dtype=torch.float64) * 0.6 + 0.2
    y = model(x).argmax(1)
    eps = 0.2
    bound = _finite(certify(model.float(), x.float(), y, eps, "crown").margins).double()
    alpha = certify(model, x.float(), y, eps, "alpha-crown", steps=300, lr=0.05).margins
    alpha = _finite(alpha).double()
    model.double()
    grid = torch.linspace(0, 1, 201, dtype=torch.float64)
    lo, hi = region(x, eps)
    checked = 0
    for i in range(len(x)):
        gx = lo[i, 0] + (hi[i, 0] - lo[i, 0]) * grid
        gy = lo[i, 1] + (hi[i, 1] - lo[i, 1]) * grid
        pts = torch.cartesian_prod(gx, gy)
        grid_min = margins_at(model, pts, y[i].expand(len(pts))).min(0).values.detach()
        for j in range(3):
            if j == y[i]:
                continue
            c = np.eye(3)[int(y[i])] - np.eye(3)[j]
            lp = _triangle_lp(w1, b1, w2, b2, lo[i].numpy(), hi[i].numpy(), c)
            assert float(bound[i, j]) <= lp + 1e-5
            assert lp <= float(grid_min[j]) + 1e-9
            # optimised slopes: never below CROWN, and they reach the LP (its dual)
            assert float(bound[i, j]) - 1e-6 <= float(alpha[i, j]) <= lp + 1e-5
            assert float(alpha[i, j]) == pytest.approx(lp, abs=1e-3)
            checked += 1
    assert checked == 12


# ---------------------------------------------------------------------------------- the API


def _tiny_fcnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(4)
    model = create_model("fcnn", width=8, depth=2, mean=0.13, std=0.3).eval()
    x = torch.rand(6, 1, 28, 28)
    return model, x, model(x).argmax(1).detach()


def test_cert_result_fields_and_certified_inputs_are_correct_and_positive():
    model, x, y = _tiny_fcnn()
    y = y.clone()
    y[0] = (y[0] + 1) % 10  # a wrong label: never certified
    result = certify(model, x, y, 0.0005, "crown")
    assert isinstance(result, CertResult)
    assert (result.method, result.eps, result.n) == ("crown", 0.0005, 6)
    assert result.margins.shape == (6, 10) and result.certified.dtype == torch.bool
    assert torch.isinf(result.margins[torch.arange(6), y]).all()
    assert not result.correct[0] and not result.certified[0]
    expected = result.correct & (result.margins > 0).all(1)
    assert torch.equal(result.certified, expected)
    assert result.certified_accuracy == pytest.approx(result.certified.float().mean().item())
    assert result.seconds > 0
    assert certified_accuracy(model, x, y, 0.0005, "crown") == result.certified_accuracy


def test_batches_give_the_same_result():
    model, x, y = _tiny_fcnn()
    whole = certify(model, x, y, 0.01, "crown")
    parts = certify(model, x, y, 0.01, "crown", batch_size=4)
    torch.testing.assert_close(parts.margins, whole.margins)


def test_margin_bounds_are_differentiable_and_zero_on_the_label():
    model, x, y = _tiny_fcnn()
    for method in ("ibp", "crown-ibp", "crown"):
        bounds = margin_bounds(model, x, y, 0.01, method)
        assert bounds.shape == (6, 10)
        assert torch.equal(bounds[torch.arange(6), y], torch.zeros(6))
        loss = torch.nn.functional.cross_entropy(-bounds, y)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        assert all(torch.isfinite(g).all() for g in grads)
        assert any(g.abs().sum() > 0 for g in grads)


def test_logit_bounds_contain_the_logits_at_sampled_points():
    model, x, _ = _tiny_fcnn()
    eps = 0.02
    lo, hi = region(x, eps)
    with torch.no_grad():
        logits = torch.stack([model(lo + (hi - lo) * torch.rand_like(x)) for _ in range(30)])
    for method in METHODS[1:]:
        lower, upper = logit_bounds(model, x, eps, method)
        assert (lower <= logits.min(0).values + 1e-5).all()
        assert (upper >= logits.max(0).values - 1e-5).all()


def test_training_mode_is_restored_and_bounds_use_eval_mode():
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(6, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(8, 3),
    )
    model[2].running_mean.uniform_(-0.5, 0.5)
    x, y = torch.rand(4, 6), torch.randint(0, 3, (4,))
    model.train()
    model[4].eval()  # a mixed state is restored as it was
    got = certify(model, x, y, 0.01, "crown").margins
    assert model.training and model[2].training and not model[4].training
    model.eval()
    torch.testing.assert_close(got, certify(model, x, y, 0.01, "crown").margins)


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("layer", "named"),
    [
        (nn.GELU(), "GELU"),
        (nn.Softplus(), "Softplus"),
    ],
)
def test_unsupported_layers_are_named(layer, named):
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), layer, nn.Linear(4, 2))
    with pytest.raises(UnsupportedModelError, match=rf"'2' \({named}\).*supported: nn.Linear"):
        certify(model, torch.rand(3, 4), torch.zeros(3, dtype=torch.long), 0.1)


class _LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(3, 4, batch_first=True)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.fc(out[:, -1])


class _Product(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x * x)


class _Gelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(torch.nn.functional.gelu(x))


def test_unsupported_models_raise_clear_errors():
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(UnsupportedModelError, match=r"module 'rnn' \(LSTM\)"):
        certify(_LSTMClassifier(), torch.rand(2, 5, 3), y, 0.1)
    with pytest.raises(UnsupportedModelError, match="product or quotient of two graph tensors"):
        certify(_Product(), torch.rand(2, 4), y, 0.1)
    with pytest.raises(
        UnsupportedModelError, match=r"function torch\._C\._nn\.gelu \(node 'gelu'\)"
    ):
        certify(_Gelu(), torch.rand(2, 4), y, 0.1)
    grouped = nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(UnsupportedModelError, match=r"module '0' \(Conv2d\).*groups=2"):
        certify(grouped, torch.rand(2, 2, 3, 3), y, 0.1)


def test_batchnorm_in_training_mode_is_refused_by_the_graph_builder():
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 2)).train()
    with pytest.raises(UnsupportedModelError, match="BatchNorm1d at '1' in training mode"):
        build_graph(model, (3,))


def test_bad_inputs_are_refused():
    model, x, y = _tiny_fcnn()
    with pytest.raises(ValueError, match="eps must be >= 0"):
        certify(model, x, y, -0.1)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        certify(model, x, y, math.nan)
    with pytest.raises(ValueError, match="x has 6 inputs but y has 5 labels"):
        certify(model, x, y[:5], 0.1)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        certify(model, x * 2, y, 0.1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        certify(model, x, y + 10, 0.1)
    with pytest.raises(ValueError, match="integer tensor of labels"):
        certify(model, x, y.float(), 0.1)
    with pytest.raises(ValueError, match="expects inputs of shape"):  # the model's own check
        certify(model, x[:, :, :27], y, 0.1)


# ---------------------------------------------------------------------------------- registry


def test_every_method_is_registered_and_unknown_names_suggest_one():
    assert set(METHODS) <= set(list_certifiers())
    for name in list_certifiers():
        assert get_certifier(name).description
    with pytest.raises(UnknownNameError, match="did you mean 'crown'"):
        get_certifier("crwn")
    model, x, y = _tiny_fcnn()
    with pytest.raises(UnknownNameError, match="did you mean 'ibp'"):
        certify(model, x, y, 0.1, "ibq")
    with pytest.raises(ValueError, match="takes no option 'max_element'.*max_elements"):
        certify(model, x, y, 0.1, "crown", max_element=10)


def test_a_registered_certifier_works_everywhere():
    model, x, y = _tiny_fcnn()
    with REGISTRY.temporary():

        @register_certifier("trivial", description="-inf everywhere")
        def trivial(graph, x, eps, spec, *, value: float = -1.0):
            return spec.new_full(spec.shape[:2], value)

        result = certify(model, x, y, 0.1, "Trivial", value=-2.0)
        assert result.method == "trivial" and result.certified_accuracy == 0.0
    assert "trivial" not in list_certifiers()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bounds_on_cuda_match_the_cpu():
    model, x, y = _tiny_fcnn()
    for method in METHODS:
        cpu = certify(model, x, y, 0.01, method).margins
        gpu = certify(model.cuda(), x.cuda(), y.cuda(), 0.01, method).margins
        model.cpu()
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
