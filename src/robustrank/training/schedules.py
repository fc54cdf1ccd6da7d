"""Learning-rate schedules, chosen by name in a training config (``schedule``).

A schedule is a function ``fn(lr, epoch, epochs, **options) -> float``: the learning rate
during ``epoch`` (1-based) of a run of ``epochs`` epochs whose base rate is ``lr``. Its
options are keyword-only parameters; a config sets them beside the name::

    schedule: cosine                                  # a name alone
    schedule: {name: linear-warmup, warmup_epochs: 2, decay: cosine}

Options named like a top-level config key (``step``'s ``lr_step_epochs`` and ``lr_gamma``)
are set at the top level, as configs always did. Built in: ``constant`` (the paper's),
``cosine``, ``step`` and ``linear-warmup``; each registers where it is defined, below.

Example::

    >>> @register_schedule("halving", description="halve the rate every epoch")
    ... def halving(lr: float, epoch: int, epochs: int) -> float:
    ...     return lr * 0.5 ** (epoch - 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..registry import Registry, check_keyword_options, keyword_options, summary_line

__all__ = [
    "Schedule",
    "ScheduleEntry",
    "REGISTRY",
    "register_schedule",
    "get_schedule",
    "list_schedules",
]

Schedule = Callable[..., float]


@dataclass(frozen=True)
class ScheduleEntry:
    """A registered schedule: ``fn(lr, epoch, epochs, **options)`` and one line for listings."""

    name: str
    fn: Schedule
    description: str = ""

    @property
    def options(self) -> dict[str, Any]:
        """The options ``fn`` takes after ``(lr, epoch, epochs)``, with their defaults
        (``inspect.Parameter.empty`` when required)."""
        return keyword_options(self.fn, skip=3)

    def check_options(self, options: Mapping[str, Any]) -> None:
        """``ValueError`` naming the options ``fn`` does not take and the ones it does."""
        check_keyword_options(f"schedule {self.name!r}", options, self.options)

    def rates(self, lr: float, epochs: int, options: Mapping[str, Any]) -> list[float]:
        """The rate of every epoch ``1..epochs``; ``ValueError`` if one is not a finite
        number >= 0 (or the options are refused)."""
        rates = [float(self.fn(lr, e, epochs, **options)) for e in range(1, epochs + 1)]
        bad = [(e, r) for e, r in enumerate(rates, 1) if not (math.isfinite(r) and r >= 0)]
        if bad:
            raise ValueError(
                f"schedule {self.name!r} gives the rate {bad[0][1]} at epoch {bad[0][0]}"
            )
        return rates

    def depends_on_epochs(self, lr: float, epochs: int, options: Mapping[str, Any]) -> bool:
        """Whether the rates of a run of ``k <= epochs`` epochs change when the run is
        longer (``cosine``): then the first ``k`` epochs of a long run are not a short run."""
        longer = self.rates(lr, epochs + 1, options)
        return any(self.rates(lr, k, options) != longer[:k] for k in range(1, epochs + 1))


#: Every schedule by name.
REGISTRY: Registry[ScheduleEntry] = Registry(
    "schedule", hint="register your own with robustrank.training.register_schedule"
)


def register_schedule(
    name: str, fn: Schedule | None = None, *, description: str = "", overwrite: bool = False
) -> Any:
    """Register ``fn(lr, epoch, epochs, **options) -> float`` under ``name``; usable as a
    decorator. ``description`` defaults to the first line of the docstring."""

    def entry(f: Schedule) -> ScheduleEntry:
        if not callable(f):
            raise TypeError(f"schedule {name!r} must be callable, got {f!r}")
        return ScheduleEntry(name, f, description or summary_line(f))

    return REGISTRY.register(name, fn, overwrite=overwrite, build=entry)


def get_schedule(name: str) -> ScheduleEntry:
    """The :class:`ScheduleEntry` registered as ``name``."""
    return REGISTRY.get(name)


def list_schedules() -> list[str]:
    """The registered schedule names, in registration order (built-ins first)."""
    return REGISTRY.names()


# --------------------------------------------------------------------------- built-ins


@register_schedule("constant", description="the base rate at every epoch (the paper's)")
def constant(lr: float, epoch: int, epochs: int) -> float:
    """``lr`` at every epoch."""
    return lr


@register_schedule("cosine", description="cosine decay from the base rate towards 0 over the run")
def cosine(lr: float, epoch: int, epochs: int) -> float:
    """``lr * (1 + cos(pi * (epoch - 1) / epochs)) / 2``."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))


@register_schedule(
    "step", description="times lr_gamma every lr_step_epochs epochs (both top-level keys)"
)
def step(lr: float, epoch: int, epochs: int, *, lr_step_epochs: int, lr_gamma: float) -> float:
    """``lr * lr_gamma ** ((epoch - 1) // lr_step_epochs)``."""
    return lr * lr_gamma ** ((epoch - 1) // lr_step_epochs)


@register_schedule(
    "linear-warmup",
    description="rises linearly over warmup_epochs, then constant (or decay: cosine)",
)
def linear_warmup(
    lr: float, epoch: int, epochs: int, *, warmup_epochs: int = 1, decay: str = "constant"
) -> float:
    """``lr * epoch / (warmup_epochs + 1)`` during the first ``warmup_epochs`` epochs, then
    ``lr`` (``decay: constant``) or a cosine from ``lr`` over the remaining epochs
    (``decay: cosine``)."""
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 1:
        raise ValueError(f"warmup_epochs must be an integer >= 1, got {warmup_epochs!r}")
    if decay not in ("constant", "cosine"):
        raise ValueError(f"decay must be 'constant' or 'cosine', got {decay!r}")
    if epoch <= warmup_epochs:
        return lr * epoch / (warmup_epochs + 1)
    if decay == "constant":
        return lr
    return cosine(lr, epoch - warmup_epochs, epochs - warmup_epochs)
