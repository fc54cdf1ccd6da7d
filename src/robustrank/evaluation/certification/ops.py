"""The operations of a bound graph, each with what every bound method needs.

Every op computes its output (:meth:`BoundOp.forward`), propagates intervals
(:meth:`BoundOp.interval`, interval bound propagation, Gowal et al. 2018, Eq. 6) and bounds
its l_inf -> l_inf Lipschitz constant (:meth:`BoundOp.lipschitz`). Affine ops also map a
linear bound back to their inputs exactly (:meth:`BoundOp.backward`, the transpose:
``a . (W z + b) = (W^T a) . z + a . b``); nonlinear ops instead give a linear relaxation
of themselves from bounds on their input (:meth:`BoundOp.relax`,
:mod:`~robustrank.evaluation.certification.relaxations`).

Weights are read from the modules at bound time (``module.weight``), never cached, so
masked and factorised layers (``torch.nn.utils.parametrize``, see
:mod:`robustrank.models.structured`) are bounded with their effective weights. A
batch-norm layer in eval mode is a per-channel affine map; directly after a linear or
convolution layer it is folded into that layer's weight and bias.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bounds import Box
from .relaxations import (
    SIGMOID,
    TANH,
    Relaxation,
    maxpool_relaxation,
    relu_relaxation,
    s_shaped_relaxation,
)

__all__ = [
    "BoundOp",
    "Constant",
    "LinearOp",
    "ConvOp",
    "ElementwiseAffineOp",
    "ConstantAffineOp",
    "BatchNormOp",
    "ReshapeOp",
    "AddOp",
    "MeanOp",
    "AvgPoolOp",
    "ActivationOp",
    "MaxPoolOp",
    "batchnorm_affine",
    "transposed_conv",
]


class BoundOp:
    """One operation of a :class:`~robustrank.evaluation.certification.graph.BoundGraph`."""

    #: Whether the op is affine in its inputs (else it has :meth:`relax`).
    affine: ClassVar[bool] = True

    def forward(self, *xs: Tensor) -> Tensor:
        """The op on concrete inputs ``(N, *shape)``."""
        raise NotImplementedError

    def interval(self, *boxes: Box) -> Box:
        """Interval bounds on the output from boxes on the inputs (Gowal et al. 2018)."""
        raise NotImplementedError

    def lipschitz(self, like: Tensor) -> float:
        """An upper bound on the op's l_inf -> l_inf Lipschitz constant (per input);
        ``like`` gives the device and dtype of constants."""
        raise NotImplementedError

    def backward(self, a: Tensor) -> tuple[list[Tensor], Tensor | float]:
        """For coefficients ``a`` ``(B, S, *out)``: the coefficients on each input and the
        constant, ``a . op(z) = sum_i a_i . z_i + b`` (affine ops only)."""
        raise NotImplementedError(f"{type(self).__name__} is not affine")

    def rows(
        self, index: Tensor, shape: tuple[int, ...], like: Tensor
    ) -> tuple[list[Tensor], Tensor | float]:
        """:meth:`backward` of the unit coefficients ``e_k`` for the output neurons ``index``
        (flat positions, ``(B, S)``) of an output of per-example ``shape``: the rows of the
        op's matrix (``like`` gives the dtype and device)."""
        b, s = index.shape
        unit = like.new_zeros(b, s, math.prod(shape)).scatter_(2, index.unsqueeze(-1), 1.0)
        return self.backward(unit.view(b, s, *shape))

    def relax(self, box: Box) -> Relaxation:
        """Linear lower and upper bounds of the op given ``box`` on its input."""
        raise NotImplementedError(f"{type(self).__name__} is affine; it needs no relaxation")

    def describe(self) -> str:
        """A short name for messages."""
        return type(self).__name__


class Constant:
    """A constant operand: a Python number, or a tensor attribute of the model (a buffer
    or parameter, read at bound time), broadcast over the batch."""

    def __init__(
        self,
        value: float | None = None,
        *,
        root: nn.Module | None = None,
        path: str = "",
        batch_dim: bool = False,
    ) -> None:
        self.number, self.root, self.path, self.batch_dim = value, root, path, batch_dim

    def get(self, like: Tensor) -> Tensor:
        """The constant on ``like``'s device and dtype, without a batch dimension."""
        if self.root is None:
            return like.new_tensor(self.number)
        value = self.root
        for part in self.path.split("."):
            value = getattr(value, part)
        value = value.to(device=like.device, dtype=like.dtype)
        return value[0] if self.batch_dim else value


