"""The MQTT alert sink: publishes each alert change as JSON with aiomqtt, over one kept connection.

aiomqtt is asyncio-only; the sink runs its own event loop in a daemon thread and the dispatcher
thread hands each publish to it. A failed publish or connection drops the connection; the next
attempt reconnects. QoS 1 and 2 wait for the broker's acknowledgement, so "delivered" means the
broker has the message (delivery stays at-least-once: the payload carries the idempotency ``key``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import string
import threading
from collections.abc import Coroutine, Mapping
from typing import Any

from sensorium.config import MqttSinkSettings
from sensorium.errors import ConfigError
from sensorium.rules._sink import DeliveryError

#: Seconds to connect to the broker, or to have a publish acknowledged.
DEFAULT_MQTT_TIMEOUT_S = 10.0
#: Characters that may not appear in a substituted topic value (wildcards, level separator, NUL).
_TOPIC_UNSAFE = str.maketrans({"+": "_", "#": "_", "/": "_", "\x00": "_"})


class _Fields(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "_"


def topic_fields(payload: Mapping[str, Any]) -> dict[str, str]:
    """The values a topic template may use: the alert's tags, then ``rule``, ``state``,
    ``severity``, ``measurement``, ``field``, ``series``, ``alert_id`` and ``bucket`` (these win
    over tags of the same name). Each is made topic-safe (``+ # /`` become ``_``; empty → ``_``)."""
    raw: dict[str, Any] = dict(payload.get("tags") or {})
    for k in ("rule", "state", "severity", "measurement", "field", "series", "alert_id", "bucket"):
        raw[k] = payload.get(k)
    return {k: _safe(v) for k, v in raw.items()}


def format_topic(template: str, payload: Mapping[str, Any]) -> str:
    """``template`` filled from ``payload`` (``Transition.to_dict()``); unknown names give ``_``."""
    return template.format_map(_Fields(topic_fields(payload)))


def _safe(value: Any) -> str:
    s = "" if value is None else str(value)
    return s.translate(_TOPIC_UNSAFE) or "_"


class MqttSink:
    """Publishes to ``settings.topic`` (see :func:`format_topic`) at ``settings.qos``."""

    backoff_initial_s = 0.5
    backoff_max_s = 60.0

    def __init__(
        self,
        settings: MqttSinkSettings,
        *,
        name: str = "mqtt",
        timeout_s: float = DEFAULT_MQTT_TIMEOUT_S,
    ) -> None:
        try:
            import aiomqtt  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the installation
            raise ConfigError("the MQTT alert sink needs aiomqtt: pip install aiomqtt") from None
        _check_template(settings.topic)
        self.name = name
        self.settings = settings
        self.max_attempts = settings.max_attempts
        self.target = f"mqtt://{settings.host}:{settings.port}"
        self._timeout = timeout_s
        self._client: Any = None
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def send(self, payload: Mapping[str, Any], body: bytes) -> None:
        topic = format_topic(self.settings.topic, payload)
        self._run(self._publish(topic, body))

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._disconnect(), loop).result(self._timeout)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(loop.shutdown_default_executor(), loop).result(
                self._timeout
            )
        loop.call_soon_threadsafe(loop.stop)
        thread.join(self._timeout)
        if not thread.is_alive():
            loop.close()

    # -- the loop thread -----------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        loop = self._ensure_loop()
        fut = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            fut.result(self._timeout * 2 + 1)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise DeliveryError(f"MQTT publish to {self.target} timed out") from None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"sensorium-{self.name}", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    async def _publish(self, topic: str, body: bytes) -> None:
        import aiomqtt

        try:
            if self._client is not None and _dropped(self._client):
                await self._disconnect()  # the broker went away since the last publish
            if self._client is None:
                client = aiomqtt.Client(
                    self.settings.host, self.settings.port, timeout=self._timeout
                )
                await client.__aenter__()
                self._client = client
            await self._client.publish(topic, body, qos=self.settings.qos)
        except aiomqtt.MqttError as exc:
            await self._disconnect()
            raise DeliveryError(f"MQTT {self.target}: {exc}") from None

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        fut = getattr(client, "_disconnected", None)
        if isinstance(fut, asyncio.Future) and fut.done() and not fut.cancelled():
            fut.exception()  # retrieved, so asyncio does not log it as never retrieved
        with contextlib.suppress(Exception):
            await client.__aexit__(None, None, None)


def _dropped(client: Any) -> bool:
    fut = getattr(client, "_disconnected", None)
    return isinstance(fut, asyncio.Future) and fut.done()


def _check_template(template: str) -> None:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        template.format_map(_Fields())
    except (ValueError, IndexError, KeyError, AttributeError) as exc:
        raise ConfigError(f"invalid MQTT topic template {template!r}: {exc}") from None
    if any(not n or not n.isidentifier() for n in names):
        raise ConfigError(f"invalid MQTT topic template {template!r}: use {{name}} fields only")
