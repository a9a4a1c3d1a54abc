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
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

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
_SLICE = 1 << 20  # rows aggregated at a time


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
    if count.size and int(count.max()) > _MAX_COUNT:
        raise ValueError(f"sketch bucket count {int(count.max())} does not fit the serialised form")
    offsets = np.zeros(nseg + 1, dtype=np.int64)
    np.cumsum(np.bincount(seg, minlength=nseg) * _REC.itemsize, out=offsets[1:])
    rec = np.empty(key.size, dtype=_REC)
    rec["k"], rec["c"] = key, count
    arr = pa.Array.from_buffers(pa.large_binary(), nseg, [None, pa.py_buffer(offsets), pa.py_buffer(rec)])
    return pl.Series("_sketch", arr)


def decode_sketches(col: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, key, count) records of a Binary column of sketches; null counts as empty."""
    n = col.len()
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int64)
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
    row = np.repeat(np.arange(n, dtype=np.int64), lengths // _REC.itemsize)
    return row, rec["k"], rec["c"].astype(np.int64)


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


def _sort_within(t: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Stable order sorting ``t`` inside each segment (rows grouped by segment)."""
    lens = np.diff(np.append(starts, t.size))
    lo, span = int(t.min()), int(t.max()) - int(t.min()) + 1
    seg = np.repeat(np.arange(len(starts), dtype=np.int64), lens)
    if span * len(starts) < 1 << 62:
        return np.argsort((t - lo) + seg * span, kind="stable")
    return np.lexsort((t, seg))


