"""Process settings for fast inference, applied by the CLI before torch is imported.

Two defaults of the C runtime cost more than any layer of the network:

- glibc's malloc serves blocks over its mmap threshold (32 MB at most) with fresh ``mmap`` calls and unmaps them
  on free, so every forward pass over a photo faults in gigabytes of zeroed pages anew (measured: 31% of a
  one-photo run's CPU time was system time; 324,000 page faults per 1080x1080 forward, 2,000-9,000 after).
  :func:`keep_freed_memory` turns off mmap for large blocks and heap trimming through ``mallopt``, which acts
  from inside the running process as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` would from outside
  (measured equal: system time 0.5 s -> 0.01 s per forward either way), so no re-exec is needed.
- OpenMP threads busy-wait at every barrier. When the machine is busy the partner thread is often descheduled
  and the spinning one burns its time slice: the 26-style network at 256x256 took 4.7 s and 0.92 CPU-s with two
  spinning threads on a loaded 2-core machine, 0.40 s and 0.05 CPU-s with ``OMP_WAIT_POLICY=PASSIVE``.
  :func:`prepare_process` sets that default (a user's own setting wins) before the OpenMP runtime starts.

Library users may call :func:`prepare_process` themselves before importing torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


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
    # The largest C int: up to 2 GB of free memory at the top of the heap is kept rather than trimmed.
    trimmed = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    unmapped = mallopt(_M_MMAP_MAX, 0)
    return bool(trimmed and unmapped)


def prepare_process() -> None:
    """Keep freed memory, and let idle OpenMP threads sleep instead of spinning (unless the user chose otherwise).

    Call it before torch is imported: OpenMP reads its environment when the library loads.
    """
    keep_freed_memory()
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
