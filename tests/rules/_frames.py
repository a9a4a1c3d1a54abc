"""Helpers for rule-engine tests: values and series frames from plain rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import polars as pl

from sensorium.stream.frame import VALUES_SCHEMA

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
S = 1_000_000_000


def series_key(measurement: str, **tags: str) -> str:
    return measurement + "".join(f",{k}={tags[k]}" for k in sorted(tags))


def values(rows: Iterable[tuple[Any, ...]], arrival: bool = False) -> pl.DataFrame:
    """Values frame from (series, field, time_ns, value[, arrival_ns]) rows."""
    rows = list(rows)
    schema: dict[str, Any] = dict(VALUES_SCHEMA)
    if arrival:
        schema["arrival"] = pl.Int64()
    return pl.DataFrame(rows, schema=schema, orient="row")


def series_frame(keys: Iterable[str]) -> pl.DataFrame:
    """Series frame for plain series keys ``measurement,tag=value,...``."""
    out = []
    for key in keys:
        m, *parts = key.split(",")
        out.append({"series": key, "bucket": "default", "measurement": m, **dict(p.split("=") for p in parts)})
    return pl.DataFrame(out, infer_schema_length=None)


def meta_of(keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for key in keys:
        m, *parts = key.split(",")
        out[key] = {"bucket": "default", "measurement": m, "tags": dict(p.split("=") for p in parts)}
    return out
