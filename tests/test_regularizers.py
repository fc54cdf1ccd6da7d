"""Regularisers of Section 4 (Eqs. 5-8) against independent numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from robustrank.models import create_model
from robustrank.regularizers import (
    NuclearNorm,
    RegularizerConfig,
    joint_chain,
    joint_l1_penalty,
    l1_penalty,
    nuclear_norm,
    nuclear_penalty,
    regularization_terms,
)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


@pytest.fixture()
def fcnn() -> nn.Module:
    torch.manual_seed(0)
    return create_model("fcnn").double()


@pytest.fixture()
def cnn() -> nn.Module:
    torch.manual_seed(1)
    return create_model("cnn", channels=4, hidden=8).double()


def _weights(model: nn.Module) -> list[np.ndarray]:
    return [_np(layer.weight) for layer in model.weight_layers()]


# --------------------------------------------------------------------------- l1 (Eq. 5)


def test_l1_value_and_gradient_match_numpy(fcnn):
    lambdas = {1: 0.3, 4: 0.7, 6: 0.05}
    value = l1_penalty(fcnn, lambdas)
    ws = _weights(fcnn)
    expected = sum(lam * np.abs(ws[i - 1]).sum() for i, lam in lambdas.items())
    assert value.item() == pytest.approx(expected, rel=1e-12)
    value.backward()
    for i, layer in enumerate(fcnn.weight_layers(), 1):
        want = lambdas.get(i, 0.0) * np.sign(ws[i - 1])
        got = layer.weight.grad
        got = np.zeros_like(want) if got is None else _np(got)
        np.testing.assert_allclose(got, want, atol=1e-15)


def test_l1_on_conv_uses_every_kernel_entry(cnn):
    value = l1_penalty(cnn, {1: 2.0, 2: 0.5})
    ws = _weights(cnn)
    assert value.item() == pytest.approx(2.0 * np.abs(ws[0]).sum() + 0.5 * np.abs(ws[1]).sum())


# --------------------------------------------------------------------------- nuclear (Eq. 6)


def test_nuclear_value_matches_numpy_svd_with_conv_reshape(cnn):
    value = nuclear_penalty(cnn, {2: 0.25, 3: 1.5})
    w2 = _weights(cnn)[1]  # (out, in, kh, kw)
    w2_tilde = w2.reshape(w2.shape[0], -1)  # Appendix B: (out, in*kh*kw), row = vec(W_j)
    w3 = _weights(cnn)[2]
    expected = 0.25 * np.linalg.svd(w2_tilde, compute_uv=False).sum()
    expected += 1.5 * np.linalg.svd(w3, compute_uv=False).sum()
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_conv_reshape_matches_the_convolution_operator_appendix_b():
    """Appendix B: on non-overlapping patches the convolution is W~ (x) I_m, whose nuclear
    norm is m * ||W~||_*. Build that operator independently as the Jacobian of conv2d."""
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 5, 3, stride=3, bias=False).double()
    side = 2  # 2 x 2 = 4 non-overlapping patches
    x = torch.rand(1, 3, 3 * side, 3 * side, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda t: F.conv2d(t, conv.weight, stride=3), x)
    operator = jac.reshape(5 * side * side, 3 * 9 * side * side).numpy()
    m = side * side
    op_nuclear = np.linalg.svd(operator, compute_uv=False).sum()
    assert nuclear_norm(conv.weight).item() * m == pytest.approx(op_nuclear, rel=1e-10)


def test_nuclear_gradient_central_finite_differences():
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((6, 9))
    w = torch.tensor(w0, requires_grad=True)
    nuclear_norm(w).backward()
    h = 1e-6
    fd = np.zeros_like(w0)
    for idx in np.ndindex(*w0.shape):
        plus, minus = w0.copy(), w0.copy()
        plus[idx] += h
        minus[idx] -= h
        fd[idx] = (
            np.linalg.svd(plus, compute_uv=False).sum()
            - np.linalg.svd(minus, compute_uv=False).sum()
        ) / (2 * h)
    np.testing.assert_allclose(w.grad.numpy(), fd, atol=1e-7)


def test_nuclear_gradient_is_u_vt_of_reduced_svd():
    rng = np.random.default_rng(4)
    w0 = rng.standard_normal((4, 11))
    w = torch.tensor(w0, requires_grad=True)
    (3.0 * nuclear_norm(w)).backward()
    u, _, vt = np.linalg.svd(w0, full_matrices=False)
    np.testing.assert_allclose(w.grad.numpy(), 3.0 * (u @ vt), atol=1e-12)


def test_nuclear_gradient_with_repeated_singular_values_is_the_polar_factor():
    # W = 2 Q with Q orthogonal: all singular values equal; the (sub)gradient is U V^T = Q.
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((5, 5)))
    w = torch.tensor(2.0 * q, requires_grad=True)
    nuclear_norm(w).backward()
    assert torch.isfinite(w.grad).all()
    np.testing.assert_allclose(w.grad.numpy(), q, atol=1e-10)


def test_nuclear_gradient_of_rank_deficient_matrix_is_a_subgradient():
    rng = np.random.default_rng(6)
    w0 = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 8))  # rank 2, 4 zero s.v.
    w = torch.tensor(w0, requires_grad=True)
    value = NuclearNorm.apply(w)
    value.backward()
    g = w.grad.numpy()
    assert np.isfinite(g).all()
    # G is in the subdifferential of ||.||_* at W iff ||G||_2 <= 1 and <G, W> = ||W||_*
    assert np.linalg.norm(g, 2) <= 1 + 1e-10
    assert np.sum(g * w0) == pytest.approx(value.item(), rel=1e-10)
    for _ in range(20):  # hence the subgradient inequality holds everywhere
        v = rng.standard_normal(w0.shape)
        lower = value.item() + np.sum(g * (v - w0))
        assert np.linalg.svd(v, compute_uv=False).sum() >= lower - 1e-9


# --------------------------------------------------------------------------- joint (Eq. 7)


def test_joint_chain_indices(fcnn, cnn):
    assert joint_chain(fcnn) == [1, 2, 3, 4, 5, 6]
    assert joint_chain(cnn) == [3, 4]


def test_joint_value_matches_numpy_product_in_either_order(fcnn):
    ws = _weights(fcnn)
    product = ws[5]
    for w in reversed(ws[:5]):
        product = product @ w  # W6 W5 ... W1: (10 x 784)
    assert product.shape == (10, 784)
    transposed = ws[0].T
    for w in ws[1:]:
        transposed = transposed @ w.T  # W1^T ... W6^T: the paper's row-vector order
    value = joint_l1_penalty(fcnn, 0.2).item()
    assert value == pytest.approx(0.2 * np.abs(product).sum(), rel=1e-10)
    assert value == pytest.approx(0.2 * np.abs(transposed).sum(), rel=1e-10)


def test_joint_equals_l1_of_end_to_end_jacobian_of_linear_network():
    torch.manual_seed(7)
    model = create_model("fcnn", width=7, depth=3, activation="identity").double()
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(model, x).reshape(10, 784)
    assert joint_l1_penalty(model, 1.0).item() == pytest.approx(jac.abs().sum().item(), rel=1e-10)


def test_joint_on_cnn_uses_fc_chain_and_gradient_matches_closed_form(cnn):
    ws = _weights(cnn)
    product = ws[3] @ ws[2]  # out @ fc1: (10 x 8*7*7)
    value = joint_l1_penalty(cnn, 0.5)
    assert value.item() == pytest.approx(0.5 * np.abs(product).sum(), rel=1e-10)
    value.backward()
    # d ||A B||_1 / dB = A^T sign(AB);  d/dA = sign(AB) B^T
    np.testing.assert_allclose(
        _np(cnn.fc1.weight.grad), 0.5 * ws[3].T @ np.sign(product), atol=1e-12
    )
    np.testing.assert_allclose(
        _np(cnn.out.weight.grad), 0.5 * np.sign(product) @ ws[2].T, atol=1e-12
    )
    assert cnn.conv1.weight.grad is None and cnn.conv2.weight.grad is None


# --------------------------------------------------------------------------- Eq. (8) and config


def test_regularization_terms_split(cnn):
    cfg = RegularizerConfig(l1={1: 0.01, 2: 0.01}, nuclear={2: 0.1}, joint=0.3)
    terms = regularization_terms(cnn, cfg)
    assert set(terms) == {"l1", "nuclear", "joint"}
    assert terms["l1"].item() == pytest.approx(l1_penalty(cnn, {1: 0.01, 2: 0.01}).item())
    assert terms["nuclear"].item() == pytest.approx(nuclear_penalty(cnn, {2: 0.1}).item())
    assert terms["joint"].item() == pytest.approx(joint_l1_penalty(cnn, 0.3).item())
    assert cfg.active and not RegularizerConfig().active


def test_zero_lambdas_are_free(monkeypatch, fcnn):
    def boom(*args, **kwargs):
        raise AssertionError("SVD must not run for zero lambdas")

    monkeypatch.setattr(torch.linalg, "svd", boom)
    for value in (
        nuclear_penalty(fcnn, {}),
        nuclear_penalty(fcnn, {1: 0.0, 3: 0.0}),
        l1_penalty(fcnn, {}),
        joint_l1_penalty(fcnn, 0.0),
    ):
        assert value.item() == 0.0 and value.dtype == torch.float64
    terms = regularization_terms(fcnn, RegularizerConfig())
    assert all(t.item() == 0.0 for t in terms.values())


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_lambda_values(fcnn, bad):
    with pytest.raises(ValueError, match="finite number >= 0"):
        l1_penalty(fcnn, {1: bad})
    with pytest.raises(ValueError, match="finite number >= 0"):
        nuclear_penalty(fcnn, {2: bad})
    with pytest.raises(ValueError, match="finite number >= 0"):
        joint_l1_penalty(fcnn, bad)
    with pytest.raises(ValidationError, match="finite number >= 0"):
        RegularizerConfig(l1={1: bad})
    with pytest.raises(ValidationError, match="finite number >= 0"):
        RegularizerConfig(joint=bad)


def test_unknown_layer_index_names_existing_layers(fcnn, cnn):
    with pytest.raises(ValueError, match=r"layer index 7 does not exist; FCNN has layers 1\.\.6"):
        l1_penalty(fcnn, {7: 0.1})
    with pytest.raises(ValueError, match=r"layer index 0 does not exist; CNN has layers 1\.\.4"):
        nuclear_penalty(cnn, {0: 0.1})
    with pytest.raises(ValueError, match=r"no weight layer matches 'W9'; FCNN has layers 1\.\.6"):
        l1_penalty(fcnn, {"W9": 0.1})
    with pytest.raises(ValidationError, match="1-based"):
        RegularizerConfig(nuclear={0: 0.1})
    with pytest.raises(ValueError, match=r"layer index 5 does not exist; CNN has layers 1\.\.4"):
        RegularizerConfig(l1={5: 0.1}).check_model(cnn)


def test_joint_without_fully_connected_chain():
    class ConvOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 10, 28)

        def forward(self, x):
            return self.conv(x).flatten(1)

        def weight_layers(self):
            return [self.conv]

    model = ConvOnly()
    with pytest.raises(ValueError, match="joint regulariser .* needs fully connected"):
        joint_l1_penalty(model, 0.1)
    with pytest.raises(ValueError, match="needs fully connected"):
        RegularizerConfig(joint=0.1).check_model(model)
    RegularizerConfig(l1={1: 0.1}).check_model(model)  # fine without joint


def test_penalties_follow_model_device_and_dtype(fcnn):
    model = fcnn.float()
    value = regularization_terms(model, RegularizerConfig(l1={1: 0.1}, nuclear={1: 0.1}, joint=0.1))
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" for v in value.values())
