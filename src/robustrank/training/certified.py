"""Certified training objectives: the robust cross-entropy on bound-propagation margins.

Both minimise ``kappa_t * CE(f(x), y) + (1 - kappa_t) * CE(-m(x, eps_t), y)``, ``m`` being
lower bounds ``(N, C)`` of ``z_y - z_j`` over the l_inf ball of radius ``eps_t`` around
``x`` in [0, 1] (0 in the label's column), so ``CE(-m, y)`` bounds the worst-case CE
(Wong & Kolter, 2018):

* ``ibp``: ``m`` from interval bound propagation (Gowal et al., "On the Effectiveness of
  Interval Bound Propagation for Training Verifiably Robust Models", 2018);
* ``crown-ibp``: ``m = beta_t * m_CROWN-IBP + (1 - beta_t) * m_IBP`` (Zhang et al.,
  "Towards Stable and Efficient Training of Verifiably Robust Neural Networks", ICLR 2020).

The schedules (:class:`RampSchedule`) are functions of the optimiser step, so a resumed run
continues identically: natural training for ``warmup_epochs`` (``eps_t = 0``,
``kappa_t = 1``), then over ``ramp_epochs`` a linear ramp ``t`` from 0 to 1 with
``eps_t = t * eps``, ``kappa_t = 1 - t * (1 - kappa)`` and ``beta_t = 1 - t``; afterwards
``eps``, ``kappa`` and ``beta = 0``. The logits returned (the training accuracy) are the
clean ``f(x)``. The bounds are computed in eval mode (batch norm on running statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._modes import eval_mode
from ..attacks.base import check_eps
from .objectives import Adversary, Objective, ObjectiveOutput, Progress, register_objective

__all__ = [
    "RampSchedule",
    "ScheduleValues",
    "IBPTraining",
    "CrownIBPTraining",
    "robust_ce",
    "DEFAULT_KAPPA",
]

#: The final weight of the natural CE (Gowal et al., 2018).
DEFAULT_KAPPA = 0.5


def _check_number(name: str, value: Any, *, low: float, high: float, fix: str) -> float:
    ok = not isinstance(value, bool) and isinstance(value, int | float)
    if not ok or not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}: {fix}")
    return float(value)


class ScheduleValues(NamedTuple):
    """The schedules at one step: the bound's radius, the natural CE's weight and the
    CROWN-IBP share of the bound."""

    eps: float
    kappa: float
    beta: float


@dataclass(frozen=True)
class RampSchedule:
    """Warm-up, then a linear ramp (Gowal et al., 2018; Zhang et al., 2020), in epochs
    (fractions allowed, counted in optimiser steps).

    ``ramp_epochs = None`` ramps over half the steps left after the warm-up.
    """

    warmup_epochs: float = 0.0
    ramp_epochs: float | None = None

    def __post_init__(self) -> None:
        _check_number(
            "warmup_epochs",
            self.warmup_epochs,
            low=0.0,
            high=math.inf,
            fix="set objective.warmup_epochs to 0 (no warm-up) or a positive number of epochs",
        )
        if self.ramp_epochs is not None:
            _check_number(
                "ramp_epochs",
                self.ramp_epochs,
                low=0.0,
                high=math.inf,
                fix="set objective.ramp_epochs to a number of epochs >= 0 (0: no ramp), "
                "or leave it out (half the run after the warm-up)",
            )

    def fraction(self, progress: Progress | None) -> float:
        """``t`` in [0, 1] before the optimiser step ``progress`` (1 without progress)."""
        if progress is None:
            return 1.0
        per_epoch = progress.steps_per_epoch
        warmup = round(self.warmup_epochs * per_epoch)
        if self.ramp_epochs is None:
            ramp = max(progress.total_steps - warmup, 0) // 2
        else:
            ramp = round(self.ramp_epochs * per_epoch)
        done = progress.global_step - warmup
        if done < 0:
            return 0.0
        return 1.0 if ramp <= 0 else min(done / ramp, 1.0)


def robust_ce(clean: Tensor, margins: Tensor, y: Tensor, kappa: float) -> Tensor:
    """``kappa * CE(clean, y) + (1 - kappa) * CE(-margins, y)`` (Gowal et al., 2018,
    Eq. 12); ``margins`` are lower bounds of ``z_y - z_j`` (0 in the label's column)."""
    natural = F.cross_entropy(clean, y)
    return kappa * natural + (1.0 - kappa) * F.cross_entropy(-margins, y)


@register_objective(
    "ibp",
    description="kappa * CE(x) + (1 - kappa) * CE(-IBP margins at eps_t) (Gowal et al., 2018)",
    needs_attack=False,
    certified=True,
)
class IBPTraining(Objective):
    """IBP training (Gowal et al., 2018): :func:`robust_ce` on interval bounds at the
    scheduled ``eps_t`` and ``kappa_t`` (:class:`RampSchedule`).

    ``eps`` is ``adversarial.eps``; ``kappa`` the final natural weight (default 0.5).
    """

    def __init__(
        self,
        eps: float,
        kappa: float = DEFAULT_KAPPA,
        warmup_epochs: float = 0.0,
        ramp_epochs: float | None = None,
    ) -> None:
        self.eps = check_eps(eps)
        self.kappa = _check_number(
            "kappa",
            kappa,
            low=0.0,
            high=1.0,
            fix="set objective.kappa to the final weight of the natural CE (Gowal et al.: 0.5)",
        )
        self.ramp = RampSchedule(warmup_epochs, ramp_epochs)

    def schedule(self, progress: Progress | None) -> ScheduleValues:
        """``eps_t``, ``kappa_t`` and ``beta_t`` before the step ``progress``."""
        t = self.ramp.fraction(progress)
        return ScheduleValues(t * self.eps, 1.0 - t * (1.0 - self.kappa), 1.0 - t)

    def margins(self, model: nn.Module, x: Tensor, y: Tensor, values: ScheduleValues) -> Tensor:
        """IBP lower bounds ``(N, C)`` of ``z_y - z_j`` at ``values.eps`` (eval mode)."""
        from ..evaluation.certification import build_graph, margin_spec
        from ..evaluation.certification.ibp import ibp

        with eval_mode(model):
            graph = build_graph(model, x.shape[1:], x.device)
            spec = margin_spec(y, graph.num_classes, x.dtype)
            return ibp(graph, x, values.eps, spec)

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, adversary: Adversary) -> ObjectiveOutput:
        clean = model(x)
        values = self.schedule(adversary.progress)
        if values.kappa >= 1.0:  # warm-up: natural training, no bounds needed
            return ObjectiveOutput(F.cross_entropy(clean, y), clean)
        margins = self.margins(model, x, y, values)
        return ObjectiveOutput(robust_ce(clean, margins, y, values.kappa), clean)


