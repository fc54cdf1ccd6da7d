"""APGD and APGD-T: Auto-PGD (Croce & Hein, ICML 2020, Algorithm 1), l_inf.

PGD without a step size to tune: momentum, and a step size halved at checkpoints when the
loss stops improving. The reference is fra31/auto-attack (``autopgd_base.py``), whose
constants and step-size rule are followed exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, _check_int, _check_seed, _check_steps, _check_unit, seeded_generator
from .losses import LOSSES, dlr_targeted_loss, target_classes

__all__ = ["APGD", "APGDT", "apgd_checkpoints"]

#: ``loss(logits, y, target) -> (N,)`` to maximise; ``target`` is None when untargeted.
LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations (1-based) after which APGD checks its step size (Croce & Hein 2020,
    Sec. 3.2): the first interval is ``max(int(0.22 N), 1)`` steps, each next one shorter
    by ``max(int(0.03 N), 1)``, never shorter than ``max(int(0.06 N), 1)``. For N = 100:
    22, 41, 57, 70, 80, 87, 93, 99."""
    steps = _check_steps(steps)
    k = max(int(0.22 * steps), 1)
    decr, k_min = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out, at = [], k
    while at <= steps:
        out.append(at)
        k = max(k - decr, k_min)
        at += k
    return out


class _State:
    """Per-row state of one APGD run; rows leave when their input is fooled."""

    def __init__(self, x: Tensor, x0: Tensor, y: Tensor, target: Tensor | None, eps: float):
        self.idx = torch.arange(len(x), device=x.device)
        self.x, self.y, self.target = x, y, target
        self.lo, self.hi = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
        self.x_adv, self.x_old = x0, x0.clone()
        self.step = torch.full(
            (len(x),) + (1,) * (x.dim() - 1), 2.0 * eps, dtype=x.dtype, device=x.device
        )

    def keep(self, mask: Tensor, names: list[str], steps_hist: Tensor) -> Tensor:
        for name in ["idx", "x", "y", "lo", "hi", "x_adv", "x_old", "step", *names]:
            setattr(self, name, getattr(self, name)[mask])
        if self.target is not None:
            self.target = self.target[mask]
        return steps_hist[:, mask]


