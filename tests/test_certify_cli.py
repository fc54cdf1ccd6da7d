"""``robustrank certify``, :func:`certify_sweep`, the certified curve and the diagnose
check "certified inputs are never broken"."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from robustrank.cli import app
from robustrank.evaluation import (
    certified_accuracy,
    certified_curve,
    certify_sweep,
    diagnose,
    plot_certified_curve,
)
from robustrank.evaluation.certification import register_certifier
from robustrank.evaluation.certification import registry as cert_registry

N = 40


def _mnist():
    from robustrank.data import DataError, eval_subset, load_dataset

    try:
        xtr, ytr = load_dataset("mnist", "train", progress=False)
        xte, yte = load_dataset("mnist", "test", progress=False)
    except DataError as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"MNIST not available: {err}")
    return (*eval_subset(xtr, ytr, 2000, seed=0), xte, yte)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The paper's FCNN trained one quick epoch (2000 images), its checkpoint, and the
    CLI's test subset (seed 0, N inputs)."""
    from robustrank.data import eval_subset
    from robustrank.models import create_model, save_checkpoint

    xtr, ytr, xte, yte = _mnist()
    torch.manual_seed(0)
    model = create_model("fcnn")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for s in range(0, len(xtr), 50):
        opt.zero_grad()
        F.cross_entropy(model(xtr[s : s + 50]), ytr[s : s + 50]).backward()
        opt.step()
    model.eval()
    path = save_checkpoint(model, tmp_path_factory.mktemp("ck") / "m.safetensors", dataset="mnist")
    x, y = eval_subset(xte, yte, N, seed=0)
    return model, path, x, y


def _run(*args: str):
    return CliRunner().invoke(app, ["certify", *args, "--no-progress"])


def _table(output: str) -> dict[str, dict[str, float]]:
    """eps -> method -> certified accuracy, read from the printed table."""
    lines = output.splitlines()
    i = lines.index("certified accuracy")
    head = lines[i + 1].split()
    methods = head[1 : head.index("clean")]
    table = {}
    for line in lines[i + 3 :]:
        cells = line.split()
        if len(cells) != len(head) - 1:  # "clean acc" is two words
            break
        table[cells[0]] = dict(zip(methods, map(float, cells[1:]), strict=False))
    return table


def test_cli_table_matches_certified_accuracy_and_writes_json(trained, tmp_path):
    model, path, x, y = trained
    out = tmp_path / "out"
    r = _run(str(path), "--method", "ibp,crown", "--eps", "0.005,0.02", "--n", str(N),
             "--batch-size", "15", "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    table = _table(r.output)
    assert set(table) == {"0.005", "0.02"}
    for eps in (0.005, 0.02):
        for method in ("ibp", "crown"):
            direct = certified_accuracy(model, x, y, eps, method)
            assert table[f"{eps:g}"][method] == pytest.approx(direct, abs=5e-5)
    doc = json.loads((out / "certify.json").read_text())
    assert doc["methods"] == ["ibp", "crown"] and doc["eps"] == [0.005, 0.02]
    assert doc["metadata"]["dataset"] == "mnist" and len(doc["results"]) == 4
    from robustrank.evaluation import decode_mask

    for row in doc["results"]:
        mask = decode_mask(row["certified"], N)
        assert int(mask.sum()) == row["n_certified"] and row["n"] == N
    assert (out / "certify.csv").read_text().startswith("method,eps,n,")
    again = _run(str(path), "--eps", "0.005", "--n", str(N), "--out", str(out))
    assert again.exit_code == 2 and "refusing to overwrite" in again.output
    ok = _run(str(path), "--eps", "0.005", "--n", str(N), "--out", str(out), "--overwrite")
    assert ok.exit_code == 0, ok.output


def test_cli_methods_repeated_and_bad_input(trained, tmp_path):
    _, path, _, _ = trained
    r = _run(str(path), "--method", "ibp", "--method", "crown-ibp", "--eps", "0.01", "--n", "10")
    assert r.exit_code == 0, r.output
    assert set(_table(r.output)["0.01"]) == {"ibp", "crown-ibp"}
    bad = _run(str(path), "--method", "crwn", "--n", "10")
    assert bad.exit_code == 2 and "did you mean 'crown'" in bad.output
    neg = _run(str(path), "--eps", "-0.01", "--n", "10")
    assert neg.exit_code == 2 and "error:" in neg.output and "-0.01" in neg.output


def test_cli_unsupported_model_names_the_module(trained, monkeypatch):
    from robustrank.cli import certify as certify_cli

    _, path, x, y = trained
    odd = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.GELU())
    monkeypatch.setattr(
        certify_cli, "model_and_subset", lambda *a, **k: (odd, {}, _Ref(), x[:5], y[:5])
    )
    r = _run(str(path), "--eps", "0.01")
    assert r.exit_code == 2 and r.output.startswith("error:")
    assert "GELU" in r.output or "gelu" in r.output


