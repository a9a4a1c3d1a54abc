"""Keep the C heap from hoarding freed memory (glibc only), without paying for it on every array.

glibc serves allocations above its mmap threshold (128 KiB at start) with their own mappings,
returned to the system when freed — but the threshold is *dynamic*: each freed mapping raises it
to that size (up to 32 MiB). The stream's per-step NumPy arrays (a few MB each) then come from the
heap arenas and are reused step after step (fast), but fragmentation keeps freed ones resident:
with 100 k series the stream process held ~350 MB more than its state
(``bench/bench_stream.py --mode memory``).

Two ways out, measured on the throughput bench (``bench/bench_stream.py --stages core``, 592 k
points, 2 cores) and the memory bench (``--mode memory``, 100 k series):

* ``mmap``: fix the threshold (turns the dynamic adjustment off): every array above it is a
  fresh mapping, returned when freed — and page-faulted in again, zeroed, on its next use. At
  128 KiB: lean (0.93–0.95 GB at 100 k series) but that tax was ~40 % of the stream's time (134 k
  vs 230 k points/s sequential), and at 100 k points/s over HTTP 60–90 % more CPU in the write
  path and the stream alike (every step's arrays of a few hundred KB were fresh mappings). The
  threshold is now :data:`MMAP_THRESHOLD`, 2 MiB (``SENSORIUM_MALLOC_MMAP_KB``): what is large
  and long-lived (the open windows' blocks, ``window_op.BLOCK_ROWS`` values = 2 MiB per column)
  still gets mappings of its own, a step's smaller arrays come from the heap: the memory bench's
  peak as at 128 KiB (893.6–900.6 vs 895.9 MB), a step ~40 % cheaper (docs/benchmarks.md,
  session 15).
* ``trim``: hand the free heap pages back with ``malloc_trim(0)`` at most every
  :data:`TRIM_INTERVAL_S` (the stream calls :func:`trim` after its steps and checkpoints, the
  platform after its flushes), and in between keep them for reuse: the threshold fixed at the
  32 MiB the dynamic one would reach, the heap top trimmed by glibc only beyond the 64 MiB it
  would reach (:data:`HOLD_TRIM_THRESHOLD`, see :func:`_hold_heap`). Arrays are reused between trims (fast),
  but fragmentation keeps ~100–150 MB more resident at 100 k series (1.03–1.14 GB).

The default, ``auto``, is ``trim`` (every :data:`FAST_TRIM_INTERVAL_S` only) until the process's
resident memory has passed ``SENSORIUM_MALLOC_LEAN_MB`` (768 MB; its peak counts, checked at each
trim): then it switches to ``mmap`` for good — fast while memory is plentiful, lean once it is not.

Every mode but ``0`` also gives Arrow's buffers to glibc (``pyarrow.system_memory_pool()``)
instead of pyarrow's bundled mimalloc, unless ``ARROW_DEFAULT_MEMORY_POOL`` is set: each
allocator keeps its own freed memory for reuse, so with three of them (glibc, mimalloc for
Arrow, jemalloc inside Polars) none can reuse what the others freed. At 100 k series that was
~100 MB of the stream process's steady resident memory, at no measurable cost in speed
(docs/benchmarks.md, session 11). :func:`lean` tells other parts of the process that it is lean
(``mmap`` in force): the stream then runs its stages one at a time instead of two side by side
(two threads' working sets at once were ~100 MB of the peak at 100 k series).

Every mode but ``0`` also stops NumPy from asking for transparent huge pages
(``madvise(MADV_HUGEPAGE)``, which NumPy does for every array of 4 MiB or more where the kernel's
THP mode is ``madvise``), unless ``NUMPY_MADVISE_HUGEPAGE`` is set: each first touch of such an
array then faults in and zeroes a whole 2 MiB page. The stream's per-step arrays are fresh
allocations of a few MB, step after step, so that zeroing was the largest single cost of a drain
(``clear_page_erms`` 20 % of its samples in ``perf``; the throughput bench 589–595 k points/s with
it, 639–730 k without, docs/benchmarks.md session 22); an array of this size gains nothing
measurable from huge pages' fewer TLB misses.

:func:`freeze_startup` takes what start-up made (modules, classes, schemas, the platform's tables:
~200 k objects once everything is loaded) out of the garbage collector's full collections, which
otherwise walk them all — a 0.2 s pause, on whichever thread allocated at that moment (the ingest
path, the stream's alert step). ``SENSORIUM_GC_FREEZE=0`` leaves the collector alone.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import gc
import logging
import mmap
import os
import resource
import sys
import threading
import time

log = logging.getLogger("sensorium.memory")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
#: the fixed threshold of ``mmap`` mode (``SENSORIUM_MALLOC_MMAP_KB`` overrides it)
MMAP_THRESHOLD = 2048 * 1024
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)
#: free memory the heap top keeps for reuse in ``trim`` / ``auto`` mode until lean (see
#: :func:`_hold_heap`): glibc's own ceiling (twice its largest dynamic mmap threshold); 256 MiB
#: was no faster and grew the latency bench's server by 260 MB
HOLD_TRIM_THRESHOLD = 2 * MMAP_THRESHOLD_MAX
TRIM_INTERVAL_S = 2.0
#: ``auto`` before the process turns lean trims at most this often: each trim hands back the free
#: heap pages a step's arrays come from, and the next steps fault them in again (the throughput
#: bench's drain: 639-729 k points/s trimming every 2 s, 698-737 k without trims, docs/benchmarks.md
#: session 22); the lean mark is checked at each trim.
FAST_TRIM_INTERVAL_S = 10.0
_done = False
_libc: ctypes.CDLL | None = None
_trim_on = False
_mode: str | None = None  # what tune_allocator set (auto switches to mmap)
_lean_above = 0  # auto mode: resident bytes above which large blocks go to their own mappings
_last_trim = 0.0
_trim_lock = threading.Lock()
_frozen = False
_held = False  # the heap's thresholds fixed by _hold_heap


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return None
    return libc


def tune_allocator() -> str | None:
    """Set the allocator mode (see the module docs) once per process; returns the mode set now."""
    global _done, _libc, _trim_on, _lean_above, _mode
    if _done or not sys.platform.startswith("linux"):
        return None
    _done = True
    mode = os.environ.get("SENSORIUM_MALLOC_TUNE", "auto").strip().lower() or "auto"
    if mode in ("0", "off", "false", "no") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return None
    if mode == "1":
        mode = "mmap"
    if mode not in ("auto", "trim", "mmap"):
        log.warning("SENSORIUM_MALLOC_TUNE=%r: use auto, trim, mmap or 0; using auto", mode)
        mode = "auto"
    _no_numpy_hugepages()
    _libc = _glibc()
    if _libc is None:
        return None
    _arrow_on_glibc()
    if mode == "mmap":
        _mode = "mmap" if _lean() else None
        return _mode
    _trim_on = True
    _mode = mode
    _hold_heap()
    if mode == "auto":
        try:
            _lean_above = int(float(os.environ.get("SENSORIUM_MALLOC_LEAN_MB", "768")) * 1e6)
        except ValueError:
            log.warning("SENSORIUM_MALLOC_LEAN_MB is not a number; using 768")
            _lean_above = 768_000_000
    return mode


def _no_numpy_hugepages() -> None:
    """NumPy's large arrays without ``MADV_HUGEPAGE`` (see the module docs), unless the user chose
    (``NUMPY_MADVISE_HUGEPAGE``)."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return
    import numpy as np

    core = getattr(np, "_core", None) or getattr(np, "core", None)
    switch = getattr(getattr(core, "multiarray", None), "_set_madvise_hugepage", None)
    if switch is not None:  # (a NumPy without it reads only the variable, at import)
        switch(False)


