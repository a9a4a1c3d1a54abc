"""Historian compression with a guaranteed maximum reconstruction error: deadband and swinging door.

Both keep a subset of the points of a series (the first and the last always); :func:`decompress`
rebuilds a value for any time from the kept points.

``deadband`` (step-hold reconstruction)
    A point is kept when it differs from the last kept value by more than ``error``. Between kept
    points the reconstruction holds the last kept value, so every dropped point is within ``error``
    of its reconstruction.

``sdt`` (swinging-door trending, linear reconstruction)
    From a kept point ``k`` the segment grows while a straight line from ``k`` to the candidate end
    point ``j`` (its *real* value) passes within ``error`` of every point in between: with
    ``u_m = (x_m + E - x_k) / (t_m - t_k)`` and ``l_m = (x_m - E - x_k) / (t_m - t_k)``, the end
    ``j`` is admissible while ``max(l_k+1..l_j-1) <= (x_j - x_k) / (t_j - t_k) <= min(u_k+1..u_j-1)``.
    At the first inadmissible ``i`` the point ``i - 1`` is kept (it was admissible) and a new
    segment starts there. This is the classic door test applied to the end point itself: the
    textbook variant, which keeps the point *before* the door closes without checking that its
    real value lies inside the door, can miss by up to ``2 E``; this one cannot.

The guarantee, exactly, in float64
    ``abs(values - decompress(kept_times, kept_values, times)) <= error`` holds for every point,
    computed with the very float64 operations :func:`decompress` uses. The selection above is exact
    in real arithmetic; rounding in the slopes (a few ulps) could in principle let a point through
    by an ulp, so after the selection one vectorised pass reconstructs every series with
    :func:`decompress`'s own formula and keeps any point whose error exceeds ``error`` (repeated
    until none does; ``CompressionResult.fixups`` counts them — zero in practice). No tolerance is
    needed in the property test.

Heartbeat (``max_gap``)
    With ``max_gap`` (ns) two consecutive kept points are never further apart than ``max_gap``,
    except where two consecutive raw points already are.

Vectorisation
    No loop runs per record. All series advance in lock-step, and each series picks, from its own
    recent spacing of kept points, one of two kinds of pass:

    * sparse (kept points far apart): gather a look-ahead window of ``L`` points after the scan
      position (one ``(series, L)`` array), compute the violations with NumPy (cumulative min/max
      of the slope bounds for SDT, carried from window to window), jump to the first violation
      (one kept point) or move a whole window on; ``L`` ~ twice the kept spacing. Passes ~ kept
      points + windows scanned.
    * dense (kept points less than ~12 apart, where one pass per kept point would cost too much):
      settle a block of ``B`` points at once: every node's successor (the point kept next if it
      is kept) from ``(B+1) x (B+1)`` pairwise arrays, then the chain of kept points from the last
      kept one marked by pointer doubling (log2 B rounds). Passes = points / B.

Times are int64 (ns) and strictly increasing within a series; values must be finite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

Method = Literal["deadband", "sdt"]
METHODS: tuple[str, ...] = ("deadband", "sdt")

_MIN_WINDOW = 8
_MAX_WINDOW = 4096


@dataclass(frozen=True)
class CompressionResult:
    """Which points of each series were kept (a boolean mask in input order) and how well."""

    keep: np.ndarray  # bool, one per input point
    method: str
    error: float | np.ndarray
    max_error: float  # largest reconstruction error measured (<= error)
    passes: int  # lock-step passes the selection took
    fixups: int  # points added by the float64 check (0 in practice)

    @property
    def points(self) -> int:
        return int(self.keep.size)

    @property
    def kept(self) -> int:
        return int(self.keep.sum())

    @property
    def ratio(self) -> float:
        """Points in / points kept (1.0 for an empty input)."""
        return self.points / self.kept if self.kept else 1.0


# --------------------------------------------------------------------------- reconstruction


def _interp(
    ta: np.ndarray, xa: np.ndarray, tb: np.ndarray, xb: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Linear interpolation between (ta, xa) and (tb, xb) at t, the one formula used everywhere
    (``x_a (1 - f) + x_b f``: exact at both ends, no overflow of ``x_b - x_a``)."""
    span = (tb - ta).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        f = np.where(span > 0, (t - ta).astype(np.float64) / np.where(span > 0, span, 1.0), 0.0)
        out: np.ndarray = xa * (1.0 - f) + xb * f
    return np.where(f == 0.0, xa, out)


