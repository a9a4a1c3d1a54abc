"""Aggregations over windows, as mergeable *partials* (the last of clock / windower / aggregation).

Names: ``count sum mean min max stddev first last rate integral`` and percentiles ``pNN``
(``p50``, ``p99.9``; see :func:`percentile_name`). Semantics:

* Points are unique per (series, field, time): of duplicates the later arrival wins (as in the store).
* ``stddev`` is the sample deviation (ddof=1), null below two points; ``first``/``last`` go by event
  time; ``rate`` is ``(last - first) / (last_time - first_time)`` per second, null for one point;
  ``integral`` is the trapezoid rule over consecutive points, value x seconds (energy from power).

A *partial* is ``count, sum, _m2, min, max, _first_time, first, _last_time, last, integral`` plus a
percentile sketch ``_sketch``. Partials of adjacent windows merge exactly: Chan's parallel formula
for ``_m2`` and, for the integral, the trapezoid that bridges one window's last point and the next
window's first point, so a merged integral equals the integral over the raw points.

Percentiles are exact (linear interpolation, as ``polars`` ``quantile(..., "linear")``) when
computed from raw rows, and come from the merged sketch at coarser levels.

Sketch choice (measured here, 20 k series x fields, one point a second). Apache DataSketches' KLL
(``kll_doubles_sketch``, its ``update`` takes numpy arrays) is one Python object per window:
2.7 us to build and serialise each minute sketch (a Python loop per window), 520 bytes per minute
of 60 points, ~4 KB per hour sketch (~0.8 GB for the open 1 h and 1 d levels of 100 k keys), and
its merges are randomised: the same merges twice give different sketches, so rollups would depend
on where the log was cut into batches. ``_sketch`` is therefore a DDSketch (Masson, Rim & Lee, VLDB
2019): counts over logarithmic buckets ``(g^(i-1), g^i]``, ``g = (1 + a) / (1 - a)``, built,
merged and queried for all windows at once with numpy (a bucket is a closed-form function of the
value; a merge adds counts, exactly and deterministically; a quantile is a search in cumulative
counts), ~1.2-1.6 us per minute window and no per-window Python. Its documented guarantee is a
*relative value error*: an estimated order statistic is within ``a = SKETCH_ALPHA = 1 %`` of the
true one (``|x| < 1e-9`` counts as 0); interpolating as the exact method does keeps
``|est - exact| <= a * max(|x_lo|, |x_hi|)`` (``x_lo``/``x_hi``: the order statistics around the
rank). A minute of smooth sensor values fits a bucket or a few (8-50 bytes); 60 points of white
noise spread over 25 % take ~34 buckets (275 bytes). Non-finite values are left out of sketches.

Serialised form (``_sketch``, Binary): little-endian records of (int32 bucket key, uint32 count),
sorted by key, nothing else (so a whole column decodes as one zero-copy numpy view); key 0 is the
zero bucket, ``+-(i + BIAS)`` is bucket ``i`` of positive/negative values (:func:`sketch_keys`).
The layout is fixed by ``SKETCH_ALPHA``/``SKETCH_MIN``/``BIAS``: change them only with a new column.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from sensorium.jit import (
    COUNTING_SMALL,
    COUNTING_SPAN,
    FOLD_FLOATS,
    FOLD_INTS,
    group_order,
    window_partials,
)
from sensorium.jit import fold_partials as jit_fold_partials
from sensorium.keyindex import stable_argsort
from sensorium.stream.watermark import FIELD_BITS

BASIC = ("count", "sum", "mean", "min", "max", "stddev", "first", "last", "rate", "integral")
PARTIAL = ("count", "sum", "_m2", "min", "max", "_first_time", "first", "_last_time", "last", "integral")
SKETCH_ALPHA = 0.01
SKETCH_MIN = 1e-9
_GAMMA = (1 + SKETCH_ALPHA) / (1 - SKETCH_ALPHA)
_LOG_GAMMA = math.log(_GAMMA)
BIAS = 1 - math.ceil(math.log(SKETCH_MIN) / _LOG_GAMMA)
_REC = np.dtype([("k", "<i4"), ("c", "<u4")])
_MAX_COUNT = (1 << 32) - 1
NO_KEY = np.iinfo(np.int32).max  # not in any bucket (NaN, infinities)
_KEY_SPAN = 1 << 17  # |key| < 2**16 for every finite double (see merge_records)


def percentile_name(q: float) -> str:
    """Column name of a percentile: 50 -> ``p50``, 99.9 -> ``p99.9``."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    return f"p{q:g}"


