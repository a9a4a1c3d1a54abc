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

from sensorium import jit
from sensorium.keyindex import HashIndex, Keys, NameIndex, first_occurrences

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
    combo: np.ndarray  # per value row: its tag combination (index into ``keys``); empty with ``sid``
    fields: list[str]
    field: np.ndarray  # per value row: index into ``fields``
    sid: np.ndarray | None = None  # per value row: its series id (framed with a SeriesCombos)


_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_SEEDS = (0x5E753, 0x5E754)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (a bijection of 64-bit words; 0 stays 0), in place."""
    x ^= x >> np.uint64(30)
    x *= _MIX[0]
    x ^= x >> np.uint64(27)
    x *= _MIX[1]
    x ^= x >> np.uint64(31)
    return x


def _indices(idx: pa.Array) -> np.ndarray:
    """A dictionary chunk's indices as int64, nulls as -1."""
    if idx.null_count == len(idx):
        return np.full(len(idx), -1, dtype=np.int64)
    if not idx.null_count:
        return idx.to_numpy().astype(np.int64)
    out = pc.fill_null(idx, 0).to_numpy().astype(np.int64)
    out[~idx.is_valid().to_numpy(zero_copy_only=False)] = -1
    return out


def _tag_codes(col: pa.ChunkedArray) -> tuple[np.ndarray, pl.Series] | None:
    """``(codes, names)`` of a tag column: each row's value as an index into ``names`` (-1 where
    null); None unless its values are strings. Dictionary-encoded chunks (each batch has its own
    dictionary): the dictionaries one after the other, so a name is hashed once per column and
    chunk, not once per row (a step of many requests has a chunk per request)."""
    chunks = col.chunks
    if not chunks:
        return np.zeros(0, dtype=np.int64), pl.Series("names", [], dtype=pl.Utf8)
    if all(pa.types.is_dictionary(c.type) for c in chunks):
        if not all(pa.types.is_string(c.type.value_type) or pa.types.is_large_string(c.type.value_type) for c in chunks):
            return None
        dicts = [c.dictionary for c in chunks]
        names = pl.Series("names", pa.concat_arrays(dicts) if len(dicts) > 1 else dicts[0])
        base = 0
        parts = []
        for c, d in zip(chunks, dicts, strict=True):
            codes = _indices(c.indices)
            if base:
                codes[codes >= 0] += base
            parts.append(codes)
            base += len(d)
        return (np.concatenate(parts) if len(parts) > 1 else parts[0]), names
    if pa.types.is_dictionary(col.type):  # some chunks decoded: decode them all
        col = col.cast(col.type.value_type)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        return None
    names = pl.Series("names", col)
    codes = np.arange(len(names), dtype=np.int64)
    if col.null_count:
        codes[names.is_null().to_numpy()] = -1
    return codes, names


