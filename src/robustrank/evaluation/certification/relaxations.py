"""Linear relaxations of the nonlinear operations, given bounds on their inputs.

An activation ``sigma`` with input bounds ``l <= z <= u`` is sandwiched elementwise between
two lines, ``alpha_L z + beta_L <= sigma(z) <= alpha_U z + beta_U`` (Zhang et al., 2018,
"Efficient Neural Network Robustness Certification with General Activation Functions",
Section 3.3 and Table 1):

* ReLU (:func:`relu_relaxation`): exact when the neuron is stable; otherwise the chord
  ``u (z - l) / (u - l)`` above and ``a z`` below with ``a = 1`` if ``u >= -l`` else 0
  (CROWN-Ada), or any given ``a`` in ``[0, 1]`` (alpha-CROWN, Xu et al., 2021);
* tanh and sigmoid (:func:`s_shaped_relaxation`): convex on ``z <= 0``, concave on
  ``z >= 0``; on one side the chord and a tangent at the midpoint, across 0 tangents
  through an end point (found by bisection, the sound end of the bracket kept) or the
  chord when it is valid;
* max pooling (:func:`maxpool_relaxation`): as auto_LiRPA's ``BoundMaxPool``, below by
  the input with the largest lower bound; above by that input when its lower bound
  dominates every other upper bound in the window (then the max *is* that input), else
  by the constant largest upper bound; :meth:`PoolRelaxation.after` composes it with the
  activation in front (one backward step instead of two, the same bound).

:meth:`ElementwiseRelaxation.backward` and :meth:`PoolRelaxation.backward` propagate a
lower linear bound one step back (CROWN's Theorem 3.2): positive coefficients take the
lower line, negative ones the upper line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .bounds import Box

__all__ = [
    "ElementwiseRelaxation",
    "PoolRelaxation",
    "Relaxation",
    "relu_relaxation",
    "s_shaped_relaxation",
    "maxpool_relaxation",
    "window_pads",
]

#: Bisection steps for the tangent points of tanh and sigmoid (float64: ample).
TANGENT_STEPS = 40


def _sum_trailing(t: Tensor) -> Tensor:
    return t.flatten(2).sum(-1)


def _per_spec(t: Tensor, a: Tensor) -> Tensor:
    """``t`` broadcastable against coefficients ``a`` ``(B, S, *shape)``: a per-example
    tensor ``(B, *shape)`` gets the specification axis; a per-specification one
    ``(B, S or 1, *shape)`` (alpha-CROWN's slopes) is used as it is."""
    return t if t.dim() == a.dim() else t.unsqueeze(1)


@dataclass(frozen=True)
class ElementwiseRelaxation:
    """``lower_slope z + lower_bias <= sigma(z) <= upper_slope z + upper_bias``, elementwise;
    every tensor has shape ``(N, *shape)``, or ``(N, S, *shape)`` for lines that differ by
    specification (alpha-CROWN); a ``None`` bias is zero."""

    lower_slope: Tensor
    lower_bias: Tensor | None
    upper_slope: Tensor
    upper_bias: Tensor | None

    def select(self, rows: Tensor | slice) -> ElementwiseRelaxation:
        """The relaxation of the examples ``rows``."""
        pick = _pick(rows)
        return ElementwiseRelaxation(
            pick(self.lower_slope),
            pick(self.lower_bias),
            pick(self.upper_slope),
            pick(self.upper_bias),
        )

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | float]:
        """A lower bound ``a . sigma(z) >= a' . z + b`` for coefficients ``a`` of shape
        ``(B, S, *shape)``: returns ``(a', b)`` (Zhang et al. 2018, Theorem 3.2)."""
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        new = pos * _per_spec(self.lower_slope, a) + neg * _per_spec(self.upper_slope, a)
        bias: Tensor | float = 0.0
        if self.lower_bias is not None:
            bias = bias + _sum_trailing(pos * _per_spec(self.lower_bias, a))
        if self.upper_bias is not None:
            bias = bias + _sum_trailing(neg * _per_spec(self.upper_bias, a))
        return new, bias


