"""CROWN and CROWN-IBP: backward linear bounds with intermediate bounds.

CROWN (Zhang et al., 2018, "Efficient Neural Network Robustness Certification with General
Activation Functions") needs bounds on every input of a nonlinear op to relax it. Going
through the graph in topological order, each node gets the interval bounds of its inputs'
bounds (Gowal et al. 2018) and, if it is the input of a nonlinear op, is tightened by a
backward pass from each of its neurons (:func:`refine_node`; the result is intersected
with the interval bounds, both being sound). A node that is a single affine map of the
input box (e.g. the first layer) is bounded exactly by intervals and needs no backward
pass; with ``unstable_only`` the neurons that only feed ReLUs and are already stable are
not refined either (their relaxation is exact), nor, before a ReLU and a max pool, the
inactive ones (their output is 0 whatever their bounds). CROWN-IBP (Zhang et al., 2020, "Towards
Stable and Efficient Training of Verifiably Robust Neural Networks") keeps the interval
bounds as the intermediate bounds and runs only the final backward pass.

Two things make the intermediate bounds affordable: the bounds of a convolution's neurons
are computed on their receptive-field windows when the path back to the input allows it
(:mod:`~robustrank.evaluation.certification.windows`, the same bounds), and a max pool right
after an activation is relaxed together with it (one step instead of two). Memory is
bounded by ``max_elements``: one backward pass holds coefficient tensors of at most about
that many elements (chunks of examples and neurons for the intermediate bounds, of
examples for the final bounds).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .backward import backward_bound
from .bounds import Box, input_box, lower_over_box
from .graph import BoundGraph
from .ops import ActivationOp
from .registry import register_certifier
from .relaxations import PoolRelaxation, Relaxation
from .windows import (
    Window,
    group_neurons,
    start_window,
    window_backward,
    window_lower,
    window_path,
)

__all__ = [
    "DEFAULT_MAX_ELEMENTS",
    "Relaxations",
    "check_max_elements",
    "crown_relaxations",
    "refine_node",
    "spec_lower_bound",
    "crown",
    "crown_ibp",
]

#: Default cap on the elements of one coefficient tensor (float32: 128 MiB).
DEFAULT_MAX_ELEMENTS = 1 << 25

#: Cap on the coefficients of one chunk of intermediate bounds, whatever ``max_elements``
#: (float32: 8 MiB): tensors that small are reused by the allocator (larger ones are mapped
#: and zeroed afresh) and stay in the caches, which is faster.
WORK_ELEMENTS = 1 << 21


def check_max_elements(value: object) -> int:
    """``value`` if it is an integer >= 1; ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_elements must be an integer >= 1, got {value!r}")
    return value


def _width(graph: BoundGraph, stop: int) -> int:
    """The largest per-example size of the nodes before ``stop`` (those a backward pass
    holds coefficients on when it starts from ``stop``'s inputs)."""
    return max(node.numel for node in graph.nodes[: max(stop, 1)])


def _relu_consumers(graph: BoundGraph, index: int) -> tuple[bool, bool]:
    """Which of node ``index``'s neurons need no CROWN refinement, as ``(inactive,
    stable)``: when it feeds only ReLUs, a neuron whose upper bound is <= 0 has output 0
    whatever its bounds (``inactive``); when those ReLUs also feed only affine ops, a
    stable neuron's bounds enter no relaxation either (``stable``; a max pool after the
    ReLU uses the bounds of its active inputs)."""
    users = graph.consumers(index)
    relus = all(
        isinstance(graph.nodes[i].op, ActivationOp) and graph.nodes[i].op.kind == "relu"
        for i in users
    )
    affine = all(graph.nodes[j].op.affine for i in users for j in graph.consumers(i))
    return relus, relus and affine


#: ``{node: (source node, relaxation of the node in terms of the source)}``.
Relaxations = dict[int, tuple[int, Relaxation]]


def _neuron_bounds(
    graph: BoundGraph,
    index: int,
    rows: slice,
    neurons: Tensor,
    box: Box,
    relaxations: Relaxations,
) -> tuple[Tensor, Tensor]:
    """CROWN lower and upper bounds ``(B, S)`` of the neurons ``neurons`` (``(B, S)``, flat
    positions) of node ``index`` for the examples ``rows``: one backward pass with the
    specifications ``+e_k`` and ``-e_k``, the first step being the op's rows."""
    node = graph.nodes[index]
    parts, bias = node.op.rows(neurons, node.shape, box.lo)
    pending: dict[int, Tensor] = {}
    for j, part in zip(node.inputs, parts):
        both = torch.cat([part, -part], 1)
        pending[j] = both if j not in pending else pending[j] + both
    if isinstance(bias, Tensor):
        bias = torch.cat([bias, -bias], 1)
    picked = {j: (src, r.select(rows)) for j, (src, r) in relaxations.items() if j < index}
    coef, total = backward_bound(graph, pending, picked, bias)
    low = lower_over_box(coef, total, box.select(rows))
    s = neurons.shape[1]
    return low[:, :s], -low[:, s:]