def _arrow_on_glibc() -> None:
    """Arrow's allocations from glibc's heap (see the module docs), unless the user chose."""
    if "ARROW_DEFAULT_MEMORY_POOL" in os.environ:
        return
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def mode() -> str | None:
    """The allocator mode in force: ``auto``, ``trim``, ``mmap``, or None (untouched)."""
    return _mode


def lean() -> bool:
    """True once the process trades speed for memory (mode ``mmap``, set or switched to by
    ``auto``): callers that can do work either fast or lean should do it lean."""
    return _mode == "mmap"


def _hold_heap() -> None:
    """``trim`` and ``auto`` (until lean): freed heap memory stays for reuse until :func:`trim`.
    glibc's dynamic thresholds start low (a block above 128 KiB gets a mapping of its own, handed
    back when freed; the heap top is handed back beyond 128 KiB free) and rise only as blocks of
    a new size are freed, so a process's first steps fault most of their arrays in afresh: both
    are fixed where the dynamic ones end up (:data:`MMAP_THRESHOLD_MAX`, twice that for the top,
    :data:`HOLD_TRIM_THRESHOLD`) from the start; the periodic ``malloc_trim`` still hands
    everything free back. Throughput bench: the stream thread's page faults in a drain 123-151 k
    -> 81-87 k, its system time 0.28-0.44 -> 0.25-0.27 s (docs/benchmarks.md, session 23); the
    latency bench's server no larger (peak 1,115 vs 1,134 MB)."""
    global _held
    assert _libc is not None
    _held = bool(_libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) and _libc.mallopt(M_TRIM_THRESHOLD, HOLD_TRIM_THRESHOLD))


