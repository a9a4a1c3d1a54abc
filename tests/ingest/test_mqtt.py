"""The MQTT source against the real Mosquitto: paho-mqtt publishes at QoS 1, SQL reads it back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sensorium.config import MqttSourceSettings, MqttTopicSettings
from sensorium.errors import ConfigError
from sensorium.ingest.mqtt import MqttSource, TopicTemplate
from sensorium.platform import Sensorium
from tests.conftest import MQTT_HOST, MQTT_PORT, make_settings, require_mosquitto


class Publisher:
    """A paho-mqtt client publishing at QoS 1, each publish waited for (PUBACK)."""

    def __init__(self) -> None:
        from paho.mqtt.client import CallbackAPIVersion, Client

        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{uuid.uuid4().hex[:8]}")
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def prefix() -> str:
    return f"sensorium-test/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Sensorium]:
    s = Sensorium(make_settings(tmp_path / "d", stream={"enabled": False}, parse_workers=0), background=False)
    yield s
    s.close()


@pytest.fixture
def pub() -> Iterator[Publisher]:
    require_mosquitto()
    p = Publisher()
    yield p
    p.close()


def source_settings(prefix: str, **kw: Any) -> MqttSourceSettings:
    topics = kw.pop("topics", None) or (
        MqttTopicSettings(topic=f"{prefix}/lp/{{location}}/{{device_id}}", format="lp"),
        MqttTopicSettings(topic=f"{prefix}/json/{{location}}/{{device_id}}", format="json"),
        MqttTopicSettings(
            topic=f"{prefix}/value/{{location}}/{{device_id}}/{{measurement}}/{{field}}", format="value"
        ),
    )
    return MqttSourceSettings(
        name="test", host=MQTT_HOST, port=kw.pop("port", MQTT_PORT), client_id=f"sensorium-test-{uuid.uuid4().hex[:8]}",
        topics=topics, batch_max_ms=20, session_expiry_s=kw.pop("session_expiry_s", 60), **kw,
    )


def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def count(platform: Sensorium, measurement: str) -> int:
    if measurement not in platform.measurements("default"):
        return 0
    return int(platform.query(f"SELECT count(*) AS n FROM {measurement}")["n"][0].as_py())


@pytest.fixture
def running(platform: Sensorium, prefix: str) -> Iterator[Callable[..., MqttSource]]:
    started: list[MqttSource] = []

    def start(**kw: Any) -> MqttSource:
        src = MqttSource(platform, source_settings(prefix, **kw.pop("settings", {})), **kw)
        src.start()
        started.append(src)
        assert src.connected.wait(10), src.last_error
        return src

    yield start
    for s in started:
        s.stop()


def test_topic_template_derives_the_filter_and_the_tags() -> None:
    t = TopicTemplate("home/{location}/{device_id}/{sensor_type}")
    assert t.filter == "home/+/+/+"
    assert t.match("home/kitchen/dev-1/climate") == {
        "location": "kitchen", "device_id": "dev-1", "sensor_type": "climate"
    }
    assert t.match("home/kitchen/dev-1") is None
    assert t.match("office/kitchen/dev-1/climate") is None
    m = TopicTemplate("site/+/{device_id}/#")
    assert m.filter == "site/+/+/#"
    assert m.match("site/a/d9/x/y") == {"device_id": "d9"}
    for bad in ("a/{time}", "a/#/b", "a/x{y}", "a/{device_id}/{device_id}"):
        with pytest.raises(ConfigError):
            TopicTemplate(bad)


def test_value_payloads_need_a_measurement(platform: Sensorium) -> None:
    with pytest.raises(ConfigError, match="measurement"):
        MqttSource(platform, MqttSourceSettings(topics=(MqttTopicSettings(topic="a/{device_id}", format="value"),)))


def test_qos1_messages_are_stored_with_the_topic_tags(
    platform: Sensorium, pub: Publisher, prefix: str, running: Callable[..., MqttSource]
) -> None:
    src = running()
    # line protocol: a message of several lines; the topic's device_id wins over the payload's
    pub.publish(f"{prefix}/lp/kitchen/dev-1",
                "climate,device_id=spoofed temperature=21.5 1767225600000000000\n"
                "climate temperature=21.75 1767225601000000000")
    # JSON readings: device_id from the topic; an array is two readings
    pub.publish(f"{prefix}/json/hall/dev-2",
                b'[{"sensor_type": "climate", "measurement_type": "temperature", "value": 19,'
                b' "timestamp": "2026-01-01T00:00:00Z"}, {"sensor_type": "climate",'
                b' "measurement_type": "humidity", "value": 40, "timestamp": "2026-01-01T00:00:00Z"}]')
    # bare numbers: measurement and field from the topic, time of arrival
    for v in ("1013.5", "1013.25", "1013"):
        pub.publish(f"{prefix}/value/roof/dev-3/weather/pressure", v)
    # (two readings of one device and time become one row, as over HTTP)
    wait_for(lambda: count(platform, "climate") == 3 and count(platform, "weather") == 3)
    rows = platform.query(
        "SELECT device_id, location, temperature, humidity FROM climate ORDER BY device_id, time, humidity"
    ).to_pylist()
    assert rows == [
        {"device_id": "dev-1", "location": "kitchen", "temperature": 21.5, "humidity": None},
        {"device_id": "dev-1", "location": "kitchen", "temperature": 21.75, "humidity": None},
        {"device_id": "dev-2", "location": "hall", "temperature": 19.0, "humidity": 40.0},
    ]
    w = platform.query("SELECT device_id, location, pressure FROM weather ORDER BY time").to_pylist()
    assert [r["pressure"] for r in w] == [1013.5, 1013.25, 1013.0]
    assert {(r["device_id"], r["location"]) for r in w} == {("dev-3", "roof")}
    assert platform.registry.columns("default", "weather")["device_id"] == "tag"
    m = platform.metrics
    wait_for(lambda: m.mqtt_messages.labels("test")._value.get() == 5)
    assert m.mqtt_points.labels("test")._value.get() == 6
    assert m.mqtt_connected.labels("test")._value.get() == 1
    assert src.last_error is None


def test_a_bad_payload_is_a_dead_letter_and_its_neighbours_are_stored(
    platform: Sensorium, pub: Publisher, prefix: str, running: Callable[..., MqttSource]
) -> None:
    running()
    pub.publish(f"{prefix}/value/roof/dev-3/weather/pressure", "1000")
    pub.publish(f"{prefix}/value/roof/dev-3/weather/pressure", "not-a-number")
    pub.publish(f"{prefix}/json/hall/dev-2", b"{not json")
    pub.publish(f"{prefix}/lp/kitchen/dev-1", "climate temperature=oops 1767225600000000000")
    pub.publish(f"{prefix}/value/roof/dev-3/weather/pressure", "1001")
    pub.publish(f"{prefix}/json/hall/dev-2", b'{"sensor_type": "climate", "measurement_type": "temperature", "value": 20}')
    wait_for(lambda: platform.metrics.mqtt_messages.labels("test")._value.get() == 6)
    assert count(platform, "weather") == 2 and count(platform, "climate") == 1
    letters = platform.deadletters.list(limit=10)
    by_raw = {d["raw"]: d for d in letters}
    assert set(by_raw) == {"not-a-number", "{not json", "climate temperature=oops 1767225600000000000"}
    assert by_raw["not-a-number"]["reason"] == (
        f"payload is not a number (topic {prefix}/value/roof/dev-3/weather/pressure)"
    )
    assert by_raw["{not json"]["reason"].startswith("invalid JSON")
    assert f"(topic {prefix}/lp/kitchen/dev-1)" in by_raw["climate temperature=oops 1767225600000000000"]["reason"]
    assert all(d["source"].startswith("mqtt:test ") for d in letters)
    assert platform.metrics.mqtt_rejects.labels("test")._value.get() == 3


def test_an_unacknowledged_batch_is_redelivered_after_a_failed_write(
    platform: Sensorium, pub: Publisher, prefix: str, running: Callable[..., MqttSource]
) -> None:
    """A fault before the WAL append: nothing is acknowledged, the source reconnects (same
    persistent session), the broker redelivers, and each point is stored once."""
    calls: list[int] = []

    def crash_once(batch: list[Any]) -> None:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("injected crash before the WAL append")

    src = running(before_write=crash_once, settings={"backoff_initial_s": 0.05})
    pub.publish(f"{prefix}/lp/kitchen/dev-1", "climate temperature=1 1767225600000000000")
    wait_for(lambda: count(platform, "climate") == 1)
    pub.publish(f"{prefix}/lp/kitchen/dev-1", "climate temperature=2 1767225601000000000")
    wait_for(lambda: count(platform, "climate") == 2)
    assert len(calls) >= 2
    assert platform.metrics.mqtt_reconnects.labels("test")._value.get() == 1
    assert "injected crash" in (src.last_error or "")
    vals = platform.query("SELECT temperature FROM climate ORDER BY time")["temperature"].to_pylist()
    assert vals == [1.0, 2.0]


def test_messages_published_while_the_source_is_down_arrive_after_a_restart(
    platform: Sensorium, pub: Publisher, prefix: str
) -> None:
    """The persistent session: the broker queues QoS 1 messages for the source's client id."""
    settings = source_settings(prefix)
    first = MqttSource(platform, settings)
    first.start()
    assert first.connected.wait(10)
    first.stop()
    for i in range(5):
        pub.publish(f"{prefix}/value/roof/dev-3/weather/pressure", str(1000 + i))
    second = MqttSource(platform, settings)
    second.start()
    try:
        wait_for(lambda: count(platform, "weather") == 5)
    finally:
        second.stop()


def test_a_broker_that_is_down_is_retried_with_backoff(platform: Sensorium, prefix: str) -> None:
    from tests.conftest import free_port

    src = MqttSource(platform, source_settings(prefix, port=free_port(), backoff_initial_s=0.05, backoff_max_s=0.1))
    src.start()
    try:
        wait_for(lambda: platform.metrics.mqtt_reconnects.labels("test")._value.get() >= 3)
        assert not src.connected.is_set() and src.last_error
    finally:
        src.stop()
