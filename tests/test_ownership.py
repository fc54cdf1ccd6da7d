"""``--overwrite`` deletes only what robustrank wrote (robustrank.ownership).

Every test puts decoys beside the real outputs (a ``.git/`` folder, a notes file, a data
folder) and checks that they survive byte for byte, while robustrank's own files are
replaced; directories robustrank did not create are refused with nothing deleted.
"""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from robustrank.cli import app
from robustrank.ownership import (
    MARKER_FILE,
    OutputExistsError,
    OutputKind,
    OwnershipError,
    check_dir,
    check_files,
    claim_dir,
    clear_dir,
    mark,
    read_marker,
    record_files,
    unowned,
)
from robustrank.sweeps import SweepError, run_sweep
from robustrank.sweeps.runner import SWEEP_DIR
from robustrank.sweeps.spec import spec_from_dict
from robustrank.training import RunError, config_from_dict, train
from robustrank.training.rundir import RUN_DIR

CHILD = OutputKind("child", files=("a.txt", "sub/*.csv"))
PARENT = OutputKind("parent", files=("top.json", "figs/*.png"), children={"runs/*": CHILD})

TINY_RUN = {
    "name": "tiny",
    "model": {"name": "fcnn"},
    "dataset": "mnist",
    "train_subset": 300,
    "epochs": 1,
    "batch_size": 50,
    "lr": 0.05,
    "threads": 1,
    "history": {"evaluate": False, "track_mi": False},
}


def _decoys(directory: Path) -> dict[str, bytes]:
    """Files a user keeps beside robustrank's outputs; returns their contents by path."""
    files = {
        ".git/HEAD": b"ref: refs/heads/main\n",
        ".git/objects/ab/cdef": b"\x00object",
        "notes.txt": b"my notes\n",
        "data/train.npz": b"not really an npz",
    }
    for rel, data in files.items():
        (directory / rel).parent.mkdir(parents=True, exist_ok=True)
        (directory / rel).write_bytes(data)
    return files


def _intact(directory: Path, decoys: dict[str, bytes]) -> bool:
    return all((directory / rel).read_bytes() == data for rel, data in decoys.items())


def _tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


# --------------------------------------------------------------------------- the routine


def _layout(root: Path) -> None:
    """A parent-kind directory with one marked child and one unmarked look-alike."""
    mark(root, PARENT)
    (root / "top.json").write_text("{}")
    (root / "figs").mkdir()
    (root / "figs" / "a.png").write_bytes(b"png")
    (root / "figs" / "mine.txt").write_text("user file in a robustrank folder")
    child = root / "runs" / "r1"
    mark(child, CHILD)
    (child / "a.txt").write_text("a")
    (child / "sub").mkdir()
    (child / "sub" / "x.csv").write_text("1")
    foreign = root / "runs" / "r2"  # matches the child pattern, but has no marker
    foreign.mkdir()
    (foreign / "a.txt").write_text("not robustrank's")


def test_clear_deletes_the_layout_and_keeps_everything_else(tmp_path):
    root = tmp_path / "out"
    _layout(root)
    decoys = _decoys(root)
    expected_kept = [".git/", "data/", "figs/mine.txt", "notes.txt", "runs/r2/"]
    assert unowned(root, PARENT) == expected_kept  # the dry run agrees with the deletion
    assert clear_dir(root, PARENT) == expected_kept
    assert _intact(root, decoys)
    assert (root / "runs" / "r2" / "a.txt").read_text() == "not robustrank's"
    assert (root / "figs" / "mine.txt").exists() and not (root / "figs" / "a.png").exists()
    assert not (root / "top.json").exists() and not (root / "runs" / "r1").exists()
    assert read_marker(root).kind == "parent"  # the directory stays robustrank's


