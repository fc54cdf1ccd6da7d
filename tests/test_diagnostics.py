"""Gradient-masking diagnostics: quiet on a normally trained model, loud on masked ones."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustrank.evaluation import Tolerances, diagnose

EPS = 0.05


def _mnist(n_train: int = 6000, n_test: int = 200):
    from robustrank.data import DataError, eval_subset, load_dataset

    try:
        xtr, ytr = load_dataset("mnist", "train", progress=False)
        xte, yte = load_dataset("mnist", "test", progress=False)
    except DataError as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"MNIST not available: {err}")
    xtr, ytr = eval_subset(xtr, ytr, n_train, seed=0)
    return xtr, ytr, *eval_subset(xte, yte, n_test, seed=1)


def _train_mlp(x, y, seed: int = 0, epochs: int = 3, model: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(seed)
    if model is None:
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for s in range(0, len(x), 100):
            i = perm[s : s + 100]
            opt.zero_grad()
            F.cross_entropy(model(x[i]), y[i]).backward()
            opt.step()
    return model.eval()


class Quantised(nn.Module):
    """Rounds its input to multiples of 1/4: zero input gradients almost everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(4 * x) / 4)


@pytest.fixture(scope="module")
def mnist_models():
    xtr, ytr, x, y = _mnist()
    return _train_mlp(xtr, ytr, seed=0), _train_mlp(xtr, ytr, seed=1), x, y


@pytest.mark.slow
def test_diagnose_is_quiet_on_a_normally_trained_model(mnist_models, tmp_path):
    model, surrogate, x, y = mnist_models
    report = diagnose(model, x, y, EPS, surrogate=surrogate, steps=50, n_queries=500)
    assert report.warnings == [], report.format()
    assert [c.status for c in report.checks].count("pass") == len(report.checks)
    names = {c.name for c in report.checks}
    assert {"single-step", "eps-monotone", "large-eps", "black-box", "transfer"} <= names
    assert {"convergence", "zero-gradient", "randomness", "logits"} <= names
    doc = json.loads(report.save_json(tmp_path / "d.json").read_text())
    assert doc["warnings"] == [] and len(doc["checks"]) == len(report.checks)
    assert "all checks passed" in report.format()


@pytest.mark.slow
def test_diagnose_warns_on_an_input_quantising_model(mnist_models):
    model, _, x, y = mnist_models
    report = diagnose(Quantised(model), x, y, EPS, steps=50, n_queries=500)
    warned = {c.name for c in report.warnings}
    assert {"zero-gradient", "black-box", "large-eps"} <= warned, report.format()
    zero = next(c for c in report.checks if c.name == "zero-gradient")
    assert zero.values["zero_margin_grad"] > 0.9
    box = next(c for c in report.checks if c.name == "black-box")
    assert box.values["square_only"] > 0.02  # measured 0.044 (8 of 181 attacked inputs)
    assert box.values["ra_square"] < box.values["ra_white_box"]
    assert "autoattack" in box.remedy


def test_diagnose_flags_probabilities_and_randomness(mnist_models):
    model, _, x, y = mnist_models
    soft = nn.Sequential(model, nn.Softmax(dim=1))
    report = diagnose(soft, x[:50], y[:50], EPS, steps=10, n_queries=50)
    assert "logits" in {c.name for c in report.warnings}

    class Noisy(nn.Module):
        def forward(self, x):
            return model(x + 0.01 * torch.randn_like(x))

    noisy = diagnose(Noisy(), x[:50], y[:50], EPS, steps=10, n_queries=50)
    assert "randomness" in {c.name for c in noisy.warnings}


def test_tolerances_are_validated_and_change_the_verdicts(mnist_models):
    model, _, x, y = mnist_models
    with pytest.raises(ValueError, match="less than or equal to 1"):
        Tolerances(black_box=2.0)
    with pytest.raises(ValueError, match="Extra inputs"):
        Tolerances(blackbox=0.1)
    strict = Tolerances(large_eps_success=1.0, zero_gradient=0.0)
    report = diagnose(model, x[:50], y[:50], EPS, steps=10, n_queries=50, tolerances=strict)
    large = next(c for c in report.checks if c.name == "large-eps")
    assert large.status == ("pass" if large.values["success_rate"] == 1.0 else "warn")
    with pytest.raises(ValueError, match="eps must lie in"):
        diagnose(model, x, y, 0.0)


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Two paper FCNNs (registered, so the CLI can rebuild them) trained one epoch."""
    from robustrank.models import create_model, save_checkpoint

    xtr, ytr, _, _ = _mnist(n_train=3000)
    model, surrogate = (_train_mlp(xtr, ytr, s, 1, create_model("fcnn")) for s in (0, 1))
    d = tmp_path_factory.mktemp("ckpt")
    return save_checkpoint(model, d / "m.safetensors", dataset="mnist"), save_checkpoint(
        surrogate, d / "s.safetensors", dataset="mnist"
    )


def test_cli_evaluate_autoattack_prints_the_components(checkpoint, tmp_path):
    from typer.testing import CliRunner

    from robustrank.cli import app

    args = ["evaluate", str(checkpoint[0]), "--attack", "autoattack", "--n", "60"]
    args += ["-o", "steps=10", "-o", "n_queries=100", "--out", str(tmp_path), "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    for name in ("apgd-ce", "apgd-t", "fab-t", "square"):
        assert name in r.output
    doc = json.loads((tmp_path / "eval-autoattack.json").read_text())
    (res,) = doc["results"]
    parts = res["details"]["components"]
    assert sum(p["n_broken"] for p in parts) == res["n_fooled"]
    assert res["params"]["attacks"][0]["steps"] == 10
    bad = CliRunner().invoke(app, [*args[:6], "-o", "restarts=5"])
    assert bad.exit_code != 0 and "takes no option 'restarts'" in bad.output
    bad = CliRunner().invoke(app, [*args[:6], "-o", "steps"])
    assert bad.exit_code != 0 and "KEY=VALUE" in bad.output


def test_cli_diagnose_exit_code_follows_the_warnings(checkpoint, tmp_path):
    from typer.testing import CliRunner

    from robustrank.cli import app

    args = ["diagnose", str(checkpoint[0]), "--n", "80", "--steps", "20", "--n-queries", "200"]
    args += ["--surrogate", str(checkpoint[1]), "--out", str(tmp_path), "--no-progress"]
    r = CliRunner().invoke(app, args)
    doc = json.loads((tmp_path / "diagnostics.json").read_text())
    assert r.exit_code == (1 if doc["warnings"] else 0), r.output
    assert "transfer" in r.output and "zero-gradient" in r.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "refusing to overwrite" in again.output


def test_cli_curve_writes_json_and_figure(checkpoint, tmp_path):
    from typer.testing import CliRunner

    from robustrank.cli import app

    args = ["curve", str(checkpoint[0]), "--out", str(tmp_path), "--n", "60"]
    args += ["--eps-grid", "0,0.05,0.1,0.3", "--confirm", "fgsm", "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "curve.json").read_text())
    assert doc["eps"] == [0.0, 0.05, 0.1, 0.3] and doc["robust_accuracy"][0] <= 1.0
    ra = doc["robust_accuracy"]
    assert all(b <= a for a, b in zip(ra, ra[1:]))
    assert len(doc["confirmations"]) == 4
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
