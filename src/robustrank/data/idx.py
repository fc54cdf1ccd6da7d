"""IDX files (the MNIST format): big-endian header (magic, one uint32 per dimension), then
a uint8 payload. Reference: LeCun et al., http://yann.lecun.com/exdb/mnist/ (file formats).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import IDXFormatError

__all__ = ["read_idx", "read_idx_file", "write_idx"]


def read_idx(data: bytes) -> np.ndarray:
    """Parse an IDX (uint8) file's bytes, gzip-compressed or plain, into an array.

    Validates the magic (two zero bytes, dtype code 0x08, ndim), the dimensions, and
    that the payload length is exactly the product of the dimensions.
    """
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXFormatError(f"corrupt gzip stream around IDX data: {exc}") from exc
    if len(data) < 4:
        raise IDXFormatError(f"truncated IDX header: {len(data)} bytes, need at least 4")
    if data[0] != 0 or data[1] != 0:
        raise IDXFormatError(
            f"bad IDX magic 0x{data[:4].hex()}: expected two zero bytes, then dtype code "
            "0x08 and ndim (0x00000801 labels / 0x00000803 images)"
        )
    if data[2] != 0x08:
        raise IDXFormatError(
            f"unsupported IDX dtype code 0x{data[2]:02x} (magic 0x{data[:4].hex()}); "
            "only 0x08 (unsigned byte) is supported"
        )
    ndim = data[3]
    if ndim == 0:
        raise IDXFormatError("IDX header declares 0 dimensions")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IDXFormatError(
            f"truncated IDX header: {len(data)} bytes, need {header_len} for {ndim} dimensions"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = math.prod(dims)
    payload = len(data) - header_len
    if payload < expected:
        raise IDXFormatError(f"IDX payload too short: {payload} bytes, dims {dims} need {expected}")
    if payload > expected:
        raise IDXFormatError(
            f"IDX payload too long: {payload} bytes, dims {dims} need {expected} "
            f"({payload - expected} trailing bytes)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def read_idx_file(path: str | Path) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain, detected from content) into a uint8 array."""
    path = Path(path)
    try:
        return read_idx(path.read_bytes())
    except IDXFormatError as exc:
        raise IDXFormatError(f"{path}: {exc}") from exc


def write_idx(array: np.ndarray, *, compress: bool = False) -> bytes:
    """Encode a uint8 array as IDX bytes (optionally gzip-compressed)."""
    arr = np.ascontiguousarray(array)
    if arr.dtype != np.uint8:
        raise ValueError(f"write_idx supports uint8 arrays only, got {arr.dtype}")
    if not 1 <= arr.ndim <= 255:
        raise ValueError(f"write_idx needs 1..255 dimensions, got {arr.ndim}")
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.tobytes()
    return gzip.compress(raw) if compress else raw
