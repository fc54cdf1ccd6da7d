"""The fine-tuning budget study (experiments/budgets.py) on tiny configs.

The study reads every budget e off one long run; that rests on the prefix property (the
first e epochs of a long run are an e-epoch run), checked here against an independent
e-epoch run: same history row and bit-identical weights.
"""

import csv
import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from robustrank.experiments.budgets import (
    BudgetError,
    PresetBudget,
    budget_study,
    family_presets,
    list_families,
    parse_overrides,
)
from robustrank.training import config_from_dict, load_preset, read_history, train

TINY = {
    "train_subset": 1000,
    "lr": 0.05,  # large enough that the weights move visibly in a few steps
    "history": {"eval_n": 50, "test_accuracy_n": 300, "track_mi": False},
}
NATURAL_TINY = {**TINY, "epochs": 1}


def _tiny(preset: str, **extra) -> dict:
    data = load_preset(preset).plain()
    data.update(train_subset=1000, lr=0.05, threads=1, **extra)
    data["history"].update(eval_n=50, test_accuracy_n=300, track_mi=False, every_epochs=1)
    return data


def _same(a, b) -> bool:
    return a == b or (
        isinstance(a, float)
        and isinstance(b, float)
        and math.isnan(a) == math.isnan(b)
        and math.isnan(a)
    )


# --------------------------------------------------------------------------- prefix property


@pytest.fixture(scope="module")
def natural_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("budgets-natural") / "fcnn-natural"
    train(config_from_dict(_tiny("fcnn-natural", epochs=1)), out, progress=False)
    return out


@pytest.mark.slow
def test_long_run_prefix_is_a_short_run(tmp_path, natural_dir):
    """A 3-epoch PGD fine-tune equals the first 3 epochs of a 5-epoch one (seeded data
    order and attack seeds per epoch and step, constant learning rate)."""
    runs = {}
    for epochs, extra in ((3, {}), (5, {"checkpoint_every_epoch": True})):
        data = _tiny("fcnn-pgd", epochs=epochs, **extra)
        data["init"]["preset_run"] = str(natural_dir)
        data["adversarial"].update(steps=3, alpha=0.02)
        runs[epochs] = tmp_path / f"e{epochs}"
        train(config_from_dict(data), runs[epochs], progress=False)
    short, long = read_history(runs[3]), read_history(runs[5])
    assert [r["epoch"] for r in long] == [0, 1, 2, 3, 4, 5]
    row3 = next(r for r in long if r["epoch"] == 3)
    keys = [k for k in short[-1] if not k.startswith("time_")]
    assert short[-1]["epoch"] == 3
    assert all(_same(short[-1][k], row3[k]) for k in keys), {
        k: (short[-1][k], row3[k]) for k in keys if not _same(short[-1][k], row3[k])
    }
    # the weights too, bit for bit; and training did move them
    w3 = load_file(runs[3] / "final.safetensors")
    w3_long = load_file(runs[5] / "checkpoint-epoch-3.safetensors")
    w5 = load_file(runs[5] / "final.safetensors")
    assert w3.keys() == w3_long.keys()
    assert all(w3[k].equal(w3_long[k]) for k in w3)
    assert any(not w3[k].equal(w5[k]) for k in w3)


# --------------------------------------------------------------------------- first_within


def _synthetic() -> PresetBudget:
    accs = {0: 0.970, 1: 0.90, 2: 0.93, 3: 0.955, 4: 0.962, 5: 0.975, 6: 0.968}
    rows = [{"epoch": e, "test_acc": a, "fr_pgd": 0.5} for e, a in accs.items()]
    return PresetBudget("p", paper_accuracy=0.97, preset_epochs=2, rows=rows)


def test_first_within_by_hand():
    p = _synthetic()
    # |acc - 0.97| per budget: 1: .07, 2: .04, 3: .015, 4: .008, 5: .005, 6: .002
    # epoch 0 (the natural model, gap 0) is not a fine-tuning budget
    assert p.first_within(0.01) == 4
    assert p.first_within(0.006) == 5
    assert p.first_within(0.02) == 3
    assert p.first_within(0.001) is None
    assert p.best_epoch() == 5
    assert p.best_gap() == pytest.approx(0.005)
    assert p.closest() == (6, pytest.approx(-0.002))
    assert p.accuracy_at(3) == 0.955 and p.accuracy_at(7) is None
    no_paper = PresetBudget("q", paper_accuracy=None, preset_epochs=2, rows=p.rows)
    assert no_paper.first_within(0.5) is None and no_paper.closest() is None
    assert no_paper.best_epoch() == 5


