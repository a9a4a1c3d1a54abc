"""Automations: telemetry conditions command a device over the real Mosquitto; schedules run on an
injected clock; alert triggers; time windows; cooldowns; nothing runs twice after a crash."""

from __future__ import annotations

import os
import queue
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensorium.automations.loader import check_text
from sensorium.platform import Sensorium
from tests.api.test_commands import Subscriber
from tests.conftest import T0, FakeClock, make_settings, require_mosquitto

NS = 1_000_000_000
H = 3600 * NS


def _settings(tmp_path: Path, text: str, **kw: Any) -> Any:
    f = tmp_path / "automations.toml"
    f.write_text(text)
    return make_settings(tmp_path / "data", parse_workers=0, automations={"file": f},
                         stream={"rollups": [], "lateness_s": 0}, **kw)


def _motion(device_room: str, values: list[tuple[int, int]]) -> str:
    return "\n".join(f"motion,room={device_room},device_id=pir-1 detected={v}i {t}" for t, v in values)


def test_motion_after_10pm_turns_the_light_on_over_mqtt_once_even_after_a_crash(tmp_path: Path) -> None:
    require_mosquitto()
    light = f"light-{uuid.uuid4().hex[:8]}"
    text = f"""
[[automations]]
name = "hallway-light"
trigger = {{ kind = "telemetry", measurement = "motion", field = "detected", tags = {{ room = "hallway" }}, above = 0.5 }}
conditions = [{{ kind = "time", after = "22:00", before = "06:00" }}]
[[automations.actions]]
kind = "command"
device_id = "{light}"
command = "turn_on"
params = {{ level = 80, reason = "motion in {{room}}" }}
"""
    settings = _settings(tmp_path, text)
    clock = FakeClock(T0 + 23 * H)
    sub = Subscriber(f"sensorium/devices/{light}/commands")
    try:
        p = Sensorium(settings, clock=clock, background=False)
        # 12:00 (outside the window) motion, then at 23:00: off, on, on, off, on -> two rising edges
        day = T0 + 12 * H
        night = T0 + 23 * H
        body = _motion("hallway", [(day, 1), (day + NS, 0)]) + "\n" + _motion(
            "hallway", [(night + i * NS, v) for i, v in enumerate([0, 1, 1, 0, 1])]
        ) + "\n" + _motion("kitchen", [(night + 9 * NS, 1)])
        assert p.write(body).accepted_rows == 8
        # a telemetry automation reads the stream's values (with names); see the schedule test
        assert p.automation_stage is not None and p.automation_stage.needs_values()
        p.process_stream()
        assert p.automation_outbox is not None
        p.automation_outbox.deliver_due()
        got = [orjson.loads(sub.got.get(timeout=10)[1]) for _ in range(2)]
        assert [g["command"] for g in got] == ["turn_on", "turn_on"]
        assert got[0]["params"]["level"] == 80 and got[0]["params"]["reason"] == "motion in hallway"
        assert got[0]["params"]["automation"] == "hallway-light"
        assert len({g["params"]["idempotency_key"] for g in got}) == 2
        runs = p.automation_runs()
        assert [r["status"] for r in runs] == ["ok", "ok"]
        assert {r["trigger"]["time_ns"] for r in runs} == {night + NS, night + 4 * NS}
        # crash before any stream checkpoint: the restart replays the points through the stream
        # again and re-derives both runs, with the same keys
        assert p.stream is not None and p.stream.checkpoint_offset < 0
        os.close(p._lock_fd)  # type: ignore[arg-type]
        p.wal.close()
        p2 = Sensorium(settings, clock=clock, background=False)
        try:
            p2.process_stream()
            assert p2.automation_stage is not None and p2.automation_stage.runs == 2  # re-derived
            assert p2.automation_outbox is not None
            p2.automation_outbox.deliver_due()
            assert len(p2.automation_runs()) == 2
            with pytest.raises(queue.Empty):  # nothing more reaches the device
                sub.got.get(timeout=1.5)
        finally:
            p2.close()
    finally:
        sub.close()


