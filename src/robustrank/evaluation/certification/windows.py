"""Backward passes on spatial windows, for the intermediate bounds of convolutional layers.

The coefficients of one neuron of a convolution's output, traced back through
convolutions, elementwise maps and pooling, are zero outside its receptive field. A
:class:`Window` keeps only that field: coefficients ``(B, S, C, h, w)`` and, per
specification, the node coordinates of its top-left corner (auto_LiRPA's "patches" mode,
Xu et al., 2020, "Automatic Perturbation Analysis for Scalable Certified Robustness and
Beyond", Section 3.3). Every step computes exactly what the dense backward pass
(:func:`~robustrank.evaluation.certification.backward.backward_bound`) computes, on the window:

* a convolution maps a window to a larger one by a transposed convolution without
  padding; entries that fall on the padding are zeroed (they multiply padded zeros);
* elementwise maps and relaxations multiply by their tensors cut to the window (zero
  outside the node, which keeps those entries zero);
* a max-pool relaxation sends each coefficient to its chosen input inside the larger
  window.

:func:`window_path` says whether a node can use it (a chain of those ops back to the
input, ending in a window no larger than the input); otherwise the dense pass runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .bounds import Box
from .graph import BoundGraph
from .ops import ConvOp, ElementwiseAffineOp, MaxPoolOp, transposed_conv
from .relaxations import ElementwiseRelaxation, PoolRelaxation, Relaxation

__all__ = ["Window", "window_path", "cut", "start_window", "window_backward", "window_lower"]


@dataclass(frozen=True)
class Window:
    """Coefficients ``coef`` ``(B, S, C, h, w)`` on the window of a node whose top-left
    corner is at ``(row, col)`` (long, ``(B, S)``, node coordinates, may be negative);
    entries outside the node are zero."""

    coef: Tensor
    row: Tensor
    col: Tensor

    @property
    def size(self) -> tuple[int, int]:
        """``(h, w)``."""
        return self.coef.shape[-2], self.coef.shape[-1]


def _conv_size(op: ConvOp, h: int, w: int) -> tuple[int, int]:
    (sh, sw), (kh, kw) = op.module.stride, op.module.kernel_size
    return (h - 1) * sh + kh, (w - 1) * sw + kw


def _pool_size(op: MaxPoolOp, h: int, w: int) -> tuple[int, int]:
    (kh, kw), (sh, sw), (dh, dw) = op.kernel, op.stride, op.dilation
    return (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1


def window_path(
    graph: BoundGraph, index: int, relaxations: Mapping[int, tuple[int, Relaxation]]
) -> int | None:
    """If the backward pass from the convolution at ``index`` can run on windows (a chain
    of convolutions, elementwise affine maps and relaxed activations / max pools back to
    the input, whose input window is smaller than the input), the largest window's
    size ``C * h * w`` on the way; else None."""
    node = graph.nodes[index]
    if not isinstance(node.op, ConvOp) or len(graph.input_shape) != 3:
        return None
    h, w = node.op.module.kernel_size
    i, largest = node.inputs[0], 0
    while True:
        largest = max(largest, graph.nodes[i].shape[0] * h * w)
        if i == 0:
            break
        op = graph.nodes[i].op
        r = relaxations[i][1] if i in relaxations else None
        if isinstance(op, ConvOp):
            (h, w), i = _conv_size(op, h, w), graph.nodes[i].inputs[0]
        elif isinstance(op, ElementwiseAffineOp):
            i = graph.nodes[i].inputs[0]
        elif isinstance(r, ElementwiseRelaxation):
            i = relaxations[i][0]
        elif isinstance(r, PoolRelaxation) and isinstance(op, MaxPoolOp):
            (h, w), i = _pool_size(op, h, w), relaxations[i][0]
        else:
            return None
    _, height, width = graph.input_shape
    return largest if h * w < height * width else None


def _mask(window: Window, shape: tuple[int, ...]) -> Window:
    """Zero the entries of ``window`` outside a node of per-example ``shape``."""
    (h, w), device = window.size, window.coef.device
    rows = window.row.unsqueeze(-1) + torch.arange(h, device=device)
    cols = window.col.unsqueeze(-1) + torch.arange(w, device=device)
    inside = ((rows >= 0) & (rows < shape[1])).unsqueeze(-1) & (
        (cols >= 0) & (cols < shape[2])
    ).unsqueeze(-2)
    return Window(window.coef * inside.unsqueeze(2), window.row, window.col)


def cut(t: Tensor, window: Window) -> Tensor:
    """``t`` (``(B, C, H, W)``) cut to every window: ``(B, S, C, h, w)``, zero outside."""
    (h, w), device = window.size, t.device
    padded = F.pad(t, (w, w, h, h)).permute(0, 2, 3, 1)  # (B, H + 2h, W + 2w, C)
    rows = (window.row + h).unsqueeze(-1) + torch.arange(h, device=device)
    cols = (window.col + w).unsqueeze(-1) + torch.arange(w, device=device)
    ex = torch.arange(t.shape[0], device=device).view(-1, 1, 1, 1)
    return padded[ex, rows.unsqueeze(-1), cols.unsqueeze(-2)].permute(0, 1, 4, 2, 3)


def start_window(
    op: ConvOp, neurons: Tensor, shape: tuple[int, ...]
) -> tuple[Window, Tensor | float]:
    """The window on the convolution's input of the unit specifications ``e_k`` of the
    output neurons ``neurons`` (``(B, S)``, flat): the kernels themselves, and the bias."""
    w, b = op.weight_bias()
    _, ho, wo = shape
    channel, row, col = neurons // (ho * wo), (neurons // wo) % ho, neurons % wo
    left, _, top, _ = op.pads
    start = Window(w[channel], row * op.module.stride[0] - top, col * op.module.stride[1] - left)
    return _mask(start, op.in_shape), 0.0 if b is None else b[channel]


def _conv_back(op: ConvOp, window: Window) -> tuple[Window, Tensor | float]:
    w, b = op.weight_bias()
    bsz, s, c, h, wi = window.coef.shape
    size = _conv_size(op, h, wi)
    back = transposed_conv(window.coef.reshape(bsz * s, c, h, wi), w, op.module.stride, size)
    left, _, top, _ = op.pads
    row, col = window.row * op.module.stride[0] - top, window.col * op.module.stride[1] - left
    bias = 0.0 if b is None else torch.matmul(window.coef.sum((-2, -1)), b)
    return _mask(Window(back.view(bsz, s, *back.shape[1:]), row, col), op.in_shape), bias


def _sum_window(t: Tensor) -> Tensor:
    return t.flatten(2).sum(-1)


def _affine_back(op: ElementwiseAffineOp, window: Window, shape: tuple[int, ...]) -> tuple:
    scale, shift = op.coefficients(window.coef)
    bsz = window.coef.shape[0]
    scale, shift = (t.expand(shape).unsqueeze(0).expand(bsz, *shape) for t in (scale, shift))
    bias = _sum_window(window.coef * cut(shift, window))
    return Window(window.coef * cut(scale, window), window.row, window.col), bias


def _elementwise_back(r: ElementwiseRelaxation, window: Window) -> tuple[Window, Tensor]:
    pos, neg = window.coef.clamp(min=0), window.coef.clamp(max=0)
    coef = pos * cut(r.lower_slope, window) + neg * cut(r.upper_slope, window)
    bias = 0.0
    if r.lower_bias is not None:
        bias = bias + _sum_window(pos * cut(r.lower_bias, window))
    if r.upper_bias is not None:
        bias = bias + _sum_window(neg * cut(r.upper_bias, window))
    return Window(coef, window.row, window.col), bias


def _pool_back(r: PoolRelaxation, op: MaxPoolOp, window: Window) -> tuple[Window, Tensor]:
    """The max-pool relaxation on a window: each coefficient goes to its chosen input, at
    ``(a s + di, b s + dj)`` in the new window for pooled position ``(a, b)`` of the
    window and the chosen input's offset ``(di, dj)`` within its pooling window."""
    (h, w), (sh, sw), (ph, pw) = window.size, op.stride, op.padding
    nh, nw = _pool_size(op, h, w)
    width, device = r.in_shape[2], window.coef.device
    ho, wo = r.index.shape[-2:]
    di = r.index // width - (torch.arange(ho, device=device) * sh - ph).view(-1, 1)
    dj = r.index % width - (torch.arange(wo, device=device) * sw - pw)
    c = di.shape[1]
    offsets = cut(torch.cat([di, dj], 1).to(window.coef.dtype), window).long()
    di, dj = offsets[:, :, :c], offsets[:, :, c:]  # zero outside the node: any valid spot
    rows = (torch.arange(h, device=device) * sh).view(-1, 1) + di
    local = rows * nw + (torch.arange(w, device=device) * sw) + dj
    placed = PoolRelaxation(
        local.flatten(0, 1),
        *(
            None if t is None else cut(t, window).flatten(0, 1)
            for t in (r.lower_slope, r.lower_bias, r.upper_slope, r.upper_bias)
        ),
        (c, nh, nw),
    )
    bsz, s = window.coef.shape[:2]
    coef, bias = placed.backward(window.coef.flatten(0, 1).unsqueeze(1))
    row, col = window.row * sh - ph, window.col * sw - pw
    return Window(coef.view(bsz, s, *coef.shape[2:]), row, col), bias.view(bsz, s)


