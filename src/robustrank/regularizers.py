"""Sparsity and low-rank regularisers of Section 4: l1 (Eq. 5), nuclear (Eq. 6), joint (Eq. 7).

The total training loss is Eq. (8): ``CE + l1 + nuclear + joint``; :func:`regularization_terms`
returns the three penalties separately so that training can log the split.

* **l1** (Eq. 5): ``sum_i lambda_{1,i} ||W^i||_1`` (entrywise).
* **nuclear** (Eq. 6): ``sum_i lambda_{*,i} ||W~^i||_*``, convolution kernels reshaped to
  ``(out, in*kh*kw)`` (Appendix B), the matrices of :func:`robustrank.models.weight_matrices`.
* **joint** (Eq. 7): ``lambda_joint ||W^m ... W^1||_1``, the entrywise l1 norm of the product
  of the fully connected chain, i.e. the end-to-end matrix of the network with its
  activations removed. For the FCNN that is all six layers (a 10 x 784 product); for the
  CNN the chain ``fc1, out`` (10 x 1568).

Layers are numbered from 1 as in the paper (``lambdas = {1: 0.01}`` is lambda_{1,1}).

Nuclear-norm gradient: :class:`NuclearNorm` is a small autograd function whose backward
returns ``U V^T`` from the reduced SVD ``W = U diag(s) V^T``. That is an element of the
subdifferential of ``||W||_*`` at every ``W`` (for zero singular values it picks the
subgradient with unit weight on those directions) and is well defined even with repeated
or zero singular values, where differentiating ``svdvals`` through the full SVD backward
can produce non-finite values. In the generic case (distinct, non-zero singular values) it
is exactly the gradient.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torch import Tensor, nn

from .models import as_matrix, weight_layers

__all__ = [
    "NuclearNorm",
    "nuclear_norm",
    "l1_penalty",
    "nuclear_penalty",
    "joint_l1_penalty",
    "joint_chain",
    "RegularizerConfig",
    "regularization_terms",
]


class NuclearNorm(torch.autograd.Function):
    """``||W||_*`` (sum of singular values) with the subgradient ``U V^T`` as backward."""

    @staticmethod
    def forward(ctx, w: Tensor) -> Tensor:  # type: ignore[override]
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        ctx.save_for_backward(u, vh)
        return s.sum()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        u, vh = ctx.saved_tensors
        return grad * (u @ vh)


def nuclear_norm(w: Tensor) -> Tensor:
    """Differentiable nuclear norm of a matrix or conv kernel (reshaped per Appendix B)."""
    return NuclearNorm.apply(as_matrix(w))


def _layer_count_message(model: nn.Module, n: int) -> str:
    return f"{type(model).__name__} has layers 1..{n} (W1..W{n})"


def _checked_lambdas(
    model: nn.Module, lambdas: Mapping[int, float], what: str
) -> tuple[list[nn.Module], dict[int, float]]:
    """Validate a ``{layer index (1-based): lambda}`` map; drop the zero entries."""
    if not isinstance(lambdas, Mapping):
        raise TypeError(
            f"{what} lambdas must be a mapping {{layer index (1-based): lambda}}, "
            f"got {type(lambdas).__name__}"
        )
    layers = weight_layers(model)
    active: dict[int, float] = {}
    for key, lam in lambdas.items():
        if isinstance(key, bool) or not isinstance(key, int):
            raise TypeError(
                f"{what} layer index must be an int (1-based, as in the paper), got {key!r}"
            )
        if not 1 <= key <= len(layers):
            raise ValueError(
                f"{what} regulariser: layer index {key} does not exist; "
                f"{_layer_count_message(model, len(layers))}"
            )
        _check_lambda(lam, f"{what} lambda for layer {key}")
        if lam != 0:
            active[key] = float(lam)
    return layers, active


def _check_lambda(lam: object, what: str) -> float:
    if isinstance(lam, bool) or not isinstance(lam, int | float):
        raise TypeError(f"{what} must be a number >= 0, got {lam!r}")
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"{what} must be a finite number >= 0 (use 0 to disable), got {lam!r}")
    return float(lam)


def _zero(model: nn.Module) -> Tensor:
    p = next(model.parameters(), None)
    if p is None:
        return torch.zeros(())
    return torch.zeros((), dtype=p.dtype, device=p.device)


def l1_penalty(model: nn.Module, lambdas: Mapping[int, float]) -> Tensor:
    """``sum_i lambda_{1,i} ||W^i||_1``, Eq. (5); ``lambdas`` maps 1-based layer -> lambda."""
    layers, active = _checked_lambdas(model, lambdas, "l1")
    total = _zero(model)
    for i, lam in active.items():
        total = total + lam * layers[i - 1].weight.abs().sum()
    return total


def nuclear_penalty(model: nn.Module, lambdas: Mapping[int, float]) -> Tensor:
    """``sum_i lambda_{*,i} ||W~^i||_*``, Eq. (6), conv kernels reshaped (Appendix B).

    The backward pass uses the ``U V^T`` subgradient (see :class:`NuclearNorm`). Zero
    lambdas cost nothing (no SVD).
    """
    layers, active = _checked_lambdas(model, lambdas, "nuclear")
    total = _zero(model)
    for i, lam in active.items():
        total = total + lam * nuclear_norm(layers[i - 1].weight)
    return total


def joint_chain(model: nn.Module) -> list[int]:
    """1-based indices of the fully connected chain used by Eq. (7).

    It is the trailing run of consecutive ``nn.Linear`` layers ending at the output layer
    (FCNN: all layers; CNN: ``fc1, out``).
    """
    layers = weight_layers(model)
    chain: list[int] = []
    for i in range(len(layers), 0, -1):
        if not isinstance(layers[i - 1], nn.Linear):
            break
        chain.append(i)
    if not chain:
        raise ValueError(
            f"the joint regulariser (Eq. 7) needs fully connected (nn.Linear) layers at the "
            f"end of the network, but {type(model).__name__}'s output layer is "
            f"{type(layers[-1]).__name__ if layers else 'missing'}; set joint: 0 for this model"
        )
    return chain[::-1]


def joint_l1_penalty(model: nn.Module, lam: float) -> Tensor:
    """``lambda_joint ||W^m ... W^1||_1`` over the fully connected chain, Eq. (7).

    The product is formed from the output side (``W^m W^{m-1}`` first), which keeps the
    intermediate products as small as the number of classes. l1 is transpose invariant, so
    the paper's ``W^1 ... W^m`` (row-vector convention) is the same number.
    """
    lam = _check_lambda(lam, "joint lambda")
    chain = joint_chain(model)  # validates even when lam == 0
    if lam == 0:
        return _zero(model)
    layers = weight_layers(model)
    product = layers[chain[-1] - 1].weight
    for i in reversed(chain[:-1]):
        w = layers[i - 1].weight
        if product.shape[1] != w.shape[0]:
            raise ValueError(
                f"joint regulariser: W{i + 1} ({tuple(product.shape)} so far) and W{i} "
                f"{tuple(w.shape)} do not chain; the fully connected layers must feed each "
                "other directly"
            )
        product = product @ w
    return lam * product.abs().sum()


class RegularizerConfig(BaseModel):
    """The lambdas of Eq. (8): ``l1`` (Eq. 5) and ``nuclear`` (Eq. 6) map 1-based layer
    indices to lambda; ``joint`` is lambda_joint (Eq. 7). All default to off."""

    model_config = ConfigDict(extra="forbid")

    l1: dict[int, float] = {}
    nuclear: dict[int, float] = {}
    joint: float = 0.0

    @field_validator("l1", "nuclear")
    @classmethod
    def _per_layer(cls, value: dict[int, float], info) -> dict[int, float]:
        for key, lam in value.items():
            if key < 1:
                raise ValueError(
                    f"layer indices are 1-based as in the paper (W1 is the input layer), got {key}"
                )
            if not math.isfinite(lam) or lam < 0:
                raise ValueError(
                    f"lambda for layer {key} must be a finite number >= 0 "
                    f"(use 0 or remove the entry to disable), got {lam}"
                )
        return value

    @field_validator("joint")
    @classmethod
    def _joint(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"must be a finite number >= 0 (0 disables it), got {value}")
        return value

    @property
    def active(self) -> bool:
        """Whether any lambda is non-zero."""
        return any(self.l1.values()) or any(self.nuclear.values()) or self.joint > 0

    def check_model(self, model: nn.Module) -> None:
        """Raise a clear ValueError if a layer index does not exist in ``model``."""
        n = len(weight_layers(model))
        for what, lambdas in (("l1", self.l1), ("nuclear", self.nuclear)):
            bad = sorted(k for k in lambdas if k > n)
            if bad:
                raise ValueError(
                    f"regularizers.{what}: layer index {bad[0]} does not exist; "
                    f"{_layer_count_message(model, n)}"
                )
        if self.joint > 0:
            joint_chain(model)


def regularization_terms(model: nn.Module, cfg: RegularizerConfig) -> dict[str, Tensor]:
    """The penalties of Eq. (8) as ``{"l1", "nuclear", "joint"}`` scalar tensors (Eqs. 5-7)."""
    return {
        "l1": l1_penalty(model, cfg.l1),
        "nuclear": nuclear_penalty(model, cfg.nuclear),
        "joint": joint_l1_penalty(model, cfg.joint) if cfg.joint > 0 else _zero(model),
    }