class _Ref:
    name = "mnist"

    def plain(self) -> str:
        return "mnist"


def test_certify_sweep_is_certify_at_every_pair(trained):
    model, _, x, y = trained
    sweep = certify_sweep(model, x, y, [0.0, 0.01], ["ibp", "CROWN"], batch_size=16)
    assert sweep.methods == ["ibp", "crown"] and sweep.eps == [0.0, 0.01]
    for row in sweep.rows():
        direct = certified_accuracy(model, x, y, row["eps"], row["method"])
        assert row["certified_accuracy"] == pytest.approx(direct, abs=1e-6)
    # at eps = 0 the region is the point: certified iff correct
    assert torch.equal(sweep.get(0.0, "ibp").certified, sweep.get(0.0, "ibp").correct)
    with pytest.raises(ValueError, match="did you mean"):
        certify_sweep(model, x, y, [0.01], ["ibpp"])
    with pytest.raises(ValueError, match="eps"):
        certify_sweep(model, x, y, [-0.1], ["ibp"])


def test_certified_curve_lies_below_the_attack_and_ibp_is_monotone(trained, tmp_path):
    model, _, x, y = trained
    grid = [0.0, 0.005, 0.01, 0.02, 0.05]
    curve = certified_curve(model, x, y, grid, ["ibp", "crown"], attack="apgd-ce", steps=20)
    assert curve.eps == grid and curve.attack == "apgd-ce"
    for values in curve.certified.values():
        assert all(c <= a + 1e-9 for c, a in zip(values, curve.robust_accuracy, strict=True))
    ibp = curve.certified["ibp"]
    assert all(b <= a for a, b in zip(ibp, ibp[1:]))
    assert curve.certified["crown"][1] > 0  # the comparison is not vacuous
    path = plot_certified_curve(curve, tmp_path / "fig.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(Exception, match="refusing to overwrite"):
        plot_certified_curve(curve, tmp_path / "fig.png")
    assert "attacked (apgd-ce)" in curve.format()


def test_cli_plot_writes_the_figure(trained, tmp_path):
    _, path, _, _ = trained
    fig = tmp_path / "cert.png"
    r = _run(str(path), "--method", "ibp", "--eps", "0,0.01", "--n", "20", "--plot", str(fig),
             "--attack", "fgsm")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "attacked (fgsm)" in r.output and fig.read_bytes()[:4] == b"\x89PNG"
    bad = _run(str(path), "--eps", "0.01", "--n", "5", "--plot", str(tmp_path / "b.png"),
               "--attack", "pgdd")  # fmt: skip
    assert bad.exit_code == 2 and "did you mean" in bad.output


# --------------------------------------------------------------------------- diagnose


def _check(report, name="certified"):
    (check,) = [c for c in report.checks if c.name == name]
    return check


def test_diagnose_certified_check_passes_on_a_real_model(trained):
    model, _, x, y = trained
    report = diagnose(model, x, y, 0.02, steps=10, n_queries=50)
    check = _check(report)
    assert check.status == "pass", check
    assert check.values["certified_and_fooled"] == 0 and check.values["attacks"] >= 4


def test_diagnose_certified_check_fails_on_a_lying_certifier(trained):
    model, _, x, y = trained
    with cert_registry.REGISTRY.temporary():

        @register_certifier("claims-all", description="certifies everything (a test liar)")
        def claims_all(graph, x, eps, spec):
            return torch.full(spec.shape[:2], 1e9, dtype=x.dtype, device=x.device)

        report = diagnose(model, x, y, 0.1, steps=10, n_queries=50, certifier="claims-all")
    check = _check(report)
    assert check.status == "warn" and check in report.warnings
    assert check.values["certified_and_fooled"] > 0
    assert "certified_and_fooled == 0" in check.criterion


def test_diagnose_certified_check_skips_unsupported_models(trained):
    _, _, x, y = trained
    torch.manual_seed(0)
    odd = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.GELU()).eval()
    report = diagnose(odd, x[:20], y[:20], 0.05, steps=5, n_queries=20)
    check = _check(report)
    assert check.status == "skip"
    assert check.values["skipped"] == "model not supported by the certifier"
    no = diagnose(odd, x[:20], y[:20], 0.05, steps=5, n_queries=20, certifier=None)
    assert not [c for c in no.checks if c.name == "certified"]
