"""GNM: the gradient-based norm-constrained method (Balda et al., 2018) in l_inf."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from .base import Attack, EarlyStop, check_steps
from .registry import register_attack

__all__ = ["GNM"]


@register_attack(
    "gnm",
    defaults={"steps": 5},
    description="GNM (Balda et al., 2018): linearised logit margins, T steps",
    title="GNM",
)
class GNM(Attack):
    """Gradient-based norm-constrained method, l_inf (Balda et al., 2018), Section 5.

    Linearises the logit margins of the true class ``k`` (not the loss). With ``T = steps``
    and ``N = 0``, for ``t = 1..T``::

        x_t = x + N
        g_j = grad_x f_k(x_t) - grad_x f_j(x_t)                       for j != k
        l   = argmin_{j != k} f_k(x_t) - f_j(x_t) - (eps/T) ||g_j||_1
        N   = N - (eps/T) sign(g_l)
    x_adv = x + N

    The target ``l`` is re-chosen at every step and the perturbation accumulates; each
    step moves every pixel by ``eps/T`` (0 where the gradient is exactly 0), so
    ``||N||_inf <= eps`` without projection. Ties in the argmin go to the smallest ``j``.

    Clipping: with ``clip=True`` (default, the usual image convention) the iterate is
    clipped to [0, 1] after every step, ``x_{t+1} = clip(x_t - (eps/T) sign(g_l))``, so
    the accumulated ``N`` is the clipped one (still ``|N| <= eps``). ``clip=False``
    reproduces the authors' unclipped original (``x_adv`` may leave [0, 1]).

    Cost per step: one forward and ``C - 1`` backward passes (one per competing class,
    ``C`` = number of logits); the gradient of ``f_k - f_j`` is taken directly with
    ``j = (k + r) mod C`` for ``r = 1..C-1``, so every row's pass is useful.

    Args:
        model: logits model, inputs ``(N, C, H, W)`` in [0, 1].
        eps: l_inf budget (paper: 0.05).
        steps: ``T`` >= 1 (paper: 5). ``T = 1`` is one step of size eps towards the most
            promising class.
        clip: clip to [0, 1] after each step (default True).
        channels_last: faster CPU layout for conv models (default: auto, see :class:`Attack`).

    Shape: ``x (N, C, H, W)``, ``y (N,)`` -> ``x_adv (N, C, H, W)``.

    Example::

        >>> x_adv = GNM(model, eps=0.05, steps=5)(x, y)
    """

    #: with early stopping, rebuild the graph on the remaining rows when at least this
    #: fraction of the working batch was just fooled (saves C - 1 backward passes on them)
    refresh_fraction = 0.1

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        steps: int = 5,
        clip: bool = True,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(model, eps, channels_last)
        self.steps = check_steps(steps)
        self.clip = bool(clip)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "steps": self.steps, "clip": self.clip}

    def _direction(self, xa: Tensor, logits: Tensor, y: Tensor, step: float) -> Tensor:
        """``sign(g_l)`` per row for the most promising class ``l`` (see class docstring)."""
        n, c = logits.shape
        f = logits.detach()
        rows = torch.arange(n, device=f.device)
        fk = f[rows, y]
        best_m = torch.full_like(fk, math.inf)
        best_j = torch.full_like(y, c)
        best_dir = torch.zeros_like(xa)
        view = (n,) + (1,) * (xa.dim() - 1)
        for r in range(1, c):
            j = (y + r) % c
            go = torch.zeros_like(logits)
            go[rows, y] = 1.0
            go[rows, j] = -1.0
            self.n_backward += n
            (g,) = torch.autograd.grad(logits, xa, grad_outputs=go, retain_graph=r < c - 1)
            m = fk - f[rows, j] - step * g.abs().flatten(1).sum(1)
            better = (m < best_m) | ((m == best_m) & (j < best_j))
            best_m = torch.where(better, m, best_m)
            best_j = torch.where(better, j, best_j)
            best_dir = torch.where(better.view(view), g.sign_(), best_dir)
        return best_dir

    def perturb(
        self, x: Tensor, y: Tensor, early_stop: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        step = self.eps / self.steps
        xa = x
        tracker = EarlyStop(xa, y) if early_stop else None
        for _ in range(self.steps):
            xa = xa.detach().requires_grad_(True)
            logits = self._forward(xa)
            keep = None
            if tracker is not None:
                keep = tracker.update(xa, logits)
                if keep is not None:
                    if tracker.done:
                        return tracker.out, tracker.fooled
                    y = y[keep]
                    if 1.0 - keep.float().mean().item() >= self.refresh_fraction:
                        xa = xa.detach()[keep].requires_grad_(True)
                        logits = self._forward(xa)
                        keep = None
            direction = self._direction(xa, logits, y if keep is None else _expand(y, keep), step)
            xa = xa.detach()
            if keep is not None:
                xa, direction = xa[keep], direction[keep]
            xa = xa.sub(direction, alpha=step)
            if self.clip:
                xa.clamp_(0.0, 1.0)
        if tracker is None:
            return xa, None
        with torch.no_grad():
            final = self._forward(xa)
        return tracker.finish(xa, final)


def _expand(y_kept: Tensor, keep: Tensor) -> Tensor:
    """Labels for every row of a batch from the kept rows' labels (dropped rows: any label)."""
    full = torch.zeros(keep.shape[0], dtype=y_kept.dtype, device=y_kept.device)
    full[keep] = y_kept
    return full
