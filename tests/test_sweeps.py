"""`robustrank sweep`: specs, dotted paths, strategies, the resumable runner and outputs.

Sweeps here train tiny FCNN runs (1-2 epochs on 2000 MNIST images, about a second each with
their evaluation). References are independent of the code under test: the grid against
itertools over the example's values, the Pareto front against a brute-force dominance
check, intervals against a textbook t quantile, accuracies against the run directories.
"""

import itertools
import json
import math
import random
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from robustrank.cli import app
from robustrank.metrics import effective_rank
from robustrank.models import load_checkpoint, named_weight_layers
from robustrank.sweeps import (
    SpecError,
    SweepError,
    list_specs,
    load_spec,
    plan_trials,
    run_sweep,
    sweep_status,
)
from robustrank.sweeps.space import SpaceError, parse_path, set_path
from robustrank.sweeps.spec import spec_from_dict
from robustrank.sweeps.strategies import grid_trials, random_trials
from robustrank.sweeps.table import combinations, compare_best, pareto_front
from robustrank.training import config_from_dict, load_preset, read_history
from sweeping import TINY, kill_when, ray_sweep, table, tiny_spec

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sweeps" / "tiny-open-question.yaml"


def _write_spec(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One uninterrupted grid sweep (4 trials), shared by several tests."""
    out = tmp_path_factory.mktemp("sweep") / "a"
    spec = spec_from_dict(tiny_spec(reference={"regularizers.l1.1": 0.0}))
    return run_sweep(spec, out, progress=False)


def test_a_finished_sweep_compares_every_combination_with_its_reference(finished):
    summary = json.loads((finished.out_dir / "summary.json").read_text())
    (entry,) = summary["against_reference"]
    assert entry["label"] == "regularizers.l1.1=0.003 vs regularizers.l1.1=0.0"
    by_seed = {c.values["regularizers.l1.1"]: c.robust_by_seed for c in finished.combinations}
    diffs = [by_seed[0.003][s] - by_seed[0.0][s] for s in by_seed[0.0]]
    assert entry["difference"] == pytest.approx(sum(diffs) / len(diffs))
    assert "paired by seed" in finished.format()
    assert "Against the reference" in finished.report_html.read_text()


# --------------------------------------------------------------------------- specs


def test_example_spec_expands_to_the_eight_runs_it_describes(tmp_path):
    spec = load_spec(EXAMPLE)
    raw = yaml.safe_load(EXAMPLE.read_text())
    trials = plan_trials(spec, tmp_path / "out")
    assert len(trials) == 8
    expected = set(itertools.product([0.0, 0.001], [0.0, 0.001], [0, 1]))
    got = {
        (
            t.config["regularizers"]["l1"][1],
            t.config["regularizers"]["nuclear"][1],
            t.config["seed"],
        )
        for t in trials
    }
    assert got == expected
    preset = load_preset("fcnn-natural").plain()
    for t in trials:
        cfg = t.config
        # layer keys are int 1-based indices, not the string "1"
        assert set(cfg["regularizers"]["l1"]) == {1} and set(cfg["regularizers"]["nuclear"]) == {1}
        assert cfg["regularizers"]["l1"] == {1: t.values["regularizers.l1.1"]}
        # overrides are deep-merged: overridden keys change, the preset's others stay
        for key, value in raw["overrides"].items():
            if key != "history":
                assert cfg[key] == value
        for key, value in raw["overrides"]["history"].items():
            assert cfg["history"][key] == value
        assert cfg["history"]["every_epochs"] == preset["history"]["every_epochs"]
        assert cfg["batch_size"] == preset["batch_size"]
        config_from_dict(cfg)  # validates
        assert t.run_dir == (tmp_path / "out").resolve() / "trials" / t.id
    ids = [t.id for t in trials]
    assert len(set(ids)) == 8 and all(re.fullmatch(r"t\d{3}-[0-9a-f]{8}", i) for i in ids)
    assert ids == [t.id for t in plan_trials(load_spec(EXAMPLE), tmp_path / "other")]


def test_trials_run_with_one_thread_unless_the_spec_says_otherwise(tmp_path):
    """A run's numbers depend on its thread count: a base that leaves it unset trains its
    trials with one thread on every executor (as reproduce does)."""
    base = {"name": "t", "base": "fcnn-natural", "strategy": "grid", "space": {"seed": [0, 1]}}
    assert load_preset("fcnn-natural").plain()["threads"] is None
    unset = spec_from_dict(base)
    assert unset.base_config()["threads"] == 1
    assert {t.config["threads"] for t in plan_trials(unset, tmp_path / "a")} == {1}
    two = spec_from_dict({**base, "overrides": {"threads": 2}})
    assert {t.config["threads"] for t in plan_trials(two, tmp_path / "b")} == {2}
    swept = spec_from_dict({**base, "space": {"threads": [1, 2]}})
    assert swept.base_config()["threads"] is None  # the space sets it per trial
    assert sorted(t.config["threads"] for t in plan_trials(swept, tmp_path / "c")) == [1, 2]


def test_dotted_paths_make_layer_keys_and_missing_mappings():
    assert parse_path("regularizers.l1.1") == ["regularizers", "l1", 1]
    assert parse_path("regularizers.nuclear.W1") == ["regularizers", "nuclear", "W1"]
    assert parse_path("regularizers.l1.block.conv1") == ["regularizers", "l1", "block.conv1"]
    assert parse_path("history.eps") == ["history", "eps"]
    base = {"lr": 0.1, "regularizers": {}}
    out = set_path(base, "regularizers.nuclear.2", 0.5)
    assert out == {"lr": 0.1, "regularizers": {"nuclear": {2: 0.5}}}
    assert base == {"lr": 0.1, "regularizers": {}}  # the input is not modified
    assert set_path({}, "adversarial.eps", 0.1) == {"adversarial": {"eps": 0.1}}
    with pytest.raises(SpaceError, match="lr is 0.1, not a mapping"):
        set_path(base, "lr.x", 1)
    with pytest.raises(SpaceError, match="not a dotted config key"):
        parse_path("history..eps")


def test_random_strategy_is_seeded_and_covers_the_space():
    spec = spec_from_dict(
        tiny_spec(
            strategy="random",
            n_trials=200,
            seed=7,
            space={"lr": {"log_uniform": [1e-3, 1e-1]}, "seed": [0, 1, 2]},
        )
    )
    a, b = random_trials(spec), random_trials(spec)
    assert a == b
    lrs = [t["lr"] for t in a]
    assert all(1e-3 <= v <= 1e-1 for v in lrs)
    # log-uniform: about half the draws below the geometric midpoint 1e-2
    assert 0.35 < sum(v < 1e-2 for v in lrs) / len(lrs) < 0.65
    assert {t["seed"] for t in a} == {0, 1, 2}
    other = spec_from_dict(tiny_spec(strategy="random", n_trials=200, seed=8, space=spec.space))
    assert random_trials(other) != a
    grid = spec_from_dict(tiny_spec(space={"lr": {"log_uniform": [1e-3, 1e-1], "num": 3}}))
    assert [t["lr"] for t in grid_trials(grid)] == pytest.approx([1e-3, 1e-2, 1e-1])


@pytest.mark.parametrize(
    "change, names",
    [
        ({"strategi": "grid"}, ["strategi"]),
        ({"space": {"lrr": [0.1]}}, ["space[lrr]", "lrr"]),
        ({"space": {"regularizers.l2.1": [0.1]}}, ["space[regularizers.l2.1]", "l2"]),
        ({"space": {}}, ["space", "empty"]),
        ({"space": {"seed": [0], "regularizers.l1.1": []}}, ["space[regularizers.l1.1]", "empty"]),
        ({"space": {"regularizers.l1.1": [0.1, -0.1]}}, ["space[regularizers.l1.1]", "-0.1"]),
        ({"base": "fcnn-naturall"}, ["base", "fcnn-naturall", "fcnn-natural"]),
        ({"overrides": {"epochz": 2}}, ["epochz", "epochs"]),
        ({"space": {"lr": {"log_uniform": [0, 0.1], "num": 3}}}, ["space[lr]", "log_uniform"]),
        ({"space": {"lr": {"log_uniform": [0.1, 0.01], "num": 3}}}, ["space[lr]", "lo < hi"]),
        ({"space": {"lr": {"log_uniform": [0.01, 0.1]}}}, ["space[lr]", "num"]),
        ({"strategy": "random"}, ["n_trials"]),
        ({"strategy": "bayes"}, ["strategy", "grid", "optuna"]),
        ({"objective": {"attack": "pgdd"}}, ["objective.attack", "pgdd"]),
    ],
)
def test_bad_specs_name_the_key(change, names):
    with pytest.raises(SpecError) as err:
        spec_from_dict(tiny_spec(**change), source="bad.yaml")
    message = str(err.value)
    assert message.startswith("bad.yaml")
    for name in names:
        assert name in message, message


def test_bundled_specs_are_listed_and_valid(tmp_path):
    specs = list_specs()
    assert {"open-question-fcnn", "open-question-cnn"} <= set(specs)
    fcnn = load_spec("open-question-fcnn")
    base = fcnn.base_config()
    assert base["init"]["from_preset"] == "fcnn-natural" and base["threads"] == 1
    assert fcnn.objective.attack == "autoattack" and fcnn.objective.n == 1000
    trials = plan_trials(fcnn, tmp_path / "fcnn")
    assert len(trials) == 75
    assert {t.config["regularizers"]["l1"][1] for t in trials} >= {0.0, 0.01}
    assert {t.parent.name for t in trials} == {f"fcnn-natural-seed-{k}" for k in (0, 1, 2)}
    cnn = plan_trials(load_spec("open-question-cnn"), tmp_path / "cnn")
    assert {t.config["model"]["name"] for t in cnn} == {"cnn"}
    assert {tuple(t.config["regularizers"]["nuclear"]) for t in cnn} == {(2,)}
    result = CliRunner().invoke(app, ["sweep", "list"])
    assert result.exit_code == 0 and "open-question-fcnn" in result.output


def test_exact_cnn_spec_shares_the_penalty_grids_reference(tmp_path):
    """open-question-exact-cnn's dense, unfactorised cell trains what open-question-cnn's
    (0, 0) cell trains (its structure section is a no-op: density 1, no rank), from the same
    parents; its other cells differ from it in conv2's structure only."""

    def without(config, *keys):
        return {k: v for k, v in config.items() if k not in keys}

    exact = plan_trials(load_spec("open-question-exact-cnn"), tmp_path / "exact")
    penalty = plan_trials(load_spec("open-question-cnn"), tmp_path / "penalty")
    assert len(exact) == 12
    zero = {"regularizers.l1.2": 0.0, "regularizers.nuclear.2": 0.0}
    cells = [t for t in penalty if all(t.values[k] == v for k, v in zero.items())]
    reference = {t.values["seed"]: t for t in cells}
    dense = {"structure.prune.density.W2": 1.0, "structure.factorize.rank.W2": None}
    for t in exact:
        seed = t.values["seed"]
        assert t.parent.name == reference[seed].parent.name == f"cnn-natural-seed-{seed}"
        assert without(t.config, "name", "structure") == without(reference[seed].config, "name")
        assert t.config["structure"]["prune"]["density"]["W2"] in (1.0, 0.02)
        assert t.config["structure"]["factorize"]["rank"]["W2"] in (None, 8)
    assert sum(all(t.values[k] == v for k, v in dense.items()) for t in exact) == 3


def test_a_no_op_structure_section_trains_the_same_weights(tmp_path, capsys):
    """Density 1 and no rank (the dense cell of an exact-structure sweep) train bit-for-bit
    the weights of the same config without a structure section, and the log does not claim
    a structure was set."""
    import torch

    from robustrank.models import load_checkpoint
    from robustrank.training import config_from_dict, train

    base = {
        "name": "t",
        "model": {"name": "cnn", "options": {}},
        "dataset": "fashion-mnist",
        "epochs": 1,
        "batch_size": 64,
        "lr": 0.01,
        "train_subset": 256,
        "threads": 1,
        "regularizers": {"l1": {1: 0.01}},
        "history": {"evaluate": False, "track_mi": False},
    }
    no_op = {"prune": {"density": {"W2": 1.0}}, "factorize": {"rank": {"W2": None}}}
    weights, starts = [], []
    for name, extra in (("plain", {}), ("no-op", {"structure": no_op})):
        train(config_from_dict({**base, **extra}, source=name), tmp_path / name, progress=False)
        model, _ = load_checkpoint(tmp_path / name / "final.safetensors")
        weights.append(model.state_dict())
        starts.append(next(ln for ln in capsys.readouterr().err.splitlines() if "batches/" in ln))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert "structure" not in starts[1] and starts[0] == starts[1]
    pruned = {"prune": {"density": {"W2": 0.5}}}
    cfg = config_from_dict({**base, "structure": pruned}, source="p")
    train(cfg, tmp_path / "p", progress=False)
    assert "structure: " in capsys.readouterr().err


# --------------------------------------------------------------------------- tables


def _dominated(i, pts):
    x, y = pts[i]
    return any(a >= x and b >= y and (a > x or b > y) for a, b in pts)


def test_pareto_front_matches_brute_force():
    rng = random.Random(0)
    for n in [0, 1, 2, 5, 30, 200]:
        for _ in range(20):
            pts = [(round(rng.random(), 1), round(rng.random(), 1)) for _ in range(n)]
            expected = {i for i in range(n) if not _dominated(i, pts)}
            front = pareto_front(pts)
            assert set(front) == expected and len(front) == len(set(front))
            assert [pts[i][0] for i in front] == sorted((pts[i][0] for i in front), reverse=True)


def _row(tid, lam, seed, clean, robust, status="done"):
    values = {"regularizers.l1.1": lam, "seed": seed}
    return {
        "trial": tid,
        "values": values,
        "status": status,
        "clean_acc": clean,
        "robust_acc": robust,
    }


def test_combinations_group_over_seeds_and_compare_paired():
    t975_df2 = 4.302652729911275  # two-sided 95% Student-t quantile, 2 degrees of freedom
    best = [0.50, 0.60, 0.55]
    second = [0.45, 0.56, 0.49]  # lower on every seed by 0.05, 0.04, 0.06
    rows = [_row(f"a{s}", 0.01, s, 0.9, r) for s, r in enumerate(best)]
    rows += [_row(f"b{s}", 0.0, s, 0.95, r) for s, r in enumerate(second)]
    rows += [_row("c0", 0.1, 0, 0.5, 0.1), _row("p", 0.1, 1, None, None, status="pending")]
    combos = combinations(rows)
    assert [c.trials for c in combos] == [["a0", "a1", "a2"], ["b0", "b1", "b2"], ["c0"]]
    assert combos[0].values == {"regularizers.l1.1": 0.01}
    a = combos[0].robust
    sd = math.sqrt(sum((v - sum(best) / 3) ** 2 for v in best) / 2)
    assert a.mean == pytest.approx(sum(best) / 3)
    assert a.ci95.hi - a.mean == pytest.approx(t975_df2 * sd / math.sqrt(3))
    assert combos[2].robust.n_seeds == 1 and combos[2].robust.ci95 is None
    cmp = compare_best(combos)
    diffs = [x - y for x, y in zip(best, second)]
    d_mean = sum(diffs) / 3
    d_half = t975_df2 * math.sqrt(sum((d - d_mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
    assert cmp.difference.mean == pytest.approx(d_mean)
    assert cmp.difference.half_width == pytest.approx(d_half)
    assert (d_mean - d_half > 0) and cmp.verdict == "conclusive"
    # the same means with a lead that flips sign on one seed: the interval contains 0
    noisy = [0.45, 0.66, 0.43]
    rows2 = rows[:3] + [_row(f"b{s}", 0.0, s, 0.95, r) for s, r in enumerate(noisy)]
    assert compare_best(combinations(rows2)).verdict == "inconclusive"


# --------------------------------------------------------------------------- sweeps


def test_outputs_are_complete_and_match_the_runs(finished):
    out = finished.out_dir
    for name in (
        "trials.csv",
        "trials.json",
        "pareto.png",
        "rank_vs_sparsity.png",
        "report.html",
        "combinations.csv",
        "sweep.json",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert any("pareto" in p.name for p in finished.figures)
    rows = json.loads((out / "trials.json").read_text())["trials"]
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    for r in rows:
        run = out / r["run_dir"]
        final = read_history(run)[-1]
        assert r["clean_acc"] == final["test_acc"]
        assert r["eff_rank_W1"] == final["eff_rank_W1"]
        assert r["eff_sparsity_W1"] == final["eff_sparsity_W1"]
        evaluation = json.loads((run / "evaluation.json").read_text())["result"]
        assert r["robust_acc"] == evaluation["autoattack"]["robust_accuracy"]
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["regularizers"]["l1"] == {1: r["values"]["regularizers.l1.1"]}
        assert config["seed"] == r["values"]["seed"]
    lines = (out / "trials.csv").read_text().splitlines()
    assert len(lines) == 5 and "regularizers.l1.1" in lines[0].split(",")
    html = (out / "report.html").read_text()
    assert not re.search(r"(src|href)=\"(?!data:|#)", html)  # nothing external
    assert "http://" not in html and "https://" not in html
    assert html.count('src="data:image/png;base64,') == 2
    assert finished.comparison.verdict in html and finished.comparison.best.label() in html


def test_refuses_another_spec_in_the_same_directory(finished, tmp_path):
    out = finished.out_dir
    before = (out / "trials.json").read_text()
    other = spec_from_dict(tiny_spec(space={"regularizers.l1.1": [0.0, 0.01], "seed": [0, 1]}))
    with pytest.raises(SweepError, match=r"different sweep.*space.*another --out.*--overwrite"):
        run_sweep(other, out, progress=False)
    assert (out / "trials.json").read_text() == before
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(SweepError, match=r"not empty \(.*x.txt\) and has no robustrank marker"):
        run_sweep(other, tmp_path, progress=False)
    assert not (tmp_path / ".sweep.lock").exists()  # a refused directory is left as it was
    # --overwrite starts the other sweep over in a directory of its own
    one = spec_from_dict(tiny_spec(name="one", space={"seed": [3]}))
    again = tmp_path / "again"
    run_sweep(spec_from_dict(tiny_spec(name="one", space={"seed": [4]})), again, progress=False)
    result = run_sweep(one, again, progress=False, overwrite=True)
    assert [r["values"] for r in result.rows] == [{"seed": 3}]
    assert sorted(p.name for p in (again / "trials").iterdir()) == [result.rows[0]["trial"]]


def _mid_run(out: Path) -> Path | None:
    """A trial directory with at least two history rows but not finished, if any."""
    for run in (out / "trials").glob("t*"):
        history = run / "history.jsonl"
        if history.exists() and not (run / "done.json").exists():
            if len(history.read_text().splitlines()) >= 2:
                return run
    return None


def _kill_mid_run(cmd: list[str], out: Path) -> Path:
    """Start the sweep, SIGKILL it once a trial has finished and another is mid-training."""
    running: list[Path] = []

    def ready() -> bool:
        path = out / "trials.json"
        if path.exists() and any(
            r["status"] == "done" for r in json.loads(path.read_text())["trials"]
        ):
            running[:] = [p for p in [_mid_run(out)] if p is not None]
        return bool(running)

    kill_when(cmd, ready)
    assert not (running[0] / "done.json").exists()
    return running[0]


@pytest.mark.slow
def test_sigkilled_sweep_resumes_to_the_uninterrupted_table(tmp_path):
    data = tiny_spec(
        name="kill",
        overrides={**TINY, "epochs": 5},
        space={"regularizers.l1.1": [0.003], "seed": [0, 1, 2]},
    )
    spec = _write_spec(tmp_path / "kill.yaml", data)
    reference = run_sweep(load_spec(spec), tmp_path / "a", progress=False)
    out = tmp_path / "b"
    cmd = [
        sys.executable,
        "-m",
        "robustrank",
        "sweep",
        "run",
        str(spec),
        "--out",
        str(out),
        "--no-progress",
    ]
    interrupted = _kill_mid_run(cmd, out)
    status = sweep_status(out)
    assert status.total == 3 and 1 <= status.done < 3 and status.running >= 1
    assert status.done + status.running + status.pending == 3 and status.driver is None
    cli = CliRunner().invoke(app, ["sweep", "status", str(out)])
    assert cli.exit_code == 0 and f"{status.done} done, {status.running} running" in cli.output
    rows = json.loads((out / "trials.json").read_text())["trials"]
    done_before = {r["trial"] for r in rows if r["status"] == "done"}
    result = run_sweep(load_spec(spec), out, progress=False)
    assert {r["trial"] for r in result.rows if r["reused"]} == done_before
    # the interrupted run resumed: its history has each epoch once
    assert [r["epoch"] for r in read_history(interrupted)] == [0, 1, 2, 3, 4, 5]
    assert table(out) == table(reference.out_dir)
    assert sweep_status(out).done == 3


def test_optuna_sweep_resumes_its_study_without_retraining(tmp_path, monkeypatch):
    optuna = pytest.importorskip("optuna")
    import robustrank.execution.local as local

    spec = spec_from_dict(
        tiny_spec(
            name="opt",
            strategy="optuna",
            n_trials=4,
            batch=2,
            space={"regularizers.l1.1": [0.0, 0.001, 0.01], "seed": [0, 1]},
        )
    )
    out = tmp_path / "opt"
    real, calls = local.run_task, []

    def dies_in_second_batch(task, **kw):  # the driver dies after two told trials
        calls.append(task.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, **kw)

    monkeypatch.setattr(local, "run_task", dies_in_second_batch)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, out, progress=False)
    monkeypatch.setattr(local, "run_task", real)
    study = optuna.load_study(study_name="opt", storage=f"sqlite:///{out / 'optuna.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "RUNNING", "RUNNING"]
    asked = {t.number: t.params for t in study.trials}
    first = {
        r["trial"]: r
        for r in json.loads((out / "trials.json").read_text())["trials"]
        if r["status"] == "done"
    }
    assert len(first) == 2
    mtimes = {t: (out / r["run_dir"] / "done.json").stat().st_mtime_ns for t, r in first.items()}

    result = run_sweep(spec, out, progress=False)
    study = optuna.load_study(study_name="opt", storage=f"sqlite:///{out / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 4
    assert {t.number: t.params for t in study.trials} == asked  # re-run with stored params
    rows = {r["index"]: r for r in result.rows}
    assert sorted(rows) == [0, 1, 2, 3]
    for t in study.trials:
        assert rows[t.number]["values"] == t.params
        assert t.values == [rows[t.number]["clean_acc"], rows[t.number]["robust_acc"]]
    for tid, mtime in mtimes.items():
        assert (out / first[tid]["run_dir"] / "done.json").stat().st_mtime_ns == mtime


def test_finetune_base_trains_one_parent_per_seed(tmp_path):
    parent = {k: v for k, v in TINY.items() if k != "threads"}
    spec = spec_from_dict(
        tiny_spec(
            name="ft",
            base="fcnn-l1-1e-2-nuc-1e-2",
            parent_overrides=parent,
            space={"regularizers.nuclear.1": [0.0, 0.01], "seed": [0, 1]},
        )
    )
    out = tmp_path / "ft"
    result = run_sweep(spec, out, progress=False)
    parents = sorted(p.name for p in (out / "parents").iterdir())
    assert parents == ["fcnn-natural-seed-0", "fcnn-natural-seed-1"]
    for k in (0, 1):
        pdir = out / "parents" / f"fcnn-natural-seed-{k}"
        cfg = yaml.safe_load((pdir / "config.yaml").read_text())
        assert cfg["seed"] == k and cfg["epochs"] == 1 and cfg["threads"] == 1
        assert [r["epoch"] for r in read_history(pdir)] == [0, 1]  # trained once
    for row in result.rows:
        run = out / row["run_dir"]
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        seed = row["values"]["seed"]
        parent_dir = out / "parents" / f"fcnn-natural-seed-{seed}"
        assert (run / cfg["init"]["preset_run"]).resolve() == parent_dir.resolve()
        # the fine-tune starts from its parent's final weights: its epoch-0 structure is
        # that of the parent's final checkpoint, computed here from the file
        model, _ = load_checkpoint(parent_dir / "final.safetensors")
        w1 = named_weight_layers(model)[0].weight
        assert read_history(run)[0]["eff_rank_W1"] == pytest.approx(float(effective_rank(w1)))


def _finetune_spec(name: str, space: dict, **parent_changes) -> object:
    parent = {k: v for k, v in TINY.items() if k != "threads"} | parent_changes
    return spec_from_dict(
        tiny_spec(name=name, base="fcnn-l1-1e-2-nuc-1e-2", parent_overrides=parent, space=space)
    )


def test_a_sweep_reuses_another_sweeps_parents_and_gets_the_table_it_would_train(tmp_path):
    seeds = {"seed": [0, 1]}
    first = tmp_path / "first"
    run_sweep(_finetune_spec("a", {"regularizers.nuclear.1": [0.0]} | seeds), first, progress=False)
    second = _finetune_spec("b", {"regularizers.l1.1": [0.0, 0.02]} | seeds)
    reused = run_sweep(second, tmp_path / "reused", progress=False, parents_from=first)
    fresh = run_sweep(second, tmp_path / "fresh", progress=False)
    for k in (0, 1):
        name = f"fcnn-natural-seed-{k}"
        mine, theirs = tmp_path / "reused" / "parents" / name, first / "parents" / name
        # copied, not trained again: the history's timings are the first sweep's, byte for byte
        for file in ("history.jsonl", "done.json", "final.safetensors"):
            assert (mine / file).read_bytes() == (theirs / file).read_bytes()
        fresh_history = (tmp_path / "fresh" / "parents" / name / "history.jsonl").read_bytes()
        assert fresh_history != (mine / "history.jsonl").read_bytes()
    assert table(reused.out_dir) == table(fresh.out_dir)
    assert not list((tmp_path / "reused" / "parents").glob("*.partial-copy"))


def test_parents_from_refuses_a_parent_trained_with_another_config(tmp_path):
    first = tmp_path / "first"
    run_sweep(_finetune_spec("a", {"seed": [0]}), first, progress=False)
    other = _finetune_spec("b", {"seed": [0]}, epochs=2)
    with pytest.raises(SpecError, match=r"(?s)another config.*epochs: run has 1, new config has 2"):
        run_sweep(other, tmp_path / "b", progress=False, parents_from=first)
    assert not (tmp_path / "b" / "parents" / "fcnn-natural-seed-0").exists()


@pytest.mark.parametrize("where", ["missing", "not-a-sweep", "itself"])
def test_parents_from_must_name_another_sweep_directory(tmp_path, where):
    out = tmp_path / "out"
    src = {"missing": tmp_path / "nowhere", "not-a-sweep": tmp_path, "itself": out}[where]
    (tmp_path / "parents").mkdir()  # a parents/ folder without robustrank's marker
    spec = _finetune_spec("a", {"seed": [0]})
    with pytest.raises(SweepError, match="parents_from"):
        run_sweep(spec, out, progress=False, parents_from=src)
    assert not out.exists()


def test_the_cli_names_a_bad_parents_from_and_exits_2(tmp_path):
    args = ["sweep", "run", "open-question-cnn-halving", "--out", str(tmp_path / "out")]
    cli = CliRunner().invoke(app, [*args, "--parents-from", str(tmp_path / "nowhere")])
    assert cli.exit_code == 2
    assert "is not a sweep directory with parent runs" in cli.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ray_executor_gives_the_local_table(finished, tmp_path):
    pytest.importorskip("ray")
    from robustrank.execution.ray_executor import RayExecutor  # noqa: F401

    result = ray_sweep(spec_from_dict(tiny_spec()), tmp_path / "ray")
    assert table(result.out_dir) == table(finished.out_dir)
    assert len({r["worker"] for r in result.rows}) >= 1


def test_every_combination_is_compared_with_the_reference_paired_by_seed():
    from scipy import stats as sps

    from robustrank.sweeps.table import against_reference, combinations

    robust = {"base": [0.30, 0.34, 0.28], "better": [0.50, 0.55, 0.47], "same": [0.31, 0.33, 0.29]}
    rows = [
        {"trial": f"{name}-{s}", "status": "done", "values": {"v": name, "seed": s},
         "clean_acc": 0.9, "robust_acc": r}
        for name, values in robust.items() for s, r in enumerate(values)
    ]  # fmt: skip
    found = {c.values["v"]: cmp for c, cmp in against_reference(combinations(rows), {"v": "base"})}
    assert set(found) == {"better", "same"}
    diffs = [a - b for a, b in zip(robust["better"], robust["base"], strict=True)]
    half = sps.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert found["better"].difference == pytest.approx(np.mean(diffs))
    assert found["better"].ci95.hi - found["better"].ci95.lo == pytest.approx(2 * half)
    assert found["better"].verdict == "supported" and found["same"].verdict == "inconclusive"
    assert against_reference(combinations(rows), {"v": "missing"}) == []
    with pytest.raises(ValueError, match="not swept"):
        against_reference(combinations(rows), {"w": 1})
    # a partial reference: each group (here g) is compared with its own baseline
    grouped = [
        {**r, "trial": f"{r['trial']}-{g}", "values": {**r["values"], "g": g},
         "robust_acc": r["robust_acc"] + (0.2 if g == "adv" else 0.0)}
        for r in rows for g in ("nat", "adv")
    ]  # fmt: skip
    pairs = against_reference(combinations(grouped), {"v": "base"})
    assert len(pairs) == 4
    for c, cmp in pairs:
        assert cmp.label.endswith(f"v=base, g={c.values['g']}")
        assert cmp.difference == pytest.approx(found[c.values["v"]].difference)


def test_a_budget_sweep_draws_robustness_against_the_compression_reached(tmp_path):
    from robustrank.sweeps.outputs import compression_curve, plot_compression

    rows = [
        {"trial": f"{m}-{f}-{s}", "status": "done", "clean_acc": 0.9,
         "robust_acc": 0.8 - (0.3 if m == "low_rank" else 0.1) * (1 - f) + 0.01 * s,
         "compression": 1 / f + 0.1 * s,
         "values": {"structure.budget.method": m, "structure.budget.fraction": f, "seed": s}}
        for m in ("prune", "low_rank") for f in (1.0, 0.1) for s in (0, 1, 2)
    ]  # fmt: skip
    rows.append({**rows[0], "trial": "broken", "status": "failed"})
    curve = compression_curve(rows)
    assert set(curve) == {"method=prune", "method=low_rank"}
    (x1, s1), (x10, s10) = curve["method=low_rank"]
    assert x1 == pytest.approx(1.1) and x10 == pytest.approx(10.1)  # mean over the 3 seeds
    assert s1.mean == pytest.approx(0.81) and s10.mean == pytest.approx(0.8 - 0.27 + 0.01)
    assert s10.n_seeds == 3 and s10.ci95 is not None
    assert plot_compression(rows, tmp_path / "c.png").stat().st_size > 1000


def test_trials_with_the_same_config_share_one_run(tmp_path):
    """At fraction 1 every budget method leaves the model dense: one run serves them all."""
    space = {
        "structure.budget.method": ["prune", "low_rank"],
        "structure.budget.fraction": [1.0, 0.5],
        "seed": [0],
    }
    overrides = {**TINY, "structure": {"budget": {"fraction": 1.0, "method": "prune"}}}
    out = tmp_path / "s"
    run_sweep(spec_from_dict(tiny_spec(space=space, overrides=overrides)), out, progress=False)
    rows = {
        (r["values"]["structure.budget.method"], r["values"]["structure.budget.fraction"]): r
        for r in json.loads((out / "trials.json").read_text())["trials"]
    }
    dense, alias = rows["prune", 1.0], rows["low_rank", 1.0]
    assert "same_as" not in dense and alias["same_as"] == dense["trial"]
    assert alias["run_dir"] == dense["run_dir"] and alias["seconds"] == 0.0
    numbers = ("clean_acc", "robust_acc", "compression")
    assert [alias[k] for k in numbers] == [dense[k] for k in numbers]
    assert rows["low_rank", 0.5]["compression"] > 1 and rows["prune", 0.5]["compression"] > 1
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(
        Path(r["run_dir"]).name for k, r in rows.items() if k != ("low_rank", 1.0)
    )
