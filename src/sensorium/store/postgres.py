"""PostgreSQL store (``store_backend = "postgres"``): the store port on a PostgreSQL 13+ server.

Layout (see docs/postgres.md):

* one **schema per bucket** and one **table per measurement** in it, every name a quoted
  identifier (so ``"my bucket/1"."cpu load"`` works); names are validated (length, reserved);
* ``time`` is ``bigint`` **UTC nanoseconds** (``timestamptz`` holds only microseconds; line protocol
  needs nanoseconds, and the Delta lake stores the same int64), tags and string fields ``text``,
  floats ``double precision``, integers ``bigint``, booleans ``boolean``, ``quality`` ``real``;
* **native declarative partitioning** ``PARTITION BY RANGE (time)``, one partition per UTC day
  (``<measurement>_pYYYYMMDD``), created on demand for the days a batch touches;
* an index on ``(device_id, time)`` when the table has a ``device_id`` column, else on ``(time)``;
* **COPY** writes: a batch is sorted/de-duplicated like the lake's (:meth:`Lake.prepare`), rendered to
  CSV by Arrow's C++ writer (no per-value Python) and streamed with ``COPY ... FROM STDIN``;
* **exactly once**: ``sensorium.sensorium_offsets(bucket, measurement, app_id, "offset")`` is
  updated in the same transaction as the COPY; a batch whose offset is ``<=`` the recorded one is
  skipped. ``sensorium.sensorium_tables`` lists the tables and their version (one per append);
* **retention** (:meth:`PostgresStore.drop_before`) drops whole day partitions older than the cutoff
  and deletes the older rows of the boundary day.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

try:
    import psycopg
    from psycopg import sql
except ImportError as _exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the PostgreSQL store needs psycopg 3: pip install 'sensorium[postgres]'"
    ) from _exc

from sensorium.errors import BadRequest, StoreUnavailable, TypeConflictError
from sensorium.schema import TIME, TIME_TYPE
from sensorium.store.base import APP_ID
from sensorium.store.lake import DAY, NS_PER_DAY, Lake, TableStats

META = "sensorium"
STREAM_SUFFIX = "__stream"  # schema <bucket>__stream: the stream's outputs (rollups ...) of <bucket>
DEVICE = "device_id"
_MAX_IDENT = 63  # NAMEDATALEN - 1 bytes
_MAX_MEASUREMENT = 48  # leaves room for "_pYYYYMMDD" and index suffixes
_PART_SUFFIX = re.compile(r"_p\d{8}$")
_BOUNDS = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")
_COPY_CHUNK = 8 << 20

# Arrow type -> PostgreSQL type, and back (read form)
_TO_ARROW: dict[str, pa.DataType] = {
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "double precision": pa.float64(),
    "real": pa.float32(),
    "boolean": pa.bool_(),
    "text": pa.string(),
    "bytea": pa.binary(),
}
_INTEGERS = ("bigint", "integer")
_FLOATS = ("double precision", "real")


def pg_type(dtype: pa.DataType) -> str:
    """The column type for an Arrow (storage-form) type."""
    if pa.types.is_float32(dtype) or pa.types.is_float16(dtype):
        return "real"
    if pa.types.is_floating(dtype):
        return "double precision"
    if pa.types.is_int32(dtype) or pa.types.is_int16(dtype) or pa.types.is_int8(dtype):
        return "integer"
    if pa.types.is_integer(dtype):
        return "bigint"
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_dictionary(dtype):
        return "text"
    if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
        return "bytea"  # e.g. the percentile sketches of rollups
    raise BadRequest(f"the PostgreSQL store cannot hold a column of type {dtype}")


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_NIBBLE = np.zeros(256, np.uint8)
_NIBBLE[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_NIBBLE[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def _parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, Any]:
    """(int64 offsets from 0, value bytes, validity buffer) of a binary/string array with offset 0."""
    arr = pa.concat_arrays([arr])  # offset 0, one buffer set
    bufs = arr.buffers()
    width = np.int64 if pa.types.is_large_binary(arr.type) or pa.types.is_large_string(arr.type) else np.int32
    offs = np.frombuffer(bufs[1], width)[: len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.empty(0, np.uint8)
    return offs - offs[0], data[offs[0] : offs[-1]], bufs[0]


def bytea_text(arr: pa.Array) -> pa.Array:
    """Binary values as PostgreSQL's hex input form (``\\x0a1b…``), vectorised (COPY writes)."""
    offs, body, validity = _parts(arr)
    n = len(offs) - 1
    new = np.zeros(n + 1, np.int64)
    new[1:] = np.cumsum(2 * np.diff(offs) + 2)
    out = np.empty(int(new[-1]), np.uint8)
    keep = np.ones(len(out), bool)
    keep[new[:-1]] = keep[new[:-1] + 1] = False
    out[new[:-1]], out[new[:-1] + 1] = ord("\\"), ord("x")
    hexed = np.empty(2 * len(body), np.uint8)
    hexed[0::2], hexed[1::2] = _HEX_DIGITS[body >> 4], _HEX_DIGITS[body & 15]
    out[keep] = hexed
    return pa.Array.from_buffers(
        pa.large_string(), n, [validity, pa.py_buffer(new), pa.py_buffer(out.tobytes())]
    )


