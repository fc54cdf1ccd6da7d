"""The unit of work every executor runs: train one run directory, then evaluate it.

A :class:`RunTask` is plain data (the config as a dict, paths as strings), so it travels to
a Ray worker unchanged. :func:`run_task` trains the run (resuming an interrupted one,
reusing a finished one), evaluates its final checkpoint when the task asks for it (cached
in the run directory, keyed by the settings and the checkpoint's SHA-256) and returns a
:class:`RunOutcome`. Running a task twice, or after its worker died, gives the same
outcome: the run directory holds all state.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._modes import torch_threads
from ..training.rundir import EVALUATION_FILE

__all__ = ["ExecutionError", "RunTask", "RunOutcome", "run_task", "EVALUATION_FILE"]


class ExecutionError(RuntimeError):
    """A task cannot run where it was sent (e.g. its run directory is not visible there)."""


@dataclass(frozen=True)
class RunTask:
    """One training run and, optionally, the strong evaluation of its final model.

    Attributes:
        config: the run's config as plain data (``TrainConfig.plain()``).
        run_dir: the run directory, on a path every worker can see.
        after: run directories of tasks that must finish first (e.g. the natural run a
            fine-tune starts from). Executors order tasks by them.
        evaluation: an :class:`~robustrank.evaluation.EvaluationSpec` as plain
            data, or None to only train.
        trust_code: allow a model named by import path (see ``train``).
    """

    config: dict[str, Any]
    run_dir: str
    after: tuple[str, ...] = ()
    evaluation: dict[str, Any] | None = None
    trust_code: bool = False

    @property
    def name(self) -> str:
        """The run's name (``config["name"]``)."""
        return str(self.config["name"])

    @property
    def threads(self) -> int | None:
        """CPU threads the run uses (``config["threads"]``; None: PyTorch's default)."""
        return self.config.get("threads")


@dataclass
class RunOutcome:
    """What a finished task reports back.

    Attributes:
        run_dir: the run directory.
        name: the run's name.
        final: the last history row (clean and robust accuracy, fooling ratios, structure).
        evaluation: the strong evaluation (``evaluate_run``'s dict), or None.
        seconds: wall time of this call (a reused run takes almost none).
        worker: ``host:pid`` of the process that ran it.
        reused: the run was already finished before this call.
    """

    run_dir: str
    name: str
    final: dict[str, Any]
    evaluation: dict[str, Any] | None
    seconds: float
    worker: str
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data."""
        return {
            "run_dir": self.run_dir,
            "name": self.name,
            "final": self.final,
            "evaluation": self.evaluation,
            "seconds": self.seconds,
            "worker": self.worker,
            "reused": self.reused,
        }


def _check_visible(run_dir: Path) -> None:
    """Fail clearly when the run directory's parent is not on this worker's filesystem."""
    parent = run_dir.parent
    if not parent.is_dir():
        raise ExecutionError(
            f"worker {socket.gethostname()} cannot see {parent} (the parent of run directory "
            f"{run_dir}). Run directories must be on a path every worker can see: run on one "
            "machine, or put --out on a shared filesystem mounted at the same path on every "
            "node"
        )


def _certification(
    config: Any, run_dir: Path, spec: Any, evaluation: dict[str, Any], trust_code: bool
) -> dict[str, Any]:
    """The run's cached certification (:mod:`robustrank.evaluation.certified_runs`) with
    its ``conflicts`` against the run's attacks (``[]`` when sound)."""
    from ..evaluation.certified_runs import cached_certification, certificate_conflicts
    from ..training.rundir import CERTIFICATION_FILE, FINAL_FILE

    result = cached_certification(
        config, run_dir / FINAL_FILE, spec, run_dir / CERTIFICATION_FILE, trust_code=trust_code
    )
    return {**result, "conflicts": certificate_conflicts(result, evaluation)}


def run_task(task: RunTask, *, progress: bool = False) -> RunOutcome:
    """Train ``task``'s run (resume or reuse it) and evaluate its final model.

    The run's ``threads`` apply to training and evaluation alike, so the numbers do not
    depend on the executor or the number of workers.
    """
    from ..evaluation import EvaluationSpec, cached_evaluation
    from ..training import config_from_dict, train
    from ..training.rundir import CONFIG_FILE, DONE_FILE, FINAL_FILE

    t0 = time.perf_counter()
    run_dir = Path(task.run_dir)
    _check_visible(run_dir)
    config = config_from_dict(task.config, source=f"task {task.name}", trust_code=task.trust_code)
    reused = (run_dir / DONE_FILE).exists()
    started = (run_dir / CONFIG_FILE).exists()
    result = train(config, run_dir, resume=started, progress=progress, trust_code=task.trust_code)
    evaluation = None
    if task.evaluation is not None:
        spec = EvaluationSpec.model_validate(task.evaluation)
        with torch_threads(config.threads):
            evaluation = cached_evaluation(
                config,
                run_dir / FINAL_FILE,
                spec,
                run_dir / EVALUATION_FILE,
                trust_code=task.trust_code,
            )
            if spec.certification is not None:
                evaluation["certification"] = _certification(
                    config, run_dir, spec, evaluation, task.trust_code
                )
    final = dict(result.history[-1]) if result.history else {}
    return RunOutcome(
        run_dir=str(run_dir),
        name=config.name,
        final=final,
        evaluation=evaluation,
        seconds=time.perf_counter() - t0,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        reused=reused,
    )
