"""User-facing errors: one line naming the problem and the fix, exit code 2, no traceback
(the traceback only with --debug or ROBUSTRANK_DEBUG=1)."""

import errno
import json
import os

import pytest
import torch

from robustrank.cli import main
from robustrank.ownership import mark
from robustrank.sweeps import SweepError, sweep_status
from robustrank.sweeps.runner import SWEEP_DIR

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def run_main(capsys, *args: str) -> tuple[int, str]:
    """``robustrank ARGS`` in this process: the exit code and what it wrote to stderr."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    return exc.value.code, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_theory_with_a_small_ambient_dimension_runs(tmp_path, capsys):
    # sparse noise had up to 50 nonzeros whatever n was: n = 20 crashed with a shape error
    code, _ = run_main(
        capsys, "theory", "--n", "20", "--k", "2", "--samples", "500", "--instances", "8",
        "--out", tmp_path,
    )  # fmt: skip
    assert code == 0
    rows = json.loads((tmp_path / "theory.json").read_text())["instances"]
    noisy = [r for r in rows if "noise_nnz" in r]
    assert noisy and all(1 <= r["noise_nnz"] <= 20 for r in noisy)


@pytest.mark.parametrize(
    "eps_args, message",
    [
        (["--eps", "2"], "--eps must be an l_inf budget in [0, 1]"),
        (["--eps-grid", "0.01,0.05,1.5"], "--eps-grid must be an l_inf budget in [0, 1]"),
        (["--eps-grid", "0.01,0.05,0.05"], "--eps-grid lists 0.05 twice"),
        (["--eps-grid", "0.01,x"], "comma-separated numbers"),
    ],
)
def test_evaluate_refuses_bad_budgets_before_loading_anything(tmp_path, capsys, eps_args, message):
    missing = tmp_path / "no-such.safetensors"  # never opened: the budget is refused first
    code, err = run_main(capsys, "evaluate", missing, *eps_args)
    assert code == 2 and message in one_error_line(err)


def test_attacks_and_configs_refuse_a_budget_above_one():
    from robustrank import PGD
    from robustrank.training import ConfigError, load_preset
    from robustrank.training.config import config_from_dict

    with pytest.raises(ValueError, match=r"l_inf budget in \[0, 1\].*8/255"):
        PGD(torch.nn.Linear(2, 2), eps=8, alpha=0.01, steps=1)
    data = load_preset("fcnn-pgd").plain()
    data["adversarial"]["eps"] = 2
    with pytest.raises(ConfigError, match="adversarial.eps"):
        config_from_dict(data)


@NO_CUDA
@pytest.mark.parametrize("command", ["train", "reproduce", "evaluate"])
def test_cuda_without_cuda_is_one_line_and_writes_nothing(tmp_path, capsys, command):
    out = tmp_path / "out"
    args = {
        "train": ["train", "--preset", "fcnn-natural", "--out", out],
        "reproduce": ["reproduce", "--profile", "tiny", "--out", out],
        "evaluate": ["evaluate", tmp_path / "x.safetensors", "--out", out],
    }[command]
    code, err = run_main(capsys, *args, "--device", "cuda")
    assert code == 2 and "CUDA is not available" in one_error_line(err)
    assert not out.exists()


def test_a_full_disk_is_one_line_naming_the_fix(tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    code, err = run_main(capsys, "theory", "--n", "20", "--k", "2", "--instances", "2",
                         "--samples", "50", "--out", tmp_path)  # fmt: skip
    assert code == 2 and "No space left on device" in one_error_line(err)
    code, err = run_main(capsys, "train", "--preset", "fcnn-natural", "--out", tmp_path / "r")
    line = one_error_line(err)
    assert code == 2 and "No space left on device" in line and "free disk space" in line


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    args = ["train", "--preset", "fcnn-natural", "--out", str(tmp_path / "r")]
    with pytest.raises(OSError, match="No space left"):
        main([*args, "--debug"])  # --debug anywhere on the command line
    monkeypatch.setenv("ROBUSTRANK_DEBUG", "1")
    with pytest.raises(OSError, match="No space left"):
        main(args)


@pytest.mark.parametrize("content", ["[1, 2]", "not json", '{"identity": 3}', '"text"'])
def test_a_broken_sweep_json_names_its_file(tmp_path, capsys, content):
    mark(tmp_path, SWEEP_DIR)
    (tmp_path / "sweep.json").write_text(content)
    with pytest.raises(SweepError, match="sweep.json"):
        sweep_status(tmp_path)
    code, err = run_main(capsys, "sweep", "status", tmp_path)
    assert code == 2 and "sweep.json" in one_error_line(err)


def test_sweep_run_of_a_missing_spec_is_one_line(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_main(capsys, "sweep", "run", "open-question-fcn", "--out", out)
    line = one_error_line(err)
    assert code == 2 and "neither a spec file nor a bundled spec" in line
    assert "did you mean 'open-question-fcnn'" in line and "robustrank sweep list" in line
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["sweep", "status"],  # no DIR
        ["sweep", "run", "open-question-fcnn"],  # no --out
        ["sweep", "open-question-fcnn", "--out", "x"],  # the form before `sweep run`
    ],
)
def test_sweep_without_its_arguments_is_a_usage_error(capsys, args):
    code, err = run_main(capsys, *args)
    assert code == 2 and "Usage: " in err and "Traceback" not in err


def test_sweep_list_names_every_bundled_spec_and_strategy(capsys):
    from robustrank.sweeps import list_specs, list_strategies

    with pytest.raises(SystemExit) as exc:
        main(["sweep", "list"])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    names = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert names[: len(list_specs())] == list(list_specs())
    assert all(f"{name}: " in out for name in list_strategies())
