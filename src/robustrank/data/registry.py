"""The dataset registry (timm style): :class:`DatasetSpec`, :func:`register_dataset`,
:func:`list_datasets`, :func:`get_dataset`.

A dataset is a name plus a *loader*, a callable ``loader(split, path, **kw) -> (x, y)``
returning x float32 ``(N, C, H, W)`` in [0, 1] and y int64 ``(N,)``. ``path`` is the
absolute path a :class:`~robustrank.data.refs.DatasetRef` names (None for datasets that
are not read from a path); ``kw`` holds ``data_dir``, ``idx_dir`` and ``progress``, which
a loader may ignore. Built in: ``mnist`` and ``fashion-mnist`` (fetched and verified),
``cifar10`` (binary distribution, from a path) and ``npz`` (arrays in an ``.npz`` file).

Example::

    >>> @register_dataset(name="blobs", input_shape=(1, 8, 8), num_classes=2)
    ... def load_blobs(split, path, **kw):
    ...     '''Two Gaussian blobs.'''
    ...     ...
    >>> x, y = load_dataset("blobs", "train")
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, overload

from torch import Tensor

from ..registry import Registry, summary_line

__all__ = [
    "Loader",
    "DatasetSpec",
    "DatasetInfo",
    "REGISTRY",
    "register_dataset",
    "list_datasets",
    "get_dataset",
]

Loader = Callable[..., tuple[Tensor, Tensor]]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset: input shape ``(C, H, W)``, class count
    and, when known, the class names."""

    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset.

    Attributes:
        name: the name configs, the CLI and :func:`load_dataset` use.
        input_shape: ``(C, H, W)`` of one example, or None when it depends on the file
            (``npz``).
        num_classes: number of classes, or None when it depends on the file.
        splits: the split names the loader accepts (``("train", "test")``).
        loader: ``loader(split, path, **kw) -> (x, y)``: x float32 ``(N, C, H, W)`` in
            [0, 1], y int64 ``(N,)``; see the module docstring.
        checksums: published checksums of the data: per-array SHA-256 (``"train-images"``,
            ...) for the MNIST-like sets, the archive's ``"md5"``/``"sha256"`` for CIFAR-10;
            empty when the data is the user's own.
        needs_path: whether a :class:`DatasetRef` must name a ``path`` (and may pin its
            ``sha256``); datasets without it must not be given a path.
        description: one line for ``robustrank data list``.
        class_names: the class names, if fixed.
        fingerprint: ``fingerprint(path) -> sha256 hex`` of the data at a path; None hashes
            the file's bytes (a directory: every regular file, in sorted order, with its
            relative name).
        inspect: ``inspect(path) -> DatasetInfo`` for datasets whose shape or class count
            depends on the file, reading no more than needed; None loads the splits.
        path_example: a path shown in error messages that ask for one.
    """

    name: str
    input_shape: tuple[int, int, int] | None
    num_classes: int | None
    splits: tuple[str, ...]
    loader: Loader
    checksums: Mapping[str, str] = field(default_factory=dict)
    needs_path: bool = False
    description: str = ""
    class_names: tuple[str, ...] | None = None
    fingerprint: Callable[[Path], str] | None = None
    inspect: Callable[[Path], DatasetInfo] | None = None
    path_example: str = "path/to/data"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ValueError(
                f"dataset name must be letters, digits, '.', '_' or '-' (starting with a letter "
                f"or digit), got {self.name!r}"
            )
        if self.input_shape is not None:
            shape = tuple(int(d) for d in self.input_shape)
            if len(shape) != 3 or min(shape) < 1:
                raise ValueError(
                    f"dataset {self.name!r}: input_shape must be (C, H, W) with positive sizes, "
                    f"got {self.input_shape!r}"
                )
            object.__setattr__(self, "input_shape", shape)
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool) or int(self.num_classes) < 1
        ):
            raise ValueError(f"dataset {self.name!r}: num_classes must be >= 1 or None")
        splits = (self.splits,) if isinstance(self.splits, str) else tuple(self.splits)
        if not splits or len(set(splits)) != len(splits):
            raise ValueError(f"dataset {self.name!r}: splits must be unique names, got {splits}")
        object.__setattr__(self, "splits", splits)
        if not callable(self.loader):
            raise TypeError(f"dataset {self.name!r}: loader must be callable, got {self.loader!r}")
        object.__setattr__(self, "checksums", MappingProxyType(dict(self.checksums)))
        if self.class_names is not None:
            names = tuple(self.class_names)
            if self.num_classes is not None and len(names) != self.num_classes:
                raise ValueError(
                    f"dataset {self.name!r}: {len(names)} class names for "
                    f"{self.num_classes} classes"
                )
            object.__setattr__(self, "class_names", names)


#: Every dataset by name; each registers where it is defined (``mnist.py``, ...).
REGISTRY: Registry[DatasetSpec] = Registry(
    "dataset", hint="register your own with robustrank.data.register_dataset"
)


def _add(spec: DatasetSpec, overwrite: bool) -> DatasetSpec:
    if not isinstance(spec, DatasetSpec):
        raise TypeError(f"register_dataset expects a DatasetSpec, got {type(spec).__name__}")
    return REGISTRY.register(spec.name, spec, overwrite=overwrite)


@overload
def register_dataset(spec: DatasetSpec, *, overwrite: bool = ...) -> DatasetSpec: ...


@overload
def register_dataset(
    spec: None = ..., *, name: str, overwrite: bool = ..., **fields: Any
) -> Callable[[Loader], Loader]: ...


def register_dataset(
    spec: DatasetSpec | None = None,
    *,
    overwrite: bool = False,
    name: str | None = None,
    **fields: Any,
) -> DatasetSpec | Callable[[Loader], Loader]:
    """Register a dataset; with ``name=`` (and other :class:`DatasetSpec` fields) instead of
    a spec, return a decorator that registers the decorated loader.

    Example::

        >>> register_dataset(DatasetSpec("blobs", (1, 8, 8), 2, ("train", "test"), load))
        >>> @register_dataset(name="blobs", input_shape=(1, 8, 8), num_classes=2)
        ... def load(split, path, **kw): ...

    ``splits`` defaults to ``("train", "test")`` and ``description`` to the first line of
    the loader's docstring. An existing name is refused unless ``overwrite``.
    """
    if spec is not None:
        if name is not None or fields:
            raise TypeError("pass either a DatasetSpec or name=/fields for a decorator, not both")
        if callable(spec) and not isinstance(spec, DatasetSpec):
            raise TypeError(
                "register_dataset used as a bare decorator: write @register_dataset(name=..., "
                "input_shape=..., num_classes=...)"
            )
        return _add(spec, overwrite)
    if name is None:
        raise TypeError("register_dataset needs a DatasetSpec, or name= to use it as a decorator")

    def decorate(loader: Loader) -> Loader:
        kw = {"input_shape": None, "num_classes": None, "splits": ("train", "test"), **fields}
        if not kw.get("description"):
            kw["description"] = summary_line(loader)
        _add(DatasetSpec(name=name, loader=loader, **kw), overwrite)
        return loader

    return decorate


def list_datasets() -> list[str]:
    """Registered dataset names, in registration order (built-ins first)."""
    return REGISTRY.names()


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``; ``ValueError`` naming the known ones
    (and the closest match) otherwise."""
    return REGISTRY.get(name)
