"""glibc malloc settings for tensor work on the CPU.

glibc serves large blocks (over a dynamic threshold that starts at 128 KiB) with ``mmap``
and gives them back on ``free``, and it returns the top of its heap to the kernel once
128 KiB lie free there. A loop that allocates and frees the same activation tensors at
every step then makes the kernel fault in and zero every page of them again and again:
system time that scales with the work. PyTorch's CPU performance tuning guide recommends a
caching allocator (jemalloc, tcmalloc) for this reason; these settings get the same effect
from glibc itself: no block comes from ``mmap`` (``M_MMAP_MAX`` 0; a threshold alone
cannot do it, as glibc accepts none above 32 MiB, and one activation of a conv net at a
working batch of a few hundred rows is larger), and the heap keeps up to 1 GiB of freed
memory for reuse. glibc still maps memory where its heap cannot grow (the arenas of other
threads, whose heaps are capped), so no allocation fails for these settings.

:func:`keep_freed_memory` applies them to the running process (``mallopt``) and, through
the environment, to the processes it starts (workers, Ray); a ``MALLOC_*_`` variable the
user set wins. Setting ``ROBUSTRANK_MALLOC=system`` leaves glibc's defaults alone. The
settings change how fast memory is reused, never a computed value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["MALLOC_ENV", "OPT_OUT_ENV", "keep_freed_memory"]

#: set to ``system`` to keep glibc's defaults
OPT_OUT_ENV = "ROBUSTRANK_MALLOC"

_MIB = 1 << 20
#: ``mallopt`` parameter -> (glibc's environment variable, value)
_SETTINGS = {
    -4: ("MALLOC_MMAP_MAX_", 0),  # M_MMAP_MAX: no block from mmap where the heap can grow
    -3: ("MALLOC_MMAP_THRESHOLD_", 32 * _MIB),  # M_MMAP_THRESHOLD: glibc's maximum
    -1: ("MALLOC_TRIM_THRESHOLD_", 1024 * _MIB),  # M_TRIM_THRESHOLD
    -2: ("MALLOC_TOP_PAD_", 64 * _MIB),  # M_TOP_PAD
}
#: the environment that child processes inherit
MALLOC_ENV = {name: str(value) for name, value in _SETTINGS.values()}


def keep_freed_memory() -> bool:
    """Apply the settings above to this process and its future children.

    Returns True if this process's allocator took them: False off glibc (other C
    libraries, other systems), with :data:`OPT_OUT_ENV` set to ``system``, or where the
    user set a ``MALLOC_*_`` variable of their own (theirs then applies as they chose).
    """
    if os.environ.get(OPT_OUT_ENV, "").strip().lower() == "system":
        return False
    if not sys.platform.startswith("linux") or any(n in os.environ for n in MALLOC_ENV):
        return False
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    if not all(mallopt(param, value) == 1 for param, (_, value) in _SETTINGS.items()):
        return False
    os.environ.update(MALLOC_ENV)
    return True


def _glibc_mallopt() -> ctypes._CFuncPtr | None:
    """glibc's ``mallopt(int, int) -> int``, or None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # glibc only  # noqa: B018
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt
