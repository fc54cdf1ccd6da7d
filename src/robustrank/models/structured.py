"""Structured weights: a weight layer whose weight is masked or a product of factors.

Exact structure is carried by ``torch.nn.utils.parametrize``: the layer keeps its type
(``nn.Linear``, ``nn.Conv2d``) and ``layer.weight`` is its *effective* weight, so every
metric (Eqs. 2-3, :func:`~robustrank.models.weight_matrices`), regulariser and attack sees
the masked weight or the product of the factors. The parametrizations are modules with
buffers and parameters, so they survive ``state_dict`` round trips, checkpoints and resume:

* :class:`Masked` -- ``W * M`` with a fixed boolean mask ``M`` (pruning);
* :class:`ScoredMask` -- ``W * TopK(|S|)`` with trainable scores ``S`` and a
  straight-through gradient (HYDRA, Sehwag et al., NeurIPS 2020);
* :class:`LowRank` -- ``U V`` (reshaped to the kernel's shape), ``U`` of shape
  ``(out, r)`` and ``V`` of ``(r, in*kh*kw)``: a conv kernel reshaped as in Appendix B,
  i.e. an ``r``-channel convolution followed by a 1x1 convolution;
* :class:`LowRankSparse` -- ``U V + S * M``, low rank plus a sparse correction (ATMC,
  Gui et al., NeurIPS 2019).

:func:`structure_of` describes a model's structure as plain JSON (checkpoints record it);
:func:`apply_structure` rebuilds the skeleton on a freshly built model, so its state dict
loads. Choosing masks and ranks is :mod:`robustrank.structure`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = [
    "Masked",
    "ScoredMask",
    "LowRank",
    "LowRankSparse",
    "STRUCTURE_KINDS",
    "StructureError",
    "kept_count",
    "check_rank",
    "structured_layers",
    "top_k_mask",
    "structure_of",
    "apply_structure",
    "layer_structure",
    "stored_params",
    "remove_structure",
]


class StructureError(ValueError):
    """A structure request or record does not fit the model (the message names the fix)."""


def kept_count(numel: int, density: float) -> int:
    """How many of ``numel`` entries a ``density`` keeps: ``round(density * numel)``, at least 1."""
    if not 0.0 < density <= 1.0:
        raise StructureError(f"density must lie in (0, 1] (the fraction kept), got {density}")
    return max(1, min(numel, round(density * numel)))


def top_k_mask(values: Tensor, k: int) -> Tensor:
    """A boolean mask of exactly the ``k`` largest entries of ``values``."""
    flat = values.reshape(-1)
    mask = torch.zeros(flat.shape, dtype=torch.bool, device=values.device)
    mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.reshape(values.shape)


def _matrix(w: Tensor) -> Tensor:
    return w.reshape(w.shape[0], -1)


class Masked(nn.Module):
    """Parametrization ``W -> W * M`` with a fixed boolean mask (pruning).

    The mask is a buffer (saved with the model); the masked entries of the stored weight
    get zero gradient, so the effective weight keeps exactly the mask's density.
    """

    kind = "mask"

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.to(torch.bool))

    def forward(self, weight: Tensor) -> Tensor:
        return torch.where(self.mask, weight, weight.new_zeros(()))

    @property
    def density(self) -> float:
        """The fraction of entries the mask keeps."""
        return int(self.mask.sum()) / self.mask.numel()

    def stored(self) -> int:
        """Parameters the effective weight needs: the kept entries."""
        return int(self.mask.sum())

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "density": self.density}


class _StraightThroughTopK(torch.autograd.Function):
    """``TopK(|S|)`` as a 0/1 mask in the forward pass, identity in the backward pass
    (HYDRA's ``GetSubnet``, Ramanujan et al., CVPR 2020)."""

    @staticmethod
    def forward(ctx, scores: Tensor, k: int) -> Tensor:  # type: ignore[override]
        return top_k_mask(scores.abs(), k).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class ScoredMask(nn.Module):
    """Parametrization ``W -> W * TopK(|S|)`` with trainable importance scores ``S``.

    HYDRA (Sehwag et al., "HYDRA: Pruning Adversarially Robust Neural Networks", NeurIPS
    2020): with the weights frozen, the scores are trained under the training objective
    (adversarial or not) through a straight-through gradient; the mask keeps exactly
    ``k`` entries at every step. Scores start proportional to the weights' magnitudes
    (HYDRA's scaled initialisation), so the first mask is the magnitude mask.
    """

    kind = "scores"

    def __init__(self, weight: Tensor, density: float) -> None:
        super().__init__()
        self.k = kept_count(weight.numel(), density)
        fan_in = max(1, _matrix(weight).shape[1])
        peak = weight.detach().abs().max().clamp_min(torch.finfo(weight.dtype).tiny)
        scale = math.sqrt(6.0 / fan_in) / peak
        self.scores = nn.Parameter(weight.detach().abs() * scale)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * _StraightThroughTopK.apply(self.scores, self.k)

    @property
    def mask(self) -> Tensor:
        """The current mask: the top-k scores by magnitude."""
        return top_k_mask(self.scores.detach().abs(), self.k)

    @property
    def density(self) -> float:
        return self.k / self.scores.numel()

    def stored(self) -> int:
        return self.k

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "density": self.density, "k": self.k}


