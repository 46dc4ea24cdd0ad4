"""Process settings for fast inference, applied by the CLI before torch is imported.

Two defaults of the C runtime cost more than any layer of the network:

- glibc's malloc serves blocks over its mmap threshold (32 MB at most) with fresh ``mmap`` calls and unmaps them
  on free, so every forward pass over a photo faults in gigabytes of zeroed pages anew (measured: 31% of a
  one-photo run's CPU time was system time; 324,000 page faults per 1080x1080 forward, 2,000-9,000 after).
  :func:`keep_freed_memory` turns off mmap for large blocks and heap trimming through ``mallopt``, which acts
  from inside the running process as ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...`` would from outside
  (measured equal: system time 0.5 s -> 0.01 s per forward either way), so no re-exec is needed. It also keeps every
  thread on the main arena (``M_ARENA_MAX=1``): a thread's own arena lives in 64 MB heaps that cannot keep a forward
  pass's blocks, and the network ran 1.33x slower in a thread other than the main one (1024x768, 2-core CPU: 0.476 s
  against 0.358 s; 0.356 s with one arena), which is where ``stylize serve`` runs it.
- OpenMP threads wait at every barrier between two ops, spinning or sleeping. Sleeping at once
  (``OMP_WAIT_POLICY=PASSIVE``) pays a wake-up at every barrier on a quiet machine (the 26-style network at 256x256
  on the 2-core machine: 19.5-22.3 ms against 10.0-11.4 ms spinning; at 1024x1024 151-158 against 142-144 ms); spinning
  loses on a busy one, where the partner thread is often descheduled and the spinning one burns its time slice (with
  one CPU-bound competitor: 22-25 ms against 18 ms at 256x256, 324-332 against 254-257 ms at 1024x1024; libgomp's
  default spin took 4.7 s against 0.40 s passive on the loaded shared machine). So :func:`prepare_process` looks at the
  machine first: when no other thread is runnable (``procs_running`` in ``/proc/stat``, the fewest of a few samples)
  GNU OpenMP (PyTorch's on Linux) spins ``GOMP_SPINCOUNT=10000`` times before it sleeps; otherwise, and on other
  OpenMP runtimes, threads wait passively (docs/benchmarks/inference-cpu.md has the figures). A user's own
  ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` wins; all is set before the OpenMP runtime starts.

Library users may call :func:`prepare_process` themselves before importing torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
import time

# mallopt parameter numbers from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


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
    one_arena = mallopt(_M_ARENA_MAX, 1)  # arenas made before this call stay; call it before threads start
    return bool(trimmed and unmapped and one_arena)


#: Spins of an idle GNU OpenMP thread before it sleeps on a quiet machine (libgomp's own default is 300,000, or 0 when
#: passive; 1,000 and 3,000 measured slower at 1024x1024, 30,000 no faster).
GOMP_SPINCOUNT = "10000"


def other_runnable_threads(samples: int = 5, interval: float = 0.001, stat_path: str = "/proc/stat") -> int | None:
    """Runnable threads on the machine besides the caller, the fewest of ``samples`` reads of ``stat_path``
    (transient ones, such as the shell that started us, drop out); None where the kernel does not say."""
    counts = []
    for attempt in range(samples):
        try:
            with open(stat_path, "rb") as stat:
                counts += [int(line.split()[1]) - 1 for line in stat if line.startswith(b"procs_running")]
        except (OSError, ValueError, IndexError):
            return None
        if attempt + 1 < samples:
            time.sleep(interval)
    return min(counts) if counts else None


def prepare_process() -> None:
    """Keep freed memory, and choose how idle OpenMP threads wait (unless the user chose).

    Call it before torch is imported: OpenMP reads its environment when the library loads.
    """
    keep_freed_memory()
    if "torch" in sys.modules:
        return
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ and other_runnable_threads() == 0:
        os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT  # libgomp: takes precedence over the passive policy below
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
