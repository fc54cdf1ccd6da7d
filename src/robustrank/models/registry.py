"""The model registry (timm style): ``@register_model``, ``create_model``, ``list_models``.

A model is named either by a registered name (``"fcnn"``, ``"cnn"``, or one added with
``@register_model``) or by an import path ``"package.module:factory"``. An import path
runs code that a config or checkpoint file names, so it is resolved only when the caller
passes ``trust_code=True`` (CLI: ``--trust-code``); the module is imported with the
working directory on ``sys.path``.

``create_model`` records the name, options and input shape on the model
(``model.robustrank_spec``), so that a checkpoint can rebuild it and the layers' forward
order can be probed (:mod:`robustrank.models.layers`).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, overload

import torch
from torch import Tensor, nn

from .._modes import eval_mode
from ..registry import Registry, summary_line

__all__ = [
    "ModelEntry",
    "REGISTRY",
    "UntrustedCodeError",
    "register_model",
    "list_models",
    "get_model",
    "get_model_entry",
    "create_model",
    "is_import_path",
    "resolve_factory",
    "model_spec",
    "input_shape_of",
    "set_input_shape",
    "output_classes",
]

_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


class UntrustedCodeError(ValueError):
    """An import path would have to be imported, but the caller did not trust it."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its factory, the input shape it expects (C, H, W) if fixed, a
    one-line description (shown by ``robustrank models``) and the dataset it is evaluated on
    when a checkpoint does not say (the paper pairs the FCNN with MNIST, the CNN with
    Fashion-MNIST)."""

    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, ...] | None = None
    description: str = ""
    dataset: str | None = None


#: Every model by name; each registers where it is defined (``@register_model``).
REGISTRY: Registry[ModelEntry] = Registry(
    "model",
    hint="register your own with @robustrank.models.register_model, or name a factory by "
    "import path 'package.module:factory'",
)

Factory = Callable[..., nn.Module]


@overload
def register_model(
    name: str,
    factory: Factory,
    *,
    input_shape: tuple[int, ...] | None = ...,
    description: str = ...,
    dataset: str | None = ...,
    overwrite: bool = ...,
) -> Factory: ...


@overload
def register_model(
    name: str,
    factory: None = ...,
    *,
    input_shape: tuple[int, ...] | None = ...,
    description: str = ...,
    dataset: str | None = ...,
    overwrite: bool = ...,
) -> Callable[[Factory], Factory]: ...


def register_model(
    name: str,
    factory: Factory | None = None,
    *,
    input_shape: tuple[int, ...] | None = None,
    description: str = "",
    dataset: str | None = None,
    overwrite: bool = False,
) -> Factory | Callable[[Factory], Factory]:
    """Register a model factory under ``name``; usable as a decorator.

    Example::

        >>> @register_model("small-resnet", input_shape=(3, 32, 32))
        ... def small_resnet(width: int = 16) -> nn.Module: ...
        >>> model = create_model("small-resnet", width=32)

    Args:
        name: the name configs and the CLI use. It must not look like an import path.
        factory: a class or function returning an ``nn.Module``; omit it to decorate.
        input_shape: ``(C, H, W)`` the model expects, if fixed (used to find the layers'
            forward order without data).
        description: one line for ``robustrank models``.
        dataset: the registered dataset to evaluate it on by default.
        overwrite: replace an existing registration instead of refusing it.
    """
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise ValueError(f"model name must be a non-empty string without ':', got {name!r}")
    if input_shape is not None:
        input_shape = tuple(int(d) for d in input_shape)

    def entry(fn: Factory) -> ModelEntry:
        if not callable(fn):
            raise TypeError(f"model factory for {name!r} must be callable, got {fn!r}")
        return ModelEntry(name, fn, input_shape, description or summary_line(fn), dataset)

    return REGISTRY.register(name, factory, overwrite=overwrite, build=entry)


def list_models() -> list[str]:
    """Registered model names (import paths are accepted as well, see module docstring)."""
    return sorted(REGISTRY.names())


def is_import_path(name: str) -> bool:
    """Whether ``name`` has the form ``"package.module:factory"``."""
    return isinstance(name, str) and _IMPORT_PATH.fullmatch(name) is not None


def get_model(name: str) -> ModelEntry:
    """The :class:`ModelEntry` registered as ``name``; a ``ValueError`` listing the
    registered names (and the closest one) otherwise."""
    return REGISTRY.get(name)


#: The former name of :func:`get_model`, kept for existing code.
get_model_entry = get_model


def resolve_factory(path: str, *, trust_code: bool = False) -> Factory:
    """Import ``"package.module:factory"`` (working directory on ``sys.path``).

    Raises :class:`UntrustedCodeError` without importing anything unless ``trust_code``.
    """
    if not is_import_path(path):
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:factory'")
    if not trust_code:
        raise UntrustedCodeError(
            f"model {path!r} is an import path: building it imports and runs the code of "
            f"{path.split(':')[0]!r}. Nothing was imported. If you trust that code, pass "
            "trust_code=True (CLI: --trust-code)"
        )
    module_name, attr = path.split(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"cannot import {module_name!r} for model {path!r} ({err}); run from the directory "
            "that holds it or put it on PYTHONPATH"
        ) from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {path!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model {path!r} does not name a callable (class or function)")
    return obj


def create_model(name: str, *, trust_code: bool = False, **options: Any) -> nn.Module:
    """Build a model by registered name or import path, e.g. ``create_model("cnn")``.

    ``trust_code=True`` is required for an import path (see the module docstring). The
    name, options and input shape are recorded on the model (``model.robustrank_spec``).
    """
    if is_import_path(name):
        factory, shape = resolve_factory(name, trust_code=trust_code), None
    else:
        entry = get_model(name)
        factory, shape = entry.factory, entry.input_shape
    try:
        model = factory(**options)
    except TypeError as err:
        raise ValueError(f"bad options for model {name!r}: {err}") from err
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {name!r} returned {type(model).__name__}, not nn.Module")
    model.robustrank_spec = {"name": name, "options": dict(options)}  # type: ignore[assignment]
    if shape is not None:
        set_input_shape(model, shape)
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The ``{"name", "options"}`` a model was created with (for checkpoints and reports)."""
    spec = getattr(model, "robustrank_spec", None)
    if spec is None:
        raise ValueError(
            f"{type(model).__name__} was not built by robustrank.create_model, so it cannot "
            "be rebuilt from its name; register it with @register_model (or name it by "
            "import path) and build it with create_model(name, **options)"
        )
    return spec


def set_input_shape(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Record the ``(C, H, W)`` inputs ``model`` takes (to probe its layers' forward order)."""
    shape = tuple(int(d) for d in shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"input shape must be positive dimensions like (3, 32, 32), got {shape}")
    model.__dict__["robustrank_input_shape"] = shape
    return model


def input_shape_of(model: nn.Module) -> tuple[int, ...] | None:
    """The recorded input shape of ``model`` (see :func:`set_input_shape`), if any."""
    return model.__dict__.get("robustrank_input_shape")


def output_classes(model: nn.Module, example: Tensor) -> int | None:
    """Number of classes ``model`` predicts: the width ``K`` of its logits ``(N, K)`` on the
    first row of ``example`` (one forward pass in eval mode without gradients, on the
    device of the model's parameters; modes restored). None if the output is not a
    2-D tensor. Works for any classifier, whatever its factory's options are called."""
    param = next(model.parameters(), None)
    x = example[:1] if param is None else example[:1].to(param.device)
    with eval_mode(model), torch.no_grad():
        out = model(x)
    return int(out.shape[1]) if isinstance(out, Tensor) and out.ndim == 2 else None
