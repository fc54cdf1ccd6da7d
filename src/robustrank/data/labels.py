"""Class labels against the classes a model predicts: :func:`check_labels`."""

from __future__ import annotations

import numpy as np
from torch import Tensor

from .errors import LabelError

__all__ = ["check_labels"]


def check_labels(y: Tensor | np.ndarray, num_classes: int, source: str = "labels") -> None:
    """Raise :class:`LabelError` unless every label is an integer in ``0..num_classes-1``.

    ``num_classes`` is the number of classes the model predicts (the width of its output).
    Labels are compared in their own dtype, so a uint64 label of 2**63 is reported with
    its value as out of range. ``source`` names the labels in the message.
    """
    arr = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise LabelError(
            f"{source}: labels have dtype {arr.dtype}; they must be integer class indices "
            f"0..{num_classes - 1}. Fix: store the labels as integers"
        )
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())  # Python ints: exact for every integer dtype
    if lo >= 0 and hi < num_classes:
        return
    bad = hi if hi >= num_classes else lo
    count = int(np.count_nonzero((arr < 0) | (arr >= num_classes)))
    first = int(np.flatnonzero((arr < 0) | (arr >= num_classes))[0])
    raise LabelError(
        f"{source}: label {bad} (e.g. at index {first}; {count} of {arr.size} labels) is out of "
        f"range for a model with {num_classes} classes (labels 0..{num_classes - 1}). Fix: "
        f"relabel the data as 0..{num_classes - 1}, or use a model with num_classes covering "
        "every label"
    )
