"""DuckDB over the hot buffer and the Delta tables, one view per measurement.

Each query gets its own in-memory DuckDB connection with external access disabled. For every
measurement the query names, a view unions the table's Delta snapshot and the hot buffer taken
*together* (see :meth:`HotBuffer.view`), so a row is never seen twice or missed while a flush
moves it from memory to the lake. ``time`` is exposed as ``TIMESTAMP_NS`` (UTC).

Helpers available in every query: DuckDB's ``time_bucket(INTERVAL '1 hour', time)`` and
``date_trunc('hour', time)``, plus ``date_bin(INTERVAL '5 minutes', time)`` (InfluxDB 3 / PostgreSQL
spelling) and ``bucket(time, '15 minutes')``.

With the PostgreSQL store (``store_backend = "postgres"``) a measurement's view is the table read
from PostgreSQL (:meth:`PostgresStore.read`, an Arrow table loaded into DuckDB; cached per store
version) UNION ALL BY NAME the hot buffer. Both are taken under the table's store lock, which the
flush holds from its COPY until the hot buffer lets the flushed chunks go: a flushed row is in
exactly one of the two.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import pyarrow as pa

from sensorium.errors import QueryError
from sensorium.query.sandbox import analyse
from sensorium.query.sql import ident as _q
from sensorium.store.hot import HotBuffer
from sensorium.store.lake import DAY, Lake

if TYPE_CHECKING:
    from sensorium.store.postgres import PostgresStore

MACROS = (
    "CREATE MACRO date_bin(stride, t) AS time_bucket(stride, t)",
    "CREATE MACRO bucket(t, width) AS time_bucket(CAST(width AS INTERVAL), t)",
)


#: The tag that names a point's device: a restricted query sees the rows whose value is in its
#: scope (:attr:`DeviceScope.devices`), and none of a table without the column.
DEVICE_COLUMN = "device_id"


class DeviceScope(Protocol):
    """What a restricted query may read (an :class:`~sensorium.registry.scope.AccessScope`)."""

    @property
    def devices(self) -> frozenset[str]: ...


class QueryEngine:
    def __init__(
        self,
        lake: Lake | PostgresStore,
        hot: HotBuffer,
        tables: Callable[[str], list[str]],
        *,
        timeout_s: float = 30.0,
        max_rows: int = 1_000_000,
        threads: int = 2,
        derived: Any = None,
        extra: Any = None,
    ) -> None:
        """``derived``: stream outputs (rollups, late data, rolling statistics) — an object with
        ``names(bucket)``, ``view(bucket, table) -> (memory rows, lake version)`` and ``lake``
        (see :class:`sensorium.stream.outputs.DerivedTables`). Raw measurements win a name clash.

        ``extra``: more tables in every query (the registry's ``devices``, ``rooms`` ...) — an
        object with ``names(bucket)`` and ``table(bucket, name) -> pa.Table`` (see
        :class:`sensorium.registry.sql.RegistryTables`); measurements and derived tables win."""
        self.lake = lake
        self.derived = derived
        self.extra = extra
        self.hot = hot
        self._tables = tables
        self.timeout_s = timeout_s
        self.max_rows = max_rows
        self.threads = threads
        self._ds_cache: dict[tuple[str, str, int, int], Any] = {}
        self._pg_cache: dict[tuple[str, str], tuple[int, pa.Table]] = {}
        self._cache_lock = threading.Lock()
        self._db: duckdb.DuckDBPyConnection | None = None

    def _store_view(self, bucket: str, measurement: str) -> tuple[pa.Table | None, pa.Table | None]:
        """PostgreSQL store: (hot snapshot, stored rows with ``time`` as int64 ns), consistent.

        The flush holds ``store.lock`` from its COPY until the hot buffer has released the chunks
        it stored, so taking the hot view and reading the table under that lock sees every row in
        exactly one of them. The read is cached per store version (bumped by every append and
        retention run), so repeated queries between flushes do not re-read the table."""
        store = self.lake
        with store.lock(bucket, measurement):
            hot, _ = self.hot.view((bucket, measurement))
            return hot, self._stored_rows(store, bucket, measurement, store.version(bucket, measurement))

    def _stored_rows(self, store: Any, bucket: str, name: str, version: int) -> pa.Table | None:
        """A non-lake store's rows of one table at ``version`` (``time`` as int64 ns), cached
        per version. None when the table does not exist."""
        if version < 0:
            return None
        key = (f"{id(store)}:{bucket}", name)
        with self._cache_lock:
            cached = self._pg_cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        table = store.read(bucket, name)
        i = table.schema.get_field_index("time")
        table = table.set_column(i, "time", table["time"].cast(pa.int64()))
        with self._cache_lock:
            self._pg_cache[key] = (version, table)
        return table

    def _dataset(self, bucket: str, measurement: str, version: int, lake: Lake | None = None) -> Any:
        lake = lake if lake is not None else self.lake if isinstance(self.lake, Lake) else None
        if version < 0 or lake is None:
            return None
        key = (bucket, measurement, version, id(lake))
        with self._cache_lock:
            ds = self._ds_cache.get(key)
        if ds is None:
            ds = lake.dataset(bucket, measurement, version)
            with self._cache_lock:
                # keep only the newest version per table
                for k in [k for k in self._ds_cache if k[:2] == key[:2] and k[3] == key[3]]:
                    del self._ds_cache[k]
                self._ds_cache[key] = ds
        return ds

    def _base(self) -> duckdb.DuckDBPyConnection:
        """One database for all queries: external access off, helpers defined, config locked.
        Each query runs on its own cursor (its own connection and temp catalog)."""
        with self._cache_lock:
            if self._db is None:
                db = duckdb.connect(
                    ":memory:", config={"enable_external_access": False, "threads": self.threads}
                )
                try:
                    db.execute("SET TimeZone = 'UTC'")
                except duckdb.Error:
                    pass  # ICU not present: timestamps are UTC anyway
                for m in MACROS:
                    db.execute(m)
                db.execute("SET lock_configuration = true")
                self._db = db
            return self._db

    def names(self, bucket: str) -> tuple[set[str], set[str]]:
        """(raw measurement names, derived table names) of a bucket."""
        raw = set(self._tables(bucket))
        derived = set(self.derived.names(bucket)) - raw if self.derived is not None else set()
        return raw, derived

    def extra_names(self, bucket: str, taken: set[str]) -> set[str]:
        """Names of the ``extra`` tables a query of ``bucket`` may use (not shadowed)."""
        return set(self.extra.names(bucket)) - taken if self.extra is not None else set()

    def connect(
        self, bucket: str, names: set[str], derived: set[str] | None = None,
        extra: set[str] | None = None, scope: DeviceScope | None = None,
    ) -> duckdb.DuckDBPyConnection:
        """A cursor where each of ``names`` is a view. With ``scope`` (a restricted user), every
        telemetry and derived view keeps only the rows whose ``device_id`` is in
        ``scope.devices`` — a semi-join against a registered Arrow table of those ids, no SQL
        built from them — a table without ``device_id`` is empty, and the registry tables are
        the scope's rows (``extra.table(..., scope)``). The unfiltered parts are registered under
        random names, so only the filtered views are reachable by name; joins, subqueries and
        CTEs can only ever read those views."""
        con = self._base().cursor()
        derived = derived or set()
        extra_names = extra or set()
        tag, allowed = "", ""
        if scope is not None:
            tag = secrets.token_hex(8)
            allowed = f"__allowed_{tag}"
            con.register(allowed, pa.table({DEVICE_COLUMN: pa.array(sorted(scope.devices), pa.string())}))
        for i, name in enumerate(sorted(names)):
            stored = None
            if name in extra_names:  # a plain Arrow table (no `time` to convert)
                table = (self.extra.table(bucket, name) if scope is None
                         else self.extra.table(bucket, name, scope))
                con.register(f"__extra{tag}_{i}", table)
                con.execute(f"CREATE TEMP VIEW {_q(name)} AS SELECT * FROM __extra{tag}_{i}")
                continue
            if name in derived:
                hot, version = self.derived.view(bucket, name)
                if isinstance(self.derived.lake, Lake):
                    ds = self._dataset(bucket, name, version, self.derived.lake)
                else:  # stream outputs in PostgreSQL (store_backend = "postgres")
                    ds = None
                    stored = self._stored_rows(self.derived.lake, bucket, name, version)
            elif not isinstance(self.lake, Lake):
                ds = None
                hot, stored = self._store_view(bucket, name)
            else:
                hot, version = self.hot.view((bucket, name))
                if version < 0:
                    version = self.lake.version(bucket, name)
                ds = self._dataset(bucket, name, version)
            parts = []
            columns: set[str] = set()
            if ds is not None:
                con.register(f"__lake{tag}_{i}", ds)
                parts.append(f"SELECT * EXCLUDE ({DAY}) FROM __lake{tag}_{i}")
                columns.update(ds.schema.names)
            if stored is not None and stored.num_rows:
                con.register(f"__store{tag}_{i}", stored)
                parts.append(f"SELECT * FROM __store{tag}_{i}")
                columns.update(stored.column_names)
            if hot is not None and hot.num_rows:
                con.register(f"__hot{tag}_{i}", hot)
                parts.append(f"SELECT * FROM __hot{tag}_{i}")
                columns.update(hot.column_names)
            if not parts:  # nothing stored yet: an empty table (with its columns when known)
                empty = (
                    hot if hot is not None
                    else stored if stored is not None
                    else pa.table({"time": pa.array([], pa.int64())})
                )
                con.register(f"__empty{tag}_{i}", empty)
                parts.append(f"SELECT * FROM __empty{tag}_{i}")
                columns.update(empty.column_names)
            body = " UNION ALL BY NAME ".join(parts)
            where = ""
            if scope is not None:
                where = (
                    f" WHERE {_q(DEVICE_COLUMN)} IN (SELECT {_q(DEVICE_COLUMN)} FROM {allowed})"
                    if DEVICE_COLUMN in columns else " WHERE false"
                )
            con.execute(
                f"CREATE TEMP VIEW {_q(name)} AS SELECT * REPLACE (make_timestamp_ns(time) AS time) "
                f"FROM ({body}){where}"
            )
        return con

    def execute(self, sql: str, bucket: str, scope: DeviceScope | None = None) -> pa.Table:
        """Run one sandboxed SELECT; raise :class:`QueryError`/``SandboxViolation`` on bad input.
        ``scope``: a restricted user's — every table reads only its devices' rows (see
        :meth:`connect`)."""
        raw, derived = self.names(bucket)
        extra = self.extra_names(bucket, raw | derived)
        analysis = analyse(sql, raw | derived | extra)
        con = self.connect(bucket, analysis.tables, derived, extra & analysis.tables, scope)
        timer = threading.Timer(self.timeout_s, con.interrupt)
        timer.start()
        t0 = time.perf_counter()
        try:
            reader = con.sql(sql).to_arrow_reader(65536)
            batches = []
            rows = 0
            for b in reader:
                rows += b.num_rows
                if rows > self.max_rows:
                    raise QueryError(
                        f"result has more than {self.max_rows} rows; add a LIMIT or aggregate"
                    )
                batches.append(b)
            return pa.Table.from_batches(batches, schema=reader.schema)
        except duckdb.InterruptException:
            raise QueryError(f"query interrupted after {self.timeout_s:g}s (query_timeout_s)") from None
        except duckdb.Error as exc:
            if time.perf_counter() - t0 >= self.timeout_s:
                raise QueryError(f"query interrupted after {self.timeout_s:g}s (query_timeout_s)") from None
            raise QueryError(str(exc).strip()) from None
        finally:
            timer.cancel()
            con.close()
