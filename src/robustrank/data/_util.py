"""Small helpers shared by the data modules (choices, hashing, progress bars)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

logger = logging.getLogger("robustrank.data")


def check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the valid choices unless ``value`` is one of them."""
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; valid choices: {', '.join(choices)}")


def sha256_array(buf: np.ndarray | bytes) -> str:
    """SHA-256 of an array's row-major bytes (no header)."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(buf)).cast("B")).hexdigest()


def tqdm_off(progress: bool) -> bool | None:
    """tqdm's ``disable``: None lets tqdm disable itself when stderr is not a terminal."""
    return None if progress else True