def _balanced_factors(m: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    """``(U sqrt(S), sqrt(S) V^T)`` of the truncated SVD of ``m`` to ``rank``."""
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).contiguous(), (root[:, None] * vh[:rank]).contiguous()


def check_rank(shape: Sequence[int], rank: object, what: str = "rank") -> int:
    """``rank`` if it is an integer in ``[1, min(out, in*kh*kw)]`` for a weight of
    ``shape``; a StructureError starting with ``what`` otherwise."""
    rows, cols = shape[0], math.prod(shape[1:])
    bound = min(rows, cols)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= bound:
        raise StructureError(
            f"{what} must be an integer in [1, {bound}] (its weight matrix is {rows}x{cols}), "
            f"got {rank!r}"
        )
    return rank


class LowRank(nn.Module):
    """Parametrization ``(U, V) -> reshape(U V)``: a weight of rank at most ``rank``.

    ``U`` is ``(out, r)`` and ``V`` is ``(r, in*kh*kw)`` (Appendix B's reshaping), both
    trained. Registered on a layer, the factors start from the truncated SVD of its
    weight (split as ``U sqrt(S)``, ``sqrt(S) V^T``), so at full rank the layer computes
    the same function as before.
    """

    kind = "low_rank"

    def __init__(self, shape: torch.Size | tuple[int, ...], rank: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.rank = check_rank(self.shape, rank)
        self.from_svd = True  # False: zero factors (a skeleton that a state dict fills)

    def forward(self, u: Tensor, v: Tensor) -> Tensor:
        return (u @ v).reshape(self.shape)

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        m = _matrix(weight)
        if not self.from_svd:
            u = m.new_zeros(m.shape[0], self.rank)
            return u, m.new_zeros(self.rank, m.shape[1])
        return _balanced_factors(m, self.rank)

    def stored(self) -> int:
        rows, cols = self.shape[0], math.prod(self.shape[1:])
        return self.rank * (rows + cols)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "rank": self.rank}