def test_a_child_of_another_kind_or_with_user_files_is_handled_by_its_own_marker(tmp_path):
    root = tmp_path / "out"
    _layout(root)
    (root / "runs" / "r1" / "keep.md").write_text("mine")
    mark(root / "runs" / "r3", PARENT)  # marked, but as the wrong kind
    (root / "runs" / "r3" / "a.txt").write_text("a")
    kept = clear_dir(root, PARENT)
    assert "runs/r1/keep.md" in kept and "runs/r3/" in kept
    assert sorted(p.name for p in (root / "runs" / "r1").iterdir()) == [MARKER_FILE, "keep.md"]
    assert (root / "runs" / "r3" / "a.txt").exists()


def test_symlinks_are_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_text("precious")
    mark(outside, CHILD)  # even a marked directory behind a link stays
    root = tmp_path / "out"
    mark(root, PARENT)
    (root / "runs").mkdir()
    os.symlink(outside, root / "runs" / "link")
    os.symlink(outside / "a.txt", root / "top.json")  # a link named like an output
    clear_dir(root, PARENT)
    assert (outside / "a.txt").read_text() == "precious"
    assert not (root / "top.json").is_symlink()  # the link itself was robustrank's name
    assert (root / "runs" / "link").is_symlink()  # a linked directory is not followed


@pytest.mark.parametrize(
    "content, problem",
    [
        ("not json", "not a valid robustrank marker"),
        ("[1, 2]", "not a valid robustrank marker"),
        ('"run"', "not a valid robustrank marker"),
        ('{"tool": "other", "kind": "run", "version": 1}', "tool"),
        ('{"tool": "robustrank", "kind": "run", "version": 9}', "version"),
        ('{"tool": "robustrank", "kind": "run", "version": 1, "files": ["../x"]}', "relative"),
        ('{"tool": "robustrank", "kind": "run", "version": 1, "files": ["/etc/x"]}', "relative"),
    ],
)
def test_an_invalid_marker_is_refused_and_nothing_is_deleted(tmp_path, content, problem):
    (tmp_path / MARKER_FILE).write_text(content)
    decoys = _decoys(tmp_path)
    (tmp_path / "config.yaml").write_text("x")
    with pytest.raises(OwnershipError, match=problem):
        claim_dir(tmp_path, RUN_DIR, overwrite=True)
    assert _intact(tmp_path, decoys) and (tmp_path / "config.yaml").exists()


def test_check_dir_refuses_files_other_kinds_and_foreign_directories(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OwnershipError, match="is a file, not a directory"):
        check_dir(tmp_path / "f", RUN_DIR)
    mark(tmp_path / "s", SWEEP_DIR)
    with pytest.raises(OwnershipError, match="robustrank 'sweep' directory, not a 'run' one"):
        check_dir(tmp_path / "s", RUN_DIR, overwrite=True)
    _decoys(tmp_path / "mine")
    with pytest.raises(OwnershipError, match=r"not empty \(\.git/, data/, notes.txt\)"):
        check_dir(tmp_path / "mine", RUN_DIR)
    assert check_dir(tmp_path / "new", RUN_DIR) is None and not (tmp_path / "new").exists()
    # adoption (an unmarked output of an earlier robustrank) never applies to --overwrite
    with pytest.raises(OwnershipError, match="delete it yourself"):
        check_dir(tmp_path / "mine", RUN_DIR, overwrite=True, adopt=lambda d: True)
    assert check_dir(tmp_path / "mine", RUN_DIR, adopt=lambda d: True) is None


def test_single_files_are_replaced_only_when_robustrank_wrote_them(tmp_path):
    mine, ours = tmp_path / "eval.json", tmp_path / "curve.json"
    mine.write_text("user's")
    with pytest.raises(OutputExistsError, match="pass --overwrite"):
        check_files([mine])
    with pytest.raises(OwnershipError, match="robustrank did not write it"):
        check_files([mine], overwrite=True)
    ours.write_text("ours")
    record_files([ours])
    check_files([ours], overwrite=True)  # listed in the marker: may be replaced
    with pytest.raises(FileExistsError):  # OutputExistsError is a FileExistsError too
        check_files([ours])
    with pytest.raises(OwnershipError, match="is a directory"):
        check_files([tmp_path], overwrite=True)
    with pytest.raises(OwnershipError, match="is a file, not a directory"):
        check_files([mine / "x.json"])
    assert read_marker(tmp_path).files == ["curve.json"]


