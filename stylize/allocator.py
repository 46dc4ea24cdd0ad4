"""Keep freed memory in the process instead of handing it back to the OS after every large tensor.

glibc's malloc serves blocks over its mmap threshold (32 MB at most) with fresh ``mmap`` calls and unmaps them on
free, so every forward pass over a photo faults in gigabytes of zeroed pages anew (measured: 31% of a one-photo
run's CPU time was system time). Turning off mmap for large blocks and never trimming the heap lets the
allocator reuse the same memory from layer to layer and image to image. ``MALLOC_MMAP_MAX_=0`` and
``MALLOC_TRIM_THRESHOLD_`` in the environment do the same, but only if set before the process starts;
:func:`keep_freed_memory` calls ``mallopt`` so that it works from inside a running process (measured equal; see
``scripts/bench_apply.py``). The CLI calls it first thing; library users may call it themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: Heap memory above this much free space at the top is returned to the OS (effectively never).
TRIM_THRESHOLD = 1 << 40


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed memory for reuse; True where it took effect (glibc only, else a no-op)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl and other C libraries have no mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # TRIM_THRESHOLD does not fit a C int; the largest int keeps the heap as well (2 GB of free top is never trimmed).
    trimmed = mallopt(_M_TRIM_THRESHOLD, min(TRIM_THRESHOLD, 2**31 - 1))
    unmapped = mallopt(_M_MMAP_MAX, 0)
    return bool(trimmed and unmapped)