def decompress(
    kept_times: np.ndarray | Sequence[int],
    kept_values: np.ndarray | Sequence[float],
    times: np.ndarray | Sequence[int],
    *,
    method: Method = "sdt",
) -> np.ndarray:
    """Reconstructed values at ``times`` from one series' kept points.

    ``sdt``: linear between kept points; ``deadband``: the last kept value at or before the time.
    Before the first kept time the first value is held, after the last the last value."""
    kt = np.asarray(kept_times, dtype=np.int64)
    kv = np.asarray(kept_values, dtype=np.float64)
    t = np.asarray(times, dtype=np.int64)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if kt.size == 0:
        return np.full(t.shape, np.nan)
    if kt.size != kv.size:
        raise ValueError("kept_times and kept_values differ in length")
    a = np.clip(np.searchsorted(kt, t, side="right") - 1, 0, kt.size - 1)
    if method == "deadband":
        return kv[a]
    b = np.minimum(a + 1, kt.size - 1)
    tt = np.clip(t, kt[0], kt[-1])  # hold the ends
    return _interp(kt[a], kv[a], kt[b], kv[b], tt)


def _reconstruct_flat(
    t: np.ndarray, x: np.ndarray, keep: np.ndarray, method: str
) -> np.ndarray:
    """Each point's reconstruction from the kept points of its own series (series are contiguous
    and their first and last points are kept, so neighbours never cross a series boundary)."""
    n = t.size
    idx = np.arange(n)
    prev = np.maximum.accumulate(np.where(keep, idx, 0))
    if method == "deadband":
        return x[prev]
    nxt = np.minimum.accumulate(np.where(keep, idx, n - 1)[::-1])[::-1]
    return _interp(t[prev], x[prev], t[nxt], x[nxt], t)


# --------------------------------------------------------------------------- selection


def _errors_per_series(error: float | np.ndarray, n_series: int) -> np.ndarray:
    e = np.broadcast_to(np.asarray(error, dtype=np.float64), (n_series,)).copy()
    if not np.all(np.isfinite(e)) or np.any(e < 0):
        raise ValueError("error must be finite and >= 0")
    return e


def _scan0(a: np.ndarray, op: np.ufunc) -> np.ndarray:
    """Cumulative ``op`` (minimum/maximum) along axis 0 in log2(n) whole-array steps
    (Hillis-Steele; NumPy's ``accumulate`` along a leading axis of a small 3-D array is slower).
    Overlapping in/out operands are well defined for ufuncs (computed as if copied first)."""
    out = a.copy()
    k = 1
    while k < a.shape[0]:
        op(out[k:], out[:-k], out=out[k:])
        k *= 2
    return out


@dataclass
class _State:
    """Per-series scan state: last kept index ``k``, next index to examine ``p`` and, for SDT,
    the running bounds of the slopes over ``(k, p)``: ``up`` = min of the upper, ``lo`` = max of
    the lower slope bounds."""

    k: np.ndarray
    p: np.ndarray
    last: np.ndarray
    up: np.ndarray
    lo: np.ndarray


