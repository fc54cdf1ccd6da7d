"""l_inf adversarial attacks used in the paper (Section 5): FGSM, PGD and GNM.

All attacks follow one convention (torchattacks-like)::

    attack = PGD(model, eps=0.05, alpha=0.005, steps=20, seed=0)
    x_adv = attack(x, y)          # x: (N, C, H, W) in [0, 1], y: (N,) int64

* Inputs are images in [0, 1], NCHW; the model returns logits (no softmax).
* During the attack the model is in eval mode; every module's previous ``training``
  flag is restored afterwards, also when the attack raises.
* Gradients are taken with respect to the input only (``torch.autograd.grad``); the
  parameters' ``.grad`` are never touched. Whole batches are processed at once, on the
  input's device.
* Speed: on CPU, a model with ``Conv2d`` layers is evaluated with channels-last copies
  of its 4-D tensors (``torch.func.functional_call``), which oneDNN runs about 1.5x
  faster for the paper's CNN (``benchmarks/bench_attacks.py``). The model itself is not
  modified, and the values are the same up to float round-off; pass
  ``channels_last=False`` to disable it.
* ``attack.run(x, y, early_stop=True)`` is the evaluation entry point: it also returns
  which inputs are misclassified, and with ``early_stop`` an input stops being attacked as
  soon as an iterate fools the model (AutoAttack style). The logits of iterate ``x_t`` come
  for free with the gradient at ``x_t``, so the check costs no extra forward pass, and the
  fooled rows are dropped from the working batch so later steps compute fewer rows.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import prefers_channels_last

__all__ = [
    "Attack",
    "AttackResult",
    "FGSM",
    "PGD",
    "GNM",
    "eval_mode",
    "check_model",
    "RANGE_TOLERANCE",
]

#: Inputs may leave [0, 1] by this much (float round-off, e.g. ``-1e-8``) without an error.
RANGE_TOLERANCE = 1e-6


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode; restore every module's own ``training`` flag on exit.

    Restoring per module (not ``model.train(flag)``) keeps mixed states intact, e.g. a
    frozen submodule in eval mode inside a model in training mode.
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    eps = float(eps)
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    return eps


def _check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an integer >= 1, got {steps!r}")
    if steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    return int(steps)


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha (step size) must be a real number > 0, got {alpha!r}")
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha (step size) must be a finite number > 0, got {alpha}")
    return alpha


class AttackResult(NamedTuple):
    """Output of :meth:`Attack.run`.

    Attributes:
        x_adv: adversarial examples, same shape, dtype and device as the input, detached.
        fooled: bool tensor (N,): the model misclassifies ``x_adv[i]`` (its prediction is
            not ``y[i]``). With ``early_stop`` this is "some iterate fooled the model", and
            ``x_adv[i]`` is that first fooling iterate.
    """

    x_adv: Tensor
    fooled: Tensor


class _EarlyStop:
    """Bookkeeping for early stopping: freezes fooled rows, tracks the active ones."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.out = x.detach().clone()
        self.fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.idx = torch.arange(len(x), device=x.device)
        self.y = y

    def update(self, x_t: Tensor, logits: Tensor) -> Tensor | None:
        """Record rows whose iterate ``x_t`` is misclassified; return the keep mask or None."""
        wrong = logits.detach().argmax(1) != self.y
        if not bool(wrong.any()):
            return None
        rows = self.idx[wrong]
        self.out[rows] = x_t.detach()[wrong]
        self.fooled[rows] = True
        keep = ~wrong
        self.idx = self.idx[keep]
        self.y = self.y[keep]
        return keep

    @property
    def done(self) -> bool:
        return self.idx.numel() == 0

    def finish(self, x_t: Tensor, logits: Tensor | None) -> tuple[Tensor, Tensor]:
        """Store the final iterate of the still-active rows (and whether it fools)."""
        if self.idx.numel():
            if logits is not None:
                self.fooled[self.idx] = logits.argmax(1) != self.y
            self.out[self.idx] = x_t.detach()
        return self.out, self.fooled


