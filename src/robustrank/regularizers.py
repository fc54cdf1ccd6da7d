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

Layers are keyed by the paper's 1-based index (``lambdas = {1: 0.01}`` is lambda_{1,1}, the
first weight layer in forward order), by module path (``{"block.conv1": 0.01}``), by the
paper's alias (``"W1"``) or by a glob over module paths (``{"layer*.conv*": 0.01}``); see
:func:`robustrank.models.match_layers`. A layer selected by two keys is an error.

:class:`Regularizer` is the callable form for your own training loop:
``loss = ce + reg(model)`` is Eq. (8).

Nuclear-norm gradient: :class:`NuclearNorm` is a small autograd function whose backward
returns ``U V^T`` from the reduced SVD ``W = U diag(s) V^T``. That is an element of the
subdifferential of ``||W||_*`` at every ``W`` (for zero singular values it picks the
subgradient with unit weight on those directions) and is well defined even with repeated
or zero singular values, where differentiating ``svdvals`` through the full SVD backward
can produce non-finite values. In the generic case (distinct, non-zero singular values) it
is exactly the gradient.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor, nn

from ._types import NonNegative, check_non_negative
from .models import (
    LayerOrderUnknown,
    WeightLayer,
    as_matrix,
    named_weight_layers,
    select_layers,
)

__all__ = [
    "NuclearNorm",
    "nuclear_norm",
    "l1_penalty",
    "nuclear_penalty",
    "joint_l1_penalty",
    "joint_chain",
    "RegularizerConfig",
    "Regularizer",
    "LayerKey",
    "resolve_lambdas",
    "regularization_terms",
]

#: A regulariser key: a 1-based paper index, a module path, an alias or a glob.
LayerKey = int | str


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


def _needs_order(lambdas: Mapping[Any, float]) -> bool:
    return any(isinstance(k, int) and not isinstance(k, bool) for k in lambdas)


def resolve_lambdas(
    model: nn.Module, lambdas: Mapping[LayerKey, float], what: str
) -> list[tuple[WeightLayer, float]]:
    """Validate a ``{layer key: lambda}`` map against ``model``: ``[(layer, lambda)]`` for the
    non-zero lambdas, in forward order. Every key must select a layer (zero lambdas too),
    and no layer may be selected twice."""
    if not isinstance(lambdas, Mapping):
        raise TypeError(
            f"{what} lambdas must be a mapping {{layer: lambda}} (1-based index, module "
            f"path or glob), got {type(lambdas).__name__}"
        )
    layers = named_weight_layers(model, require_order=_needs_order(lambdas))
    checked = {
        k: check_non_negative(v, f"{what} lambda for layer {k!r}") for k, v in lambdas.items()
    }
    pairs = select_layers(layers, checked, f"{what} regulariser", owner=type(model).__name__)
    return [(layer, lam) for layer, lam in pairs if lam != 0]


def _zero(model: nn.Module) -> Tensor:
    p = next(model.parameters(), None)
    if p is None:
        return torch.zeros(())
    return torch.zeros((), dtype=p.dtype, device=p.device)


def _l1(pairs: list[tuple[WeightLayer, float]], model: nn.Module) -> Tensor:
    total = _zero(model)
    for layer, lam in pairs:
        total = total + lam * layer.weight.abs().sum()
    return total


def _nuclear(pairs: list[tuple[WeightLayer, float]], model: nn.Module) -> Tensor:
    total = _zero(model)
    for layer, lam in pairs:
        total = total + lam * nuclear_norm(layer.weight)
    return total


def l1_penalty(model: nn.Module, lambdas: Mapping[LayerKey, float]) -> Tensor:
    """``sum_i lambda_{1,i} ||W^i||_1``, Eq. (5); ``lambdas`` maps layer keys to lambda."""
    return _l1(resolve_lambdas(model, lambdas, "l1"), model)


def nuclear_penalty(model: nn.Module, lambdas: Mapping[LayerKey, float]) -> Tensor:
    """``sum_i lambda_{*,i} ||W~^i||_*``, Eq. (6), conv kernels reshaped (Appendix B).

    The backward pass uses the ``U V^T`` subgradient (see :class:`NuclearNorm`). Zero
    lambdas cost nothing (no SVD).
    """
    return _nuclear(resolve_lambdas(model, lambdas, "nuclear"), model)


