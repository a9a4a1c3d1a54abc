"""The stream inside the platform: rollups equal recomputation from raw data, across restarts,
late data lands in late_data, checkpoints bound the log, downsampled series use rollups."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sensorium.platform import Sensorium
from tests.conftest import T0, FakeClock, make_settings

NS = 1_000_000_000
AGGS = ("count", "sum", "mean", "min", "max")


def _lines(start_s: int, seconds: int, devices: int, seed: int, step_s: int = 7) -> list[str]:
    """Climate points for ``devices`` devices, one every ``step_s`` s, with sub-second jitter."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(devices):
        for s in range(start_s, start_s + seconds, step_s):
            t = T0 + s * NS + int(rng.integers(0, NS))
            temp = 20 + 5 * np.sin(s / 600 + d) + rng.normal(0, 0.3)
            hum = 40 + 10 * np.cos(s / 900 + d)
            out.append((t, f"climate,device_id=d{d},location=room{d % 3} temperature={temp:.3f},humidity={hum:.2f} {t}"))
    return [line for _, line in sorted(out)]


def _shuffled_requests(lines: list[str], seed: int, size: int = 400) -> list[str]:
    """Requests in a mildly shuffled order (within the allowed lateness) with some points sent
    twice, a few lines later (often in the next request)."""
    rng = np.random.default_rng(seed)
    pos = np.arange(len(lines)) + rng.uniform(0, 3, len(lines))
    dup = rng.choice(len(lines), size=len(lines) // 20, replace=False)
    pos = np.concatenate([pos, dup + rng.uniform(1, 5, len(dup))])
    lines = lines + [lines[i] for i in dup]
    lines = [lines[i] for i in np.argsort(pos, kind="stable")]
    return ["\n".join(lines[i : i + size]) for i in range(0, len(lines), size)]


def _recomputed(p: Sensorium, interval: str) -> dict[tuple, tuple]:
    width = {"1m": "1 minute", "1h": "1 hour", "1d": "1 day"}[interval]
    out = {}
    for field in ("temperature", "humidity"):
        rows = p.query(
            f"SELECT time_bucket(INTERVAL '{width}', time) AS w, device_id, count({field}), "
            f"sum({field}), avg({field}), min({field}), max({field}) FROM climate "
            f"WHERE {field} IS NOT NULL GROUP BY ALL"
        ).to_pylist()
        for r in rows:
            vals = list(r.values())
            out[(vals[0], vals[1], field)] = tuple(vals[2:])
    return out


def _rolled(p: Sensorium, interval: str) -> dict[tuple, tuple]:
    rows = p.query(
        f"SELECT time, device_id, field, count, sum, mean, min, max FROM climate_{interval}"
    ).to_pylist()
    return {(r["time"], r["device_id"], r["field"]): tuple(r[a] for a in AGGS) for r in rows}


def _assert_same(a: dict[tuple, tuple], b: dict[tuple, tuple]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][0] == b[k][0], k
        assert a[k][1:] == pytest.approx(b[k][1:], rel=1e-9, abs=1e-9), k


def _finish_and_check(data_dir: Path, clock: FakeClock, lines: list[str], seed: int) -> None:
    """A new platform on ``data_dir`` takes the rest of the ``lines``, closes every window, and
    its stored rollups equal recomputation from raw data, each window stored once."""
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        for body in _shuffled_requests(lines, seed=seed):
            p.write(body)
        clock.advance(86_400)
        p.process_stream()
        p.stream.checkpoint()
        for iv in ("1m", "1h"):
            _assert_same(_rolled(p, iv), _recomputed(p, iv))
        stored = p.stream.derived.lake.dataset("default", "climate_1m").to_table()
        keys = list(zip(stored["time"].to_pylist(), stored["device_id"].to_pylist(), stored["field"].to_pylist(), strict=True))
        assert len(keys) == len(set(keys))  # each window stored once
    finally:
        p.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0 + 3 * 3600 * NS)


