"""CIFAR-10 from its official *binary* distribution (nothing is ever unpickled).

Reference: Krizhevsky, "Learning Multiple Layers of Features from Tiny Images" (2009),
https://www.cs.toronto.edu/~kriz/cifar.html. ``cifar-10-binary.tar.gz`` unpacks to
``cifar-10-batches-bin/``: ``data_batch_1.bin`` .. ``data_batch_5.bin`` (train) and
``test_batch.bin``, 10,000 records each; a record is 1 label byte then 3072 pixel bytes
(1024 red, 1024 green, 1024 blue, each row-major 32 x 32). ``batches.meta.txt`` holds the
class names.

``path`` may be the archive, a directory holding it, a directory holding
``cifar-10-batches-bin/``, or a directory holding the ``.bin`` files. An archive is checked
against its published size and MD5 before it is read, and only the members above are read
(streamed with ``tarfile``, never extracted). When a directory holds both the archive and
the extracted files, the archive (which can be verified) is used.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ._util import check_choice, logger
from .errors import DataIntegrityError, DataUnavailableError
from .hashing import file_digest, files_sha256
from .registry import DatasetSpec, register_dataset

__all__ = [
    "ARCHIVE_NAME",
    "ARCHIVE_SIZE",
    "ARCHIVE_MD5",
    "ARCHIVE_SHA256",
    "CLASS_NAMES",
    "Cifar10Location",
    "Cifar10Split",
    "locate",
    "read_cifar10",
    "decode_records",
    "load_cifar10",
    "cifar10_fingerprint",
]

HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
ARCHIVE_NAME = "cifar-10-binary.tar.gz"
ARCHIVE_SIZE = 170_052_171
ARCHIVE_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
ARCHIVE_SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
PYTHON_ARCHIVE_NAME = "cifar-10-python.tar.gz"
PYTHON_BATCH_DIR = "cifar-10-batches-py"
BATCH_DIR = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
BIN_FILES = (*TRAIN_FILES, TEST_FILE)  # also the fingerprint order
META_FILE = "batches.meta.txt"
SPLIT_FILES = {"train": TRAIN_FILES, "test": (TEST_FILE,)}
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
RECORDS_PER_FILE = 10_000  # every official batch file holds exactly this many records
META_MAX_BYTES = 4096
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_FIX = f"Fix: download {ARCHIVE_NAME} again from {HOMEPAGE} and pass its path"


@dataclass(frozen=True)
class Cifar10Location:
    """Where the data is: the archive file, or the directory holding the six ``.bin`` files."""

    kind: Literal["archive", "dir"]
    path: Path


@dataclass(frozen=True)
class Cifar10Split:
    """One decoded split: images uint8 (N, 3, 32, 32), labels uint8 (N,), class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def _refuse_pickled(path: Path) -> DataUnavailableError:
    return DataUnavailableError(
        f"{path} is the Python (pickled) distribution of CIFAR-10, which robustrank never "
        f"reads (unpickling can run code). Fix: download the binary distribution "
        f"{ARCHIVE_NAME} from {HOMEPAGE} and pass its path (or its directory)"
    )


