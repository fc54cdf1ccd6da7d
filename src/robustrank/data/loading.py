"""``load_dataset``, ``dataset_fingerprint`` and ``dataset_info`` for any registered dataset."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._util import check_choice
from .errors import DataError, DataIntegrityError, DataUnavailableError
from .fetching import VerifiedLoader
from .hashing import file_digest, tree_sha256
from .refs import DatasetRef
from .registry import DatasetInfo, DatasetSpec, get_dataset

__all__ = ["load_dataset", "dataset_fingerprint", "dataset_info"]

RefLike = str | DatasetRef | Mapping[str, Any]


def _as_ref(value: RefLike, path: str | Path | None = None) -> DatasetRef:
    """A :class:`DatasetRef` from a name, a mapping or a ref, with ``path`` added."""
    if isinstance(value, str):
        get_dataset(value)  # the plain "unknown dataset ..." error for a bare name
        value = {"name": value}
    if path is not None:
        raw = value.model_dump() if isinstance(value, DatasetRef) else dict(value)
        if raw.get("path") is not None:
            raise ValueError(
                f"dataset {raw.get('name')!r}: path given twice ({raw['path']!r} in the "
                f"reference and {str(path)!r} as path=); pass it once"
            )
        value = {**raw, "path": str(path)}
    return DatasetRef.parse(value)


def _existing_path(ref: DatasetRef) -> Path | None:
    where = ref.resolved_path()
    if where is not None and not where.exists():
        raise DataUnavailableError(
            f"dataset {ref.name}: {where} does not exist (path {ref.path!r}; relative paths "
            f"are resolved against the current directory, {Path.cwd()}). Fix: correct the "
            "path or run from the directory it is relative to"
        )
    return where


def _fingerprint(spec: DatasetSpec, where: Path) -> str:
    if spec.fingerprint is not None:
        return spec.fingerprint(where)
    return tree_sha256(where) if where.is_dir() else file_digest(where, "sha256")


def dataset_fingerprint(ref: RefLike) -> str | None:
    """SHA-256 of the data a ref points to; None for datasets not read from a path (the
    built-in fetchable ones are verified by their pinned per-array SHA-256 instead).

    npz: the file's bytes. cifar10: the archive's bytes when the path is (or holds) the
    archive, otherwise the six ``.bin`` files concatenated (data_batch_1..5, test_batch).
    Other datasets: the registered ``fingerprint`` hook, else the file's bytes (a
    directory: its files in sorted order, see :func:`~robustrank.data.hashing.tree_sha256`).
    """
    ref = _as_ref(ref)
    where = _existing_path(ref)
    return None if where is None else _fingerprint(ref.spec, where)


def _check_output(spec: DatasetSpec, split: str, x: Any, y: Any) -> None:
    """The loader contract: x float32 (N, C, H, W) in [0, 1], y int64 (N,)."""
    where = f"dataset {spec.name!r} loader, split {split!r}"
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise DataError(f"{where}: must return two tensors (x, y), got {type(x)}, {type(y)}")
    if x.dtype != torch.float32 or x.ndim != 4:
        raise DataError(f"{where}: x must be float32 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
        raise DataError(
            f"{where}: y must be int64 (N,) with N = {len(x)}, got {y.dtype} {tuple(y.shape)}"
        )
    if spec.input_shape is not None and tuple(x.shape[1:]) != spec.input_shape:
        raise DataError(f"{where}: x is {tuple(x.shape[1:])}, registered as {spec.input_shape}")
    if len(x):
        lo, hi = torch.aminmax(x)
        if not (0.0 <= lo.item() and hi.item() <= 1.0):
            raise DataError(f"{where}: x has values in [{lo.item():g}, {hi.item():g}], not [0, 1]")


def load_dataset(
    name_or_ref: RefLike,
    split: str,
    data_dir: str | Path | None = None,
    *,
    idx_dir: str | Path | None = None,
    progress: bool = True,
    path: str | Path | None = None,
) -> tuple[Tensor, Tensor]:
    """Load a split: x float32 (N, C, H, W) in [0, 1], y int64 (N,).

    ``name_or_ref`` is a registered name, a :class:`DatasetRef` or a mapping
    (``{"name": "npz", "path": "data.npz"}``); ``path=`` adds a path to a bare name.
    MNIST and Fashion-MNIST are fetched if missing and verified (``data_dir``, ``idx_dir``:
    see :func:`fetch`); x = pixel/255 of shape (N, 1, 28, 28). A ref that pins ``sha256``
    raises ``DataIntegrityError`` when the data's fingerprint differs.
    """
    ref = _as_ref(name_or_ref, path)
    spec = ref.spec
    check_choice("split", split, spec.splits)
    where = _existing_path(ref)
    if where is not None and ref.sha256 is not None:
        found = _fingerprint(spec, where)
        if found != ref.sha256:
            raise DataIntegrityError(
                f"dataset {ref.name}: the data at {where} changed (expected SHA-256 "
                f"{ref.sha256}, found {found}). Fix: restore the original data, or drop "
                "'sha256' from the dataset reference to use the new data"
            )
    x, y = spec.loader(split, where, data_dir=data_dir, idx_dir=idx_dir, progress=progress)
    if not isinstance(spec.loader, VerifiedLoader):
        _check_output(spec, split, x, y)
    return x, y


def dataset_info(ref: RefLike) -> DatasetInfo:
    """Input shape ``(C, H, W)`` and class count: from the registry when fixed, else from
    the data (npz: the arrays' headers and labels, images not loaded)."""
    ref = _as_ref(ref)
    spec = ref.spec
    if spec.input_shape is not None and spec.num_classes is not None:
        return DatasetInfo(spec.input_shape, spec.num_classes, spec.class_names)
    where = _existing_path(ref)
    if spec.inspect is not None and where is not None:
        return spec.inspect(where)
    shapes, top = set(), -1
    for split in spec.splits:
        x, y = load_dataset(ref, split, progress=False)
        shapes.add(tuple(x.shape[1:]))
        top = max(top, int(y.max()) if len(y) else -1)
    if len(shapes) != 1:
        raise DataError(f"dataset {ref.name}: splits differ in input shape: {sorted(shapes)}")
    c, h, w = shapes.pop()
    num_classes = spec.num_classes if spec.num_classes is not None else top + 1
    return DatasetInfo((c, h, w), num_classes, spec.class_names)