def _chain_layers(model: nn.Module) -> list[WeightLayer]:
    """The fully connected chain of Eq. (7): the trailing run of ``nn.Linear`` layers."""
    try:
        layers = named_weight_layers(model, require_order=True)
    except LayerOrderUnknown as err:
        raise ValueError(f"the joint regulariser (Eq. 7) needs the layers' order: {err}") from None
    chain: list[WeightLayer] = []
    for layer in reversed(layers):
        if not isinstance(layer.module, nn.Linear):
            break
        chain.append(layer)
    if not chain:
        last = type(layers[-1].module).__name__ if layers else "missing"
        raise ValueError(
            f"the joint regulariser (Eq. 7) needs fully connected (nn.Linear) layers at the "
            f"end of the network, but {type(model).__name__}'s last weight layer is {last}; "
            "set joint: 0 for this model"
        )
    return chain[::-1]


def joint_chain(model: nn.Module) -> list[int]:
    """1-based forward indices of the fully connected chain used by Eq. (7).

    It is the trailing run of consecutive ``nn.Linear`` layers ending at the output layer
    (FCNN: all layers; CNN: ``fc1, out``).
    """
    return [layer.index for layer in _chain_layers(model)]


def _joint(chain: list[WeightLayer], lam: float) -> Tensor:
    product = chain[-1].weight
    for layer, above in zip(reversed(chain[:-1]), reversed(chain[1:])):
        w = layer.weight
        if product.shape[1] != w.shape[0]:
            raise ValueError(
                f"joint regulariser: {above.key} ({tuple(product.shape)} so far) and "
                f"{layer.key} {tuple(w.shape)} do not chain; the fully connected layers must "
                "feed each other directly"
            )
        product = product @ w
    return lam * product.abs().sum()


def joint_l1_penalty(model: nn.Module, lam: float) -> Tensor:
    """``lambda_joint ||W^m ... W^1||_1`` over the fully connected chain, Eq. (7).

    The product is formed from the output side (``W^m W^{m-1}`` first), which keeps the
    intermediate products as small as the number of classes. l1 is transpose invariant, so
    the paper's ``W^1 ... W^m`` (row-vector convention) is the same number.
    """
    lam = check_non_negative(lam, "joint lambda")
    chain = _chain_layers(model)  # validates even when lam == 0
    if lam == 0:
        return _zero(model)
    return _joint(chain, lam)


def _check_keys(value: dict[LayerKey, float]) -> dict[LayerKey, float]:
    for key in value:
        if isinstance(key, int) and key < 1:
            raise ValueError(
                f"layer indices are 1-based as in the paper (W1 is the input layer), got {key}"
            )
        if isinstance(key, str) and not key.strip():
            raise ValueError("a layer key is empty; use a module path, a glob or an index")
    return value


Lambdas = Annotated[dict[LayerKey, NonNegative], Field(default_factory=dict)]


class RegularizerConfig(BaseModel):
    """The lambdas of Eq. (8): ``l1`` (Eq. 5) and ``nuclear`` (Eq. 6) map layer keys (1-based
    index, module path, alias or glob) to lambda; ``joint`` is lambda_joint (Eq. 7). All
    default to off.

    ``mode``: ``subgradient`` (default) adds the penalties to the loss (Eq. 8);
    ``proximal`` applies l1 and nuclear as proximal steps after each optimizer step
    (soft-thresholding and singular value thresholding, threshold ``lr * lambda``:
    :mod:`robustrank.structure.proximal`), which set exact zeros and drop the rank exactly;
    the joint term has no closed-form proximal operator and stays in the loss."""

    model_config = ConfigDict(extra="forbid")

    l1: Lambdas
    nuclear: Lambdas
    joint: NonNegative = 0.0
    mode: Literal["subgradient", "proximal"] = "subgradient"

    @field_validator("l1", "nuclear")
    @classmethod
    def _keys(cls, value: dict[LayerKey, float]) -> dict[LayerKey, float]:
        return _check_keys(value)

    @property
    def active(self) -> bool:
        """Whether any lambda is non-zero."""
        return any(self.l1.values()) or any(self.nuclear.values()) or self.joint > 0

    def check_model(self, model: nn.Module) -> None:
        """Raise a clear ValueError if a key selects no layer of ``model`` (or one twice)."""
        for what, lambdas in (("l1", self.l1), ("nuclear", self.nuclear)):
            try:
                resolve_lambdas(model, lambdas, what)
            except ValueError as err:
                raise ValueError(f"regularizers.{err}") from None
        if self.joint > 0:
            _chain_layers(model)

    def plain(self) -> dict[str, Any]:
        """Plain data with the keys' types kept (an int index stays an int in YAML)."""
        data: dict[str, Any] = {"l1": dict(self.l1), "nuclear": dict(self.nuclear)}
        data["joint"] = self.joint
        if self.mode != "subgradient":  # configs written before modes existed stay the same
            data["mode"] = self.mode
        return data

    @property
    def proximal(self) -> bool:
        """Whether l1 and nuclear act as proximal steps (``mode: proximal``)."""
        return self.mode == "proximal" and (any(self.l1.values()) or any(self.nuclear.values()))


