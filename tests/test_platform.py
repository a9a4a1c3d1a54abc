"""End-to-end in process: write → durable → queryable; flush → lake; replay → exactly once."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from sensorium.errors import SensoriumError
from sensorium.platform import Sensorium
from tests.conftest import T0, FakeClock, make_settings


def lp(n: int, start: int = 0, device: str = "d1", t0: int = T0) -> str:
    return "\n".join(
        f"climate,device_id={device},room=kitchen temperature={20 + i % 10}.5,seq={i}i {t0 + i * 1_000_000_000}"
        for i in range(start, start + n)
    )


def count(p: Sensorium, sql: str = "SELECT count(*) FROM climate") -> int:
    return p.query(sql)[0][0].as_py()


def test_write_is_queryable_before_and_after_flush(platform: Sensorium) -> None:
    res = platform.write(lp(100))
    assert res.accepted_rows == 100 and res.accepted_values == 200 and not res.rejects
    assert count(platform) == 100
    assert platform.flush(force=True) == 100
    assert platform.hot.rows() == 0
    assert count(platform) == 100
    platform.write(lp(50, start=100))
    assert count(platform) == 150
    t = platform.query("SELECT min(seq), max(seq), count(DISTINCT seq) FROM climate")
    assert [c[0].as_py() for c in t.columns] == [0, 149, 150]


def test_a_flush_folds_the_latest_value_cache_and_a_write_does_not(
    platform: Sensorium, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The latest-value cache's fold (its working set ~3x the rows folded) runs after a flush,
    when the process holds least, not inside the write that made it due."""
    monkeypatch.setattr("sensorium.query.latest.FOLD_ROWS", 64)
    pending = platform.latest_cache._pending  # type: ignore[attr-defined]
    platform.write(lp(100))
    assert sum(t.num_rows for _, t in pending[("default", "climate")]) == 100  # due, not folded
    platform.flush(force=True)
    assert not pending.get(("default", "climate"))
    rows = platform.latest_cache.get([("default", "climate")], {})
    assert [(r["tags"]["device_id"], r["fields"]["seq"]) for r in rows] == [("d1", 99)]


def test_time_is_exact_nanoseconds_and_timestamp_typed(platform: Sensorium) -> None:
    platform.write(f"m,device_id=a v=1 {T0 + 123}")
    platform.flush(force=True)
    platform.write(f"m,device_id=a v=2 {T0 + 456}")
    t = platform.query("SELECT epoch_ns(time) AS ns, typeof(time) AS ty FROM m ORDER BY ns")
    assert t["ns"].to_pylist() == [T0 + 123, T0 + 456]
    assert t["ty"][0].as_py() == "TIMESTAMP_NS"
    b = platform.query("SELECT time_bucket(INTERVAL '1 hour', time) AS h, count(*) FROM m GROUP BY h")
    assert b.num_rows == 1


def test_replay_after_crash_restores_unflushed_data_once(data_dir: Path, clock: FakeClock) -> None:
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    p.write(lp(100))
    p.flush(force=True)
    p.write(lp(40, start=100))
    # simulate a crash: no close(), no flush; release the lock as the OS would
    import os

    os.close(p._lock_fd)  # type: ignore[arg-type]
    p.wal.close()
    p2 = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        assert p2.replayed >= 1
        assert count(p2) == 140
        assert count(p2, "SELECT count(DISTINCT seq) FROM climate") == 140
        p2.flush(force=True)
        assert count(p2) == 140
    finally:
        p2.close()
    p3 = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        assert count(p3) == 140
    finally:
        p3.close()


def test_crash_between_lake_commit_and_wal_truncation_does_not_duplicate(
    data_dir: Path, clock: FakeClock
) -> None:
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    p.write(lp(30))
    key = ("default", "climate")
    tables, max_off, _ = p.hot.take(key)
    p.lake.append("default", "climate", pa.concat_tables(tables), offset=max_off)  # committed...
    import os

    os.close(p._lock_fd)  # type: ignore[arg-type]
    p.wal.close()  # ...but crashed before the hot buffer and the WAL moved on
    p2 = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        assert count(p2) == 30
    finally:
        p2.close()


