"""APGD and APGD-T: Auto-PGD (Croce & Hein, ICML 2020, Algorithm 1), l_inf.

PGD without a step size to tune: a momentum step, and a per-input step size that is halved
at checkpoints when the loss stops improving. The constants and the step-size rule follow
the reference implementation (fra31/auto-attack, ``autopgd_base.py``) exactly; unlike the
reference, an input leaves the working batch at its first misclassified iterate, so later
iterations, restarts and targets only compute the inputs still robust.

* :func:`apgd_checkpoints`: the iterations where the step size is checked.
* :class:`APGD`: untargeted, cross-entropy or DLR loss (Eq. 3 of Croce & Hein, "Reliable
  evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks",
  ICML 2020).
* :class:`APGDT`: targeted DLR loss (Eq. 4 of Croce & Hein, ICML 2020), one run per target class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import torch
from torch import Generator, Tensor, nn

from .base import Attack, check_int, check_seed, check_steps, check_unit, seeded_generator
from .losses import LOSSES, dlr_targeted_loss, target_classes
from .registry import register_attack

__all__ = ["APGD", "APGDT", "apgd_checkpoints"]

#: ``loss(logits, y, target) -> (N,)``, maximised; ``target`` is None when untargeted.
LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]

#: the momentum weight ``alpha`` of Algorithm 1 (1 on the first step)
_MOMENTUM = 0.75


def _schedule(steps: int) -> list[tuple[int, int]]:
    """``(iteration, window)`` of every checkpoint: the check after ``iteration`` (1-based)
    looks at the ``window`` steps since the previous one (Croce & Hein 2020, Sec. 3.2)."""
    window = max(int(0.22 * steps), 1)
    shrink, shortest = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, at = [], window
    while at <= steps:
        out.append((at, window))
        window = max(window - shrink, shortest)
        at += window
    return out


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations (1-based) after which APGD checks its step size (Croce & Hein 2020,
    Sec. 3.2; the reference's counter reset at each check).

    The first interval is ``max(int(0.22 N), 1)`` steps, each next one shorter by
    ``max(int(0.03 N), 1)`` but never under ``max(int(0.06 N), 1)``. For N = 100:
    ``[22, 41, 57, 70, 80, 87, 93, 99]``.
    """
    return [at for at, _ in _schedule(check_steps(steps))]


def _untargeted(
    loss: Callable[[Tensor, Tensor], Tensor], logits: Tensor, y: Tensor, target: Tensor | None
) -> Tensor:
    """An untargeted loss with the core's ``(logits, y, target)`` signature."""
    return loss(logits, y)