# --------------------------------------------------------------------------- the study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("budgets") / "study"
    presets = ["fcnn-fgsm", "fcnn-l1-1e-2-nuc-1e-2"]
    return budget_study(
        "fcnn", out, max_epochs=3, presets=presets, overrides=NATURAL_TINY, progress=False
    )


@pytest.mark.slow
def test_study_outputs(study):
    out = study.out_dir
    assert set(study.presets) == {"fcnn-fgsm", "fcnn-l1-1e-2-nuc-1e-2"}
    assert study.layers == ["W1"]  # the layer the FCNN presets regularise
    data = json.loads((out / "budgets.json").read_text())
    assert data["natural"]["preset"] == "fcnn-natural" and data["natural"]["epochs"] == 1
    csv_rows = list(csv.DictReader((out / "budgets.csv").open()))
    md = (out / "budgets.md").read_text()
    assert (out / "budgets-fcnn.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 1 ep | 2 ep | 3 ep |" in md  # every recorded summary budget up to max_epochs
    for name, entry in data["presets"].items():
        history = read_history(out / "runs" / name)
        assert [r["epoch"] for r in entry["rows"]] == [0, 1, 2, 3]
        assert [r["test_acc"] for r in entry["rows"]] == [r["test_acc"] for r in history]
        assert entry["rows"][-1]["eff_rank_W1"] == history[-1]["eff_rank_W1"]
        assert entry["paper_accuracy"] == load_preset(name).paper.accuracy
        # first_within, recomputed by hand from the run's own history
        hand = next(
            (
                r["epoch"]
                for r in history
                if r["epoch"] > 0 and abs(r["test_acc"] - entry["paper_accuracy"]) <= 0.01
            ),
            None,
        )
        assert entry["first_within"] == hand
        ours = [r for r in csv_rows if r["preset"] == name]
        assert [float(r["test_acc"]) for r in ours] == [r["test_acc"] for r in history]
        line = next(line for line in md.splitlines() if line.startswith(f"| {name} |"))
        assert (f"| {hand} |" if hand is not None else "| none up to 3 |") in line
    # the fine-tunes start from the natural run the study trained
    natural = read_history(out / "runs" / "fcnn-natural")[-1]
    for entry in data["presets"].values():
        assert entry["rows"][0]["test_acc"] == natural["test_acc"]


@pytest.mark.slow
def test_study_rerun_reuses_and_refuses_other_settings(study):
    again = budget_study(
        "fcnn",
        study.out_dir,
        max_epochs=3,
        presets=list(study.presets),
        overrides=NATURAL_TINY,
        progress=False,
    )
    assert {k: v.rows for k, v in again.presets.items()} == {
        k: v.rows for k, v in study.presets.items()
    }
    with pytest.raises(BudgetError, match="max_epochs.*new\\s+--out"):
        budget_study(
            "fcnn",
            study.out_dir,
            max_epochs=4,
            presets=list(study.presets),
            overrides=NATURAL_TINY,
            progress=False,
        )


@pytest.mark.slow
def test_study_with_external_natural_run(tmp_path, natural_dir):
    s = budget_study(
        "fcnn",
        tmp_path / "ext",
        max_epochs=1,
        presets=["fcnn-nuc-1e-2"],
        natural_run=natural_dir,
        overrides=TINY,
        progress=False,
    )
    assert not (tmp_path / "ext" / "runs" / "fcnn-natural").exists()
    assert s.natural["run_dir"] == str(natural_dir)
    assert (
        s.presets["fcnn-nuc-1e-2"].rows[0]["test_acc"] == read_history(natural_dir)[-1]["test_acc"]
    )


# --------------------------------------------------------------------------- errors


def test_families_and_presets():
    assert set(list_families()) >= {"fcnn", "cnn"}
    fcnn = family_presets("fcnn")
    assert "fcnn-pgd" in fcnn and "fcnn-natural" not in fcnn
    assert all(load_preset(n).init.from_preset == "fcnn-natural" for n in fcnn)
    assert all(load_preset(n).model.name == "cnn" for n in family_presets("cnn"))


@pytest.mark.slow
def test_errors(tmp_path, natural_dir):
    with pytest.raises(BudgetError, match="unknown model family 'mlp'.*fcnn"):
        budget_study("mlp", tmp_path / "a", max_epochs=1)
    with pytest.raises(BudgetError, match="fcnn-natural does not fine-tune.*fcnn-pgd"):
        budget_study("fcnn", tmp_path / "b", max_epochs=1, presets=["fcnn-natural"])
    with pytest.raises(BudgetError, match="cnn-pgd trains a cnn, not a fcnn"):
        budget_study("fcnn", tmp_path / "c", max_epochs=1, presets=["cnn-pgd"])
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    with pytest.raises(BudgetError, match="not a finished run"):
        budget_study("fcnn", tmp_path / "d", max_epochs=1, natural_run=unfinished)
    with pytest.raises(BudgetError, match="cosine"):  # 2 epochs of 3 are not a 2-epoch run
        budget_study(
            "fcnn",
            tmp_path / "e",
            max_epochs=3,
            natural_run=natural_dir,
            overrides={"schedule": "cosine"},
        )
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(BudgetError, match=r"not empty \(notes.txt\) and has no robustrank marker"):
        budget_study("fcnn", foreign, max_epochs=1, natural_run=natural_dir)
    assert not any(p.exists() for p in (tmp_path / "a", tmp_path / "b", tmp_path / "e"))


def test_parse_overrides():
    items = ["history.track_mi=false", "lr=0.01", "history.eval_n=50", "regularizers.l1={1: 0.1}"]
    assert parse_overrides(items) == {
        "history": {"track_mi": False, "eval_n": 50},
        "lr": 0.01,
        "regularizers": {"l1": {1: 0.1}},
    }
    # a layer key below regularizers.l1 / .nuclear is the layer, as in sweeps (int index)
    assert parse_overrides(["regularizers.nuclear.2=0.05", "regularizers.l1.W1=0.1"]) == {
        "regularizers": {"nuclear": {2: 0.05}, "l1": {"W1": 0.1}}
    }
    for bad in ("lr", "=3", "history..x=1", "lr=[1"):
        with pytest.raises(BudgetError, match="--set"):
            parse_overrides([bad])
    with pytest.raises(BudgetError, match="--set.*lr is 0.1, not a mapping"):
        parse_overrides(["lr=0.1", "lr.x=2"])


@pytest.mark.slow
def test_cli_budgets(tmp_path, natural_dir):
    from typer.testing import CliRunner

    from robustrank.cli import app

    out = tmp_path / "cli"
    args = ["budgets", "--family", "fcnn", "--max-epochs", "2", "--out", str(out)]
    args += ["--natural-run", str(natural_dir), "--preset", "fcnn-l1-1e-2", "--no-progress"]
    args += ["--set", "train_subset=1000", "--set", "history.track_mi=false"]
    args += ["--set", "history.eval_n=50", "--set", "history.test_accuracy_n=300"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| fcnn-l1-1e-2 |" in result.output
    saved = json.loads((out / "budgets.json").read_text())
    assert [r["epoch"] for r in saved["presets"]["fcnn-l1-1e-2"]["rows"]] == [0, 1, 2]
    result = CliRunner().invoke(app, [*args[:-8], "--preset", "fcnn-natural"])
    assert result.exit_code == 2 and "does not fine-tune" in result.output
    # --address reaches the executor like reproduce's and sweep's: it needs --executor ray
    other = ["--out", str(tmp_path / "addr"), "--address", "127.0.0.1:1"]
    result = CliRunner().invoke(app, [*args[:5], *other, *args[7:]])
    assert result.exit_code == 2 and "--executor ray" in result.output
    assert not (tmp_path / "addr").exists()  # refused before the study directory is made


@pytest.mark.slow
def test_every_file_the_study_writes_is_in_its_layout_and_overwrite_keeps_user_files(
    study, tmp_path
):
    import shutil

    from robustrank.experiments.budgets import BUDGETS_DIR, _check_out
    from robustrank.ownership import unowned

    assert unowned(study.out_dir, BUDGETS_DIR) == []
    out = tmp_path / "copy"
    shutil.copytree(study.out_dir, out)
    decoys = {".git/HEAD": "ref\n", "notes.txt": "mine\n", "runs/my-run/w.pt": "weights"}
    for rel, text in decoys.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    other = {**json.loads((out / "study.json").read_text()), "max_epochs": 9}
    with pytest.raises(BudgetError, match="other settings.*--overwrite"):
        _check_out(out, other)
    _check_out(out, other, overwrite=True)
    assert all((out / rel).read_text() == text for rel, text in decoys.items())
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == sorted([".robustrank.json", "study.json", *decoys])
    assert json.loads((out / "study.json").read_text())["max_epochs"] == 9