# --------------------------------------------------------------------------- train


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_train_overwrite_refuses_a_directory_with_a_foreign_config_yaml(tmp_path):
    p = tmp_path / "p"
    decoys = _decoys(p)
    (p / "src").mkdir()
    (p / "src" / "main.py").write_text("print('hi')")
    (p / "config.yaml").write_text("x\n")
    before = _tree(p)
    result = _cli("train", "--preset", "fcnn-natural", "--epochs", "1", "--out", p, "--overwrite")
    assert result.exit_code == 2 and "no robustrank marker" in result.output
    assert _tree(p) == before and _intact(p, decoys)
    # the same from inside the project: train config.yaml --out . --overwrite
    (p / "config.yaml").write_text(yaml.safe_dump(TINY_RUN))
    cwd = os.getcwd()
    os.chdir(p)
    try:
        result = _cli("train", "config.yaml", "--out", ".", "--overwrite", "--no-progress")
    finally:
        os.chdir(cwd)
    assert result.exit_code == 2 and "no robustrank marker" in result.output
    assert _tree(p) == before and not (p / ".robustrank.lock").exists()


def test_train_overwrite_replaces_the_run_and_keeps_user_files(tmp_path):
    run = tmp_path / "run"
    first = train(config_from_dict(TINY_RUN), run, progress=False)
    assert unowned(run, RUN_DIR) == []  # every file a run writes is in its layout
    decoys = _decoys(run)
    stamp = (run / "final.safetensors").stat().st_mtime_ns
    with pytest.raises(RunError, match="is not empty"):
        train(config_from_dict(TINY_RUN), run, progress=False)
    again = train(config_from_dict({**TINY_RUN, "seed": 1}), run, overwrite=True, progress=False)
    assert _intact(run, decoys) and not again.already_done
    assert (run / "final.safetensors").stat().st_mtime_ns != stamp
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == 1
    assert unowned(run, RUN_DIR) == [".git/", "data/", "notes.txt"]
    assert first.history[-1]["epoch"] == again.history[-1]["epoch"] == 1


# --------------------------------------------------------------------------- sweep

SWEEP = {
    "name": "own",
    "base": "fcnn-natural",
    "overrides": {
        "epochs": 1,
        "train_subset": 300,
        "threads": 1,
        "history": {"eval_n": 50, "test_accuracy_n": 100, "track_mi": False},
    },
    "space": {"seed": [0]},
    "strategy": "grid",
    "objective": {"n": 20, "attack": "fgsm"},
}


def test_sweep_overwrite_refuses_a_foreign_sweep_json_and_leaves_no_lock(tmp_path):
    out = tmp_path / "out"
    decoys = _decoys(out)
    (out / ".ssh").mkdir()
    (out / ".ssh" / "id_ed25519").write_text("secret")
    (out / "sweep.json").write_text(json.dumps({"experiment": 1}))
    before = _tree(out)
    with pytest.raises(SweepError, match="no robustrank marker"):
        run_sweep(spec_from_dict(SWEEP), out, progress=False, overwrite=True)
    assert _tree(out) == before and _intact(out, decoys)
    (tmp_path / "file").write_text("x")  # a plain file as --out: one clear line, exit 2
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SWEEP))
    result = _cli("sweep", "run", tmp_path / "spec.yaml", "--out", tmp_path / "file")
    assert result.exit_code == 2 and "is a file, not a directory" in result.output


def test_sweep_overwrite_deletes_its_trials_and_keeps_user_files(tmp_path):
    out = tmp_path / "sweep"
    first = run_sweep(spec_from_dict(SWEEP), out, progress=False)
    assert unowned(out, SWEEP_DIR) == []
    decoys = _decoys(out)
    (out / "trials" / "my-notes.md").write_text("inside the trials folder")
    other = spec_from_dict({**SWEEP, "space": {"seed": [5]}})
    with pytest.raises(SweepError, match="different sweep"):
        run_sweep(other, out, progress=False)
    result = run_sweep(other, out, progress=False, overwrite=True)
    assert _intact(out, decoys) and (out / "trials" / "my-notes.md").exists()
    trials = sorted(p.name for p in (out / "trials").iterdir())
    assert trials == sorted([result.rows[0]["trial"], "my-notes.md"])
    assert first.rows[0]["trial"] != result.rows[0]["trial"]


