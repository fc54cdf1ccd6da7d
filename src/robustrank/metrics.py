"""Weight-structure metrics: effective sparsity (Eq. 2) and effective rank (Eq. 3).

Both are scale invariant ratios of norms. For a matrix with ``n`` entries and rank ``r``:

* ``1 <= effective_sparsity(W) = ||W||_1 / ||W||_F <= sqrt(n)``
* ``1 <= effective_rank(W) = ||W||_* / ||W||_F <= sqrt(r)``

Convolution kernels (out, in, kh, kw) are reshaped to (out, in*kh*kw) first (Appendix B).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .models import as_matrix, named_weight_layers

__all__ = [
    "effective_sparsity",
    "effective_rank",
    "LayerStructure",
    "structure_report",
    "format_structure_report",
]


def _prepared(w: Tensor) -> Tensor:
    if not isinstance(w, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(w).__name__}")
    m = as_matrix(w.detach())
    if m.numel() == 0:
        raise ValueError("cannot measure an empty weight matrix")
    if not torch.isfinite(m).all():
        raise ValueError("weight matrix contains NaN or infinite values")
    m = m.to(torch.float64)
    if not bool(m.abs().max() > 0):
        raise ValueError("effective sparsity/rank are undefined for an all-zero matrix")
    return m


def effective_sparsity(w: Tensor) -> float:
    """Effective sparsity ``||W||_1 / ||W||_F`` (Eq. 2); conv kernels reshaped (Appendix B)."""
    m = _prepared(w)
    return float(m.abs().sum() / torch.linalg.matrix_norm(m, "fro"))


def effective_rank(w: Tensor) -> float:
    """Effective rank ``||W||_* / ||W||_F`` (Eq. 3); conv kernels reshaped (Appendix B)."""
    m = _prepared(w)
    s = torch.linalg.svdvals(m)
    return float(s.sum() / torch.linalg.vector_norm(s))


@dataclass(frozen=True)
class LayerStructure:
    """One row of :func:`structure_report`.

    ``layer`` is the paper's alias (``"W1"``) when the model has one, else the module
    path; ``module`` is always the module path. ``sparsity_bound = sqrt(#entries)`` and
    ``rank_bound = sqrt(rank)`` are the upper bounds of the effective sparsity and rank.
    """

    layer: str
    shape: tuple[int, int]
    rank: int
    effective_rank: float
    rank_bound: float
    effective_sparsity: float
    sparsity_bound: float
    module: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def structure_report(model: nn.Module) -> list[LayerStructure]:
    """Per-layer shape, rank, effective rank and sparsity with their upper bounds, for every
    weight layer of any model, in forward order (:func:`robustrank.models.named_weight_layers`)."""
    rows = []
    for layer in named_weight_layers(model):
        m = _prepared(layer.weight)
        s = torch.linalg.svdvals(m)
        tol = s.max() * max(m.shape) * torch.finfo(m.dtype).eps
        rank = int((s > tol).sum())
        rows.append(
            LayerStructure(
                layer=layer.key,
                shape=(int(m.shape[0]), int(m.shape[1])),
                rank=rank,
                effective_rank=float(s.sum() / torch.linalg.vector_norm(s)),
                rank_bound=math.sqrt(rank),
                effective_sparsity=float(m.abs().sum() / torch.linalg.vector_norm(m)),
                sparsity_bound=math.sqrt(m.numel()),
                module=layer.name,
            )
        )
    return rows


def format_structure_report(rows: list[LayerStructure]) -> str:
    """Render :func:`structure_report` as a plain-text table."""
    width = max([6, *(len(r.layer) for r in rows)])
    head = f"{'layer':<{width}} {'shape':>10} {'rank':>5} {'eff.rank':>9} {'<=':>7} "
    head += f"{'eff.sparsity':>13} {'<=':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"{r.shape[0]}x{r.shape[1]}"
        lines.append(
            f"{r.layer:<{width}} {shape:>10} {r.rank:>5} {r.effective_rank:>9.3f} "
            f"{r.rank_bound:>7.3f} {r.effective_sparsity:>13.3f} {r.sparsity_bound:>8.2f}"
        )
    return "\n".join(lines)
