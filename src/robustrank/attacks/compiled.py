"""Which tensors the compiled CPU kernels (:mod:`.kernels`, numba) can take.

numba is a dependency, but the kernels are optional by design: without numba, or for
tensors they cannot take (other devices, other dtypes), the attacks run their tensor
implementations, which are the specification the kernels are tested against.
"""

from __future__ import annotations

import functools
from types import ModuleType

import torch
from torch import Tensor

__all__ = ["compiled_kernels", "kernels_for"]


@functools.cache
def compiled_kernels() -> ModuleType | None:
    """:mod:`robustrank.attacks.kernels` (compiled on first use and cached on disk by
    numba), or None if numba is not installed."""
    try:
        from . import kernels
    except ImportError:
        return None
    return kernels


def kernels_for(*tensors: Tensor) -> ModuleType | None:
    """The compiled kernels if every tensor is a float32 or float64 CPU tensor and numba is
    installed, else None (use the tensor implementation)."""
    ok = all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) for t in tensors)
    return compiled_kernels() if ok else None
