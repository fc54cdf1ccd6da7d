"""Backward linear bound propagation through a bound graph (the core of CROWN).

Starting from coefficients ``a`` on a node ``z_k``, every op on the way back to the input
replaces its output by its inputs: an affine op exactly (its transpose), a nonlinear op
through its linear relaxation, positive coefficients taking the lower line and negative
ones the upper line (Zhang et al. 2018, Theorem 3.2). What remains is a linear function of
the input, ``A . x + b <= a . z_k`` for every ``x`` in the region where the relaxations
hold, which :func:`~robustrank.evaluation.certification.bounds.lower_over_box` minimises over the
input box (Corollary 3.3). Branches (residual connections) are handled by visiting nodes
in reverse topological order and summing the coefficients a node receives from its users.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from .graph import BoundGraph
from .relaxations import Relaxation

__all__ = ["backward_bound"]


def backward_bound(
    graph: BoundGraph,
    pending: dict[int, Tensor],
    relaxations: Mapping[int, tuple[int, Relaxation]],
    bias: Tensor | float = 0.0,
) -> tuple[Tensor, Tensor | float]:
    """A linear lower bound ``A . x + b`` of ``sum_k a_k . z_k + bias`` in terms of the
    input, for the coefficients ``pending = {k: a_k}`` (``a_k`` of shape
    ``(B, S, *shape_k)``); returns ``A`` ``(B, S, *input_shape)`` and ``b``.

    ``relaxations`` maps each nonlinear node ``i`` before the pending ones to
    ``(source, relaxation)``: a relaxation of ``z_i`` in terms of ``z_source`` (its input,
    or further back when the relaxation spans several ops) for the same ``B`` examples
    (Zhang et al. 2018, Theorem 3.2, on a DAG).
    """
    pending = dict(pending)
    for i in range(max(pending), 0, -1):
        coef = pending.pop(i, None)
        if coef is None:
            continue
        node = graph.nodes[i]
        if node.op.affine:
            parts, b = node.op.backward(coef)
            targets = node.inputs
        else:
            source, relaxation = relaxations[i]
            new, b = relaxation.backward(coef)
            parts, targets = [new], (source,)
        bias = bias + b
        for j, part in zip(targets, parts):
            pending[j] = part if j not in pending else pending[j] + part
    return pending[0], bias