def locate(path: str | Path) -> Cifar10Location:
    """Resolve one of the four accepted path forms (see the module docstring)."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.name == PYTHON_ARCHIVE_NAME:
            raise _refuse_pickled(path)
        if path.suffix == ".bin":
            raise DataUnavailableError(
                f"{path} is a single batch file: pass the directory holding all six .bin files "
                f"({', '.join(BIN_FILES)}), or {ARCHIVE_NAME}"
            )
        return Cifar10Location("archive", path)
    if not path.is_dir():
        raise DataUnavailableError(
            f"CIFAR-10 path {path} does not exist. Fix: pass {ARCHIVE_NAME} (from {HOMEPAGE}), "
            f"the directory holding it, or the directory holding {BATCH_DIR}/"
        )
    if (path / ARCHIVE_NAME).is_file():
        return Cifar10Location("archive", path / ARCHIVE_NAME)
    for directory in (path / BATCH_DIR, path):
        if all((directory / name).is_file() for name in BIN_FILES):
            return Cifar10Location("dir", directory)
    pickled = (path / PYTHON_ARCHIVE_NAME, path / PYTHON_BATCH_DIR, path / "data_batch_1")
    for candidate in pickled:
        if candidate.exists():
            raise _refuse_pickled(candidate)
    directory = path / BATCH_DIR if (path / BATCH_DIR).is_dir() else path
    missing = [n for n in BIN_FILES if not (directory / n).is_file()]
    raise DataUnavailableError(
        f"{path}: no CIFAR-10 binary data: expected {ARCHIVE_NAME}, {BATCH_DIR}/ or the "
        f"six .bin files (missing in {directory}: {', '.join(missing)}). "
        f"Fix: download {ARCHIVE_NAME} from {HOMEPAGE} and pass its path"
    )


def verify_archive(path: Path) -> None:
    """Check the archive's size, then its published MD5; ``DataIntegrityError`` if wrong."""
    size = path.stat().st_size
    if size != ARCHIVE_SIZE:
        if _looks_pickled(path):
            raise _refuse_pickled(path)
        raise DataIntegrityError(
            f"{path}: {size:,} bytes, but the official {ARCHIVE_NAME} has {ARCHIVE_SIZE:,} "
            f"bytes (MD5 {ARCHIVE_MD5}): the file is incomplete or not that archive. {_FIX}"
        )
    found = file_digest(path, "md5")
    if found != ARCHIVE_MD5:
        raise DataIntegrityError(
            f"{path}: MD5 {found} does not match the published MD5 {ARCHIVE_MD5} of "
            f"{ARCHIVE_NAME}: the file is corrupt or not that archive. {_FIX}"
        )


