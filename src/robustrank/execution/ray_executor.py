"""The Ray executor: every run a Ray task, on a local Ray instance or on a cluster.

Ray (Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI
2018) schedules each :class:`~.tasks.RunTask` as a remote call of :func:`~.tasks.run_task`
that reserves as many CPUs as the run's ``threads``. A fine-tune waits for its natural run
through Ray's own task dependencies (the parent's result is an argument of the child), so
independent runs go in parallel and dependent ones in order without a scheduler of ours.
A run with an evaluation is two Ray tasks, training and then evaluation, and the runs that
start from it wait for its training only: a natural run's (long) strong evaluation goes in
parallel with its fine-tunes.

A task whose worker dies (killed, out of memory, lost node) is retried by Ray up to
``max_retries`` times; the retry resumes the run from its run directory's resume state
(the dead worker's lock on the directory is released by the OS). A run's numbers do not
depend on this executor or on the number of workers: its thread count is in its config.

On a cluster, robustrank must be installed in the same environment on every node, and the
run directories must be on a filesystem mounted at the same path on every node (a worker
that cannot see its run directory fails with an :class:`~.tasks.ExecutionError` saying
so). See the README, "Running on Ray".
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tqdm.auto import tqdm

from .base import OnDone, check_dependencies, dependency_order, task_failure
from .registry import register_executor
from .tasks import ExecutionError, RunOutcome, RunTask, run_task

__all__ = ["RayExecutor", "RAY_MISSING"]

RAY_MISSING = "the ray executor needs Ray: pip install 'robustrank[ray]'"

# a local instance that prints nothing but errors: no dashboard, no worker output
_QUIET: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ExecutionError(RAY_MISSING) from err
    return ray


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail at once when a ``HOST:PORT`` cluster address does not answer (``ray.init``
    would retry for minutes). ``auto`` and ``ray://`` addresses are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ExecutionError(
            f"no Ray cluster answers at {address} ({err}). Start its head node with "
            "`ray start --head --port 6379` and pass --address HEAD:6379 (or set "
            "RAY_ADDRESS), or drop --address to start a local Ray instance"
        ) from None


def _run_remote(task: RunTask, *after: RunOutcome) -> RunOutcome:
    """The body of every training Ray task. ``after`` holds the outcomes of the tasks this
    one waits for: Ray passes them only once those tasks have finished, which orders the
    runs."""
    del after
    return run_task(task, progress=False)


def _evaluate_remote(task: RunTask, trained: RunOutcome) -> RunOutcome:
    """The evaluation Ray task of a run, after its training task (``trained``): the run is
    finished, so :func:`run_task` only reuses it and evaluates (or reads the cache)."""
    out = run_task(task, progress=False)
    return replace(out, reused=trained.reused, seconds=trained.seconds + out.seconds)


def _absolute(task: RunTask) -> RunTask:
    """``task`` with absolute paths: a Ray worker need not share the driver's directory."""
    return replace(
        task,
        run_dir=os.path.abspath(task.run_dir),
        after=tuple(os.path.abspath(d) for d in task.after),
    )


