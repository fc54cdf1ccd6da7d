"""The run directory: its files, the lock, append-only history, and the resume state.

::

    .robustrank.json       the marker: robustrank created this run directory
    config.yaml            the config (resume refuses a different one)
    history.jsonl/.csv     one row per history point, appended as training goes
    last.safetensors       rolling model checkpoint (removed when the run finishes)
    resume.safetensors     exact resume state (removed when the run finishes)
    final.safetensors      the trained model
    checkpoint-epoch-E.safetensors   only with ``checkpoint_every_epoch: true``
    done.json              written last: the run is finished
    evaluation.json        the strong evaluation of the final model (reproduce, sweeps)
    certification.json     its certified accuracy (reproduce, when the profile asks)

``--overwrite`` deletes these files and nothing else (:mod:`robustrank.ownership`), and
only in a directory whose marker says it is a run.

History lines are appended with one write and fsync; the resume state records the
files' sizes, so a resumed run first truncates anything written after it (a torn line).
The resume state is safetensors + JSON (no pickle).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from .._io import atomic_write_bytes, exclusive_lock
from ..ownership import MARKER_FILE, OutputKind, check_dir, claim_dir
from ..yamlio import load_yaml_file
from .config import ConfigError, TrainConfig, config_from_dict

__all__ = [
    "RunError",
    "CONFIG_FILE",
    "HISTORY_JSONL",
    "HISTORY_CSV",
    "LAST_FILE",
    "RESUME_FILE",
    "FINAL_FILE",
    "DONE_FILE",
    "EVALUATION_FILE",
    "RUN_DIR",
    "read_history",
    "config_diff",
    "run_lock",
    "check_run_dir",
    "prepare_run_dir",
    "append_line",
    "truncate_to",
    "csv_line",
    "json_value",
    "save_resume",
    "load_resume",
    "restore_optimizer",
]

RESUME_FORMAT = "robustrank-resume/1"


class RunError(ValueError):
    """A run directory cannot be used as asked (not empty, different config, ...)."""


CONFIG_FILE = "config.yaml"
HISTORY_JSONL = "history.jsonl"
HISTORY_CSV = "history.csv"
LAST_FILE = "last.safetensors"
RESUME_FILE = "resume.safetensors"
FINAL_FILE = "final.safetensors"
DONE_FILE = "done.json"
EVALUATION_FILE = "evaluation.json"
CERTIFICATION_FILE = "certification.json"
LOCK_FILE = ".robustrank.lock"

#: What a run directory holds; ``--overwrite`` deletes these files and nothing else.
RUN_DIR = OutputKind(
    "run",
    files=(
        CONFIG_FILE,
        HISTORY_JSONL,
        HISTORY_CSV,
        LAST_FILE,
        RESUME_FILE,
        FINAL_FILE,
        "checkpoint-epoch-*.safetensors",
        DONE_FILE,
        EVALUATION_FILE,
        CERTIFICATION_FILE,
        "signal-epoch-*.json",
        LOCK_FILE,
    ),
    lock=LOCK_FILE,
)


def run_lock(out_dir: Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive lock on the run directory so two processes never train into it."""
    return exclusive_lock(
        out_dir / LOCK_FILE,
        str(os.getpid()),
        lambda pid: RunError(
            f"another process (pid {pid}) is training in {out_dir}; wait for it to finish "
            "or stop it before starting, resuming or overwriting this run"
        ),
    )


def append_line(path: Path, line: str) -> int:
    """Append one complete line with a single write, flush and fsync; return the new size."""
    data = line.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def truncate_to(path: Path, size: int) -> None:
    """Drop what was appended after the last committed resume state (e.g. a torn line)."""
    current = path.stat().st_size if path.exists() else 0
    if current < size:
        raise RunError(
            f"{path} is shorter ({current} bytes) than when the resume state was saved "
            f"({size} bytes); the run directory was modified. Start over with --overwrite"
        )
    if current != size:
        with open(path, "r+b") as f:
            f.truncate(size)
            f.flush()
            os.fsync(f.fileno())


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``history.jsonl`` in a run directory (complete lines only)."""
    path = Path(run_dir) / HISTORY_JSONL
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a torn last line after a crash
    return rows


def csv_line(values: list[Any]) -> str:
    """One CSV line of ``values``; None and non-finite floats become empty cells."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        ["" if v is None or (isinstance(v, float) and not math.isfinite(v)) else v for v in values]
    )
    return buf.getvalue()