def _window_pass(
    t: np.ndarray, x: np.ndarray, a: np.ndarray, st: _State, err: np.ndarray,
    method: str, gap: float | None, window: int, keep: np.ndarray,
) -> np.ndarray:
    """Sparse regime: scan ``window`` points after each series' position; jump to the first
    violation (one kept point) or move on a whole window. Returns points kept per series."""
    off = np.arange(window, dtype=np.int64)
    idx = st.p[a, None] + off[None, :]
    lst = st.last[a, None]
    valid = idx <= lst
    idx_c = np.minimum(idx, lst)
    ka = st.k[a]
    tk = t[ka]
    xk = x[ka]
    xi = x[idx_c]
    rows = np.arange(a.size)
    if method == "deadband":
        with np.errstate(invalid="ignore", over="ignore"):
            viol = np.abs(xi - xk[:, None]) > err[a, None]
        if gap is not None:  # keeping i is the last chance to stay within max_gap
            nxt = np.minimum(idx_c + 1, lst)
            viol |= (t[nxt] - tk[:, None]).astype(np.float64) > gap
        viol &= valid
        has = viol.any(axis=1)
        new_k = idx[rows, np.argmax(viol, axis=1)]
    else:
        dt = (t[idx_c] - tk[:, None]).astype(np.float64)
        ea = err[a, None]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d = xi - xk[:, None]
            s = d / dt
            u = np.where(valid, (d + ea) / dt, np.inf)
            lw = np.where(valid, (d - ea) / dt, -np.inf)
        u_run = np.minimum.accumulate(np.concatenate([st.up[a, None], u], axis=1), axis=1)
        l_run = np.maximum.accumulate(np.concatenate([st.lo[a, None], lw], axis=1), axis=1)
        # door test of the end point i against the bounds over (k, i); NaN (overflow) violates
        viol = ~((s <= u_run[:, :-1]) & (s >= l_run[:, :-1]))
        if gap is not None:
            viol |= dt > gap
        viol &= valid
        has = viol.any(axis=1)
        i_first = idx[rows, np.argmax(viol, axis=1)]
        new_k = np.where(i_first - 1 > ka, i_first - 1, i_first)
        no = ~has
        st.up[a[no]] = u_run[no, -1]
        st.lo[a[no]] = l_run[no, -1]
        st.up[a[has]] = np.inf
        st.lo[a[has]] = -np.inf
    ah = a[has]
    nk = new_k[has]
    keep[nk] = True
    st.k[ah] = nk
    st.p[ah] = nk + 1
    st.p[a[~has]] += window
    return has.astype(np.int64)


