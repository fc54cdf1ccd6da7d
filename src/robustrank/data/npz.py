"""Your own data as an ``.npz`` file: ``x_train, y_train, x_test, y_test``.

x is ``(N, C, H, W)``, uint8 (divided by 255) or floating point in [0, 1]; y holds
integer labels >= 0, one per example. The file is read with ``np.load(allow_pickle=False)``
(object arrays are refused), and every problem is reported with the file, the key and
the fix. Write one with ``np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)``.

Nothing is allocated from what a header claims: before any array is loaded, every member's
``.npy`` header is read and checked against the others (x and y lengths agree, the splits'
C x H x W agree) and against the zip member it sits in: the bytes its shape and dtype
declare must be exactly the member's uncompressed size (what really bounds memory), a
member may not claim more than deflate can expand its compressed bytes to, and no array
may exceed :data:`MAX_NPZ_ARRAY_BYTES`. Labels must lie in ``0..MAX_LABEL``.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._util import check_choice
from .errors import DataIntegrityError, DataUnavailableError
from .hashing import file_digest
from .registry import DatasetInfo, DatasetSpec, register_dataset

__all__ = ["KEYS", "MAX_LABEL", "MAX_NPZ_ARRAY_BYTES", "load_npz", "npz_info", "npz_fingerprint"]

KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Largest array an npz may hold, in uncompressed bytes (4 GiB; CIFAR-10's training images
#: as float32 take 0.6 GB).
MAX_NPZ_ARRAY_BYTES = 1 << 32
#: Largest class label (labels are class indices 0..K-1; K is at most 2**20).
MAX_LABEL = (1 << 20) - 1
#: Deflate expands data at most about 1032-fold; a member claiming more is forged.
_MAX_DEFLATE_RATIO = 1100
_SPLITS = ("train", "test")
_SAVE = "np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def _error(path: Path, key: str | None, problem: str, fix: str) -> DataIntegrityError:
    where = f"{path}: {key}" if key else str(path)
    return DataIntegrityError(f"{where}: {problem}. Fix: {fix}")


def _open(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise DataUnavailableError(f"npz file {path} does not exist. Fix: write it with {_SAVE}")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic == b"\x93NUMPY":  # np.load would read the whole array, sized by its header
        raise _error(path, None, "holds a single array, not an .npz archive", f"use {_SAVE}")
    try:
        if not zipfile.is_zipfile(path):
            raise ValueError("not a zip archive")
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


@dataclass(frozen=True)
class _Member:
    """One array's .npy header, and how many data bytes its zip member really holds."""

    shape: tuple[int, ...]
    dtype: np.dtype
    data_bytes: int


def _check_member(path: Path, key: str, info: zipfile.ZipInfo) -> None:
    """The zip member's sizes are possible: stored as is, or deflated within deflate's ratio."""
    fix = f"write the file again with {_SAVE} (or np.savez_compressed)"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise _error(path, key, f"uses zip compression method {info.compress_type}", fix)
    stored = info.compress_type == zipfile.ZIP_STORED
    if (stored and info.file_size != info.compress_size) or (
        info.file_size > _MAX_DEFLATE_RATIO * info.compress_size + 4096
    ):
        problem = (
            f"claims {info.file_size:,} bytes uncompressed from {info.compress_size:,} "
            "compressed, more than its compression can produce (a forged or corrupt archive)"
        )
        raise _error(path, key, problem, fix)


def _header(npz: np.lib.npyio.NpzFile, path: Path, key: str) -> _Member:
    """Shape and dtype of one member, read from its .npy header (the data is not loaded)."""
    fmt = np.lib.format
    name = f"{key}.npy"
    fix = f"write the file again with {_SAVE}"
    try:
        info = npz.zip.getinfo(name)
    except KeyError as exc:  # pragma: no cover - _open checked the keys
        raise _error(path, key, "is not in the archive", fix) from exc
    _check_member(path, key, info)
    try:
        with npz.zip.open(name) as fh:
            version = fmt.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version} (np.savez writes 1.0)")
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(fh)
            offset = fh.tell()
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        raise _error(path, key, f"has no readable .npy header ({exc})", fix) from exc
    return _Member(tuple(shape), np.dtype(dtype), info.file_size - offset)


