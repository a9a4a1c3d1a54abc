"""Points, batches and the schema registry.

A **point** is ``(measurement, tags, fields, time)``. A **batch** is an Arrow table for ONE measurement:

* ``time`` — ``timestamp[ns, tz=UTC]``, never null;
* tag columns — ``dictionary<int32, string>`` (null: the point has no such tag);
* field columns — ``float64`` | ``int64`` | ``uint64`` | ``bool`` | ``string`` (null: not set);
* ``_line`` — ``int32``, 1-based number of the source line or reading. Internal: present between
  parsing and validation, dropped before the log.
* after validation: ``quality`` (``float32``, 0–1) and ``quality_flags`` (``string``, comma-separated).

Tags are told from fields by type: a dictionary column is a tag. In the lake, tags are stored as plain
strings; the registry remembers which columns are tags.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.errors import TypeConflictError

TIME = "time"
LINE = "_line"
QUALITY = "quality"
QUALITY_FLAGS = "quality_flags"
RESERVED = frozenset({TIME, LINE, QUALITY, QUALITY_FLAGS, "day", "_bucket", "_measurement"})

TIME_TYPE = pa.timestamp("ns", tz="UTC")
TAG_TYPE = pa.dictionary(pa.int32(), pa.string())

FieldKind = Literal["float", "integer", "unsigned", "boolean", "string"]
FIELD_TYPES: dict[str, pa.DataType] = {
    "float": pa.float64(),
    "integer": pa.int64(),
    "unsigned": pa.uint64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}
FieldValue = float | int | bool | str


def field_kind(dtype: pa.DataType) -> FieldKind:
    """The line-protocol kind of an Arrow field type."""
    if pa.types.is_floating(dtype):
        return "float"
    if pa.types.is_unsigned_integer(dtype):
        return "unsigned"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "string"
    raise TypeError(f"unsupported field type {dtype}")


def is_tag(dtype: pa.DataType) -> bool:
    return pa.types.is_dictionary(dtype)


def tag_names(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if is_tag(f.type)]


def field_names(table: pa.Table) -> list[str]:
    return [
        f.name
        for f in table.schema
        if f.name not in RESERVED and not is_tag(f.type)
    ]


@dataclass(frozen=True, slots=True)
class Point:
    """One point. The per-record form, for docs and tests; the hot path uses batches."""

    measurement: str
    tags: Mapping[str, str]
    fields: Mapping[str, FieldValue]
    time: int | None = None  # UTC nanoseconds; None = server time


@dataclass(frozen=True, slots=True)
class Reject:
    """A rejected line or reading, with why. ``line`` is 1-based within its request or file."""

    line: int
    reason: str
    raw: str = ""
    measurement: str | None = None
    rule: str = "parse"

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "reason": self.reason, "raw": self.raw[:512]}


@dataclass(slots=True)
class ParseResult:
    """What a parser returns: valid batches by measurement, and rejects with reasons."""

    batches: dict[str, pa.Table] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)
    lines_total: int = 0
    raw_lines: Any = None  # pa.Array | Sequence[str] | None; raw_lines[i - 1] is line i

    def raw(self, line: int) -> str:
        if self.raw_lines is None or line < 1 or line > len(self.raw_lines):
            return ""
        v = self.raw_lines[line - 1]
        return v if isinstance(v, str) else (v.as_py() or "")

    @property
    def rows(self) -> int:
        return sum(t.num_rows for t in self.batches.values())

    @property
    def values(self) -> int:
        return sum(count_values(t) for t in self.batches.values())


def count_values(table: pa.Table) -> int:
    """Number of non-null field values in a batch."""
    return sum(len(table[c]) - table[c].null_count for c in field_names(table))


def points_to_batches(points: Iterable[Point], now_ns: int | None = None) -> dict[str, pa.Table]:
    """Build batches from points (slow, per-record: for tests, docs and small inputs)."""
    by_m: dict[str, list[Point]] = {}
    for p in points:
        by_m.setdefault(p.measurement, []).append(p)
    out: dict[str, pa.Table] = {}
    for m, pts in by_m.items():
        tags = sorted({k for p in pts for k in p.tags})
        fields = sorted({k for p in pts for k in p.fields})
        cols: dict[str, pa.Array] = {
            TIME: pa.array([p.time if p.time is not None else now_ns for p in pts], pa.int64()).cast(TIME_TYPE)
        }
        for t in tags:
            cols[t] = pa.array([p.tags.get(t) for p in pts], pa.string()).dictionary_encode()
        for f in fields:
            vals = [p.fields.get(f) for p in pts]
            sample = next(v for v in vals if v is not None)
            if isinstance(sample, bool):
                typ = pa.bool_()
            elif isinstance(sample, int):
                typ = pa.int64()
            elif isinstance(sample, float):
                typ = pa.float64()
            else:
                typ = pa.string()
            cols[f] = pa.array(vals, typ)
        out[m] = pa.table(cols)
    return out


def batch_to_points(measurement: str, table: pa.Table) -> list[Point]:
    """The inverse of :func:`points_to_batches` (for tests and docs)."""
    tags = tag_names(table)
    fields = field_names(table)
    times = table[TIME].cast(pa.int64()).to_pylist()
    tag_vals = {t: table[t].cast(pa.string()).to_pylist() for t in tags}
    field_vals = {f: table[f].to_pylist() for f in fields}
    out = []
    for i, ts in enumerate(times):
        out.append(
            Point(
                measurement,
                {t: v[i] for t, v in tag_vals.items() if v[i] is not None},
                {f: v[i] for f, v in field_vals.items() if v[i] is not None},
                ts,
            )
        )
    return out


def strip_internal(table: pa.Table) -> pa.Table:
    if LINE in table.column_names:
        return table.drop_columns([LINE])
    return table


def for_storage(table: pa.Table) -> pa.Table:
    """The lake's form: tags as plain strings, ``time`` as int64 UTC nanoseconds (Delta Lake's
    timestamp type holds only microseconds; line protocol needs nanoseconds)."""
    cols = []
    names = []
    for f in table.schema:
        col = table[f.name]
        if is_tag(f.type):
            col = col.cast(pa.string())
        elif f.name == TIME and pa.types.is_timestamp(f.type):
            col = col.cast(pa.int64())
        elif pa.types.is_uint64(f.type):  # no unsigned type in Delta; values > 2**63-1 are refused
            col = col.cast(pa.int64())
        cols.append(col)
        names.append(f.name)
    return pa.Table.from_arrays(cols, names=names)


def unify(tables: list[pa.Table]) -> pa.Table:
    """Concatenate batches of one measurement whose columns may differ (schema evolution)."""
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


class SchemaRegistry:
    """Known columns per (bucket, measurement): tag, or field with its kind. Persisted as JSON.

    A field whose type conflicts with the known type is rejected, as InfluxDB does.
    """

    def __init__(self, path: Path | None = None, *, persist: bool = True) -> None:
        self._path = path if persist else None
        self._lock = threading.Lock()
        self._known: dict[str, dict[str, str]] = {}
        if path is not None and path.exists():
            self._known = json.loads(path.read_text())

    @staticmethod
    def _key(bucket: str, measurement: str) -> str:
        return f"{bucket}\x1f{measurement}"

    def columns(self, bucket: str, measurement: str) -> dict[str, str]:
        """``{column: "tag" | field kind}`` for a table."""
        return dict(self._known.get(self._key(bucket, measurement), {}))

    def tables(self) -> list[tuple[str, str]]:
        return [tuple(k.split("\x1f", 1)) for k in self._known]  # type: ignore[misc]

    def check(
        self, bucket: str, measurement: str, table: pa.Table
    ) -> tuple[pa.Table, np.ndarray, list[tuple[str, str]]]:
        """Split off rows whose fields conflict with known types.

        Returns ``(kept_table, rejected_mask, conflicts)`` where ``conflicts`` lists
        ``(column, message)``; ``rejected_mask`` is a boolean array over the input rows.
        """
        known = self._known.get(self._key(bucket, measurement), {})
        bad = np.zeros(table.num_rows, dtype=bool)
        conflicts: list[tuple[str, str]] = []
        # SQL does not tell `T` from `t`: a new column may not differ from another only by case
        seen = {k.lower(): k for k in known}
        for f in table.schema:
            if f.name in RESERVED or f.name in known:
                continue
            other = seen.get(f.name.lower())
            if other is not None and other != f.name:
                conflicts.append(
                    (f.name, f"column '{f.name}' of measurement '{measurement}' differs from "
                     f"'{other}' only by case, which SQL cannot tell apart")
                )
                bad |= pc.is_valid(table[f.name]).to_numpy(zero_copy_only=False)
            else:
                seen[f.name.lower()] = f.name
        for f in table.schema:
            if f.name in RESERVED:
                continue
            role = "tag" if is_tag(f.type) else field_kind(f.type)
            have = known.get(f.name)
            if have is None or have == role:
                continue
            if role == "tag" or have == "tag":
                msg = (
                    f"column '{f.name}' of measurement '{measurement}' is a {have}, "
                    f"not a {'tag' if role == 'tag' else 'field'}"
                )
            else:
                msg = (
                    f"field type conflict: field '{f.name}' of measurement '{measurement}' is "
                    f"{role}, already stored as {have}"
                )
            conflicts.append((f.name, msg))
            bad |= pc.is_valid(table[f.name]).to_numpy(zero_copy_only=False)
        if bad.any():
            keep = table.filter(pa.array(~bad))
            drop = [c for c, _ in conflicts]
            keep = keep.drop_columns([c for c in drop if c in keep.column_names])
            return keep, bad, conflicts
        return table, bad, conflicts

    def register(self, bucket: str, measurement: str, table: pa.Table) -> None:
        """Record the columns of an accepted batch (call after :meth:`check`)."""
        key = self._key(bucket, measurement)
        new: dict[str, str] = {}
        known: dict[str, str] = self._known.get(key, {})
        for f in table.schema:
            if f.name in RESERVED:
                continue
            role = "tag" if is_tag(f.type) else field_kind(f.type)
            if f.name not in known:
                new[f.name] = role
            elif known[f.name] != role:
                raise TypeConflictError(
                    f"field type conflict: '{f.name}' is {role}, already stored as {known[f.name]}"
                )
        if not new and key in self._known:
            return
        with self._lock:
            merged: dict[str, str] = dict(self._known.get(key, {}))
            merged.update(new)
            self._known[key] = merged
            self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        tmp = self._path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._known, indent=1, sort_keys=True))
        os.replace(tmp, self._path)
