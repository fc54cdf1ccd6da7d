"""Effective sparsity (Eq. 2) and effective rank (Eq. 3) against numpy and closed forms."""

import math

import numpy as np
import pytest
import torch

from robustrank.metrics import (
    effective_rank,
    effective_sparsity,
    format_structure_report,
    structure_report,
)
from robustrank.models import create_model


def np_sparsity(w: np.ndarray) -> float:
    return np.abs(w).sum() / np.sqrt((w**2).sum())


def np_rank(w: np.ndarray) -> float:
    s = np.linalg.svd(w, compute_uv=False)
    return s.sum() / np.sqrt((s**2).sum())


@pytest.mark.parametrize("shape", [(20, 784), (32, 288), (7, 3), (1, 5), (5, 1)])
def test_against_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    w = rng.standard_normal(shape)
    t = torch.tensor(w, dtype=torch.float32)
    assert effective_sparsity(t) == pytest.approx(np_sparsity(w), rel=1e-5)
    assert effective_rank(t) == pytest.approx(np_rank(w), rel=1e-5)


@pytest.mark.parametrize("n", [1, 4, 20])
def test_identity_closed_form(n):
    eye = torch.eye(n)
    # n ones: ||I||_1 = n, ||I||_F = sqrt(n), ||I||_* = n
    assert effective_sparsity(eye) == pytest.approx(math.sqrt(n))
    assert effective_rank(eye) == pytest.approx(math.sqrt(n))


def test_rank_one_closed_form():
    u = torch.tensor([1.0, -2.0, 3.0, 0.5])
    v = torch.tensor([0.3, 4.0, -1.0])
    w = torch.outer(u, v)
    assert effective_rank(w) == pytest.approx(1.0, abs=1e-6)
    # l1 and Frobenius factorise for an outer product
    expected = (u.abs().sum() * v.abs().sum()) / (u.norm() * v.norm())
    assert effective_sparsity(w) == pytest.approx(float(expected), rel=1e-6)


def test_one_hot_closed_form():
    w = torch.zeros(10, 30)
    w[3, 17] = -2.5
    assert effective_sparsity(w) == pytest.approx(1.0)
    assert effective_rank(w) == pytest.approx(1.0)


def test_scale_invariance_and_bounds():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(15, 40, generator=g)
    for c in (1e-3, 7.0, -2.0):
        assert effective_rank(c * w) == pytest.approx(effective_rank(w), rel=1e-5)
        assert effective_sparsity(c * w) == pytest.approx(effective_sparsity(w), rel=1e-5)
    assert 1.0 <= effective_rank(w) <= math.sqrt(15) + 1e-6
    assert 1.0 <= effective_sparsity(w) <= math.sqrt(w.numel()) + 1e-6


def test_conv_kernel_is_reshaped_per_appendix_b():
    g = torch.Generator().manual_seed(1)
    k = torch.randn(32, 32, 3, 3, generator=g)
    m = k.numpy().reshape(32, 288)
    assert effective_rank(k) == pytest.approx(np_rank(m), rel=1e-5)
    assert effective_sparsity(k) == pytest.approx(np_sparsity(m), rel=1e-5)


def test_structure_report_matches_definitions():
    model = create_model("cnn")
    rows = structure_report(model)
    layers = [model.conv1, model.conv2, model.fc1, model.out]
    assert [r.layer for r in rows] == ["W1", "W2", "W3", "W4"]
    assert rows[1].shape == (32, 288)
    for row, layer in zip(rows, layers):
        m = layer.weight.detach().double().numpy().reshape(layer.weight.shape[0], -1)
        assert row.rank == np.linalg.matrix_rank(m)
        assert row.effective_rank == pytest.approx(np_rank(m), rel=1e-9)
        assert row.effective_sparsity == pytest.approx(np_sparsity(m), rel=1e-9)
        assert row.rank_bound == pytest.approx(math.sqrt(np.linalg.matrix_rank(m)))
        assert row.sparsity_bound == pytest.approx(math.sqrt(m.size))
        assert row.effective_rank <= row.rank_bound + 1e-9
        assert row.effective_sparsity <= row.sparsity_bound + 1e-9
    text = format_structure_report(rows)
    assert "32x288" in text and "W4" in text


def test_rank_of_low_rank_layer_in_report():
    model = create_model("fcnn")
    with torch.no_grad():
        w = model.hidden[1].weight
        w.copy_(torch.outer(torch.arange(1.0, 21.0), torch.ones(20)))
    row = structure_report(model)[1]
    assert row.rank == 1
    assert row.effective_rank == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(3, 3), "all-zero"),
        (torch.tensor([[1.0, float("nan")]]), "NaN"),
        (torch.ones(3), "2-D weight matrix"),
        (torch.ones(2, 3, 4, 1, 1, 1), "2-D weight matrix"),
        (torch.ones(0, 3), "empty"),
    ],
)
def test_bad_inputs(bad, match):
    with pytest.raises(ValueError, match=match):
        effective_rank(bad)
    with pytest.raises(ValueError, match=match):
        effective_sparsity(bad)


def test_not_a_tensor():
    with pytest.raises(TypeError, match="torch.Tensor"):
        effective_rank(np.eye(3))
