"""What a verified IDX dataset is: its pinned shapes and SHA-256 digests, and the sources
it may come from. A leaf module shared by the cache (:mod:`robustrank.data.cache`) and the
sources (:mod:`robustrank.data.sources`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Arrays", "OfflineSource", "IDXDataset", "SourceError"]

Arrays = dict[tuple[str, str], np.ndarray]  # (split, kind) -> uint8 array
OfflineSource = Callable[[Path, bool], Arrays]  # (tmpdir, progress) -> arrays


@dataclass(frozen=True)
class IDXDataset:
    """What a verified IDX dataset looks like and where it can come from."""

    name: str
    shapes: dict[tuple[str, str], tuple[int, ...]]
    sha256: dict[tuple[str, str], str]
    mirrors: tuple[str, ...] = ()
    offline: OfflineSource | None = None
    offline_label: str = ""


class SourceError(Exception):
    """A source could not provide data (not found, unreachable, bad content)."""