def window_backward(
    graph: BoundGraph,
    index: int,
    window: Window,
    relaxations: Mapping[int, tuple[int, Relaxation]],
) -> tuple[Window, Tensor | float]:
    """Propagate ``window`` (on the input of the convolution at ``index``) back to the graph
    input along the chain :func:`window_path` accepted; returns the input window and the
    accumulated bias (Zhang et al. 2018, Theorem 3.2, restricted to the windows)."""
    bias: Tensor | float = 0.0
    i = graph.nodes[index].inputs[0]
    while i != 0:
        node = graph.nodes[i]
        if isinstance(node.op, ConvOp):
            window, b = _conv_back(node.op, window)
            i = node.inputs[0]
        elif isinstance(node.op, ElementwiseAffineOp):
            window, b = _affine_back(node.op, window, node.shape)
            i = node.inputs[0]
        else:
            source, r = relaxations[i]
            if isinstance(r, PoolRelaxation):
                window, b = _pool_back(r, node.op, window)
            else:
                window, b = _elementwise_back(r, window)
            i = source
        bias = bias + b
    return window, bias


def window_lower(window: Window, bias: Tensor | float, box: Box) -> Tensor:
    """The minimum over ``box`` of the linear function on the input window (CROWN's
    concretisation on the window): ``(B, S)``."""
    mid, rad = cut(box.mid, window), cut(box.rad, window)
    return _sum_window(window.coef * mid) - _sum_window(window.coef.abs() * rad) + bias
