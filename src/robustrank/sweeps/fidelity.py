"""Multi-fidelity sweeps: judge trials by a cheap signal at rungs, evaluate only survivors.

A spec's ``fidelity:`` section (:class:`Fidelity`) pauses every trial at the end of each
rung epoch, measures a cheap signal there (clean accuracy, and APGD-CE's robust accuracy
on 200 test inputs by default: :class:`~robustrank.evaluation.SignalSpec`) and stops the
combinations that cannot reach the top of the ranking or the Pareto front. Survivors train
to the end and get the full evaluation (AutoAttack on 1000 inputs, say), so most of the
cost is spent on the trials that can matter.

The decisions are those of synchronous successive halving (Jamieson & Talwalkar, 2016;
the rung schedule of Hyperband and ASHA, Li et al., 2018 and 2020) made Pareto-aware: at
each rung, over the combinations still running (the trials of one combination differ only
in ``seed`` and are judged together, by their mean signal),

* the ``ceil(n / eta)`` most robust combinations (by robust signal, then clean) go on, and
* so does every combination that no other *dominates*: ``d`` dominates ``c`` when it is at
  least ``robust_margin`` more robust and at most ``clean_tolerance`` less accurate on
  clean inputs (and differs from it), i.e. ``c`` cannot reach the front within those
  tolerances (epsilon-dominance, Laumanns et al., 2002; plain Pareto dominance at 0, 0).

A rung waits for all its trials before judging them, so the decisions depend only on the
signals: the same on every executor and worker count, and the same when a killed sweep is
run again (each rung's signal is stored in the run directory). A stopped trial keeps its
paused run directory; its row says ``stopped`` with the epoch and the signal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..evaluation import SignalSpec

__all__ = ["Fidelity", "RungVerdict", "judge_rung", "PRUNERS"]

#: The Optuna pruners ``fidelity.pruner`` may name (strategy ``optuna``).
PRUNERS = ("median", "successive-halving", "hyperband")


class Fidelity(BaseModel):
    """The ``fidelity:`` section of a sweep spec (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rungs: Annotated[
        list[Annotated[int, Field(ge=1)]],
        Field(
            min_length=1,
            description="epochs at which trials are judged, ascending, at most the trials' "
            "epochs (a rung at the last epoch: judged fully trained, before the objective)",
        ),
    ]
    eta: Annotated[float, Field(gt=1.0, description="keep the top 1/eta at each rung")] = 3.0
    signal: SignalSpec | None = Field(
        None, description="the cheap signal; default APGD-CE on 200 inputs at the objective's eps"
    )
    clean_tolerance: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    robust_margin: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    pruner: Literal[PRUNERS] | None = Field(  # type: ignore[valid-type]
        None, description="strategy optuna: the Optuna pruner judging the robust signal"
    )

    @field_validator("rungs")
    @classmethod
    def _ascending(cls, rungs: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(rungs, rungs[1:])):
            raise ValueError(f"rungs must be strictly ascending epochs, got {rungs}; sort them")
        return rungs

    def signal_spec(self, eps: float, seed: int) -> SignalSpec:
        """The signal: ``signal`` if given, else APGD-CE on 200 inputs at ``eps`` with the
        objective's subset ``seed``."""
        return self.signal if self.signal is not None else SignalSpec(eps=eps, seed=seed)


@dataclass(frozen=True)
class RungVerdict:
    """One combination at one rung: its mean signal, whether it goes on, and why."""

    key: str
    clean: float
    robust: float
    kept: bool
    reason: str


def _dominator(
    key: str,
    signals: Mapping[str, tuple[float, float]],
    clean_tolerance: float,
    robust_margin: float,
) -> str | None:
    """The most robust combination that dominates ``key`` within the tolerances, or None."""
    clean, robust = signals[key]
    best: str | None = None
    for other, (c, r) in signals.items():
        beats = r >= robust + robust_margin and c >= clean - clean_tolerance
        if other != key and beats and (r > robust or c > clean):
            if best is None or (r, c) > (signals[best][1], signals[best][0]):
                best = other
    return best


def judge_rung(
    signals: Mapping[str, tuple[float, float]],
    eta: float,
    clean_tolerance: float = 0.0,
    robust_margin: float = 0.0,
) -> dict[str, RungVerdict]:
    """Which combinations go on from a rung: ``signals`` maps each combination to its mean
    ``(clean, robust)`` signal. The ``ceil(n / eta)`` most robust (ties: more clean, then
    key order) and every combination no other dominates go on (module docstring)."""
    order = sorted(signals, key=lambda k: (-signals[k][1], -signals[k][0], k))
    top = set(order[: math.ceil(len(order) / eta)])
    out = {}
    for key in order:
        clean, robust = signals[key]
        dominator = _dominator(key, signals, clean_tolerance, robust_margin)
        if key in top:
            kept, reason = True, f"top 1/{eta:g} by robust signal"
        elif dominator is None:
            kept, reason = True, "on the signal's Pareto front"
        else:
            c, r = signals[dominator]
            kept = False
            reason = f"dominated by {dominator} (robust {r - robust:+.4f}, clean {c - clean:+.4f})"
        out[key] = RungVerdict(key, clean, robust, kept, reason)
    return out