def save_resume(path: Path, model: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> None:
    """Model, optimiser state and RNG states: safetensors + JSON. Every tensor of the
    optimiser's state (momentum buffers, Adam's ``step``, ``exp_avg``, ``exp_avg_sq``, ...)
    is stored as it is; other values and the param groups go to the JSON header."""
    from safetensors.torch import save

    tensors: dict[str, Tensor] = {}
    for k, v in model.state_dict().items():
        tensors[f"model/{k}"] = v.detach().to("cpu").contiguous()
    sd = opt.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"optim/{idx}/{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    tensors["rng/torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    header = dict(meta)
    header["format"] = RESUME_FORMAT
    header["optim"] = {"param_groups": sd["param_groups"], "scalars": scalars}
    data = save(tensors, metadata={"robustrank_resume": json.dumps(header)})
    atomic_write_bytes(path, data)


def load_resume(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the JSON header of a resume state (:func:`save_resume`)."""
    from safetensors.torch import load

    raw = path.read_bytes()
    try:
        tensors = load(raw)
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"]["robustrank_resume"])
    except Exception as err:  # noqa: BLE001 - any corruption is reported the same way
        raise RunError(
            f"{path} is not a valid resume state ({err}); delete the run directory or start "
            "over with --overwrite"
        ) from err
    if header.get("format") != RESUME_FORMAT:
        raise RunError(f"{path}: unsupported resume format {header.get('format')!r}")
    return tensors, header


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor], header: dict) -> None:
    """Load the optimiser state saved by :func:`save_resume` into ``opt``."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, scal in header["optim"]["scalars"].items():
        state.setdefault(int(idx), {}).update(scal)
    # JSON has no tuples: give back the tuples the optimizer holds (Adam's betas)
    groups = [
        {k: tuple(v) if isinstance(mine.get(k), tuple) else v for k, v in saved.items()}
        for saved, mine in zip(header["optim"]["param_groups"], opt.param_groups)
    ]
    opt.load_state_dict({"state": state, "param_groups": groups})


def _contents(out_dir: Path) -> list[str]:
    """What the run directory holds besides robustrank's lock and marker."""
    if not out_dir.is_dir():
        return []
    return sorted(p.name for p in out_dir.iterdir() if p.name not in (LOCK_FILE, MARKER_FILE))


def _earlier_run(out_dir: Path) -> bool:
    """An unmarked run directory of an earlier robustrank: a config and run files only."""
    from ..ownership import unowned

    return (out_dir / CONFIG_FILE).is_file() and not unowned(out_dir, RUN_DIR)


def check_run_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse ``out_dir`` for this call without changing anything: not robustrank's, not
    empty without ``resume``/``overwrite``, or nothing to resume."""
    if resume and overwrite:
        raise RunError("choose either resume or overwrite, not both")
    try:
        check_dir(out_dir, RUN_DIR, overwrite=overwrite, adopt=_earlier_run)
    except ValueError as err:
        raise RunError(str(err)) from None
    contents = _contents(out_dir)
    if not contents or overwrite:
        return
    if not resume:
        shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
        raise RunError(
            f"run directory {out_dir} is not empty ({shown}); pass --resume (resume=True) to "
            "continue that run, --overwrite (overwrite=True) to delete its run files and start "
            "over, or choose another output directory"
        )
    if CONFIG_FILE not in contents:
        raise RunError(
            f"cannot resume in {out_dir}: it has no {CONFIG_FILE}, so no run was started there; "
            "train without --resume, or choose another output directory"
        )


def prepare_run_dir(config: TrainConfig, out_dir: Path, resume: bool, overwrite: bool) -> str:
    """Check, clear (``overwrite``: robustrank's run files only) and mark ``out_dir``, under
    the run lock. Returns the mode: "fresh", "resume" or "done"."""
    check_run_dir(out_dir, resume, overwrite)
    claim_dir(out_dir, RUN_DIR, overwrite=overwrite, adopt=_earlier_run)
    if overwrite or CONFIG_FILE not in _contents(out_dir):
        return "fresh"
    try:
        saved = load_yaml_file(out_dir / CONFIG_FILE)
        saved = config_from_dict(saved, source=str(out_dir / CONFIG_FILE)).plain()
    except (yaml.YAMLError, ConfigError) as err:
        raise RunError(
            f"cannot resume in {out_dir}: its {CONFIG_FILE} is unreadable: {err}"
        ) from err
    _check_same_data(out_dir, saved, config.plain())
    diff = config_diff(saved, config.plain())
    if diff:
        raise RunError(
            f"cannot resume {out_dir} with a different config; differing keys:\n"
            + "\n".join(diff)
            + "\nUse the run's own config.yaml, --overwrite to start over, or another --out"
        )
    if (out_dir / DONE_FILE).exists():
        return "done"
    return "resume"


def _check_same_data(out_dir: Path, saved: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume when the data a run was trained on has changed (its fingerprint)."""
    old_ds, new_ds = saved.get("dataset"), new.get("dataset")
    if not (isinstance(old_ds, dict) and isinstance(new_ds, dict)):
        return
    same_source = {k: v for k, v in old_ds.items() if k != "sha256"} == {
        k: v for k, v in new_ds.items() if k != "sha256"
    }
    if same_source and old_ds.get("sha256") != new_ds.get("sha256"):
        raise RunError(
            f"cannot resume {out_dir}: its data changed since the run started. "
            f"{old_ds.get('path')} had SHA-256 {old_ds.get('sha256')}, now "
            f"{new_ds.get('sha256')}. Restore the original data, or start over on the new "
            "data with --overwrite or another --out"
        )


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        if not data and prefix:
            out[prefix[:-1]] = {}
        return out
    return {prefix[:-1]: data}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per dotted key whose value differs between two plain configs (empty if
    none): what a run was trained with (``old``) against what is asked of it (``new``)."""
    a, b = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            lines.append(
                f"  {key}: run has {a.get(key, '<unset>')!r}, new config has "
                f"{b.get(key, '<unset>')!r}"
            )
    return lines


def json_value(v: Any) -> Any:
    """``v`` as JSON allows it: a non-finite float becomes None."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v