def _window_bounds(
    graph: BoundGraph,
    index: int,
    rows: slice,
    neurons: Tensor,
    box: Box,
    relaxations: Relaxations,
) -> tuple[Tensor, Tensor]:
    """As :func:`_neuron_bounds`, on the neurons' receptive-field windows
    (:mod:`~robustrank.evaluation.certification.windows`; the same bounds, less work)."""
    node = graph.nodes[index]
    groups = group_neurons(neurons, node.shape[1] * node.shape[2])
    start, bias = start_window(node.op, groups, node.shape)
    both = Window(torch.cat([start.coef, -start.coef], 2), start.row, start.col)
    if isinstance(bias, Tensor):
        bias = torch.cat([bias, -bias], 2)
    picked = {j: (src, r.select(rows)) for j, (src, r) in relaxations.items() if j < index}
    window, total = window_backward(graph, index, both, picked)
    low = window_lower(window, bias + total, box.select(rows))  # (B, G, 2 K)
    ex = torch.arange(len(neurons), device=neurons.device).unsqueeze(1)
    k = groups.channel.shape[2]
    return low[ex, groups.group, groups.slot], -low[ex, groups.group, groups.slot + k]


def _order(todo: Tensor, most: int, shape: tuple[int, ...] | None) -> Tensor:
    """The ``most`` neurons of each row to refine: the ``todo`` ones first, then others.
    Position-major when the node's ``shape`` ``(C, H, W)`` is given (the neurons of one
    position share a window: :func:`~robustrank.evaluation.certification.windows.group_neurons`
    then has full groups in each chunk)."""
    if shape is None:
        return torch.argsort(todo.to(torch.int8), dim=1, descending=True, stable=True)[:, :most]
    c = shape[0]
    flags = todo.view(len(todo), c, -1).transpose(1, 2).flatten(1).to(torch.int8)
    order = torch.argsort(flags, dim=1, descending=True, stable=True)[:, :most]
    return (order % c) * (flags.shape[1] // c) + order // c


def refine_node(
    graph: BoundGraph,
    index: int,
    interval: Box,
    box: Box,
    relaxations: Relaxations,
    *,
    max_elements: int,
    unstable_only: bool,
    skip_inactive: bool = False,
    windows: bool = True,
) -> Box:
    """Node ``index``'s bounds: CROWN bounds (Zhang et al. 2018, Theorem 3.2 with the
    relaxations of the earlier nonlinear nodes) intersected with ``interval``, for every
    neuron, or only the unstable ones when ``unstable_only`` (ReLU inputs), or all but the
    inactive ones (upper bound <= 0) when ``skip_inactive``; on the neurons'
    receptive-field windows when possible and ``windows``.

    Work goes in chunks of examples (a few neurons each, padded to the same count) or of
    one example's neurons, of at most about ``max_elements`` coefficients (and
    ``WORK_ELEMENTS``).
    """
    lo, hi = interval.lo.flatten(1), interval.hi.flatten(1)
    todo = torch.ones_like(lo, dtype=torch.bool)
    if skip_inactive or unstable_only:
        todo &= hi > 0
    if unstable_only:
        todo &= lo < 0
    counts = todo.sum(1)
    most = int(counts.max())
    if most == 0:
        return interval
    window = window_path(graph, index, relaxations) if windows else None
    order = _order(todo, most, None if window is None else graph.nodes[index].shape)
    bound = _neuron_bounds if window is None else _window_bounds
    limit = min(max_elements, WORK_ELEMENTS)
    budget = max(1, limit // (2 * (window or _width(graph, index))))
    per, step = max(1, budget // most), min(most, budget)
    found: list[tuple[Tensor, ...]] = []  # (example, neuron, lower, upper) of each chunk
    for e0 in range(0, len(lo), per):
        rows = slice(e0, e0 + per)
        count = counts[rows]
        examples = torch.arange(e0, e0 + len(count), device=lo.device).unsqueeze(1)
        top = int(count.max())
        for s0 in range(0, top, step):
            neurons = order[rows, s0 : min(s0 + step, top)]  # padded to the chunk's most
            valid = torch.arange(s0, s0 + neurons.shape[1], device=lo.device) < count[:, None]
            low, up = bound(graph, index, rows, neurons, box, relaxations)
            found.append(
                (examples.expand_as(neurons)[valid], neurons[valid], low[valid], up[valid])
            )
    e, k, low, up = (torch.cat(parts) for parts in zip(*found))
    lo = lo.index_put((e, k), torch.maximum(lo[e, k], low))  # out of place: differentiable
    hi = hi.index_put((e, k), torch.minimum(hi[e, k], up))
    return Box(lo.view_as(interval.lo), hi.view_as(interval.hi))


def _relax(graph: BoundGraph, index: int, boxes: list[Box], relaxations: Relaxations) -> None:
    """Add node ``index``'s relaxation; a max pool right after an activation that feeds
    nothing else is relaxed together with it (:meth:`PoolRelaxation.after`)."""
    src = graph.nodes[index].inputs[0]
    relaxation = graph.nodes[index].op.relax(boxes[src])
    before = graph.nodes[src].op
    if (
        isinstance(relaxation, PoolRelaxation)
        and isinstance(before, ActivationOp)
        and graph.consumers(src) == [index]
    ):
        inner, act = relaxations[src]
        relaxations[index] = (inner, relaxation.after(act))
    else:
        relaxations[index] = (src, relaxation)


def crown_relaxations(
    graph: BoundGraph,
    box: Box,
    *,
    refine: bool,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    unstable_only: bool = True,
    windows: bool = True,
) -> tuple[list[Box], Relaxations]:
    """Bounds of every node and the relaxation of every nonlinear node: intervals, tightened
    by CROWN (:func:`refine_node`) at the inputs of nonlinear ops when ``refine`` (CROWN),
    intervals only otherwise (CROWN-IBP, Zhang et al. 2020)."""
    needed, exact = set(graph.needs_bounds()), graph.exact_nodes()
    boxes: list[Box] = [box]
    relaxations: Relaxations = {}
    for i, node in enumerate(graph.nodes[1:], 1):
        b = node.op.interval(*(boxes[j] for j in node.inputs))
        if refine and i in needed and node.op.affine and not exact[i]:
            inactive, stable = _relu_consumers(graph, i)
            b = refine_node(
                graph,
                i,
                b,
                box,
                relaxations,
                max_elements=max_elements,
                unstable_only=unstable_only and stable,
                skip_inactive=unstable_only and inactive,
                windows=windows,
            )
        boxes.append(b)
        if not node.op.affine:
            _relax(graph, i, boxes, relaxations)
    return boxes, relaxations


def spec_lower_bound(
    graph: BoundGraph,
    box: Box,
    spec: Tensor,
    relaxations: Relaxations,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Tensor:
    """Lower bounds ``(N, S)`` of ``spec @ logits`` by one backward pass from the output
    (Zhang et al. 2018, Theorem 3.2 and Corollary 3.3), in chunks of examples."""
    n, s = spec.shape[:2]
    chunk = max(1, max_elements // (s * _width(graph, graph.output + 1)))  # incl. the output
    out = []
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        picked = {j: (src, r.select(rows)) for j, (src, r) in relaxations.items()}
        coef, bias = backward_bound(graph, {graph.output: spec[rows]}, picked)
        out.append(lower_over_box(coef, bias, box.select(rows)))
    return torch.cat(out)


@register_certifier("crown", description="CROWN with CROWN intermediate bounds (Zhang et al. 2018)")
def crown(
    graph: BoundGraph,
    x: Tensor,
    eps: float,
    spec: Tensor,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    unstable_only: bool = True,
    windows: bool = True,
) -> Tensor:
    """CROWN: backward linear bounds, every intermediate bound by CROWN too.

    Options: ``max_elements`` caps the coefficient tensors (memory); ``unstable_only``
    skips ReLU inputs that intervals already show stable; ``windows`` computes the bounds
    of convolutions on receptive-field windows (same bounds, faster).
    """
    box = input_box(x, eps)
    max_elements = check_max_elements(max_elements)
    _, relaxations = crown_relaxations(
        graph,
        box,
        refine=True,
        max_elements=max_elements,
        unstable_only=bool(unstable_only),
        windows=bool(windows),
    )
    return spec_lower_bound(graph, box, spec, relaxations, max_elements)


@register_certifier(
    "crown-ibp", description="CROWN with interval intermediate bounds (Zhang et al. 2020)"
)
def crown_ibp(
    graph: BoundGraph,
    x: Tensor,
    eps: float,
    spec: Tensor,
    *,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> Tensor:
    """CROWN-IBP: interval intermediate bounds, one backward pass for the specification."""
    box = input_box(x, eps)
    _, relaxations = crown_relaxations(graph, box, refine=False)
    return spec_lower_bound(graph, box, spec, relaxations, check_max_elements(max_elements))
