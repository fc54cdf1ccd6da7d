"""The verified array cache: ``<data_dir>/<name>/<split>-<kind>.u8``.

Each file holds one uint8 array's raw row-major bytes (no header, nothing pickled); it is
used only after its size and SHA-256 match the dataset's pinned values.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes
from ._util import sha256_array
from .verified import Arrays, IDXDataset

__all__ = ["DATA_ENV", "SPLITS", "KINDS", "default_data_dir"]

DATA_ENV = "ROBUSTRANK_DATA"
SPLITS: tuple[str, ...] = ("train", "test")
KINDS: tuple[str, ...] = ("images", "labels")


def default_data_dir() -> Path:
    """``$ROBUSTRANK_DATA`` if set, else ``~/.cache/robustrank``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "robustrank"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """``data_dir`` (``~`` expanded), or :func:`default_data_dir` when None."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


@dataclass(frozen=True)
class CacheRead:
    """One cached array as found on disk."""

    path: Path
    status: str  # "ok" | "missing" | "mismatch"
    sha256: str | None
    array: np.ndarray | None
    detail: str = ""


def read_cached(spec: IDXDataset, split: str, kind: str, data_dir: Path) -> CacheRead:
    """Read and verify (size, SHA-256) one cached array; never modifies anything."""
    path = data_dir / spec.name / f"{split}-{kind}.u8"
    if not path.is_file():
        return CacheRead(path, "missing", None, None)
    shape = spec.shapes[(split, kind)]
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        return CacheRead(path, "mismatch", None, None, f"unreadable: {exc}")
    digest = sha256_array(raw)
    expected_size = math.prod(shape)
    if raw.size != expected_size:
        return CacheRead(
            path, "mismatch", digest, None, f"size {raw.size} bytes, expected {expected_size}"
        )
    if digest != spec.sha256[(split, kind)]:
        return CacheRead(path, "mismatch", digest, None, f"SHA-256 {digest} does not match")
    return CacheRead(path, "ok", digest, raw.reshape(shape))


def check_arrays(spec: IDXDataset, arrays: Arrays) -> list[str]:
    """Problems with source arrays (shape/dtype/hash); empty if all four verify."""
    problems = []
    for key, shape in spec.shapes.items():
        arr = arrays.get(key)
        label = f"{spec.name} {key[0]} {key[1]}"
        if arr is None:
            problems.append(f"{label}: missing")
        elif arr.dtype != np.uint8 or tuple(arr.shape) != shape:
            problems.append(f"{label}: got {arr.dtype} {tuple(arr.shape)}, expected uint8 {shape}")
        elif sha256_array(arr) != spec.sha256[key]:
            problems.append(f"{label}: SHA-256 mismatch")
    return problems


def write_cache(spec: IDXDataset, arrays: Arrays, data_dir: Path) -> list[Path]:
    """Write verified arrays atomically; returns the files written."""
    paths = []
    for (split, kind), arr in arrays.items():
        path = data_dir / spec.name / f"{split}-{kind}.u8"
        atomic_write_bytes(path, memoryview(np.ascontiguousarray(arr)).cast("B"))
        paths.append(path)
    return paths
