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
        until_epoch: a multi-fidelity rung: train only up to the end of this epoch, measure
            ``signal`` there and pause (no evaluation); None trains to the end.
        signal: a :class:`~robustrank.evaluation.SignalSpec` as plain data (with
            ``until_epoch``).
    """

    config: dict[str, Any]
    run_dir: str
    after: tuple[str, ...] = ()
    evaluation: dict[str, Any] | None = None
    trust_code: bool = False
    until_epoch: int | None = None
    signal: dict[str, Any] | None = None

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
        signal: a rung's signal (``until_epoch`` tasks): clean and robust accuracy, epoch.
        paused: the run stopped at the rung (it resumes later).
    """

    run_dir: str
    name: str
    final: dict[str, Any]
    evaluation: dict[str, Any] | None
    seconds: float
    worker: str
    reused: bool = False
    signal: dict[str, Any] | None = None
    paused: bool = False

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
            "signal": self.signal,
            "paused": self.paused,
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


def _rung(task: RunTask, config: Any, run_dir: Path, t0: float) -> RunOutcome:
    """A multi-fidelity rung: train up to ``task.until_epoch`` (resuming), measure the
    signal there and pause; a signal stored by an earlier call is reused, so a run that
    has trained past the rung is judged by what it measured there."""
    from ..evaluation import SignalSpec, measure_signal, save_signal, stored_signal
    from ..training import train
    from ..training.rundir import CONFIG_FILE

    assert task.until_epoch is not None and task.signal is not None
    spec = SignalSpec.model_validate(task.signal)
    epoch = task.until_epoch
    signal = stored_signal(run_dir, epoch, spec)
    if signal is not None:
        return _outcome(task, config, run_dir, t0, final={}, signal=signal, reused=True)
    started = (run_dir / CONFIG_FILE).exists()
    result = train(
        config,
        run_dir,
        resume=started,
        progress=False,
        trust_code=task.trust_code,
        until_epoch=epoch,
    )
    with torch_threads(config.threads):
        signal = measure_signal(result.model, config.dataset, config.device, spec)
    # the epoch measured: the rung's, or the last one of a run that had already finished
    signal["epoch"] = epoch if result.paused else config.epochs
    signal["seconds"] = time.perf_counter() - t0  # this rung's training and its signal
    save_signal(run_dir, epoch, spec, signal)
    final = dict(result.history[-1]) if result.history else {}
    return _outcome(task, config, run_dir, t0, final=final, signal=signal, paused=result.paused)


def _outcome(task: RunTask, config: Any, run_dir: Path, t0: float, **fields: Any) -> RunOutcome:
    return RunOutcome(
        run_dir=str(run_dir),
        name=config.name,
        evaluation=fields.pop("evaluation", None),
        seconds=time.perf_counter() - t0,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        **fields,
    )


def run_task(task: RunTask, *, progress: bool = False) -> RunOutcome:
    """Train ``task``'s run (resume or reuse it) and evaluate its final model; a rung task
    (``until_epoch``) trains up to that epoch and measures its signal instead.

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
    if task.until_epoch is not None:
        return _rung(task, config, run_dir, t0)
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
    return _outcome(task, config, run_dir, t0, final=final, evaluation=evaluation, reused=reused)
