"""The stream's side thread runs behind its own: a step's rules and alerts never wait for the
rollups (a minute's close), views wait for a side job in progress and see each window once, and
every output is stored before a checkpoint."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from sensorium.platform import Sensorium
from tests.conftest import T0, FakeClock, make_settings

NS = 1_000_000_000


def _minutes(devices: int, seconds: int, start_s: int = 0, hot_device: int | None = None) -> str:
    lines = []
    for s in range(start_s, start_s + seconds, 5):
        for d in range(devices):
            temp = 99.0 if d == hot_device else 20.0 + d
            lines.append(f"climate,device_id=d{d} temperature={temp} {T0 + s * NS}")
    return "\n".join(lines)


def _gate_side_rollups(p: Sensorium, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Hold the rollups' work on the side thread until ``release`` is set; ``entered`` is set
    when a side job is waiting there."""
    assert p.stream is not None and p.stream.rollups is not None
    # a long test session may have passed the allocator's lean mark, where the stages run one
    # after the other (sensorium.obs.memory): these tests are about the side thread
    monkeypatch.setattr("sensorium.stream.runner.lean", lambda: False)
    ops = p.stream.rollups
    release, entered = threading.Event(), threading.Event()
    original = ops.process_partials

    def gated(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread().name.startswith("sensorium-stream-side"):
            entered.set()
            assert release.wait(30), "the test never released the side thread"
        return original(*args, **kwargs)

    monkeypatch.setattr(ops, "process_partials", gated)
    return release, entered


def _held_until_released(fn: Any, release: threading.Event) -> Any:
    """Run ``fn()`` on a thread: it must still wait 0.5 s later (the side job is held), and end
    once ``release`` is set. Returns its result."""
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(fn()))
    t.start()
    t.join(0.5)
    assert t.is_alive()  # it waits for the side job in progress ...
    release.set()
    t.join(10)
    assert not t.is_alive() and got
    return got[0]


def test_alerts_do_not_wait_for_the_rollups(data_dir: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> None:
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        assert p.stream is not None
        release, entered = _gate_side_rollups(p, monkeypatch)
        p.write(_minutes(3, 60))
        p.stream.step()  # the first step's rollups wait on the side thread ...
        assert entered.wait(10)
        p.write(_minutes(3, 60, start_s=60, hot_device=1))
        p.stream.step()  # ... and the next step's rules run all the same
        assert p.stream.stats["transitions"] >= 1
        assert [a["series"] for a in p.list_alerts(state="firing")] == ["climate,device_id=d1"]
        release.set()
        p.stream.drain()  # every side job done, its outputs stored
        clock.advance(3600)
        p.process_stream()
        rows = p.query("SELECT count(*) AS n, sum(count) AS c FROM climate_1m WHERE field = 'temperature'").to_pylist()
        assert rows == [{"n": 3 * 2, "c": 3 * 24}]  # 2 minutes of 3 devices, 12 points each
    finally:
        release.set()
        p.close()


def test_a_view_waits_for_the_side_job_and_sees_each_window_once(
    data_dir: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        assert p.stream is not None
        p.write(_minutes(2, 60))
        p.stream.drain()  # minute 0 open
        release, entered = _gate_side_rollups(p, monkeypatch)
        p.write(_minutes(2, 120, start_s=60))  # closes minute 0 (and 1) on the side thread
        p.stream.step()
        assert entered.wait(10)
        sql = "SELECT time, count FROM climate_1m WHERE field = 'temperature' AND device_id = 'd0' ORDER BY time"
        rows = _held_until_released(lambda: p.query(sql).to_pylist(), release)
        # ... then sees every minute once: finished ones stored, the last one still open
        assert [r["count"] for r in rows] == [12, 12, 12]
        assert [r["time"].timestamp() * NS for r in rows] == [T0 + m * 60 * NS for m in range(3)]
    finally:
        release.set()
        p.close()


def test_a_checkpoint_stores_what_the_side_thread_holds(
    data_dir: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    try:
        assert p.stream is not None
        release, entered = _gate_side_rollups(p, monkeypatch)
        p.write(_minutes(2, 180))
        p.stream.step()
        assert entered.wait(10)
        _held_until_released(p.stream.checkpoint, release)
        # ... and the finished minutes went into the lake with it
        rows = p.query("SELECT count(*) AS n FROM climate_1m WHERE field = 'temperature'").to_pylist()
        assert rows[0]["n"] >= 2 * 2
    finally:
        release.set()
        p.close()
