"""The executor interface: run a batch of :class:`~.tasks.RunTask` in dependency order.

Every multi-run command (``reproduce``, ``sweep``) hands its runs to an executor and gets
:class:`~.tasks.RunOutcome` back in task order, whichever executor ran them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from .tasks import ExecutionError, RunOutcome, RunTask

__all__ = ["Executor", "OnDone", "check_dependencies", "dependency_order", "task_failure"]

OnDone = Callable[[RunOutcome], None]


@runtime_checkable
class Executor(Protocol):
    """Runs tasks; ``map`` returns their outcomes in task order.

    ``on_done(outcome)`` is called in the driver as each task finishes (in completion
    order), e.g. to rewrite a results table. An executor is a context manager: leaving it
    releases what it started (a local Ray instance, say).
    """

    name: str

    def map(
        self, tasks: Sequence[RunTask], *, progress: bool = True, on_done: OnDone | None = None
    ) -> list[RunOutcome]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, *exc: object) -> None: ...


def check_dependencies(tasks: Sequence[RunTask]) -> None:
    """Each run directory appears once, and every ``after`` names a task of the batch or a
    finished run on disk."""
    from pathlib import Path

    from ..training.rundir import DONE_FILE

    seen: set[str] = set()
    for task in tasks:
        if task.run_dir in seen:
            raise ExecutionError(f"two tasks train into the same run directory {task.run_dir}")
        seen.add(task.run_dir)
    for task in tasks:
        for dep in task.after:
            if dep not in seen and not (Path(dep) / DONE_FILE).exists():
                raise ExecutionError(
                    f"task {task.name} waits for {dep}, which is neither a task of this batch "
                    "nor a finished run; add that run as a task"
                )


def dependency_order(tasks: Sequence[RunTask]) -> list[int]:
    """Indices of ``tasks`` so that every task comes after the tasks it waits for (stable:
    otherwise in the given order). Raises on a cycle."""
    index = {t.run_dir: i for i, t in enumerate(tasks)}
    order: list[int] = []
    state: dict[int, str] = {}

    def visit(i: int, stack: tuple[str, ...]) -> None:
        if state.get(i) == "done":
            return
        if state.get(i) == "active":
            raise ExecutionError(f"task dependencies form a cycle: {' -> '.join(stack)}")
        state[i] = "active"
        for dep in tasks[i].after:
            if dep in index:
                visit(index[dep], (*stack, dep))
        state[i] = "done"
        order.append(i)

    for i in range(len(tasks)):
        visit(i, (tasks[i].run_dir,))
    return order


def task_failure(task: RunTask, cause: BaseException) -> Exception:
    """``cause``, the error a task raised, naming the run: the same type (so callers can
    still catch e.g. ``RunError``) and message, prefixed with ``run NAME in RUN_DIR:``.

    Every executor raises this, so the message names the failed run whichever ran it. A
    type that cannot be rebuilt from one message becomes a ``ValueError`` (if it was one)
    or an :class:`~.tasks.ExecutionError`.
    """
    message = f"run {task.name} in {task.run_dir}: {cause}"
    try:
        err = type(cause)(message)
        if isinstance(err, Exception) and str(err) == message:
            return err
    except Exception:  # noqa: BLE001 - any constructor that does not take one message
        pass
    return ValueError(message) if isinstance(cause, ValueError) else ExecutionError(message)
