"""Atomic file writes: every result robustrank writes goes through here.

Data is written to a temporary file in the target's directory, flushed and fsynced, then
renamed over the target with ``os.replace``, so a reader never sees a partial file and an
interrupted write leaves the previous version intact.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "csv_text", "exclusive_lock", "log"]


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically; the file gets mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def csv_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """CSV of ``rows``; the columns are the union of their keys in first-seen order, a
    missing key or None an empty cell ("" when there is no column)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    if not columns:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


@contextmanager
def exclusive_lock(path: Path, owner: str, busy: Callable[[str], Exception]) -> Iterator[None]:
    """Hold an exclusive, non-blocking POSIX ``flock`` on ``path`` (released by the OS if
    the process dies) and write ``owner`` into it; if another process holds it, raise
    ``busy(text that process wrote)``. Not available on Windows, where nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            raise busy(f.read().strip() or "unknown") from None
        f.seek(0)
        f.truncate()
        f.write(f"{owner}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def log(message: str) -> None:
    """Write one line to stderr without breaking a progress bar on screen (tqdm.write)."""
    import sys

    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)
