"""``robustrank sweep status DIR``: how far a sweep is, read from its directory alone.

A trial is *done* when its row in ``trials.json`` is, *stopped* when a multi-fidelity
rung stopped it (its row says so), *running* when its run directory has started
(``config.yaml``) but not finished (``done.json``): it is training now (or paused between
rungs), or will resume when the sweep is re-run; *pending* otherwise.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .runner import LOCK_FILE, SWEEP_FILE, TRIALS_JSON, SweepError, saved_identity

__all__ = ["SweepStatus", "sweep_status"]


@dataclass
class SweepStatus:
    """Counts of done/stopped/running/pending trials, the best finished trial and the
    driver."""

    out_dir: Path
    name: str
    strategy: str
    total: int
    done: int
    running: int
    pending: int
    best: dict[str, Any] | None
    driver: str | None
    stopped: int = 0

    def format(self) -> str:
        """A few lines for the terminal."""
        lines = [
            f"sweep {self.name} ({self.strategy}) in {self.out_dir}",
            f"trials: {self.done} done, {self.running} running, {self.pending} pending"
            + (f", {self.stopped} stopped at a rung" if self.stopped else "")
            + f" (of {self.total})",
        ]
        if self.best is not None:
            b = self.best
            values = ", ".join(f"{k}={v}" for k, v in b["values"].items())
            lines.append(
                f"best so far: {b['trial']} ({values}): robust accuracy {b['robust_acc']:.4f}, "
                f"clean accuracy {b['clean_acc']:.4f}"
            )
        if self.driver is not None:
            lines.append(f"driver: {self.driver}")
        elif self.done + self.stopped < self.total:
            lines.append("no sweep is running here; re-run the same command to resume it")
        return "\n".join(lines)


def _driver(out: Path) -> str | None:
    """``host pid`` of a live driver on this host (from the lock file), else None."""
    try:
        host, pid = (out / LOCK_FILE).read_text("utf-8").split()
        if host != socket.gethostname():
            return f"pid {pid} on {host} (not checked from here)"
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return None
    return f"pid {pid} on {host}"


def _best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    done = [
        r
        for r in rows
        if r.get("status") == "done"
        and isinstance(r.get("robust_acc"), int | float)
        and isinstance(r.get("clean_acc"), int | float)
    ]
    return max(done, key=lambda r: (r["robust_acc"], r["clean_acc"]), default=None)


def _trial_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of ``trials.json`` (none yet without one)."""
    path = out / TRIALS_JSON
    if not path.is_file():
        return []
    try:
        rows = json.loads(path.read_text("utf-8"))["trials"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("'trials' is not a list of objects")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise SweepError(f"{path} is not a trials table ({err}); re-run the sweep") from None
    return rows


def sweep_status(out: str | Path) -> SweepStatus:
    """The progress of the sweep in ``out`` (no lock taken, nothing written)."""
    from ..training.rundir import CONFIG_FILE

    out = Path(out)
    if not (out / SWEEP_FILE).is_file():
        raise SweepError(f"{out} holds no {SWEEP_FILE}: not a sweep directory (see --out)")
    identity = saved_identity(out)
    spec = identity.get("spec") if isinstance(identity, dict) else None
    if not isinstance(spec, dict) or not {"name", "strategy"} <= set(spec):
        raise SweepError(f"{out / SWEEP_FILE} does not describe a sweep spec; see --out")
    rows = _trial_rows(out)
    done = sum(r.get("status") == "done" for r in rows)
    stopped = sum(r.get("status") == "stopped" for r in rows)
    running = sum(
        r.get("status") not in ("done", "stopped") and (out / r["run_dir"] / CONFIG_FILE).exists()
        for r in rows
    )
    total = spec.get("n_trials") if spec["strategy"] == "optuna" else None  # asked as it goes
    total = max(total or 0, len(rows))
    return SweepStatus(
        out_dir=out,
        name=spec["name"],
        strategy=spec["strategy"],
        total=total,
        done=done,
        running=running,
        pending=total - done - running - stopped,
        best=_best(rows),
        driver=_driver(out),
        stopped=stopped,
    )