def _looks_pickled(path: Path) -> bool:
    """Whether ``path`` is a tar whose first member lies in ``cifar-10-batches-py/``."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            first = tar.next()
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return False
    return first is not None and first.name.removeprefix("./").startswith(PYTHON_BATCH_DIR)


def _check_length(source: str, nbytes: int) -> None:
    n, rest = divmod(nbytes, RECORD_BYTES)
    if rest:
        raise DataIntegrityError(
            f"{source}: {nbytes:,} bytes is not a whole number of {RECORD_BYTES}-byte records "
            f"(1 label + 3072 pixel bytes; {rest} bytes left over): the file is truncated or "
            f"not a CIFAR-10 binary batch. {_FIX}"
        )
    if n != RECORDS_PER_FILE:
        raise DataIntegrityError(
            f"{source}: {n:,} records, but every official CIFAR-10 batch file holds "
            f"{RECORDS_PER_FILE:,}: the file is incomplete or not an official batch. {_FIX}"
        )


def decode_records(buf: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one batch file: images uint8 (N, 3, 32, 32) (R, G, B planes), labels uint8 (N,).

    Validates the length (whole records, ``RECORDS_PER_FILE`` of them) and labels 0..9.
    """
    _check_length(source, len(buf))
    records = np.frombuffer(buf, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataIntegrityError(
            f"{source}: record {bad[0]} has label {labels[bad[0]]}, outside 0..9 "
            f"({bad.size} such records): not a CIFAR-10 binary batch. {_FIX}"
        )
    return records[:, 1:].reshape(-1, *IMAGE_SHAPE), labels


def _parse_meta(raw: bytes | None, source: str) -> tuple[str, ...]:
    if raw is None:
        return CLASS_NAMES
    names = tuple(s.strip() for s in raw.decode("utf-8", "replace").splitlines() if s.strip())
    if len(names) != len(CLASS_NAMES):
        logger.warning(
            "%s: %d class names (expected 10); using the standard ones", source, len(names)
        )
        return CLASS_NAMES
    return names


def _member_limit(name: str) -> int:
    return META_MAX_BYTES if name == META_FILE else RECORDS_PER_FILE * RECORD_BYTES


def _read_archive(path: Path, names: Iterable[str]) -> dict[str, bytes]:
    """Stream the archive once and read only ``cifar-10-batches-bin/<name>`` for ``names``;
    no other member is read or extracted. Links and oversized members are refused."""
    wanted = {f"{BATCH_DIR}/{n}": n for n in names}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r|gz") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name.split("/", 1)[0] == PYTHON_BATCH_DIR:
                    raise _refuse_pickled(path)
                key = wanted.get(name)
                if key is None:
                    continue
                source = f"{path}: member {member.name}"
                if key in found or not member.isfile():
                    what = "appears twice" if key in found else "is not a regular file"
                    raise DataIntegrityError(f"{source} {what}. {_FIX}")
                if member.size > _member_limit(key):
                    if key == META_FILE:
                        raise DataIntegrityError(f"{source}: {member.size:,} bytes. {_FIX}")
                    _check_length(source, member.size)
                handle = tar.extractfile(member)
                assert handle is not None
                found[key] = handle.read()
                if len(found) == len(wanted):
                    break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataIntegrityError(f"{path}: cannot read the archive ({exc}). {_FIX}") from exc
    return found


def _read_split_bytes(loc: Cifar10Location, split: str) -> tuple[dict[str, bytes], bytes | None]:
    """The split's batch files' bytes (by file name) and the meta file's (or None)."""
    files = SPLIT_FILES[split]
    if loc.kind == "archive":
        verify_archive(loc.path)
        found = _read_archive(loc.path, (*files, META_FILE))
        missing = [f"{BATCH_DIR}/{n}" for n in files if n not in found]
        if missing:
            raise DataIntegrityError(f"{loc.path}: missing member(s) {', '.join(missing)}. {_FIX}")
        return {n: found[n] for n in files}, found.get(META_FILE)
    out = {}
    for name in files:
        file = loc.path / name
        _check_length(str(file), file.stat().st_size)
        out[name] = file.read_bytes()
    meta = loc.path / META_FILE
    small = meta.is_file() and meta.stat().st_size <= META_MAX_BYTES
    return out, meta.read_bytes() if small else None


def read_cifar10(path: str | Path, split: str) -> Cifar10Split:
    """Read and validate one split as uint8 arrays (train: batches 1..5 in order)."""
    check_choice("split", split, tuple(SPLIT_FILES))
    loc = locate(path)
    raw, meta = _read_split_bytes(loc, split)
    decoded = [decode_records(raw[n], _source(loc, n)) for n in SPLIT_FILES[split]]
    images = np.concatenate([d[0] for d in decoded])
    labels = np.concatenate([d[1] for d in decoded])
    return Cifar10Split(images, labels, _parse_meta(meta, _source(loc, META_FILE)))


def _source(loc: Cifar10Location, name: str) -> str:
    return (
        f"{loc.path}: member {BATCH_DIR}/{name}" if loc.kind == "archive" else str(loc.path / name)
    )


def load_cifar10(split: str, path: Path | None, **_: object) -> tuple[Tensor, Tensor]:
    """Registry loader: x float32 (N, 3, 32, 32) = pixel/255, y int64 (N,)."""
    if path is None:
        raise DataUnavailableError(
            f"cifar10 needs a path: {ARCHIVE_NAME} (from {HOMEPAGE}) or its directory"
        )
    data = read_cifar10(path, split)
    x = torch.from_numpy(data.images).to(torch.float32).div_(255.0)
    y = torch.from_numpy(data.labels).to(torch.int64)
    return x, y


def cifar10_fingerprint(path: str | Path) -> str:
    """SHA-256 of the archive's bytes, or of the six ``.bin`` files concatenated in the
    order data_batch_1..5, test_batch."""
    loc = locate(path)
    if loc.kind == "archive":
        return file_digest(loc.path, "sha256")
    return files_sha256([loc.path / n for n in BIN_FILES])


register_dataset(
    DatasetSpec(
        name="cifar10",
        input_shape=IMAGE_SHAPE,
        num_classes=10,
        splits=tuple(SPLIT_FILES),
        loader=load_cifar10,
        checksums={"md5": ARCHIVE_MD5, "sha256": ARCHIVE_SHA256},
        needs_path=True,
        description=f"CIFAR-10, 50k/10k 32x32 colour, from {ARCHIVE_NAME} (binary version)",
        class_names=CLASS_NAMES,
        fingerprint=cifar10_fingerprint,
        path_example=f"~/data/{ARCHIVE_NAME}",
    )
)
