"""Streaming file checksums (SHA-256 fingerprints, published MD5s); files are read in chunks."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["file_digest", "files_sha256", "tree_sha256"]

_CHUNK = 1 << 20


def _update(h: hashlib._Hash, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algorithm``: any :mod:`hashlib` name)."""
    h = hashlib.new(algorithm)
    _update(h, Path(path))
    return h.hexdigest()


def files_sha256(paths: Sequence[str | Path]) -> str:
    """SHA-256 of the files' bytes concatenated in the order given."""
    h = hashlib.sha256()
    for path in paths:
        _update(h, Path(path))
    return h.hexdigest()


def tree_sha256(root: str | Path) -> str:
    """SHA-256 over every regular file under ``root`` in sorted order: for each, its
    relative POSIX name, a NUL byte, its length (8 bytes, big-endian) and its bytes."""
    root = Path(root)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.stat().st_size.to_bytes(8, "big"))
        _update(h, path)
    return h.hexdigest()
