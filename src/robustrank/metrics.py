"""Weight-structure metrics: effective sparsity (Eq. 2) and effective rank (Eq. 3), and
the exact ones beside them: numerical rank, density and parameter counts.

The effective measures are scale invariant ratios of norms. For a matrix with ``n``
entries and rank ``r``:

* ``1 <= effective_sparsity(W) = ||W||_1 / ||W||_F <= sqrt(n)``
* ``1 <= effective_rank(W) = ||W||_* / ||W||_F <= sqrt(r)``

The exact ones: :func:`numerical_rank` counts the singular values above
``sigma_max * max(m, n) * eps`` of the weight's own dtype (NumPy's ``matrix_rank``
convention), :func:`density` the fraction of non-zero entries; the parameter count of a
layer is what its structured form stores (:func:`robustrank.models.stored_params`: the
kept entries of a pruned layer, ``r (m + n)`` for a factorised one). Every metric sees a
layer's effective weight: the masked weight, or the product of its factors.

Convolution kernels (out, in, kh, kw) are reshaped to (out, in*kh*kw) first (Appendix B).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from .models import as_matrix, named_weight_layers, stored_params

__all__ = [
    "effective_sparsity",
    "effective_rank",
    "numerical_rank",
    "rank_tolerance",
    "density",
    "LayerStructure",
    "structure_report",
    "model_compression",
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


def rank_tolerance(w: Tensor, singular_values: Tensor | None = None) -> float:
    """``sigma_max * max(m, n) * eps``, eps of ``w``'s dtype: singular values at or below
    it are rounding noise (NumPy ``matrix_rank``; float32 weights get float32's eps)."""
    m = as_matrix(w.detach())
    s = torch.linalg.svdvals(m.double()) if singular_values is None else singular_values
    dtype = w.dtype if w.is_floating_point() else torch.float32
    return float(s.max()) * max(m.shape) * torch.finfo(dtype).eps


def numerical_rank(w: Tensor) -> int:
    """The number of singular values above :func:`rank_tolerance` (conv kernels reshaped,
    Appendix B): the exact rank up to the weight dtype's rounding; 0 for a zero matrix."""
    if isinstance(w, Tensor) and w.numel() and not bool(w.detach().abs().max() > 0):
        return 0
    m = _prepared(w)
    s = torch.linalg.svdvals(m)
    return int((s > rank_tolerance(w, s)).sum())


def density(w: Tensor) -> float:
    """The fraction of non-zero entries of a weight (1 = dense)."""
    if not isinstance(w, Tensor) or w.numel() == 0:
        raise ValueError("density needs a non-empty tensor")
    return float((w.detach() != 0).sum()) / w.numel()


@dataclass(frozen=True)
class LayerStructure:
    """One row of :func:`structure_report`.

    ``layer`` is the paper's alias (``"W1"``) when the model has one, else the module
    path; ``module`` is always the module path. ``sparsity_bound = sqrt(#entries)`` and
    ``rank_bound = sqrt(rank)`` are the upper bounds of the effective sparsity and rank.
    ``rank`` is the numerical rank at tolerance ``rank_tol`` (:func:`numerical_rank`);
    ``density`` the fraction of non-zeros; ``params`` what the layer's weight stores in its
    structured form and ``compression = #entries / params``.
    """

    layer: str
    shape: tuple[int, int]
    rank: int
    effective_rank: float
    rank_bound: float
    effective_sparsity: float
    sparsity_bound: float
    module: str = ""
    rank_tol: float = 0.0
    density: float = 1.0
    params: int = 0
    compression: float = 1.0

    def as_dict(self) -> dict:
        return asdict(self)


def structure_report(model: nn.Module) -> list[LayerStructure]:
    """Per-layer shape, rank, effective rank and sparsity with their upper bounds, for every
    weight layer of any model, in forward order (:func:`robustrank.models.named_weight_layers`)."""
    rows = []
    for layer in named_weight_layers(model):
        with torch.no_grad():
            w = layer.weight
        m = _prepared(w)
        s = torch.linalg.svdvals(m)
        tol = rank_tolerance(w, s)
        rank = int((s > tol).sum())
        params = stored_params(layer.module)
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
                rank_tol=tol,
                density=density(w),
                params=params,
                compression=m.numel() / params,
            )
        )
    return rows


def model_compression(rows: list[LayerStructure]) -> tuple[int, int, float]:
    """``(params, dense params, compression)`` of the weight layers of a
    :func:`structure_report` together (biases not counted)."""
    params = sum(r.params for r in rows)
    dense = sum(r.shape[0] * r.shape[1] for r in rows)
    return params, dense, dense / params if params else float("nan")


def format_structure_report(rows: list[LayerStructure]) -> str:
    """Render :func:`structure_report` as a plain-text table."""
    width = max([6, *(len(r.layer) for r in rows)])
    head = f"{'layer':<{width}} {'shape':>10} {'rank':>5} {'eff.rank':>9} {'<=':>7} "
    head += f"{'eff.sparsity':>13} {'<=':>8} {'density':>8} {'params':>9} {'compr.':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        shape = f"{r.shape[0]}x{r.shape[1]}"
        lines.append(
            f"{r.layer:<{width}} {shape:>10} {r.rank:>5} {r.effective_rank:>9.3f} "
            f"{r.rank_bound:>7.3f} {r.effective_sparsity:>13.3f} {r.sparsity_bound:>8.2f} "
            f"{r.density:>8.4f} {r.params:>9} {r.compression:>6.1f}x"
        )
    params, dense, ratio = model_compression(rows)
    lines.append(f"weights: {params} of {dense} parameters stored ({ratio:.1f}x compression)")
    return "\n".join(lines)
