"""Shared helpers of the sweep tests: tiny FCNN trial configs, spec dicts, the timing-free
trial table and a driver killed (SIGKILL) at a chosen moment."""

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

#: 1-2 epochs on 2000 MNIST images, about a second per trial with its evaluation.
TINY = {
    "epochs": 1,
    "train_subset": 2000,
    "lr": 0.05,
    "momentum": 0.9,
    "threads": 1,
    "history": {"eval_n": 100, "test_accuracy_n": 500, "track_mi": False, "every_epochs": 1},
}
OBJECTIVE = {"n": 50, "options": {"steps": 10, "n_queries": 50}}
#: the columns that must not depend on interruptions, executors or timing
TIMING = ("seconds", "rung_seconds", "worker", "reused")


def tiny_spec(name="tiny", **extra):
    """A grid over l1 on W1 and two seeds of tiny FCNN runs; ``extra`` replaces keys."""
    data = {
        "name": name,
        "base": "fcnn-natural",
        "overrides": TINY,
        "space": {"regularizers.l1.1": [0.0, 0.003], "seed": [0, 1]},
        "strategy": "grid",
        "objective": OBJECTIVE,
    }
    data.update(extra)
    return data


def table(out: Path) -> list[dict]:
    """``trials.json``'s rows without the timing columns."""
    rows = json.loads((out / "trials.json").read_text())["trials"]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def ray_sweep(spec, out: Path):
    """``run_sweep`` on a local Ray instance of 2 workers, shut down afterwards."""
    import ray

    from robustrank.sweeps import run_sweep

    try:
        return run_sweep(spec, out, executor="ray", workers=2, progress=False)
    finally:
        if ray.is_initialized():
            ray.shutdown()


def kill_when(cmd: list[str], ready: Callable[[], bool], deadline: float = 60.0) -> None:
    """Start ``cmd``, SIGKILL it as soon as ``ready()`` holds (checked every 10 ms); fail if
    it ends first or ``deadline`` seconds pass."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end, hit = time.monotonic() + deadline, False
        while time.monotonic() < end and proc.poll() is None:
            if ready():
                hit = True
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the sweep ended before it could be killed"
        assert hit, f"the moment to kill the sweep did not come within {deadline} s"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
