"""The process executor: independent runs in parallel in worker processes on this machine.

Each :class:`~.tasks.RunTask` is two jobs, as with Ray: training, then the evaluation of
the finished run, so that a fine-tune waits for its parent's training only (a natural
run's long strong evaluation goes in parallel with its fine-tunes). A job takes as many of
the pool's CPUs as the run's ``threads`` (1 when unset, and the job then runs with one
thread), so the numbers do not depend on this executor or on the number of workers: a run
computes exactly what the local executor computes. Workers are spawned (not forked), so
each imports robustrank afresh and no thread pool is shared.

A failed run raises its error naming the run (:func:`~.base.task_failure`); the other
workers are stopped and their runs resume on the next call from their run directories,
as after Ctrl-C. A worker killed from outside (out of memory, say) fails the call with an
:class:`~.tasks.ExecutionError` that says so.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace

from tqdm.auto import tqdm

from .._modes import torch_threads
from .base import OnDone, check_dependencies, dependency_order, task_failure
from .registry import register_executor
from .tasks import ExecutionError, RunOutcome, RunTask, run_task

__all__ = ["ProcessExecutor", "run_job"]


def run_job(task: RunTask) -> RunOutcome:
    """The body of every job in a worker process: :func:`run_task` with the run's thread
    count (1 when unset)."""
    with torch_threads(task.threads or 1):
        return run_task(task, progress=False)


@dataclass
class _Jobs:
    """The scheduling state of one :meth:`ProcessExecutor.map`: jobs ``(task, phase)``
    (phase 0 trains, 1 evaluates), which are waiting, running and done."""

    tasks: Sequence[RunTask]
    waiting: list[tuple[int, int]]
    running: dict[Future, tuple[int, int]] = field(default_factory=dict)
    trained: dict[int, RunOutcome] = field(default_factory=dict)
    finished: dict[int, RunOutcome] = field(default_factory=dict)

    def ready(self, job: tuple[int, int]) -> bool:
        """Training waits for the training of the runs it fine-tunes; evaluation for the
        run's own training."""
        i, phase = job
        if phase == 1:
            return i in self.trained
        index = {t.run_dir: k for k, t in enumerate(self.tasks)}
        return all(index[d] in self.trained for d in self.tasks[i].after if d in index)

    def priority(self, job: tuple[int, int]) -> tuple[int, float]:
        """Sort key of the waiting jobs: training first, then evaluations by their run's
        training time, longest first."""
        i, phase = job
        return (phase, -self.trained[i].seconds if phase == 1 else 0.0)

    def cpus(self, job: tuple[int, int]) -> int:
        return self.tasks[job[0]].threads or 1

    def busy(self) -> int:
        return sum(self.cpus(job) for job in self.running.values())


@register_executor(
    "processes",
    description="worker processes on this machine, runs in parallel on --workers CPUs "
    "(default: every core; nothing to install)",
)
class ProcessExecutor:
    """Runs tasks in parallel in spawned worker processes, ``threads`` CPUs each, in
    dependency order, on ``workers`` CPUs (default: every core).

    Example::

        with ProcessExecutor(workers=2) as ex:
            outcomes = ex.map(tasks)
    """

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self.workers = workers or os.cpu_count() or 1
        self._pool: ProcessPoolExecutor | None = None
        self._others: set[multiprocessing.process.BaseProcess] = set()

    def _check_fits(self, tasks: Sequence[RunTask]) -> None:
        """Refuse a run that needs more CPUs than the pool has (it would never start)."""
        for task in tasks:
            if (task.threads or 1) > self.workers:
                raise ExecutionError(
                    f"run {task.name} uses {task.threads} threads, but the process executor "
                    f"has {self.workers} CPUs; lower --threads or raise --workers"
                )

    def map(
        self, tasks: Sequence[RunTask], *, progress: bool = True, on_done: OnDone | None = None
    ) -> list[RunOutcome]:
        """Run ``tasks``; their outcomes in task order. ``on_done`` is called here, in the
        driver, as each run finishes (training and evaluation)."""
        check_dependencies(tasks)
        self._check_fits(tasks)
        if not tasks:
            return []
        order = dependency_order(tasks)
        jobs = _Jobs(tasks, [(i, 0) for i in order])
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._others = set(multiprocessing.active_children())
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context)
        bar = tqdm(total=len(tasks), desc="runs", unit="run", disable=not progress)
        try:
            while jobs.waiting or jobs.running:
                self._launch(jobs)
                self._collect(jobs, bar, on_done)
        except BaseException:
            self._stop()
            raise
        finally:
            bar.close()
        return [jobs.finished[i] for i in range(len(tasks))]

    def _launch(self, jobs: _Jobs) -> None:
        """Submit every waiting job that is ready and fits in the free CPUs: training
        first, so that fine-tunes start early, then the evaluations of the runs that took
        longest to train (a proxy of the model's cost: the long evaluations start early
        and the short ones fill the last gaps)."""
        assert self._pool is not None
        for job in sorted(jobs.waiting, key=jobs.priority):
            if jobs.ready(job) and jobs.busy() + jobs.cpus(job) <= self.workers:
                i, phase = job
                task = jobs.tasks[i] if phase == 1 else replace(jobs.tasks[i], evaluation=None)
                jobs.running[self._pool.submit(run_job, task)] = job
                jobs.waiting.remove(job)

    def _collect(self, jobs: _Jobs, bar: tqdm, on_done: OnDone | None) -> None:
        """Wait for a job to finish and record it; a run is finished after its evaluation
        (or its training, without one)."""
        done, _ = wait(list(jobs.running), return_when=FIRST_COMPLETED)
        for future in done:
            i, phase = jobs.running.pop(future)
            task = jobs.tasks[i]
            try:
                outcome = future.result()
            except BrokenProcessPool as err:
                raise ExecutionError(
                    f"a worker process died while running {task.name} (killed, or out of "
                    "memory?); run the command again: finished runs are reused and "
                    "interrupted ones resume"
                ) from err
            except Exception as err:
                raise task_failure(task, err) from err
            if phase == 0:
                jobs.trained[i] = outcome
                if task.evaluation is not None:
                    jobs.waiting.append((i, 1))
                    continue
            else:
                first = jobs.trained[i]
                outcome = replace(
                    outcome, reused=first.reused, seconds=first.seconds + outcome.seconds
                )
            jobs.finished[i] = outcome
            if on_done is not None:
                on_done(outcome)
            bar.update(1)

    def _stop(self) -> None:
        """Stop every worker now (their runs resume from their run directories)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        for process in set(multiprocessing.active_children()) - self._others:
            process.terminate()  # the pool's workers: children started since the pool
        pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Shut the worker processes down."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