class SeriesCombos:
    """The series id of a row's (bucket, measurement, tag values), found without building its
    series key: a 128-bit hash of the combination (two 64-bit hashes, both must match) looked up
    in a :class:`~sensorium.keyindex.HashIndex`. A combination is framed the long way (group-by,
    key string, the series index) once, when first seen; the runner keeps one of these beside its
    series index.

    The hash of a row is the sum, over its non-null tags, of a mix of the tag name's and the
    value's hashes, plus one of the prefixed measurement: a tag left out and a null tag hash
    alike, and the column order and set do not matter — as in the series key. Equal hashes mean
    the same series (a 128-bit collision aside); one series may have several entries (e.g. a
    dictionary holding a null value), which only costs a row each."""

    def __init__(self) -> None:
        self._index = HashIndex(spread=2)  # half full: ~3 MB at 100 k series
        self._b = np.zeros(0, dtype=np.uint64)
        self._sid = np.zeros(0, dtype=np.int32)
        self._names: dict[tuple[str, int], np.uint64] = {}  # hashes of measurements and tag names

    def _name_hash(self, name: str, seed: int) -> np.uint64:
        """A measurement's or tag name's hash, computed once (not a Polars call per step)."""
        h = self._names.get((name, seed))
        if h is None:
            h = self._names[(name, seed)] = pl.Series([name]).hash(seed=seed).to_numpy()[0]
        return h

    def __len__(self) -> int:
        return len(self._sid)

    def hashes(self, table: pa.Table, tags: Sequence[str], head: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Both hashes of every row (``head``: the bucket prefix and measurement), or None when a
        tag column does not hold strings."""
        n = table.num_rows
        coded = []
        for t in tags:
            tc = _tag_codes(table[t])
            if tc is None:
                return None
            coded.append((t, *tc))
        a, b = (
            np.full(n, _mix(np.array([self._name_hash(head, seed)], dtype=np.uint64))[0], dtype=np.uint64)
            for seed in _SEEDS
        )
        for t, codes, names in coded:  # each row: + splitmix64(hash(value) ^ hash(tag name)), per seed
            ha, hb = (names.hash(seed=seed).to_numpy() for seed in _SEEDS)
            jit.combo_add(codes, ha, hb, self._name_hash(t, _SEEDS[0] + 2), self._name_hash(t, _SEEDS[1] + 3), a, b)
        return a, b

    def lookup(self, ha: np.ndarray, hb: np.ndarray) -> np.ndarray:
        """Series id of each row (-1: not seen yet)."""
        at = self._index.ids_of_hashes(ha)
        found = np.flatnonzero(at >= 0)
        found = found[self._b[at[found]] == hb[found]]
        sid = np.full(len(ha), -1, dtype=np.int32)
        sid[found] = self._sid[at[found]]
        return sid

    def add(self, ha: np.ndarray, hb: np.ndarray, sid: np.ndarray) -> None:
        """Remember combinations (their hashes) and their series ids; a first hash already held by
        another combination is not remembered (that one is framed the long way each time)."""
        _, first = np.unique(ha, return_index=True)
        first = first[self._index.ids_of_hashes(ha[first]) < 0]
        if len(first):
            self._index.add_hashes(ha[first])
            self._b = np.concatenate([self._b, hb[first]])
            self._sid = np.concatenate([self._sid, sid[first].astype(np.int32, copy=False)])


def _frame(
    bucket: str,
    measurement: str,
    table: pa.Table,
    tag_names: Sequence[str],
    arrival: np.ndarray | None,
    default_bucket: str,
    combos: SeriesCombos | None = None,
    series_index: NameIndex | None = None,
    names: bool = True,
) -> _Framed:
    """Values come out row by row (the row's fields in column order), built with NumPy index
    arithmetic rather than an unpivot and a sort. Series keys are built once per distinct tag
    combination (a group-by on the tag columns, which arrive dictionary-encoded), not per row;
    with ``combos`` (and the ``series_index`` they map into) only for combinations not seen
    before (the series frame then holds only theirs). ``names=False``: no ``series`` and
    ``field`` columns (the caller names rows by their ids, see :func:`keyed_frames`)."""
    columns = table.column_names
    tags = [t for t in tag_names if t in columns]
    numeric = [
        f.name
        for f in table.schema
        if f.name not in _INTERNAL
        and f.name not in tags
        and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))
    ]
    prefix = "" if bucket == default_bucket else f"{bucket}:"
    n = table.num_rows
    sid_of_row = None
    hashed = combos.hashes(table, tags, prefix + measurement) if combos is not None and tags and n else None
    if hashed is not None:
        assert combos is not None and series_index is not None
        sid_of_row = combos.lookup(*hashed)
        new_rows = np.flatnonzero(sid_of_row < 0)
        series = empty_series()
        if len(new_rows):  # combinations not seen before: framed the long way, then remembered

            def learn(rows: np.ndarray) -> pl.DataFrame:
                sub = table.select(tags).take(rows) if len(rows) < n else table.select(tags)
                keys, combo_of_new, found = _combos(bucket, measurement, sub, tags, prefix)
                sid_of_row[rows] = series_index.ids(keys).astype(np.int32, copy=False)[combo_of_new]
                combos.add(hashed[0][rows], hashed[1][rows], sid_of_row[rows])
                return found

            # one row of each combination (by its first hash) is framed, the others are found by
            # both hashes; rows still unfound (a first hash two combinations share) are framed too
            series = learn(new_rows[first_occurrences(hashed[0][new_rows])])
            rest = new_rows[sid_of_row[new_rows] < 0]
            if len(rest):
                sid_of_row[rest] = combos.lookup(hashed[0][rest], hashed[1][rest])
                still = rest[sid_of_row[rest] < 0]
                if len(still):
                    series = pl.concat([series, learn(still)], how="diagonal_relaxed")
        keys = pl.Series("series", [], dtype=pl.Utf8)
        combo_of_row = None  # rows are named by ``sid_of_row``
    else:
        keys, combo_of_row, series = _combos(bucket, measurement, table, tags, prefix)
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
    cols = np.tile(np.arange(k, dtype=np.int64), n)
    flat = vals.ravel()
    # a row's columns per value, in row order: a repeat (sequential), not a gather by row index
    per_row = k if mask.all() else present.sum(axis=1)
    if not mask.all():
        cols, flat = cols[mask], flat[mask]

    def spread(a: np.ndarray) -> np.ndarray:
        return np.repeat(a, per_row)

    times = table["time"].cast(pa.int64()).to_numpy()
    sid = None
    if combo_of_row is not None:
        combo = spread(combo_of_row)
    else:  # rows named by id
        assert sid_of_row is not None and series_index is not None
        combo, sid = np.zeros(0, dtype=np.int64), spread(sid_of_row)
    out: dict[str, pl.Series] = {}
    if names:  # a gather of strings per row
        out["series"] = keys.gather(combo) if sid is None else series_index.column().gather(sid)  # type: ignore[union-attr]
        out["field"] = pl.Series("field", numeric, dtype=pl.Utf8).gather(cols)
    out["time"] = pl.Series("time", spread(times), dtype=pl.Int64)
    out["value"] = pl.Series("value", flat, dtype=pl.Float64)
    if arrival is not None:
        out["arrival"] = pl.Series("arrival", spread(arrival), dtype=pl.Int64)
    return _Framed(pl.DataFrame(out), series, keys, combo, numeric, cols, sid)


def _combos(
    bucket: str, measurement: str, table: pa.Table, tags: Sequence[str], prefix: str
) -> tuple[pl.Series, np.ndarray, pl.DataFrame]:
    """(series key of each distinct tag combination, each row's combination, series frame): a
    group-by on the tag columns (which arrive dictionary-encoded), keys built once per combination."""
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
    return combos.get_column("series"), combo_of_row, series


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
    batches: Sequence[Batch], default_bucket: str, series_index: NameIndex, field_index: NameIndex,
    combos: SeriesCombos | None = None,
    names: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame, Keys]:
    """:func:`frames_of_batches` plus the :class:`~sensorium.keyindex.Keys` of its rows in
    ``series_index`` and ``field_index`` (names looked up once per distinct series and field).
    With ``combos`` (kept by the caller beside ``series_index``) a series seen before is found
    by the hash of its tags, and the series frame holds only the series framed for the first
    time through ``combos``. ``names=False``: the values come without their ``series`` and
    ``field`` columns (a string per value); :func:`named` adds them from the keys."""
    values, series, keys = _frames_of_batches(batches, default_bucket, (series_index, field_index), combos, names)
    assert keys is not None
    return values, series, keys


def _frames_of_batches(
    batches: Sequence[Batch], default_bucket: str, index: tuple[NameIndex, NameIndex] | None,
    combos: SeriesCombos | None = None,
    names: bool = True,
) -> tuple[pl.DataFrame, pl.DataFrame, Keys | None]:
    si = index[0] if index is not None else None
    framed = [
        _frame(b, m, t, tags, arr, default_bucket, combos if si is not None else None, si, names or index is None)
        for b, m, t, tags, arr in _group(batches)
    ]
    values, series = concat_frames((f.values, f.series) for f in framed)
    if "arrival" not in values.columns:
        values = values.with_columns(pl.lit(None, pl.Int64).alias("arrival"))
    keys = None
    if index is not None:
        si, fi = index
        parts = [
            Keys(
                f.sid if f.sid is not None else si.ids(f.keys).astype(np.int32, copy=False)[f.combo],
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


def named(values: pl.DataFrame, keys: Keys) -> pl.DataFrame:
    """``values`` framed without names (:func:`keyed_frames` with ``names=False``) with its
    ``series`` and ``field`` columns, from the rows' keys; as it is when it has them."""
    if "series" in values.columns:
        return values
    return values.select(
        keys.series.column().gather(keys.sid).alias("series"),
        keys.fields.column().gather(keys.fid).alias("field"),
        pl.all(),
    )


def concat_frames(
    frames: Iterable[tuple[pl.DataFrame, pl.DataFrame]],
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Concatenate (values, series) pairs in order (see :func:`concat_columns`); series
    deduplicated."""
    vals: list[pl.DataFrame] = []
    sers: list[pl.DataFrame] = []
    for v, s in frames:
        if v.height:
            vals.append(v)
        sers.append(s)
    values = concat_columns(vals) if vals else empty_values()
    series = (
        pl.concat(sers, how="diagonal_relaxed").unique(subset="series", keep="last", maintain_order=True)
        if sers
        else empty_series()
    )
    return values, series


def concat_columns(frames: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Frames of the same columns, one after the other, each column in one chunk.

    Every stage reads the step's columns as NumPy arrays (``to_numpy``), which copies a column
    of several chunks into fresh memory on every call. So the numeric columns without nulls are
    concatenated by NumPy once, here, and wrapped by Polars without a copy; their memory then
    comes from the C heap, which the next step reuses, instead of Polars' allocator, which hands
    freed pages back at once (``sensorium.obs._jemalloc``) — those copies and their page faults
    were a third of a drain's faults (docs/benchmarks.md, session 22). Other columns (names) are
    concatenated by Polars."""
    if len(frames) == 1 and all(c.n_chunks() == 1 for c in frames[0].get_columns()):
        return frames[0]
    cols = []
    for name, dtype in frames[0].schema.items():
        parts = [f.get_column(name) for f in frames]
        if dtype.is_numeric() and not any(p.null_count() for p in parts):
            cols.append(pl.Series(name, np.concatenate([p.to_numpy() for p in parts]), dtype=dtype))
        else:
            cols.append(pl.concat(parts).rechunk())
    return pl.DataFrame(cols)


def released(parts: list[T]) -> Iterator[T]:
    """The items of ``parts`` in order, the list emptied as they go: a caller that rebinds its
    variable to each in turn holds one at a time (slices of a frame release its chunks as they
    are consumed, instead of all at the end)."""
    parts.reverse()
    while parts:
        yield parts.pop()
