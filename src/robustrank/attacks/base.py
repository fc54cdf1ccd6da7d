"""The attack base class and what every attack shares (Section 5's l_inf threat model).

* :class:`Attack`: input validation, eval mode with per-module restore, gradients with
  respect to the input only, the CPU channels-last fast path and early stopping
  (:meth:`Attack.run`). Subclasses implement :meth:`Attack.perturb`.
* :class:`AttackResult`, :func:`eval_mode`, :data:`RANGE_TOLERANCE` and the argument checks
  shared by the attacks (``check_eps``, ``check_steps``, ``check_alpha``, ...).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._modes import eval_mode
from .._types import check_budget
from ..models import prefers_channels_last

__all__ = [
    "Attack",
    "AttackResult",
    "EarlyStop",
    "eval_mode",
    "RANGE_TOLERANCE",
    "seeded_generator",
    "check_eps",
    "check_steps",
    "check_alpha",
    "check_seed",
    "check_int",
    "check_unit",
]

#: Inputs may leave [0, 1] by this much (float round-off, e.g. ``-1e-8``) without an error.
RANGE_TOLERANCE = 1e-6


def check_eps(eps: Any) -> float:
    """``eps`` as an l_inf budget in [0, 1] (TypeError for a non-number)."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    return check_budget(float(eps))


def check_steps(steps: Any) -> int:
    """``steps`` as an integer >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an integer >= 1, got {steps!r}")
    if steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    return int(steps)


def check_alpha(alpha: Any) -> float:
    """``alpha`` (a step size) as a finite number > 0."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise TypeError(f"alpha (step size) must be a real number > 0, got {alpha!r}")
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"alpha (step size) must be a finite number > 0, got {alpha}")
    return alpha


def check_seed(seed: Any) -> int | None:
    """``seed`` as an integer, or None (the global RNG)."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"seed must be an integer or None, got {seed!r}")
    return None if seed is None else int(seed)


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` (named ``name`` in errors) as an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_unit(value: Any, name: str, *, open_low: bool = True) -> float:
    """A real number in (0, 1] (``open_low``) or [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in (0, 1], got {value!r}")
    value = float(value)
    low_ok = value > 0 if open_low else value >= 0
    if not (math.isfinite(value) and low_ok and value <= 1):
        interval = "(0, 1]" if open_low else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value}")
    return value


def seeded_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed`` (None: global RNG).

    The AutoAttack-style attacks re-seed at every call, as the reference does, so the same
    batch gives the same adversarial examples whatever ran before.
    """
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


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


class EarlyStop:
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

    #: the registered name (set by :func:`~robustrank.attacks.register_attack`); used in reports
    name: str = "attack"

    def __init__(self, model: nn.Module, eps: float, channels_last: bool | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if channels_last is not None and not isinstance(channels_last, bool):
            raise TypeError(f"channels_last must be True, False or None, got {channels_last!r}")
        self.model = model
        self.eps = check_eps(eps)
        self.channels_last = channels_last
        self._label_max: int | None = None
        self._state: dict[str, Tensor] | None = None
        #: rows passed forward / backward through the model since construction (see
        #: :meth:`counts`); every forward goes through ``_forward``, every input gradient
        #: through ``_input_grad``.
        self.n_forward = 0
        self.n_backward = 0

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

    def counts(self) -> dict[str, int]:
        """Model evaluations so far, in rows: ``{"forward": ..., "backward": ...}``.

        One input through the model is one forward; one input gradient is one backward (it
        reuses the forward pass it differentiates). Compare attacks by these, not by calls.
        """
        return {"forward": self.n_forward, "backward": self.n_backward}

    def reset_counts(self) -> None:
        """Zero the counters of :meth:`counts` (and any per-run statistics of the attack)."""
        self.n_forward = 0
        self.n_backward = 0

    def details(self) -> dict[str, Any]:
        """Attack-specific statistics of the runs since :meth:`reset_counts`, for reports
        (e.g. AutoAttack's per-component breakdown); empty by default."""
        return {}

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
        self.n_forward += x.shape[0]
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
        self.n_backward += x.shape[0]
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