def _lean() -> bool:
    """Large blocks to their own mappings from now on (mode ``mmap``); a heap held for reuse
    (:func:`_hold_heap`) then trims its top beyond twice that threshold, as glibc's own rule
    would."""
    global _mode
    assert _libc is not None
    if not _libc.mallopt(M_MMAP_THRESHOLD, _threshold()):
        log.warning("mallopt(M_MMAP_THRESHOLD) refused: the process stays as it is")
        return False
    if _held:
        _libc.mallopt(M_TRIM_THRESHOLD, 2 * _threshold())
    _mode = "mmap"
    return True


def _threshold() -> int:
    """The mmap threshold of ``mmap`` mode in bytes: ``SENSORIUM_MALLOC_MMAP_KB`` or the default."""
    raw = os.environ.get("SENSORIUM_MALLOC_MMAP_KB")
    if raw is None:
        return MMAP_THRESHOLD
    try:
        kb = int(raw)
        if not 1 <= kb <= MMAP_THRESHOLD_MAX // 1024:
            raise ValueError
    except ValueError:
        log.warning("SENSORIUM_MALLOC_MMAP_KB=%r: use a whole number of KiB from 1 to %d; using %d",
                    raw, MMAP_THRESHOLD_MAX // 1024, MMAP_THRESHOLD // 1024)
        return MMAP_THRESHOLD
    return kb * 1024


def resident_bytes() -> int | None:
    """This process's resident memory (Linux), or None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        return None


def peak_resident_bytes() -> int:
    """The most resident memory this process has had: ``VmHWM`` (Linux), else ``ru_maxrss`` —
    which a child keeps from its parent across ``exec``, so it is only the fallback."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def trim(force: bool = False) -> bool:
    """Give free heap pages back to the system (``malloc_trim``), at most every
    :data:`TRIM_INTERVAL_S` (:data:`FAST_TRIM_INTERVAL_S` while ``auto`` is not lean yet) unless
    ``force``; only in ``trim`` mode. True when it trimmed."""
    global _last_trim, _lean_above
    if not _trim_on or _libc is None:
        return False
    now = time.monotonic()
    interval = FAST_TRIM_INTERVAL_S if _mode == "auto" else TRIM_INTERVAL_S
    if not force and now - _last_trim < interval:
        return False
    with _trim_lock:
        if not force and now - _last_trim < interval:
            return False
        _last_trim = now
        _libc.malloc_trim(0)
        if _lean_above and (rss := peak_resident_bytes()) > _lean_above:
            _lean_above = 0
            if _lean():
                log.info("resident memory reached %d MB: large blocks now get mappings of their own, "
                         "the stream runs its stages one after the other", rss // 1_000_000)
    return True


def freeze_startup() -> bool:
    """Collect once, then move every object alive now to the collector's permanent generation
    (:func:`gc.freeze`), once per process (when the first platform or worker has started).
    Frozen objects are still freed when their last reference goes; only cycles among them wait
    for the process to end. True when it froze now."""
    global _frozen
    if _frozen or os.environ.get("SENSORIUM_GC_FREEZE", "1") == "0":
        return False
    _frozen = True
    gc.collect()
    gc.freeze()
    # at exit, back into the collector's reach: the interpreter's final collections then free
    # them (native modules report objects still alive at exit as leaks)
    atexit.register(gc.unfreeze)
    return True


__all__ = ["FAST_TRIM_INTERVAL_S", "HOLD_TRIM_THRESHOLD", "TRIM_INTERVAL_S", "freeze_startup", "lean", "mode", "peak_resident_bytes", "resident_bytes", "trim", "tune_allocator"]
