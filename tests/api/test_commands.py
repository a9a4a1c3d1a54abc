"""Device commands over MQTT: published by Sensorium, received by a paho-mqtt subscriber."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensorium.platform import Sensorium
from tests.conftest import (
    MQTT_HOST,
    MQTT_PORT,
    FakeClock,
    free_port,
    make_settings,
    require_mosquitto,
)


def _client(tmp_path: Path, **commands: Any) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app

    settings = make_settings(tmp_path / "d", stream={"enabled": False}, parse_workers=0,
                             commands=commands or None)
    p = Sensorium(settings, clock=FakeClock(), background=False)
    try:
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            yield c
    finally:
        p.close()


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Any]:
    yield from _client(tmp_path)


class Subscriber:
    """A paho-mqtt client subscribed (QoS 1) to one topic, collecting what arrives."""

    def __init__(self, topic: str) -> None:
        from paho.mqtt.client import CallbackAPIVersion, Client

        self.got: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        c = self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"test-sub-{uuid.uuid4().hex[:8]}")
        c.on_message = lambda _c, _u, m: self.got.put((m.topic, m.payload, m.qos))
        c.on_subscribe = lambda *_a: subscribed.put(True)
        c.connect(MQTT_HOST, MQTT_PORT)
        c.loop_start()
        c.subscribe(topic, qos=1)
        assert subscribed.get(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_command_reaches_a_subscribed_device(client: Any) -> None:
    require_mosquitto()
    device = f"dev-{uuid.uuid4().hex[:8]}"
    sub = Subscriber(f"sensorium/devices/{device}/commands")
    try:
        r = client.post(f"/api/v1/devices/{device}/commands",
                        json={"command": "set", "params": {"interval_s": 60, "led": True}})
        assert r.status_code == 202, r.text
        rec = r.json()
        assert rec["status"] == "published" and rec["error"] is None
        assert rec["topic"] == f"sensorium/devices/{device}/commands"
        topic, payload, qos = sub.got.get(timeout=10)
    finally:
        sub.close()
    assert topic == rec["topic"] and qos == 1
    msg = orjson.loads(payload)
    assert msg == {
        "command_id": rec["command_id"], "device_id": device, "command": "set",
        "params": {"interval_s": 60, "led": True}, "issued_at": "2026-01-01T01:00:00.000000000Z",
    }
    listed = client.get(f"/api/v1/devices/{device}/commands").json()["commands"]
    assert [c["command_id"] for c in listed] == [rec["command_id"]]
    assert listed[0]["status"] == "published" and listed[0]["params"] == {"interval_s": 60, "led": True}
    assert client.get("/api/v1/devices/someone-else/commands").json() == {"commands": []}


def test_bad_bodies_are_400(client: Any) -> None:
    for body in (b"not json", b"[1]", b'{"params": {}}', b'{"command": ""}', b'{"command": 5}',
                 b'{"command": "set", "params": [1]}', b'{"command": "set", "extra": 1}'):
        r = client.post("/api/v1/devices/dev-1/commands", content=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["message"]
    r = client.post("/api/v1/devices/dev+1/commands", json={"command": "set"})
    assert r.status_code == 400 and "topic" in r.json()["message"]


def test_no_broker_is_503_and_the_failure_is_recorded(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    for c in _client(tmp_path, port=port, timeout_s=2.0):
        r = c.post("/api/v1/devices/dev-1/commands", json={"command": "reboot"})
        assert r.status_code == 503, r.text
        body = r.json()
        assert body["code"] == "broker_unavailable" and f"127.0.0.1:{port}" in body["message"]
        listed = c.get("/api/v1/devices/dev-1/commands").json()["commands"]
        assert len(listed) == 1 and listed[0]["status"] == "failed" and listed[0]["error"]
        assert listed[0]["command_id"] == body["command_id"]


def test_the_cli_sends_a_command_and_reports_a_missing_broker(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from sensorium.cli.command import parse_params
    from sensorium.cli.main import app

    assert parse_params(["interval_s=60", "mode=eco", "on=true"]) == {"interval_s": 60, "mode": "eco", "on": True}
    runner = CliRunner()
    port = free_port()
    cfg = tmp_path / "s.toml"
    cfg.write_text(f"[commands]\nport = {port}\ntimeout_s = 1.0\n")
    r = runner.invoke(app, ["command", "dev-1", "reboot", "--data-dir", str(tmp_path / "d"), "--config", str(cfg)])
    assert r.exit_code != 0 and "no MQTT broker reachable" in str(r.exception)
    require_mosquitto()
    device = f"dev-{uuid.uuid4().hex[:8]}"
    sub = Subscriber(f"sensorium/devices/{device}/commands")
    try:
        r = runner.invoke(app, ["command", device, "set", "--param", "interval_s=30", "--format", "json",
                                "--data-dir", str(tmp_path / "d")])
        assert r.exit_code == 0, r.output
        _topic, payload, _qos = sub.got.get(timeout=10)
    finally:
        sub.close()
    assert orjson.loads(payload)["params"] == {"interval_s": 30}
    assert orjson.loads(r.output)["status"] == "published"


def test_an_alert_commands_its_device(tmp_path: Path) -> None:
    """`[[alerts.commands]]`: a rule firing sends a command to the device named by the alert."""
    require_mosquitto()
    from sensorium.rules.loader import parse_rules
    from tests.conftest import T0

    device = f"dev-{uuid.uuid4().hex[:8]}"
    rules = parse_rules('[[rules]]\nname = "hot"\nkind = "threshold"\nmeasurement = "climate"\n'
                        'field = "temperature"\nabove = { critical = 50 }\ndeadband = 2\n')
    settings = make_settings(
        tmp_path / "d", parse_workers=0, detect={"enabled": False},
        alerts={"log": False, "commands": [{"rule": "hot*", "command": "off", "params": {"relay": 1}}]},
    )
    sub = Subscriber(f"sensorium/devices/{device}/commands")
    p = Sensorium(settings, clock=FakeClock(T0 + 3600 * 10**9), background=False, rules=rules)
    try:
        p.write("\n".join(f"climate,device_id={device} temperature={v} {T0 + i * 10**9}"
                          for i, v in enumerate([20.0, 21.0, 55.0, 56.0])))
        p.process_stream()
        assert p.dispatcher is not None
        assert p.dispatcher.deliver_due() == 1
        topic, payload, qos = sub.got.get(timeout=10)
    finally:
        sub.close()
        p.close()
    msg = orjson.loads(payload)
    assert topic == f"sensorium/devices/{device}/commands" and qos == 1
    assert msg["device_id"] == device and msg["command"] == "off"
    assert msg["params"]["relay"] == 1 and msg["params"]["rule"] == "hot"
    assert msg["params"]["idempotency_key"].endswith(":1")


def test_run_sync_works_inside_a_running_event_loop() -> None:
    """Synchronous callers inside an event loop (a notebook, Playwright's sync API) still get the
    result, where asyncio.run would refuse."""
    import asyncio

    from sensorium.devices.commands import run_sync

    async def value() -> int:
        await asyncio.sleep(0)
        return 42

    async def outer() -> int:
        return run_sync(value())

    assert run_sync(value()) == 42
    assert asyncio.run(outer()) == 42