def test_schema_evolution_adds_columns(platform: Sensorium) -> None:
    platform.write(f"climate,device_id=a temperature=20 {T0}")
    platform.flush(force=True)
    platform.write(f"climate,device_id=b,floor=2 temperature=21,co2=400i {T0 + 1}")
    t = platform.query("SELECT device_id, floor, temperature, co2 FROM climate ORDER BY time")
    assert t.to_pylist() == [
        {"device_id": "a", "floor": None, "temperature": 20.0, "co2": None},
        {"device_id": "b", "floor": "2", "temperature": 21.0, "co2": 400},
    ]


def test_type_conflict_rejects_only_conflicting_lines(platform: Sensorium) -> None:
    platform.write(f"climate,device_id=a temperature=20 {T0}")
    body = f"climate,device_id=a temperature=21i {T0 + 1}\nclimate,device_id=a temperature=22 {T0 + 2}"
    res = platform.write(body)
    assert res.accepted_rows == 1
    assert len(res.rejects) == 1 and res.rejects[0].line == 1
    assert "type conflict" in res.rejects[0].reason and "float" in res.rejects[0].reason
    assert count(platform) == 2


def test_duplicates_are_kept_once(platform: Sensorium) -> None:
    line = f"climate,device_id=a temperature=20 {T0}"
    res = platform.write("\n".join([line, line, line]))
    assert res.accepted_rows == 1 and res.duplicates == 2
    assert count(platform) == 1


def test_compaction_keeps_data_and_offsets(platform: Sensorium) -> None:
    for i in range(5):
        platform.write(lp(20, start=i * 20))
        platform.flush(force=True)
    before = platform.lake.stats("default", "climate")
    assert before.files >= 5
    assert platform.maintain(vacuum_hours=0, min_files=2) >= 1
    after = platform.lake.stats("default", "climate")
    assert after.files < before.files
    assert count(platform) == 100
    assert platform.lake.applied_offset("default", "climate") >= 0


def test_storage_stats_bytes_per_value(platform: Sensorium) -> None:
    platform.write(lp(1000))
    platform.flush(force=True)
    st = platform.storage_stats()
    assert st["values"] == 2000
    assert st["bytes"] > 0 and st["bytes_per_value"] == round(st["bytes"] / 2000, 3)


def test_latest_per_series(platform: Sensorium) -> None:
    platform.write(lp(10, device="d1") + "\n" + lp(5, device="d2"))
    platform.flush(force=True)
    platform.write(f"climate,device_id=d1,room=kitchen temperature=99.5 {T0 + 10**12}")
    rows = platform.latest(device_id="d1")
    assert len(rows) == 1
    assert rows[0]["fields"]["temperature"] == 99.5
    assert rows[0]["fields"]["seq"] == 9  # last non-null seq
    assert {r["tags"]["device_id"] for r in platform.latest()} == {"d1", "d2"}


def test_same_series_and_time_merges_fields_like_influxdb(platform: Sensorium) -> None:
    body = "\n".join([
        f"climate,device_id=a temperature=20 {T0}",
        f"climate,device_id=a humidity=40 {T0}",
        f"climate,device_id=a temperature=21 {T0}",
    ])
    res = platform.write(body)
    assert res.accepted_rows == 1 and res.duplicates == 2
    t = platform.query("SELECT temperature, humidity FROM climate")
    assert t.to_pylist() == [{"temperature": 21.0, "humidity": 40.0}]


def test_json_readings_of_one_device_and_time_become_one_row(platform: Sensorium) -> None:
    import orjson

    readings = [
        {"device_id": "a", "timestamp": "2026-01-01T00:00:00Z", "sensor_type": "climate",
         "measurement_type": m, "value": v}
        for m, v in (("temperature", 20.5), ("humidity", 41.0), ("pressure", 1001.0))
    ]
    res = platform.write(orjson.dumps(readings), fmt="json")
    assert not res.rejects
    t = platform.query("SELECT temperature, humidity, pressure FROM climate")
    assert t.to_pylist() == [{"temperature": 20.5, "humidity": 41.0, "pressure": 1001.0}]


