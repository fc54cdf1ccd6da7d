"""Execution of many runs: one interface, a local executor, a process pool and Ray.

Every multi-run command (``reproduce``, ``sweep``) builds :class:`RunTask` objects (a run
directory, its config, what it waits for, its evaluation) and hands them to an executor
from :func:`create_executor`. A run's numbers do not depend on the executor: its thread
count is part of its config, and all state lives in its run directory, so a task that is
retried (a dead Ray worker) or re-run (an interrupted sweep) resumes where it stopped.
"""

from .base import Executor, OnDone, check_dependencies, dependency_order
from .local import LocalExecutor
from .processes import ProcessExecutor
from .ray_executor import RayExecutor
from .registry import REGISTRY as _EXECUTORS
from .registry import (
    ExecutorEntry,
    create_executor,
    get_executor,
    list_executors,
    register_executor,
)
from .tasks import EVALUATION_FILE, ExecutionError, RunOutcome, RunTask, run_task

#: The executor names registered on import (``local``, ``processes``, ``ray``) as a ``StrEnum``, for
#: command-line choices; :func:`create_executor` accepts any registered name.
ExecutorName = _EXECUTORS.choices("ExecutorName", module=__name__)

__all__ = [
    "Executor",
    "ExecutorEntry",
    "ExecutorName",
    "ExecutionError",
    "LocalExecutor",
    "ProcessExecutor",
    "RayExecutor",
    "OnDone",
    "RunOutcome",
    "RunTask",
    "EVALUATION_FILE",
    "check_dependencies",
    "create_executor",
    "dependency_order",
    "get_executor",
    "list_executors",
    "register_executor",
    "run_task",
]