def _check_size(path: Path, key: str, member: _Member) -> None:
    """The bytes the header declares are the member's bytes, and within the limit."""
    declared = math.prod(member.shape) * member.dtype.itemsize
    what = f"declares shape {member.shape} of {member.dtype} ({declared:,} bytes)"
    if declared > MAX_NPZ_ARRAY_BYTES:
        limit = f"robustrank's limit of {MAX_NPZ_ARRAY_BYTES:,} bytes per array"
        raise _error(path, key, f"{what}, above {limit}", "use a smaller dataset or a subset")
    if declared != member.data_bytes:
        problem = f"{what}, but its archive member holds {member.data_bytes:,} bytes of data"
        raise _error(path, key, problem, f"the file is corrupt: write it again with {_SAVE}")


def _array(npz: np.lib.npyio.NpzFile, path: Path, key: str) -> np.ndarray:
    """One member's array (call after :func:`_checked_headers`, which bounds its size)."""
    try:
        return npz[key]
    except (OSError, EOFError, ValueError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        fix = f"the file is corrupt: write it again with {_SAVE}"
        raise _error(path, key, f"cannot be read ({exc})", fix) from exc


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


def _check_y_header(path: Path, key: str, member: _Member, n: int) -> None:
    """Labels: an integer vector with one entry per image of the split (from the header)."""
    shape, dtype = member.shape, member.dtype
    if dtype.hasobject:
        problem = "is an object array (it cannot be loaded without unpickling, which is refused)"
        raise _error(path, key, problem, "store class labels as integers")
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        raise _error(path, key, f"has dtype {dtype}", "store class labels as integers")
    if len(shape) != 1:
        raise _error(path, key, f"has shape {shape}", "store one label per example: shape (N,)")
    if shape[0] != n:
        x_key = key.replace("y_", "x_")
        problem = f"has {shape[0]} labels for {n} images in {x_key}"
        raise _error(path, key, problem, f"store exactly one label per image of {x_key}")


def _check_y(path: Path, key: str, y: np.ndarray) -> np.ndarray:
    """The labels as int64, each in 0..MAX_LABEL (compared in their own dtype: a uint64
    label of 2**63 is out of range, not negative)."""
    if y.size == 0:
        return y.astype(np.int64)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0:
        raise _error(path, key, f"has negative label {lo}", "use labels 0..K-1")
    if hi > MAX_LABEL:
        problem = (
            f"has label {hi}, out of range (class labels are 0..K-1, K at most {MAX_LABEL + 1:,})"
        )
        raise _error(path, key, problem, "store class indices 0..K-1")
    return y.astype(np.int64)


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
    """Every member's header checked (types, shapes, lengths, sizes) before any is loaded;
    the x shapes by split."""
    members = {key: _header(npz, path, key) for key in KEYS}
    shapes = {}
    for split in _SPLITS:
        key = f"x_{split}"
        _check_x_header(path, key, members[key].shape, members[key].dtype)
        shapes[split] = members[key].shape
    if shapes["train"][1:] != shapes["test"][1:]:
        raise _error(
            path,
            "x_test",
            f"has C x H x W {shapes['test'][1:]} but x_train has {shapes['train'][1:]}",
            "store both splits at the same size",
        )
    for split in _SPLITS:
        _check_y_header(path, f"y_{split}", members[f"y_{split}"], shapes[split][0])
    for key in KEYS:
        _check_size(path, key, members[key])
    return shapes


def load_npz(split: str, path: Path | None, **_: object) -> tuple[Tensor, Tensor]:
    """Registry loader: x float32 (N, C, H, W) in [0, 1], y int64 (N,)."""
    check_choice("split", split, _SPLITS)
    if path is None:
        raise DataUnavailableError(f"npz needs a path to an .npz file written with {_SAVE}")
    path = Path(path)
    with _open(path) as npz:
        _checked_headers(npz, path)
        y = _check_y(path, f"y_{split}", _array(npz, path, f"y_{split}"))
        x = _array(npz, path, f"x_{split}")
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
        top = max(int(_check_y(path, f"y_{s}", _array(npz, path, f"y_{s}")).max()) for s in _SPLITS)
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
