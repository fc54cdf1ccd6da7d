"""FGSM: the fast gradient sign method (Goodfellow et al., 2015), one of the paper's attacks."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attack, EarlyStop
from .registry import register_attack

__all__ = ["FGSM"]


@register_attack("fgsm", description="FGSM (Goodfellow et al., 2015): one eps step", title="FGSM")
class FGSM(Attack):
    """Fast gradient sign method (Goodfellow et al., 2015), Section 5.

    ``x_adv = clip_[0,1](x + eps * sign(grad_x CE(f(x), y)))``.

    Args:
        model: logits model, inputs ``(N, C, H, W)`` in [0, 1].
        eps: l_inf budget (paper: 0.05).
        clip: clip ``x_adv`` to [0, 1] (default True).
        channels_last: faster CPU layout for conv models (default: auto, see :class:`Attack`).

    Shape: ``x (N, C, H, W)``, ``y (N,)`` -> ``x_adv (N, C, H, W)``.

    Example::

        >>> x_adv = FGSM(model, eps=0.05)(x, y)
    """

    def __init__(
        self, model: nn.Module, eps: float, clip: bool = True, channels_last: bool | None = None
    ) -> None:
        super().__init__(model, eps, channels_last)
        self.clip = bool(clip)

    def params(self) -> dict[str, Any]:
        return {"eps": self.eps, "clip": self.clip}

    def perturb(
        self, x: Tensor, y: Tensor, early_stop: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        tracker = EarlyStop(x, y) if early_stop else None
        xa = x.requires_grad_(True)
        logits = self._forward(xa)
        loss = F.cross_entropy(logits, y, reduction="sum")
        grad = self._input_grad(loss, xa)
        xa = xa.detach()
        if tracker is not None:
            keep = tracker.update(xa, logits)
            if keep is not None:
                if tracker.done:
                    return tracker.out, tracker.fooled
                xa, grad = xa[keep], grad[keep]
        x_adv = xa.add(grad.sign_(), alpha=self.eps)
        if self.clip:
            x_adv.clamp_(0.0, 1.0)
        if tracker is None:
            return x_adv, None
        with torch.no_grad():
            final = self._forward(x_adv)
        return tracker.finish(x_adv, final)
