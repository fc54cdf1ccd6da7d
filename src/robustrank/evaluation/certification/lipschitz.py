"""Global Lipschitz bounds from weight norms (the classical baseline, e.g. Szegedy et al.
2014; Tsuzuku et al. 2018 for margins).

With ``h`` the input of the last affine op and ``d`` a specification row folded through
that op, ``|d . (h(x') - h(x))| <= ||d||_1 ||h(x') - h(x)||_inf <= ||d||_1 L eps`` where
``L`` bounds the l_inf -> l_inf Lipschitz constant of ``x -> h(x)``: the product of the
layers' operator norms (Linear: the largest row l1 norm; Conv2d: the largest l1 norm of
an output channel's kernel; batch norm and constant scaling: the largest ``|scale|``;
pooling and ReLU/tanh 1, sigmoid 1/4), and ``L_u + L_v`` for ``u + v`` (so ``1 + ||F||``
for a residual block). The bound ignores the [0, 1] box (sound, looser). For a linear
model it is exactly ``d . x + b_d - eps ||d||_1``.
"""

from __future__ import annotations

from torch import Tensor

from .graph import BoundGraph
from .registry import register_certifier

__all__ = ["node_lipschitz", "lipschitz"]


def node_lipschitz(graph: BoundGraph, like: Tensor) -> list[float]:
    """Per node, an upper bound on the l_inf -> l_inf Lipschitz constant of the map from
    the input to that node (``like`` gives the device and dtype of constants)."""
    consts = [1.0]
    for node in graph.nodes[1:]:
        consts.append(node.op.lipschitz(like) * sum(consts[i] for i in node.inputs))
    return consts


@register_certifier("lipschitz", description="global Lipschitz bound from weight norms")
def lipschitz(graph: BoundGraph, x: Tensor, eps: float, spec: Tensor) -> Tensor:
    """``spec @ logits(x) - eps * ||d||_1 * L`` with ``d`` the specification folded through
    the last affine op and ``L`` the Lipschitz bound of the layers before it."""
    clean = (spec @ graph.forward(x).unsqueeze(-1)).squeeze(-1)
    consts = node_lipschitz(graph, x)
    out = graph.nodes[graph.output]
    if out.op is None or not out.op.affine:
        return clean - eps * spec.abs().sum(-1) * consts[graph.output]
    parts, _ = out.op.backward(spec)
    slack = sum(a.flatten(2).abs().sum(-1) * consts[j] for a, j in zip(parts, out.inputs))
    return clean - eps * slack
