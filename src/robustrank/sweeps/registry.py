"""The sweep-strategy registry (the spec's ``strategy`` key): ``grid``, ``random`` and
``optuna``, each registered where it is defined (:mod:`.strategies`); this module imports
none of them.

A strategy either *plans* every trial up front (``plan(spec) -> [{dotted key: value}]``)
or is *adaptive*: ``driver(spec, out_dir)`` returns an object that asks for trials as
results come in (``completed()``, ``pruned()``, ``unfinished()``, ``ask(k)``,
``tell(number, clean, robust)``, and for ``fidelity.pruner`` ``report(number, epoch,
robust) -> prune?``, ``prune(number)``, ``pruned_at(number)``; see
:class:`~robustrank.sweeps.strategies.OptunaDriver`). A *multi-fidelity* strategy
(``halving``) plans its candidates and judges them at the spec's rungs
(:mod:`~robustrank.sweeps.fidelity`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..registry import Registry, summary_line

__all__ = [
    "Strategy",
    "REGISTRY",
    "register_strategy",
    "get_strategy",
    "list_strategies",
    "planned_trials",
    "count_trials",
]


class SpecLike(Protocol):
    """What the registry reads of a :class:`~robustrank.sweeps.spec.SweepSpec` (this
    module does not import it: the spec imports the registry to validate its strategy)."""

    strategy: str
    n_trials: int | None


Planner = Callable[[Any], list[dict[str, Any]]]


def _n_trials(spec: SpecLike) -> int:
    return spec.n_trials or 0


def _n_trials_text(spec: SpecLike) -> tuple[str, str]:
    return f"n_trials of strategy {spec.strategy}", "lower n_trials"


@dataclass(frozen=True)
class Strategy:
    """A registered search strategy.

    Attributes:
        name: the spec's ``strategy`` value.
        plan: ``plan(spec)``: every trial's values in order; None for an adaptive strategy.
        driver: ``driver(spec, out_dir)``: the ask/tell object of an adaptive strategy.
        description: one line for ``robustrank sweep list``.
        needs_n_trials: whether the spec must give ``n_trials``.
        count: ``count(spec)``: how many trials, without building them (default ``n_trials``).
        check: ``check(spec)`` raises ``ValueError`` for a spec this strategy cannot run.
        count_text: ``count_text(spec) -> (what the count is, how to lower it)`` for the
            "too many trials" message.
        multi_fidelity: the planned trials are judged at the spec's ``fidelity`` rungs and
            only survivors train to the end (:mod:`~robustrank.sweeps.fidelity`).
    """

    name: str
    plan: Planner | None
    driver: Callable[[Any, Path], Any] | None
    description: str = ""
    needs_n_trials: bool = True
    count: Callable[[Any], int] = _n_trials
    check: Callable[[Any], None] | None = None
    count_text: Callable[[Any], tuple[str, str]] = _n_trials_text
    multi_fidelity: bool = False

    @property
    def adaptive(self) -> bool:
        """Whether trials are asked for as results come in (no plan)."""
        return self.plan is None


#: Every strategy by name.
REGISTRY: Registry[Strategy] = Registry("strategy")


def register_strategy(
    name: str,
    obj: Any = None,
    *,
    adaptive: bool = False,
    description: str = "",
    overwrite: bool = False,
    **fields: Any,
) -> Any:
    """Register a planner ``plan(spec)`` (or, with ``adaptive=True``, a driver factory
    ``driver(spec, out_dir)``) under ``name``; usable as a decorator.

    ``fields`` are the other :class:`Strategy` fields (``needs_n_trials``, ``count``,
    ``check``, ``count_text``, ``multi_fidelity``); ``description`` defaults to the
    docstring's first line.
    """

    def entry(fn: Any) -> Strategy:
        plan, driver = (None, fn) if adaptive else (fn, None)
        return Strategy(name, plan, driver, description or summary_line(fn), **fields)

    return REGISTRY.register(name, obj, overwrite=overwrite, build=entry)


def get_strategy(name: str) -> Strategy:
    """The :class:`Strategy` registered as ``name``."""
    return REGISTRY.get(name)


def list_strategies() -> dict[str, str]:
    """Strategy names and one-line descriptions, in registration order."""
    return {name: entry.description for name, entry in REGISTRY.items()}


def planned_trials(spec: SpecLike) -> list[dict[str, Any]] | None:
    """The trials of a planning strategy in order; None for an adaptive one (``optuna``)."""
    plan = get_strategy(spec.strategy).plan
    return None if plan is None else plan(spec)


def count_trials(spec: SpecLike) -> int:
    """How many trials ``spec`` runs, from the sizes of its space (``grid``: the product of
    the keys' grid points) or its ``n_trials``; no trial is built."""
    return get_strategy(spec.strategy).count(spec)