def parse_aggregations(names: Iterable[str]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Validated aggregation names and the percentiles among them."""
    out: list[str] = []
    qs: list[float] = []
    for name in names:
        if name in BASIC:
            if name not in out:
                out.append(name)
            continue
        try:
            q = float(name[1:]) if name.startswith("p") else math.nan
        except ValueError:
            q = math.nan
        if not 0 <= q <= 100:
            raise ValueError(f"unknown aggregation {name!r}: use one of {', '.join(BASIC)} or pNN (e.g. p95)")
        if percentile_name(q) not in out:
            out.append(percentile_name(q))
            qs.append(q)
    if not out:
        raise ValueError("no aggregations given")
    return tuple(out), tuple(qs)


def partial_schema(percentiles: Sequence[float] = (), sketch: bool = False) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {"kid": pl.Int64(), "start": pl.Int64()}
    for c in PARTIAL:
        schema[c] = pl.Int64() if c in ("count", "_first_time", "_last_time") else pl.Float64()
    for q in percentiles:
        schema[percentile_name(q)] = pl.Float64()
    if sketch:
        schema["_sketch"] = pl.Binary()
    return schema


# --- the sketch ------------------------------------------------------------------------------


def sketch_keys(v: np.ndarray) -> np.ndarray:
    """Bucket key of each value (monotone in the value); ``NO_KEY`` for NaN and infinities."""
    a = np.abs(v)
    small = a < SKETCH_MIN
    with np.errstate(invalid="ignore", divide="ignore"):
        np.maximum(a, SKETCH_MIN, out=a)
        np.log(a, out=a)
        a *= 1.0 / _LOG_GAMMA
        np.ceil(a, out=a)
        bad = ~np.isfinite(a)
        finite = not bad.any()
        if not finite:
            a[bad] = 0.0
        k = a.astype(np.int32)
    k += BIAS
    k[small] = 0
    np.negative(k, out=k, where=v < 0)
    if not finite:
        k[bad] = NO_KEY
    return k


def sketch_values(k: np.ndarray) -> np.ndarray:
    """The value a bucket key stands for (within SKETCH_ALPHA of every value in the bucket)."""
    ak = np.abs(k).astype(np.float64)
    rep = np.exp((ak - BIAS) * _LOG_GAMMA) * (2.0 / (1.0 + _GAMMA))
    rep[ak == 0] = 0.0
    return np.where(k < 0, -rep, rep)


def encode_sketches(seg: np.ndarray, key: np.ndarray, count: np.ndarray, nseg: int) -> pl.Series:
    """Binary column of ``nseg`` sketches from records sorted by (segment, key)."""
    offsets = np.zeros(nseg + 1, dtype=np.int64)
    np.cumsum(np.bincount(seg, minlength=nseg), out=offsets[1:])
    return _encode(offsets, key, count)


def _encode(offsets: np.ndarray, key: np.ndarray, count: np.ndarray) -> pl.Series:
    """Binary column of sketches: row ``i``'s records at ``offsets[i]:offsets[i + 1]``."""
    if count.size and int(count.max()) > _MAX_COUNT:
        raise ValueError(f"sketch bucket count {int(count.max())} does not fit the serialised form")
    offsets = offsets * _REC.itemsize
    rec = np.empty(key.size, dtype=_REC)
    rec["k"], rec["c"] = key, count
    arr = pa.Array.from_buffers(pa.large_binary(), offsets.size - 1, [None, pa.py_buffer(offsets), pa.py_buffer(rec)])
    return pl.Series("_sketch", arr)


def decode_sketches(col: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, key, count) records of a Binary column of sketches; null counts as empty."""
    offsets, key, count = sketch_records(col)
    row = np.repeat(np.arange(col.len(), dtype=np.int64), np.diff(offsets))
    return row, key, count


def sketch_records(col: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, key, count): the records of a Binary column of sketches, row ``i``'s at
    ``offsets[i]:offsets[i + 1]``; null counts as empty."""
    n = col.len()
    if n == 0:
        return np.zeros(1, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
    arr = col.fill_null(b"").to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_binary())
    _, obuf, dbuf = arr.buffers()
    assert obuf is not None
    offsets = np.frombuffer(obuf, dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(dbuf, dtype=np.uint8) if dbuf is not None else np.empty(0, np.uint8)
    data = data[offsets[0] : offsets[-1]]
    lengths = np.diff(offsets)
    if (lengths % _REC.itemsize).any():
        raise ValueError(f"malformed _sketch value: its length is not a multiple of {_REC.itemsize} bytes")
    rec = data.view(_REC)
    return (offsets - offsets[0]) // _REC.itemsize, rec["k"], rec["c"].astype(np.int64)


def merge_records(seg: np.ndarray, key: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge sketch records: sort by (segment, key) and add the counts of equal buckets."""
    comb = seg * _KEY_SPAN + (key.astype(np.int64) + _KEY_SPAN // 2)
    o = np.argsort(comb, kind="stable")
    comb, count = comb[o], count[o]
    if comb.size == 0:
        return seg, key, count
    new = np.ones(comb.size, dtype=bool)
    np.not_equal(comb[1:], comb[:-1], out=new[1:])
    at = np.flatnonzero(new)
    u = comb[at]
    return u // _KEY_SPAN, ((u % _KEY_SPAN) - _KEY_SPAN // 2).astype(np.int32), np.add.reduceat(count, at)


def sketch_quantiles(
    seg: np.ndarray, key: np.ndarray, count: np.ndarray, nseg: int, qs: Sequence[float],
    lo_clip: np.ndarray, hi_clip: np.ndarray,
) -> dict[str, np.ndarray]:
    """Estimated percentiles (NaN where a sketch is empty), clipped to each window's [min, max]."""
    total = np.bincount(seg, weights=count, minlength=nseg).astype(np.int64)
    out: dict[str, np.ndarray] = {}
    if seg.size == 0:
        return {percentile_name(q): np.full(nseg, np.nan) for q in qs}
    cum = np.cumsum(count)
    base = np.cumsum(total) - total
    last = seg.size - 1
    for q in qs:
        r = q / 100.0 * np.maximum(total - 1, 0)
        lo = np.floor(r)
        jlo = np.minimum(np.searchsorted(cum, base + lo.astype(np.int64), side="right"), last)
        jhi = np.minimum(np.searchsorted(cum, base + np.ceil(r).astype(np.int64), side="right"), last)
        vlo, vhi = sketch_values(key[jlo]), sketch_values(key[jhi])
        est = np.clip(vlo + (r - lo) * (vhi - vlo), lo_clip, hi_clip)
        out[percentile_name(q)] = np.where(total > 0, est, np.nan)
    return out


# --- raw rows -> partials --------------------------------------------------------------------


def aggregate_rows(
    kid: np.ndarray, start: np.ndarray, time: np.ndarray, value: np.ndarray, *,
    percentiles: Sequence[float] = (), sketch: bool = False,
    start_rank: tuple[int, np.ndarray] | None = None,
) -> pl.DataFrame:
    """Partials of rows given in arrival order, one per (kid, start), sorted by (kid, start).

    Duplicates (same kid, start, time) keep the later arrival. Percentiles are exact. The rows
    are grouped with one stable counting sort over a dense (key, start) code and each group is
    aggregated by the compiled :func:`~sensorium.jit.window_partials` in one pass.
    ``start_rank``: (number of distinct starts, each row's rank among them), if the caller knows
    it (saves a sort of the starts)."""
    n = kid.size
    if n == 0:
        return pl.DataFrame(schema=partial_schema(percentiles, sketch))
    order = _group_order(kid, start, start_rank)
    k = kid[order]
    s = start[:1] if start.size == 1 else start[order]
    t, v = time[order], value[order]
    skeys = sketch_keys(v) if sketch else np.empty(0, np.int32)
    qs = np.asarray(percentiles, dtype=np.float64)
    (ok, os_, cnt, total, m2, mn, mx, ft, first, lt, last, integral, pq,
     rseg, rkey, rcnt) = window_partials(k, s, t, v, qs, skeys, NO_KEY)
    cols: dict[str, np.ndarray | pl.Series] = {
        "kid": ok, "start": os_, "count": cnt, "sum": total, "_m2": m2, "min": mn, "max": mx,
        "_first_time": ft, "first": first, "_last_time": lt, "last": last, "integral": integral,
    }
    for i, q in enumerate(percentiles):
        cols[percentile_name(q)] = pq[:, i]
    if sketch:
        cols["_sketch"] = encode_sketches(rseg, rkey, rcnt, ok.size)
    return pl.DataFrame(cols, schema=partial_schema(percentiles, sketch))


def _group_order(kid: np.ndarray, start: np.ndarray, start_rank: tuple[int, np.ndarray] | None = None) -> np.ndarray:
    """Stable order grouping rows by (kid, start): one stable counting sort of a dense code
    (series * fields + field, then the start's rank), made and sorted in one compiled call
    (:func:`~sensorium.jit.group_order`) while the code's range is small (it is, for the stream's
    keys); else LSD radix passes over the keys or ``np.lexsort``."""
    one = start.size == 1 or start.min() == start.max()
    srank: np.ndarray | None
    if not one and start_rank is None:
        uniq, srank = np.unique(start, return_inverse=True)
        start_rank = (uniq.size, srank)
    ns, srank = (1, None) if one or start_rank is None else (start_rank[0], start_rank[1])
    order = group_order(kid, srank, ns, FIELD_BITS, max(COUNTING_SMALL, COUNTING_SPAN * kid.size))
    if order is not None:
        return order
    # sparse keys (a small close of series far apart): radix passes over the keys, or a lexsort
    if ns == 1:
        return stable_argsort(kid - int(kid.min()))
    assert srank is not None
    return np.lexsort((srank, kid))


# --- partials -> coarser partials ------------------------------------------------------------


def merge_partials(
    frame: pl.DataFrame, by: Sequence[str] = ("kid", "start"), *,
    percentiles: Sequence[float] = (), sketch: bool = True,
) -> pl.DataFrame:
    """Merge partial rows sharing ``by`` (time-disjoint, e.g. the minutes of an hour) into one.

    Output: ``by`` + partial columns + percentiles estimated from the merged sketch + ``_sketch``."""
    if frame.height == 0:
        schema = {c: frame.schema[c] for c in by}
        schema.update({c: d for c, d in partial_schema(percentiles, sketch).items() if c not in ("kid", "start")})
        return pl.DataFrame(schema=schema)
    f = frame.sort([*by, "_first_time"])
    n = f.height
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for c in by:
        a = f.get_column(c).to_numpy()
        new[1:] |= a[1:] != a[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n) - 1
    per = ends - starts + 1

    def col(name: str) -> np.ndarray:
        return f.get_column(name).to_numpy()

    cnt, total, m2 = col("count"), col("sum"), col("_m2")
    first, last, ft, lt = col("first"), col("last"), col("_first_time"), col("_last_time")
    n_all = np.add.reduceat(cnt, starts)
    s_all = np.add.reduceat(total, starts)
    d = total / cnt - np.repeat(s_all / n_all, per)
    bridge = np.zeros(n)
    if n > 1:
        b = (last[:-1] + first[1:]) * 0.5 * ((ft[1:] - lt[:-1]).astype(np.float64) * 1e-9)
        b[new[1:]] = 0.0
        bridge[:-1] = b
    out: dict[str, np.ndarray | pl.Series] = {c: col(c)[starts] for c in by}
    out.update({
        "count": n_all, "sum": s_all, "_m2": np.add.reduceat(m2 + cnt * d * d, starts),
        "min": np.minimum.reduceat(col("min"), starts), "max": np.maximum.reduceat(col("max"), starts),
        "_first_time": ft[starts], "first": first[starts], "_last_time": lt[ends], "last": last[ends],
        "integral": np.add.reduceat(col("integral") + bridge, starts),
    })
    if percentiles or sketch:
        groups = np.cumsum(new) - 1
        if "_sketch" in f.columns:
            row, key, cts = decode_sketches(f.get_column("_sketch"))
        else:
            row, key, cts = np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
        seg, key, cts = merge_records(groups[row], key, cts)
        if percentiles:
            lo, hi = out["min"], out["max"]
            assert isinstance(lo, np.ndarray) and isinstance(hi, np.ndarray)
            out.update(sketch_quantiles(seg, key, cts, starts.size, percentiles, lo, hi))
        if sketch:
            out["_sketch"] = encode_sketches(seg, key, cts, starts.size)
    return pl.DataFrame(out).with_columns(pl.col(percentile_name(q)).fill_nan(None) for q in percentiles)


def fold_partials(held: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """A coarser level's running partials ``held`` (sorted by kid, start) with finished finer
    partials ``new`` folded in (sorted by kid, start, _first_time; lifted to the level's
    windows): per window, the held row and then each new row, merged pairwise in ``_first_time``
    order exactly as :func:`merge_partials` merges a group of two, so the result does not depend
    on how many finer windows finished in one step (bit-identical however the log was cut into
    batches). One compiled pass (:func:`sensorium.jit.fold_partials`); columns ``kid, start``,
    the partial columns and ``_sketch``, sorted by (kid, start)."""
    sides = []
    for f in (held, new):
        ints = np.stack([f.get_column(c).to_numpy() for c in FOLD_INTS])
        floats = np.stack([f.get_column(c).to_numpy() for c in FOLD_FLOATS])
        sides.append((ints, floats, *sketch_records(f.get_column("_sketch"))))
    oi, of, offsets, key, count = jit_fold_partials(sides[0], sides[1])
    cols: dict[str, np.ndarray | pl.Series] = {c: oi[i] for i, c in enumerate(FOLD_INTS)}
    cols.update({c: of[i] for i, c in enumerate(FOLD_FLOATS)})
    cols["_sketch"] = _encode(offsets, key, count)
    return pl.DataFrame(cols).select("kid", "start", *PARTIAL, "_sketch")


def with_percentiles(frame: pl.DataFrame, percentiles: Sequence[float]) -> pl.DataFrame:
    """Add ``pNN`` columns estimated from each row's ``_sketch`` (null where it is empty)."""
    if not percentiles:
        return frame
    row, key, c = decode_sketches(frame.get_column("_sketch"))
    lo, hi = frame.get_column("min").to_numpy(), frame.get_column("max").to_numpy()
    est = sketch_quantiles(row, key, c, frame.height, percentiles, lo, hi)
    return frame.with_columns(pl.Series(name, a, dtype=pl.Float64).fill_nan(None) for name, a in est.items())


def derived(part: pl.DataFrame) -> list[pl.Series]:
    """``mean``, ``stddev`` (ddof=1) and ``rate`` (per second) of partial rows, computed with
    NumPy: element by element, the same bits however the rows were sliced or batched (Polars'
    expressions gave last-bit differences for the same inputs, seen in ``mean`` and ``rate``)."""
    cnt = part.get_column("count").to_numpy().astype(np.float64)
    total = part.get_column("sum").to_numpy()
    m2 = part.get_column("_m2").to_numpy()
    span = (part.get_column("_last_time").to_numpy() - part.get_column("_first_time").to_numpy()).astype(np.float64) * 1e-9
    delta = part.get_column("last").to_numpy() - part.get_column("first").to_numpy()
    two = cnt >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / cnt
        std = np.where(two, np.sqrt(np.clip(m2, 0.0, None) / (cnt - 1)), np.nan)
        rate = np.where(two & (span > 0), delta / span, np.nan)
    return [
        pl.Series("mean", mean, dtype=pl.Float64),
        _nulls("stddev", std, two),
        _nulls("rate", rate, two & (span > 0)),
    ]


def _nulls(name: str, values: np.ndarray, valid: np.ndarray) -> pl.Series:
    """``values`` with null where not ``valid`` (NaN where valid stays NaN)."""
    return pl.Series(name, values, dtype=pl.Float64).scatter(np.flatnonzero(~valid), None)