def bytea_from_hex(arr: pa.Array) -> pa.Array:
    """``encode(col, 'hex')`` text back to binary values, vectorised (reads)."""
    offs, body, validity = _parts(arr.cast(pa.large_string()))
    n = len(offs) - 1
    nib = _NIBBLE[body]
    raw = (nib[0::2] << 4) | nib[1::2]
    return pa.Array.from_buffers(
        pa.large_binary(), n, [validity, pa.py_buffer(offs // 2), pa.py_buffer(raw.tobytes())]
    ).cast(pa.binary())


def _compatible(stored: str, new: str) -> bool:
    """May values of ``new`` go into a column of ``stored``? (Integers widen into floats, as the
    lake casts them.)"""
    if stored == new:
        return True
    if new in _INTEGERS and (stored in _FLOATS or stored == "bigint"):
        return True
    return new == "real" and stored == "double precision"


def _ident_ok(name: str, limit: int) -> bool:
    return bool(name) and "\x00" not in name and len(name.encode()) <= limit


def check_names(bucket: str, measurement: str) -> None:
    """Raise :class:`BadRequest` for a name PostgreSQL cannot hold as we lay tables out."""
    if not _ident_ok(bucket, _MAX_IDENT):
        raise BadRequest(f"bucket name {bucket!r}: 1-{_MAX_IDENT} bytes, no NUL (PostgreSQL store)")
    if bucket in (META, "information_schema", "public") or bucket.startswith("pg_"):
        raise BadRequest(f"bucket name {bucket!r} is reserved in the PostgreSQL store")
    if not _ident_ok(measurement, _MAX_MEASUREMENT):
        raise BadRequest(
            f"measurement name {measurement!r}: 1-{_MAX_MEASUREMENT} bytes, no NUL (PostgreSQL store)"
        )
    if _PART_SUFFIX.search(measurement):
        raise BadRequest(f"measurement name {measurement!r} looks like a day partition (_pYYYYMMDD)")


def _day_label(day: int) -> str:
    return str(np.datetime64(int(day), "D")).replace("-", "")


class PostgresStore:
    """The store port (:class:`sensorium.store.base.Store`) on PostgreSQL, via psycopg 3.

    One connection, used under a lock (each call is one transaction)."""

    def __init__(self, dsn: str, *, connect_timeout_s: float = 5.0) -> None:
        self.dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        self._conn: Any = None
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._meta_ready = False

    # -- connection ----------------------------------------------------------------------------
    def _where(self) -> str:
        """The DSN without a password, for messages."""
        return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", re.sub(r"password=\S+", "password=***", self.dsn))

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A cursor in a transaction (committed on success, rolled back on error)."""
        with self._guard:
            try:
                if self._conn is None or self._conn.closed or self._conn.broken:
                    self._conn = psycopg.connect(
                        self.dsn, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s))
                    )
                if not self._meta_ready:
                    self._ensure_meta(self._conn)
                with self._conn.transaction(), self._conn.cursor() as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                if self._conn is not None and (self._conn.closed or self._conn.broken):
                    self._conn = None
                raise StoreUnavailable(
                    f"PostgreSQL store at {self._where()} is unavailable: {str(exc).strip()}",
                    dsn=self._where(),
                ) from exc
            except psycopg.DataError as exc:
                raise BadRequest(f"PostgreSQL refused the data: {str(exc).strip()}") from exc

    def _ensure_meta(self, conn: Any) -> None:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('sensorium-meta'))")
            cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(META)))
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (bucket text NOT NULL, measurement text NOT NULL, "
                    "version bigint NOT NULL DEFAULT -1, PRIMARY KEY (bucket, measurement))"
                ).format(sql.Identifier(META, "sensorium_tables"))
            )
            cur.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (bucket text NOT NULL, measurement text NOT NULL, "
                    'app_id text NOT NULL, "offset" bigint NOT NULL, '
                    "PRIMARY KEY (bucket, measurement, app_id))"
                ).format(sql.Identifier(META, "sensorium_offsets"))
            )
        self._meta_ready = True

    def close(self) -> None:
        with self._guard:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def lock(self, bucket: str, measurement: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault((bucket, measurement), threading.RLock())

    # -- catalog -------------------------------------------------------------------------------
    @staticmethod
    def _columns(cur: Any, bucket: str, measurement: str) -> dict[str, str] | None:
        """Column name -> type of the table, in column order (None: no table)."""
        cur.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped "
            "ORDER BY a.attnum",
            (bucket, measurement),
        )
        rows = cur.fetchall()
        return {r[0]: r[1] for r in rows} if rows else None

    @staticmethod
    def _partitions(cur: Any, bucket: str, measurement: str) -> list[tuple[str, int, int]]:
        """(name, lower ns, upper ns) of the table's partitions, oldest first."""
        cur.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "JOIN pg_namespace n ON n.oid = p.relnamespace WHERE n.nspname = %s AND p.relname = %s",
            (bucket, measurement),
        )
        out = []
        for name, bound in cur.fetchall():
            m = _BOUNDS.search(bound or "")
            if m:
                out.append((name, int(m.group(1)), int(m.group(2))))
        return sorted(out, key=lambda p: p[1])

    def tables(self, *, stream_outputs: bool = False) -> list[tuple[str, str]]:
        """The raw-data tables (``stream_outputs``: only the stream's, in ``<bucket>__stream``)."""
        with self._tx() as cur:
            cur.execute(
                sql.SQL("SELECT bucket, measurement FROM {} ORDER BY 1, 2").format(
                    sql.Identifier(META, "sensorium_tables")
                )
            )
            return [(b, m) for b, m in cur.fetchall() if b.endswith(STREAM_SUFFIX) == stream_outputs]

    def version(self, bucket: str, measurement: str) -> int:
        with self._tx() as cur:
            return self._version(cur, bucket, measurement)

    @staticmethod
    def _version(cur: Any, bucket: str, measurement: str) -> int:
        cur.execute(
            sql.SQL("SELECT version FROM {} WHERE bucket = %s AND measurement = %s").format(
                sql.Identifier(META, "sensorium_tables")
            ),
            (bucket, measurement),
        )
        row = cur.fetchone()
        return -1 if row is None else int(row[0])

    def applied_offset(self, bucket: str, measurement: str, app_id: str = APP_ID) -> int:
        with self._tx() as cur:
            return self._offset(cur, bucket, measurement, app_id)

    @staticmethod
    def _offset(cur: Any, bucket: str, measurement: str, app_id: str) -> int:
        cur.execute(
            sql.SQL(
                'SELECT "offset" FROM {} WHERE bucket = %s AND measurement = %s AND app_id = %s'
            ).format(sql.Identifier(META, "sensorium_offsets")),
            (bucket, measurement, app_id),
        )
        row = cur.fetchone()
        return -1 if row is None else int(row[0])

    def schema(self, bucket: str, measurement: str) -> pa.Schema | None:
        with self._tx() as cur:
            cols = self._columns(cur, bucket, measurement)
        if cols is None:
            return None
        return pa.schema([(n, _TO_ARROW.get(t, pa.string())) for n, t in cols.items()])

    # -- writing -------------------------------------------------------------------------------
    def append(
        self, bucket: str, measurement: str, table: pa.Table, offset: int | None, app_id: str = APP_ID
    ) -> int:
        """COPY ``table`` (batch form) into the day partitions it touches and record ``offset`` of
        ``app_id`` in the same transaction; a batch at or below the recorded offset is skipped.
        Returns the table's version (one more per stored batch)."""
        check_names(bucket, measurement)
        data = Lake.prepare(table) if table.num_rows else table
        if DAY in data.column_names:
            data = data.drop_columns([DAY])
        if TIME in data.column_names and not pa.types.is_integer(data.schema.field(TIME).type):
            data = data.set_column(data.schema.get_field_index(TIME), TIME, data[TIME].cast(pa.int64()))
        types = {f.name: pg_type(f.type) for f in data.schema}
        for name in types:
            if not _ident_ok(name, _MAX_IDENT):
                raise BadRequest(f"column name {name!r}: 1-{_MAX_IDENT} bytes, no NUL (PostgreSQL store)")
        types[TIME] = "bigint"
        for name, typ in types.items():
            if typ == "bytea":
                i = data.schema.get_field_index(name)
                data = data.set_column(i, name, bytea_text(data[name].combine_chunks()))
        ns = data[TIME].to_numpy() if data.num_rows else np.empty(0, np.int64)
        days = np.unique(ns // NS_PER_DAY)
        payload = self._csv(data) if data.num_rows else None
        ident = sql.Identifier(bucket, measurement)
        with self.lock(bucket, measurement), self._tx() as cur:
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"{len(bucket)}:{bucket}/{measurement}",),
            )
            if offset is not None and offset <= self._offset(cur, bucket, measurement, app_id):
                return self._version(cur, bucket, measurement)
            stored = self._columns(cur, bucket, measurement)
            if stored is None:
                stored = self._create(cur, bucket, measurement, types)
            else:
                self._evolve(cur, bucket, measurement, stored, types)
            have = {p[1] for p in self._partitions(cur, bucket, measurement)}
            for d in days.tolist():
                lo = int(d) * NS_PER_DAY
                if lo in have:
                    continue
                cur.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(bucket, f"{measurement}_p{_day_label(d)}"),
                        ident,
                        sql.Literal(lo),
                        sql.Literal(lo + NS_PER_DAY),
                    )
                )
            if payload is not None:
                stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                    ident, sql.SQL(", ").join(sql.Identifier(c) for c in data.column_names)
                )
                view = memoryview(payload)
                with cur.copy(stmt) as cp:
                    for i in range(0, len(view), _COPY_CHUNK):
                        cp.write(view[i : i + _COPY_CHUNK])
            if offset is not None:
                cur.execute(
                    sql.SQL(
                        'INSERT INTO {} (bucket, measurement, app_id, "offset") VALUES (%s, %s, %s, %s) '
                        'ON CONFLICT (bucket, measurement, app_id) DO UPDATE SET "offset" = '
                        'GREATEST({}."offset", EXCLUDED."offset")'
                    ).format(sql.Identifier(META, "sensorium_offsets"), sql.Identifier("sensorium_offsets")),
                    (bucket, measurement, app_id, offset),
                )
            return self._bump(cur, bucket, measurement)

    @staticmethod
    def _bump(cur: Any, bucket: str, measurement: str) -> int:
        cur.execute(
            sql.SQL(
                "UPDATE {} SET version = version + 1 WHERE bucket = %s AND measurement = %s RETURNING version"
            ).format(sql.Identifier(META, "sensorium_tables")),
            (bucket, measurement),
        )
        row = cur.fetchone()
        return -1 if row is None else int(row[0])

    @staticmethod
    def _csv(data: pa.Table) -> pa.Buffer:
        """The batch as CSV, written by Arrow (C++): strings always quoted, nulls as an unquoted
        empty value -- exactly what ``COPY ... (FORMAT csv)`` reads as NULL vs ''."""
        sink = pa.BufferOutputStream()
        pacsv.write_csv(
            data, sink, pacsv.WriteOptions(include_header=False, batch_size=65_536, quoting_style="needed")
        )
        return sink.getvalue()

    def _create(self, cur: Any, bucket: str, measurement: str, types: dict[str, str]) -> dict[str, str]:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(bucket)))
        cols = [sql.SQL("{} bigint NOT NULL").format(sql.Identifier(TIME))]
        cols += [
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in types.items() if n != TIME
        ]
        cur.execute(
            sql.SQL("CREATE TABLE {} ({}) PARTITION BY RANGE ({})").format(
                sql.Identifier(bucket, measurement), sql.SQL(", ").join(cols), sql.Identifier(TIME)
            )
        )
        cur.execute(
            sql.SQL("INSERT INTO {} (bucket, measurement, version) VALUES (%s, %s, -1) ON CONFLICT DO NOTHING").format(
                sql.Identifier(META, "sensorium_tables")
            ),
            (bucket, measurement),
        )
        self._index(cur, bucket, measurement, DEVICE in types)
        return {TIME: "bigint", **{n: t for n, t in types.items() if n != TIME}}

    def _evolve(
        self, cur: Any, bucket: str, measurement: str, stored: dict[str, str], types: dict[str, str]
    ) -> None:
        """Schema evolution: add the batch's new columns; refuse a column whose type conflicts."""
        for n, t in types.items():
            if n in stored and not _compatible(stored[n], t):
                raise TypeConflictError(
                    f"{bucket}/{measurement}: column {n!r} is {stored[n]} in PostgreSQL, the batch has {t}",
                    bucket=bucket,
                    measurement=measurement,
                    column=n,
                )
        for n, t in types.items():
            if n not in stored:
                cur.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                        sql.Identifier(bucket, measurement), sql.Identifier(n), sql.SQL(t)
                    )
                )
                if n == DEVICE:
                    self._index(cur, bucket, measurement, True)

    @staticmethod
    def _index(cur: Any, bucket: str, measurement: str, device: bool) -> None:
        cols = [DEVICE, TIME] if device else [TIME]
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(f"{measurement}_{'device_time' if device else 'time'}"),
                sql.Identifier(bucket, measurement),
                sql.SQL(", ").join(sql.Identifier(c) for c in cols),
            )
        )

    # -- reading -------------------------------------------------------------------------------
    def read(
        self,
        bucket: str,
        measurement: str,
        start_ns: int | None = None,
        end_ns: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows with ``start_ns <= time < end_ns`` in read form (partitions outside the range are
        pruned by the planner). Streamed with ``COPY (SELECT ...) TO STDOUT`` and parsed by Arrow."""
        with self._tx() as cur:
            stored = self._columns(cur, bucket, measurement)
            if stored is None:
                return pa.table({TIME: pa.array([], TIME_TYPE)})
            names = [n for n in stored if columns is None or n == TIME or n in set(columns)]
            where: list[sql.Composable] = []
            if start_ns is not None:
                where.append(sql.SQL("{} >= {}").format(sql.Identifier(TIME), sql.Literal(int(start_ns))))
            if end_ns is not None:
                where.append(sql.SQL("{} < {}").format(sql.Identifier(TIME), sql.Literal(int(end_ns))))
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(
                    sql.SQL("encode({}, 'hex')").format(sql.Identifier(n)) if stored[n] == "bytea"
                    else sql.Identifier(n)
                    for n in names
                ),
                sql.Identifier(bucket, measurement),
            )
            if where:
                query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(where))
            buf = bytearray()
            with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(query)) as cp:
                for chunk in cp:
                    buf += chunk
        schema = pa.schema(
            [(n, pa.string() if stored[n] == "bytea" else _TO_ARROW.get(stored[n], pa.string())) for n in names]
        )
        if not buf:
            t = schema.empty_table()
        else:
            t = pacsv.read_csv(
                pa.py_buffer(bytes(buf)),
                read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types=schema,
                    null_values=[""],
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                    true_values=["t"],
                    false_values=["f"],
                ),
            )
        for n in names:
            if stored[n] == "bytea":
                i = t.schema.get_field_index(n)
                t = t.set_column(i, n, bytea_from_hex(t[n].combine_chunks()))
        return t.set_column(t.schema.get_field_index(TIME), TIME, t[TIME].cast(TIME_TYPE))

    # -- maintenance ---------------------------------------------------------------------------
    def drop_before(self, bucket: str, measurement: str, cutoff_ns: int) -> int:
        """Retention: DROP the day partitions wholly older than ``cutoff_ns`` and DELETE the older
        rows of the boundary day. Returns rows removed."""
        removed = 0
        with self.lock(bucket, measurement), self._tx() as cur:
            if self._columns(cur, bucket, measurement) is None:
                return 0
            cur.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"{len(bucket)}:{bucket}/{measurement}",),
            )
            for name, _lo, hi in self._partitions(cur, bucket, measurement):
                if hi <= cutoff_ns:
                    part = sql.Identifier(bucket, name)
                    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(part))
                    removed += int(cur.fetchone()[0])
                    cur.execute(sql.SQL("DROP TABLE {}").format(part))
            cur.execute(
                sql.SQL("DELETE FROM {} WHERE {} < %s").format(
                    sql.Identifier(bucket, measurement), sql.Identifier(TIME)
                ),
                (int(cutoff_ns),),
            )
            removed += max(cur.rowcount, 0)
            self._bump(cur, bucket, measurement)
        return removed

    def stats(self, bucket: str, measurement: str) -> TableStats:
        """files: day partitions; bytes: their total relation size (heap, indexes, TOAST)."""
        with self._tx() as cur:
            if self._columns(cur, bucket, measurement) is None:
                return TableStats(bucket, measurement, 0, 0, 0, -1)
            parts = self._partitions(cur, bucket, measurement)
            size = 0
            for name, _lo, _hi in parts:
                cur.execute("SELECT pg_total_relation_size(%s::regclass)", (
                    sql.Identifier(bucket, name).as_string(cur),
                ))
                size += int(cur.fetchone()[0])
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(bucket, measurement)))
            rows = int(cur.fetchone()[0])
            version = self._version(cur, bucket, measurement)
        return TableStats(bucket, measurement, len(parts), size, rows, version)

    def count_values(self, bucket: str, measurement: str, columns: Sequence[str]) -> int:
        """The non-NULL values of ``columns`` (those the table has), counted by PostgreSQL."""
        with self._tx() as cur:
            stored = self._columns(cur, bucket, measurement)
            names = [c for c in columns if stored is not None and c in stored]
            if not names:
                return 0
            cur.execute(
                sql.SQL("SELECT {} FROM {}").format(
                    sql.SQL(", ").join(sql.SQL("count({})").format(sql.Identifier(c)) for c in names),
                    sql.Identifier(bucket, measurement),
                )
            )
            row = cur.fetchone()
        return int(sum(row or ()))

    def compact(self, bucket: str, measurement: str, tags: list[str], **_: Any) -> int:
        """Nothing to compact: PostgreSQL's autovacuum maintains the heap. Returns 0."""
        return 0

    def vacuum(self, bucket: str, measurement: str, retention_hours: float = 1.0) -> int:
        """Left to autovacuum. Returns 0."""
        return 0

    def drop_table(self, bucket: str, measurement: str) -> None:
        """Remove a table, its partitions and its offsets (tests, tools)."""
        with self.lock(bucket, measurement), self._tx() as cur:
            cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(bucket, measurement)))
            for t in ("sensorium_tables", "sensorium_offsets"):
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE bucket = %s AND measurement = %s").format(
                        sql.Identifier(META, t)
                    ),
                    (bucket, measurement),
                )

    def drop_bucket(self, bucket: str) -> None:
        """Remove a bucket's schema and everything in it (tests, tools)."""
        with self._tx() as cur:
            cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(bucket)))
            for t in ("sensorium_tables", "sensorium_offsets"):
                cur.execute(
                    sql.SQL("DELETE FROM {} WHERE bucket = %s").format(sql.Identifier(META, t)), (bucket,)
                )