class LowRankSparse(nn.Module):
    """Parametrization ``(U, V, S) -> reshape(U V + S * M)``: low rank plus a sparse part.

    The decomposition of ATMC (Gui et al., "Model Compression with Adversarial Robustness:
    A Unified Optimization Framework", NeurIPS 2019). ``U V`` starts from the truncated
    SVD of the weight, ``S`` from the residual, and the fixed mask ``M`` keeps the
    ``density`` largest residual entries.
    """

    kind = "low_rank_sparse"

    def __init__(self, shape: torch.Size | tuple[int, ...], rank: int, density: float) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.rank = check_rank(self.shape, rank)
        numel = math.prod(self.shape)
        self.k = kept_count(numel, density)
        self.register_buffer("mask", torch.zeros(self.shape[0], numel // self.shape[0]).bool())
        self.from_svd = True

    def forward(self, u: Tensor, v: Tensor, sparse: Tensor) -> Tensor:
        return (u @ v + sparse * self.mask).reshape(self.shape)

    def right_inverse(self, weight: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        m = _matrix(weight)
        if not self.from_svd:
            z = m.new_zeros
            return z(m.shape[0], self.rank), z(self.rank, m.shape[1]), z(m.shape)
        u, v = _balanced_factors(m, self.rank)
        residual = m - u @ v
        self.mask.copy_(top_k_mask(residual.abs(), self.k))
        return u, v, (residual * self.mask).contiguous()

    @property
    def density(self) -> float:
        return self.k / self.mask.numel()

    def stored(self) -> int:
        rows, cols = self.mask.shape
        return self.rank * (rows + cols) + self.k

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "rank": self.rank, "density": self.density, "k": self.k}


#: The parametrizations robustrank records in checkpoints, by their ``kind``.
STRUCTURE_KINDS: dict[str, type[nn.Module]] = {
    cls.kind: cls for cls in (Masked, ScoredMask, LowRank, LowRankSparse)
}


def layer_structure(module: nn.Module) -> nn.Module | None:
    """The robustrank parametrization of a layer's weight, or None for a plain weight."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    chain = module.parametrizations["weight"]
    found = [p for p in chain if type(p) in STRUCTURE_KINDS.values()]
    if len(chain) != 1 or len(found) != 1:
        names = ", ".join(type(p).__name__ for p in chain)
        raise StructureError(
            f"{type(module).__name__}.weight carries parametrizations robustrank does not "
            f"record ({names}); remove them or keep one of {', '.join(STRUCTURE_KINDS)}"
        )
    return found[0]


def structured_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module, nn.Module]]:
    """``(module path, layer, its parametrization)`` of every structured weight layer."""
    for name, module in model.named_modules():
        structure = layer_structure(module)
        if structure is not None:
            yield name, module, structure


def stored_params(module: nn.Module) -> int:
    """Parameters a layer's effective weight needs in its structured form: the kept entries
    of a mask, ``r (m + n)`` for factors (plus the sparse part's entries), else all."""
    structure = layer_structure(module)
    return module.weight.numel() if structure is None else int(structure.stored())


def structure_of(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module path: {"kind", "shape", ...}}`` for every structured weight layer: plain
    JSON that :func:`apply_structure` turns back into the same skeleton."""
    out: dict[str, dict[str, Any]] = {}
    for name, module, structure in structured_layers(model):
        with torch.no_grad():
            shape = list(module.weight.shape)
        out[name] = {**structure.describe(), "shape": shape}
    return out


def _skeleton(record: Mapping[str, Any], weight: Tensor) -> nn.Module:
    kind, shape = record.get("kind"), tuple(weight.shape)
    if kind == Masked.kind:
        return Masked(torch.ones(shape, dtype=torch.bool, device=weight.device))
    if kind == ScoredMask.kind:
        return ScoredMask(weight, record["density"])
    if kind == LowRank.kind:
        p = LowRank(shape, record["rank"])
    elif kind == LowRankSparse.kind:
        p = LowRankSparse(shape, record["rank"], record["density"])
    else:
        known = ", ".join(STRUCTURE_KINDS)
        raise StructureError(f"unknown structure kind {kind!r} (known: {known})")
    p.from_svd = False
    return p


def _check_record(name: str, record: Any, weight: Tensor) -> None:
    if not isinstance(record, Mapping):
        what = type(record).__name__
        raise StructureError(f"structure of {name!r} must be an object, got {what}")
    if list(record.get("shape", [])) != list(weight.shape):
        raise StructureError(
            f"structure of {name!r} records shape {record.get('shape')}, but the layer's "
            f"weight is {list(weight.shape)}"
        )


def apply_structure(model: nn.Module, spec: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Register the skeleton of :func:`structure_of`'s ``spec`` on ``model`` (in place):
    parametrizations of the recorded kinds and sizes whose masks, scores and factors a
    state dict then fills. Raises :class:`StructureError` for a layer it cannot find."""
    if not isinstance(spec, Mapping):
        raise StructureError(f"a structure record must be an object, got {type(spec).__name__}")
    modules = dict(model.named_modules())
    for name, record in spec.items():
        module = modules.get(name)
        if module is None or not isinstance(getattr(module, "weight", None), Tensor):
            raise StructureError(f"structure names layer {name!r}, which the model does not have")
        _check_record(name, record, module.weight)
        if layer_structure(module) is not None:
            raise StructureError(f"layer {name!r} is structured already")
        try:
            p = _skeleton(record, module.weight)
        except (KeyError, TypeError) as err:
            raise StructureError(f"structure of {name!r} is incomplete ({err})") from None
        parametrize.register_parametrization(module, "weight", p, unsafe=True)
        if hasattr(p, "from_svd"):
            p.from_svd = True
    return model


def remove_structure(model: nn.Module) -> nn.Module:
    """Fold every structured weight into a plain parameter holding the effective weight
    (same function, dense storage), in place: for export or for dense inference."""
    for _, module, _ in list(structured_layers(model)):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model