def test_schedules_run_on_the_injected_clock_and_missed_times_coalesce(tmp_path: Path) -> None:
    text = """
[[automations]]
name = "evening-report"
timezone = "Europe/Paris"
trigger = { kind = "schedule", cron = "0 22 * * *" }
actions = [{ kind = "notify", user = "alice", title = "Evening", message = "It is {time}" }]
"""
    settings = _settings(tmp_path, text)
    clock = FakeClock(T0 + 20 * H + 30 * 60 * NS)  # 21:30 Paris (UTC+1 in January)
    p = Sensorium(settings, clock=clock, background=False)
    try:
        assert p.automations is not None and p.automation_outbox is not None
        # schedules only: the stream skips the stage's values (and makes no names for it)
        assert p.automation_stage is not None and not p.automation_stage.needs_values()
        p.process_stream()  # first tick: schedules start now
        clock.advance(20 * 60)  # 21:50
        p.process_stream()
        clock.advance(15 * 60)  # 22:05 Paris = 21:05 UTC
        p.process_stream()
        p.automation_outbox.deliver_due()
        notes = p.automations.notifications(user="alice")
        assert notes["total"] == 1 and notes["unread"] == 1
        assert notes["notifications"][0]["message"] == "It is 2026-01-01T21:00:00Z"
        clock.advance(3 * 24 * 3600)  # three evenings missed: one run, at the latest
        p.process_stream()
        p.automation_outbox.deliver_due()
        notes = p.automations.notifications(user="alice")
        assert notes["total"] == 2
        assert notes["notifications"][0]["message"] == "It is 2026-01-04T21:00:00Z"
        assert p.automations.notifications(user="bob")["total"] == 0
        assert p.automations.mark_read([notes["notifications"][0]["id"]]) == 1
        assert p.automations.notifications(user="alice", unread=True)["total"] == 1
    finally:
        p.close()


def test_alert_triggers_and_cooldown(tmp_path: Path) -> None:
    text = """
[[automations]]
name = "page-on-critical"
cooldown = "10m"
trigger = { kind = "alert", rule = "hot", severity = "critical" }
actions = [{ kind = "notify", title = "{rule} on {device_id}", message = "{message}" }]
"""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "hot"\nkind = "threshold"\nmeasurement = "climate"\n'
                     'field = "temperature"\nabove = { warning = 40, critical = 60 }\ndeadband = 1\n')
    settings = _settings(tmp_path, text, alerts={"flap_window_s": 0, "log": False})
    settings = settings.model_copy(update={"stream": settings.stream.model_copy(update={"rules_file": rules})})
    p = Sensorium(settings, clock=FakeClock(), background=False)
    try:
        temps = [20, 45, 20, 70, 20, 75, 20]  # warning (ignored), critical, critical again 2 s later
        body = "\n".join(f"climate,device_id=d1 temperature={v} {T0 + i * NS}" for i, v in enumerate(temps))
        body += "\n" + "\n".join(f"climate,device_id=d2 temperature={v} {T0 + i * NS}" for i, v in enumerate(temps))
        p.write(body)
        p.process_stream()
        assert p.automation_outbox is not None and p.automations is not None
        p.automation_outbox.deliver_due()
        notes = p.automations.notifications()["notifications"]
        assert sorted(n["title"] for n in notes) == ["hot on d1", "hot on d2"]  # cooldown per device
    finally:
        p.close()


def test_files_are_checked_with_line_numbers() -> None:
    text = """[[automations]]
name = "bad"
trigger = { kind = "schedule", cron = "every day" }
actions = [{ kind = "notify" }]

[[automations]]
name = "bad2"
trigger = { kind = "telemetry", measurement = "m", field = "f" }
actions = []
"""
    autos, problems = check_text(text)
    assert autos == []
    lines = {p.line for p in problems}
    assert 3 in lines and 8 in lines
    assert any("cron" in p.message for p in problems)
    assert any("exactly one of above, below, equals" in p.message for p in problems)