def _col(mask: Tensor, like: Tensor) -> Tensor:
    """A per-row mask shaped to broadcast over ``like`` (N, C, H, W)."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


@dataclass
class _Rows:
    """The per-input state of one APGD run (Algorithm 1).

    Every field is indexed by input along dim 0, so dropping the fooled inputs is one
    boolean index of each field (:meth:`keep`) and the remaining inputs are unaffected.
    """

    idx: Tensor  # position in the run's batch
    y: Tensor
    target: Tensor | None
    lo: Tensor  # the feasible box [max(x - eps, 0), min(x + eps, 1)]
    hi: Tensor
    x_cur: Tensor  # x_k
    x_prev: Tensor  # x_{k-1}, for the momentum term
    grad: Tensor  # the gradient at x_k (or at x_best after a halving)
    step: Tensor  # eta, (N, 1, 1, 1)
    x_best: Tensor  # the highest-loss point so far, its gradient and loss
    grad_best: Tensor
    loss_best: Tensor
    best_at_check: Tensor  # loss_best at the previous checkpoint
    halved_at_check: Tensor  # bool: eta was halved at the previous checkpoint
    hist: Tensor  # (N, steps): the loss at x_1 .. x_steps (zero until written)

    def keep(self, mask: Tensor) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                setattr(self, f.name, value[mask])


@dataclass
class _Result:
    """What the runs found per input: output point, fooled, best loss of unfooled ones."""

    x_adv: Tensor
    fooled: Tensor
    loss: Tensor


class _APGDCore(Attack):
    """Algorithm 1 of Croce & Hein (2020) for any per-example loss; shared by
    :class:`APGD` and :class:`APGDT` (see there for the algorithm)."""

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int,
        n_restarts: int,
        rho: float,
        seed: int | None,
        channels_last: bool | None,
    ) -> None:
        super().__init__(model, eps, channels_last)
        self.steps = check_steps(steps)
        self.n_restarts = check_int(n_restarts, "n_restarts", 1)
        self.rho = check_unit(rho, "rho")
        self.seed = check_seed(seed)

    # ------------------------------------------------------------------ one run

    def _start(self, x: Tensor, g: Generator | None) -> Tensor:
        """``x_0 = clip(x + eps * t / ||t||_inf)``, ``t ~ U[-1, 1]`` per input."""
        t = 2 * torch.rand(x.shape, generator=g, dtype=x.dtype, device=x.device) - 1
        norm = t.abs().flatten(1).amax(1)
        return (x + self.eps * (t / (_col(norm, t) + 1e-12))).clamp(0.0, 1.0)

    def _loss_grad(
        self, x_cur: Tensor, y: Tensor, target: Tensor | None, loss_fn: LossFn
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Loss per input at ``x_cur``, its input gradient, and which inputs are fooled."""
        xa = x_cur.detach().requires_grad_(True)
        logits = self._forward(xa)
        loss = loss_fn(logits, y, target)
        grad = self._input_grad(loss.sum(), xa)
        return loss.detach(), grad, logits.detach().argmax(1) != y

    def _first(
        self, x: Tensor, y: Tensor, target: Tensor | None, loss_fn: LossFn, g: Generator | None
    ) -> tuple[_Rows, Tensor]:
        """The state at the random start ``x_0`` (eta = 2 eps) and the fooled mask there."""
        x0 = self._start(x, g)
        loss, grad, wrong = self._loss_grad(x0, y, target, loss_fn)
        rows = _Rows(
            idx=torch.arange(len(x), device=x.device),
            y=y,
            target=target,
            lo=(x - self.eps).clamp_(min=0.0),
            hi=(x + self.eps).clamp_(max=1.0),
            x_cur=x0,
            x_prev=x0,
            grad=grad,
            step=torch.full(_col(loss, x).shape, 2.0 * self.eps, dtype=x.dtype, device=x.device),
            x_best=x0,
            grad_best=grad,
            loss_best=loss,
            best_at_check=loss,
            halved_at_check=torch.ones(len(x), dtype=torch.bool, device=x.device),
            hist=torch.zeros(len(x), self.steps, dtype=loss.dtype, device=x.device),
        )
        return rows, wrong

    @staticmethod
    def _momentum_step(rows: _Rows, a: float) -> None:
        """``z = P(x_k + eta sign(grad))``, ``x_{k+1} = P(x_k + a (z - x_k) + (1 - a)
        (x_k - x_{k-1}))`` (Algorithm 1, l. 8); ``P``: the eps-ball, then [0, 1]."""
        x_cur = rows.x_cur
        z = torch.clamp(x_cur + rows.step * torch.sign(rows.grad), rows.lo, rows.hi)
        nxt = x_cur + (z - x_cur) * a + (x_cur - rows.x_prev) * (1 - a)
        rows.x_prev = x_cur
        rows.x_cur = torch.clamp(nxt, rows.lo, rows.hi)

    @staticmethod
    def _record(rows: _Rows, i: int, loss: Tensor, grad: Tensor) -> None:
        """Store the loss of iteration ``i`` and keep the highest-loss point (l. 9)."""
        rows.hist[:, i] = loss
        better = loss > rows.loss_best
        rows.x_best = torch.where(_col(better, rows.x_cur), rows.x_cur, rows.x_best)
        rows.grad_best = torch.where(_col(better, grad), grad, rows.grad_best)
        rows.loss_best = torch.where(better, loss, rows.loss_best)
        rows.grad = grad

    def _checkpoint(self, rows: _Rows, i: int, window: int) -> None:
        """Halve eta where the loss oscillates or stalls (Algorithm 1, l. 10-13).

        Condition 1: the loss increased in at most ``rho * window`` of the last ``window``
        steps; condition 2: eta was not halved at the previous check and the best loss has
        not improved since. Halved inputs continue from the best point and its gradient.
        """
        cols = torch.arange(i - window + 1, i + 1, device=rows.hist.device)
        # the first step of the first window compares with the reference's row -1: its
        # last loss row, still zero then
        prev = (cols - 1) % self.steps
        increases = (rows.hist[:, cols] > rows.hist[:, prev]).sum(1)
        oscillating = increases <= window * self.rho
        stalled = ~rows.halved_at_check & (rows.best_at_check >= rows.loss_best)
        halve = oscillating | stalled
        rows.halved_at_check = halve
        rows.best_at_check = rows.loss_best
        v = _col(halve, rows.x_cur)
        rows.step = torch.where(v, rows.step / 2, rows.step)
        rows.x_cur = torch.where(v, rows.x_best, rows.x_cur)
        rows.grad = torch.where(v, rows.grad_best, rows.grad)

    @staticmethod
    def _drop(rows: _Rows, wrong: Tensor, out: Tensor, fooled: Tensor) -> None:
        """Record the inputs whose current iterate is misclassified and drop them."""
        if bool(wrong.any()):
            hit = rows.idx[wrong]
            out[hit] = rows.x_cur[wrong]
            fooled[hit] = True
            rows.keep(~wrong)

    def _run(
        self, x: Tensor, y: Tensor, target: Tensor | None, loss_fn: LossFn, g: Generator | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One APGD run from a random start: ``(x_out, fooled, best_loss)`` per input.

        ``x_out`` is the first misclassified iterate, or else the highest-loss point
        (``best_loss`` is -inf for the fooled inputs).
        """
        out = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        rows, wrong = self._first(x, y, target, loss_fn, g)
        self._drop(rows, wrong, out, fooled)
        checks = dict(_schedule(self.steps))
        for i in range(self.steps):
            if rows.idx.numel() == 0:
                break
            self._momentum_step(rows, 1.0 if i == 0 else _MOMENTUM)
            loss, grad, wrong = self._loss_grad(rows.x_cur, rows.y, rows.target, loss_fn)
            self._record(rows, i, loss, grad)
            self._drop(rows, wrong, out, fooled)
            if i + 1 in checks:
                self._checkpoint(rows, i, checks[i + 1])
        best = torch.full((len(x),), float("-inf"), dtype=x.dtype, device=x.device)
        out[rows.idx] = rows.x_best
        best[rows.idx] = rows.loss_best.to(x.dtype)
        return out, fooled, best

    # ------------------------------------------------------------------ restarts

    def _clean(self, x: Tensor, y: Tensor) -> tuple[_Result, Tensor]:
        """The clean logits; inputs already misclassified count as fooled at ``x``."""
        with torch.no_grad():
            logits = self._forward(x)
        wrong = logits.argmax(1) != y
        loss = torch.full((len(x),), float("-inf"), dtype=x.dtype, device=x.device)
        return _Result(x.clone(), wrong, loss), logits

    def _restart(
        self,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        loss_fn: LossFn,
        g: Generator | None,
        res: _Result,
    ) -> None:
        """One run on the inputs still robust; keeps fooling points, else the best loss."""
        todo = torch.nonzero(~res.fooled).squeeze(1)
        if todo.numel() == 0:
            return
        tgt = None if target is None else target[todo]
        x_run, fooled, loss = self._run(x[todo], y[todo], tgt, loss_fn, g)
        better = fooled | (loss > res.loss[todo])
        res.x_adv[todo[better]] = x_run[better]
        res.loss[todo[better]] = loss[better]
        res.fooled[todo[fooled]] = True

    def _common_params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "steps": self.steps,
            "n_restarts": self.n_restarts,
            "rho": self.rho,
            "seed": self.seed,
        }


# decorators apply bottom-up: apgd-ce registers first (and names the class)
@register_attack(
    "apgd-dlr",
    defaults={"loss": "dlr"},
    description="APGD with the DLR loss, invariant to logit scaling (Croce & Hein, 2020)",
    title="APGD-DLR",
)
@register_attack(
    "apgd-ce",
    defaults={"loss": "ce"},
    description="APGD with the cross-entropy (Croce & Hein, 2020): step-size free PGD",
    title="APGD-CE",
)
class APGD(_APGDCore):
    """Auto-PGD, l_inf (Croce & Hein, ICML 2020, Algorithm 1), with the CE or DLR loss.

    Algorithm, per input (``P`` clamps to the eps-ball, then to [0, 1])::

        x_0 = P(x + eps * t / ||t||_inf),  t ~ U[-1, 1];   eta = 2 eps
        z = P(x_k + eta * sign(grad L(x_k)))
        x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})),  a = 0.75 (1 at k = 0)
        at each checkpoint w_j (:func:`apgd_checkpoints`), halve eta if
          (1) L increased in at most rho * (w_j - w_{j-1}) of the steps since w_{j-1}, or
          (2) eta was not halved at w_{j-1} and the best loss has not improved since;
        and on halving continue from the best point (highest L) and its gradient.

    The loss is the cross-entropy or DLR (Croce & Hein, Eq. 3; needs 3 classes). Inputs
    misclassified at ``x`` are returned as they are; the others leave the batch at their first
    misclassified iterate (which is returned), with or without ``early_stop``, and each
    of the ``n_restarts`` runs starts afresh on the inputs still robust, drawing its start
    from one generator seeded with ``seed`` at every call (as the reference). An input
    never broken gets its highest-loss point over all runs.

    Args:
        model: logits model, inputs ``(N, C, H, W)`` in [0, 1].
        eps: l_inf budget.
        steps: iterations per run (reference: 100).
        loss: ``"ce"`` (cross-entropy) or ``"dlr"``.
        n_restarts: random restarts (runs), >= 1.
        rho: condition (1)'s fraction of increasing steps, in (0, 1] (reference: 0.75).
        seed: seed of the random starts (``None``: the global RNG).
        channels_last: faster CPU layout for conv models (default: auto, see :class:`Attack`).

    Shape: ``x (N, C, H, W)``, ``y (N,)`` -> ``x_adv (N, C, H, W)``.

    Example::

        >>> x_adv, fooled = APGD(model, eps=0.05, loss="dlr").run(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = 100,
        loss: str = "ce",
        n_restarts: int = 1,
        rho: float = 0.75,
        seed: int | None = 0,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(model, eps, steps, n_restarts, rho, seed, channels_last)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.loss = loss

    def params(self) -> dict[str, Any]:
        return {**self._common_params(), "loss": self.loss}

    def perturb(self, x: Tensor, y: Tensor, early_stop: bool = False) -> tuple[Tensor, Tensor]:
        g = seeded_generator(self.seed, x.device)
        res, _ = self._clean(x, y)
        loss_fn = partial(_untargeted, LOSSES[self.loss])
        for _ in range(self.n_restarts):
            self._restart(x, y, None, loss_fn, g, res)
        return res.x_adv, res.fooled


@register_attack(
    "apgd-t",
    description="targeted APGD with the targeted DLR loss, 9 target classes",
    title="APGD-T",
)
class APGDT(_APGDCore):
    """Targeted APGD (APGD-T, Croce & Hein 2020) with their targeted DLR loss (Eq. 4).

    The targets are the classes of the 2nd to ``(n_target_classes + 1)``-th largest clean
    logits (``n_target_classes`` capped at ``K - 1``). For each target in that order, and
    within it for each restart, one APGD run (Algorithm 1, as :class:`APGD`) maximises
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` on the inputs still robust; all runs
    draw their starts from one generator seeded at every call, as the reference. Inputs
    leave at their first misclassified iterate; an input never broken gets its point of
    highest targeted DLR over all runs. Needs at least 4 classes.

    Args:
        model: logits model, inputs ``(N, C, H, W)`` in [0, 1].
        eps: l_inf budget.
        steps: iterations per run (reference: 100).
        n_target_classes: targets per input (reference: 9).
        n_restarts: runs per target, >= 1.
        rho: condition (1)'s fraction of increasing steps, in (0, 1] (reference: 0.75).
        seed: seed of the random starts (``None``: the global RNG).
        channels_last: faster CPU layout for conv models (default: auto, see :class:`Attack`).

    Shape: ``x (N, C, H, W)``, ``y (N,)`` -> ``x_adv (N, C, H, W)``.

    Example::

        >>> x_adv, fooled = APGDT(model, eps=0.05).run(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = 100,
        n_target_classes: int = 9,
        n_restarts: int = 1,
        rho: float = 0.75,
        seed: int | None = 0,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(model, eps, steps, n_restarts, rho, seed, channels_last)
        self.n_target_classes = check_int(n_target_classes, "n_target_classes", 1)

    def params(self) -> dict[str, Any]:
        return {
            **self._common_params(),
            "loss": "dlr-targeted",
            "n_target_classes": self.n_target_classes,
        }

    def perturb(self, x: Tensor, y: Tensor, early_stop: bool = False) -> tuple[Tensor, Tensor]:
        g = seeded_generator(self.seed, x.device)
        res, logits = self._clean(x, y)
        if logits.shape[1] < 4:
            raise ValueError(
                f"APGD-T needs at least 4 classes (the targeted DLR loss uses the 4 largest "
                f"logits), the model has {logits.shape[1]}; use APGD(loss='ce') instead"
            )
        targets = target_classes(logits, self.n_target_classes)
        for target in targets.unbind(1):
            for _ in range(self.n_restarts):
                self._restart(x, y, target, dlr_targeted_loss, g, res)
        return res.x_adv, res.fooled