def _block_pass(
    t: np.ndarray, x: np.ndarray, a: np.ndarray, st: _State, err: np.ndarray,
    method: str, gap: float | None, block: int, keep: np.ndarray,
) -> np.ndarray:
    """Dense regime: settle a whole block of ``block`` points per series in one pass.

    Nodes: 0 = the last kept point, 1..B = the block. For every node ``i`` its successor
    ``nv[i]`` (the point kept next if ``i`` is kept) is found at once from ``(B+1) x (B+1)``
    pairwise arrays; the chain ``0 -> nv[0] -> nv[nv[0]] ...`` is then marked by pointer doubling
    (log2 B rounds), so no step loops per kept point. Returns points kept per series.

    Layout ``[m, i, series]`` (candidate end, start, series): the cumulative min/max run along the
    first axis, where NumPy vectorises them over the other two."""
    n_a = a.size
    b1 = block + 1
    off = np.arange(block, dtype=np.int64)
    # SDT: the block starts one point early (when that is not the kept point itself) so that
    # "the point before the first violation" is always a node; re-examining it changes nothing
    # (an end point always passes its own door test).
    q = np.maximum(st.p[a] - 1, st.k[a] + 1) if method == "sdt" else st.p[a]
    idx = q[None, :] + off[:, None]  # (B, A)
    lst = st.last[a][None, :]
    valid = idx <= lst
    idx_c = np.minimum(idx, lst)
    node = np.concatenate([st.k[a][None, :], idx_c], axis=0)  # (B+1, A)
    xn = x[node]
    tn = t[node]
    vm = np.concatenate([np.zeros((1, n_a), dtype=bool), valid], axis=0)
    later = (np.arange(b1)[:, None] > np.arange(b1)[None, :])[:, :, None]  # m > i
    cand = later & vm[:, None, :]  # (m, i, A)
    with np.errstate(invalid="ignore", over="ignore"):
        d = xn[:, None, :] - xn[None, :, :]  # d[m, i] = x_m - x_i
    dt = (tn[:, None, :] - tn[None, :, :]).astype(np.float64)
    ii = np.arange(b1)[:, None]
    if method == "deadband":
        viol = np.abs(d) > err[a][None, None, :]
        if gap is not None:  # keeping m is the last chance to stay within max_gap
            tnext = t[np.minimum(node + 1, lst)]
            viol |= (tnext[:, None, :] - tn[None, :, :]).astype(np.float64) > gap
        viol &= cand
        has = viol.any(axis=0)  # (i, A)
        nv = np.where(has, np.argmax(viol, axis=0), b1)
    else:
        ea = err[a][None, None, :]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            s = d / dt
            u = np.where(cand, (d + ea) / dt, np.inf)
            lw = np.where(cand, (d - ea) / dt, -np.inf)
        u[0, 0] = st.up[a]  # row m = 0 is never a candidate: it carries node 0's bounds
        lw[0, 0] = st.lo[a]
        u_run = _scan0(u, np.minimum)
        l_run = _scan0(lw, np.maximum)
        sc = s[1:]
        viol = ~((sc <= u_run[:-1]) & (sc >= l_run[:-1]))  # NaN (overflow) violates
        if gap is not None:
            viol |= dt[1:] > gap
        viol &= cand[1:]
        has = viol.any(axis=0)
        first = np.argmax(viol, axis=0) + 1
        nv = np.where(has, np.where(first - 1 > ii, first - 1, first), b1)
    # chain from node 0 by pointer doubling; node B+1 is "beyond the block" (absorbing)
    rows = np.arange(n_a)
    jump = np.concatenate([nv.T, np.full((n_a, 1), b1)], axis=1)  # (A, B+2)
    on = np.zeros((n_a, b1 + 1), dtype=bool)
    on[:, 0] = True
    for _ in range(int(np.ceil(np.log2(b1 + 1)))):
        r, c = np.nonzero(on)
        on[r, jump[r, c]] = True
        jump = jump[rows[:, None], jump]
    on_block = on[:, 1:b1]
    keep[idx.T[on_block]] = True
    c_last = np.where(on[:, :b1], np.arange(b1)[None, :], 0).max(axis=1)  # 0: none kept
    moved = c_last > 0
    st.k[a[moved]] = node[c_last[moved], rows[moved]]
    if method == "sdt":
        st.up[a] = u_run[-1, c_last, rows]
        st.lo[a] = l_run[-1, c_last, rows]
    st.p[a] = q + block
    return on_block.sum(axis=1)


_DENSE_GAP = 12.0  # mean kept spacing (points) below which block passes pay off
_BLOCK_AREA = 16384.0  # block width ~ sqrt(_BLOCK_AREA / dense series), 8..64
_WINDOW_AREA = 1 << 16  # window x sparse series per pass, at most


