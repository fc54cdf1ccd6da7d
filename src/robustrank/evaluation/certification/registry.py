"""The certifier registry: the one place where bound methods are looked up by name.

A certifier is a function ``fn(graph, x, eps, spec, **options) -> Tensor`` returning, for
a :class:`~robustrank.evaluation.certification.graph.BoundGraph`, clean inputs ``x`` ``(N, ...)``
in [0, 1], a budget ``eps`` and a specification ``spec`` ``(N, S, K)``, sound lower bounds
``(N, S)`` of ``spec @ logits(x')`` over every ``x'`` in the l_inf ball of radius ``eps``
around ``x`` intersected with [0, 1]. Each method registers where it is defined::

    @register_certifier("ibp", description="interval bound propagation (Gowal et al. 2018)")
    def ibp(graph, x, eps, spec) -> Tensor: ...

Keyword options after ``spec`` (with defaults) are the method's options; unknown ones
are refused with the accepted list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import Tensor

from ...registry import (
    Registry,
    check_keyword_options,
    format_options,
    keyword_options,
    summary_line,
)
from .graph import BoundGraph

__all__ = [
    "DEFAULT_CERTIFIER",
    "Certifier",
    "CertifierSpec",
    "REGISTRY",
    "register_certifier",
    "list_certifiers",
    "get_certifier",
]

#: ``fn(graph, x, eps, spec, **options) -> (N, S)`` lower bounds of ``spec @ logits``.
Certifier = Callable[..., Tensor]

#: The positional parameters every certifier takes before its options.
FIXED = 4

#: The method the public functions use when none is given.
DEFAULT_CERTIFIER = "crown"


def _normalise(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"certifier name must be a string, got {type(name).__name__}")
    return name.strip().lower()


@dataclass(frozen=True)
class CertifierSpec:
    """A registered certifier: its name, function, description and keyword options
    (name -> default) read from the function's signature."""

    name: str
    fn: Certifier
    description: str = ""
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __call__(
        self, graph: BoundGraph, x: Tensor, eps: float, spec: Tensor, **options: Any
    ) -> Tensor:
        """Lower bounds ``(N, S)`` of ``spec @ logits`` (see the module docstring)."""
        self.check_options(options)
        return self.fn(graph, x, eps, spec, **options)

    def check_options(self, options: Mapping[str, Any]) -> None:
        """``ValueError`` naming the options the certifier does not take (and the accepted
        ones)."""
        check_keyword_options(f"certifier {self.name!r}", options, self.options)

    def describe(self) -> str:
        """``"name: description (options)"`` for listings."""
        opts = format_options(self.options)
        return f"{self.name}: {self.description}" + (f" ({opts})" if opts else "")


#: Every certifier by name (case-insensitive); each registers where it is defined.
REGISTRY: Registry[CertifierSpec] = Registry(
    "certifier",
    normalise=_normalise,
    hint="register your own with robustrank.evaluation.certification.register_certifier",
)


def register_certifier(
    name: str, *, description: str = "", overwrite: bool = False
) -> Callable[[Certifier], Certifier]:
    """Decorator registering ``fn(graph, x, eps, spec, **options)`` as certifier ``name``
    (stripped, lower case); ``description`` defaults to the docstring's first line."""

    def register(fn: Certifier) -> Certifier:
        spec = CertifierSpec(
            _normalise(name),
            fn,
            description or summary_line(fn),
            MappingProxyType(keyword_options(fn, skip=FIXED)),
        )
        REGISTRY.register(spec.name, spec, overwrite=overwrite)
        return fn

    return register


def list_certifiers() -> list[str]:
    """The registered certifier names, in registration order."""
    return REGISTRY.names()


def get_certifier(name: str) -> CertifierSpec:
    """The :class:`CertifierSpec` registered as ``name``; an
    :class:`~robustrank.registry.UnknownNameError` (with a did-you-mean) otherwise."""
    return REGISTRY.get(name)