def transposed_conv(
    a: Tensor, weight: Tensor, stride: tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """The transpose of an unpadded convolution with ``weight`` and ``stride`` whose input
    is ``size`` (``H, W``), applied to ``a`` ``(B, C_out, Ho, Wo)``: ``(B, C_in, H, W)``.

    With few input channels (``C_in k^2 <= C_out``) as a matrix product and a fold
    (:func:`_fold_patches`), which is much faster there than ``conv_transpose2d``; else
    ``conv_transpose2d``.
    """
    c_out, c_in, kh, kw = weight.shape
    bsz, _, ho, wo = a.shape
    if c_in * kh * kw <= c_out:
        w = weight.reshape(c_out, -1).t().expand(bsz, -1, -1)
        cols = torch.bmm(w, a.reshape(bsz, c_out, ho * wo))  # matmul would transpose ``a``
        return _fold_patches(cols.view(bsz, c_in, kh, kw, ho, wo), size, stride)
    extra = (size[0] - ((ho - 1) * stride[0] + kh), size[1] - ((wo - 1) * stride[1] + kw))
    return F.conv_transpose2d(a, weight, None, stride, 0, extra)


def _fold_patches(cols: Tensor, size: tuple[int, int], stride: tuple[int, int]) -> Tensor:
    """``F.fold`` of patches ``cols`` ``(B, C, kh, kw, Ho, Wo)`` into ``(B, C, *size)``:
    the sum of the ``kh kw`` shifted planes, in ``F.fold``'s order (which, on the CPU,
    loops over the batch: slow for many small examples)."""
    bsz, c, kh, kw, ho, wo = cols.shape
    (sh, sw), (rows, width) = stride, ((ho - 1) * stride[0] + 1, (wo - 1) * stride[1] + 1)
    out = cols.new_zeros(bsz, c, *size)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i : i + rows : sh, j : j + width : sw] += cols[:, :, i, j]
    return out


def _bias_term(a: Tensor, bias: Tensor | None) -> Tensor | float:
    return 0.0 if bias is None else torch.matmul(a, bias)


