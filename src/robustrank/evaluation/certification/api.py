"""The public functions: certify a model on a data set, certified accuracy, margin and
logit bounds.

Every function puts the model in eval mode (batch norm uses its running statistics,
dropout is off) and restores each module's own flag afterwards; it traces the model into
a :class:`~robustrank.evaluation.certification.graph.BoundGraph` and asks the certifier
registered as ``method`` (:func:`~robustrank.evaluation.certification.registry.list_certifiers`)
for lower bounds over the l_inf ball of radius ``eps`` intersected with [0, 1]. The work
runs on the model's device.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..._modes import eval_mode
from ..core import evaluation_device
from .bounds import margin_spec
from .graph import BoundGraph, build_graph
from .registry import DEFAULT_CERTIFIER, CertifierSpec, get_certifier

__all__ = [
    "batch_slices",
    "CertResult",
    "certify",
    "certified_accuracy",
    "margin_bounds",
    "logit_bounds",
    "check_certify_inputs",
]


@dataclass(frozen=True)
class CertResult:
    """The outcome of :func:`certify`.

    Attributes:
        method: the certifier's registered name.
        eps: the l_inf budget.
        certified: bool ``(N,)``, True iff every margin lower bound is > 0 (such an input
            is also classified correctly).
        margins: ``(N, C)`` lower bounds of ``z_y - z_j`` over the region; the column of
            the label ``y`` is ``+inf`` (so ``margins.min(1).values > 0`` iff certified).
        correct: bool ``(N,)``, the clean prediction equals the label.
        seconds: wall-clock time of the call (tracing included).
    """

    method: str
    eps: float
    certified: Tensor
    margins: Tensor
    correct: Tensor
    seconds: float

    @property
    def n(self) -> int:
        """The number of inputs."""
        return int(self.certified.numel())

    @property
    def certified_accuracy(self) -> float:
        """The fraction of inputs certified (correct and provably robust)."""
        return float(self.certified.float().mean()) if self.n else math.nan

    @property
    def clean_accuracy(self) -> float:
        """The fraction of inputs classified correctly."""
        return float(self.correct.float().mean()) if self.n else math.nan


def check_certify_inputs(x: Any, y: Any, eps: Any) -> float:
    """Refuse what cannot be certified, with a message naming the problem; returns eps.

    ``x`` must be a floating tensor ``(N, ...)`` in [0, 1], ``y`` integer labels ``(N,)``,
    ``eps`` a finite number >= 0.
    """
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0 (an l_inf radius), got {eps}")
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError("x must be a floating tensor of shape (N, ...), one row per input")
    if not isinstance(y, Tensor) or y.dim() != 1 or y.is_floating_point() or y.is_complex():
        raise ValueError("y must be an integer tensor of labels, shape (N,)")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} inputs but y has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("nothing to certify: x has no inputs")
    if bool(torch.isnan(x).any()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise ValueError(
            f"x must lie in [0, 1] (normalisation belongs inside the model), got values in "
            f"[{float(x.min()):.4g}, {float(x.max()):.4g}]"
        )
    return float(eps)


def _check_labels(y: Tensor, num_classes: int) -> None:
    if bool((y < 0).any()) or bool((y >= num_classes).any()):
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for a model with {num_classes} outputs, "
            f"got values in [{int(y.min())}, {int(y.max())}]"
        )


def batch_slices(n: int, batch_size: int | None) -> list[slice]:
    """The slices of ``n`` inputs in batches of ``batch_size`` (None: one batch)."""
    if batch_size is None:
        return [slice(0, n)]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    return [slice(s, s + batch_size) for s in range(0, n, batch_size)]


def _prepare(
    model: nn.Module, x: Tensor, method: str, options: dict[str, Any]
) -> tuple[CertifierSpec, Tensor, BoundGraph]:
    """The certifier (options checked), ``x`` on the model's device and the traced graph
    (call in eval mode)."""
    certifier = get_certifier(method)
    certifier.check_options(options)
    x = x.to(evaluation_device(model, None))
    return certifier, x, build_graph(model, x.shape[1:], x.device)


def certify(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    method: str = DEFAULT_CERTIFIER,
    *,
    batch_size: int | None = None,
    on_batch: Callable[[], None] | None = None,
    **options: Any,
) -> CertResult:
    """Certify ``model`` on ``(x, y)`` against every l_inf perturbation of size ``eps``
    that stays in [0, 1], with the certifier ``method`` and its ``options``.

    ``batch_size`` splits the inputs (None: one batch; the certifiers bound their own
    memory, see ``max_elements``); ``on_batch`` is called after each batch (progress).
    Nothing is differentiated (``torch.no_grad``).

    Raises:
        ValueError: bad ``eps``, ``x`` or ``y`` (:func:`check_certify_inputs`), labels out
            of range, an unknown method (with a did-you-mean) or option.
        UnsupportedModelError: the model has a layer the certifiers cannot bound.
    """
    start = time.perf_counter()
    eps = check_certify_inputs(x, y, eps)
    margins, correct = [], []
    with eval_mode(model), torch.no_grad():
        certifier, x, graph = _prepare(model, x, method, options)
        y = y.to(x.device)
        _check_labels(y, graph.num_classes)
        for rows in batch_slices(len(x), batch_size):
            spec = margin_spec(y[rows], graph.num_classes, x.dtype)
            margins.append(certifier(graph, x[rows], eps, spec, **options))
            correct.append(model(x[rows]).argmax(1) == y[rows])
            if on_batch is not None:
                on_batch()
    lower, ok = torch.cat(margins), torch.cat(correct)
    lower[torch.arange(len(y), device=y.device), y] = torch.inf
    certified = ok & (lower > 0).all(1)
    seconds = time.perf_counter() - start
    return CertResult(certifier.name, eps, certified, lower, ok, seconds)


def certified_accuracy(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    method: str = DEFAULT_CERTIFIER,
    *,
    batch_size: int | None = None,
    **options: Any,
) -> float:
    """The fraction of inputs :func:`certify` certifies."""
    return certify(model, x, y, eps, method, batch_size=batch_size, **options).certified_accuracy


def margin_bounds(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    method: str = DEFAULT_CERTIFIER,
    **options: Any,
) -> Tensor:
    """Lower bounds ``(N, C)`` of ``z_y - z_j`` over the region, differentiable with
    respect to the model's parameters (for certified training, e.g. the loss
    ``cross_entropy(-margin_bounds(...), y)`` of Wong & Kolter 2018 / Gowal et al. 2018).

    The label's column is 0 (the exact margin of ``y`` against itself). Runs in eval mode.
    """
    eps = check_certify_inputs(x, y, eps)
    with eval_mode(model):
        certifier, x, graph = _prepare(model, x, method, options)
        y = y.to(x.device)
        _check_labels(y, graph.num_classes)
        spec = margin_spec(y, graph.num_classes, x.dtype)
        return certifier(graph, x, eps, spec, **options)


def logit_bounds(
    model: nn.Module, x: Tensor, eps: float, method: str = DEFAULT_CERTIFIER, **options: Any
) -> tuple[Tensor, Tensor]:
    """Lower and upper bounds ``(N, C)`` on the logits over the region (specifications
    ``+e_j`` and ``-e_j``). Runs in eval mode, without gradients."""
    dummy = torch.zeros(len(x), dtype=torch.long) if isinstance(x, Tensor) else None
    eps = check_certify_inputs(x, dummy, eps)
    with eval_mode(model), torch.no_grad():
        certifier, x, graph = _prepare(model, x, method, options)
        k = graph.num_classes
        eye = torch.eye(k, dtype=x.dtype, device=x.device)
        spec = torch.cat([eye, -eye]).expand(len(x), 2 * k, k)
        low = certifier(graph, x, eps, spec, **options)
    return low[:, :k], -low[:, k:]
