"""Pruning methods, chosen by name (``structure.prune.method``): how entries are ranked.

* ``magnitude`` (default): keep the largest ``|W|`` (Han et al., NeurIPS 2015);
* ``random``: keep a seeded uniformly random subset, the control that separates "this
  density" from "these weights";
* ``scores``: HYDRA (Sehwag et al., NeurIPS 2020): importance scores trained under the
  training objective with the weights frozen (:class:`robustrank.models.ScoredMask`).

Register your own ranking with :func:`register_pruning_method`; a method maps a weight and
a seeded generator to one importance per entry, and the mask keeps the top ``k``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..registry import Registry, summary_line

__all__ = [
    "PruningMethod",
    "REGISTRY",
    "register_pruning_method",
    "get_pruning_method",
    "list_pruning_methods",
]

Importance = Callable[[Tensor, torch.Generator], Tensor]


@dataclass(frozen=True)
class PruningMethod:
    """A registered pruning method: ``importance(weight, generator)`` ranks the entries
    (the top ``k`` are kept), or ``trainable`` scores (HYDRA) decide the mask in training."""

    name: str
    importance: Importance | None
    description: str = ""
    trainable: bool = False


#: Every pruning method by name (case-insensitive).
REGISTRY: Registry[PruningMethod] = Registry(
    "pruning method",
    normalise=lambda name: name.strip().lower() if isinstance(name, str) else name,
    hint="register your own with robustrank.structure.register_pruning_method",
)


def register_pruning_method(
    name: str,
    importance: Importance | None = None,
    *,
    description: str = "",
    overwrite: bool = False,
) -> Any:
    """Register ``importance(weight, generator) -> Tensor`` (same shape, larger = kept)
    under ``name``; usable as a decorator."""

    def entry(fn: Importance) -> PruningMethod:
        return PruningMethod(REGISTRY.key(name), fn, description or summary_line(fn))

    return REGISTRY.register(name, importance, overwrite=overwrite, build=entry)


def get_pruning_method(name: str) -> PruningMethod:
    """The :class:`PruningMethod` registered as ``name``."""
    return REGISTRY.get(name)


def list_pruning_methods() -> list[str]:
    """The registered pruning methods, built-ins first."""
    return REGISTRY.names()


@register_pruning_method("magnitude")
def magnitude(weight: Tensor, generator: torch.Generator) -> Tensor:
    """Keep the largest magnitudes |W| (Han et al., NeurIPS 2015); the default."""
    return weight.detach().abs()


@register_pruning_method("random")
def random(weight: Tensor, generator: torch.Generator) -> Tensor:
    """Keep a seeded uniformly random subset: the control for "this density, any weights"."""
    return torch.rand(weight.shape, generator=generator).to(weight.device)


REGISTRY.register(
    "scores",
    PruningMethod(
        "scores",
        None,
        "HYDRA (Sehwag et al., NeurIPS 2020): scores trained under the training "
        "objective with the weights frozen, top-k mask with a straight-through gradient",
        trainable=True,
    ),
)