def _value_classes(v: np.ndarray, starts: np.ndarray, cnt: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(group indices, their values sorted per row, NaN-padded) for groups of similar size.

    A segmented sort in numpy: groups are padded to the next power of two and sorted along rows,
    one 2-D sort per size class (at most twice the rows in all)."""
    cls = np.ceil(np.log2(cnt)).astype(np.int64)
    classes = np.unique(cls)
    for c in classes:
        width = 1 << int(c)
        if classes.size == 1:
            g, vals, lens = np.arange(cnt.size), v, cnt
        else:
            g = np.flatnonzero(cls == c)
            lens = cnt[g]
            vals = v[np.repeat(cls == c, cnt)]
        begin = np.cumsum(lens) - lens
        flat = np.arange(vals.size) + np.repeat(np.arange(g.size) * width - begin, lens)
        buf = np.full(g.size * width, np.nan)
        buf[flat] = vals
        arr = buf.reshape(g.size, width)
        arr.sort(axis=1)
        yield g, arr


def _sketch_runs(g: np.ndarray, arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(group, key, count) records of rows of sorted values (NaN-padded), sorted by (group, key)."""
    keys = sketch_keys(arr)
    new = np.ones(keys.shape, dtype=bool)
    np.not_equal(keys[:, 1:], keys[:, :-1], out=new[:, 1:])
    at = np.flatnonzero(new)
    lens = np.diff(np.append(at, keys.size))
    k = keys.ravel()[at]
    ok = k != NO_KEY
    return np.repeat(g, new.sum(axis=1))[ok], k[ok], lens[ok]


def aggregate_rows(
    kid: np.ndarray, start: np.ndarray, time: np.ndarray, value: np.ndarray, *,
    percentiles: Sequence[float] = (), sketch: bool = False,
) -> pl.DataFrame:
    """Partials of rows given in arrival order, one per (kid, start), sorted by (kid, start).

    Duplicates (same kid, start, time) keep the later arrival. Percentiles are exact."""
    n = kid.size
    if n == 0:
        return pl.DataFrame(schema=partial_schema(percentiles, sketch))
    if start.min() == start.max():
        order = np.argsort(kid, kind="stable")
        s = np.broadcast_to(start[:1], (n,))
    else:
        o1 = np.argsort(start, kind="stable")
        order = o1[np.argsort(kid[o1], kind="stable")]
        s = start[order]
    k = kid[order]
    if n <= _SLICE:
        return _aggregate_sorted(k, s, time[order], value[order], percentiles, sketch)
    # Slices of whole keys: bounded temporaries (a minute of 100 k keys is 6 M rows) and arrays
    # that stay in cache.
    cuts = np.unique(np.searchsorted(k, k[np.arange(_SLICE, n, _SLICE)], side="left"))
    bounds = [0, *(int(c) for c in cuts if c > 0), n]
    frames = [
        _aggregate_sorted(k[a:b], s[a:b], time[order[a:b]], value[order[a:b]], percentiles, sketch)
        for a, b in zip(bounds, bounds[1:], strict=False)
        if b > a
    ]
    return pl.concat(frames)


def _aggregate_sorted(
    k: np.ndarray, s: np.ndarray, t: np.ndarray, v: np.ndarray, percentiles: Sequence[float], sketch: bool
) -> pl.DataFrame:
    """aggregate_rows on rows grouped by (kid, start), arrival order within a group."""
    n = k.size
    new = np.ones(n, dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (s[1:] != s[:-1])
    if n > 1 and not ((t[1:] > t[:-1]) | new[1:]).all():
        o = _sort_within(t, np.flatnonzero(new))
        k, s, t, v = k[o], s[o], t[o], v[o]
        keep = np.ones(k.size, dtype=bool)
        keep[:-1] = (t[1:] != t[:-1]) | (k[1:] != k[:-1]) | (s[1:] != s[:-1])
        if not keep.all():
            k, s, t, v = k[keep], s[keep], t[keep], v[keep]
            n = k.size
            new = np.ones(n, dtype=bool)
            new[1:] = (k[1:] != k[:-1]) | (s[1:] != s[:-1])
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n) - 1
    cnt = ends - starts + 1
    total = np.add.reduceat(v, starts)
    dev = v - np.repeat(total / cnt, cnt)
    dev *= dev
    contrib = np.zeros(n)  # trapezoid between each point and the next one of its group
    if n > 1:
        c = contrib[:-1]
        np.add(v[1:], v[:-1], out=c)
        np.multiply(c, np.diff(t), out=c, casting="unsafe")
        c *= 0.5e-9
        c[new[1:]] = 0.0
    cols: dict[str, np.ndarray | pl.Series] = {
        "kid": k[starts], "start": s[starts], "count": cnt.astype(np.int64), "sum": total,
        "_m2": np.add.reduceat(dev, starts),
        "min": np.minimum.reduceat(v, starts), "max": np.maximum.reduceat(v, starts),
        "_first_time": t[starts], "first": v[starts], "_last_time": t[ends], "last": v[ends],
        "integral": np.add.reduceat(contrib, starts),
    }
    if percentiles or sketch:
        pcts = {percentile_name(q): np.empty(starts.size) for q in percentiles}
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for g, arr in _value_classes(v, starts, cnt):
            n_g = cnt[g]
            rows = np.arange(g.size)
            for q in percentiles:
                h = q / 100.0 * (n_g - 1)
                lo = np.floor(h).astype(np.int64)
                hi = np.ceil(h).astype(np.int64)
                a, b = arr[rows, lo], arr[rows, hi]
                pcts[percentile_name(q)][g] = np.where(hi == lo, a, a + (h - lo) * (b - a))
            if sketch:
                parts.append(_sketch_runs(g, arr))
        cols.update(pcts)
        if sketch:
            if len(parts) == 1:
                sg, sk, sc = parts[0]
            else:
                sg, sk, sc = (np.concatenate(x) for x in zip(*parts, strict=True))
                o = np.argsort(sg, kind="stable")
                sg, sk, sc = sg[o], sk[o], sc[o]
            cols["_sketch"] = encode_sketches(sg, sk, sc, starts.size)
    return pl.DataFrame(cols, schema=partial_schema(percentiles, sketch))


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


def with_percentiles(frame: pl.DataFrame, percentiles: Sequence[float]) -> pl.DataFrame:
    """Add ``pNN`` columns estimated from each row's ``_sketch`` (null where it is empty)."""
    if not percentiles:
        return frame
    row, key, c = decode_sketches(frame.get_column("_sketch"))
    lo, hi = frame.get_column("min").to_numpy(), frame.get_column("max").to_numpy()
    est = sketch_quantiles(row, key, c, frame.height, percentiles, lo, hi)
    return frame.with_columns(pl.Series(name, a, dtype=pl.Float64).fill_nan(None) for name, a in est.items())


def derived() -> list[pl.Expr]:
    """``mean``, ``stddev`` (ddof=1) and ``rate`` (per second) from partial columns."""
    cnt = pl.col("count")
    span = (pl.col("_last_time") - pl.col("_first_time")).cast(pl.Float64) * 1e-9
    return [
        (pl.col("sum") / cnt).alias("mean"),
        pl.when(cnt >= 2).then((pl.col("_m2").clip(0.0) / (cnt - 1)).sqrt()).alias("stddev"),
        pl.when((cnt >= 2) & (span > 0)).then((pl.col("last") - pl.col("first")) / span).alias("rate"),
    ]
