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

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.keyindex import Keys, NameIndex

T = TypeVar("T")

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
    """(values frame, series frame) of a wide table; ``arrival`` (one per row) adds that column."""
    f = _frame(bucket, measurement, table, tag_names, arrival, default_bucket)
    return f.values, f.series


@dataclass(frozen=True, slots=True)
class _Framed:
    values: pl.DataFrame
    series: pl.DataFrame  # one row per distinct series (first sight)
    keys: pl.Series  # the series key of each distinct tag combination (Utf8)
    combo: np.ndarray  # per value row: its tag combination (index into ``keys``)
    fields: list[str]
    field: np.ndarray  # per value row: index into ``fields``


def _frame(
    bucket: str,
    measurement: str,
    table: pa.Table,
    tag_names: Sequence[str],
    arrival: np.ndarray | None,
    default_bucket: str,
) -> _Framed:
    """Values come out row by row (the row's fields in column order), built with NumPy index
    arithmetic rather than an unpivot and a sort. Series keys are built once per distinct tag
    combination (a group-by on the tag columns, which arrive dictionary-encoded), not per row."""
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
    n = table.num_rows
    if tags and n:
        df = pl.from_arrow(table.select(tags))
        assert isinstance(df, pl.DataFrame)
        g = df.with_row_index("__row").group_by(tags, maintain_order=True).agg(pl.col("__row"))
        members = g.get_column("__row")
        combo_of_row = np.empty(n, dtype=np.int64)
        combo_of_row[members.explode().to_numpy()] = np.repeat(
            np.arange(g.height, dtype=np.int64), members.list.len().to_numpy()
        )
        combos = g.drop("__row").with_columns([pl.col(t).cast(pl.Utf8) for t in tags])
    else:  # no tags: one series (when there are rows)
        m = min(n, 1)
        combos = pl.DataFrame({"__one": [0] * m, **{t: pl.Series(t, [None] * m, dtype=pl.Utf8) for t in tags}})
        combo_of_row = np.zeros(n, dtype=np.int64)
    combos = combos.with_columns(_series_expr(measurement, tags, prefix)).select(["series", *tags])
    series = (
        combos.unique(subset="series", keep="first", maintain_order=True)
        .with_columns(pl.lit(bucket).alias("bucket"), pl.lit(measurement).alias("measurement"))
        .select(["series", "bucket", "measurement", *tags])
    )
    keys = combos.get_column("series")
    if not numeric or not n:
        none = np.zeros(0, dtype=np.int64)
        return _Framed(empty_values(), series, keys, none, numeric, none)
    k = len(numeric)
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
    flat = vals.ravel()
    if not mask.all():
        rows, cols, flat = rows[mask], cols[mask], flat[mask]
    times = table["time"].cast(pa.int64()).to_numpy()
    combo = combo_of_row[rows]
    out: dict[str, pl.Series] = {
        "series": keys.gather(combo),
        "field": pl.Series("field", numeric, dtype=pl.Utf8).gather(cols),
        "time": pl.Series("time", times[rows], dtype=pl.Int64),
        "value": pl.Series("value", flat, dtype=pl.Float64),
    }
    if arrival is not None:
        out["arrival"] = pl.Series("arrival", arrival[rows], dtype=pl.Int64)
    return _Framed(pl.DataFrame(out), series, keys, combo, numeric, cols)


def _group(batches: Sequence[Batch]) -> list[tuple[str, str, pa.Table, list[str], np.ndarray]]:
    """Batches of one (bucket, measurement) framed together (their order kept): series of
    different measurements never meet, so only the order within a measurement matters."""
    groups: dict[tuple[str, str], list[Batch]] = {}
    for b in batches:
        groups.setdefault((b.bucket, b.measurement), []).append(b)
    out = []
    for (bucket, measurement), bs in groups.items():
        tables = [b.table for b in bs]
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive")
        arrival = np.repeat(
            np.array([b.arrival_ns for b in bs], dtype=np.int64), [t.num_rows for t in tables]
        )
        tags: list[str] = []
        for b in bs:
            tags += [t for t in b.tags if t not in tags]
        out.append((bucket, measurement, table, tags, arrival))
    return out


def frames_of_batches(batches: Sequence[Batch], default_bucket: str = "default") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Frames of a micro-batch, with ``arrival``."""
    values, series, _ = _frames_of_batches(batches, default_bucket, None)
    return values, series


def keyed_frames(
    batches: Sequence[Batch], default_bucket: str, series_index: NameIndex, field_index: NameIndex
) -> tuple[pl.DataFrame, pl.DataFrame, Keys]:
    """:func:`frames_of_batches` plus the :class:`~sensorium.keyindex.Keys` of its rows in
    ``series_index`` and ``field_index`` (names looked up once per distinct series and field)."""
    values, series, keys = _frames_of_batches(batches, default_bucket, (series_index, field_index))
    assert keys is not None
    return values, series, keys


def _frames_of_batches(
    batches: Sequence[Batch], default_bucket: str, index: tuple[NameIndex, NameIndex] | None
) -> tuple[pl.DataFrame, pl.DataFrame, Keys | None]:
    framed = [_frame(b, m, t, tags, arr, default_bucket) for b, m, t, tags, arr in _group(batches)]
    values, series = concat_frames((f.values, f.series) for f in framed)
    if "arrival" not in values.columns:
        values = values.with_columns(pl.lit(None, pl.Int64).alias("arrival"))
    keys = None
    if index is not None:
        si, fi = index
        parts = [
            Keys(
                si.ids(f.keys).astype(np.int32, copy=False)[f.combo],
                fi.ids(pl.Series(f.fields, dtype=pl.Utf8)).astype(np.int32, copy=False)[f.field],
                si,
                fi,
            )
            for f in framed
            if f.values.height
        ]
        none = np.zeros(0, dtype=np.int32)
        keys = Keys.concat(parts) if parts else Keys(none, none, si, fi)
    return values, series, keys


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


def released(parts: list[T]) -> Iterator[T]:
    """The items of ``parts`` in order, the list emptied as they go: a caller that rebinds its
    variable to each in turn holds one at a time (slices of a frame release its chunks as they
    are consumed, instead of all at the end)."""
    parts.reverse()
    while parts:
        yield parts.pop()
