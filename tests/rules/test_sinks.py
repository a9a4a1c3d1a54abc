"""Alert notifications: the durable outbox against a real HTTP receiver and a real Mosquitto."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensorium.config import AlertSettings, MqttSinkSettings, WebhookSinkSettings
from sensorium.errors import ConfigError
from sensorium.rules._sink import backoff_s
from sensorium.rules.alerts import AlertStore
from sensorium.rules.sinks import (
    DeliveryError,
    Dispatcher,
    LogSink,
    MqttSink,
    WebhookSink,
    build_sinks,
    format_topic,
)
from tests.conftest import MQTT_HOST, MQTT_PORT, FakeClock, free_port, require_mosquitto
from tests.rules.test_alerts import tr

# -- real parts --------------------------------------------------------------------------------------


class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records each POST and answers ``fail_status``
    (with ``fail_body``) to the first ``fail_first`` of them, 200 after."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = 0
        self.fail_status = 503
        self.fail_body = "try later"
        self.fail_headers: dict[str, str] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
                    )
                    failing = len(receiver.requests) <= receiver.fail_first
                status = receiver.fail_status if failing else 200
                out = (receiver.fail_body if failing else "ok").encode()
                self.send_response(status)
                for k, v in (receiver.fail_headers if failing else {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=secret"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def keys(self) -> list[str]:
        with self.lock:
            return [r["headers"]["Idempotency-Key"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()






def hook(url: str, **kw: Any) -> WebhookSinkSettings:
    kw.setdefault("timeout_s", 2.0)
    kw.setdefault("max_attempts", 4)
    kw.setdefault("backoff_initial_s", 1.0)
    kw.setdefault("backoff_max_s", 3.0)
    return WebhookSinkSettings(url=url, **kw)


@pytest.fixture
def make_dispatcher(tmp_path: Path, clock: FakeClock) -> Iterator[Any]:
    made: list[Dispatcher] = []

    def make(settings: AlertSettings, **kw: Any) -> Dispatcher:
        kw.setdefault("clock", clock)
        kw.setdefault("jitter", 0.0)
        d = Dispatcher(tmp_path / "deliveries.sqlite", settings, **kw)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def only_webhook(url: str, **kw: Any) -> AlertSettings:
    return AlertSettings(log=False, webhooks=(hook(url, **kw),))


# -- webhook -----------------------------------------------------------------------------------------


def test_webhook_retries_with_backoff_then_succeeds_with_one_key(
    receiver: Receiver, make_dispatcher: Any, clock: FakeClock
) -> None:
    receiver.fail_first = 2
    d = make_dispatcher(only_webhook(receiver.url))
    t = tr(1)
    assert d.enqueue([t]) == 1
    assert d.deliver_due() == 1
    (p,) = d.pending()
    assert p["attempts"] == 1 and "HTTP 503: try later" in p["last_error"]
    assert p["next_attempt_ns"] == clock.now + 1_000_000_000
    assert "secret" not in p["last_error"]  # the query string stays out of errors
    assert d.deliver_due() == 0  # not due yet
    clock.advance(1)
    assert d.deliver_due() == 1
    assert d.pending()[0]["next_attempt_ns"] == clock.now + 2_000_000_000  # doubled
    clock.advance(2)
    assert d.deliver_due() == 1
    assert d.pending() == [] and d.dead_letters() == []
    assert receiver.keys() == [t.key] * 3
    for r in receiver.requests:
        assert r["headers"]["Content-Type"] == "application/json"
        assert r["body"] == t.to_dict()
        assert r["path"] == "/hook?token=secret"
    (done,) = d.delivered()
    assert done["attempts"] == 3 and done["payload"] == t.to_dict()
    (name,) = d.sinks
    assert d.counts() == {name: {"pending": 0, "delivered": 1, "dead": 0}}


def test_webhook_permanent_4xx_is_dead_at_once(receiver: Receiver, make_dispatcher: Any) -> None:
    receiver.fail_first, receiver.fail_status, receiver.fail_body = 99, 404, "no such hook"
    d = make_dispatcher(only_webhook(receiver.url))
    d.enqueue([tr(1)])
    assert d.deliver_due() == 1
    (dead,) = d.dead_letters()
    assert dead["attempts"] == 1 and dead["state"] == "dead"
    assert "HTTP 404: no such hook" in dead["last_error"]
    assert d.pending() == []


@pytest.mark.parametrize("status", [408, 429])
def test_webhook_408_and_429_are_retried(
    receiver: Receiver, make_dispatcher: Any, clock: FakeClock, status: int
) -> None:
    receiver.fail_first, receiver.fail_status = 1, status
    receiver.fail_headers = {"Retry-After": "2"}
    d = make_dispatcher(only_webhook(receiver.url))
    d.enqueue([tr(1)])
    d.deliver_due()
    (p,) = d.pending()
    assert p["next_attempt_ns"] == clock.now + 2_000_000_000  # Retry-After beat the 1 s backoff
    clock.advance(2)
    d.deliver_due()
    assert len(d.delivered()) == 1


def test_max_attempts_makes_a_dead_letter_with_the_last_error(
    receiver: Receiver, make_dispatcher: Any, clock: FakeClock
) -> None:
    receiver.fail_first, receiver.fail_status, receiver.fail_body = 99, 500, "boom"
    d = make_dispatcher(only_webhook(receiver.url, max_attempts=3))
    d.enqueue([tr(1)])
    delays = []
    for _ in range(3):
        clock.advance(10)
        before = clock.now
        d.deliver_due()
        if d.pending():
            delays.append((d.pending()[0]["next_attempt_ns"] - before) / 1e9)
    assert delays == [1.0, 2.0]
    (dead,) = d.dead_letters()
    assert dead["attempts"] == 3 and "HTTP 500: boom" in dead["last_error"]
    assert len(receiver.requests) == 3
    # an operator can put it back
    receiver.fail_first = 0
    assert d.retry_dead() == 1
    d.deliver_due()
    assert len(d.delivered()) == 1 and d.dead_letters() == []


def test_connection_errors_are_retried(make_dispatcher: Any, clock: FakeClock) -> None:
    d = make_dispatcher(only_webhook(f"http://127.0.0.1:{free_port()}/x", max_attempts=2))
    d.enqueue([tr(1)])
    d.deliver_due()
    (p,) = d.pending()
    assert "ConnectError" in p["last_error"]
    clock.advance(5)
    d.deliver_due()
    assert "ConnectError" in d.dead_letters()[0]["last_error"]


def test_a_failing_sink_is_held_and_each_alert_keeps_its_order(
    receiver: Receiver, make_dispatcher: Any, clock: FakeClock
) -> None:
    receiver.fail_first = 1
    d = make_dispatcher(only_webhook(receiver.url))
    a1, a2 = tr(1), tr(2, state="resolved")
    b1 = tr(1, series="temp|device_id=d2")
    d.enqueue([a1, a2, b1])
    assert d.deliver_due() == 1  # a1 failed: the sink is held, nothing else is tried
    clock.advance(1)
    assert d.deliver_due() == 3  # a1 again, then b1; a2 only once a1 is delivered
    assert receiver.keys() == [a1.key, a1.key, b1.key, a2.key]


def test_pending_deliveries_survive_a_restart(
    receiver: Receiver, tmp_path: Path, clock: FakeClock
) -> None:
    settings = only_webhook(receiver.url)
    with Dispatcher(tmp_path / "d.sqlite", settings, clock=clock) as d:
        d.enqueue([tr(1), tr(2)])
    assert receiver.requests == []
    # a new process: the real clock and the delivery thread
    d2 = Dispatcher(tmp_path / "d.sqlite", settings, clock=time.time_ns)
    try:
        assert len(d2.pending()) == 2
        d2.start()
        deadline = time.monotonic() + 10
        while len(receiver.keys()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.keys() == [tr(1).key, tr(2).key]
        deadline = time.monotonic() + 5
        while d2.pending() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert d2.pending() == [] and d2.error is None
        # the running thread picks up new work at once
        d2.enqueue([tr(3, state="resolved")])
        deadline = time.monotonic() + 5
        while len(receiver.keys()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.keys()[-1] == tr(3).key
    finally:
        d2.close()


def test_crash_replay_delivers_each_key_once(
    receiver: Receiver, tmp_path: Path, clock: FakeClock
) -> None:
    settings = only_webhook(receiver.url)
    ts = [tr(1), tr(2, severity="critical"), tr(1, series="temp|device_id=d2")]
    with (
        AlertStore(tmp_path / "alerts.sqlite", clock=clock) as store,
        Dispatcher(tmp_path / "out.sqlite", settings, clock=clock) as d,
    ):
        assert d.enqueue(store.apply(ts)) == 3
        d.deliver_due()
        assert d.enqueue(store.apply(ts)) == 0  # re-derived: nothing new
    # "after the crash": new processes replay the log and re-derive the same transitions
    with (
        AlertStore(tmp_path / "alerts.sqlite", clock=clock) as store,
        Dispatcher(tmp_path / "out.sqlite", settings, clock=clock) as d,
    ):
        assert store.apply(ts) == []
        assert d.enqueue(ts) == 0  # even re-enqueued whole, no key is queued twice
        more = [tr(3, state="resolved")]
        assert d.enqueue(store.apply(ts + more)) == 1
        d.deliver_due()
    assert sorted(receiver.keys()) == sorted(t.key for t in ts + more)


def test_flapping_transitions_are_not_notified(receiver: Receiver, make_dispatcher: Any) -> None:
    d = make_dispatcher(only_webhook(receiver.url))
    assert d.enqueue([tr(1, flapping=True), tr(1, series="x|device_id=d5")]) == 1
    d.deliver_due()
    assert receiver.keys() == [tr(1, series="x|device_id=d5").key]


def test_enqueue_queues_each_key_once_per_sink_in_call_and_sink_order(
    make_dispatcher: Any,
) -> None:
    class Named(LogSink):
        def __init__(self, name: str) -> None:
            self.name = name

    d = make_dispatcher(AlertSettings(log=False), sinks=[Named("b"), Named("a"), Named("c")])
    first = [tr(2, series="x|device_id=d2"), tr(1), tr(1, series="x|device_id=d3", flapping=True)]
    assert d.enqueue(first) == 6
    assert d.enqueue([tr(1, flapping=True)]) == 0  # only flapping: nothing to queue
    assert d.enqueue([]) == 0
    second = [tr(2), tr(1), tr(2, series="x|device_id=d2"), tr(3)]  # two known keys
    assert d.enqueue(second) == 6
    rows = d.pending(limit=100)
    keys = [tr(2, series="x|device_id=d2").key, tr(1).key, tr(2).key, tr(3).key]
    assert [(r["key"], r["sink"]) for r in rows] == [(k, s) for k in keys for s in "bac"]
    assert all(r["payload"] == tr(r["seq"], series=r["payload"]["series"]).to_dict() for r in rows)
    assert {r["state"] for r in rows} == {"pending"} and {r["attempts"] for r in rows} == {0}
    assert make_dispatcher(AlertSettings(log=False), sinks=[]).enqueue(second) == 0


def test_a_sink_that_raises_anything_is_a_failed_attempt(
    make_dispatcher: Any, clock: FakeClock
) -> None:
    class Broken(LogSink):
        name = "broken"
        max_attempts = 2

        def send(self, payload: Any, body: bytes) -> None:
            raise KeyError("bug")

    d = make_dispatcher(AlertSettings(log=False), sinks=[Broken()])
    d.enqueue([tr(1)])
    d.deliver_due()
    clock.advance(2)
    d.deliver_due()
    assert d.dead_letters()[0]["last_error"] == "KeyError: 'bug'"


def test_webhook_sink_names_are_stable_and_hide_secrets() -> None:
    a = WebhookSink(hook("http://user:pw@example.test:81/a?token=s"))
    b = WebhookSink(hook("http://user:pw@example.test:81/a?token=s"))
    try:
        assert a.name == b.name and a.name.startswith("webhook:")
        assert a.target == "http://example.test:81/a"
    finally:
        a.close()
        b.close()
    with pytest.raises(ConfigError):
        WebhookSink(hook("ftp://example.test/a"))


# -- log ---------------------------------------------------------------------------------------------


def test_log_sink_levels(make_dispatcher: Any, caplog: pytest.LogCaptureFixture) -> None:
    d = make_dispatcher(AlertSettings(log=True))
    assert list(d.sinks) == ["log"]
    d.enqueue([tr(1, severity="critical"), tr(2, state="resolved", value=20.5)])
    with caplog.at_level(logging.INFO, logger="sensorium.alerts"):
        d.deliver_due()
    recs = [r for r in caplog.records if r.name == "sensorium.alerts"]
    assert [r.levelno for r in recs] == [logging.WARNING, logging.INFO]
    first = recs[0].getMessage()
    for part in ("rule=too_hot", "severity=critical", "series=temp|device_id=d1", "value=31.0"):
        assert part in first
    assert f"key={tr(1).key}" in first
    assert "alert resolved" in recs[1].getMessage() and "value=20.5" in recs[1].getMessage()


# -- retry schedule ----------------------------------------------------------------------------------


def test_backoff_doubles_is_capped_and_jitter_is_reproducible() -> None:
    assert [backoff_s(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    j = [backoff_s(3, 0.5, 60.0, jitter=0.2, key=f"k{i}") for i in range(20)]
    assert all(1.6 <= x <= 2.0 for x in j) and len(set(j)) > 1
    assert j == [backoff_s(3, 0.5, 60.0, jitter=0.2, key=f"k{i}") for i in range(20)]


# -- MQTT --------------------------------------------------------------------------------------------


def test_topic_template() -> None:
    payload = tr(1, tags={"device_id": "dev+1/#", "site": "north"}).to_dict()
    assert format_topic("a/{rule}/{device_id}/{site}/{nope}/{field}", payload) == (
        "a/too_hot/dev_1__/north/_/temperature"
    )
    resolved = tr(2, state="resolved").to_dict()
    assert format_topic("{state}/{severity}", resolved) == "resolved/_"
    with pytest.raises(ConfigError):
        MqttSink(MqttSinkSettings(topic="a/{0}"))
    with pytest.raises(ConfigError):
        MqttSink(MqttSinkSettings(topic="a/{rule"))


def test_mqtt_publishes_to_the_templated_topic(make_dispatcher: Any) -> None:
    require_mosquitto()
    import aiomqtt

    prefix = f"sensorium-test/{uuid.uuid4().hex}"
    settings = AlertSettings(
        log=False,
        mqtt=MqttSinkSettings(
            host=MQTT_HOST, port=MQTT_PORT, topic=prefix + "/{rule}/{device_id}/{severity}", qos=1
        ),
    )
    d = make_dispatcher(settings)
    first = tr(1, tags={"device_id": "d+1"})
    second = tr(2, state="resolved", tags={"device_id": "d+1"})

    async def main() -> list[tuple[str, dict[str, Any]]]:
        got: list[tuple[str, dict[str, Any]]] = []
        async with aiomqtt.Client(MQTT_HOST, MQTT_PORT) as sub:
            await sub.subscribe(prefix + "/#", qos=1)
            d.enqueue([first])
            await asyncio.to_thread(d.deliver_due)
            # the connection is kept; drop it under the sink: the next publish reconnects
            sink = d.sinks["mqtt"]
            assert sink._client is not None
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(
                    sink._client.__aexit__(None, None, None), sink._loop
                )
            )
            d.enqueue([second])
            await asyncio.to_thread(d.deliver_due)
            async with asyncio.timeout(10):
                async for msg in sub.messages:
                    got.append((str(msg.topic), orjson.loads(bytes(msg.payload))))  # type: ignore[arg-type]
                    if len(got) == 2:
                        break
        return got

    got = asyncio.run(main())
    assert got == [
        (f"{prefix}/too_hot/d_1/warning", first.to_dict()),
        (f"{prefix}/too_hot/d_1/_", second.to_dict()),
    ]
    assert len(d.delivered()) == 2 and d.pending() == []


def test_mqtt_broker_down_is_retried(make_dispatcher: Any, clock: FakeClock) -> None:
    settings = AlertSettings(
        log=False, mqtt=MqttSinkSettings(host="127.0.0.1", port=free_port(), max_attempts=2)
    )
    d = make_dispatcher(settings)
    d.enqueue([tr(1)])
    d.deliver_due()
    (p,) = d.pending()
    assert p["attempts"] == 1 and p["last_error"].startswith("MQTT mqtt://127.0.0.1:")
    clock.advance(5)
    d.deliver_due()
    assert len(d.dead_letters()) == 1


def test_build_sinks_from_settings() -> None:
    sinks = build_sinks(
        AlertSettings(
            log=True,
            webhooks=(hook("http://127.0.0.1:9/a"), hook("http://127.0.0.1:9/b")),
            mqtt=MqttSinkSettings(),
        )
    )
    try:
        assert [type(s).__name__ for s in sinks] == [
            "LogSink",
            "WebhookSink",
            "WebhookSink",
            "MqttSink",
        ]
        assert len({s.name for s in sinks}) == 4
    finally:
        for s in sinks:
            s.close()
    assert issubclass(DeliveryError, Exception)
