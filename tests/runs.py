"""Helpers shared by the training tests: a tiny run's config, weight equality and killing
a run mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from robustrank.training import TrainConfig, TrainResult, config_from_dict, read_history, train


def tiny_fcnn(**overrides) -> TrainConfig:
    """A tiny FCNN run on 600 MNIST images (12 batches per epoch), no evaluation;
    ``overrides`` replace top-level keys."""
    data = {
        "name": "tiny",
        "model": {"name": "fcnn"},
        "dataset": "mnist",
        "train_subset": 600,
        "epochs": 2,
        "batch_size": 50,
        "lr": 0.01,
        "history": {"evaluate": False, "every_steps": 5},
        **overrides,
    }
    return config_from_dict(data)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Same state-dict keys and bit-identical tensors."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def sigkill_train(config_path: Path, run: Path, rows: int, timeout: float = 120) -> None:
    """Run ``robustrank train CONFIG --out RUN`` in a subprocess and SIGKILL it once its
    resume state exists and its history has ``rows`` rows; fails if it ends first."""
    cmd = [sys.executable, "-m", "robustrank", "train", str(config_path), "--out", str(run)]
    proc = subprocess.Popen([*cmd, "--no-progress"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "resume.safetensors").exists() and len(read_history(run)) >= rows:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (run / "done.json").exists()


def interrupt_then_resume(
    cfg: TrainConfig, run: Path, stop: Callable[[dict[str, Any]], bool]
) -> TrainResult:
    """Train ``cfg`` into ``run``, interrupt it (KeyboardInterrupt) at the first history row
    where ``stop(row)`` holds, then resume it to the end; returns the resumed run."""

    def interrupt(row: dict[str, Any], model: torch.nn.Module) -> None:
        if stop(row):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, run, progress=False, callback=interrupt)
    return train(cfg, run, resume=True, progress=False)
