"""alpha-CROWN: CROWN with optimised lower slopes of the ReLUs.

Every lower slope ``a`` in [0, 1] of an unstable ReLU gives a sound CROWN bound (Zhang et
al., 2018, Section 3.2), so the slopes can be chosen to maximise the bound (Xu et al.,
2021, "Fast and Complete: Enabling Complete Neural Network Verification with Rapid and
Massively Parallel Incomplete Verifiers", Section 3.1). Here only the final bound is
optimised: the intermediate bounds are CROWN's, and the slopes of every ReLU, one per
example, specification and neuron, start at CROWN's adaptive choice and take ``steps``
Adam steps on the bound, projected back onto [0, 1]. The best bound seen (per example and
specification) is kept, so the result is never below CROWN's. For one hidden layer this
reaches the optimum of the triangle LP relaxation (its dual, Salman et al. 2019).

The optimised bound is not differentiable with respect to the model (it is detached).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .backward import backward_bound
from .bounds import Box, input_box, lower_over_box
from .crown import DEFAULT_MAX_ELEMENTS, Relaxations, check_max_elements, crown_relaxations
from .graph import BoundGraph
from .ops import ActivationOp
from .registry import register_certifier
from .relaxations import relu_relaxation

__all__ = ["alpha_crown", "optimise_slopes"]


def _relu_nodes(graph: BoundGraph) -> list[int]:
    return [
        i
        for i, n in enumerate(graph.nodes)
        if isinstance(n.op, ActivationOp) and n.op.kind == "relu"
    ]


def _plain_relaxations(graph: BoundGraph, boxes: list[Box], rows: slice) -> Relaxations:
    """Every nonlinear node's own relaxation (none composed) for the examples ``rows``."""
    out: Relaxations = {}
    for i, node in enumerate(graph.nodes[1:], 1):
        if not node.op.affine:
            src = node.inputs[0]
            out[i] = (src, node.op.relax(boxes[src].select(rows)))
    return out


def optimise_slopes(
    graph: BoundGraph,
    box: Box,
    spec: Tensor,
    boxes: list[Box],
    rows: slice,
    steps: int,
    lr: float,
) -> Tensor:
    """The best lower bounds ``(B, S)`` of ``spec @ logits`` for the examples ``rows`` over
    ``steps`` projected Adam steps on the ReLUs' lower slopes (one per example,
    specification and neuron), from CROWN's slopes."""
    relaxations = _plain_relaxations(graph, boxes, rows)
    relus = _relu_nodes(graph)
    boxes_in = {i: boxes[graph.nodes[i].inputs[0]].select(rows) for i in relus}
    s = spec.shape[1]
    alphas = {
        i: relaxations[i][1].lower_slope.unsqueeze(1).expand(-1, s, *b.lo.shape[1:]).clone()
        for i, b in boxes_in.items()
    }
    for a in alphas.values():
        a.requires_grad_(True)
    if not alphas:
        steps = 0  # no ReLU: plain CROWN
    optimiser = torch.optim.Adam(list(alphas.values()), lr=lr) if alphas else None
    best = None
    for step in range(steps + 1):
        with torch.enable_grad():
            for i, b in boxes_in.items():
                wide = Box(b.lo.unsqueeze(1), b.hi.unsqueeze(1))
                relaxations[i] = (relaxations[i][0], relu_relaxation(wide, alphas[i]))
            coef, bias = backward_bound(graph, {graph.output: spec}, relaxations)
            bound = lower_over_box(coef, bias, box)
            loss = -bound.sum()
        best = bound.detach() if best is None else torch.maximum(best, bound.detach())
        if step == steps:
            break
        grads = torch.autograd.grad(loss, list(alphas.values()))
        optimiser.zero_grad()
        for a, g in zip(alphas.values(), grads):
            a.grad = g
        optimiser.step()
        with torch.no_grad():
            for a in alphas.values():
                a.clamp_(0.0, 1.0)
    return best


@register_certifier(
    "alpha-crown", description="CROWN with optimised ReLU lower slopes (Xu et al. 2021)"
)
def alpha_crown(
    graph: BoundGraph,
    x: Tensor,
    eps: float,
    spec: Tensor,
    *,
    steps: int = 20,
    lr: float = 0.1,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    unstable_only: bool = True,
    windows: bool = True,
) -> Tensor:
    """alpha-CROWN on the final bound: CROWN intermediate bounds, ``steps`` projected
    Adam steps (learning rate ``lr``) on the ReLUs' lower slopes per specification."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    max_elements = check_max_elements(max_elements)
    box = input_box(x, eps)
    with torch.no_grad():
        boxes, _ = crown_relaxations(
            graph,
            box,
            refine=True,
            max_elements=max_elements,
            unstable_only=bool(unstable_only),
            windows=bool(windows),
        )
    n, s = spec.shape[:2]
    width = max(node.numel for node in graph.nodes)
    chunk = max(1, max_elements // (s * width))
    out = []
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        out.append(optimise_slopes(graph, box.select(rows), spec[rows], boxes, rows, steps, lr))
    return torch.cat(out)