@pytest.mark.parametrize(("output_rows", "lean"), [(65_536, False), (3, False), (65_536, True), (3, True)])
def test_rollups_equal_recomputation_from_raw(
    data_dir: Path, clock: FakeClock, output_rows: int, lean: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``output_rows``: finished rollup rows go to the lake in slices of this many (3: many).
    ``lean``: the rollups run on the stream thread and hand each slice of finished partials to
    the store as the levels advance (slices of 7 keys' partials here: many)."""
    monkeypatch.setattr("sensorium.stream.runner.OUTPUT_ROWS", output_rows)
    monkeypatch.setattr("sensorium.stream.runner.lean", lambda: lean)
    if lean:
        monkeypatch.setattr("sensorium.stream.rollup.FOLD_ROWS", 7)
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        for body in _shuffled_requests(_lines(0, 7200, 6, seed=1), seed=2):
            p.write(body)
            p.process_stream()
        # mid-stream: finished windows are stored, open ones are provisional — both queryable
        for iv in ("1m", "1h", "1d"):
            _assert_same(_rolled(p, iv), _recomputed(p, iv))
        clock.advance(86_400)  # every device idle: watermarks advance, every window finishes
        p.process_stream()
        p.stream.checkpoint()
        for iv in ("1m", "1h", "1d"):
            _assert_same(_rolled(p, iv), _recomputed(p, iv))
        assert p.query("SELECT count(*) AS n FROM climate_1h").column("n")[0].as_py() == 6 * 2 * 2
    finally:
        p.close()


@pytest.mark.parametrize("lean", [False, True])
def test_a_lean_process_runs_the_stages_one_after_the_other(
    data_dir: Path, clock: FakeClock, lean: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the allocator's lean limit (sensorium.obs.memory.lean) the rollups run on the stream
    thread instead of the side thread; the stored rollups are the same either way."""
    monkeypatch.setattr("sensorium.stream.runner.lean", lambda: lean)
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    threads: set[str] = set()
    assert p.stream.rollups is not None
    process = p.stream.rollups.process_partials

    def spy(*a: Any) -> Any:
        threads.add(threading.current_thread().name)
        return process(*a)

    monkeypatch.setattr(p.stream.rollups, "process_partials", spy)
    try:
        for body in _shuffled_requests(_lines(0, 1800, 3, seed=7), seed=8):
            p.write(body)
            p.process_stream()
        clock.advance(86_400)
        p.process_stream()
        p.stream.checkpoint()
        assert threads and all(n.startswith("sensorium-stream-side") != lean for n in threads), threads
        _assert_same(_rolled(p, "1m"), _recomputed(p, "1m"))
    finally:
        p.close()


def test_rollups_survive_restart_exactly_once(data_dir: Path, clock: FakeClock) -> None:
    lines = _lines(0, 3600, 4, seed=3)
    half = len(lines) // 2
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    for body in _shuffled_requests(lines[:half], seed=4):
        p.write(body)
    p.process_stream()
    p.stream.checkpoint()
    spill = data_dir / "stream" / "spill"
    assert len(list(spill.glob("rollups-1h.*.arrow"))) == 1  # the open hour waits on disk
    p.close()
    assert not list(spill.iterdir())  # the checkpoint holds it
    _finish_and_check(data_dir, clock, lines[half:], seed=5)


def test_a_dropped_runner_leaves_no_files_and_its_successor_loses_nothing(data_dir: Path, clock: FakeClock) -> None:
    # a scale-out worker whose lease was lost drops its runner (release, no final checkpoint):
    # the rollup levels' spill files and the outbox's segments go with it; the next owner starts
    # from the last checkpoint and the log, and stores every window once
    import os

    lines = _lines(0, 3600, 4, seed=7)
    third = len(lines) // 3
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    for body in _shuffled_requests(lines[:third], seed=8):
        p.write(body)
    p.process_stream()
    p.stream.checkpoint()
    for body in _shuffled_requests(lines[third : 2 * third], seed=9):
        p.write(body)
    p.process_stream()  # windows finished after the checkpoint wait in the outbox
    spill, outbox = data_dir / "stream" / "spill", data_dir / "stream" / "outbox"
    assert list(spill.iterdir()) and list(outbox.iterdir())
    p.stream.release()
    assert not list(spill.iterdir()) and not list(outbox.iterdir())
    os.close(p._lock_fd)  # type: ignore[arg-type]
    p.wal.close()  # gone without a final checkpoint
    _finish_and_check(data_dir, clock, lines[2 * third :], seed=10)


def test_late_points_go_to_late_data_with_reason(data_dir: Path, clock: FakeClock) -> None:
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        p.write("\n".join(f"climate,device_id=a temperature=20 {T0 + s * NS}" for s in range(0, 600, 5)))
        p.process_stream()
        # 5 minutes behind the newest point: far beyond the 10 s allowed lateness
        p.write(f"climate,device_id=a temperature=99 {T0 + 300 * NS + 1}")
        p.process_stream()
        late = p.query("SELECT device_id, measurement, field, value, reason FROM late_data").to_pylist()
        assert len(late) == 1
        assert late[0]["device_id"] == "a" and late[0]["field"] == "temperature" and late[0]["value"] == 99
        assert "lateness" in late[0]["reason"]
        # the raw store keeps it (it was acknowledged); the rollup does not count it
        assert p.query("SELECT max(temperature) AS m FROM climate").column("m")[0].as_py() == 99
        assert p.query("SELECT max(max) AS m FROM climate_1m").column("m")[0].as_py() == 20
    finally:
        p.close()


def test_checkpoint_bounds_the_log(data_dir: Path, clock: FakeClock) -> None:
    p = Sensorium(make_settings(data_dir, wal={"segment_bytes": 4096}), clock=clock, background=False)
    try:
        for i in range(20):
            p.write("\n".join(f"climate,device_id=d{j} temperature={i}.5 {T0 + (i * 60 + j) * NS}" for j in range(30)))
        p.flush(force=True)
        segments = p.wal.segment_count
        assert segments > 2  # the stream has not checkpointed: the log is kept for it
        p.process_stream()
        p.stream.checkpoint()
        p.flush(force=True)
        p.write(f"climate,device_id=x temperature=1 {T0 + 5000 * NS}")
        p.flush(force=True)
        assert p.wal.segment_count < segments
    finally:
        p.close()


def test_a_background_checkpoint_counts_only_once_on_disk(data_dir: Path, clock: FakeClock) -> None:
    """The stream thread's checkpoint is pickled under the step lock, but made durable (fsync,
    rename) on the delivery thread: until then the stream goes on, the log keeps what the old
    checkpoint needs, the file on disk is the old one and nothing of its outbox is in the lake."""
    lines = _lines(0, 900, 3, seed=11)
    p = Sensorium(make_settings(data_dir, wal={"segment_bytes": 4096}), clock=clock, background=False)
    try:
        st = p.stream
        p.write("\n".join(lines[: len(lines) // 2]))
        p.process_stream()
        st.checkpoint()
        before = (st.checkpoint_offset, st.checkpoints.path.read_bytes())
        go, entered = threading.Event(), threading.Event()
        real_commit = st.checkpoints.commit

        def held_commit(size: int) -> int:
            entered.set()
            assert go.wait(30)
            return real_commit(size)

        st.checkpoints.commit = held_commit  # type: ignore[method-assign]
        p.write("\n".join(lines[len(lines) // 2 :]))
        p.process_stream()
        st.checkpoint(wait=False)
        assert entered.wait(30)
        assert (st.checkpoint_offset, st.checkpoints.path.read_bytes()) == before
        assert st.retain_from == before[0] + 1  # the log keeps everything after the old one
        clock.advance(120)
        p.write(f"climate,device_id=x temperature=1 {T0 + 2000 * NS}")
        assert p.process_stream() >= 1  # the stream is not blocked meanwhile
        go.set()
        st._wait_delivery()
        assert st.checkpoint_offset > before[0] and st.checkpoints.path.read_bytes() != before[1]
    finally:
        go.set()
        p.close()
    _finish_and_check(data_dir, clock, lines[:0], seed=3)


def test_downsampled_series_reads_rollups(data_dir: Path, clock: FakeClock) -> None:
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        for body in _shuffled_requests(_lines(0, 7200, 3, seed=7), seed=8):
            p.write(body)
        clock.advance(86_400)
        p.process_stream()
        start = "2026-01-01T00:00:00Z"
        end = "2026-01-01T02:00:00Z"
        for agg in ("mean", "count", "min", "max", "stddev", "first", "last"):
            fast, src = p.series("climate", "temperature", start=start, end=end, every="1h", agg=agg, by=["device_id"])
            assert src == "climate_1h"
            p.stream.derived  # noqa: B018
            slow = p.query(
                "SELECT time_bucket(INTERVAL '1 hour', time) AS time, device_id, "
                + {"mean": "avg", "count": "count", "min": "min", "max": "max", "stddev": "stddev_samp",
                   "first": "arg_min", "last": "arg_max"}[agg]
                + ("(temperature, time)" if agg in ("first", "last") else "(temperature)")
                + f" AS {agg} FROM climate WHERE temperature IS NOT NULL GROUP BY ALL ORDER BY ALL"
            )
            assert fast.column(agg).to_pylist() == pytest.approx(slow.column(agg).to_pylist(), rel=1e-9)
        p95, src = p.series("climate", "temperature", start=start, end=end, every="30m", agg="p95")
        assert src == "climate" and p95.num_rows == 4  # no 30m rollup: raw data
    finally:
        p.close()


def test_a_background_checkpoint_commits_exactly_its_outbox(
    data_dir: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream thread's checkpoints commit their outbox on a delivery thread: rows finished
    after the checkpoint stay for the next one (committed under a later seq, never twice), queries
    see every finished row meanwhile, and the next checkpoint waits for the commit."""
    import threading

    lines = _lines(0, 1800, 3, seed=7)
    third = len(lines) // 3
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        lake = p.stream.derived.lake
        go = threading.Event()
        real_deliver = p.stream.derived.deliver

        def held_deliver(*args: Any) -> int:
            assert go.wait(30)  # the delivery thread starts only once the stream moved on
            return real_deliver(*args)

        monkeypatch.setattr(p.stream.derived, "deliver", held_deliver)
        p.write("\n".join(lines[:third]))
        p.process_stream()
        held = sum(t.num_rows for t in p.stream.derived.outbox().get(("default", "climate_1m"), []))
        assert held > 0
        p.stream.checkpoint(wait=False)
        p.write("\n".join(lines[third : 2 * third]))  # more finished minutes, after the snapshot
        p.process_stream()
        later = sum(t.num_rows for t in p.stream.derived.outbox().get(("default", "climate_1m"), []))
        go.set()
        p.stream._wait_delivery()
        assert lake.dataset("default", "climate_1m").to_table().num_rows == held
        assert later > held  # the rows finished after the checkpoint wait for the next one
        _assert_same(_rolled(p, "1m"), {k: v for k, v in _recomputed(p, "1m").items() if k in _rolled(p, "1m")})
        p.write("\n".join(lines[2 * third :]))
        clock.advance(86_400)
        p.process_stream()
        p.stream.checkpoint(wait=False)
        p.stream.checkpoint()  # waits for the first, then commits the rest
        stored = lake.dataset("default", "climate_1m").to_table()
        keys = list(zip(stored["time"].to_pylist(), stored["device_id"].to_pylist(), stored["field"].to_pylist(), strict=True))
        assert len(keys) == len(set(keys))
        for iv in ("1m", "1h"):
            _assert_same(_rolled(p, iv), _recomputed(p, iv))
    finally:
        p.close()


def test_maintenance_compacts_the_stream_outputs_and_keeps_exactly_once(data_dir: Path, clock: FakeClock) -> None:
    """Every checkpoint adds a file per output table and day; maintenance merges them (every row
    kept, the checkpoint numbers kept), queries read the compacted version, and a restart still
    stores each window once."""
    lines = _lines(0, 1800, 3, seed=8)
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        for i, body in enumerate(_shuffled_requests(lines, seed=9, size=40)):
            p.write(body)
            if i % 3 == 2:
                p.process_stream()
                p.stream.checkpoint()  # a commit per checkpoint with rows
        p.process_stream()
        p.stream.checkpoint()
        lake = p.stream.derived.lake
        table = lake.path("default", "climate_1m")
        before_files = len(list(table.rglob("*.parquet")))
        assert before_files > 3
        before = _rolled(p, "1m")
        applied = lake.applied_offset("default", "climate_1m", app_id=p.stream.derived.app_id)
        assert p.maintain(vacuum_hours=0, min_files=2) >= 1
        assert len(list(table.rglob("*.parquet"))) == 1  # one day, one file (old ones vacuumed)
        assert lake.applied_offset("default", "climate_1m", app_id=p.stream.derived.app_id) == applied
        _assert_same(_rolled(p, "1m"), before)
        _assert_same(_rolled(p, "1m"), _recomputed(p, "1m"))
    finally:
        p.close()
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        p.write("\n".join(_lines(1800, 600, 3, seed=10)))
        clock.advance(86_400)
        p.process_stream()
        p.stream.checkpoint()
        _assert_same(_rolled(p, "1m"), _recomputed(p, "1m"))
        stored = p.stream.derived.lake.dataset("default", "climate_1m").to_table()
        keys = list(zip(stored["time"].to_pylist(), stored["device_id"].to_pylist(), stored["field"].to_pylist(), strict=True))
        assert len(keys) == len(set(keys))
    finally:
        p.close()


def test_window_closes_in_parts_hold_back_flushes_not_yet_overdue(data_dir: Path, clock: FakeClock) -> None:
    """While windows close in parts (``close_max_rows``) the stream says so (``closing``) and the
    flusher writes a table only at FLUSH_PATIENCE times its flush thresholds; a forced or
    impatient flush still writes. The rollups are unchanged by it."""
    from sensorium.platform import FLUSH_PATIENCE

    p = Sensorium(
        make_settings(data_dir, store={"flush_rows": 2000}, stream={"close_max_rows": 20}), clock=clock, background=False
    )
    try:
        lines = _lines(0, 600, 6, seed=4, step_s=1)
        assert 2000 <= len(lines) < 2000 * FLUSH_PATIENCE
        p.write("\n".join(lines))
        p.stream.step()
        assert p.stream.closing  # the minutes of 6 devices, 20 values at a time
        assert p.flush(patient=True) == 0
        assert p.flush() == len(lines)
        while p.stream.settle():
            assert p.stream.closing
        assert not p.stream.closing
        clock.advance(86_400)
        p.process_stream()
        _assert_same(_rolled(p, "1m"), _recomputed(p, "1m"))
    finally:
        p.close()


@pytest.mark.parametrize("closing_s, first_after", [(0.0, 0.4), (0.7, 0.7), (9.0, 0.8)])
def test_compaction_waits_out_window_closes_for_at_most_an_interval(
    data_dir: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, closing_s: float, first_after: float
) -> None:
    """The maintenance thread runs ``maintain`` every interval (0.4 s here), but not while the
    stream closes windows — for at most one more interval (the stream closing "forever" here:
    the first compaction comes after two intervals)."""
    import time

    p = Sensorium(make_settings(data_dir, store={"maintenance_interval_s": 0.4}), clock=clock, background=False)
    t0 = time.monotonic()
    calls: list[float] = []
    monkeypatch.setattr(p, "_stream_closing", lambda: time.monotonic() - t0 < closing_s)
    monkeypatch.setattr(p, "maintain", lambda **_: calls.append(time.monotonic() - t0) or 0)
    t = threading.Thread(target=p._maintenance_loop, daemon=True)
    try:
        t.start()
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.02)
        assert calls and calls[0] >= first_after - 0.01, calls
        assert calls[0] < first_after + 3.0, calls  # generous: a busy machine
    finally:
        p._stop.set()
        t.join(timeout=5)
        p._stop.clear()
        p.close()
