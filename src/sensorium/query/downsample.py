"""Downsampled series that read rollup tables when they can (long ranges stay cheap).

``plan(...)`` picks the coarsest rollup interval that divides the requested bucket width and
builds one SQL statement: over a rollup table, partial aggregates are merged (``count``/``sum``
add, ``mean`` = Σsum/Σcount, ``stddev`` from Σ_m2 and the partial means, ``first``/``last`` by
their times); over raw data, the plain aggregate per ``time_bucket``. Percentiles merge only
from raw data or a rollup of exactly the requested width.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sensorium.errors import BadRequest
from sensorium.query.sql import ident as _q
from sensorium.query.sql import literal as _lit

NS = 1_000_000_000
_UNITS = {"ms": 1_000_000, "s": NS, "m": 60 * NS, "h": 3600 * NS, "d": 86400 * NS, "w": 7 * 86400 * NS}
_DUR = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")
SIMPLE = ("count", "sum", "mean", "min", "max", "stddev", "first", "last")
_PCT = re.compile(r"^p(\d{1,2}(?:\.\d+)?)$")


def duration_ns(text: str) -> int:
    m = _DUR.match(text)
    if not m or int(m.group(1)) <= 0:
        raise BadRequest(f"bad duration {text!r}: use a positive number and a unit (ms, s, m, h, d, w), e.g. 15m")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_time(text: str, now_ns: int) -> int:
    t = text.strip()
    if t == "now":
        return now_ns
    if t.startswith("now-"):
        return now_ns - duration_ns(t[4:])
    if t.lstrip("-").isdigit():
        return int(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"bad time {text!r}: use RFC 3339 (2026-01-01T00:00:00Z), ns, or now-<duration>") from None
    if dt.tzinfo is None:
        raise BadRequest(f"time {text!r} has no timezone; add Z or an offset")
    return int(dt.timestamp()) * NS + dt.microsecond * 1000


@dataclass(frozen=True)
class Plan:
    sql: str
    source: str  # table read


def plan(
    measurement: str,
    field: str,
    *,
    start_ns: int,
    end_ns: int,
    every: str,
    agg: str,
    tags: dict[str, str],
    by: list[str],
    rollups: dict[str, int],
    raw_columns: set[str],
) -> Plan:
    """``rollups``: interval name → width (ns) of the rollup tables that exist for ``measurement``."""
    width = duration_ns(every)
    pct = _PCT.match(agg)
    if agg not in SIMPLE and not pct:
        raise BadRequest(f"unknown aggregate {agg!r}: use one of {', '.join(SIMPLE)} or pNN (e.g. p95)")
    if end_ns <= start_ns:
        raise BadRequest("end must be after start")
    usable = [
        (w, name) for name, w in rollups.items() if width % w == 0 and (not pct or w == width)
    ]
    where = [f"time >= make_timestamp_ns({start_ns})", f"time < make_timestamp_ns({end_ns})"]
    where += [f"{_q(k)} = {_lit(v)}" for k, v in sorted(tags.items())]
    group = [_q(b) for b in by]
    bucket_expr = f"time_bucket(INTERVAL '{width // 1000} microseconds', time)"
    sel_by = "".join(f", {g}" for g in group)
    if usable:
        w, name = max(usable)
        table = f"{measurement}_{name}"
        where.append(f"field = {_lit(field)}")
        exprs = {
            "count": "sum(count)",
            "sum": "sum(sum)",
            "mean": "sum(sum) / sum(count)",
            "min": "min(min)",
            "max": "max(max)",
            "first": "arg_min(first, _first_time)",
            "last": "arg_max(last, _last_time)",
            "stddev": (
                "CASE WHEN sum(count) > 1 THEN sqrt(greatest(0, (sum(_m2) + sum(count * mean * mean) "
                "- sum(sum) * sum(sum) / sum(count)) / (sum(count) - 1))) END"
            ),
        }
        value = exprs[agg] if not pct else f"max({_q(agg)})"
        sql = (
            f"SELECT {bucket_expr} AS time{sel_by}, {value} AS {_q(agg)} FROM {_q(table)} "
            f"WHERE {' AND '.join(where)} GROUP BY ALL ORDER BY ALL"
        )
        return Plan(sql, table)
    if field not in raw_columns:
        raise BadRequest(f"measurement {measurement!r} has no field {field!r}")
    col = _q(field)
    raw = {
        "count": f"count({col})",
        "sum": f"sum({col})",
        "mean": f"avg({col})",
        "min": f"min({col})",
        "max": f"max({col})",
        "first": f"arg_min({col}, time)",
        "last": f"arg_max({col}, time)",
        "stddev": f"stddev_samp({col})",
    }
    value = raw[agg] if not pct else f"quantile_cont({col}, {float(pct.group(1)) / 100})"
    where.append(f"{col} IS NOT NULL")
    sql = (
        f"SELECT {bucket_expr} AS time{sel_by}, {value} AS {_q(agg)} FROM {_q(measurement)} "
        f"WHERE {' AND '.join(where)} GROUP BY ALL ORDER BY ALL"
    )
    return Plan(sql, measurement)
