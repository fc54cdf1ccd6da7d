"""Bound datatypes: boxes (intervals), the input region, specifications and concretisation.

The perturbation set is the l_inf ball of radius eps around x intersected with the data
box [0, 1]: the box ``[max(x - eps, 0), min(x + eps, 1)]``. A *specification* ``C`` of shape
``(N, S, K)`` asks for lower bounds of ``C z(x')`` (S linear functions of the K logits);
the margin specification has rows ``e_y - e_j`` (Wong & Kolter, 2018; Gowal et al., 2018).

Linear bounds are stored backward (CROWN's convention, Zhang et al. 2018, Theorem 3.2): a
coefficient tensor ``A`` of shape ``(B, S, *shape)`` over a node of per-example shape
``shape`` and a bias ``(B, S)``, meaning ``A . z + b``; ``B`` is the batch, or 1 while the
coefficients are the same for every example.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Box",
    "input_box",
    "margin_spec",
    "lower_over_box",
    "flat_dot",
]


@dataclass(frozen=True)
class Box:
    """Elementwise bounds ``lo <= z <= hi`` of a batch of tensors, shape ``(N, *shape)``."""

    lo: Tensor
    hi: Tensor

    @property
    def mid(self) -> Tensor:
        """The centre ``(lo + hi) / 2``."""
        return (self.lo + self.hi) / 2

    @property
    def rad(self) -> Tensor:
        """The radius ``(hi - lo) / 2`` (non-negative)."""
        return (self.hi - self.lo) / 2

    @classmethod
    def from_mid_rad(cls, mid: Tensor, rad: Tensor) -> Box:
        """The box ``[mid - rad, mid + rad]``."""
        return cls(mid - rad, mid + rad)

    def select(self, rows: Tensor | slice) -> Box:
        """The boxes of the examples ``rows`` (an index tensor or a slice)."""
        return Box(self.lo[rows], self.hi[rows])


def input_box(x: Tensor, eps: float) -> Box:
    """The l_inf ball of radius ``eps`` around ``x`` intersected with ``[0, 1]``."""
    return Box((x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0))


def margin_spec(y: Tensor, num_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The margin specification ``C`` of shape ``(N, K, K)``: row ``j`` is ``e_y - e_j``,
    so ``C z = z_y - z_j`` for every class ``j`` (row ``y`` is zero)."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)


def flat_dot(a: Tensor, v: Tensor) -> Tensor:
    """``sum_i a[b, s, i] v[b, i]`` over the trailing dims: ``a`` is ``(B, S, *shape)``,
    ``v`` is ``(N, *shape)`` with ``B`` equal to ``N`` or 1; returns ``(N, S)``."""
    return torch.matmul(a.flatten(2), v.flatten(1).unsqueeze(-1)).squeeze(-1)


def lower_over_box(a: Tensor, bias: Tensor | float, box: Box) -> Tensor:
    """The minimum of ``a . z + bias`` over ``z`` in ``box``: ``a . mid - |a| . rad + bias``
    (exact for a linear function over a box; CROWN's concretisation, Zhang et al. 2018,
    Corollary 3.3, for l_inf balls clipped to the data box)."""
    return flat_dot(a, box.mid) - flat_dot(a.abs(), box.rad) + bias
