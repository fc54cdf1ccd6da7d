"""Proximal steps for the l1 (Eq. 5) and nuclear-norm (Eq. 6) penalties.

Proximal gradient descent (e.g. Parikh & Boyd, "Proximal Algorithms", 2014) takes a
gradient step on the loss without the penalty, then applies the penalty's proximal
operator with threshold ``t = lr * lambda``:

* l1: soft-thresholding, ``prox(W) = sign(W) max(|W| - t, 0)``, which sets entries to
  exactly zero;
* nuclear norm: singular value thresholding (Cai, Candes & Shen, 2010),
  ``prox(W) = U max(S - t, 0) V^T`` of the reshaped matrix (Appendix B), which drops the
  rank exactly. It is the minimiser of ``0.5 ||X - W||_F^2 + t ||X||_*``.

``regularizers: {mode: proximal}`` trains this way; the default ``subgradient`` adds the
penalties to the loss (Eq. 8). A layer with both penalties gets the l1 step, then the
nuclear one. The operators act on a layer's effective weight; on a pruned layer the mask
then applies again (exact zeros stay, the rank after the mask is not exact). Factorised
layers have an exact rank already and take no proximal step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..models import Masked, ScoredMask, StructureError, WeightLayer, as_matrix, layer_structure

__all__ = [
    "soft_threshold",
    "singular_value_threshold",
    "proximal_step",
    "stored_weight",
    "check_proximal",
]


def soft_threshold(w: Tensor, t: float) -> Tensor:
    """``sign(W) max(|W| - t, 0)``: the proximal operator of ``t ||W||_1``."""
    return torch.sign(w) * torch.clamp(w.abs() - t, min=0.0)


def singular_value_threshold(w: Tensor, t: float) -> Tensor:
    """``U max(S - t, 0) V^T`` of ``W`` (conv kernels reshaped, Appendix B), in ``W``'s
    shape: the proximal operator of ``t ||W||_*``."""
    m = as_matrix(w)
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    return ((u * torch.clamp(s - t, min=0.0)) @ vh).reshape(w.shape)


def stored_weight(layer: WeightLayer) -> Tensor:
    """The tensor a proximal step changes: the weight itself, or the stored weight under a
    pruning mask (the mask keeps its zeros). Factorised layers have none."""
    structure = layer_structure(layer.module)
    if structure is None:
        return layer.module.weight
    if isinstance(structure, Masked | ScoredMask):
        return layer.module.parametrizations["weight"].original
    raise StructureError(
        f"regularizers.mode proximal: layer {layer.key!r} is {structure.kind.replace('_', '-')}; "
        "its rank is exact already, so it takes no proximal step: remove its l1/nuclear lambda"
    )


@torch.no_grad()
def proximal_step(
    l1: list[tuple[WeightLayer, float]], nuclear: list[tuple[WeightLayer, float]], lr: float
) -> None:
    """Apply the l1 then the nuclear-norm proximal operator, threshold ``lr * lambda``, to
    each chosen layer in place (after the optimizer's step)."""
    for layer, lam in l1:
        stored_weight(layer).copy_(soft_threshold(layer.weight, lr * lam))
    for layer, lam in nuclear:
        stored_weight(layer).copy_(singular_value_threshold(layer.weight, lr * lam))


def check_proximal(layers: list[tuple[WeightLayer, float]]) -> None:
    """Raise a StructureError if a chosen layer cannot take a proximal step."""
    for layer, _ in layers:
        stored_weight(layer)
