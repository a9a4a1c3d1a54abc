"""Compiled array kernels for the stream's hot paths.

A kernel here replaces a chain of NumPy passes (each a full temporary array) with one compiled
loop over the rows: a counting sort instead of LSD radix passes, one pass per group for window
partials instead of a dozen ``reduceat`` calls. Every kernel releases the GIL while it runs, so
the stream's side thread (rollups) and its main thread (rolling statistics, rules) really run at
once. The loops themselves are in :mod:`sensorium._kernels`.

**How they are loaded.** The first process on a machine that needs a kernel builds them ahead of
time into a small extension module (a child process running :mod:`sensorium._kernels_build`:
Numba's ``pycc``, ~20-40 s, once) and every process after that imports the module: no Numba and no
LLVM in the processes that run the stream (they would cost ~140 MB resident each). The module is
kept in ``sensorium/__pycache__/kernels`` or, where the package directory is read-only, in
``$XDG_CACHE_HOME/sensorium/kernels`` (``SENSORIUM_KERNEL_DIR`` overrides both); its name carries a
hash of the kernels' source, Numba's and NumPy's versions, so an upgrade builds a new one.
Where no module can be built (no C compiler), the kernels are compiled in-process by Numba's JIT
instead, with a warning — same results, more memory. ``SENSORIUM_KERNELS=jit`` asks for the JIT,
``=aot`` for the built module only (an error if it cannot be built; the tests use both).

Kernels take and return plain NumPy arrays; the wrappers below give them exactly the dtypes and
layouts they were compiled for. Each has a NumPy reference it is tested against
(tests/test_jit.py): the stream's outputs do not depend on which implementation ran.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Counting sort pays for its table of counts (8 bytes per possible key): use it while the key
# range is at most this many times the row count (or small anyway).
COUNTING_SPAN = 8
COUNTING_SMALL = 1 << 20
BUILD_TIMEOUT_S = 900

_HERE = Path(__file__).resolve().parent
_lock = threading.Lock()
_impl: Any = None  # the loaded kernels: the extension module, or the JIT namespace
_kind = ""


class KernelBuildError(RuntimeError):
    """The ahead-of-time kernels could not be built (with ``SENSORIUM_KERNELS=aot``)."""


def module_name() -> str:
    """The extension module's name: a hash of what its machine code depends on."""
    h = hashlib.sha256()
    for f in ("_kernels.py", "_kernels_build.py"):
        h.update((_HERE / f).read_bytes())
    for dist in ("numba", "numpy"):
        try:
            h.update(f"{dist}={importlib.metadata.version(dist)};".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{dist}=none;".encode())
    h.update(sys.implementation.cache_tag.encode())
    return f"_sensorium_kernels_{h.hexdigest()[:16]}"


def kernel_dirs() -> list[Path]:
    """Where the built module is looked for, in order (the first writable one gets a build)."""
    env = os.environ.get("SENSORIUM_KERNEL_DIR")
    if env:
        return [Path(env)]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [_HERE / "__pycache__" / "kernels", cache / "sensorium" / "kernels"]


def _module_file(d: Path, name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = d / f"{name}{suffix}"
        if p.exists():
            return p
    return None


def _import(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _writable(d: Path) -> bool:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK)


def _build(d: Path, name: str) -> Path:
    """Build the module into ``d`` (one builder at a time per directory: a file lock)."""
    with open(d / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait for it
        done = _module_file(d, name)
        if done is not None:
            return done
        log.info("building the compiled kernels (once per machine) into %s", d)
        with tempfile.TemporaryDirectory(dir=d) as tmp:
            r = subprocess.run(
                [sys.executable, "-m", "sensorium._kernels_build", tmp, name],
                capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                env={**os.environ, "PYTHONPATH": os.pathsep.join([str(_HERE.parent), os.environ.get("PYTHONPATH", "")])},
            )
            built = _module_file(Path(tmp), name)
            if r.returncode != 0 or built is None:
                raise KernelBuildError(
                    f"building the kernels failed (exit {r.returncode}): {(r.stderr or r.stdout)[-2000:]}"
                )
            target = d / built.name
            os.replace(built, target)
        for stale in d.glob("_sensorium_kernels_*"):  # other versions' builds (a process that
            if stale.name != target.name:  # still runs one keeps its mapping)
                stale.unlink(missing_ok=True)
        return target


def _load_aot() -> ModuleType:
    name = module_name()
    dirs = kernel_dirs()
    for d in dirs:
        found = _module_file(d, name)
        if found is not None:
            return _import(found, name)
    for d in dirs:
        if _writable(d):
            return _import(_build(d, name), name)
    raise KernelBuildError(f"no writable directory for the compiled kernels among {[str(d) for d in dirs]}")


def _load_jit() -> Any:
    from sensorium import _kernels

    # the exported names over the in-process JIT dispatchers
    return SimpleNamespace(**{name: fn for name, (fn, _sig) in _kernels.EXPORTS.items()})


def kernels() -> Any:
    """The loaded kernels (built or loaded on first call; thread-safe)."""
    global _impl, _kind
    if _impl is not None:
        return _impl
    with _lock:
        if _impl is None:
            want = os.environ.get("SENSORIUM_KERNELS", "auto").strip().lower()
            if want not in ("auto", "aot", "jit"):
                raise ValueError(f"SENSORIUM_KERNELS must be auto, aot or jit, not {want!r}")
            if want == "jit":
                _impl, _kind = _load_jit(), "jit"
            else:
                try:
                    _impl, _kind = _load_aot(), "aot"
                except (KernelBuildError, OSError, ImportError, subprocess.TimeoutExpired) as exc:
                    if want == "aot":
                        raise KernelBuildError(str(exc)) from exc
                    log.warning("compiled kernels unavailable (%s); using Numba's JIT instead", exc)
                    _impl, _kind = _load_jit(), "jit"
    return _impl


def implementation() -> str:
    """``"aot"`` or ``"jit"``: which kernels this process runs (loading them if need be)."""
    kernels()
    return _kind


def prepare() -> threading.Thread | None:
    """Load (or build) the kernels on a background thread, so the first batch does not wait
    (None: loaded already). A load that fails here fails again, with its error, at first use."""
    if _impl is not None:
        return None

    def load() -> None:
        try:
            kernels()
        except Exception:  # noqa: BLE001 - reported by the first kernel call
            log.debug("preparing the kernels failed", exc_info=True)

    t = threading.Thread(target=load, name="sensorium-kernels", daemon=True)
    t.start()
    return t


# --- the kernels, with the dtypes they were compiled for --------------------------------------


_NO_RANKS = np.zeros(0, np.int64)
_NO_T = np.zeros(0, np.int64)  # level_rows of a threshold rule: no carried points, no `for` starts
_NO_V = np.zeros(0, np.float64)
_NO_START = np.zeros((0, 0), np.int64)


def _c(a: np.ndarray, dtype: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype)


def counting_applies(n: int, span: int) -> bool:
    """Whether :func:`counting_argsort` suits ``n`` keys spanning ``span`` values."""
    return span <= COUNTING_SMALL or span <= COUNTING_SPAN * n


def counting_argsort(keys: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Stable argsort of integer ``keys`` within ``[lo, hi]`` (a counting sort: two passes).
    The kernel does not check bounds: ``lo``/``hi`` must be the true extremes (or wider)."""
    k = np.asarray(keys)
    if k.dtype == np.int32:
        return kernels().counting_argsort_i4(_c(k, np.int32), int(lo), int(hi) - int(lo) + 1)
    return kernels().counting_argsort_i8(_c(k, np.int64), int(lo), int(hi) - int(lo) + 1)


def group_order(kid: np.ndarray, srank: np.ndarray | None, ns: int, field_bits: int, max_span: int) -> np.ndarray | None:
    """Stable order grouping rows by (``kid``, start rank ``srank``; None or ``ns`` 1: one start),
    as ``np.lexsort((srank, kid))`` orders them: one counting sort of a dense code (series, field,
    rank), in one compiled call. None when that code would span more than ``max_span`` values."""
    if kid.size == 0:
        return np.zeros(0, dtype=np.intp)
    if srank is None or ns <= 1:  # the kernel reads ranks only when ns > 1
        ranks, ns = _NO_RANKS, 1
    else:
        ranks = _c(srank, np.int64)
        if ranks.size != kid.size or int(ranks.min()) < 0 or int(ranks.max()) >= ns:
            raise ValueError("group_order: a start rank per row, each in [0, ns)")
    out = kernels().group_order(_c(kid, np.int64), ranks, int(ns), int(field_bits), int(max_span))
    return out if out.size == kid.size else None


def pair_counts(
    sid: np.ndarray, fid: np.ndarray, max_span: int
) -> tuple[int, int, int, np.ndarray, np.ndarray] | None:
    """Rows per (field, series) pair: ``(s0, f0, ns, counts, first row)`` over the pair codes
    ``(fid - f0) * ns + sid - s0`` (``s0``/``f0``: the least ids present, ``ns``: the series ids'
    span), two int64 tables with an entry per code of the ids' span (first row -1 where a pair
    has no row). One compiled pass; None when the tables would span more than ``max_span``."""
    s, f = _c(sid, np.int32), _c(fid, np.int32)
    if s.size != f.size or not s.size:
        raise ValueError("pair_counts: a series id and a field id per row, and some rows")
    s0, f0 = int(s.min()), int(f.min())
    ns, nf = int(s.max()) - s0 + 1, int(f.max()) - f0 + 1
    if ns * nf > max_span:
        return None
    counts = np.zeros(nf * ns, dtype=np.int64)
    first = np.full(nf * ns, -1, dtype=np.int64)
    kernels().pair_counts(s, f, s0, f0, ns, counts, first)
    return s0, f0, ns, counts, first


def pair_scatter(
    sid: np.ndarray, fid: np.ndarray, s0: int, f0: int, ns: int, offset: np.ndarray, total: int
) -> np.ndarray:
    """Rows grouped by (field, series) pair: row ``i`` of pair ``c`` (coded as by
    :func:`pair_counts`) goes to position ``offset[c]`` and the next row of that pair after it
    (pairs with offset -1 are left out); ``offset`` (int64, one per code) is used up in place;
    ``total``: the rows placed (the sum of the counts of the pairs kept)."""
    s, f = _c(sid, np.int32), _c(fid, np.int32)
    if s.size != f.size or ns <= 0:
        raise ValueError("pair_scatter: a series id and a field id per row")
    out = np.empty(int(total), dtype=np.int64)
    placed = kernels().pair_scatter(s, f, int(s0), int(f0), int(ns), _inplace("offset", offset, np.int64), out)
    if placed == -2:  # the kernel checks each row's ids against the table (no extra passes here)
        nf = offset.size // ns
        raise ValueError(f"ids out of range: series in [{s0}, {s0 + ns}), fields in [{f0}, {f0 + nf})")
    if placed != total:
        raise ValueError(f"pair_scatter: {placed} rows placed, {total} expected")
    return out


def rising_rows(t: np.ndarray, si: np.ndarray, carry: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ok, kept)``: which rows of the grouped times ``t`` (groups from increasing ``si``, the
    first 0) are after every earlier row of their group and the group's carried time (``carry``,
    one per group) — the others are out of order or repeat a time — and how many each group
    keeps. One compiled pass (:func:`sensorium.rules._kernels.in_order` is its NumPy reference)."""
    tt, starts = _c(t, np.int64), _c(si, np.int64)
    if starts.size != len(carry) or (starts.size and (int(starts[0]) != 0 or int(starts.max()) > tt.size)):
        raise ValueError("rising_rows: group starts from 0, a carried time per group")
    if tt.size and not starts.size:
        raise ValueError("rising_rows: rows without groups")
    ok = np.empty(tt.size, dtype=np.bool_)
    kept = kernels().rising_rows(tt, starts, _c(carry, np.int64), ok)
    return ok, kept


def combo_add(
    codes: np.ndarray, ha: np.ndarray, hb: np.ndarray, ka: int | np.uint64, kb: int | np.uint64, oa: np.ndarray,
    ob: np.ndarray,
) -> None:
    """Add a tag's part to each row's two combination hashes ``oa``/``ob`` (uint64, in place):
    ``splitmix64(h ^ k)`` of the hash ``h`` of the row's value (``codes``: an index into ``ha``/``hb``,
    -1 for null; a zero hash adds nothing) and the tag name's ``k`` (``ka``/``kb``), wrapping — what
    :class:`sensorium.stream.frame.SeriesCombos` sums over a row's tags. One compiled pass."""
    c = _c(codes, np.int64)
    a, b = _c(ha, np.uint64), _c(hb, np.uint64)
    if a.size != b.size or (c.size and int(c.max()) >= a.size):
        raise ValueError("combo_add: a hash per code, both seeds")
    for o in (oa, ob):
        if o.dtype != np.uint64 or not o.flags.c_contiguous or o.size != c.size:
            raise ValueError("combo_add: a C-contiguous uint64 output per row")
    kernels().combo_add(c, a, b, np.uint64(ka), np.uint64(kb), oa, ob)


def remap_keys(
    ts: np.ndarray, tf: np.ndarray, sid: np.ndarray, fid: np.ndarray, bits: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(sid, kid, missed)``: rows named by ids in a source's indexes, mapped through the cached
    tables ``ts``/``tf`` (:class:`sensorium.keyindex.Remap`; -1: not cached) — ``sid = ts[sid]``
    and ``kid = ts[sid] << bits | tf[fid]`` (int64), -1 in both for the ``missed`` rows whose
    series or field is not cached. One compiled pass instead of two gathers, two casts, a shift
    and an or."""
    if len(sid) != len(fid):
        raise ValueError("remap_keys: a field id per series id")
    n = len(sid)
    osid = np.empty(n, dtype=np.int64)
    okid = np.empty(n, dtype=np.int64)
    missed = kernels().remap_keys(_c(ts, np.int32), _c(tf, np.int32), _c(sid, np.int32), _c(fid, np.int32), int(bits), osid, okid)
    return osid, okid, int(missed)


def level_rows(
    v: np.ndarray, t: np.ndarray, si: np.ndarray, slots: np.ndarray, carry: tuple[np.ndarray, np.ndarray] | None,
    dirs: np.ndarray, xs: np.ndarray, deadband: float, rank: np.ndarray, hold: int,
    active: np.ndarray, start: np.ndarray, any_active: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(sev, lvl, sig)`` of a threshold rule's levels over grouped rows (groups from ``si``, in
    slots ``slots``), or of a rate rule's with ``carry`` (each group's carried time and value);
    the per-slot state arrays ``active``, ``start`` and ``any_active`` are updated in place.
    One compiled pass (:meth:`sensorium.rules._kernels.LevelKernel.eval_numpy` is its NumPy
    reference)."""
    n = len(v)
    starts = _c(si, np.int64)
    if starts.size and (int(starts[0]) != 0 or int(starts.max()) > n):
        raise ValueError("level_rows: group starts from 0")
    if n and not starts.size:
        raise ValueError("level_rows: rows without groups")
    sl = _c(slots, np.int32)
    if sl.size != starts.size or (sl.size and (int(sl.min()) < 0 or int(sl.max()) >= any_active.size)):
        raise ValueError("level_rows: a slot per group, within the state arrays")
    if active.shape != (len(xs), any_active.size) or (hold and start.shape != active.shape):
        raise ValueError("level_rows: state arrays of another shape")
    for name, a, dt in (("active", active, np.bool_), ("start", start, np.int64), ("any_active", any_active, np.bool_)):
        if a.dtype != dt or not a.flags.c_contiguous:
            raise ValueError(f"level_rows: {name} must be C-contiguous {np.dtype(dt).name}")
    ng = starts.size
    ct, cv = (_c(carry[0], np.int64), _c(carry[1], np.float64)) if carry is not None else (_NO_T, _NO_V)
    if carry is not None and (ct.size != ng or cv.size != ng):
        raise ValueError("level_rows: a carried point per group")
    sig = np.empty(n, dtype=np.float64)
    sev = np.zeros(n, dtype=np.int8)
    lvl = np.full(n, -1, dtype=np.int8)
    kernels().level_rows(
        _c(v, np.float64), _c(t, np.int64), starts, sl, ct, cv, carry is not None, _c(dirs, np.int8),
        _c(xs, np.float64), float(deadband), _c(rank, np.int8), int(hold), active,
        start if hold else _NO_START, any_active, sig, sev, lvl,
    )
    return sev, lvl, sig


def pane_buckets(
    t: np.ndarray, sid: np.ndarray, kid: np.ndarray, v: np.ndarray, off: int, p: int, max_span: int
) -> tuple[int, int, int, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """Rows (``kid``, time ``t``, value ``v``; series ``sid``) bucketed by (pane, series), panes of
    ``p`` ns from ``off`` (pane index ``(t - off) // p``): ``(q0, s0, ns, ends, rows)`` — the
    first pane index and series id, the series span, where the rows of each code ``(pane - q0) *
    ns + series - s0`` end, and the rows in code order (arrival order kept within a code). Two
    compiled passes; None when the codes would span more than ``max_span`` values."""
    tt, ss = _c(t, np.int64), _c(sid, np.int64)
    n = tt.size
    if n == 0 or ss.size != n or len(kid) != n or len(v) != n or p <= 0:
        raise ValueError("pane_buckets: rows with a time, series, key and value each, panes > 0 ns")
    q0 = (int(tt.min()) - off) // p
    q1 = (int(tt.max()) - off) // p
    s0, s1 = int(ss.min()), int(ss.max())
    ns = s1 - s0 + 1
    if (q1 - q0 + 1) * ns > max_span:
        return None
    ends = np.zeros((q1 - q0 + 1) * ns, dtype=np.int64)
    out = (np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.float64))
    kernels().pane_buckets(
        tt, ss, _c(kid, np.int64), _c(v, np.float64), int(off), int(p), q0, s0, ns, ends, *out
    )
    return q0, s0, ns, ends, out


def segment_sums(a: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """``np.add.reduceat(a, starts)`` for increasing ``starts``, summed as NumPy sums."""
    return kernels().segment_sums(_c(a, np.float64), _c(starts, np.int64))  # type: ignore[no-any-return]


def _inplace(name: str, arr: np.ndarray, dtype: Any) -> np.ndarray:
    if arr.dtype != dtype or not arr.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous {np.dtype(dtype).name} array (updated in place)")
    return arr


def observe_rows(
    sid: np.ndarray, time: np.ndarray, max_time: np.ndarray, wm: np.ndarray, lateness: int,
    seen: np.ndarray, before: np.ndarray,
) -> bool:
    """One pass in arrival order: ``before[i]`` = the watermark of row i's series just before
    row i (``max(wm, running max event time - lateness)``, saturating at int64 min); updates
    ``max_time`` and marks ``seen`` (both in place: int64 and bool, C-contiguous); ``wm`` is
    read only. Returns whether some row is behind its watermark."""
    return bool(kernels().observe_rows(
        _c(sid, np.int64), _c(time, np.int64), _inplace("max_time", max_time, np.int64), _c(wm, np.int64),
        int(lateness), _inplace("seen", seen, np.bool_), _inplace("before", before, np.int64),
    ))


def rolling_stats(
    buf: np.ndarray, count: np.ndarray, gk: np.ndarray, v: np.ndarray, starts: np.ndarray,
    which: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Statistics ``which`` (0 avg, 1 std, 2 min, 3 max, 4 trend) over the last N points of every
    row of key-sorted values ``v`` (groups from ``starts``, keys ``gk``), each window continuing
    the key's carried values ``buf[key]`` (``[keys, N]``, oldest first; ``count[key]`` real).
    Returns ``(stats[len(which), rows], points in each row's window)``; ``buf`` is read only."""
    out = np.empty((len(which), v.size), dtype=np.float64)
    m = np.empty(v.size, dtype=np.int64)
    kernels().rolling_stats(
        np.ascontiguousarray(buf, dtype=np.float64), _c(count, np.int64), _c(gk, np.int64),
        _c(v, np.float64), _c(starts, np.int64), np.asarray(which, dtype=np.int64), out, m,
    )
    return out, m


def rolling_update(buf: np.ndarray, count: np.ndarray, gk: np.ndarray, v: np.ndarray, starts: np.ndarray) -> None:
    """Append each key's rows (groups of key-sorted ``v`` from ``starts``, keys ``gk``, distinct)
    to its last-N buffer ``buf[key]`` and count ``count[key]`` (float64 / int64, C-contiguous,
    updated in place)."""
    kernels().rolling_update(
        _inplace("buf", buf, np.float64), _inplace("count", count, np.int64), _c(gk, np.int64),
        _c(v, np.float64), _c(starts, np.int64),
    )


#: the columns of :func:`fold_partials`' 2-D arrays, one per row
FOLD_INTS = ("kid", "start", "count", "_first_time", "_last_time")
FOLD_FLOATS = ("sum", "_m2", "min", "max", "first", "last", "integral")


def fold_partials(held: tuple[np.ndarray, ...], new: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """A coarser level's running partials with finished finer partials folded in (see
    :func:`sensorium._kernels.fold_partials`). Each side is ``(ints, floats, offsets, keys,
    counts)``: ``ints``/``floats`` the ``FOLD_INTS``/``FOLD_FLOATS`` columns as rows of 2-D arrays,
    then its sketches' records (``offsets`` into them per row, one more than rows). Returns the
    same for the folded windows, in (kid, start) order."""
    hi, hf, hoff, hkey, hcnt = held
    ni, nf, noff, nkey, ncnt = new
    rows = hi.shape[1] + ni.shape[1]
    recs = hkey.size + nkey.size
    oi = np.empty((5, rows), np.int64)
    of = np.empty((7, rows), np.float64)
    ooff = np.empty(rows + 1, np.int64)
    okey = np.empty(recs, np.int32)
    ocnt = np.empty(recs, np.int64)
    g = kernels().fold_partials(
        _c(hi, np.int64), _c(hf, np.float64), _c(hoff, np.int64), _c(hkey, np.int32), _c(hcnt, np.int64),
        _c(ni, np.int64), _c(nf, np.float64), _c(noff, np.int64), _c(nkey, np.int32), _c(ncnt, np.int64),
        oi, of, ooff, okey, ocnt,
    )
    n = int(ooff[g])
    return oi[:, :g], of[:, :g], ooff[: g + 1], okey[:n], ocnt[:n]


def window_partials(
    k: np.ndarray, s: np.ndarray, t: np.ndarray, v: np.ndarray, qs: np.ndarray,
    skeys: np.ndarray, no_key: int,
) -> tuple[np.ndarray, ...]:
    """Partials of rows grouped by (``k``, ``s``) (arrival order within a group; ``s`` of length
    1 means one start for all rows). Per group: rows sorted by time (stable), duplicate times keep
    the later arrival, then count, sum, _m2, min, max, first/last (and their times), trapezoid
    integral, exact percentiles ``qs`` (linear interpolation) and, when ``skeys`` (the sketch key
    of every value) is given, the sketch records (group, key, count) sorted by (group, key).
    Returns ``(key, start, count, sum, m2, min, max, first_t, first, last_t, last, integral,
    percentiles[group, q], rec_group, rec_key, rec_count)``."""
    return kernels().window_partials(  # type: ignore[no-any-return]
        _c(k, np.int64), _c(s, np.int64), _c(t, np.int64), _c(v, np.float64), _c(qs, np.float64),
        _c(skeys, np.int32), int(no_key),
    )
