"""The executor registry: ``local`` (default) and ``ray``, each registered where it is
defined (:mod:`.local`, :mod:`.ray_executor`); this module imports neither.

CLI choices and help (``--executor``) and docs derive from :func:`list_executors`.

Example::

    @register_executor("threads", description="a thread pool")
    class ThreadExecutor:
        def __init__(self, workers: int | None = None) -> None: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..registry import Registry, keyword_options, summary_line
from .base import Executor

__all__ = [
    "ExecutorEntry",
    "REGISTRY",
    "register_executor",
    "get_executor",
    "list_executors",
    "create_executor",
]

F = TypeVar("F", bound=Callable[..., Executor])


@dataclass(frozen=True)
class ExecutorEntry:
    """A registered executor: ``factory(**options) -> Executor`` and one line for listings.

    ``create_executor`` passes ``workers`` and ``address`` only to factories that take them.
    """

    name: str
    factory: Callable[..., Executor]
    description: str = ""

    @property
    def options(self) -> tuple[str, ...]:
        """The keyword options of the factory (e.g. ``workers``, ``address``)."""
        return tuple(keyword_options(self.factory))


#: Every executor by name (case-insensitive).
REGISTRY: Registry[ExecutorEntry] = Registry(
    "executor", normalise=lambda name: str(name).strip().lower()
)


def register_executor(
    name: str, factory: F | None = None, *, description: str = "", overwrite: bool = False
) -> Any:
    """Register an executor class (or factory) under ``name``; usable as a decorator.

    ``description`` (one line for ``--executor`` help) defaults to the docstring's first line.
    """

    def entry(fn: F) -> ExecutorEntry:
        return ExecutorEntry(REGISTRY.key(name), fn, description or summary_line(fn))

    return REGISTRY.register(name, factory, overwrite=overwrite, build=entry)


def get_executor(name: str) -> ExecutorEntry:
    """The :class:`ExecutorEntry` registered as ``name`` (case-insensitive)."""
    return REGISTRY.get(name)


def list_executors() -> dict[str, str]:
    """Executor names and one-line descriptions, in registration order."""
    return {name: entry.description for name, entry in REGISTRY.items()}


def create_executor(
    name: str = "local",
    *,
    workers: int | None = None,
    address: str | None = None,
) -> Executor:
    """The executor ``name``.

    Args:
        name: ``"local"``, ``"ray"`` or another registered name.
        workers: Ray only: CPUs of the local Ray instance it starts (default: all cores).
            Each task takes as many CPUs as its run's ``threads``. An executor without
            this option runs one task at a time, so ``workers=1`` is accepted by all.
        address: Ray only: join this cluster (``HOST:PORT`` or ``auto``) instead of starting
            a local instance; default ``RAY_ADDRESS`` if set.
    """
    entry = get_executor(name)
    given = {"workers": workers, "address": address}
    given = {k: v for k, v in given.items() if v is not None}
    if "workers" not in entry.options and given.get("workers") == 1:
        del given["workers"]
    bad = [k for k in given if k not in entry.options]
    if bad:
        takers = [n for n, e in REGISTRY.items() if set(bad) <= set(e.options)]
        fix = f"; add --executor {takers[0]}" if takers else ""
        verb = "applies" if len(bad) == 1 else "apply"
        raise ValueError(
            f"{' and '.join('--' + k for k in bad)} {verb} to the "
            f"{' or '.join(takers) or 'other'} executor, not {entry.name}{fix}"
        )
    return entry.factory(**given)