class APGD(Attack):
    """Auto-PGD, l_inf (Croce & Hein, ICML 2020, Algorithm 1), with the CE or DLR loss.

    Algorithm, per input (``P`` clamps to the eps-ball, then to [0, 1])::

        x_0 = P(x + eps * t / ||t||_inf),  t ~ U[-1, 1];   eta = 2 eps
        z = P(x_k + eta * sign(grad L(x_k)))
        x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})),  a = 0.75 (1 at k = 0)
        at each checkpoint (:func:`apgd_checkpoints`), halve eta if the loss increased in
        at most rho * k of the last k steps, or if eta was not halved at the previous
        check and the best loss has not improved since; on halving, continue from the
        best point (highest loss) and its gradient.

    Inputs leave the batch at their first misclassified iterate (which is returned);
    restarts run on the inputs still robust. An input never broken gets its highest-loss
    point. DLR (Eq. 3 of the paper) needs 3 classes.

    Args:
        model: logits model, inputs ``(N, C, H, W)`` in [0, 1].
        eps: l_inf budget.
        steps: iterations per restart (reference: 100).
        loss: ``"ce"`` (cross-entropy) or ``"dlr"``.
        n_restarts: random restarts on the still-robust inputs.
        rho: the checkpoint's fraction of increasing steps (reference: 0.75).
        seed: the generator is re-seeded at every call (deterministic).
        channels_last: faster CPU layout for conv models (default: auto).

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
        super().__init__(model, eps, channels_last)
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.steps = _check_steps(steps)
        self.loss = loss
        self.n_restarts = _check_int(n_restarts, "n_restarts", 1)
        self.rho = _check_unit(rho, "rho")
        self.seed = _check_seed(seed)

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "steps": self.steps,
            "loss": self.loss,
            "n_restarts": self.n_restarts,
            "rho": self.rho,
            "seed": self.seed,
        }

    def _loss_fn(self) -> LossFn:
        base = LOSSES[self.loss]
        return lambda logits, y, target: base(logits, y)

    # ------------------------------------------------------------------ the core

    def _start(self, x: Tensor, g: torch.Generator | None) -> Tensor:
        t = 2 * torch.rand(x.shape, generator=g, device=x.device, dtype=x.dtype) - 1
        norm = t.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        return (x + self.eps * t / norm).clamp(0.0, 1.0)

    def _grad(self, st: _State, loss_fn: LossFn) -> tuple[Tensor, Tensor, Tensor]:
        """Loss per row, its input gradient and the logits at ``st.x_adv``."""
        xa = st.x_adv.detach().requires_grad_(True)
        logits = self._forward(xa)
        loss = loss_fn(logits, st.y, st.target)
        grad = self._input_grad(loss.sum(), xa)
        return loss.detach(), grad, logits.detach()

    def _step(self, st: _State, grad: Tensor, first: bool) -> None:
        """The momentum step of Algorithm 1 from ``st.x_adv`` (previous ``st.x_old``)."""
        a = 1.0 if first else 0.75
        x_adv = st.x_adv
        momentum = x_adv - st.x_old
        st.x_old = x_adv
        z = torch.minimum(torch.maximum(x_adv + st.step * grad.sign(), st.lo), st.hi)
        nxt = x_adv + (z - x_adv) * a + momentum * (1 - a)
        st.x_adv = torch.minimum(torch.maximum(nxt, st.lo), st.hi)

    def _run(
        self, x: Tensor, y: Tensor, target: Tensor | None, loss_fn: LossFn, g
    ) -> tuple[Tensor, Tensor]:
        """One APGD run on ``(x, y)``: ``(x_out, fooled)`` per input."""
        n = len(x)
        st = _State(x, self._start(x, g), y, target, self.eps)
        out, fooled = st.x_adv.clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        loss, grad, logits = self._grad(st, loss_fn)
        st.x_best, st.grad_best, st.loss_best = st.x_adv.clone(), grad.clone(), loss.clone()
        st.best_last_check, st.reduced_last_check = loss.clone(), torch.ones_like(loss)
        st.grad = grad
        hist = torch.zeros(self.steps, n, dtype=loss.dtype, device=x.device)
        names = [
            "x_best",
            "grad_best",
            "loss_best",
            "best_last_check",
            "reduced_last_check",
            "grad",
        ]
        hist = self._drop_fooled(st, logits, out, fooled, names, hist)
        checks, k = set(apgd_checkpoints(self.steps)), max(int(0.22 * self.steps), 1)
        for i in range(self.steps):
            if st.idx.numel() == 0:
                break
            self._step(st, st.grad, first=i == 0)
            loss, st.grad, logits = self._grad(st, loss_fn)
            hist[i] = loss
            better = loss > st.loss_best
            st.x_best = torch.where(_view(better, x), st.x_adv, st.x_best)
            st.grad_best = torch.where(_view(better, x), st.grad, st.grad_best)
            st.loss_best = torch.where(better, loss, st.loss_best)
            hist = self._drop_fooled(st, logits, out, fooled, names, hist)
            if i + 1 in checks:
                self._checkpoint(st, hist, i, k)
                k = max(k - max(int(0.03 * self.steps), 1), max(int(0.06 * self.steps), 1))
        if st.idx.numel():
            out[st.idx] = st.x_best
        return out, fooled

    def _checkpoint(self, st: _State, hist: Tensor, i: int, k: int) -> None:
        """Halve the step size where the loss oscillates or stalls (Algorithm 1, l. 10)."""
        rows = torch.arange(i - k + 1, i + 1, device=hist.device)
        prev = hist[rows - 1]  # row -1 wraps to the zero last row, as in the reference
        increases = (hist[rows] > prev).sum(0).to(hist.dtype)
        oscillating = increases <= k * self.rho
        stalled = (st.reduced_last_check == 0) & (st.best_last_check >= st.loss_best)
        reduce = oscillating | stalled
        st.reduced_last_check = reduce.to(hist.dtype)
        st.best_last_check = st.loss_best.clone()
        v = _view(reduce, st.x)
        st.step = torch.where(v, st.step / 2, st.step)
        st.x_adv = torch.where(v, st.x_best, st.x_adv)
        st.grad = torch.where(v, st.grad_best, st.grad)

    def _drop_fooled(
        self, st: _State, logits: Tensor, out: Tensor, fooled: Tensor, names, hist: Tensor
    ) -> Tensor:
        """Record rows whose current iterate is misclassified and drop them."""
        wrong = logits.argmax(1) != st.y
        if not bool(wrong.any()):
            return hist
        rows = st.idx[wrong]
        out[rows] = st.x_adv[wrong]
        fooled[rows] = True
        return st.keep(~wrong, names, hist)

    def _restarts(
        self,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        loss_fn: LossFn,
        g,
        x_adv: Tensor,
        fooled: Tensor,
    ) -> None:
        """``n_restarts`` runs, each on the inputs still robust; updates in place."""
        for _ in range(self.n_restarts):
            todo = torch.nonzero(~fooled, as_tuple=True)[0]
            if todo.numel() == 0:
                return
            t = None if target is None else target[todo]
            xb, fb = self._run(x[todo], y[todo], t, loss_fn, g)
            x_adv[todo] = xb
            fooled[todo[fb]] = True

    def perturb(self, x: Tensor, y: Tensor, early_stop: bool = False) -> tuple[Tensor, Tensor]:
        g = seeded_generator(self.seed, x.device)
        x_adv = x.clone()
        fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self._restarts(x, y, None, self._loss_fn(), g, x_adv, fooled)
        return x_adv, fooled


def _view(mask: Tensor, like: Tensor) -> Tensor:
    return mask.view(-1, *([1] * (like.dim() - 1)))


class APGDT(APGD):
    """Targeted APGD (APGD-T, Croce & Hein 2020) with the targeted DLR loss (Eq. 4).

    The targets are the classes with the 2nd to ``(n_target_classes + 1)``-th largest
    clean logits; each gets a full APGD run (``n_restarts`` each) on the inputs still
    robust. Needs at least 4 classes; ``n_target_classes`` is capped at ``K - 1``.

    Args: as :class:`APGD`, with ``n_target_classes`` (reference: 9) instead of ``loss``.

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
        super().__init__(model, eps, steps, "ce", n_restarts, rho, seed, channels_last)
        self.loss = "dlr-targeted"
        self.n_target_classes = _check_int(n_target_classes, "n_target_classes", 1)

    def params(self) -> dict[str, Any]:
        p = super().params()
        p["n_target_classes"] = self.n_target_classes
        return p

    def _loss_fn(self) -> LossFn:
        return lambda logits, y, target: dlr_targeted_loss(logits, y, target)

    def perturb(self, x: Tensor, y: Tensor, early_stop: bool = False) -> tuple[Tensor, Tensor]:
        g = seeded_generator(self.seed, x.device)
        with torch.no_grad():
            logits = self._forward(x)
        if logits.shape[1] < 4:
            raise ValueError(
                f"APGD-T needs at least 4 classes (the targeted DLR loss uses the 4 largest "
                f"logits), the model has {logits.shape[1]}; use APGD(loss='ce') instead"
            )
        targets = target_classes(logits, self.n_target_classes)
        fooled = logits.argmax(1) != y
        x_adv = x.clone()
        for k in range(targets.shape[1]):
            self._restarts(x, y, targets[:, k], self._loss_fn(), g, x_adv, fooled)
        return x_adv, fooled
