"""Low-rank factorisation to an exact rank: a weight layer becomes ``U V`` (Appendix B's
reshaping for conv kernels: an ``r``-channel convolution followed by a 1x1 convolution),
initialised by truncated SVD and trained as two factors afterwards
(:class:`robustrank.models.LowRank`). With ``density`` it becomes ``U V + S * M``, low rank
plus a sparse correction as in ATMC (:class:`robustrank.models.LowRankSparse`).

``rank`` sets each layer's rank; ``energy`` picks the smallest rank whose singular values
keep that fraction of ``||W||_F^2`` (Eckart-Young: the truncated SVD is the best rank-r
approximation in Frobenius norm). At full rank the layer computes the same function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..models import (
    LowRank,
    LowRankSparse,
    StructureError,
    WeightLayer,
    as_matrix,
    layer_structure,
)
from ..models import (
    check_rank as check_weight_rank,
)
from .pruning import LayerKey, check_density, chosen_layers

__all__ = ["factorize", "energy_rank", "check_rank"]


def energy_rank(weight: torch.Tensor, energy: float) -> int:
    """The smallest rank ``r`` with ``sum_{i<=r} s_i^2 >= energy * sum_i s_i^2``."""
    if not 0.0 < energy <= 1.0:
        raise StructureError(
            f"energy must lie in (0, 1] (the fraction of ||W||_F^2 kept), got {energy}"
        )
    s = torch.linalg.svdvals(as_matrix(weight.detach()).double())
    kept = torch.cumsum(s**2, 0) / (s**2).sum().clamp_min(torch.finfo(s.dtype).tiny)
    return int(min(len(s), int((kept < energy - 1e-12).sum()) + 1))


def check_rank(layer: WeightLayer, rank: object, what: str) -> int:
    """``rank`` if it is an integer in ``[1, min(shape)]`` of the layer's weight matrix;
    a StructureError naming the layer otherwise."""
    return check_weight_rank(layer.weight.shape, rank, f"{what}: rank of {layer.key!r}")


def _ranks(
    model: nn.Module,
    rank: int | Mapping[LayerKey, int] | None,
    energy: float | None,
    layers: Sequence[LayerKey] | None,
    what: str,
) -> list[tuple[WeightLayer, int]]:
    if (rank is None) == (energy is None):
        raise StructureError(f"{what}: give exactly one of rank= and energy=")
    if energy is not None:
        pairs = chosen_layers(model, energy, layers, what)
        return [(layer, energy_rank(layer.weight, float(e))) for layer, e in pairs]
    assert rank is not None
    pairs = chosen_layers(model, rank, layers, what)
    return [(layer, check_rank(layer, r, what)) for layer, r in pairs]


def _sparse_part(
    model: nn.Module,
    density: float | Mapping[LayerKey, float] | None,
    chosen: list[WeightLayer],
    what: str,
) -> dict[str, float]:
    if density is None:
        return {}
    if isinstance(density, Mapping):
        pairs = chosen_layers(model, density, None, what)
    else:
        pairs = [(layer, density) for layer in chosen]
    names = {layer.name for layer in chosen}
    for layer, d in pairs:
        if layer.name not in names:
            raise StructureError(f"{what}: density names {layer.key!r}, which is not factorised")
        check_density(layer, d, what)
    return {layer.name: float(d) for layer, d in pairs}


def factorize(
    model: nn.Module,
    rank: int | Mapping[LayerKey, int] | None = None,
    *,
    energy: float | None = None,
    layers: Sequence[LayerKey] | None = None,
    density: float | Mapping[LayerKey, float] | None = None,
) -> dict[str, int]:
    """Factorise weight layers to an exact rank, in place; returns ``{module path: rank}``.

    Args:
        model: any ``nn.Module`` with ``nn.Linear`` or convolution layers.
        rank: one rank (for ``layers``, by default every weight layer) or
            ``{layer key: rank}``, each in ``[1, min(out, in*kh*kw)]``.
        energy: instead of ``rank``, the fraction of ``||W||_F^2`` the truncated SVD keeps.
        layers: layer keys (index, module path, alias, glob) for a single ``rank``/``energy``.
        density: adds a sparse correction ``S * M`` keeping this fraction of entries
            (ATMC's low rank plus sparse): one value or ``{layer key: density}``.

    The factors start from the truncated SVD of the current weight, so the layer's new
    weight is its best rank-``r`` approximation (plus the largest residual entries).
    """
    what = "factorize"
    pairs = _ranks(model, rank, energy, layers, what)
    sparse = _sparse_part(model, density, [layer for layer, _ in pairs], what)
    for layer, _ in pairs:
        if layer_structure(layer.module) is not None:
            raise StructureError(
                f"{what}: layer {layer.key!r} is structured already; factorise a plain layer "
                "(to prune and factorise one layer, pass density= here)"
            )
    for layer, r in pairs:
        shape = layer.weight.shape
        p = (
            LowRankSparse(shape, r, sparse[layer.name])
            if layer.name in sparse
            else LowRank(shape, r)
        )
        with torch.no_grad():
            parametrize.register_parametrization(layer.module, "weight", p, unsafe=True)
    return {layer.name: r for layer, r in pairs}