# --------------------------------------------------------------------------- single files


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("ckpt") / "run"
    return train(config_from_dict(TINY_RUN), run, progress=False).final_checkpoint


def test_evaluate_overwrite_replaces_only_its_own_result_files(tmp_path, checkpoint):
    out = tmp_path / "eval"
    decoys = _decoys(out)
    (out / "eval-fgsm.json").write_text("the user's own file")
    args = ["evaluate", checkpoint, "--attack", "fgsm", "--n", "20", "--out", out, "--no-progress"]
    result = _cli(*args, "--overwrite")
    assert result.exit_code == 2 and "robustrank did not write it" in result.output
    assert (out / "eval-fgsm.json").read_text() == "the user's own file"
    (out / "eval-fgsm.json").unlink()
    assert _cli(*args).exit_code == 0
    result = _cli(*args)
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    assert _cli(*args, "--overwrite").exit_code == 0
    assert json.loads((out / "eval-fgsm.json").read_text())["results"][0]["attack"] == "fgsm"
    assert _intact(out, decoys)
    assert sorted(read_marker(out).files) == ["eval-fgsm.csv", "eval-fgsm.json"]


def test_analyze_curve_and_theory_outputs_follow_the_same_rule(tmp_path, checkpoint):
    result = _cli("analyze", checkpoint, "--n", "50", "--out", tmp_path, "--overwrite")
    assert result.exit_code == 2 and "is a directory; give the path of a file" in result.output
    report = tmp_path / "report.json"
    report.write_text("mine")
    result = _cli("analyze", checkpoint, "--n", "50", "--out", report, "--overwrite")
    assert result.exit_code == 2 and report.read_text() == "mine"
    report.unlink()
    assert _cli("analyze", checkpoint, "--n", "50", "--out", report).exit_code == 0
    assert _cli("analyze", checkpoint, "--n", "50", "--out", report, "--overwrite").exit_code == 0
    curve = tmp_path / "curve"
    decoys = _decoys(curve)
    (curve / "curve.png").write_bytes(b"my figure")
    args = ["curve", checkpoint, "--out", curve, "--n", "20", "--eps-grid", "0,0.05"]
    result = _cli(*args, "--attack", "fgsm", "--overwrite", "--no-progress")
    assert result.exit_code == 2 and (curve / "curve.png").read_bytes() == b"my figure"
    theory = tmp_path / "theory"
    theory.mkdir()
    (theory / "theory.json").write_text("mine")
    result = _cli("theory", "--n", "20", "--k", "2", "--samples", "50", "--out", theory)
    assert result.exit_code == 2 and "pass --overwrite" in result.output
    result = _cli("theory", "--out", theory, "--overwrite", "--n", "20", "--k", "2")
    assert result.exit_code == 2 and (theory / "theory.json").read_text() == "mine"
    assert _intact(curve, decoys)


def test_diagnose_refuses_to_replace_a_foreign_diagnostics_json(tmp_path, checkpoint):
    (tmp_path / "diagnostics.json").write_text("mine")
    result = _cli("diagnose", checkpoint, "--n", "10", "--out", tmp_path, "--overwrite")
    assert result.exit_code == 2 and "robustrank did not write it" in result.output
    assert (tmp_path / "diagnostics.json").read_text() == "mine"


def test_a_copied_run_keeps_its_marker_and_stays_overwritable(tmp_path, checkpoint):
    copy = tmp_path / "copy"
    shutil.copytree(checkpoint.parent, copy)
    decoys = _decoys(copy)
    train(config_from_dict(TINY_RUN), copy, overwrite=True, progress=False)
    assert _intact(copy, decoys) and (copy / "done.json").exists()
