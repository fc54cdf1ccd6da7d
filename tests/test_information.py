"""KDE mutual-information bounds (Kolchinsky & Tracey; Section 5) against a dense numpy
reference written here, closed forms and the estimator's defining properties."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robustrank.information import (
    LayerMI,
    format_mi_table,
    label_entropy,
    layer_activations,
    mi_per_layer,
    mutual_information_x,
    mutual_information_y,
)
from robustrank.models import create_model

# --------------------------------------------------------------------------- reference


def _lse_rows(a: np.ndarray) -> np.ndarray:
    m = a.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=1, keepdims=True)))[:, 0]


def ref_entropy_terms(h: np.ndarray, noise_var: float) -> tuple[float, float]:
    """Dense N x N: (lower, upper) of H(T) - (d/2)ln(2 pi e s^2), in nats, by direct
    differences (no |a|^2 + |b|^2 - 2ab trick, no chunks)."""
    n = h.shape[0]
    diff = h[:, None, :] - h[None, :, :]
    dist = (diff**2).sum(-1)
    up = -np.mean(_lse_rows(-dist / (2 * noise_var)) - np.log(n))
    low = -np.mean(_lse_rows(-dist / (8 * noise_var)) - np.log(n))
    return low, up


def ref_ixt(h: np.ndarray, noise_var: float) -> tuple[float, float]:
    """Full H formulas of algorithms.md, constant included, minus H(T|X); bits."""
    n, d = h.shape
    const = d / 2 * math.log(2 * math.pi * math.e * noise_var)
    low, up = ref_entropy_terms(h, noise_var)
    h_cond = d / 2 * math.log(2 * math.pi * math.e * noise_var)
    return ((const + low) - h_cond) / math.log(2), ((const + up) - h_cond) / math.log(2)


def ref_iyt(h: np.ndarray, y: np.ndarray, noise_var: float) -> tuple[float, float]:
    full_low, full_up = ref_entropy_terms(h, noise_var)
    cond_low = cond_up = 0.0
    for c in np.unique(y):
        sel = h[y == c]
        p = len(sel) / len(h)
        low, up = ref_entropy_terms(sel, noise_var)
        cond_low += p * low
        cond_up += p * up
    return (full_low - cond_low) / math.log(2), (full_up - cond_up) / math.log(2)


def ref_label_entropy(y: np.ndarray) -> float:
    _, counts = np.unique(y, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("n", "d", "scale", "noise_var"),
    [(40, 3, 1.0, 0.1), (64, 20, 0.3, 0.1), (33, 1, 2.0, 0.5), (50, 10, 0.05, 0.01)],
)
def test_matches_dense_numpy_reference(n, d, scale, noise_var):
    rng = np.random.default_rng(n + d)
    h = np.tanh(rng.standard_normal((n, d)) * scale * 3)
    y = rng.integers(0, 4, n)
    ixt = mutual_information_x(torch.tensor(h), noise_var)
    iyt = mutual_information_y(torch.tensor(h), torch.tensor(y), noise_var)
    assert ixt == pytest.approx(ref_ixt(h, noise_var), rel=1e-10, abs=1e-12)
    assert iyt == pytest.approx(ref_iyt(h, y, noise_var), rel=1e-10, abs=1e-12)


def test_float32_input_and_extra_dims_are_flattened():
    rng = np.random.default_rng(1)
    h = rng.standard_normal((30, 2, 3, 2))
    got = mutual_information_x(torch.tensor(h, dtype=torch.float32), 0.1)
    want = ref_ixt(h.reshape(30, -1).astype(np.float32).astype(np.float64), 0.1)
    assert got == pytest.approx(want, rel=1e-9)


def test_two_points_closed_form():
    # N = 2 at squared distance D: I = ln 2 - ln(1 + exp(-D / (c sigma^2))), c = 2 and 8
    for dist2, s2 in [(0.3, 0.1), (1.0, 0.1), (0.05, 0.02)]:
        h = torch.tensor([[0.0, 0.0], [math.sqrt(dist2), 0.0]], dtype=torch.float64)
        low, up = mutual_information_x(h, s2)
        assert up == pytest.approx(1 - math.log2(1 + math.exp(-dist2 / (2 * s2))), rel=1e-12)
        assert low == pytest.approx(1 - math.log2(1 + math.exp(-dist2 / (8 * s2))), rel=1e-12)


@pytest.mark.parametrize("n", [2, 17, 300])
def test_identical_points_give_zero(n):
    h = torch.full((n, 5), 0.37).repeat(1, 3) + torch.linspace(0, 1, 15)
    low, up = mutual_information_x(h, 0.1)
    assert abs(low) < 1e-9 and abs(up) < 1e-9
    y = torch.arange(n) % 3
    low, up = mutual_information_y(h, y, 0.1)
    assert abs(low) < 1e-9 and abs(up) < 1e-9


def test_points_far_apart_give_log2_n():
    n = 64
    # orthogonal points at distance 10 * sqrt(2) with sigma^2 = 0.1: kernels ~ exp(-500)
    h = 10.0 * torch.eye(n)
    low, up = mutual_information_x(h, 0.1)
    assert up == pytest.approx(math.log2(n), abs=1e-9)
    assert low == pytest.approx(math.log2(n), abs=1e-9)
    # tends to log2 N as the points separate: monotone in the scale
    scales = [0.05, 0.2, 0.5, 1.0, 3.0]
    ups = [mutual_information_x(s * torch.eye(n), 0.1)[1] for s in scales]
    assert all(a < b for a, b in zip(ups, ups[1:], strict=False))
    assert ups[-1] == pytest.approx(math.log2(n), abs=1e-6)


def test_well_separated_classes_reach_label_entropy():
    # 3 tight clusters far apart, labels = cluster: I(T;Y) = H(Y)
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0]])
    y = torch.tensor([0] * 10 + [1] * 20 + [2] * 5)
    h = centres[y] + 1e-4 * torch.randn(len(y), 2, generator=g)
    hy = ref_label_entropy(y.numpy())
    assert label_entropy(y) == pytest.approx(hy)
    low, up = mutual_information_y(h, y, 0.1)
    assert low == pytest.approx(hy, abs=1e-6)
    assert up == pytest.approx(hy, abs=1e-6)


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 50, 64, 1000])
def test_chunked_equals_unchunked(chunk):
    rng = np.random.default_rng(7)
    h = torch.tensor(np.tanh(rng.standard_normal((50, 4))))
    y = torch.tensor(rng.integers(0, 3, 50))
    whole = mutual_information_x(h, 0.1, chunk_size=50)
    assert mutual_information_x(h, 0.1, chunk_size=chunk) == pytest.approx(whole, rel=1e-12)
    whole_y = mutual_information_y(h, y, 0.1, chunk_size=50)
    assert mutual_information_y(h, y, 0.1, chunk_size=chunk) == pytest.approx(whole_y, rel=1e-12)
    # default (automatic) chunking agrees as well
    assert mutual_information_x(h, 0.1) == pytest.approx(whole, rel=1e-12)


_acts = st.integers(2, 25).flatmap(
    lambda n: st.tuples(
        arrays(
            np.float64,
            (n, 3),
            elements=st.floats(-3, 3, allow_nan=False, allow_infinity=False),
        ),
        arrays(np.int64, (n,), elements=st.integers(0, 3)),
        st.sampled_from([0.01, 0.1, 1.0]),
    )
)


@settings(max_examples=80, deadline=None)
@given(_acts)
def test_bound_properties(data):
    h, y, s2 = data
    n = len(h)
    low, up = mutual_information_x(torch.tensor(h), s2)
    assert low <= up + 1e-12
    assert -1e-9 <= low and up <= math.log2(n) + 1e-9
    hy = ref_label_entropy(y)
    ylow, yup = mutual_information_y(torch.tensor(h), torch.tensor(y), s2)
    assert ylow <= hy + 1e-9 and yup <= hy + 1e-9
    # and both equal the dense reference
    assert (ylow, yup) == pytest.approx(ref_iyt(h, y, s2), rel=1e-9, abs=1e-9)


def test_iyt_lower_can_exceed_upper():
    """Documented caveat: for I(T;Y) the two kernel widths are estimates, not ordered
    bounds. A small 1-D configuration (found by gradient search) shows it; the
    independent reference agrees."""
    h = np.array([-0.08, 2.16, -2.95, 1.02, 2.17, -0.08, 1.07, -0.07, 2.17])[:, None]
    y = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0])
    low, up = mutual_information_y(torch.tensor(h), torch.tensor(y), 0.1)
    ref_low, ref_up = ref_iyt(h, y, 0.1)
    assert (low, up) == pytest.approx((ref_low, ref_up), rel=1e-10)
    assert low > up


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    h = torch.randn(300, 8)
    y = torch.randint(0, 10, (300,))
    cpu = mutual_information_y(h, y, 0.1)
    gpu = mutual_information_y(h.cuda(), y.cuda(), 0.1)
    assert gpu == pytest.approx(cpu, rel=1e-9)


# --------------------------------------------------------------------------- errors


def test_bad_inputs_have_clear_errors():
    h = torch.randn(10, 3)
    y = torch.randint(0, 2, (10,))
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="noise_var must be a finite number > 0"):
            mutual_information_x(h, bad)
    with pytest.raises(TypeError, match="noise_var must be a real number"):
        mutual_information_x(h, "0.1")
    with pytest.raises(ValueError, match="at least N = 2"):
        mutual_information_x(h[:1], 0.1)
    with pytest.raises(ValueError, match="shape N x d"):
        mutual_information_x(torch.randn(10), 0.1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        mutual_information_x(np.zeros((4, 2)), 0.1)
    nan = h.clone()
    nan[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        mutual_information_x(nan, 0.1)
    inf = h.clone()
    inf[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        mutual_information_y(inf, y, 0.1)
    with pytest.raises(ValueError, match="labels have length 9 but activations have N = 10"):
        mutual_information_y(h, y[:9], 0.1)
    with pytest.raises(TypeError, match="integer class indices"):
        mutual_information_y(h, y.float(), 0.1)
    with pytest.raises(ValueError, match="chunk_size"):
        mutual_information_x(h, 0.1, chunk_size=0)


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize(
    ("name", "dims"),
    [("fcnn", [20, 20, 20, 20, 20, 10]), ("cnn", [32 * 14 * 14, 32 * 7 * 7, 128, 10])],
)
@pytest.mark.parametrize("training", [True, False])
def test_layer_activations_shapes_and_mode(name, dims, training):
    torch.manual_seed(0)
    model = create_model(name)
    model.train(training)
    x = torch.rand(7, 1, 28, 28)
    acts = layer_activations(model, x, batch_size=3)
    assert [tuple(a.shape) for a in acts] == [(7, d) for d in dims]
    assert model.training is training
    assert all(not a.requires_grad for a in acts)
    model.eval()
    with torch.no_grad():
        direct = [a.flatten(1) for a in model.activations(x)]
    for a, b in zip(acts, direct, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_layer_activations_dropout_model_is_evaluated_in_eval_mode():
    class Drop(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 4)
            self.drop = torch.nn.Dropout(0.9)

        def activations(self, x):
            return [self.drop(self.lin(x))]

    model = Drop().train()
    x = torch.randn(50, 4)
    a = layer_activations(model, x)[0]
    with torch.no_grad():
        torch.testing.assert_close(a, model.lin(x))
    assert model.training


def test_mi_per_layer_rows():
    torch.manual_seed(0)
    model = create_model("fcnn", width=6, depth=3)
    x = torch.rand(60, 1, 28, 28)
    y = torch.randint(0, 10, (60,))
    rows = mi_per_layer(model, x, y, noise_var=0.1, batch_size=25)
    assert [r.layer for r in rows] == ["t1", "t2", "t3", "output"]
    assert [r.index for r in rows] == [1, 2, 3, 4]
    assert [r.dim for r in rows] == [6, 6, 6, 10]
    acts = layer_activations(model, x, batch_size=25)  # same batches, same float32 rounding
    for r, a in zip(rows, acts, strict=True):
        h = a.double().numpy()
        assert (r.ixt_lower, r.ixt_upper) == pytest.approx(ref_ixt(h, 0.1), rel=1e-9)
        assert (r.iyt_lower, r.iyt_upper) == pytest.approx(ref_iyt(h, y.numpy(), 0.1), rel=1e-9)
    d = rows[0].as_dict()
    assert set(d) == {"layer", "index", "dim", "ixt_lower", "ixt_upper", "iyt_lower", "iyt_upper"}
    json.dumps([r.as_dict() for r in rows])
    table = format_mi_table(rows)
    assert "output" in table and "t3" in table
    with pytest.raises(ValueError, match="differ in length"):
        mi_per_layer(model, x, y[:10])


def test_plot_information_plane(tmp_path):
    from robustrank.plots import plot_information_plane

    history = []
    for epoch in range(4):
        mi = [
            LayerMI(f"t{i}", i, 20, 1.0 + epoch * 0.1 * i, 2 + epoch * 0.1 * i, 0.1, 0.2 + epoch)
            for i in (1, 2)
        ]
        mi.append(LayerMI("output", 3, 10, 1, 2, 0.1, 0.3))
        history.append({"epoch": epoch, "step": epoch * 10, "mi": mi})
    history[1]["mi"] = [m.as_dict() for m in history[1]["mi"]]  # dicts work too
    path = plot_information_plane(history[::-1], tmp_path / "plane.png", bound="lower")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["plane.png"]  # no temp files left
    assert path.stat().st_mode & 0o777 == 0o644
    with pytest.raises(ValueError, match="bound must be"):
        plot_information_plane(history, tmp_path / "x.png", bound="middle")
    with pytest.raises(ValueError, match="non-empty list"):
        plot_information_plane([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="'epoch' and 'mi'"):
        plot_information_plane([{"mi": []}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no layer MI entries"):
        plot_information_plane([{"epoch": 0, "test_acc": 0.9}], tmp_path / "x.png")
    # flat training-history rows (mi_<layer>_<quantity>), rows without MI skipped
    flat = [{"epoch": 0, "step": 0, "test_acc": 0.5}]
    for e in range(3):
        row = {"epoch": e + 1, "step": 100 * e, "test_acc": 0.9}
        for m in history[e]["mi"]:
            m = m if isinstance(m, dict) else m.as_dict()
            for q in ("ixt_lower", "ixt_upper", "iyt_lower", "iyt_upper"):
                row[f"mi_{m['layer']}_{q}"] = m[q]
        flat.append(row)
    from robustrank.plots import _flat_mi_entries

    parsed = _flat_mi_entries(flat[1])
    assert [p["layer"] for p in parsed] == ["t1", "t2", "output"]
    assert parsed[1]["iyt_upper"] == history[0]["mi"][1].iyt_upper
    path = plot_information_plane(flat, tmp_path / "flat.png", include_output=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_cli(tmp_path):
    from typer.testing import CliRunner

    from robustrank.cli import app
    from robustrank.models import save_checkpoint

    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("fcnn"), tmp_path / "m.safetensors", dataset="mnist")
    out = tmp_path / "report.json"
    runner = CliRunner()
    args = ["analyze", str(ckpt), "--n", "200", "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "eff.rank" in res.output and "I(T;X)" in res.output
    report = json.loads(out.read_text())
    assert report["dataset"] == "mnist" and report["n"] == 200
    assert [r["layer"] for r in report["mi"]] == ["t1", "t2", "t3", "t4", "t5", "output"]
    assert all(r["ixt_upper"] <= math.log2(200) + 1e-9 for r in report["mi"])
    assert len(report["structure"]) == 6
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "refusing to overwrite" in res.output