@dataclass(frozen=True)
class PoolRelaxation:
    """Max pooling relaxed window by window, in terms of the input ``z[index]`` with the
    largest lower bound: ``lower_slope z[index] + lower_bias <= max`` and
    ``max <= upper_slope z[index] + upper_bias``.

    ``index`` (long, ``(N, C, Ho, Wo)``) is the position within the input plane
    (``H * W`` of ``in_shape``); the other tensors have the same shape (``None``: zero).
    Plain max pooling has ``lower_slope = 1`` and ``upper_slope`` 1 where that input
    dominates the window, else 0 with ``upper_bias`` the largest upper bound;
    :meth:`after` composes it with an elementwise activation in front.
    """

    index: Tensor
    lower_slope: Tensor
    lower_bias: Tensor | None
    upper_slope: Tensor
    upper_bias: Tensor | None
    in_shape: tuple[int, ...]

    def select(self, rows: Tensor | slice) -> PoolRelaxation:
        """The relaxation of the examples ``rows``."""
        pick = _pick(rows)
        return PoolRelaxation(
            pick(self.index),
            pick(self.lower_slope),
            pick(self.lower_bias),
            pick(self.upper_slope),
            pick(self.upper_bias),
            self.in_shape,
        )

    def after(self, act: ElementwiseRelaxation) -> PoolRelaxation:
        """The relaxation of ``maxpool(sigma(z))`` in terms of ``z``, for this relaxation of
        ``maxpool`` (on ``sigma``'s output bounds) and ``act`` of ``sigma``: the chosen
        input's activation lines, scaled by the pool's slopes (both slopes are >= 0)."""

        i = self.index
        lower = _compose(self.lower_slope, self.lower_bias, act.lower_slope, act.lower_bias, i)
        upper = _compose(self.upper_slope, self.upper_bias, act.upper_slope, act.upper_bias, i)
        return PoolRelaxation(i, *lower, *upper, self.in_shape)

    def backward(self, a: Tensor) -> tuple[Tensor, Tensor | float]:
        """A lower bound ``a . maxpool(z) >= a' . z + b`` (auto_LiRPA's ``BoundMaxPool``):
        each output's coefficient goes to its chosen input; returns ``(a', b)``."""
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        coef = pos * self.lower_slope.unsqueeze(1) + neg * self.upper_slope.unsqueeze(1)
        bias: Tensor | float = 0.0
        if self.lower_bias is not None:
            bias = bias + _sum_trailing(pos * self.lower_bias.unsqueeze(1))
        if self.upper_bias is not None:
            bias = bias + _sum_trailing(neg * self.upper_bias.unsqueeze(1))
        b, s, c = coef.shape[:3]
        index = self.index.unsqueeze(1).flatten(3).expand(b, s, c, -1)
        plane = self.in_shape[1] * self.in_shape[2]
        new = coef.new_zeros(b, s, c, plane).scatter_add_(3, index, coef.flatten(3))
        return new.view(b, s, *self.in_shape), bias


Relaxation = ElementwiseRelaxation | PoolRelaxation


def _at(t: Tensor | None, index: Tensor) -> Tensor | None:
    """``t`` (``(N, C, H, W)``) at the plane positions ``index`` (``(N, C, Ho, Wo)``)."""
    if t is None:
        return None
    return t.flatten(2).gather(2, index.flatten(2)).view(index.shape)


def _compose(
    slope: Tensor, bias: Tensor | None, act_slope: Tensor, act_bias: Tensor | None, index: Tensor
) -> tuple[Tensor, Tensor | None]:
    """The line ``slope * (act_slope z + act_bias) + bias`` at the chosen inputs (valid as a
    bound of the same side because ``slope >= 0``)."""
    scaled = None if act_bias is None else slope * _at(act_bias, index)
    if bias is not None:
        scaled = bias if scaled is None else scaled + bias
    return slope * _at(act_slope, index), scaled


def _pick(rows: Tensor | slice) -> Callable[[Tensor | None], Tensor | None]:
    return lambda t: None if t is None else t[rows]


