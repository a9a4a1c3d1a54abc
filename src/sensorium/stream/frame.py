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

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

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
    return frames_of(batch.bucket, batch.measurement, batch.table, batch.tags, None, default_bucket)


def frames_of(
    bucket: str,
    measurement: str,
    table: pa.Table,
    tag_names: Sequence[str],
    arrival: np.ndarray | None,
    default_bucket: str = "default",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(values frame, series frame) of a wide table; ``arrival`` (one per row) adds that column.

    Values come out row by row (the row's fields in column order), built with NumPy index
    arithmetic rather than an unpivot and a sort."""
    names = table.column_names
    tags = [t for t in tag_names if t in names]
    numeric = [
        f.name
        for f in table.schema
        if f.name not in _INTERNAL
        and f.name not in tags
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))
    ]
    prefix = "" if bucket == default_bucket else f"{bucket}:"
    df = pl.from_arrow(table.select(["time", *tags]))
    assert isinstance(df, pl.DataFrame)
    df = df.with_columns([pl.col(t).cast(pl.Utf8) for t in tags]).with_columns(
        _series_expr(measurement, tags, prefix)
    )
    series = (
        df.select(["series", *tags])
        .unique(subset="series", keep="first", maintain_order=True)
        .with_columns(pl.lit(bucket).alias("bucket"), pl.lit(measurement).alias("measurement"))
        .select(["series", "bucket", "measurement", *tags])
    )
    if not numeric:
        return empty_values(), series
    n, k = table.num_rows, len(numeric)
    vals = np.empty((n, k), dtype=np.float64)
    present = np.empty((n, k), dtype=bool)
    for j, f in enumerate(numeric):
        col = table[f].cast(pa.float64())  # before filling: a bool column takes no 0
        if col.null_count:
            present[:, j] = col.is_valid().to_numpy(zero_copy_only=False)
            col = pc.fill_null(col, 0.0)
        else:
            present[:, j] = True
        vals[:, j] = col.to_numpy()
    mask = present.ravel()
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = np.tile(np.arange(k, dtype=np.int64), n)
    if not mask.all():
        rows, cols = rows[mask], cols[mask]
    times = table["time"].cast(pa.int64()).to_numpy()
    out: dict[str, pl.Series] = {
        "series": df.get_column("series").gather(rows),
        "field": pl.Series("field", numeric, dtype=pl.Utf8).gather(cols),
        "time": pl.Series("time", times[rows], dtype=pl.Int64),
        "value": pl.Series("value", vals.ravel()[mask] if not mask.all() else vals.ravel(), dtype=pl.Float64),
    }
    if arrival is not None:
        out["arrival"] = pl.Series("arrival", arrival[rows], dtype=pl.Int64)
    return pl.DataFrame(out), series


def frames_of_batches(batches: Sequence[Batch], default_bucket: str = "default") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Frames of a micro-batch, with ``arrival``. Batches of one (bucket, measurement) are framed
    together (their order kept): series of different measurements never meet, so only the order
    within a measurement matters."""
    groups: dict[tuple[str, str], list[Batch]] = {}
    for b in batches:
        groups.setdefault((b.bucket, b.measurement), []).append(b)
    pairs = []
    for (bucket, measurement), bs in groups.items():
        tables = [b.table for b in bs]
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
        arrival = np.repeat(
            np.array([b.arrival_ns for b in bs], dtype=np.int64), [t.num_rows for t in tables]
        )
        tags: list[str] = []
        for b in bs:
            tags += [t for t in b.tags if t not in tags]
        pairs.append(frames_of(bucket, measurement, table, tags, arrival, default_bucket))
    values, series = concat_frames(pairs)
    if "arrival" not in values.columns:
        values = values.with_columns(pl.lit(None, pl.Int64).alias("arrival"))
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
