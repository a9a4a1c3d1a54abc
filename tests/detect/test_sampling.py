"""Sampling-rate advice: the algorithm, the HTTP routes, and publishing to a real Mosquitto."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl
import pytest

from sensorium.detect.sampling import advise, config_payload, parse_tolerance
from sensorium.errors import BadRequest
from sensorium.platform import Sensorium
from tests.conftest import (
    MQTT_HOST,
    MQTT_PORT,
    T0,
    FakeClock,
    free_port,
    make_settings,
    require_mosquitto,
)

NS = 1_000_000_000




def _series(device: str, field: str, t_s: np.ndarray, v: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {"device_id": device, "field": field, "time": T0 + (t_s * NS).astype(np.int64), "value": v}
    )


def _frames() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    t = np.arange(0, 4 * 3600, 1.0)  # 4 h at 1 Hz
    slow = 20 + 10 * np.sin(2 * np.pi * t / 86400)  # a daily cycle: smooth
    fast = 20 + 2 * np.sin(2 * np.pi * t / 90)  # a 90-s cycle: real fast dynamics
    noisy = 20 + rng.normal(0, 0.5, t.size)  # white noise around a constant
    return pl.concat(
        [
            _series("slow", "temperature", t, slow),
            _series("fast", "temperature", t, fast + rng.normal(0, 0.01, t.size)),
            _series("noisy", "temperature", t, noisy),
            _series("mixed", "temperature", t, slow),
            _series("mixed", "humidity", t, 50 + 5 * np.sin(2 * np.pi * t / 120)),  # 2-min cycle
        ]
    )


def test_slow_smooth_series_gets_a_longer_interval_than_a_fast_one() -> None:
    out = advise(_frames(), tolerance="1%")
    by = {(r["device_id"], r["field"]): r for r in out.to_dicts()}
    slow, fast = by[("slow", "temperature")], by[("fast", "temperature")]
    assert slow["current_interval_s"] == 1.0 == fast["current_interval_s"]
    assert slow["advised_interval_s"] == 900  # the longest rung: a daily cycle is near-linear
    assert fast["advised_interval_s"] < 10 < 900
    assert slow["expected_error"] <= slow["tolerance"] and fast["expected_error"] <= fast["tolerance"]
    # a device's advice is the shortest over its fields
    hum = by[("mixed", "humidity")]
    assert 1 < hum["advised_interval_s"] < 60
    assert by[("mixed", "temperature")]["device_interval_s"] == hum["advised_interval_s"]
    assert by[("mixed", "temperature")]["advised_interval_s"] == 900


def test_white_noise_is_not_signal_unless_asked() -> None:
    with_noise = advise(_frames(), tolerance="1%")
    bare = advise(_frames(), tolerance="1%", noise=False)
    noisy = with_noise.filter(pl.col("device_id") == "noisy").row(0, named=True)
    assert noisy["noise_std"] == pytest.approx(0.5, rel=0.05)
    assert noisy["advised_interval_s"] == 900  # faster sampling would only record noise
    # held to the bare tolerance, noise needs every sample: the noisy series is now the fast one
    bare_noisy = bare.filter(pl.col("device_id") == "noisy").row(0, named=True)
    assert bare_noisy["advised_interval_s"] == 1.0 and bare_noisy["noise_std"] == 0.0
    assert bare.filter(pl.col("device_id") == "slow")["advised_interval_s"].item() == 900


def test_absolute_tolerance_and_max_statistic() -> None:
    loose = advise(_frames(), tolerance=5.0, stat="max", noise=False)  # 10 sigma of the noise
    noisy = loose.filter(pl.col("device_id") == "noisy").row(0, named=True)
    assert noisy["advised_interval_s"] == 900 and noisy["expected_error"] <= 5.0
    assert parse_tolerance("2%") == (0.02, True) and parse_tolerance("0.5") == (0.5, False)
    for bad in ("x", "-1", "nan%"):
        with pytest.raises(BadRequest):
            parse_tolerance(bad)


# -- HTTP ---------------------------------------------------------------------------------------


def _write_devices(client: Any) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(0, 3600, 2)  # the last hour (the clock reads T0 + 1 h), every 2 s
    ts = T0 + t.astype(np.int64) * NS
    smooth = 20 + 3 * np.sin(2 * np.pi * t / 86400)
    jumpy = 20 + 2 * np.sin(2 * np.pi * t / 60) + rng.normal(0, 0.01, t.size)
    lines = [f"climate,device_id=calm temperature={v:.6f} {s}" for s, v in zip(ts, smooth, strict=True)]
    lines += [f"climate,device_id=jumpy temperature={v:.6f} {s}" for s, v in zip(ts, jumpy, strict=True)]
    r = client.post("/api/v2/write", content="\n".join(lines))
    assert r.status_code == 204, r.text


def test_sampling_route_200_404_400(client: Any) -> None:
    _write_devices(client)
    r = client.get("/api/v1/devices/calm/sampling", params={"hours": 1})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["device_id"] == "calm" and body["sampling_interval_s"] == 900
    (row,) = body["fields"]
    assert row["field"] == "temperature" and row["current_interval_s"] == 2.0
    jumpy = client.get("/api/v1/devices/jumpy/sampling", params={"hours": 1}).json()
    assert jumpy["sampling_interval_s"] == 2.0
    assert client.get("/api/v1/devices/nobody/sampling").status_code == 404
    for params in ({"hours": 0}, {"hours": "abc"}, {"hours": "nan"}, {"tolerance": "lots"},
                   {"stat": "mean"}, {"hours": 10**6}):
        r = client.get("/api/v1/devices/calm/sampling", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["message"]
    r = client.post("/api/v1/devices/dev+1/sampling/publish")
    assert r.status_code == 400 and "topic" in r.json()["message"]


def test_publish_without_a_broker_is_503(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app

    port = free_port()  # nothing listens there
    settings = make_settings(tmp_path / "d", alerts={"mqtt": {"host": "127.0.0.1", "port": port}})
    p = Sensorium(settings, clock=FakeClock(), background=False)
    try:
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            _write_devices(c)
            r = c.post("/api/v1/devices/calm/sampling/publish", params={"hours": 1})
            assert r.status_code == 503, r.text
            assert f"127.0.0.1:{port}" in r.json()["message"]
            assert c.post("/api/v1/devices/nobody/sampling/publish").status_code == 404
    finally:
        p.close()


async def _read_retained(topic: str, timeout: float = 5.0) -> tuple[bytes, bool]:
    import aiomqtt

    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as sub:
        await sub.subscribe(topic, qos=1)
        async with asyncio.timeout(timeout):
            async for msg in sub.messages:
                return bytes(msg.payload), bool(msg.retain)  # type: ignore[arg-type]
    raise AssertionError("no message")


async def _clear_retained(topic: str) -> None:
    import aiomqtt

    async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as c:
        await c.publish(topic, b"", qos=1, retain=True)


def test_publish_is_a_retained_message_on_mosquitto(client: Any) -> None:
    require_mosquitto()
    device = f"calm-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(1)
    t = np.arange(0, 3600, 5)
    body = "\n".join(
        f"climate,device_id={device} temperature={20 + 2 * np.sin(s / 40000):.6f},"
        f"humidity={50 + 5 * np.sin(2 * np.pi * s / 60) + rng.normal(0, 0.01):.4f} {T0 + int(s) * NS}"
        for s in t
    )
    assert client.post("/api/v2/write", content=body).status_code == 204
    topic = f"sensorium/devices/{device}/config"
    try:
        r = client.post(f"/api/v1/devices/{device}/sampling/publish", params={"hours": 1})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["topic"] == topic and out["retain"] is True and out["qos"] == 1
        # subscribing after the publish still gets it: the broker retained it
        payload, retained = asyncio.run(_read_retained(topic))
        assert retained
        msg = orjson.loads(payload)
        assert msg == out["config"]
        assert msg["fields"] == {"temperature": 900.0, "humidity": 5.0}
        assert msg["sampling_interval_s"] == 5.0  # the fast humidity decides
        assert msg["advised_at"] == "2026-01-01T01:00:00Z"  # the platform clock
    finally:
        asyncio.run(_clear_retained(topic))


def test_config_payload_names_fields_by_measurement_when_ambiguous() -> None:
    advice = {
        "device_id": "d", "sampling_interval_s": 5.0, "tolerance": "1%", "advised_at": "x",
        "fields": [
            {"measurement": "a", "field": "t", "advised_interval_s": 5.0},
            {"measurement": "b", "field": "t", "advised_interval_s": 60.0},
            {"measurement": "b", "field": "h", "advised_interval_s": 30.0},
        ],
    }
    assert config_payload(advice)["fields"] == {"a.t": 5.0, "b.t": 60.0, "h": 30.0}
