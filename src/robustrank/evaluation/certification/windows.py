"""Backward passes on spatial windows, for the intermediate bounds of convolutional layers.

The coefficients of one neuron of a convolution's output, traced back through
convolutions, elementwise maps and pooling, are zero outside its receptive field. A
:class:`Window` keeps only that field: coefficients ``(B, G, K, C, h, w)`` and, per group
of ``K`` specifications, the node coordinates of its top-left corner (auto_LiRPA's
"patches" mode, Xu et al., 2020, "Automatic Perturbation Analysis for Scalable Certified
Robustness and Beyond", Section 3.3). The neurons of one position (any channel, both
signs) share a window, so a group cuts the tensors it multiplies by once for its ``K``
specifications (:func:`group_neurons`). Every step computes exactly what the dense
backward pass (:func:`~robustrank.evaluation.certification.backward.backward_bound`)
computes, on the window:

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

__all__ = [
    "Groups",
    "Window",
    "cut",
    "group_neurons",
    "start_window",
    "window_backward",
    "window_lower",
    "window_path",
]


@dataclass(frozen=True)
class Window:
    """Coefficients ``coef`` ``(B, G, K, C, h, w)`` on the windows of a node: the ``K``
    specifications of group ``g`` share the window whose top-left corner is at ``(row,
    col)`` (long, ``(B, G)``, node coordinates, may be negative); entries outside the node
    are zero."""

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
    return Window(window.coef * inside[:, :, None, None], window.row, window.col)


def cut(t: Tensor, window: Window) -> Tensor:
    """``t`` (``(B, C, H, W)``) cut to every group's window: ``(B, G, C, h, w)``, zero
    outside."""
    (h, w), device = window.size, t.device
    padded = F.pad(t, (w, w, h, h)).permute(0, 2, 3, 1)  # (B, H + 2h, W + 2w, C)
    rows = (window.row + h).unsqueeze(-1) + torch.arange(h, device=device)
    cols = (window.col + w).unsqueeze(-1) + torch.arange(w, device=device)
    ex = torch.arange(t.shape[0], device=device).view(-1, 1, 1, 1)
    return padded[ex, rows.unsqueeze(-1), cols.unsqueeze(-2)].permute(0, 1, 4, 2, 3).contiguous()


def _cut_k(t: Tensor, window: Window) -> Tensor:
    """:func:`cut`, broadcastable against the coefficients: ``(B, G, 1, C, h, w)``."""
    return cut(t, window).unsqueeze(2)


@dataclass(frozen=True)
class Groups:
    """Neurons ``(B, S)`` of a ``(C, H, W)`` node arranged by plane position: group ``g``
    of example ``b`` has the position ``place[b, g]`` and the channels ``channel[b, g]``
    (``(B, G, K)``; unused slots hold channel 0); neuron ``j`` is in group ``group[b, j]``,
    slot ``slot[b, j]``."""

    channel: Tensor
    place: Tensor
    group: Tensor
    slot: Tensor


#: The work of cutting a group's tensors, in specifications' work (for :func:`_group_size`).
GROUP_COST = 2

#: The most slots per example the groups may have, per neuron (padding: memory).
GROUP_SLACK = 1.25


def _group_size(place: Tensor, plane: int) -> int:
    """The number of neurons ``K`` per group that makes the least work for the neurons at
    the positions ``place`` (``(B, S)``): ``G (K + GROUP_COST)`` for ``G`` groups per
    example, among the ``K <= S // P`` (``P``: the most positions of an example) whose
    ``G K`` slots are at most ``GROUP_SLACK S`` (``K = 1`` always is)."""
    counts = torch.zeros(place.shape[0], plane, dtype=torch.long, device=place.device)
    counts.scatter_add_(1, place, torch.ones_like(place))
    top = max(1, place.shape[1] // int((counts > 0).sum(1).max()))
    k = torch.arange(1, top + 1, device=place.device)
    groups = ((counts.unsqueeze(-1) + k - 1) // k).sum(1).amax(0)
    work = (groups * (k + GROUP_COST)).double()
    work[groups * k > GROUP_SLACK * place.shape[1]] = torch.inf
    return int(k[torch.argmin(work)])


def group_neurons(neurons: Tensor, plane: int) -> Groups:
    """The neurons ``neurons`` (``(B, S)``, flat, ``plane = H * W``) in groups of ``K``
    neurons at one position each (:func:`_group_size`; at most ``GROUP_SLACK S`` slots per
    example, some unused)."""
    bsz, s = neurons.shape
    place, order = (neurons % plane).sort(dim=1, stable=True)
    k = _group_size(place, plane)
    steps = torch.arange(s, device=neurons.device).expand(bsz, s)
    new = torch.ones_like(place, dtype=torch.bool)
    new[:, 1:] = place[:, 1:] != place[:, :-1]
    rank = steps - torch.where(new, steps, 0).cummax(1).values  # within the position
    sorted_group = (rank % k == 0).cumsum(1) - 1
    group = torch.empty_like(sorted_group).scatter_(1, order, sorted_group)
    slot = torch.empty_like(rank).scatter_(1, order, rank % k)
    count = int(sorted_group.max()) + 1
    ex = torch.arange(bsz, device=neurons.device).unsqueeze(1)
    channel = neurons.new_zeros(bsz, count, k).index_put_((ex, group, slot), neurons // plane)
    at = neurons.new_zeros(bsz, count).index_put_((ex, group), neurons % plane)
    return Groups(channel, at, group, slot)


def start_window(
    op: ConvOp, groups: Groups, shape: tuple[int, ...]
) -> tuple[Window, Tensor | float]:
    """The windows on the convolution's input of the unit specifications ``e_k`` of the
    output neurons in ``groups``: the kernels themselves, and the biases ``(B, G, K)``."""
    w, b = op.weight_bias()
    channel, row, col = groups.channel, groups.place // shape[2], groups.place % shape[2]
    left, _, top, _ = op.pads
    start = Window(w[channel], row * op.module.stride[0] - top, col * op.module.stride[1] - left)
    return _mask(start, op.in_shape), 0.0 if b is None else b[channel]


def _conv_back(op: ConvOp, window: Window) -> tuple[Window, Tensor | float]:
    w, b = op.weight_bias()
    *lead, c, h, wi = window.coef.shape
    size = _conv_size(op, h, wi)
    back = transposed_conv(window.coef.reshape(-1, c, h, wi), w, op.module.stride, size)
    left, _, top, _ = op.pads
    row, col = window.row * op.module.stride[0] - top, window.col * op.module.stride[1] - left
    bias = 0.0 if b is None else torch.matmul(window.coef.sum((-2, -1)), b)
    return _mask(Window(back.view(*lead, *back.shape[1:]), row, col), op.in_shape), bias


def _sum_window(t: Tensor) -> Tensor:
    return t.flatten(3).sum(-1)


def _affine_back(op: ElementwiseAffineOp, window: Window, shape: tuple[int, ...]) -> tuple:
    scale, shift = op.coefficients(window.coef)
    bsz = window.coef.shape[0]
    scale, shift = (t.expand(shape).unsqueeze(0).expand(bsz, *shape) for t in (scale, shift))
    bias = _sum_window(window.coef * _cut_k(shift, window))
    return Window(window.coef * _cut_k(scale, window), window.row, window.col), bias


def _elementwise_back(r: ElementwiseRelaxation, window: Window) -> tuple[Window, Tensor]:
    pos, neg = window.coef.clamp(min=0), window.coef.clamp(max=0)
    coef = pos * _cut_k(r.lower_slope, window) + neg * _cut_k(r.upper_slope, window)
    bias = 0.0
    if r.lower_bias is not None:
        bias = bias + _sum_window(pos * _cut_k(r.lower_bias, window))
    if r.upper_bias is not None:
        bias = bias + _sum_window(neg * _cut_k(r.upper_bias, window))
    return Window(coef, window.row, window.col), bias


def _pool_offsets(r: PoolRelaxation, op: MaxPoolOp, window: Window) -> tuple[Tensor, Tensor]:
    """The chosen inputs' offsets ``(di, dj)`` within their pooling windows, cut to the
    windows: long, ``(B, G, C, h, w)``, 0 outside the node (any valid spot)."""
    (sh, sw), (ph, pw) = op.stride, op.padding
    width, device = r.in_shape[2], r.index.device
    ho, wo = r.index.shape[-2:]
    di = r.index // width - (torch.arange(ho, device=device) * sh - ph).view(-1, 1)
    dj = r.index % width - (torch.arange(wo, device=device) * sw - pw)
    offsets = cut(torch.cat([di, dj], 1), window)
    c = di.shape[1]
    return offsets[:, :, :c], offsets[:, :, c:]


def _pool_back(r: PoolRelaxation, op: MaxPoolOp, window: Window) -> tuple[Window, Tensor]:
    """The max-pool relaxation on a window: each coefficient goes to its chosen input, at
    ``(a s + di, b s + dj)`` in the new window for pooled position ``(a, b)`` of the
    window and the chosen input's offset ``(di, dj)`` within its pooling window."""
    (h, w), (sh, sw), (ph, pw) = window.size, op.stride, op.padding
    nh, nw = _pool_size(op, h, w)
    di, dj = _pool_offsets(r, op, window)
    device = di.device
    rows = (torch.arange(h, device=device) * sh).view(-1, 1) + di
    local = rows * nw + (torch.arange(w, device=device) * sw) + dj
    placed = PoolRelaxation(
        local.flatten(0, 1),
        *(
            None if t is None else cut(t, window).flatten(0, 1)
            for t in (r.lower_slope, r.lower_bias, r.upper_slope, r.upper_bias)
        ),
        (di.shape[2], nh, nw),
    )
    bsz, g, k = window.coef.shape[:3]
    coef, bias = placed.backward(window.coef.flatten(0, 1))  # the group's K specifications
    row, col = window.row * sh - ph, window.col * sw - pw
    return Window(coef.view(bsz, g, k, *coef.shape[2:]), row, col), bias.view(bsz, g, k)


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
    concretisation on the window): ``(B, G, K)``."""
    mid, rad = _cut_k(box.mid, window), _cut_k(box.rad, window)
    return _sum_window(window.coef * mid) - _sum_window(window.coef.abs() * rad) + bias