class Attack:
    """Base class of the l_inf attacks.

    Subclasses implement :meth:`perturb`. Calling the attack validates the inputs, puts
    the model in eval mode (restoring each module's flag afterwards), enables gradients
    and returns detached adversarial examples.

    Args:
        model: a ``nn.Module`` mapping ``(N, C, H, W)`` inputs in [0, 1] to logits
            ``(N, num_classes)``. Rows must be independent in eval mode (true for
            ordinary networks, including BatchNorm in eval mode).
        eps: l_inf budget, finite and >= 0.
        channels_last: evaluate the model with channels-last copies of its 4-D
            parameters and buffers. ``None`` (default) does so on CPU for models with
            ``Conv2d`` layers, where oneDNN is faster in that layout; the model is never
            modified.

    Example::

        >>> model = create_model("fcnn")
        >>> x_adv = FGSM(model, eps=0.05)(x, y)
    """

    name: str = "attack"

    def __init__(self, model: nn.Module, eps: float, channels_last: bool | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if channels_last is not None and not isinstance(channels_last, bool):
            raise TypeError(f"channels_last must be True, False or None, got {channels_last!r}")
        self.model = model
        self.eps = _check_eps(eps)
        self.channels_last = channels_last
        self._label_max: int | None = None
        self._state: dict[str, Tensor] | None = None

    # ------------------------------------------------------------------ public API

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for ``(x, y)``: a detached tensor shaped like ``x``."""
        return self._execute(x, y, early_stop=False, need_fooled=False).x_adv

    def run(self, x: Tensor, y: Tensor, *, early_stop: bool = False) -> AttackResult:
        """Attack and report which inputs end up misclassified.

        Args:
            x: ``(N, C, H, W)`` floating tensor in [0, 1].
            y: ``(N,)`` integer labels.
            early_stop: stop attacking an input as soon as an iterate fools the model
                (that iterate is returned). Never weaker than the plain attack and cheaper.

        Returns:
            :class:`AttackResult` ``(x_adv, fooled)``.
        """
        return self._execute(x, y, early_stop=bool(early_stop), need_fooled=True)

    def params(self) -> dict[str, Any]:
        """The attack's settings (for reports)."""
        return {"eps": self.eps}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ subclass hook

    def perturb(
        self, x: Tensor, y: Tensor, early_stop: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """The attack itself, on validated inputs, in eval mode, with gradients enabled.

        Returns ``(x_adv, fooled)``; ``fooled`` may be ``None`` when ``early_stop`` is
        false (the caller then computes it with one forward pass if it needs it).
        Call the attack object instead: this method skips validation and mode handling.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers

    def _use_channels_last(self, device: torch.device) -> bool:
        if self.channels_last is not None:
            return self.channels_last
        return prefers_channels_last(self.model, device)

    def _fast_state(self, device: torch.device) -> dict[str, Tensor] | None:
        """Detached channels-last copies of the model's tensors, or None (plain call)."""
        if not self._use_channels_last(device):
            return None
        fmt = torch.channels_last
        return {
            name: (t.detach().to(memory_format=fmt) if t.dim() == 4 else t.detach())
            for name, t in [*self.model.named_parameters(), *self.model.named_buffers()]
        }

    def _forward(self, x: Tensor) -> Tensor:
        """Logits of ``x``; checks the labels against the logits' width on first use."""
        if self._state is None:
            logits = self.model(x)
        else:
            logits = torch.func.functional_call(self.model, self._state, (x,))
        if self._label_max is not None:
            if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
                raise ValueError(
                    f"the model must return logits of shape (N, num_classes); got "
                    f"{tuple(logits.shape)} for {x.shape[0]} inputs"
                )
            if self._label_max >= logits.shape[1]:
                raise ValueError(
                    f"labels must lie in [0, {logits.shape[1]}) for a model with "
                    f"{logits.shape[1]} outputs; got label {self._label_max}"
                )
            self._label_max = None
        return logits

    def _input_grad(self, loss: Tensor, x: Tensor, retain_graph: bool = False) -> Tensor:
        (grad,) = torch.autograd.grad(loss, x, retain_graph=retain_graph)
        return grad

    def _validate(self, x: Tensor, y: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if not isinstance(y, Tensor):
            raise TypeError(f"y must be a torch.Tensor of int64 labels, got {type(y).__name__}")
        if not x.is_floating_point():
            raise TypeError(
                f"x must be a floating-point tensor with values in [0, 1], got {x.dtype}; "
                "convert images with x.float() / 255"
            )
        if x.dim() != 4:
            raise ValueError(
                f"x must have shape N x C x H x W, got {tuple(x.shape)}; add the channel "
                "dimension with x.unsqueeze(1) for N x H x W images"
            )
        if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
            raise TypeError(f"y must hold integer class labels (int64), got {y.dtype}")
        if y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(
                f"y must have shape (N,) with N = {x.shape[0]} (the batch size of x), got "
                f"{tuple(y.shape)}; x and y must come from the same batch"
            )
        y = y.to(device=x.device, dtype=torch.int64)
        if x.numel():
            if not bool(torch.isfinite(x).all()):
                raise ValueError("x contains NaN or infinite values; clean the inputs first")
            lo, hi = float(x.min()), float(x.max())
            if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
                raise ValueError(
                    f"x must lie in [0, 1] (images scaled by 1/255, normalisation inside "
                    f"the model); got values in [{lo:.4g}, {hi:.4g}]"
                )
        if y.numel():
            if int(y.min()) < 0:
                raise ValueError(f"labels must be >= 0, got {int(y.min())}")
            self._label_max = int(y.max())
        return y

    def _execute(
        self, x: Tensor, y: Tensor, *, early_stop: bool, need_fooled: bool
    ) -> AttackResult:
        y = self._validate(x, y)
        if x.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.bool, device=x.device)
            return AttackResult(x.detach().clone(), empty)
        try:
            with eval_mode(self.model), torch.inference_mode(False), torch.enable_grad():
                self._state = self._fast_state(x.device)
                x = x.detach().clone()
                if y.is_inference():
                    y = y.clone()
                x_adv, fooled = self.perturb(x, y, early_stop=early_stop)
                x_adv = x_adv.detach()
                if fooled is None and need_fooled:
                    with torch.no_grad():
                        fooled = self._forward(x_adv).argmax(1) != y
        finally:
            self._label_max = None
            self._state = None
        if fooled is None:
            fooled = torch.zeros(0, dtype=torch.bool, device=x.device)
        return AttackResult(x_adv, fooled)


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

    name = "fgsm"

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
        tracker = _EarlyStop(x, y) if early_stop else None
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

    name = "pgd"

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
        self.alpha = _check_alpha(alpha)
        self.steps = _check_steps(steps)
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
        tracker = _EarlyStop(xa, y) if early_stop else None
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

    name = "gnm"

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
        self.steps = _check_steps(steps)
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
        tracker = _EarlyStop(xa, y) if early_stop else None
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


# --------------------------------------------------------------------------- checks


def check_model(
    model: nn.Module, x: Tensor, y: Tensor, *, n: int = 32, warn: bool = True, stacklevel: int = 2
) -> list[str]:
    """Sanity checks before an evaluation (in the spirit of AutoAttack's checks).

    Looks at the first ``n`` inputs and reports (and, with ``warn``, emits as
    ``UserWarning``) common evaluation mistakes:

    * outputs that look like probabilities (all in [0, 1], rows summing to 1): attacks
      expect logits; a softmax inside the model flattens the loss and masks gradients;
    * inputs whose loss gradient is exactly zero (gradient masking or saturated units:
      a robustness claim then needs a gradient-free or transfer check, Section 5);
    * a model in training mode (attacks and evaluation switch to eval mode anyway).

    Returns the list of messages (empty when nothing looks wrong).
    """
    messages: list[str] = []
    if model.training:
        messages.append(
            "the model is in training mode; robustrank evaluates it in eval mode (and "
            "restores the mode afterwards), call model.eval() to silence this"
        )
    xs = x[:n].detach().clone()
    ys = y[:n].to(device=x.device, dtype=torch.int64)
    if len(xs):
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            xs.requires_grad_(True)
            out = model(xs)
            if out.dim() == 2 and out.shape[1] > 1:
                o = out.detach()
                sums = o.sum(1)
                if bool(((o >= 0) & (o <= 1)).all()) and bool(
                    torch.allclose(sums, torch.ones_like(sums), atol=1e-4)
                ):
                    messages.append(
                        "model outputs look like probabilities (rows in [0, 1] summing to 1); "
                        "attacks and the cross-entropy expect logits: remove the final softmax"
                    )
                if int(ys.max()) < out.shape[1]:
                    loss = F.cross_entropy(out, ys, reduction="sum")
                    (g,) = torch.autograd.grad(loss, xs)
                    zero = (g.flatten(1).abs().amax(1) == 0).float().mean().item()
                    if zero > 0:
                        messages.append(
                            f"the input gradient is exactly zero for {zero:.0%} of the checked "
                            "inputs (gradient masking or saturated units?); gradient attacks "
                            "cannot move these inputs, so check robustness with a larger eps "
                            "or a transfer attack"
                        )
    if warn:
        for msg in messages:
            warnings.warn(msg, UserWarning, stacklevel=stacklevel)
    return messages
