"""The API behind the thin command line: what the commands used to do themselves (write the
curve files, build the analysis report, format the tables they print) is a function or a
method a library user can call, and the ``robustrank.cli`` package keeps its shape."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from robustrank.evaluation import (
    DiagnosticReport,
    RobustnessCurve,
    curve_paths,
    format_breakdown,
    result_paths,
    save_curve,
)
from robustrank.experiments.reproduce import ReproduceResult
from robustrank.information import ModelAnalysis, analyze_model
from robustrank.models import create_model
from robustrank.ownership import OutputExistsError, OwnershipError, read_marker
from robustrank.sweeps import SweepResult

CLI = Path(__file__).resolve().parents[1] / "src" / "robustrank" / "cli"


# --------------------------------------------------------------------------- curves


def _curve() -> RobustnessCurve:
    breaking = torch.tensor([0.0, 0.03, 0.07, math.inf], dtype=torch.float64)
    correct = torch.tensor([False, True, True, True])
    curve = RobustnessCurve([0.0, 0.05, 0.1], breaking, correct, "fgsm", "sweep")
    curve.fold("pgd", 0.1, torch.tensor([False, False, False, True]), 0.5)
    return curve


def test_save_curve_writes_both_files_and_records_them(tmp_path):
    curve, out = _curve(), tmp_path / "curve"
    written = save_curve(curve, out, checkpoint=Path("runs/a/final.safetensors"), dataset="mnist")
    assert written == curve_paths(out) == [out / "curve.json", out / "curve.png"]
    expected = {"checkpoint": "runs/a/final.safetensors", "dataset": "mnist", **curve.to_dict()}
    assert written[0].read_text() == json.dumps(expected, indent=2) + "\n"
    assert written[1].read_bytes()[:4] == b"\x89PNG"
    assert sorted(read_marker(out).files) == ["curve.json", "curve.png"]


def test_save_curve_replaces_its_own_files_only_with_overwrite(tmp_path):
    curve = _curve()
    save_curve(curve, tmp_path)
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        save_curve(curve, tmp_path)
    assert save_curve(curve, tmp_path, overwrite=True) == curve_paths(tmp_path)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "curve.png").write_bytes(b"my figure")
    with pytest.raises(OwnershipError, match="robustrank did not write it"):
        save_curve(curve, foreign, overwrite=True)
    assert not (foreign / "curve.json").exists()  # both checked before anything is written


def test_curve_format_is_the_table_curve_prints():
    assert _curve().format().splitlines() == [
        "    eps robust acc  fooling",
        "      0     0.7500   0.0000",
        "   0.05     0.5000   0.3333",
        "    0.1     0.0000   1.0000",
        "confirmed at eps 0.1 by pgd: 1 more broken, robust accuracy 0.2500 -> 0.0000",
    ]


# --------------------------------------------------------------------------- evaluate


def test_format_breakdown_lists_the_members_of_ensemble_results():
    members = [
        {"name": "apgd-ce", "n_attacked": 90, "n_broken": 40, "seconds": 1.234}
        | {"forward": 12000, "backward": 11000},
        {"name": "square", "n_attacked": 50, "n_broken": 1, "seconds": 10.0}
        | {"forward": 250000, "backward": 0},
    ]
    pgd = SimpleNamespace(attack="pgd", eps=0.05, n_correct=90, n_fooled=40, details={})
    aa = SimpleNamespace(
        attack="autoattack", eps=0.05, n_correct=90, n_fooled=41, details={"components": members}
    )
    assert format_breakdown([pgd]) == ""
    assert format_breakdown([pgd, aa, aa]).split("\n") == [
        "autoattack eps=0.05: 90 attacked, 41 broken",
        "  component  attacked  broken     time       fwd       bwd",
        "  apgd-ce          90      40     1.2s     12000     11000",
        "  square           50       1    10.0s    250000         0",
        "",
        "autoattack eps=0.05: 90 attacked, 41 broken",
        "  component  attacked  broken     time       fwd       bwd",
        "  apgd-ce          90      40     1.2s     12000     11000",
        "  square           50       1    10.0s    250000         0",
    ]


def test_result_paths_default_to_the_attack_in_out():
    assert result_paths(None, "PGD") == (None, None)
    assert result_paths("d", "PGD") == (Path("d/eval-pgd.json"), Path("d/eval-pgd.csv"))
    assert result_paths("d", "pgd", csv_path="x.csv") == (Path("d/eval-pgd.json"), Path("x.csv"))


def test_diagnostics_save_json_records_the_file_and_refuses_to_overwrite(tmp_path):
    report = DiagnosticReport(eps=0.05, n=10, n_correct=9)
    target = report.save_json(tmp_path / "diagnostics.json")
    assert json.loads(target.read_text())["n_correct"] == 9
    assert read_marker(tmp_path).files == ["diagnostics.json"]
    with pytest.raises(OutputExistsError):
        report.save_json(target)
    assert report.save_json(target, overwrite=True) == target


# --------------------------------------------------------------------------- analyze


def test_analyze_model_reports_structure_and_bounds_and_saves_them(tmp_path):
    torch.manual_seed(0)
    model = create_model("fcnn")
    x, y = torch.rand(30, 1, 28, 28), torch.arange(30) % 10
    report = analyze_model(
        model, x, y, checkpoint=Path("m.safetensors"), dataset="mnist", subset_seed=3
    )
    assert isinstance(report, ModelAnalysis) and report.n == 30
    doc = report.to_dict()
    assert list(doc) == [
        "checkpoint", "model", "dataset", "split", "n", "subset_seed", "noise_var",
        "structure", "mi", "checkpoint_metadata",
    ]  # fmt: skip
    assert doc["model"]["name"] == "fcnn" and doc["mi"][-1]["layer"] == "output"
    text = report.format()
    assert text.splitlines()[0] == "m.safetensors (fcnn) on mnist test, n=30, noise_var=0.1"
    assert text.endswith("(KDE bounds in bits; I(T;X) <= log2 n)")
    out = report.save_json(tmp_path / "report.json")
    assert out.read_text() == json.dumps(doc, indent=2)
    assert read_marker(tmp_path).files == ["report.json"]
    with pytest.raises(OutputExistsError):
        report.save_json(out)


# --------------------------------------------------------------------------- reproduce, sweep


def test_reproduce_result_format_is_what_reproduce_prints():
    rows = [
        {"preset": "fcnn-natural", "paper": 0.9812, "test_acc": "0.9800 ± 0.0010"}
        | {"fr_fgsm": "0.50 ± 0.10 [± 0.02]", "fr_pgd": None, "ra_autoattack": "0.10"},
        {"preset": "fcnn-l1", "paper": None, "test_acc": "0.97", "fr_fgsm": "0.40"}
        | {"fr_pgd": "0.45 ± 0.01", "ra_autoattack": None},
    ]
    claim = SimpleNamespace(claim="C1", verdict="supported", evidence=["+0.1 [0.05, 0.2]", "x"])
    result = ReproduceResult(
        profile="quick",
        out_dir=Path("/o"),
        runs={
            "a": SimpleNamespace(strong_attack=None),
            "b": SimpleNamespace(strong_attack="autoattack"),
        },
        histories={},
        tables={"table1": rows, "table2": []},
        claims=[claim],
        theory=None,
        figures=[],
        report_html=Path("/o/report.html"),
        report_md=Path("/o/report.md"),
        wall_time=123.0,
        attacks=["fgsm", "pgd"],
        seeds=3,
    )
    assert result.format().split("\n") == [
        "Table 1 (FCNN, MNIST), 3 seed(s): mean ± 95% t [± Wilson sampling]",
        "preset                      paper             acc.               FR-FGSM"
        "       FR-PGD  RA-AutoAttack",
        "fcnn-natural               0.9812  0.9800 ± 0.0010  0.50 ± 0.10 [± 0.02]"
        "            -           0.10",
        "fcnn-l1                         -             0.97                  0.40"
        "  0.45 ± 0.01              -",
        "",
        "C1: SUPPORTED (+0.1 [0.05, 0.2])",
        "",
        "report: /o/report.html  (2.0 min)",
    ]
    result.tables["table1"], result.claims = [], []
    assert result.format().split("\n") == ["", "report: /o/report.html  (2.0 min)"]


def test_sweep_result_format_is_what_sweep_run_prints():
    def stat(text):
        return SimpleNamespace(n_seeds=2, format=lambda digits: text)

    combos = [
        SimpleNamespace(label=lambda i=i: f"l1={i}", clean=stat("0.9 ± 0.01"), robust=stat("0.2"))
        for i in range(11)
    ]
    result = SweepResult(
        spec=None,
        out_dir=Path("/s"),
        rows=[{}] * 22,
        front=["t001", "t004"],
        combinations=combos,
        comparison=SimpleNamespace(text="best vs runner-up: inconclusive"),
        figures=[],
        report_html=Path("/s/report.html"),
        wall_time=90.0,
    )
    row = "{:<60} {:>5} {:>15} {:>15}"
    assert result.format().split("\n") == [
        "22 trials in /s; Pareto front: t001, t004",
        row.format("combination", "seeds", "clean acc.", "robust acc."),
        *(row.format(f"l1={i}", 2, "0.9 ± 0.01", "0.2") for i in range(10)),
        "",
        "best vs runner-up: inconclusive",
        "",
        "report: /s/report.html  (1.5 min)",
    ]
    result.front, result.combinations, result.comparison = [], [], None
    assert result.format().split("\n") == [
        "22 trials in /s; Pareto front: -",
        row.format("combination", "seeds", "clean acc.", "robust acc."),
        "",
        "report: /s/report.html  (1.5 min)",
    ]


# --------------------------------------------------------------------------- the package


def test_the_cli_is_a_package_whose_modules_import_no_private_names():
    from robustrank.cli import app, main
    from robustrank.cli.main import app as root

    assert app is root and callable(main)
    modules = sorted(p.name for p in CLI.glob("*.py"))
    assert modules == [
        "__init__.py", "analysis.py", "certify.py", "common.py", "data.py", "evaluate.py",
        "listing.py",
        "main.py", "reproduce.py", "structure.py", "sweep.py", "train.py",
    ]  # fmt: skip
    for path in CLI.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
