"""Alerts end to end inside the platform: hysteresis, absence with an injected clock, the HTTP
API (list, one, acknowledge, deliveries, rules check) and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sensorium.platform import Sensorium
from sensorium.rules.loader import parse_rules
from tests.conftest import T0, FakeClock, make_settings

NS = 1_000_000_000

RULES = """
[[rules]]
name = "hot"
kind = "threshold"
measurement = "climate"
field = "temperature"
above = { warning = 50, critical = 60 }
deadband = 2.0

[[rules]]
name = "silent"
kind = "absence"
group_by = ["device_id"]
after = "10m"
severity = "critical"
"""


@pytest.fixture
def stream_platform(data_dir: Path) -> Iterator[tuple[Sensorium, FakeClock]]:
    clock = FakeClock(T0 + 3600 * NS)
    p = Sensorium(make_settings(data_dir), clock=clock, background=False, rules=parse_rules(RULES))
    yield p, clock
    p.close()


def _alerts(p: Sensorium, **kw: Any) -> list[dict[str, Any]]:
    p.process_stream()
    assert p.alerts is not None
    return p.alerts.list(**kw)


def test_oscillating_signal_fires_once_and_resolves_once(stream_platform: tuple[Sensorium, FakeClock]) -> None:
    p, _ = stream_platform
    # around 50, always within the 2.0 deadband once above: 50.5, 49.2, 50.8, 48.9, ...
    values = [45.0] + [50.5 if i % 2 == 0 else 48.6 + (i % 3) * 0.3 for i in range(60)] + [40.0]
    for i in range(0, len(values), 7):  # several requests, several micro-batches
        chunk = values[i : i + 7]
        p.write("\n".join(f"climate,device_id=a temperature={v} {T0 + (i + j) * NS}" for j, v in enumerate(chunk)))
        p.process_stream()
    hot = [a for a in _alerts(p) if a["rule"] == "hot"]
    assert len(hot) == 1
    a = hot[0]
    assert a["state"] == "resolved" and a["severity"] == "warning"
    events = p.alerts.get(a["alert_id"])["events"]  # type: ignore[union-attr]
    assert [e["state"] for e in events] == ["firing", "resolved"]
    assert events[0]["event_time_ns"] == T0 + 1 * NS  # the first point at or above 50


def test_silent_device_fires_and_resolves_when_data_returns(stream_platform: tuple[Sensorium, FakeClock]) -> None:
    p, clock = stream_platform
    p.write(f"climate,device_id=quiet temperature=20 {T0}\nclimate,device_id=busy temperature=21 {T0}")
    p.process_stream()
    clock.advance(5 * 60)
    p.write(f"climate,device_id=busy temperature=21 {T0 + 300 * NS}")
    assert not [a for a in _alerts(p) if a["rule"] == "silent"]
    clock.advance(5 * 60 + 1)  # quiet: 10 min + 1 s without data; busy: 5 min + 1 s
    silent = [a for a in _alerts(p, state="firing") if a["rule"] == "silent"]
    assert [a["tags"].get("device_id") for a in silent] == ["quiet"]
    p.write(f"climate,device_id=quiet temperature=20 {T0 + 700 * NS}")
    silent = [a for a in _alerts(p) if a["rule"] == "silent" and "quiet" in a["series"]]
    assert len(silent) == 1 and silent[0]["state"] == "resolved"


def test_alert_api_list_ack_and_errors(client: Any, platform: Sensorium) -> None:
    # the default rules: temperature above 60 is critical
    client.post("/api/v2/write", content=f"climate,device_id=x temperature=70 {T0}\nclimate,device_id=x temperature=71 {T0 + NS}")
    r = client.get("/api/v1/alerts", params={"state": "firing"})
    assert r.status_code == 200
    firing = [a for a in r.json()["alerts"] if a["rule"] == "temperature-range"]
    assert len(firing) == 1 and firing[0]["severity"] == "critical"
    aid = firing[0]["alert_id"]
    assert client.get(f"/api/v1/alerts/{aid}").json()["events"][0]["state"] == "firing"
    r = client.post(f"/api/v1/alerts/{aid}/ack", json={"by": "ops", "note": "on it"})
    assert r.status_code == 200 and r.json()["acknowledged"]
    assert client.get("/api/v1/alerts", params={"state": "unacknowledged"}).json()["alerts"] == []
    # bad input: precise 4xx, never 500
    assert client.get("/api/v1/alerts", params={"state": "burning"}).status_code == 400
    assert client.post("/api/v1/alerts/nope/ack").status_code == 404
    assert client.post(f"/api/v1/alerts/{aid}/ack", content=b"{not json").status_code == 400
    assert client.get("/api/v1/alerts/deliveries", params={"state": "dead"}).json() == {"deliveries": []}


def test_rules_check_endpoint_reports_line_numbers(client: Any) -> None:
    bad = '[[rules]]\nname = "x"\nkind = "threshold"\nfield = "t"\nabove = { warning = 60, critical = 50 }\n'
    r = client.post("/api/v1/rules/check", content=bad)
    assert r.status_code == 400
    problems = r.json()["problems"]
    assert problems and all(p["line"] >= 1 for p in problems)
    assert client.post("/api/v1/rules/check", content=RULES).json() == {"ok": True, "problems": []}
    assert {r["name"] for r in client.get("/api/v1/rules").json()["rules"]} >= {"temperature-range"}


def test_series_endpoint_and_stream_status(client: Any) -> None:
    body = "\n".join(f"climate,device_id=a temperature={20 + i % 5} {T0 + i * 10 * NS}" for i in range(360))
    assert client.post("/api/v2/write", content=body).status_code == 204
    r = client.get("/api/v1/series", params={"measurement": "climate", "field": "temperature",
                                             "start": "2026-01-01T00:00:00Z", "end": "2026-01-01T01:00:00Z",
                                             "every": "30m", "agg": "max", "device_id": "a"})
    assert r.status_code == 200, r.text
    assert [row[-1] for row in r.json()["rows"]] == [24.0, 24.0]
    assert client.get("/api/v1/series", params={"measurement": "climate", "field": "temperature",
                                                 "start": "yesterday"}).status_code == 400
    assert client.get("/api/v1/series", params={"measurement": "nope", "field": "t", "start": "now-1h"}).status_code == 404
    st = client.get("/api/v1/stream").json()
    assert st["enabled"] and st["rows"] >= 360 and st["error"] is None


def test_alert_files_are_synced_before_each_stream_checkpoint(
    stream_platform: tuple[Sensorium, FakeClock], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alert store and the outbox commit without a sync per step (NORMAL); a checkpoint
    (whose offset says "these transitions are kept") is saved only after both -wal files were
    fsynced, and an acknowledgement syncs before it returns."""
    import os

    import sensorium.rules.alerts as alerts_mod

    p, _ = stream_platform
    assert p.alerts is not None and p.dispatcher is not None and p.stream is not None
    assert p.alerts.synchronous == "NORMAL" and p.dispatcher.synchronous == "NORMAL"
    events: list[str] = []
    real_fsync, real_write = os.fsync, p.stream.checkpoints.write

    def fsync(fd: int) -> None:
        events.append(f"fsync {Path(os.readlink(f'/proc/self/fd/{fd}')).name}")
        real_fsync(fd)

    def write(state: dict[str, Any], stages: Any = None) -> int:  # the checkpoint's file, before its fsync
        events.append("save")
        return real_write(state, stages)

    monkeypatch.setattr(alerts_mod.os, "fsync", fsync)
    monkeypatch.setattr(p.stream.checkpoints, "write", write)
    p.write("\n".join(f"climate,device_id=a temperature={v} {T0 + i * NS}" for i, v in enumerate([40.0, 65.0])))
    p.process_stream()
    assert [a["state"] for a in p.alerts.list(rule="hot")] == ["firing"]
    assert "save" not in events and not any("alerts" in e for e in events)  # no sync per step
    p.stream.checkpoint()
    assert events.index("fsync alerts.sqlite-wal") < events.index("save")
    assert events.index("fsync alert-deliveries.sqlite-wal") < events.index("save")
    events.clear()
    p.alerts.ack(p.alerts.list(rule="hot")[0]["alert_id"], by="ops")
    assert events == ["fsync alerts.sqlite-wal"]


