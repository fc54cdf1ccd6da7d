"""Where executor names are chosen: ``local`` (default) and ``ray``.

CLI choices (``--executor``), configs and docs derive from :class:`ExecutorName`.
"""

from __future__ import annotations

from enum import StrEnum

from .base import Executor

__all__ = ["ExecutorName", "create_executor", "list_executors"]


class ExecutorName(StrEnum):
    """The registered executors."""

    local = "local"
    ray = "ray"


_DESCRIPTIONS = {
    ExecutorName.local: "in this process, one run after another (default; nothing to install)",
    ExecutorName.ray: "Ray tasks: a local instance with --workers N, or a cluster via "
    "--address / RAY_ADDRESS (pip install 'robustrank[ray]')",
}


def list_executors() -> dict[str, str]:
    """Executor names and one-line descriptions."""
    return {name.value: _DESCRIPTIONS[name] for name in ExecutorName}


def create_executor(
    name: str | ExecutorName = ExecutorName.local,
    *,
    workers: int | None = None,
    address: str | None = None,
) -> Executor:
    """The executor ``name``.

    Args:
        name: ``"local"`` or ``"ray"``.
        workers: Ray only: CPUs of the local Ray instance it starts (default: all cores).
            Each task takes as many CPUs as its run's ``threads``.
        address: Ray only: join this cluster (``HOST:PORT`` or ``auto``) instead of starting
            a local instance; default ``RAY_ADDRESS`` if set.
    """
    try:
        key = ExecutorName(str(name).strip().lower())
    except ValueError:
        choices = ", ".join(e.value for e in ExecutorName)
        raise ValueError(f"unknown executor {name!r}; choose one of: {choices}") from None
    if key is ExecutorName.local:
        if workers not in (None, 1) or address is not None:
            raise ValueError(
                "--workers and --address apply to the ray executor; add --executor ray"
            )
        from .local import LocalExecutor

        return LocalExecutor()
    from .ray_executor import RayExecutor

    return RayExecutor(workers=workers, address=address)