def test_compaction_merges_duplicates_across_requests(platform: Sensorium) -> None:
    platform.write(f"climate,device_id=a temperature=20 {T0}")
    platform.flush(force=True)
    platform.write(f"climate,device_id=a humidity=40 {T0}\nclimate,device_id=b humidity=41 {T0}")
    platform.flush(force=True)
    platform.maintain(vacuum_hours=0, min_files=2)
    t = platform.query("SELECT device_id, temperature, humidity FROM climate ORDER BY device_id")
    assert t.to_pylist() == [
        {"device_id": "a", "temperature": 20.0, "humidity": 40.0},
        {"device_id": "b", "temperature": None, "humidity": 41.0},
    ]


def test_dead_letters_survive_a_crash_once(data_dir: Path, clock: FakeClock) -> None:
    import os

    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    res = p.write(f"climate,device_id=a humidity=130 {T0}\nclimate,device_id=a humidity=30 {T0 + 1}\nbad line")
    assert res.rejected == 2
    os.close(p._lock_fd)  # type: ignore[arg-type]
    p.wal.close()  # crash: nothing flushed, the WAL still holds the dead-letter record
    p2 = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        assert p2.deadletters.count() == 2  # re-applied on replay, not doubled
        rep = p2.deadletters.counters()
        assert rep["accepted_rows"] == 1
        assert count(p2) == 1
    finally:
        p2.close()


def test_per_device_counts_are_logged_as_a_table_and_replay_to_the_same_counters(
    data_dir: Path, tmp_path: Path, clock: FakeClock
) -> None:
    """A write's accepted points per device travel in its dead-letter record as an Arrow table
    (device, count): the record read back from the log and applied to another store gives the
    same per-device counters as the platform's own store."""
    from sensorium.log.wal import KIND_DEAD_LETTERS
    from sensorium.platform import store_dead_letters
    from sensorium.quality.deadletters import DeadLetterStore

    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        p.write(lp(3, device="a") + "\n" + lp(2, start=10, device="b") + f"\nclimate,room=x temperature=1 {T0}")
        p.write(lp(1, start=20, device="a") + f"\nclimate,device_id=c humidity=130 {T0}")  # c: rejected only
        recs = [r for r in p.wal.replay() if r.kind == KIND_DEAD_LETTERS]
        assert len(recs) == 2
        assert recs[0].table is not None
        assert dict(zip(*recs[0].table.to_pydict().values(), strict=True)) == {"a": 3, "b": 2}
        assert "accepted_by_device" not in recs[0].header  # no per-device JSON in the log
        other = DeadLetterStore(tmp_path / "other.sqlite")
        try:
            assert all(store_dead_letters(other, r) for r in recs)
            assert other.device_stats() == p.deadletters.device_stats()
            assert other.device_stats()["a"] == {"accepted": 4, "rejected": 0}
            assert other.device_stats()["c"] == {"accepted": 0, "rejected": 1}
        finally:
            other.close()
    finally:
        p.close()


def test_parse_workers_give_the_same_result_as_in_process(tmp_path: Path, clock: FakeClock) -> None:
    body = lp(3000) + "\nclimate,device_id=x humidity=130 " + str(T0) + "\nnot line protocol"
    results = []
    for workers in (0, 1):
        s = make_settings(tmp_path / f"w{workers}", parse_workers=workers)
        with Sensorium(s, clock=clock, background=True) as p:
            assert (p._pool is not None) == (workers > 0)
            p.write(lp(1, device="z"))  # the stored schema is then shipped to the worker
            res = p.write(body)
            results.append((res.accepted_rows, sorted((r.line, r.reason, r.raw) for r in res.rejects)))
            assert count(p, "SELECT count(*) FROM climate WHERE device_id <> 'z'") == 3000
    assert results[0] == results[1]
    assert results[0][1][0][2].startswith("climate,device_id=x humidity=130")


def test_a_point_written_again_later_replaces_the_first_after_flush(platform: Sensorium) -> None:
    platform.write(f"dd,d=1 a=1,b=5 {T0}")
    platform.write(f"dd,d=1 a=2 {T0}")  # a retry or a correction, in a later request
    platform.flush(force=True)
    assert platform.query("SELECT a, b FROM dd").to_pylist() == [{"a": 2.0, "b": 5.0}]