def _select(
    t: np.ndarray,
    x: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    err: np.ndarray,
    method: str,
    max_gap: int | None,
) -> tuple[np.ndarray, int]:
    """Lock-step selection over contiguous series ``[starts[s], ends[s])``. Returns (keep, passes)."""
    keep = np.zeros(t.size, dtype=bool)
    nonempty = ends > starts
    keep[starts[nonempty]] = True
    keep[ends[nonempty] - 1] = True
    k = starts.astype(np.int64).copy()
    st = _State(
        k=k,
        p=k + 1,
        last=ends.astype(np.int64) - 1,  # always kept; still examined as a segment's end (SDT)
        up=np.full(starts.size, np.inf),
        lo=np.full(starts.size, -np.inf),
    )
    gap = None if max_gap is None else float(max_gap)
    passes = 0
    # per series, exponentially weighted: points advanced and points kept per pass; their ratio
    # (the mean kept spacing) picks the pass kind and the window for each series
    scanned = np.ones(starts.size)
    kept = np.ones(starts.size)
    active = np.flatnonzero(st.p <= st.last)
    while active.size:
        passes += 1
        spacing = scanned[active] / kept[active]
        p_before = st.p[active].copy()
        got = np.zeros(active.size)
        n_dense = int((spacing < _DENSE_GAP).sum())
        # block width: amortise the per-pass overhead over few series, keep the B^2 work small
        # over many (about sqrt(_BLOCK_AREA / series), 8..64)
        block = int(min(64, max(8, 2 ** round(np.log2(np.sqrt(_BLOCK_AREA / max(n_dense, 1)))))))
        dense = spacing < min(_DENSE_GAP, block / 2)
        if dense.any():
            got[dense] = _block_pass(t, x, active[dense], st, err, method, gap, block, keep)
        if not dense.all():
            sp = ~dense
            want = int(2 ** np.ceil(np.log2(2.0 * float(np.median(spacing[sp])))))
            cap = max(_MIN_WINDOW, _WINDOW_AREA // int(sp.sum()))
            window = min(_MAX_WINDOW, cap, max(_MIN_WINDOW, want))
            got[sp] = _window_pass(t, x, active[sp], st, err, method, gap, window, keep)
        adv = np.minimum(st.p[active], st.last[active] + 1) - p_before
        scanned[active] = 0.7 * scanned[active] + 0.3 * np.maximum(adv, 1)
        kept[active] = 0.7 * kept[active] + 0.3 * np.maximum(got, 0.1)
        active = active[st.p[active] <= st.last[active]]
    return keep, passes


def _compress_flat(
    t: np.ndarray,
    x: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    error: float | np.ndarray,
    method: str,
    max_gap: int | None,
) -> CompressionResult:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if max_gap is not None and max_gap <= 0:
        raise ValueError("max_gap must be > 0 (ns)")
    if x.size and not np.all(np.isfinite(x)):
        raise ValueError("values must be finite (drop NaN/inf first)")
    err = _errors_per_series(error, starts.size)
    if t.size:
        # strictly increasing within each series
        inner = np.ones(t.size, dtype=bool)
        inner[starts[ends > starts]] = False
        if np.any(np.diff(t, prepend=t[0])[inner] <= 0):
            raise ValueError("times must be strictly increasing within each series")
    keep, passes = _select(t, x, starts, ends, err, method, max_gap)
    # float64 check against the reconstruction decompress() computes; keep any point over
    e_point = np.repeat(err, ends - starts)
    fixups = 0
    while True:
        with np.errstate(invalid="ignore", over="ignore"):
            dev = np.abs(x - _reconstruct_flat(t, x, keep, method))
        bad = ~(dev <= e_point)
        if not bad.any():
            break
        fixups += int(bad.sum())
        keep |= bad
    return CompressionResult(
        keep=keep,
        method=method,
        error=error,
        max_error=float(dev.max()) if dev.size else 0.0,
        passes=passes,
        fixups=fixups,
    )


def compress(
    times: np.ndarray | Sequence[int],
    values: np.ndarray | Sequence[float],
    error: float,
    *,
    method: Method = "sdt",
    max_gap: int | None = None,
) -> CompressionResult:
    """Compress one series (times int64 ns, strictly increasing). ``keep`` marks the points kept;
    ``decompress(times[keep], values[keep], times, method=method)`` is within ``error`` everywhere."""
    t = np.asarray(times, dtype=np.int64)
    x = np.asarray(values, dtype=np.float64)
    if t.shape != x.shape or t.ndim != 1:
        raise ValueError("times and values must be 1-D and of the same length")
    return _compress_flat(
        t, x, np.array([0]), np.array([t.size]), error, method, max_gap
    )


def deadband(
    times: np.ndarray | Sequence[int],
    values: np.ndarray | Sequence[float],
    error: float,
    *,
    max_gap: int | None = None,
) -> CompressionResult:
    """Deadband compression of one series (step-hold reconstruction)."""
    return compress(times, values, error, method="deadband", max_gap=max_gap)


def swinging_door(
    times: np.ndarray | Sequence[int],
    values: np.ndarray | Sequence[float],
    error: float,
    *,
    max_gap: int | None = None,
) -> CompressionResult:
    """Swinging-door trending of one series (linear reconstruction)."""
    return compress(times, values, error, method="sdt", max_gap=max_gap)


def series_order(
    df: pl.DataFrame, by: Sequence[str], time: str = "time"
) -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """``df`` grouped into contiguous series (one per value of ``by``), each in time order.

    Returns (sorted frame, series id per row, series starts, series ends). Keys become integer
    codes (strings through a categorical) and one ``np.lexsort`` orders the rows: several times
    faster than a multi-column frame sort with string keys."""
    t = df[time].to_numpy()
    if not by:
        order = np.argsort(t, kind="stable")
        sid = np.zeros(df.height, dtype=np.int64)
    else:
        codes = []
        for c in by:
            col = df[c]
            if col.dtype in (pl.Utf8, pl.Categorical) or isinstance(col.dtype, pl.Enum):
                codes.append(col.cast(pl.Utf8).cast(pl.Categorical).to_physical().to_numpy())
            elif col.dtype.is_integer() and col.null_count() == 0:
                codes.append(col.to_numpy())
            else:
                codes.append(df.select(pl.col(c).rank("dense"))[c].fill_null(0).to_numpy())
        order = np.lexsort((t, *codes[::-1]))
        change = np.zeros(df.height, dtype=bool)
        if df.height:
            change[0] = True
            for k in codes:
                ks = k[order]
                change[1:] |= ks[1:] != ks[:-1]
        sid = np.cumsum(change) - 1
    out = df[order] if df.height else df
    n_series = int(sid[-1]) + 1 if sid.size else 0
    counts = np.bincount(sid, minlength=n_series)
    ends = np.cumsum(counts)
    return out, sid, ends - counts, ends


def compress_frame(
    df: pl.DataFrame,
    error: float | None = None,
    *,
    method: Method = "sdt",
    by: Sequence[str] = (),
    time: str = "time",
    value: str = "value",
    error_col: str | None = None,
    max_gap: int | None = None,
) -> tuple[pl.DataFrame, CompressionResult]:
    """Compress every series of a long frame at once (one series per value of ``by``).

    The error bound is ``error`` (one number), or per series the column ``error_col`` (its
    first value in each series). Rows with a null/NaN value are dropped; the rest is grouped by
    series, each in time order. Returns that frame (with a boolean column ``kept``) and the
    :class:`CompressionResult`."""
    by = list(by)
    f = df.filter(pl.col(value).is_not_null() & pl.col(value).cast(pl.Float64).is_finite())
    if f.schema[time] != pl.Int64:
        f = f.with_columns(pl.col(time).cast(pl.Int64))
    f, _, starts, ends = series_order(f, by, time)
    t = f[time].to_numpy().astype(np.int64)
    x = f[value].cast(pl.Float64).to_numpy()
    if error_col is not None:
        err: float | np.ndarray = f[error_col].cast(pl.Float64).to_numpy()[starts]
    elif isinstance(error, int | float):
        err = float(error)
    else:
        raise ValueError("give error (a number) or error_col")
    res = _compress_flat(t, x, starts, ends, err, method, max_gap)
    return f.with_columns(pl.Series("kept", res.keep)), res


__all__ = [
    "METHODS",
    "CompressionResult",
    "compress",
    "compress_frame",
    "deadband",
    "decompress",
    "series_order",
    "swinging_door",
]


class CompressionStage:
    """Stream stage (``step_id = "compress"``): historian compression of every watched field as
    points arrive, writing the kept points to the ``historian`` table (tags, ``measurement``,
    ``field``, ``time``, ``value``).

    Swinging door and deadband are greedy from the last kept point, so the stage keeps, per series
    and field, that point (the *anchor*) and the points after it that are not decided yet; each
    batch compresses anchor + pending + new points, emits the kept points before the last one
    (decided: the door closed after them) and keeps the rest pending. The stored points are
    therefore exactly those :func:`compress` keeps over the whole series, minus the still-open
    tail; the reconstruction error of every decided point is within its field's bound. Points not
    newer than their series' anchor (late, out of order) are not compressed (the raw table keeps
    them). ``max_gap_s`` (heartbeat) bounds the pending tail in event time.

    ``errors``: bound per field name (absolute, in the field's unit); fields without one use
    ``error``; a field whose bound is 0 is not compressed.
    """

    step_id = "compress"
    table = "historian"

    def __init__(self, method: Method = "sdt", error: float = 0.0, errors: dict[str, float] | None = None,
                 max_gap_s: float = 3600.0) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        if error < 0 or any(v < 0 for v in (errors or {}).values()):
            raise ValueError("error bounds must be >= 0")
        self.method: Method = method
        self.error = float(error)
        self.errors = {k: float(v) for k, v in (errors or {}).items()}
        self.max_gap = int(max_gap_s * 1e9) if max_gap_s > 0 else None
        self.pending = self._empty()

    @staticmethod
    def _empty() -> pl.DataFrame:
        return pl.DataFrame(schema={"series": pl.Utf8, "field": pl.Utf8, "time": pl.Int64, "value": pl.Float64,
                                    "anchor": pl.Boolean})

    def _bounds(self, fields: pl.Series) -> pl.Series:
        return fields.replace_strict(self.errors, default=self.error, return_dtype=pl.Float64)

    def process(self, values: pl.DataFrame, series: pl.DataFrame) -> dict[str, pl.DataFrame]:
        new = values.filter(~pl.col("field").str.contains(":", literal=True) & pl.col("value").is_finite())
        new = new.select("series", "field", "time", pl.col("value").cast(pl.Float64))
        new = new.filter(self._bounds(new.get_column("field")) > 0)
        if not new.height:
            return {}
        anchors = self.pending.filter(pl.col("anchor")).select("series", "field", pl.col("time").alias("_at"))
        new = new.join(anchors, on=["series", "field"], how="left").filter(
            pl.col("_at").is_null() | (pl.col("time") > pl.col("_at"))
        ).drop("_at").unique(subset=["series", "field", "time"], keep="last", maintain_order=True)
        todo = pl.concat([self.pending, new.with_columns(pl.lit(False).alias("anchor"))]).unique(
            subset=["series", "field", "time"], keep="first", maintain_order=True
        )
        touched = new.select("series", "field").unique()
        work = todo.join(touched, on=["series", "field"], how="semi")
        rest = todo.join(touched, on=["series", "field"], how="anti")
        work = work.with_columns(self._bounds(work.get_column("field")).alias("_err"))
        f, _ = compress_frame(work, by=["series", "field"], method=self.method, error_col="_err",
                              max_gap=self.max_gap)
        f = f.with_columns(pl.col("time").max().over("series", "field").alias("_last"))
        decided = pl.col("kept") & (pl.col("time") < pl.col("_last"))
        out = f.filter(decided & ~pl.col("anchor")).select("series", "field", "time", "value")
        f = f.with_columns(pl.col("time").filter(decided).max().over("series", "field").alias("_anchor"))
        # pending: the new anchor (last decided kept point) and everything after it; a new series
        # with nothing decided yet keeps all its points, none of them an anchor
        keep = f.filter(pl.col("time") >= pl.col("_anchor").fill_null(pl.col("time").min().over("series", "field"))).select(
            "series", "field", "time", "value", (pl.col("time") == pl.col("_anchor")).fill_null(False).alias("anchor")
        )
        self.pending = pl.concat([rest, keep])
        return {self.table: out} if out.height else {}

    def tick(self, now_ns: int) -> dict[str, pl.DataFrame]:
        return {}

    def state(self) -> dict[str, Any]:
        return {"method": self.method, "pending": self.pending}

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("method") == self.method:
            self.pending = state["pending"]
