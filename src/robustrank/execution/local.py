"""The default executor: every task in this process, one after another."""

from __future__ import annotations

from collections.abc import Sequence

from tqdm.auto import tqdm

from .base import OnDone, check_dependencies, dependency_order, task_failure
from .registry import register_executor
from .tasks import RunOutcome, RunTask, run_task

__all__ = ["LocalExecutor"]


@register_executor(
    "local", description="in this process, one run after another (nothing to install)"
)
class LocalExecutor:
    """Runs tasks in this process in dependency order; nothing extra to install.

    Example::

        with LocalExecutor() as ex:
            outcomes = ex.map(tasks)
    """

    name = "local"

    def __init__(self, *, progress_per_run: bool = False) -> None:
        self.progress_per_run = progress_per_run

    def map(
        self, tasks: Sequence[RunTask], *, progress: bool = True, on_done: OnDone | None = None
    ) -> list[RunOutcome]:
        """Run ``tasks``; their outcomes in task order."""
        check_dependencies(tasks)
        outcomes: dict[int, RunOutcome] = {}
        bar = tqdm(total=len(tasks), desc="runs", unit="run", disable=not progress)
        try:
            for i in dependency_order(tasks):
                bar.set_postfix_str(tasks[i].name)
                try:
                    outcome = run_task(tasks[i], progress=progress and self.progress_per_run)
                except Exception as err:
                    raise task_failure(tasks[i], err) from err
                outcomes[i] = outcome
                if on_done is not None:
                    on_done(outcome)
                bar.update(1)
        finally:
            bar.close()
        return [outcomes[i] for i in range(len(tasks))]

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
