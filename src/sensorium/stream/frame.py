"""The stream's batch form: one long frame of numeric values, plus the series it names.

Every stage of the stream (windows, rollups, rolling statistics, rules) takes a *values frame*::

    series: Utf8    opaque series key: "<measurement>,<tag>=<value>,..." (tags sorted by name,
                    null tags left out), prefixed "<bucket>:" for a bucket other than the default
    field:  Utf8    field name
    time:   Int64   event time, UTC nanoseconds
    value:  Float64 the value (integers and booleans as floats; strings are not streamed)

in arrival (log) order, and a *series frame* describing the series it names::

    series, bucket, measurement, <one Utf8 column per tag name, null where a series lacks it>

Conversion from a stored batch (wide Arrow table: time, tag columns, field columns) is vectorised:
one ``concat_str`` for the keys and one ``unpivot`` for the values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa

VALUES_SCHEMA: dict[str, pl.DataType] = {
    "series": pl.Utf8(),
    "field": pl.Utf8(),
    "time": pl.Int64(),
    "value": pl.Float64(),
}
_INTERNAL = frozenset({"time", "day", "quality", "quality_flags", "__line"})


def empty_values() -> pl.DataFrame:
    return pl.DataFrame(schema=VALUES_SCHEMA)


def empty_series() -> pl.DataFrame:
    return pl.DataFrame(schema={"series": pl.Utf8, "bucket": pl.Utf8, "measurement": pl.Utf8})


@dataclass(frozen=True, slots=True)
class Batch:
    """One stored batch as the stream sees it."""

    offset: int  # log offset (-1 when not from the log)
    bucket: str
    measurement: str
    table: pa.Table  # wide: time, tags, fields
    tags: tuple[str, ...]  # which columns are tags
    arrival_ns: int  # processing time it was appended to the log


def _series_expr(measurement: str, tags: Sequence[str], prefix: str) -> pl.Expr:
    parts: list[pl.Expr] = [pl.lit(prefix + measurement)]
    for t in sorted(tags):
        parts.append(
            pl.when(pl.col(t).is_not_null())
            .then(pl.lit(f",{t}=") + pl.col(t).cast(pl.Utf8))
            .otherwise(pl.lit(""))
        )
    return pl.concat_str(parts).alias("series")


def to_frames(batch: Batch, default_bucket: str = "default") -> tuple[pl.DataFrame, pl.DataFrame]:
    """(values frame, series frame) of one stored batch."""
    table = batch.table
    names = table.column_names
    tags = [t for t in batch.tags if t in names]
    numeric = [
        f.name
        for f in table.schema
        if f.name not in _INTERNAL
        and f.name not in tags
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))
    ]
    prefix = "" if batch.bucket == default_bucket else f"{batch.bucket}:"
    df = pl.from_arrow(table.select(["time", *tags, *numeric]))
    assert isinstance(df, pl.DataFrame)
    tcol = df.get_column("time")
    if tcol.dtype != pl.Int64:
        df = df.with_columns(pl.col("time").cast(pl.Int64))
    df = df.with_columns([pl.col(t).cast(pl.Utf8) for t in tags]).with_columns(
        _series_expr(batch.measurement, tags, prefix)
    )
    series = (
        df.select(["series", *tags])
        .unique(subset="series", keep="first", maintain_order=True)
        .with_columns(pl.lit(batch.bucket).alias("bucket"), pl.lit(batch.measurement).alias("measurement"))
        .select(["series", "bucket", "measurement", *tags])
    )
    if not numeric:
        return empty_values(), series
    values = (
        df.select(["series", "time", *[pl.col(f).cast(pl.Float64) for f in numeric]])
        .with_row_index("__row")
        .unpivot(index=["__row", "series", "time"], on=numeric, variable_name="field", value_name="value")
        .drop_nulls("value")
        .sort("__row", maintain_order=True)  # arrival order: row by row, fields in column order
        .select(["series", "field", "time", "value"])
    )
    return values, series


def concat_frames(
    frames: Iterable[tuple[pl.DataFrame, pl.DataFrame]],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Concatenate (values, series) pairs in order; series deduplicated."""
    vals: list[pl.DataFrame] = []
    sers: list[pl.DataFrame] = []
    for v, s in frames:
        if v.height:
            vals.append(v)
        sers.append(s)
    values = pl.concat(vals, how="vertical") if vals else empty_values()
    series = (
        pl.concat(sers, how="diagonal_relaxed").unique(subset="series", keep="last", maintain_order=True)
        if sers
        else empty_series()
    )
    return values, series