@register_executor(
    "ray",
    description="Ray tasks: a local instance with --workers N, or a cluster via --address / "
    "RAY_ADDRESS (pip install 'robustrank[ray]')",
)
class RayExecutor:
    """Runs tasks as Ray tasks, ``threads`` CPUs each, in dependency order.

    Args:
        workers: CPUs of the local Ray instance this executor starts (default: all
            cores). Ignored when Ray is already initialised by the caller.
        address: join this running cluster (``HOST:PORT`` or ``auto``) instead of starting
            a local instance; default ``RAY_ADDRESS`` if set.
        max_retries: how often Ray reruns a task whose worker died; each retry resumes
            the run from its run directory.

    Ray is started (or joined) at the first :meth:`map`; :meth:`close` shuts down only a
    Ray this executor started, never one the caller initialised.

    Example::

        with RayExecutor(workers=2) as ex:
            outcomes = ex.map(tasks)
    """

    name = "ray"

    def __init__(
        self, workers: int | None = None, address: str | None = None, max_retries: int = 3
    ) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {max_retries}")
        self._ray = _import_ray()
        self.workers, self.max_retries = workers, max_retries
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        if workers is not None and self.address is not None:
            raise ValueError(
                f"--workers {workers} sizes a local Ray instance, but --address/RAY_ADDRESS "
                f"({self.address}) joins a cluster, which has its own workers; drop --workers "
                "or unset RAY_ADDRESS"
            )
        self._started = False
        self._remote: Any = None
        self._evaluator: Any = None

    # ------------------------------------------------------------------ Ray itself

    def _ensure_ray(self) -> Any:
        """Ray, initialised: the caller's, the cluster at ``address``, or a new local one."""
        ray = self._ray
        if not ray.is_initialized():
            if self.address is not None:
                _check_reachable(self.address)
                try:
                    ray.init(address=self.address, **_QUIET)
                except (ConnectionError, RuntimeError) as err:
                    raise ExecutionError(
                        f"cannot join the Ray cluster at {self.address}: {err}. Start it with "
                        "`ray start --head --port 6379` and pass --address HEAD:6379"
                    ) from err
            else:
                cpus = self.workers or os.cpu_count() or 1
                # Ray nices its workers to 15 by default, so runs starve next to any other
                # busy process on the machine; ours are the work, so they run at nice 0
                # (as Ray's own job submission does). An explicit setting is kept.
                os.environ.setdefault("RAY_worker_niceness", "0")
                ray.init(num_cpus=cpus, include_dashboard=False, **_QUIET)
            self._started = True
        if self._remote is None:
            self._remote = ray.remote(_run_remote)
            self._evaluator = ray.remote(_evaluate_remote)
        return ray

    def _check_fits(self, ray: Any, tasks: Sequence[RunTask]) -> None:
        """Refuse a run that needs more CPUs than any node has (Ray would wait forever).

        Skipped on a cluster joined by address, which may add nodes on demand.
        """
        if self.address is not None:
            return
        nodes = [n for n in ray.nodes() if n.get("Alive", True)]
        cpus = max((n.get("Resources", {}).get("CPU", 0.0) for n in nodes), default=0.0)
        for task in tasks:
            need = task.threads or 1
            if need > cpus:
                raise ExecutionError(
                    f"run {task.name} uses {need} threads, so it needs {need} CPUs, but the "
                    f"largest Ray node has {cpus:g}; lower --threads or raise --workers"
                )

    # ------------------------------------------------------------------ map

    def map(
        self, tasks: Sequence[RunTask], *, progress: bool = True, on_done: OnDone | None = None
    ) -> list[RunOutcome]:
        """Run ``tasks`` as Ray tasks; their outcomes in task order.

        ``on_done`` is called here, in the driver, as each task finishes. The first failed
        task raises its worker's error naming the run (see
        :func:`~.base.task_failure`) and cancels the tasks still pending; so does
        Ctrl-C.
        """
        given = list(tasks)
        tasks = [_absolute(t) for t in given]
        check_dependencies(tasks)
        order = dependency_order(tasks)
        if not tasks:
            return []
        ray = self._ensure_ray()
        self._check_fits(ray, tasks)
        refs, submitted = self._submit(tasks, order)
        try:
            outcomes = self._collect(ray, tasks, refs, order, progress, on_done)
        except BaseException:
            self._cancel(ray, submitted)  # every task not yet finished, training ones too
            raise
        # report the run directories as the caller gave them, like the local executor
        return [replace(outcomes[i], run_dir=given[i].run_dir) for i in range(len(tasks))]

    def _submit(self, tasks: Sequence[RunTask], order: list[int]) -> tuple[list[Any], list[Any]]:
        """Submit every task, parents first; a task's parents' training refs are its
        arguments. Returns each task's final ref (its evaluation's, else its training's),
        and every ref submitted."""
        trained: dict[str, Any] = {}
        refs: list[Any] = [None] * len(tasks)
        submitted: list[Any] = []
        for i in order:
            task = tasks[i]
            parents = [trained[d] for d in task.after if d in trained]
            options = {
                "num_cpus": task.threads or 1,
                "max_retries": self.max_retries,
                "retry_exceptions": False,  # retry dead workers, not errors of the run itself
            }
            train = self._remote.options(**options, name=f"robustrank:{task.name}")
            refs[i] = trained[task.run_dir] = train.remote(replace(task, evaluation=None), *parents)
            submitted.append(refs[i])
            if task.evaluation is not None:
                evaluate = self._evaluator.options(**options, name=f"robustrank:{task.name}:eval")
                refs[i] = evaluate.remote(task, refs[i])
                submitted.append(refs[i])
        return refs, submitted

    def _collect(
        self,
        ray: Any,
        tasks: Sequence[RunTask],
        refs: list[Any],
        order: list[int],
        progress: bool,
        on_done: OnDone | None,
    ) -> dict[int, RunOutcome]:
        """Wait for the tasks in completion order (:meth:`map` cancels the rest on a failure
        or Ctrl-C)."""
        index = {ref: i for i, ref in enumerate(refs)}
        pending = [refs[i] for i in order]  # parents before children: a parent's error wins
        outcomes: dict[int, RunOutcome] = {}
        bar = tqdm(total=len(tasks), desc="runs", unit="run", disable=not progress)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    i = index[ref]
                    outcomes[i] = self._result(ray, ref, tasks[i])
                    if on_done is not None:
                        on_done(outcomes[i])
                    bar.set_postfix_str(tasks[i].name)
                    bar.update(1)
        finally:
            bar.close()
        return outcomes

    def _result(self, ray: Any, ref: Any, task: RunTask) -> RunOutcome:
        """The task's outcome, or its worker's own error (not Ray's wrapper) naming the run."""
        from ray import exceptions as rx

        try:
            return ray.get(ref)
        except rx.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, BaseException):
                raise task_failure(task, cause) from cause
            raise ExecutionError(f"run {task.name} in {task.run_dir}: {err}") from err
        except (rx.WorkerCrashedError, rx.OutOfMemoryError, rx.NodeDiedError) as err:
            raise ExecutionError(
                f"run {task.name} in {task.run_dir}: its Ray worker died "
                f"{self.max_retries + 1} times (last: {type(err).__name__}). The run directory "
                "keeps its resume state; run the command again to resume it"
            ) from err
        except rx.RayError as err:
            raise ExecutionError(f"run {task.name} in {task.run_dir}: Ray: {err}") from err

    @staticmethod
    def _cancel(ray: Any, pending: Sequence[Any]) -> None:
        """Cancel unfinished tasks (killing their workers; their runs can be resumed)."""
        for ref in pending:
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished or gone: nothing to cancel
                pass

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Shut down the local Ray instance (or cluster connection) this executor started;
        a Ray initialised by the caller stays up."""
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()
        self._started = False
        self._remote = self._evaluator = None

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
