"""IDX files (the MNIST format): big-endian header (magic, one uint32 per dimension), then
a uint8 payload. Reference: LeCun et al., http://yann.lecun.com/exdb/mnist/ (file formats).

A payload is never sized from its header: gzip data is decompressed with a bound of
:data:`MAX_IDX_BYTES` (a small "gzip bomb" cannot expand past it), the payload must be
exactly the product of the declared dimensions, and the array is a view of those bytes.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import IDXFormatError

__all__ = ["MAX_IDX_BYTES", "read_idx", "read_idx_file", "write_idx"]

#: Largest IDX payload read, in bytes (MNIST's training images take 47 MB).
MAX_IDX_BYTES = 1 << 30
_MAX_HEADER = 4 + 4 * 255


def _gunzip(data: bytes) -> bytes:
    """Decompress one gzip stream, refusing output beyond the IDX size limit."""
    limit = _MAX_HEADER + MAX_IDX_BYTES
    stream = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = stream.decompress(data, limit + 1)
    except zlib.error as exc:
        raise IDXFormatError(f"corrupt gzip stream around IDX data: {exc}") from exc
    if len(out) > limit:
        raise IDXFormatError(
            f"gzip data expands to more than {limit:,} bytes, above the IDX limit of "
            f"{MAX_IDX_BYTES:,} payload bytes: not an MNIST-style IDX file (or a gzip bomb)"
        )
    if not stream.eof:
        raise IDXFormatError("corrupt gzip stream around IDX data: truncated")
    return out


def read_idx(data: bytes) -> np.ndarray:
    """Parse an IDX (uint8) file's bytes, gzip-compressed or plain, into an array.

    Validates the magic (two zero bytes, dtype code 0x08, ndim), the dimensions, and
    that the payload length is exactly the product of the dimensions.
    """
    data = bytes(data)
    if data[:2] == b"\x1f\x8b":
        data = _gunzip(data)
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
    if expected > MAX_IDX_BYTES:
        raise IDXFormatError(
            f"IDX header declares dims {dims} ({expected:,} bytes), above the limit of "
            f"{MAX_IDX_BYTES:,} bytes"
        )
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
    size = path.stat().st_size
    if size > _MAX_HEADER + MAX_IDX_BYTES:
        raise IDXFormatError(f"{path}: {size:,} bytes, above the IDX limit of {MAX_IDX_BYTES:,}")
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