def batchnorm_affine(bn: nn.Module, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` per channel of a batch-norm layer in eval mode:
    ``scale = gamma / sqrt(var + eps)``, ``shift = beta - mean * scale``."""
    var, mean = bn.running_var.to(like), bn.running_mean.to(like)
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _fold(
    weight: Tensor, bias: Tensor | None, bn: nn.Module | None
) -> tuple[Tensor, Tensor | None]:
    """``(W, b)`` of a layer followed by batch norm ``bn`` (if any), folded together."""
    if bn is None:
        return weight, bias
    scale, shift = batchnorm_affine(bn, weight)
    view = (-1,) + (1,) * (weight.dim() - 1)
    folded_bias = shift if bias is None else bias * scale + shift
    return weight * scale.view(view), folded_bias


@dataclass(eq=False)
class LinearOp(BoundOp):
    """``nn.Linear`` (``z W^T + b``), with an optional batch norm folded in."""

    module: nn.Linear
    bn: nn.Module | None = None

    def weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """The effective ``(W, b)``, read now (masked / factorised weights included)."""
        return _fold(self.module.weight, self.module.bias, self.bn)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self.weight_bias())

    def interval(self, box: Box) -> Box:
        w, b = self.weight_bias()
        return Box.from_mid_rad(F.linear(box.mid, w, b), F.linear(box.rad, w.abs()))

    def lipschitz(self, like: Tensor) -> float:
        w, _ = self.weight_bias()
        return float(w.detach().abs().sum(1).max())

    def backward(self, a: Tensor) -> tuple[list[Tensor], Tensor | float]:
        w, b = self.weight_bias()
        return [torch.matmul(a, w)], _bias_term(a, b)

    def rows(
        self, index: Tensor, shape: tuple[int, ...], like: Tensor
    ) -> tuple[list[Tensor], Tensor | float]:
        w, b = self.weight_bias()
        return [w[index]], 0.0 if b is None else b[index]


@dataclass(eq=False)
class ConvOp(BoundOp):
    """``nn.Conv2d`` (groups 1, dilation 1, zero padding ``pads`` = left, right, top,
    bottom), with an optional batch norm folded in."""

    module: nn.Conv2d
    pads: tuple[int, int, int, int]
    in_shape: tuple[int, ...]
    bn: nn.Module | None = None

    def weight_bias(self) -> tuple[Tensor, Tensor | None]:
        """The effective ``(W, b)``, read now (masked / factorised weights included)."""
        return _fold(self.module.weight, self.module.bias, self.bn)

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        left, right, top, bottom = self.pads
        if left == right and top == bottom:
            return F.conv2d(x, w, b, self.module.stride, (top, left))
        return F.conv2d(F.pad(x, self.pads), w, b, self.module.stride)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv(x, *self.weight_bias())

    def interval(self, box: Box) -> Box:
        w, b = self.weight_bias()
        return Box.from_mid_rad(self._conv(box.mid, w, b), self._conv(box.rad, w.abs(), None))

    def lipschitz(self, like: Tensor) -> float:
        w, _ = self.weight_bias()
        return float(w.detach().abs().sum((1, 2, 3)).max())

    def backward(self, a: Tensor) -> tuple[list[Tensor], Tensor | float]:
        w, b = self.weight_bias()
        left, right, top, bottom = self.pads
        (bsz, s, c, ho, wo), (_, h, wi) = a.shape, self.in_shape
        padded = (h + top + bottom, wi + left + right)
        back = transposed_conv(a.reshape(bsz * s, c, ho, wo), w, self.module.stride, padded)
        back = back[..., top : top + h, left : left + wi]
        bias = 0.0 if b is None else torch.matmul(a.sum((-2, -1)), b)
        return [back.reshape(bsz, s, *self.in_shape)], bias

    def rows(
        self, index: Tensor, shape: tuple[int, ...], like: Tensor
    ) -> tuple[list[Tensor], Tensor | float]:
        """The kernel of each output neuron placed at its window (no convolution)."""
        w, b = self.weight_bias()
        (bsz, s), (_, ho, wo), (c_in, h, wi) = index.shape, shape, self.in_shape
        left, right, top, bottom = self.pads
        channel, row, col = index // (ho * wo), (index // wo) % ho, index % wo
        row, col = row * self.module.stride[0], col * self.module.stride[1]
        out = like.new_zeros(bsz, s, h + top + bottom, wi + left + right, c_in)
        ex = torch.arange(bsz, device=index.device).unsqueeze(1).expand(bsz, s)
        sp = torch.arange(s, device=index.device).expand(bsz, s)
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                out[ex, sp, row + i, col + j] = w[channel, :, i, j]
        out = out[:, :, top : top + h, left : left + wi].permute(0, 1, 4, 2, 3)
        return [out], 0.0 if b is None else b[channel]


class ElementwiseAffineOp(BoundOp):
    """``z * scale + shift`` with constants broadcast over the batch."""

    def coefficients(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """``(scale, shift)`` on ``like``'s device, broadcastable to one example."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        scale, shift = self.coefficients(x)
        return x * scale + shift

    def interval(self, box: Box) -> Box:
        scale, shift = self.coefficients(box.lo)
        return Box.from_mid_rad(box.mid * scale + shift, box.rad * scale.abs())

    def lipschitz(self, like: Tensor) -> float:
        scale, _ = self.coefficients(like)
        return float(scale.detach().abs().max())

    def backward(self, a: Tensor) -> tuple[list[Tensor], Tensor | float]:
        scale, shift = self.coefficients(a)
        bias = (a * shift).flatten(2).sum(-1)
        return [a * scale], bias


_AFFINE_KINDS = {  # kind -> (scale, shift) from the constant c
    "add": lambda c: (torch.ones_like(c), c),
    "sub": lambda c: (torch.ones_like(c), -c),
    "rsub": lambda c: (-torch.ones_like(c), c),
    "mul": lambda c: (c, torch.zeros_like(c)),
    "div": lambda c: (1 / c, torch.zeros_like(c)),
}


@dataclass(eq=False)
class ConstantAffineOp(ElementwiseAffineOp):
    """``z + c``, ``z - c``, ``c - z``, ``z * c`` or ``z / c`` (``kind``) for a constant ``c``."""

    kind: str
    const: Constant

    def coefficients(self, like: Tensor) -> tuple[Tensor, Tensor]:
        return _AFFINE_KINDS[self.kind](self.const.get(like))

    def describe(self) -> str:
        return f"{self.kind} constant"


@dataclass(eq=False)
class BatchNormOp(ElementwiseAffineOp):
    """Batch norm in eval mode that follows no linear layer: a per-channel affine map."""

    module: nn.Module
    ndim: int  # dimensions of one example

    def coefficients(self, like: Tensor) -> tuple[Tensor, Tensor]:
        scale, shift = batchnorm_affine(self.module, like)
        view = (-1,) + (1,) * (self.ndim - 1)
        return scale.view(view), shift.view(view)


@dataclass(eq=False)
class ReshapeOp(BoundOp):
    """A reshape that keeps the batch dimension (flatten, view, reshape)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.out_shape)

    def interval(self, box: Box) -> Box:
        return Box(self.forward(box.lo), self.forward(box.hi))

    def lipschitz(self, like: Tensor) -> float:
        return 1.0

    def backward(self, a: Tensor) -> tuple[list[Tensor], Tensor | float]:
        return [a.reshape(*a.shape[:2], *self.in_shape)], 0.0


@dataclass(eq=False)
class AddOp(BoundOp):
    """``z1 + z2`` (or ``z1 - z2`` with ``signs = (1, -1)``) of two graph tensors."""

    signs: tuple[int, int] = (1, 1)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        return self.signs[0] * x1 + self.signs[1] * x2

    def interval(self, b1: Box, b2: Box) -> Box:
        s1, s2 = self.signs
        return Box.from_mid_rad(s1 * b1.mid + s2 * b2.mid, b1.rad + b2.rad)

    def lipschitz(self, like: Tensor) -> float:
        return 1.0

    def backward(self, a: Tensor) -> tuple[list[Tensor], Tensor | float]:
        return [s * a for s in self.signs], 0.0


@dataclass(eq=False)
class MeanOp(BoundOp):
    """The mean over non-batch dimensions ``dims`` (of the full tensor, all >= 1), e.g.
    global average pooling ``x.mean(dim=(2, 3))``."""

    dims: tuple[int, ...]
    keepdim: bool
    in_shape: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(self.dims, keepdim=self.keepdim)

    def interval(self, box: Box) -> Box:
        return Box(self.forward(box.lo), self.forward(box.hi))

    def lipschitz(self, like: Tensor) -> float:
        return 1.0

    def backward(self, a: Tensor) -> tuple[list[Tensor], Tensor | float]:
        count = math.prod(self.in_shape[d - 1] for d in self.dims)
        if not self.keepdim:
            for d in sorted(self.dims):
                a = a.unsqueeze(d + 1)
        return [a.expand(*a.shape[:2], *self.in_shape) / count], 0.0


@dataclass(eq=False)
class AvgPoolOp(BoundOp):
    """``F.avg_pool2d`` with any options (a linear map with non-negative weights)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    ceil_mode: bool
    count_include_pad: bool
    divisor_override: int | None
    in_shape: tuple[int, ...]

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(
            x,
            self.kernel,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def interval(self, box: Box) -> Box:
        return Box(self.forward(box.lo), self.forward(box.hi))

    def lipschitz(self, like: Tensor) -> float:
        if self.divisor_override is None:
            return 1.0
        return max(1.0, self.kernel[0] * self.kernel[1] / self.divisor_override)

    def backward(self, a: Tensor) -> tuple[list[Tensor], Tensor | float]:
        b, s = a.shape[:2]
        flat = a.reshape(b * s, *a.shape[2:])
        shape = (b * s, *self.in_shape)
        back = torch.ops.aten.avg_pool2d_backward(
            flat,
            a.new_zeros(()).expand(shape),
            list(self.kernel),
            list(self.stride),
            list(self.padding),
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )
        return [back.reshape(b, s, *self.in_shape)], 0.0


_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}
_ACTIVATION_LIPSCHITZ = {"relu": 1.0, "tanh": 1.0, "sigmoid": 0.25}


@dataclass(eq=False)
class ActivationOp(BoundOp):
    """An elementwise activation: ``relu``, ``tanh`` or ``sigmoid`` (``kind``)."""

    affine: ClassVar[bool] = False
    kind: str

    def forward(self, x: Tensor) -> Tensor:
        return _ACTIVATIONS[self.kind](x)

    def interval(self, box: Box) -> Box:
        return Box(self.forward(box.lo), self.forward(box.hi))

    def lipschitz(self, like: Tensor) -> float:
        return _ACTIVATION_LIPSCHITZ[self.kind]

    def relax(self, box: Box, lower_slope: Tensor | None = None) -> Relaxation:
        if self.kind == "relu":
            return relu_relaxation(box, lower_slope)
        return s_shaped_relaxation(TANH if self.kind == "tanh" else SIGMOID, box)

    def describe(self) -> str:
        return self.kind


@dataclass(eq=False)
class MaxPoolOp(BoundOp):
    """``F.max_pool2d`` (any kernel, stride, padding, dilation, ceil mode)."""

    affine: ClassVar[bool] = False
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    ceil_mode: bool
    out_hw: tuple[int, int]

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(
            x, self.kernel, self.stride, self.padding, self.dilation, self.ceil_mode
        )

    def interval(self, box: Box) -> Box:
        return Box(self.forward(box.lo), self.forward(box.hi))

    def lipschitz(self, like: Tensor) -> float:
        return 1.0

    def relax(self, box: Box) -> Relaxation:
        return maxpool_relaxation(
            box, self.kernel, self.stride, self.padding, self.dilation, self.out_hw
        )