def test_unsigned_beyond_int64_is_rejected_and_flushing_goes_on(platform: Sensorium) -> None:
    res = platform.write(f"m u=18446744073709551615u {T0}\nm u=5u {T0 + 1}")
    assert res.accepted_rows == 1 and "exceeds" in res.rejects[0].reason
    before = platform.query("SELECT typeof(u) AS t, u FROM m").to_pylist()
    platform.flush(force=True)
    after = platform.query("SELECT typeof(u) AS t, u FROM m").to_pylist()
    assert before == after == [{"t": "BIGINT", "u": 5}]


def test_latest_filters_must_be_tags(platform: Sensorium) -> None:
    import pytest

    from sensorium.errors import BadRequest

    platform.write(f"m,device_id=a v=1 {T0}")
    with pytest.raises(BadRequest, match="not a tag here: v"):
        platform.latest(v="1")


def test_columns_differing_only_by_case_are_rejected(platform: Sensorium) -> None:
    platform.write(f"tc,t=a v=1 {T0}")
    res = platform.write(f"tc,T=b v=2 {T0 + 1}\ntc,t=c V=3 {T0 + 2}\ntc,t=d v=4 {T0 + 3}")
    assert sorted(r.line for r in res.rejects) == [1, 2]
    assert all("only by case" in r.reason for r in res.rejects)
    assert platform.query("SELECT t, v FROM tc ORDER BY v").to_pylist() == [
        {"t": "a", "v": 1.0}, {"t": "d", "v": 4.0}
    ]


def test_a_rewrite_is_one_point_in_queries_before_the_flush_too(platform: Sensorium) -> None:
    platform.write(f"dd,d=1 a=1,b=5 {T0}\ndd,d=2 a=7 {T0}")
    platform.write(f"dd,d=1 a=2 {T0}")
    assert platform.query("SELECT d, a, b FROM dd ORDER BY d").to_pylist() == [
        {"d": "1", "a": 2.0, "b": 5.0}, {"d": "2", "a": 7.0, "b": None}
    ]


def test_a_write_whose_dead_letters_cannot_be_stored_holds_up_no_other(
    data_dir: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes' dead letters are stored together; when that fails, one at a time: the others are
    stored, the failing one stays queued (and its log record held) for the next drain."""
    import sensorium.platform as platform_mod

    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        p._threads = [object()]  # type: ignore[list-item]  # queue the records as a server does
        p.write(f"climate,device_id=a temperature=20 {T0}\nclimate,device_id=a temperature=oops {T0}")
        p.write(f"climate,device_id=b temperature=21 {T0}\nbad line")
        real = platform_mod.stats_record
        poison = p._dl_pending[0].offset

        def failing(rec):  # type: ignore[no-untyped-def]
            if rec.offset == poison:
                raise OSError("disk full")
            return real(rec)

        monkeypatch.setattr(platform_mod, "stats_record", failing)
        with pytest.raises(SensoriumError, match="could not be stored"):
            p.drain_dead_letters()
        assert [r.offset for r in p._dl_pending] == [poison]
        assert p._dl_store.count() == 1 and p._dl_store.counters()["accepted_rows"] == 1
        assert p.hot.min_offset() is not None and p.hot.min_offset() <= poison  # still held
        monkeypatch.setattr(platform_mod, "stats_record", real)
        assert p.drain_dead_letters() == 1
        assert p._dl_store.count() == 2 and p._dl_store.counters()["accepted_rows"] == 2
    finally:
        p._threads = []
        p.close()


@pytest.mark.parametrize("nice", [0, 7])
def test_housekeeping_threads_run_at_the_background_niceness(data_dir: Path, nice: int) -> None:
    """The flusher and maintenance threads lower their own priority (``store.background_nice``);
    the stream and the request threads keep the process's."""
    import threading
    import time

    p = Sensorium(make_settings(data_dir, store={"background_nice": nice}))
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)
        want = {"sensorium-flusher": min(19, base + nice) if nice else base,
                "sensorium-maintenance": min(19, base + nice) if nice else base,
                "sensorium-stream": base}
        got: dict[str, int] = {}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and got != want:
            threads = {t.name: t.native_id for t in threading.enumerate() if t.name in want}
            got = {n: os.getpriority(os.PRIO_PROCESS, tid) for n, tid in threads.items() if tid is not None}
            time.sleep(0.02)
        assert got == want
    finally:
        p.close()
