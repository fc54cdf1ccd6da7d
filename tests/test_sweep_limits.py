"""Sweeps that must not exhaust the machine or fail late (issue 20, items 7, 9 and 10).

* The trial count is computed from the space before any trial is built and refused above
  a limit (default 10,000) unless the spec (``max_trials``), ``run_sweep(max_trials=...)``
  or ``--max-trials`` raises it; a 10^6-trial grid is refused in bounded time and memory.
* A sweep over a model named by import path finishes with ``trust_code=True`` (the
  objective's evaluation rebuilds the checkpoint's model with it).
* ``history.attacks`` of a preset base can be reduced by an override (sweeps and
  ``budgets --set``): the options of the attacks no longer listed go with them.

Trials are tiny (1 epoch on a few hundred MNIST images, an FGSM objective on 20 inputs).
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time
import tracemalloc

import pytest
import yaml
from typer.testing import CliRunner

from robustrank.attacks import get_attack
from robustrank.cli import app
from robustrank.models import read_checkpoint_header
from robustrank.sweeps import SpecError, plan_trials, run_sweep
from robustrank.sweeps.spec import DEFAULT_MAX_TRIALS, check_trial_count, spec_from_dict
from robustrank.training import load_preset, read_history

TINY = {
    "epochs": 1,
    "train_subset": 300,
    "lr": 0.05,
    "momentum": 0.9,
    "threads": 1,
    "history": {"eval_n": 20, "test_accuracy_n": 100, "track_mi": False, "every_epochs": 1},
}
OBJECTIVE = {"attack": "fgsm", "n": 20}

#: 100 x 100 x 2 x 50 = 10^6 trials, written in a few lines
HUGE_SPACE = {
    "lr": [round(0.001 * (i + 1), 6) for i in range(100)],
    "seed": list(range(100)),
    "momentum": [0.0, 0.5],
    "regularizers.l1.1": {"log_uniform": [1e-4, 1e-1], "num": 50},
}


def _spec(space: dict, **extra) -> dict:
    data = {
        "name": "limits",
        "base": "fcnn-natural",
        "overrides": TINY,
        "space": space,
        "strategy": "grid",
        "objective": OBJECTIVE,
    }
    data.update(extra)
    return data


def _defaults(name: str) -> dict:
    return dict(get_attack(name).defaults)


# --------------------------------------------------------------------------- item 7


def test_a_million_trial_grid_is_refused_at_validation_in_bounded_memory():
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(SpecError) as err:
            spec_from_dict(_spec(HUGE_SPACE))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 30
    assert peak < 50 * 2**20  # 10^6 trial dicts would take gigabytes
    message = str(err.value)
    assert "\n" not in message
    assert "1,000,000 trials" in message and "100 x 100 x 2 x 50" in message
    assert f"limit of {DEFAULT_MAX_TRIALS:,}" in message
    assert "max_trials: 1000000" in message and "--max-trials 1000000" in message
    # drawn strategies are counted by n_trials
    with pytest.raises(SpecError, match=r"20,000 trials \(n_trials of strategy random\)"):
        spec_from_dict(_spec({"seed": [0, 1]}, strategy="random", n_trials=20_000))


def _limited_address_space() -> None:  # pragma: no cover - runs in the child
    limit = 3 * 2**30  # materialising the grid needs about 4 GB
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass  # the platform does not limit address space; the timeout still bounds the time


def test_cli_refuses_a_million_trial_grid_before_writing_anything(tmp_path):
    spec = tmp_path / "huge.yaml"
    spec.write_text(yaml.safe_dump(_spec(HUGE_SPACE), sort_keys=False))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "robustrank", "sweep", "run", str(spec), "--out", str(out)]
    try:
        done = subprocess.run(
            [*cmd, "--no-progress"],
            capture_output=True,
            text=True,
            timeout=60,
            preexec_fn=_limited_address_space,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the 10^6-trial sweep was not refused within 60 s")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "1,000,000 trials" in done.stderr + done.stdout
    assert "--max-trials 1000000" in done.stderr + done.stdout
    assert not out.exists()


def test_max_trials_is_raised_by_the_spec_or_the_caller_and_is_no_part_of_identity(tmp_path):
    # 120 x 100 = 12,000 trials from two log-uniform ranges (4 configs to validate)
    space = {
        "regularizers.l1.1": {"log_uniform": [1e-4, 1e-1], "num": 120},
        "regularizers.nuclear.1": {"log_uniform": [1e-4, 1e-1], "num": 100},
    }
    with pytest.raises(SpecError, match="12,000 trials .* limit of 10,000"):
        spec_from_dict(_spec(space))
    by_key = spec_from_dict(_spec(space, max_trials=12_000))
    by_caller = spec_from_dict(_spec(space), max_trials=12_000)
    assert check_trial_count(by_key) == check_trial_count(by_caller) == 12_000
    assert by_key.identity() == by_caller.identity()  # raising the limit is the same sweep
    with pytest.raises(SpecError, match="12,000 trials .* limit of 11,999"):
        check_trial_count(by_key, 11_999)

    four = {"regularizers.l1.1": [0.0, 0.003], "seed": [0, 1]}
    with pytest.raises(SpecError, match=r"4 trials \(a grid of 2 x 2 values\).*limit of 3"):
        spec_from_dict(_spec(four, max_trials=3))
    spec = spec_from_dict(_spec(four))
    assert len(plan_trials(spec, tmp_path / "plan")) == 4
    out = tmp_path / "out"
    with pytest.raises(SpecError, match="4 trials .* limit of 3.*--max-trials 4"):
        run_sweep(spec, out, progress=False, max_trials=3)
    assert not out.exists()  # refused before the directory was claimed


# --------------------------------------------------------------------------- item 10


def test_overriding_history_attacks_drops_the_base_options_of_removed_attacks(tmp_path):
    preset = load_preset("fcnn-natural").plain()
    assert set(preset["history"]["attack_options"]) == {"fgsm", "pgd", "gnm"}

    spec = spec_from_dict(
        _spec({"seed": [0]}, overrides={**TINY, "history": {"attacks": ["fgsm"]}})
    )
    history = spec.base_config()["history"]
    assert history["attacks"] == ["fgsm"]
    assert history["attack_options"] == {"fgsm": _defaults("fgsm")}
    (trial,) = plan_trials(spec, tmp_path / "a")
    assert trial.config["history"]["attack_options"] == {"fgsm": _defaults("fgsm")}

    # a dotted override keeps the options of the attacks still listed (and their changes)
    spec = spec_from_dict(
        _spec(
            {"seed": [0]},
            overrides={"history.attacks": ["fgsm", "pgd"], "history.attack_options.pgd.steps": 3},
        )
    )
    options = spec.base_config()["history"]["attack_options"]
    assert options == {"fgsm": _defaults("fgsm"), "pgd": {**_defaults("pgd"), "steps": 3}}

    # the attack list as a space key: every trial keeps the options of its own attacks
    spec = spec_from_dict(_spec({"history.attacks": [["fgsm"], ["gnm", "pgd"]]}))
    got = [sorted(t.config["history"]["attack_options"]) for t in plan_trials(spec, tmp_path / "b")]
    assert got == [["fgsm"], ["gnm", "pgd"]]

    # options an override gives for an attack it does not list are still refused
    bad = {"history": {"attacks": ["fgsm"], "attack_options": {"pgd": {"steps": 3}}}}
    with pytest.raises(SpecError, match=r"attack_options names \['pgd'\].*not in attacks"):
        spec_from_dict(_spec({"seed": [0]}, overrides=bad))
    # a base whose attacks are not overridden is unchanged, but for the one thread every
    # sweep trial gets when its base leaves threads unset
    assert preset["threads"] is None
    assert spec_from_dict(_spec({"seed": [0]}, overrides={})).base_config() == {
        **preset,
        "threads": 1,
    }


def test_cli_sweep_with_raised_max_trials_and_fewer_history_attacks_finishes(tmp_path):
    overrides = {**TINY, "history": {**TINY["history"], "attacks": ["fgsm"]}}
    data = _spec({"seed": [0, 1]}, overrides=overrides, max_trials=1)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    out = tmp_path / "out"
    args = ["sweep", "run", str(spec), "--out", str(out), "--no-progress"]

    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2
    assert "2 trials" in refused.output and "limit of 1" in refused.output
    assert not out.exists()

    result = CliRunner().invoke(app, [*args, "--max-trials", "2"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "trials.json").read_text())["trials"]
    assert [r["status"] for r in rows] == ["done", "done"]
    for row in rows:
        run = out / row["run_dir"]
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["history"]["attacks"] == ["fgsm"]
        assert config["history"]["attack_options"] == {"fgsm": _defaults("fgsm")}
        final = read_history(run)[-1]
        assert "fr_fgsm" in final and "fr_pgd" not in final and "fr_gnm" not in final


def test_budgets_set_fewer_history_attacks(tmp_path):
    out = tmp_path / "study"
    args = ["budgets", "--family", "fcnn", "--max-epochs", "1", "--out", str(out)]
    args += ["--preset", "fcnn-l1-1e-2", "--no-progress", "--set", "epochs=1"]
    args += ["--set", "train_subset=300", "--set", "history.track_mi=false"]
    args += ["--set", "history.eval_n=20", "--set", "history.test_accuracy_n=100"]
    args += ["--set", "history.attacks=[fgsm]"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "budgets.json").read_text())["presets"]["fcnn-l1-1e-2"]["rows"]
    assert rows and all("fr_fgsm" in r and "fr_pgd" not in r for r in rows)
    for run in ("fcnn-natural", "fcnn-l1-1e-2"):
        config = yaml.safe_load((out / "runs" / run / "config.yaml").read_text())
        assert config["history"]["attacks"] == ["fgsm"]
        assert set(config["history"]["attack_options"]) == {"fgsm"}


# --------------------------------------------------------------------------- item 9

MODEL_SOURCE = """
import torch
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, hidden: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))
"""


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """A model module importable by name (on sys.path), removed again afterwards."""
    name = f"sweep_user_net_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{name}.py").write_text(MODEL_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    yield name
    sys.modules.pop(name, None)


@pytest.mark.filterwarnings("ignore:fooling_ratio. no input is classified correctly")
def test_sweep_over_an_import_path_model_finishes_with_trust_code(tmp_path, user_module):
    model = {"name": f"{user_module}:TinyNet", "options": {"hidden": 8}}
    spec = spec_from_dict(_spec({"seed": [0]}, overrides={**TINY, "model": model}))
    result = run_sweep(spec, tmp_path / "out", progress=False, trust_code=True)
    (row,) = result.rows
    assert row["status"] == "done"
    assert 0.0 <= row["robust_acc"] <= row["clean_acc"] <= 1.0
    run = tmp_path / "out" / row["run_dir"]
    header = read_checkpoint_header(run / "final.safetensors")
    assert header["architecture"]["name"] == f"{user_module}:TinyNet"
    evaluation = json.loads((run / "evaluation.json").read_text())["result"]
    assert math.isclose(evaluation["fgsm"]["robust_accuracy"], row["robust_acc"])
