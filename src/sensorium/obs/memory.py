"""Keep the C heap from hoarding freed memory (glibc only).

glibc serves allocations above its mmap threshold (128 KiB) with their own mappings, returned to
the system when freed — but the threshold is *dynamic*: each freed mapping raises it to that
size (up to 32 MiB). The stream's per-step NumPy arrays (a few MB each) then come from the heap
arenas, where fragmentation keeps them resident: with 100 k series the stream process held
~350 MB more than its state (``bench/bench_stream.py --mode memory``). Setting the threshold
explicitly turns the dynamic adjustment off; large blocks go back to the system when freed.

:func:`tune_allocator` does that once per process (called when a :class:`Sensorium` or a worker
starts). ``SENSORIUM_MALLOC_TUNE=0`` leaves the allocator alone; ``MALLOC_MMAP_THRESHOLD_`` set
in the environment wins (glibc reads it at start-up and we do not override it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("sensorium.memory")

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 128 * 1024
_done = False


def tune_allocator() -> bool:
    """Fix glibc's mmap threshold (see the module docs). True when it was set now."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return False
    _done = True
    if os.environ.get("SENSORIUM_MALLOC_TUNE", "1") == "0" or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    if not ok:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return ok


__all__ = ["tune_allocator"]
