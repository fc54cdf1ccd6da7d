"""Optimizers, chosen by name in a training config (``optimizer``), beside ``lr``.

Built in, from ``torch.optim``: ``sgd`` (the paper's plain SGD; the default), ``adam``,
``adamw`` and ``rmsprop``. A config gives the options beside the name; they are checked
against the optimizer's signature::

    lr: 0.001
    optimizer: {name: adam, betas: [0.9, 0.999]}

The top-level ``momentum`` and ``weight_decay`` go to every optimizer that takes them
(:meth:`robustrank.training.TrainConfig.optimizer_options`). Register your own::

    >>> register_optimizer("lion", Lion, description="Lion (Chen et al., 2023)")
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..registry import Registry, check_keyword_options, keyword_options, summary_line

__all__ = [
    "OptimizerEntry",
    "REGISTRY",
    "register_optimizer",
    "get_optimizer",
    "list_optimizers",
    "create_optimizer",
]

OptimizerFactory = Callable[..., torch.optim.Optimizer]


@dataclass(frozen=True)
class OptimizerEntry:
    """A registered optimizer: ``cls(params, lr=..., **options)`` and one line for listings."""

    name: str
    cls: OptimizerFactory
    description: str = ""

    @property
    def options(self) -> dict[str, Any]:
        """The keyword options after ``params`` (``lr`` excluded: the config's ``lr`` sets
        it), with their defaults."""
        options = keyword_options(self.cls, skip=1)
        options.pop("lr", None)
        return options

    def check_options(self, options: Mapping[str, Any]) -> None:
        """``ValueError`` naming the options the optimizer does not take and the ones it does."""
        if "lr" in options:
            raise ValueError(f"optimizer {self.name!r}: set lr beside optimizer, not inside it")
        check_keyword_options(f"optimizer {self.name!r}", options, self.options)


#: Every optimizer by name (case-insensitive).
REGISTRY: Registry[OptimizerEntry] = Registry(
    "optimizer",
    normalise=lambda name: name.strip().lower() if isinstance(name, str) else name,
    hint="register your own with robustrank.training.register_optimizer",
)


def register_optimizer(
    name: str,
    cls: OptimizerFactory | None = None,
    *,
    description: str = "",
    overwrite: bool = False,
) -> Any:
    """Register ``cls(params, lr=..., **options) -> torch.optim.Optimizer`` under ``name``;
    usable as a decorator. ``description`` defaults to the docstring's first line."""

    def entry(c: OptimizerFactory) -> OptimizerEntry:
        if not callable(c):
            raise TypeError(f"optimizer {name!r} must be callable, got {c!r}")
        return OptimizerEntry(REGISTRY.key(name), c, description or summary_line(c))

    return REGISTRY.register(name, cls, overwrite=overwrite, build=entry)


def get_optimizer(name: str) -> OptimizerEntry:
    """The :class:`OptimizerEntry` registered as ``name`` (case-insensitive)."""
    return REGISTRY.get(name)


def list_optimizers() -> list[str]:
    """The registered optimizer names, in registration order (built-ins first)."""
    return REGISTRY.names()


def create_optimizer(
    name: str, params: Iterable[Any], lr: float, **options: Any
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params`` with learning rate ``lr``.

    Options are checked against its signature; YAML lists become tuples (``betas``).
    """
    entry = get_optimizer(name)
    entry.check_options(options)
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return entry.cls(params, lr=lr, **given)


register_optimizer(
    "sgd", torch.optim.SGD, description="SGD; the paper's plain SGD with momentum 0 (default)"
)
register_optimizer("adam", torch.optim.Adam, description="Adam (Kingma & Ba, 2015)")
register_optimizer(
    "adamw",
    torch.optim.AdamW,
    description="AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay",
)
register_optimizer("rmsprop", torch.optim.RMSprop, description="RMSprop (Tieleman & Hinton, 2012)")
