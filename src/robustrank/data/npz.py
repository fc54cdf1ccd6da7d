"""Your own data as an ``.npz`` file: ``x_train, y_train, x_test, y_test``.

x is ``(N, C, H, W)``, uint8 (divided by 255) or floating point in [0, 1]; y holds
integer labels >= 0, one per example. The file is read with ``np.load(allow_pickle=False)``
(object arrays are refused), and every problem is reported with the file, the key and
the fix. Write one with ``np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._util import check_choice
from .errors import DataIntegrityError, DataUnavailableError
from .hashing import file_digest
from .registry import DatasetInfo, DatasetSpec, register_dataset

__all__ = ["KEYS", "load_npz", "npz_info", "npz_fingerprint"]

KEYS = ("x_train", "y_train", "x_test", "y_test")
_SPLITS = ("train", "test")
_SAVE = "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def _error(path: Path, key: str | None, problem: str, fix: str) -> DataIntegrityError:
    where = f"{path}: {key}" if key else str(path)
    return DataIntegrityError(f"{where}: {problem}. Fix: {fix}")


def _open(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise DataUnavailableError(f"npz file {path} does not exist. Fix: write it with {_SAVE}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _error(path, None, f"cannot read as .npz ({exc})", f"write it with {_SAVE}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _error(path, None, "holds a single array, not an .npz archive", f"use {_SAVE}")
    missing = [k for k in KEYS if k not in npz.files]
    if missing:
        npz.close()
        present = ", ".join(npz.files) or "none"
        raise _error(
            path,
            None,
            f"missing key(s) {', '.join(missing)} (keys present: {present})",
            f"save all four arrays: {_SAVE}",
        )
    return npz


def _header(npz: np.lib.npyio.NpzFile, path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one member, read from its .npy header (the data is not loaded)."""
    fmt = np.lib.format
    with npz.zip.open(f"{key}.npy") as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:  # rare format version: load the array to see its shape
            arr = _array(npz, path, key)
            return arr.shape, arr.dtype
    return tuple(shape), np.dtype(dtype)


def _array(npz: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise _error(
            path, key, f"cannot be loaded without unpickling ({exc})", "save numeric arrays only"
        ) from exc


def _check_x_header(path: Path, key: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if dtype.hasobject:
        raise _error(
            path,
            key,
            "is an object array (loading it would need unpickling, which is refused)",
            "save numeric arrays only",
        )
    if not (dtype == np.uint8 or np.issubdtype(dtype, np.floating)):
        raise _error(
            path, key, f"has dtype {dtype}", "store images as uint8 (0..255) or float in [0, 1]"
        )
    if len(shape) == 3:
        raise _error(
            path,
            key,
            f"is 3-D {shape}; images must be N x C x H x W",
            f"add the channel axis: {key}=x[:, None]",
        )
    if len(shape) == 4 and shape[3] in (1, 3) and shape[1] not in (1, 3):
        raise _error(
            path,
            key,
            f"looks channels-last {shape}; images must be N x C x H x W",
            f"{key}=x.transpose(0, 3, 1, 2)",
        )
    if len(shape) != 4:
        raise _error(path, key, f"has shape {shape}", "store images as N x C x H x W")
    if shape[0] == 0:
        raise _error(path, key, "holds no examples", "store at least one example per split")


def _check_y(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.dtype.hasobject or y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise _error(path, key, f"has dtype {y.dtype}", "store class labels as integers")
    if y.ndim != 1:
        raise _error(path, key, f"has shape {y.shape}", "store one label per example: shape (N,)")
    if len(y) != n:
        x_key = key.replace("y_", "x_")
        problem = f"has {len(y)} labels for {n} images in {x_key}"
        raise _error(path, key, problem, f"store exactly one label per image of {x_key}")
    y64 = y.astype(np.int64)
    if (y64 < 0).any():
        raise _error(path, key, f"has negative label {y64.min()}", "use labels 0..K-1")
    return y64


def _check_x_values(path: Path, key: str, x: np.ndarray) -> None:
    if x.dtype == np.uint8:
        return
    if not np.isfinite(x).all():
        raise _error(path, key, "holds NaN or infinite values", "store finite values in [0, 1]")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise _error(
            path,
            key,
            f"has values in [{lo:g}, {hi:g}], outside [0, 1]",
            "scale to [0, 1] (e.g. x / 255), or store uint8 pixels",
        )


def _checked_headers(npz: np.lib.npyio.NpzFile, path: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for split in _SPLITS:
        key = f"x_{split}"
        shape, dtype = _header(npz, path, key)
        _check_x_header(path, key, shape, dtype)
        shapes[split] = shape
    if shapes["train"][1:] != shapes["test"][1:]:
        raise _error(
            path,
            "x_test",
            f"has C x H x W {shapes['test'][1:]} but x_train has {shapes['train'][1:]}",
            "store both splits at the same size",
        )
    return shapes


def load_npz(split: str, path: Path | None, **_: object) -> tuple[Tensor, Tensor]:
    """Registry loader: x float32 (N, C, H, W) in [0, 1], y int64 (N,)."""
    check_choice("split", split, _SPLITS)
    if path is None:
        raise DataUnavailableError(f"npz needs a path to an .npz file written with {_SAVE}")
    path = Path(path)
    with _open(path) as npz:
        shapes = _checked_headers(npz, path)
        x = _array(npz, path, f"x_{split}")
        y = _check_y(path, f"y_{split}", _array(npz, path, f"y_{split}"), shapes[split][0])
    _check_x_values(path, f"x_{split}", x)
    if x.dtype == np.uint8:
        xt = torch.from_numpy(x).to(torch.float32).div_(255.0)
    else:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return xt, torch.from_numpy(y)


def npz_info(path: Path) -> DatasetInfo:
    """Input shape from the x headers (images not loaded); classes = max label + 1 over both
    splits."""
    path = Path(path)
    with _open(path) as npz:
        shapes = _checked_headers(npz, path)
        top = max(
            int(_check_y(path, f"y_{s}", _array(npz, path, f"y_{s}"), shapes[s][0]).max())
            for s in _SPLITS
        )
    c, h, w = shapes["train"][1:]
    return DatasetInfo((c, h, w), top + 1)


def npz_fingerprint(path: Path) -> str:
    """SHA-256 of the file's bytes."""
    return file_digest(path, "sha256")


register_dataset(
    DatasetSpec(
        name="npz",
        input_shape=None,
        num_classes=None,
        splits=_SPLITS,
        loader=load_npz,
        needs_path=True,
        description="your arrays: an .npz with x_train, y_train, x_test, y_test (x N x C x H x W)",
        fingerprint=npz_fingerprint,
        inspect=npz_info,
        path_example="data.npz",
    )
)
