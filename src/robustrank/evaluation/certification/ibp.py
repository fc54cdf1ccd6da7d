"""Interval bound propagation (Gowal et al., 2018, "On the Effectiveness of Interval Bound
Propagation for Training Verifiably Robust Models", Eqs. 6-8).

Boxes go forward node by node (:func:`interval_bounds`); the specification is folded into
the last affine op before its interval step (:func:`spec_lower_from_boxes`, Gowal et al.'s
``C W`` and ``C b``), which is tighter than bounding the logits first. Everything is plain
tensor arithmetic on the modules' current weights, so the bounds are differentiable with
respect to the parameters (IBP training).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .bounds import Box, input_box, lower_over_box
from .graph import BoundGraph
from .registry import register_certifier

__all__ = ["interval_bounds", "spec_lower_from_boxes", "ibp"]


def interval_bounds(graph: BoundGraph, box: Box) -> list[Box]:
    """Boxes of every node of ``graph`` from the input ``box`` (Gowal et al. 2018, Eq. 6)."""
    boxes = [box]
    for node in graph.nodes[1:]:
        boxes.append(node.op.interval(*(boxes[i] for i in node.inputs)))
    return boxes


def spec_lower_from_boxes(graph: BoundGraph, boxes: Sequence[Box], spec: Tensor) -> Tensor:
    """Lower bounds ``(N, S)`` of ``spec @ logits`` from the nodes' boxes, with ``spec``
    folded into the output op when it is affine (Gowal et al. 2018, Eq. 8)."""
    out = graph.nodes[graph.output]
    if out.op is None or not out.op.affine:
        return lower_over_box(spec, 0.0, boxes[graph.output])
    parts, bias = out.op.backward(spec)
    total = bias
    for a, j in zip(parts, out.inputs):
        total = total + lower_over_box(a, 0.0, boxes[j])
    return total


@register_certifier("ibp", description="interval bound propagation (Gowal et al. 2018)")
def ibp(graph: BoundGraph, x: Tensor, eps: float, spec: Tensor) -> Tensor:
    """Interval bound propagation with the specification folded into the last layer."""
    boxes = interval_bounds(graph, input_box(x, eps))
    return spec_lower_from_boxes(graph, boxes, spec)