def relu_relaxation(box: Box, lower_slope: Tensor | None = None) -> ElementwiseRelaxation:
    """ReLU's linear bounds (Zhang et al. 2018, Section 3.2, the "adaptive" lower bound).

    Stable neurons are exact (slope 1 or 0). An unstable neuron (``l < 0 < u``) gets the
    chord ``u / (u - l) (z - l)`` above and ``a z`` below, ``a = 1`` if ``u >= -l`` else 0,
    unless ``lower_slope`` (values in [0, 1], alpha-CROWN) is given.
    """
    lo, hi = box.lo, box.hi
    active, unstable = lo >= 0, (lo < 0) & (hi > 0)
    one, zero = torch.ones_like(lo), torch.zeros_like(lo)
    chord = hi / torch.where(unstable, hi - lo, one)
    upper = torch.where(active, one, torch.where(unstable, chord, zero))
    upper_bias = torch.where(unstable, -chord * lo, zero)
    if lower_slope is None:
        lower_slope = (hi >= -lo).to(lo.dtype)
    lower = torch.where(active, one, torch.where(unstable, lower_slope, zero))
    return ElementwiseRelaxation(lower, None, upper, upper_bias)


@dataclass(frozen=True)
class SShape:
    """A sigmoid-like activation: convex on ``z <= 0``, concave on ``z >= 0``."""

    fn: Callable[[Tensor], Tensor]
    grad: Callable[[Tensor], Tensor]


def _tanh_grad(z: Tensor) -> Tensor:
    return 1 - torch.tanh(z) ** 2


