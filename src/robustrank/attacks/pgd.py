"""PGD: projected gradient descent in l_inf (Madry et al., 2018), one of the paper's attacks."""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import Attack, EarlyStop, check_alpha, check_steps
from .registry import register_attack

__all__ = ["PGD"]


@register_attack(
    "pgd",
    defaults={"alpha": 0.005, "steps": 20, "random_start": True},
    description="l_inf PGD with a random start (Madry et al., 2018)",
    title="PGD",
)
class PGD(Attack):
    """Projected gradient descent, l_inf (Madry et al., 2018), Section 5.

    Algorithm (``proj`` onto the eps-ball around the clean ``x``, ``clip`` to [0, 1])::

        x_0 = clip(x + U(-eps, eps))        if random_start else x
        x_{t+1} = clip(proj(x_t + alpha * sign(grad_x CE(f(x_t), y))))   t = 0..steps-1
        x_adv = x_steps

    Where projection and clipping happen (libraries differ here, foolbox #704): the random
    start is clipped to [0, 1] (it is inside the ball by construction); every step first
    projects onto the ball, then clips to [0, 1]. For l_inf both are coordinate-wise
    clamps, so this equals one clamp to the intersection ``[max(x - eps, 0),
    min(x + eps, 1)]``, which is how it is computed. With ``clip=False`` only the
    projection is applied.

    Randomness: the start is ``x + (2 * u - 1) * eps`` with ``u = torch.rand(x.shape,
    generator=g, dtype=x.dtype, device=x.device)``. With ``seed``, ``g`` is a
    ``torch.Generator`` on the input's device seeded once at the first call and then
    continued, so a new ``PGD(..., seed=s)`` reproduces the same sequence of calls.
    ``generator`` passes your own generator; neither uses the global RNG.

    Early stopping (``run(..., early_stop=True)``): the iterates checked are the start
    ``x_0`` and every ``x_t`` up to ``x_steps``; the check at ``x_t`` reuses the forward
    pass of its gradient, and only the final ``x_steps`` needs one extra forward pass.

    Args:
        model: logits model, inputs ``(N, C, H, W)`` in [0, 1].
        eps: l_inf budget (paper: 0.05).
        alpha: step size > 0 (paper: 0.005).
        steps: iterations >= 1 (paper: 20).
        random_start: start from a uniform random point of the ball (Madry: yes).
        clip: clip to [0, 1] (default True).
        seed: seed for the random start (reproducible evaluations).
        generator: a ``torch.Generator`` for the random start (instead of ``seed``).
        channels_last: faster CPU layout for conv models (default: auto, see :class:`Attack`).

    Shape: ``x (N, C, H, W)``, ``y (N,)`` -> ``x_adv (N, C, H, W)``.

    Example::

        >>> attack = PGD(model, eps=0.05, alpha=0.005, steps=20, seed=0)
        >>> x_adv = attack(x, y)
        >>> x_adv, fooled = attack.run(x, y, early_stop=True)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        alpha: float,
        steps: int,
        random_start: bool = True,
        clip: bool = True,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(model, eps, channels_last)
        self.alpha = check_alpha(alpha)
        self.steps = check_steps(steps)
        self.random_start = bool(random_start)
        self.clip = bool(clip)
        if seed is not None and generator is not None:
            raise ValueError("pass either seed or generator, not both")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise TypeError(f"seed must be an integer or None, got {seed!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        self.seed = None if seed is None else int(seed)
        self._generator = generator
        self._generators: dict[torch.device, torch.Generator] = {}

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "alpha": self.alpha,
            "steps": self.steps,
            "random_start": self.random_start,
            "clip": self.clip,
            "seed": self.seed,
        }

    def _rng(self, device: torch.device) -> torch.Generator | None:
        if self._generator is not None:
            if self._generator.device.type != device.type:
                raise ValueError(
                    f"the PGD generator lives on {self._generator.device} but the inputs are "
                    f"on {device}; create it with torch.Generator(device={str(device)!r})"
                )
            return self._generator
        if self.seed is None:
            return None
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[device]

    def perturb(
        self, x: Tensor, y: Tensor, early_stop: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        eps = self.eps
        lo, hi = x - eps, x + eps
        if self.clip:
            lo.clamp_(min=0.0)
            hi.clamp_(max=1.0)
        if self.random_start:
            u = torch.rand(x.shape, generator=self._rng(x.device), dtype=x.dtype, device=x.device)
            xa = x + u.mul_(2).sub_(1).mul_(eps)
            if self.clip:
                xa.clamp_(0.0, 1.0)
        else:
            xa = x.clone()
        tracker = EarlyStop(xa, y) if early_stop else None
        for _ in range(self.steps):
            xa.requires_grad_(True)
            logits = self._forward(xa)
            loss = F.cross_entropy(logits, y, reduction="sum")
            grad = self._input_grad(loss, xa)
            xa = xa.detach()
            if tracker is not None:
                keep = tracker.update(xa, logits)
                if keep is not None:
                    if tracker.done:
                        return tracker.out, tracker.fooled
                    xa, grad, lo, hi, y = xa[keep], grad[keep], lo[keep], hi[keep], y[keep]
            # one clamp to [max(x-eps, 0), min(x+eps, 1)] = clip(proj(.)), see docstring
            xa = torch.clamp(xa.add_(grad.sign_(), alpha=self.alpha), lo, hi)
        if tracker is None:
            return xa, None
        with torch.no_grad():
            final = self._forward(xa)
        return tracker.finish(xa, final)
