"""Chart data for the device page, downsampled on the server to the chart's pixel width.

The browser says how wide its charts are; :func:`pick_interval` turns (time range, width) into a
"nice" bucket width that puts at most one bucket per pixel, and :func:`device_charts` reads every
numeric field of one device in one statement per measurement: from the coarsest rollup table
whose window divides the bucket (``<measurement>_1m`` / ``_1h`` / ``_1d``, merged from their
partial aggregates), with the windows the stream has not closed yet read from raw data, or from
raw data bucketed the same way. Each bucket carries mean, min and max (the band keeps spikes
visible) and the highest anomaly score of the points in it. However long the range, a series
never holds more points than the chart has pixels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from sensorium.errors import BadRequest, NotFound
from sensorium.platform import Sensorium
from sensorium.query.downsample import duration_ns, parse_time
from sensorium.query.sql import ident as _q
from sensorium.query.sql import literal as _lit

MS = 1_000_000
S = 1_000 * MS
MIN = 60 * S
H = 60 * MIN
D = 24 * H
#: Bucket widths a chart may use, finest first (each a multiple of the rollup windows above it).
LADDER_NS = (
    100 * MS, 200 * MS, 500 * MS, S, 2 * S, 5 * S, 10 * S, 15 * S, 30 * S,
    MIN, 2 * MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN,
    H, 2 * H, 3 * H, 6 * H, 12 * H, D, 2 * D, 7 * D, 14 * D, 30 * D,
)
MIN_WIDTH, MAX_WIDTH = 16, 4096
NUMERIC = ("float", "integer", "unsigned", "boolean")
SCORES_TABLE = "anomaly_scores"
MAX_ALERTS = 500


def pick_interval(span_ns: int, width: int, floor_ns: int = 0) -> int:
    """The narrowest ladder step that gives at most ``width`` buckets over ``span_ns`` and is a
    multiple of ``floor_ns`` (a rollup window; 0: any)."""
    want = max(1, math.ceil(span_ns / max(1, width)), floor_ns)
    for step in LADDER_NS:
        if step >= want and (floor_ns == 0 or step % floor_ns == 0):
            return step
    return math.ceil(want / D) * D


def format_interval(ns: int) -> str:
    for unit, size in (("d", D), ("h", H), ("m", MIN), ("s", S), ("ms", MS)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


def _bucket(interval_ns: int) -> str:
    return f"time_bucket(INTERVAL '{interval_ns // 1000} microseconds', time)"


def _frame(table: pa.Table) -> pl.DataFrame:
    """Arrow → Polars with ``t`` in ns (DuckDB's time_bucket answers in µs)."""
    out = pl.from_arrow(table)
    assert isinstance(out, pl.DataFrame)
    return out.with_columns(pl.col("t").cast(pl.Datetime("ns")))


def _seconds(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamps → float seconds since the epoch (what uPlot draws)."""
    ns = np.asarray(col.cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy(zero_copy_only=False))
    return ns / 1e9


def time_range(start: str, end: str | None, now_ns: int) -> tuple[int, int]:
    start_ns = parse_time(start, now_ns)
    end_ns = parse_time(end, now_ns) if end else now_ns
    if end_ns <= start_ns:
        raise BadRequest("end must be after start")
    if end_ns - start_ns > 3650 * D:
        raise BadRequest("the time range may span at most 3650 days")
    return start_ns, end_ns


def check_width(width: int) -> int:
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise BadRequest(f"width must be between {MIN_WIDTH} and {MAX_WIDTH} pixels; got {width}")
    return width


def _rollups(platform: Sensorium, bucket: str, measurement: str) -> dict[str, int]:
    if platform.stream is None:
        return {}
    have = set(platform.stream.derived.names(bucket))
    return {iv: duration_ns(iv) for iv in platform.stream.intervals if f"{measurement}_{iv}" in have}


def _wide_raw(
    platform: Sensorium, bucket: str, measurement: str, fields: dict[str, str], device_id: str,
    start_ns: int, end_ns: int, interval_ns: int,
) -> pl.DataFrame:
    """One row per bucket: ``t`` and ``mean:<field>``, ``min:<field>``, ``max:<field>``."""
    sel = []
    for f, kind in fields.items():
        col = f"CAST({_q(f)} AS DOUBLE)" if kind == "boolean" else _q(f)
        sel += [f"avg({col}) AS {_q('mean:' + f)}", f"CAST(min({col}) AS DOUBLE) AS {_q('min:' + f)}",
                f"CAST(max({col}) AS DOUBLE) AS {_q('max:' + f)}"]
    sql = (
        f"SELECT {_bucket(interval_ns)} AS t, {', '.join(sel)} FROM {_q(measurement)} "
        f"WHERE {_q('device_id')} = {_lit(device_id)} AND time >= make_timestamp_ns({start_ns}) "
        f"AND time < make_timestamp_ns({end_ns}) GROUP BY 1 ORDER BY 1"
    )
    return _frame(platform.query(sql, bucket))


def _wide_rollup(
    platform: Sensorium, bucket: str, table: str, fields: list[str], device_id: str,
    start_ns: int, end_ns: int, interval_ns: int,
) -> pl.DataFrame:
    """The same shape as :func:`_wide_raw`, merged from a rollup table's partial aggregates."""
    sql = (
        f"SELECT {_bucket(interval_ns)} AS t, field, sum(sum) / sum(count) AS mean, "
        f"CAST(min(min) AS DOUBLE) AS min, CAST(max(max) AS DOUBLE) AS max FROM {_q(table)} "
        f"WHERE {_q('device_id')} = {_lit(device_id)} AND time >= make_timestamp_ns({start_ns}) "
        f"AND time < make_timestamp_ns({end_ns}) "
        f"AND field IN ({', '.join(_lit(f) for f in fields)}) GROUP BY ALL ORDER BY ALL"
    )
    long = _frame(platform.query(sql, bucket))
    if long.height == 0:
        return pl.DataFrame({"t": pl.Series([], dtype=pl.Datetime("ns"))})
    wide = long.pivot(on="field", index="t", values=["mean", "min", "max"], separator=":")
    return wide.sort("t")


def _scores(
    platform: Sensorium, bucket: str, device_id: str, start_ns: int, end_ns: int, interval_ns: int,
) -> pl.DataFrame | None:
    """Highest anomaly score per (measurement, field, bucket), or None without the table."""
    derived = platform.engine.derived
    if derived is None or SCORES_TABLE not in derived.names(bucket):
        return None
    sql = (
        f"SELECT {_bucket(interval_ns)} AS t, measurement, field, max(score) AS score "
        f"FROM {SCORES_TABLE} WHERE {_q('device_id')} = {_lit(device_id)} "
        f"AND time >= make_timestamp_ns({start_ns}) AND time < make_timestamp_ns({end_ns}) "
        "GROUP BY ALL"
    )
    return _frame(platform.query(sql, bucket))


def _device_measurements(platform: Sensorium, bucket: str, device_id: str) -> list[str]:
    tagged = [
        m for m in platform.measurements(bucket)
        if platform.registry.columns(bucket, m).get("device_id") == "tag"
    ]
    if not tagged:
        return []
    seen = {s["measurement"] for s in platform.latest(bucket, device_id=device_id)}
    return [m for m in tagged if m in seen]


def _plan(
    platform: Sensorium, bucket: str, measurement: str, span: int, width: int, resolution: str,
) -> tuple[int, str | None, str | None]:
    """(bucket width, rollup table to read or None for raw data, a note for the page)."""
    rollups = _rollups(platform, bucket, measurement)
    if resolution == "auto":
        interval = pick_interval(span, width)
        usable = [(w, name) for name, w in rollups.items() if interval % w == 0]
        return interval, (f"{measurement}_{max(usable)[1]}" if usable else None), None
    if resolution in rollups:
        return pick_interval(span, width, rollups[resolution]), f"{measurement}_{resolution}", None
    note = None if resolution == "raw" else f"no {resolution} rollup of {measurement!r} yet: raw data shown"
    return pick_interval(span, width), None, note


def _measurement_chart(
    platform: Sensorium, bucket: str, measurement: str, device_id: str, start_ns: int, end_ns: int,
    plan: tuple[int, str | None, str | None], scores: pl.DataFrame | None,
) -> dict[str, Any]:
    interval, table, note = plan
    cols = platform.registry.columns(bucket, measurement)
    fields = {c: kind for c, kind in sorted(cols.items()) if kind in NUMERIC}
    source = measurement
    if not fields:
        frame = pl.DataFrame({"t": pl.Series([], dtype=pl.Datetime("ns"))})
    elif table is None:
        frame = _wide_raw(platform, bucket, measurement, fields, device_id, start_ns, end_ns, interval)
    else:
        frame = _wide_rollup(platform, bucket, table, list(fields), device_id, start_ns, end_ns, interval)
        source = table
        # the windows the stream has not closed yet are only in raw data: the last rollup
        # bucket (maybe partial) and everything after it come from there
        tail_ns = int(frame.get_column("t").cast(pl.Int64)[-1]) if frame.height else start_ns
        tail = _wide_raw(platform, bucket, measurement, fields, device_id, tail_ns, end_ns, interval)
        if tail.height:
            head = frame.filter(pl.col("t").cast(pl.Int64) < tail_ns) if frame.height else frame
            frame = pl.concat([head, tail], how="diagonal_relaxed") if head.height else tail
            source = f"{table} + {measurement}"
    seconds = _seconds(frame.get_column("t").to_arrow()) if frame.height else np.zeros(0)
    out_fields = []
    for f, kind in fields.items():
        if f"mean:{f}" not in frame.columns:
            continue
        item: dict[str, Any] = {"field": f, "type": kind}
        for stat in ("mean", "min", "max"):
            item[stat] = frame.get_column(f"{stat}:{f}").cast(pl.Float32).to_numpy()
        item["score"] = None
        if scores is not None and scores.height:
            s = scores.filter((pl.col("measurement") == measurement) & (pl.col("field") == f))
            if s.height:
                joined = frame.select("t").join(s.select("t", "score"), on="t", how="left")
                item["score"] = joined.get_column("score").cast(pl.Float32).to_numpy()
        out_fields.append(item)
    return {
        "measurement": measurement,
        "source": source,
        "interval": format_interval(interval),
        "interval_ns": interval,
        "points": int(frame.height),
        "time": seconds,
        "fields": out_fields,
        "note": note,
    }


def _alerts(platform: Sensorium, device_id: str, start_ns: int, end_ns: int) -> list[dict[str, Any]]:
    store = platform.alerts
    if store is None:
        return []
    out = []
    for a in store.list(series_contains=device_id, limit=MAX_ALERTS):  # bounded: per alert
        if (a.get("tags") or {}).get("device_id") != device_id:
            continue
        fired, resolved = a.get("fired_at_ns"), a.get("resolved_at_ns")
        if fired is None or fired >= end_ns or (resolved is not None and resolved < start_ns):
            continue
        out.append({
            "alert_id": a["alert_id"], "rule": a["rule"], "measurement": a.get("measurement"),
            "field": (a.get("field") or "").split(":")[0] or None, "severity": a["severity"],
            "state": a["state"], "acknowledged": bool(a.get("acknowledged")),
            "message": a.get("message"), "fired_at": fired / 1e9,
            "resolved_at": resolved / 1e9 if resolved is not None else None,
        })
    return out


def device_charts(
    platform: Sensorium,
    device_id: str,
    *,
    start: str,
    end: str | None,
    width: int,
    resolution: str,
    bucket: str | None = None,
) -> dict[str, Any]:
    """Every numeric field of ``device_id`` over [start, end), at most ``width`` buckets a
    series; ``resolution``: ``auto``, ``raw`` or a rollup interval (``1m``, ``1h``, ``1d``)."""
    bucket = bucket or platform.settings.default_bucket
    check_width(width)
    allowed = ("auto", "raw", *(platform.stream.intervals if platform.stream is not None else ()))
    if resolution not in allowed:
        raise BadRequest(f"resolution must be one of {', '.join(allowed)}; got {resolution!r}")
    now = platform.clock()
    start_ns, end_ns = time_range(start, end, now)
    platform.process_pending()
    measurements = _device_measurements(platform, bucket, device_id)
    if not measurements:
        raise NotFound(f"no device {device_id!r} in bucket {bucket!r} (no series has that device_id tag)")
    plans = {m: _plan(platform, bucket, m, end_ns - start_ns, width, resolution) for m in measurements}
    # anomaly scores on each grid in use (one query per distinct bucket width; usually one)
    scores = {iv: _scores(platform, bucket, device_id, start_ns, end_ns, iv) for iv, _, _ in plans.values()}
    charts = [
        _measurement_chart(platform, bucket, m, device_id, start_ns, end_ns, plan, scores[plan[0]])
        for m, plan in plans.items()
    ]
    return {
        "device_id": device_id,
        "bucket": bucket,
        "now": now / 1e9,
        "start": start_ns / 1e9,
        "end": end_ns / 1e9,
        "width": width,
        "resolution": resolution,
        "measurements": charts,
        "alerts": _alerts(platform, device_id, start_ns, end_ns),
    }