def test_alert_writer_stores_in_order_one_batch_behind_and_raises_a_failed_write() -> None:
    import threading

    from sensorium.stream.behind import Behind

    seen: list[int] = []
    gate = threading.Event()

    def write(batch: list[Any]) -> None:
        gate.wait(5)
        if batch == ["boom"]:
            raise RuntimeError("store down")
        seen.extend(batch)

    w = Behind("test-writer")
    w.submit(write, [1, 2])
    handed = threading.Thread(target=w.submit, args=(write, [3]))  # waits for the batch before
    handed.start()
    handed.join(0.2)
    assert handed.is_alive() and seen == []  # one batch in flight at most
    gate.set()
    handed.join(5)
    w.wait()
    assert seen == [1, 2, 3]
    w.submit(write, ["boom"])
    with pytest.raises(RuntimeError, match="store down"):
        w.wait()
    w.wait()  # reported once
    w.close()


@pytest.mark.parametrize("behind", [True, False], ids=["writer-thread", "stream-thread"])
def test_a_failed_alert_store_stops_the_drain_and_the_replay_stores_it_once(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, behind: bool
) -> None:
    """Transitions are stored on the stream's thread, or behind it on the alert writer's (a
    step's many): a failed store surfaces by the end of the drain either way (the checkpoint is
    not taken past it), and after a restart the log's replay stores every alert once."""
    import sensorium.platform as platform_mod

    monkeypatch.setattr(platform_mod, "WRITER_MIN_TRANSITIONS", 1 if behind else 10**9)
    clock = FakeClock(T0 + 3600 * NS)
    p = Sensorium(make_settings(data_dir), clock=clock, background=False, rules=parse_rules(RULES))
    p.write(f"climate,device_id=a temperature=55 {T0}\nclimate,device_id=b temperature=20 {T0}")
    assert p.alerts is not None
    real = p.alerts.apply
    monkeypatch.setattr(p.alerts, "apply", lambda ts: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        p.process_stream()
    assert p.stream is not None and p.stream.checkpoint_offset == -1  # no checkpoint covers that step
    monkeypatch.setattr(p.alerts, "apply", real)
    p.stream.error = "OSError: disk full"  # as the background loop records it: no final checkpoint
    p.close()
    p = Sensorium(make_settings(data_dir), clock=clock, background=False, rules=parse_rules(RULES))
    try:
        hot = [a for a in _alerts(p) if a["rule"] == "hot"]
        assert len(hot) == 1 and hot[0]["state"] == "firing" and "device_id=a" in hot[0]["series"]
        p.close()
        p = Sensorium(make_settings(data_dir), clock=clock, background=False, rules=parse_rules(RULES))
        assert [a["alert_id"] for a in _alerts(p) if a["rule"] == "hot"] == [hot[0]["alert_id"]]
    finally:
        p.close()