def _sigmoid_grad(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


TANH = SShape(torch.tanh, _tanh_grad)
SIGMOID = SShape(torch.sigmoid, _sigmoid_grad)


def _tangent(f: SShape, d: Tensor) -> tuple[Tensor, Tensor]:
    slope = f.grad(d)
    return slope, f.fn(d) - slope * d


def _tangent_through(f: SShape, anchor: Tensor, start: Tensor, end: Tensor, above: bool) -> Tensor:
    """The tangent point ``d`` between ``start`` (invalid) and ``end`` (valid) whose tangent
    passes through ``(anchor, f(anchor))``: bisection keeping the valid end, so that the
    tangent at the returned point bounds ``f`` (from ``above`` or below) on the anchor's
    side too (Zhang et al. 2018, Section 3.3). Validity is monotone in ``d``: above, for
    ``d >= 0`` the tangent's value at ``anchor = l < 0`` grows with ``d``; below, for
    ``d <= 0`` its value at ``anchor = u > 0`` grows with ``d``."""
    target = f.fn(anchor)
    bad, good = start.clone(), end.clone()
    for _ in range(TANGENT_STEPS):
        d = (bad + good) / 2
        slope, icpt = _tangent(f, d)
        line = slope * anchor + icpt
        ok = line >= target if above else line <= target
        good, bad = torch.where(ok, d, good), torch.where(ok, bad, d)
    return good


def s_shaped_relaxation(f: SShape, box: Box) -> ElementwiseRelaxation:
    """tanh / sigmoid linear bounds (Zhang et al. 2018, Section 3.3, Table 1's cases).

    ``u <= 0``: chord above, tangent at the midpoint below; ``l >= 0``: the reverse;
    ``l < 0 < u``: above, the chord if ``f'(u)`` is at least its slope, else the tangent
    at the midpoint if it is valid (it is when the midpoint lies right of the point ``d``
    whose tangent passes through ``(l, f(l))``), else the tangent at ``d``; below,
    symmetrically. Computed in float64.
    """
    lo, hi = box.lo.double(), box.hi.double()
    flo, fhi = f.fn(lo), f.fn(hi)
    width = hi - lo
    narrow = width < 1e-12
    chord = torch.where(narrow, f.grad(lo), (fhi - flo) / torch.where(narrow, 1.0, width))
    chord_icpt = flo - chord * lo
    mid_slope, mid_icpt = _tangent(f, (lo + hi) / 2)
    cross = (lo < 0) & (hi > 0)
    with torch.no_grad():
        zero = torch.zeros_like(lo)
        d_up = _tangent_through(f, lo, zero, torch.where(cross, hi, zero), above=True)
        d_low = _tangent_through(f, hi, zero, torch.where(cross, lo, zero), above=False)
        # any tangent point in [d_up, u] (above) or [l, d_low] (below) is valid; the
        # midpoint's tangent, when it is one of them, varies smoothly with the interval and
        # is tighter on average (auto_LiRPA's default for s-shaped functions)
        mid = (lo + hi) / 2
        d_up = torch.where(mid >= d_up, mid, d_up)
        d_low = torch.where(mid <= d_low, mid, d_low)
    up_slope, up_icpt = _tangent(f, d_up)
    low_slope, low_icpt = _tangent(f, d_low)
    chord_up = cross & (f.grad(hi) >= chord)  # the chord lies above f on [l, u]
    chord_low = cross & (f.grad(lo) >= chord)  # the chord lies below f on [l, u]
    convex, concave = hi <= 0, lo >= 0
    upper = _choose(
        [(convex | chord_up, chord, chord_icpt), (concave, mid_slope, mid_icpt)],
        (up_slope, up_icpt),
    )
    lower = _choose(
        [(concave | chord_low, chord, chord_icpt), (convex, mid_slope, mid_icpt)],
        (low_slope, low_icpt),
    )
    dtype = box.lo.dtype
    return ElementwiseRelaxation(*(t.to(dtype) for t in (*lower, *upper)))


def _choose(
    cases: list[tuple[Tensor, Tensor, Tensor]], default: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """The first case's ``(slope, intercept)`` whose mask holds, else ``default``."""
    slope, icpt = default
    for mask, s, b in reversed(cases):
        slope, icpt = torch.where(mask, s, slope), torch.where(mask, b, icpt)
    return slope, icpt


def window_pads(
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out: tuple[int, int],
) -> tuple[int, int, int, int]:
    """``F.pad`` amounts (left, right, top, bottom) that make every pooling window (incl.
    ``ceil_mode``'s partial ones) lie inside the padded plane."""
    extra = [
        max(0, (o - 1) * s + d * (k - 1) + 1 - (n + 2 * p))
        for n, k, s, p, d, o in zip(size, kernel, stride, padding, dilation, out)
    ]
    return (padding[1], padding[1] + extra[1], padding[0], padding[0] + extra[0])


def maxpool_relaxation(
    box: Box,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out: tuple[int, int],
) -> PoolRelaxation:
    """Max pooling's linear bounds (auto_LiRPA's ``BoundMaxPool``): below by the input with
    the largest lower bound; above by the same input if its lower bound is at least every
    other upper bound in the window, else by the largest upper bound (a constant)."""
    n, c, h, w = box.lo.shape
    pads = window_pads((h, w), kernel, stride, padding, dilation, out)
    planes = [F.pad(t, pads, value=-torch.inf) for t in (box.lo, box.hi)]
    padded = planes[0].shape[-2:]
    lo_w, hi_w = (
        F.unfold(p.reshape(n * c, 1, *padded), kernel, dilation, 0, stride) for p in planes
    )  # (n*c, k*k, L)
    positions = torch.arange(h * w, device=box.lo.device, dtype=torch.float64)
    where = F.pad(positions.view(1, 1, h, w), pads, value=-1.0)
    pos_w = F.unfold(where, kernel, dilation, 0, stride)  # (1, k*k, L)
    choice = lo_w.argmax(1, keepdim=True)  # (n*c, 1, L)
    best_lo = lo_w.gather(1, choice)
    others = hi_w.scatter(1, choice, -torch.inf).amax(1, keepdim=True)
    dominated = best_lo >= others
    index = pos_w.expand(n * c, -1, -1).gather(1, choice).long()
    top = hi_w.amax(1, keepdim=True)
    zero = torch.zeros_like(top)
    shape = (n, c, *out)
    return PoolRelaxation(
        index.view(shape),
        torch.ones(shape, dtype=box.lo.dtype, device=box.lo.device),
        None,
        dominated.to(box.lo.dtype).view(shape),
        torch.where(dominated, zero, top).view(shape),
        (c, h, w),
    )
