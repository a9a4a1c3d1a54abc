"""The store contract (``sensorium.store.base.Store``), run against every adapter: the Delta lake
(in ``tmp_path``) and PostgreSQL on 127.0.0.1:5432 (``SENSORIUM_TEST_POSTGRES_DSN``; skipped when it
is not running -- failing under ``CI=true``, where it must run). Each PostgreSQL test writes to its
own bucket (schema), dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from sensorium.errors import TypeConflictError
from sensorium.schema import TAG_TYPE, TIME_TYPE
from sensorium.store.base import Store
from sensorium.store.lake import Lake
from tests.conftest import service_missing

PG_DSN = os.environ.get("SENSORIUM_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
DAY = 86_400_000_000_000
M = "climate"


def require_postgres() -> Any:
    """A PostgresStore on the test server; skips without one -- but fails under CI."""
    try:
        from sensorium.store.postgres import PostgresStore
    except ImportError as exc:  # pragma: no cover
        reason = f"psycopg is not installed ({exc}): pip install 'sensorium[postgres]'"
    else:
        from sensorium.errors import StoreUnavailable

        store = PostgresStore(PG_DSN, connect_timeout_s=2)
        try:
            store.tables()
            return store
        except StoreUnavailable as exc:
            store.close()
            reason = f"PostgreSQL not reachable at {PG_DSN}: {exc}"
    service_missing(reason)


@pytest.fixture(params=["delta", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """(store, bucket): a fresh bucket on each adapter."""
    bucket = f"t_{uuid.uuid4().hex[:12]}"
    if request.param == "delta":
        yield Lake(tmp_path / "lake"), bucket
        return
    pg = require_postgres()
    try:
        yield pg, bucket
    finally:
        pg.drop_bucket(bucket)
        pg.close()


def batch(rows: list[dict[str, Any]], tags: tuple[str, ...] = ("device_id", "room")) -> pa.Table:
    names: list[str] = []
    for r in rows:
        names += [n for n in r if n not in names]
    cols = {}
    for n in names:
        vals = [r.get(n) for r in rows]
        if n == "time":
            cols[n] = pa.array(vals, pa.int64()).cast(TIME_TYPE)
        elif n in tags:
            cols[n] = pa.array(vals, pa.string()).dictionary_encode().cast(TAG_TYPE)
        else:
            cols[n] = pa.array(vals)
    return pa.table(cols)


def rows_of(t: pa.Table) -> list[dict[str, Any]]:
    """Rows sorted by time and device (stores do not promise an order), time as ns ints."""
    t = t.set_column(t.schema.get_field_index("time"), "time", t["time"].cast(pa.int64()))
    return sorted(t.to_pylist(), key=lambda r: (r["time"], r.get("device_id") or ""))


ROWS = [
    {"time": T0 + 1, "device_id": "a", "room": "kitchen", "temperature": 21.5, "count": 3,
     "ok": True, "note": "x"},
    {"time": T0 + 2, "device_id": "b", "room": None, "temperature": None, "count": -7,
     "ok": False, "note": ""},
    {"time": T0 + 999_999_999, "device_id": "a", "room": "hall", "temperature": 0.1 + 0.2,
     "count": None, "ok": None, "note": 'quote " comma , newline \n done'},
]


def test_is_a_store(store: tuple[Any, str]) -> None:
    s, _ = store
    assert isinstance(s, Store)


def test_append_then_read_back_equal(store: tuple[Any, str]) -> None:
    s, b = store
    assert s.tables() == [] or (b, M) not in s.tables()
    assert s.version(b, M) == -1
    v = s.append(b, M, batch(ROWS), offset=None)
    assert v == 0
    t = s.read(b, M)
    assert t.schema.field("time").type == TIME_TYPE  # exact nanoseconds, UTC
    types = {f.name: f.type for f in t.schema}
    assert types["device_id"] == pa.string() and types["room"] == pa.string()
    assert types["temperature"] == pa.float64() and types["count"] == pa.int64()
    assert types["ok"] == pa.bool_() and types["note"] == pa.string()
    assert rows_of(t) == rows_of(batch(ROWS))
    # a column subset always carries time
    sub = s.read(b, M, columns=["temperature"])
    assert sorted(sub.column_names) == ["temperature", "time"]
    sch = s.schema(b, M)
    assert sch is not None and sch.field("time").type == pa.int64()
    assert s.schema(b, "nope") is None
    assert s.read(b, "nope").num_rows == 0


def test_time_range_reads(store: tuple[Any, str]) -> None:
    s, b = store
    rows = [{"time": T0 + i * DAY // 4, "device_id": "a", "v": float(i)} for i in range(12)]
    s.append(b, M, batch(rows), offset=None)
    got = rows_of(s.read(b, M, start_ns=T0 + DAY // 4, end_ns=T0 + DAY))
    assert [r["v"] for r in got] == [1.0, 2.0, 3.0]  # start inclusive, end exclusive
    assert len(s.read(b, M, start_ns=T0 + 2 * DAY)) == 4
    assert len(s.read(b, M, end_ns=T0 + 1)) == 1


def test_schema_evolution_adds_a_field(store: tuple[Any, str]) -> None:
    s, b = store
    s.append(b, M, batch([{"time": T0, "device_id": "a", "t": 1.0}]), offset=None)
    s.append(b, M, batch([{"time": T0 + 5, "device_id": "a", "t": 2.0, "h": 40.0}]), offset=None)
    got = rows_of(s.read(b, M))
    assert got == [
        {"time": T0, "device_id": "a", "t": 1.0, "h": None},
        {"time": T0 + 5, "device_id": "a", "t": 2.0, "h": 40.0},
    ]
    sch = s.schema(b, M)
    assert sch is not None and "h" in sch.names


def test_type_conflict_is_a_clear_error(store: tuple[Any, str]) -> None:
    s, b = store
    s.append(b, M, batch([{"time": T0, "device_id": "a", "t": 1.0}]), offset=None)
    with pytest.raises(TypeConflictError):
        s.append(b, M, batch([{"time": T0 + 1, "device_id": "a", "t": "warm"}]), offset=None)
    assert len(s.read(b, M)) == 1  # nothing of the refused batch stored


def test_idempotent_append_by_offset(store: tuple[Any, str]) -> None:
    s, b = store
    assert s.applied_offset(b, M) == -1
    data = batch(ROWS)
    v1 = s.append(b, M, data, offset=10)
    assert s.applied_offset(b, M) == 10
    v2 = s.append(b, M, data, offset=10)  # replayed: stored once
    assert v2 == v1
    s.append(b, M, data, offset=7)  # older: skipped too
    assert len(s.read(b, M)) == 3
    assert s.applied_offset(b, M) == 10
    s.append(b, M, batch([{"time": T0 + 50, "device_id": "c", "temperature": 1.0}]), offset=11)
    assert s.applied_offset(b, M) == 11 and len(s.read(b, M)) == 4
    s.append(b, M, batch([{"time": T0 + 60, "device_id": "c", "temperature": 2.0}]), offset=None)
    assert s.applied_offset(b, M) == 11  # a bulk load keeps the offset
    assert s.applied_offset(b, M, app_id="other") == -1
    s.append(b, M, batch([{"time": T0 + 70, "device_id": "c", "temperature": 3.0}]), offset=3, app_id="other")
    assert s.applied_offset(b, M, app_id="other") == 3 and s.applied_offset(b, M) == 11


def test_retention_drop_before(store: tuple[Any, str]) -> None:
    s, b = store
    rows = [{"time": T0 + d * DAY + h * 3_600_000_000_000, "device_id": "a", "v": float(d * 10 + h)}
            for d in range(4) for h in (0, 12)]
    s.append(b, M, batch(rows), offset=None)
    removed = s.drop_before(b, M, T0 + 2 * DAY + 6 * 3_600_000_000_000)  # mid day 3
    assert removed == 5
    got = rows_of(s.read(b, M))
    assert [r["v"] for r in got] == [32.0, 30.0, 42.0]
    assert s.drop_before(b, "nope", T0) == 0


def test_several_days_make_several_partitions(store: tuple[Any, str]) -> None:
    s, b = store
    rows = [{"time": T0 + d * DAY + 1, "device_id": "a", "v": 1.0} for d in range(3)]
    s.append(b, M, batch(rows), offset=None)
    if isinstance(s, Lake):
        parts = sorted(p.name for p in s.path(b, M).iterdir() if p.name.startswith("day="))
        assert parts == ["day=2026-01-01", "day=2026-01-02", "day=2026-01-03"]
    else:
        with s._tx() as cur:
            cur.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace "
                "WHERE n.nspname = %s AND p.relname = %s AND c.relkind = 'r' ORDER BY 1",
                (b, M),
            )
            assert [r[0] for r in cur.fetchall()] == [
                "climate_p20260101", "climate_p20260102", "climate_p20260103"
            ]
            cur.execute(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s", (b, M)
            )
            assert any("(device_id, \"time\")" in r[0] or "(device_id, time)" in r[0] for r in cur.fetchall())
        assert s.stats(b, M).files == 3
    st = s.stats(b, M)
    assert st.rows == 3 and st.version == 0


def test_tables_listing(store: tuple[Any, str]) -> None:
    s, b = store
    s.append(b, "cpu load,%", batch([{"time": T0, "device_id": "a", "v": 1.0}]), offset=None)
    s.append(b, M, batch([{"time": T0, "device_id": "a", "v": 1.0}]), offset=None)
    mine = [t for t in s.tables() if t[0] == b]
    assert mine == [(b, "climate"), (b, "cpu load,%")]


def test_100k_row_batch_round_trip(store: tuple[Any, str]) -> None:
    s, b = store
    n = 100_000
    rng = np.random.default_rng(5)
    times = T0 + np.arange(n, dtype=np.int64) * 1_000_000_007  # ~1 s apart, ns digits, 2 days
    devs = np.array([f"dev-{i:03d}" for i in range(100)])[np.arange(n) % 100]
    vals = rng.normal(20, 5, n)
    vals[::97] = np.nan
    t = pa.table({
        "time": pa.array(times).cast(TIME_TYPE),
        "device_id": pa.array(devs).dictionary_encode().cast(TAG_TYPE),
        "temperature": pa.array(vals, mask=np.arange(n) % 101 == 0),
        "count": pa.array(np.arange(n, dtype=np.int64)),
    })
    s.append(b, M, t, offset=1)
    got = s.read(b, M)
    assert got.num_rows == n
    got = got.sort_by("time")
    assert got["time"].cast(pa.int64()).to_numpy().tolist() == times.tolist()
    assert got["device_id"].to_pylist() == devs.tolist()
    exp = t["temperature"].combine_chunks()
    act = got["temperature"].combine_chunks()
    assert act.null_count == exp.null_count
    assert pc.all(pc.or_kleene(pc.equal(act, exp), pc.is_nan(exp))).as_py() in (True, None)
    assert np.array_equal(np.asarray(act.fill_null(0.0)), np.asarray(exp.fill_null(0.0)), equal_nan=True)
    assert got["count"].to_pylist() == list(range(n))


def test_postgres_down_is_a_clear_503() -> None:
    pytest.importorskip("psycopg")
    from sensorium.errors import StoreUnavailable
    from sensorium.store.postgres import PostgresStore

    s = PostgresStore("postgresql://postgres:secret@127.0.0.1:1/test", connect_timeout_s=1)
    with pytest.raises(StoreUnavailable) as info:
        s.tables()
    assert info.value.status == 503 and "secret" not in info.value.message


def test_postgres_refuses_unusable_names() -> None:
    pytest.importorskip("psycopg")
    from sensorium.errors import BadRequest
    from sensorium.store.postgres import check_names

    check_names("my bucket/1", "cpu load,%")
    for b, m in (("pg_x", "m"), ("sensorium", "m"), ("b", "x" * 49), ("b", "m_p20260101"), ("", "m")):
        with pytest.raises(BadRequest):
            check_names(b, m)


def test_the_platform_stores_in_postgres_end_to_end(tmp_path: Path) -> None:
    """store_backend = "postgres": write, flush, query hot + stored rows together, crash (one batch
    committed to PostgreSQL but not released from memory, one only in the WAL), restart: every point
    once, with the values and tags written."""
    import os as _os

    from sensorium.platform import Sensorium
    from tests.conftest import FakeClock, make_settings

    pg = require_postgres()
    bucket = f"t_{uuid.uuid4().hex[:12]}"
    clock = FakeClock(T0 + 3_600_000_000_000)
    settings = make_settings(tmp_path / "data", store_backend="postgres", postgres_dsn=PG_DSN)

    def lines(lo: int, hi: int) -> str:
        return "\n".join(
            f"climate,device_id=d{i % 3},room=r\\ {i % 2} temperature={i * 0.5},n={i}i,status=\"s{i}\" "
            f"{T0 + i * 1_000_000_001}"
            for i in range(lo, hi)
        )

    def expected(n: int) -> list[dict[str, Any]]:
        return [
            {"device_id": f"d{i % 3}", "room": f"r {i % 2}", "temperature": i * 0.5, "n": i,
             "status": f"s{i}", "ns": T0 + i * 1_000_000_001}
            for i in range(n)
        ]

    def rows(p: Sensorium) -> list[dict[str, Any]]:
        return p.query(
            "SELECT device_id, room, temperature, n, status, epoch_ns(time) AS ns FROM climate ORDER BY ns",
            bucket=bucket,
        ).to_pylist()

    try:
        p = Sensorium(settings, clock=clock, background=False)
        assert p.write(lines(0, 10), bucket=bucket).accepted_rows == 10
        assert p.flush(force=True) == 10
        assert pg.stats(bucket, "climate").rows == 10 and pg.applied_offset(bucket, "climate") >= 0
        assert p.write(lines(10, 15), bucket=bucket).accepted_rows == 5  # hot only
        assert p.hot.rows((bucket, "climate")) == 5
        assert rows(p) == expected(15)  # stored + hot, none twice
        # crash 1: the hot rows are committed to PostgreSQL with their offset, but the process dies
        # before the hot buffer (and the WAL) let them go
        key = (bucket, "climate")
        tables, max_off, _ = p.hot.take(key)
        p.lake.append(bucket, "climate", pa.concat_tables(tables), offset=max_off)
        # crash 2: a write acknowledged (in the WAL) and never flushed
        assert p.write(lines(15, 20), bucket=bucket).accepted_rows == 5
        _os.close(p._lock_fd)  # type: ignore[arg-type]
        p.wal.close()
        p.lake.close()  # type: ignore[union-attr]
        p.stream.derived.lake.close()  # type: ignore[union-attr]  # its own connection

        p2 = Sensorium(settings, clock=clock, background=False)
        try:
            assert p2.replayed >= 1
            assert p2.hot.rows(key) == 5  # the committed batch was not replayed into memory
            assert rows(p2) == expected(20)
            assert p2.flush(force=True) == 5
            assert rows(p2) == expected(20)
            assert pg.stats(bucket, "climate").rows == 20
        finally:
            p2.close()
        p3 = Sensorium(settings, clock=clock, background=False)
        try:
            assert rows(p3) == expected(20)
            st = [t for t in p3.storage_stats()["tables"] if t["bucket"] == bucket]
            assert st and st[0]["rows"] == 20 and st[0]["values"] == 60
            # latest values seeded from PostgreSQL (nothing in memory after a clean restart)
            last = p3.latest(bucket=bucket, measurement="climate", device_id="d1", room="r 1")
            assert len(last) == 1 and last[0]["fields"]["temperature"] == 19 * 0.5
            assert len(p3.latest(bucket=bucket, measurement="climate")) == 6  # 3 devices x 2 rooms
        finally:
            p3.close()
        # retention (quality.retention_days) in maintenance: rows older than a day before "now"
        later = FakeClock(T0 + DAY + 10_000_000_000)  # cutoff T0 + 10 s: points 0..9 go
        kept = make_settings(
            tmp_path / "data", store_backend="postgres", postgres_dsn=PG_DSN, quality={"retention_days": 1}
        )
        p4 = Sensorium(kept, clock=later, background=False)
        try:
            p4.maintain()
            assert rows(p4) == expected(20)[10:]
        finally:
            p4.close()
    finally:
        pg.drop_bucket(bucket)
        pg.drop_bucket(bucket + "__stream")
        pg.close()


def test_stream_outputs_are_stored_in_postgres_beside_the_raw_data(tmp_path: Path) -> None:
    """store_backend = "postgres": rollups (and the stream's other tables) go to schema
    ``<bucket>__stream``, are queried by name like raw tables, equal recomputation from the raw
    rows, and survive a restart without being stored twice."""
    from sensorium.platform import Sensorium
    from tests.conftest import FakeClock, make_settings

    pg = require_postgres()
    bucket = f"t_{uuid.uuid4().hex[:12]}"
    clock = FakeClock(T0 + 3_600_000_000_000)
    settings = make_settings(
        tmp_path / "data", store_backend="postgres", postgres_dsn=PG_DSN,
        stream={"rollups": ["1m"], "lateness_s": 0},
    )
    body = "\n".join(
        f"climate,device_id=d{d} temperature={20 + (s % 13) * 0.5} {T0 + s * 1_000_000_000}"
        for s in range(600) for d in range(3)
    )
    recompute = (
        "SELECT time_bucket(INTERVAL '1 minute', time) AS t, device_id, count(*) AS n, "
        "round(sum(temperature), 6) AS s FROM climate WHERE time < TIMESTAMP '{end}' GROUP BY 1, 2 ORDER BY 1, 2"
    )
    rolled = (
        "SELECT time AS t, device_id, count AS n, round(sum, 6) AS s FROM climate_1m "
        "WHERE field = 'temperature' AND time < TIMESTAMP '{end}' ORDER BY 1, 2"
    )
    end = "2026-01-01 00:09:00"  # the last minute is still open (its watermark has not passed)
    try:
        p = Sensorium(settings, clock=clock, background=False)
        try:
            assert p.write(body, bucket=bucket).accepted_rows == 1800
            p.process_stream()
            p.stream.checkpoint()  # type: ignore[union-attr]  # commits finished rollups
            assert (bucket + "__stream", "climate_1m") in pg.tables(stream_outputs=True)
            assert all(b == bucket for b, _ in pg.tables() if b.startswith(bucket))  # raw tables only
            want = p.query(recompute.format(end=end), bucket=bucket).to_pylist()
            assert len(want) == 3 * 9
            assert p.query(rolled.format(end=end), bucket=bucket).to_pylist() == want
        finally:
            p.close()
        stored = pg.stats(bucket + "__stream", "climate_1m").rows
        p = Sensorium(settings, clock=clock, background=False)
        try:
            p.process_stream()
            p.stream.checkpoint()  # type: ignore[union-attr]
            assert pg.stats(bucket + "__stream", "climate_1m").rows == stored  # nothing twice
            assert p.query(rolled.format(end=end), bucket=bucket).to_pylist() == want
        finally:
            p.close()
        api = Sensorium(settings, role="api")  # a reader beside workers reads them too
        try:
            assert api.query(rolled.format(end=end), bucket=bucket).to_pylist() == want
        finally:
            api.close()
    finally:
        pg.drop_bucket(bucket)
        pg.drop_bucket(bucket + "__stream")
        pg.close()