@register_objective(
    "crown-ibp",
    description="IBP training on beta_t * CROWN-IBP + (1 - beta_t) * IBP margins "
    "(Zhang et al., 2020)",
    needs_attack=False,
    certified=True,
)
class CrownIBPTraining(IBPTraining):
    """CROWN-IBP training (Zhang et al., ICLR 2020): as :class:`IBPTraining` on the margins
    ``beta_t * m_CROWN-IBP + (1 - beta_t) * m_IBP``, ``beta_t`` ramping from 1 to 0."""

    def margins(self, model: nn.Module, x: Tensor, y: Tensor, values: ScheduleValues) -> Tensor:
        """The mixed lower bounds ``(N, C)`` at ``values.eps`` (eval mode); each bound is
        computed only when its weight is positive."""
        from ..evaluation.certification import build_graph, margin_spec
        from ..evaluation.certification.crown import crown_ibp
        from ..evaluation.certification.ibp import ibp

        with eval_mode(model):
            graph = build_graph(model, x.shape[1:], x.device)
            spec = margin_spec(y, graph.num_classes, x.dtype)
            beta, parts = values.beta, []
            if beta > 0.0:
                parts.append(beta * crown_ibp(graph, x, values.eps, spec))
            if beta < 1.0:
                parts.append((1.0 - beta) * ibp(graph, x, values.eps, spec))
            return torch.stack(parts).sum(0)