class Regularizer:
    """The penalty of Eq. (8) as a callable, for your own training loop.

    Example::

        >>> reg = Regularizer(l1={"layer1.*": 1e-3}, nuclear={"fc": 1e-2})
        >>> loss = F.cross_entropy(model(x), y) + reg(model)

    Keys are resolved against a model once and cached (per model object), so a call costs
    only the penalties themselves. ``reg.terms(model)`` gives the three terms apart.
    """

    def __init__(
        self,
        l1: Mapping[LayerKey, float] | None = None,
        nuclear: Mapping[LayerKey, float] | None = None,
        joint: float = 0.0,
        *,
        proximal: bool = False,
    ) -> None:
        self.config = RegularizerConfig(
            l1=dict(l1 or {}),
            nuclear=dict(nuclear or {}),
            joint=joint,
            mode="proximal" if proximal else "subgradient",
        )
        self._resolved: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()

    @classmethod
    def from_config(cls, config: RegularizerConfig) -> Regularizer:
        """The callable of a validated :class:`RegularizerConfig`."""
        return cls(config.l1, config.nuclear, config.joint, proximal=config.mode == "proximal")

    def _resolve(self, model: nn.Module) -> tuple:
        if model not in self._resolved:
            cfg = self.config
            self._resolved[model] = (
                resolve_lambdas(model, cfg.l1, "l1"),
                resolve_lambdas(model, cfg.nuclear, "nuclear"),
                _chain_layers(model) if cfg.joint > 0 else [],
            )
        return self._resolved[model]

    def layers(self, model: nn.Module) -> tuple[list[tuple[WeightLayer, float]], ...]:
        """``(l1 pairs, nuclear pairs)``: the ``(layer, lambda)`` of Eqs. 5-6 in forward order."""
        l1, nuclear, _ = self._resolve(model)
        return l1, nuclear

    def terms(self, model: nn.Module) -> dict[str, Tensor]:
        """``{"l1", "nuclear", "joint"}`` scalar tensors (Eqs. 5-7). In proximal mode the l1
        and nuclear terms are values without a gradient (their proximal steps do their work)."""
        l1, nuclear, chain = self._resolve(model)
        joint = _joint(chain, self.config.joint) if chain else _zero(model)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.proximal):
            return {"l1": _l1(l1, model), "nuclear": _nuclear(nuclear, model), "joint": joint}

    def __call__(self, model: nn.Module) -> Tensor:
        """The sum of the three terms, to add to the loss (Eq. 8)."""
        t = self.terms(model)
        return t["l1"] + t["nuclear"] + t["joint"]

    def __repr__(self) -> str:
        c = self.config
        return f"Regularizer(l1={c.l1!r}, nuclear={c.nuclear!r}, joint={c.joint!r})"


def regularization_terms(model: nn.Module, cfg: RegularizerConfig) -> dict[str, Tensor]:
    """The penalties of Eq. (8) as ``{"l1", "nuclear", "joint"}`` scalar tensors (Eqs. 5-7)."""
    return Regularizer.from_config(cfg).terms(model)
