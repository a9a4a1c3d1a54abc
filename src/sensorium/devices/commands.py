"""Device commands over MQTT: publish (QoS 1) and keep a record of each, with its outcome.

A command is published as JSON to ``settings.commands.topic`` (default
``sensorium/devices/{device_id}/commands``)::

    {"command_id": "…", "device_id": "dev-1", "command": "set", "params": {"interval_s": 60},
     "issued_at": "2026-01-01T00:00:00.000000000Z"}

"published" means the broker acknowledged it (PUBACK for QoS 1): the device receives it when it
is subscribed, or later if it holds a persistent session. Every attempt is recorded in
``commands.sqlite`` in the data directory (``published`` or ``failed`` with the error), so API
calls, alert sinks and automations leave the same trail. A broker that cannot be reached raises
:class:`BrokerUnavailable` (HTTP 503) after the failure is recorded.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import uuid
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from sensorium.config import CommandSettings
from sensorium.errors import BadRequest, ConfigError, SensoriumError

_TOPIC_UNSAFE = re.compile(r"[+#/\x00]")
MAX_COMMAND_LEN = 128
MAX_PARAMS_BYTES = 64 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    command TEXT NOT NULL,
    params TEXT NOT NULL,
    topic TEXT NOT NULL,
    status TEXT NOT NULL,          -- published | failed
    error TEXT,
    issued_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_device ON commands (device_id, issued_ns);
"""


class BrokerUnavailable(SensoriumError):
    """The MQTT broker for device commands cannot be reached."""

    status = 503
    code = "broker_unavailable"


def iso_ns(ns: int) -> str:
    """UTC nanoseconds as RFC 3339 with nanoseconds (``2026-01-01T00:00:00.000000000Z``)."""
    from datetime import UTC, datetime

    secs, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def check_command(device_id: str, command: Any, params: Any) -> dict[str, Any]:
    """The params of a valid command; :class:`BadRequest` with the reason otherwise."""
    if not device_id or _TOPIC_UNSAFE.search(device_id):
        raise BadRequest(
            f"device_id {device_id!r} cannot be used in an MQTT topic (no '+', '#', '/', NUL)"
        )
    if not isinstance(command, str) or not command.strip():
        raise BadRequest("command must be a non-empty string")
    if len(command) > MAX_COMMAND_LEN:
        raise BadRequest(f"command is longer than {MAX_COMMAND_LEN} characters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object")
    if len(orjson.dumps(params)) > MAX_PARAMS_BYTES:
        raise BadRequest(f"params are larger than {MAX_PARAMS_BYTES} bytes")
    return params


class CommandStore:
    """The command log (SQLite; a connection per call: commands are rare, callers many)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=10)
        con.row_factory = sqlite3.Row
        return con

    def add(self, rec: Mapping[str, Any], issued_ns: int) -> None:
        con = self._connect()
        try:
            with con:
                con.execute(
                    "INSERT INTO commands VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (rec["command_id"], rec["device_id"], rec["command"],
                     orjson.dumps(rec["params"]).decode(), rec["topic"], rec["status"],
                     rec["error"], issued_ns),
                )
        finally:
            con.close()

    def list(self, device_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = "SELECT * FROM commands"
        args: list[Any] = []
        if device_id is not None:
            sql += " WHERE device_id = ?"
            args.append(device_id)
        sql += " ORDER BY issued_ns DESC, rowid DESC LIMIT ?"
        args.append(limit)
        con = self._connect()
        try:
            rows = con.execute(sql, args).fetchall()
        finally:
            con.close()
        return [_record(r) for r in rows]


def _record(r: sqlite3.Row) -> dict[str, Any]:
    return {
        "command_id": r["id"],
        "device_id": r["device_id"],
        "command": r["command"],
        "params": orjson.loads(r["params"]),
        "topic": r["topic"],
        "status": r["status"],
        "error": r["error"],
        "issued_at": iso_ns(r["issued_ns"]),
    }


class CommandPublisher:
    """Publishes commands per ``settings`` and records each in ``store``."""

    def __init__(
        self, settings: CommandSettings, store: CommandStore, *, clock: Callable[[], int]
    ) -> None:
        try:
            import aiomqtt  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the installation
            raise SensoriumError("device commands need aiomqtt: pip install aiomqtt") from None
        try:
            settings.topic.format(device_id="d", command="c")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"invalid command topic template {settings.topic!r}: use {{device_id}} and "
                f"{{command}} only ({exc})"
            ) from None
        self.settings = settings
        self.store = store
        self.clock = clock

    def topic(self, device_id: str, command: str) -> str:
        safe = _TOPIC_UNSAFE.sub("_", command) or "_"
        return self.settings.topic.format(device_id=device_id, command=safe)

    async def send(
        self, device_id: str, command: Any, params: Any = None
    ) -> dict[str, Any]:
        """Publish one command; returns its record. :class:`BadRequest` for a bad command,
        :class:`BrokerUnavailable` (recorded as failed) when the broker cannot be reached."""
        import aiomqtt

        params = check_command(device_id, command, params)
        st = self.settings
        issued = self.clock()
        topic = self.topic(device_id, command)
        rec: dict[str, Any] = {
            "command_id": uuid.uuid4().hex,
            "device_id": device_id,
            "command": command,
            "params": params,
            "issued_at": iso_ns(issued),
        }
        payload = orjson.dumps(rec)
        rec.update(topic=topic, status="published", error=None)
        try:
            async with asyncio.timeout(st.timeout_s * 2):
                async with aiomqtt.Client(
                    st.host, st.port, timeout=st.timeout_s, username=st.username,
                    password=st.password.get_secret_value() if st.password is not None else None,
                ) as client:
                    await client.publish(topic, payload, qos=st.qos)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            rec.update(status="failed", error=f"{exc or type(exc).__name__}")
        await asyncio.to_thread(self.store.add, rec, issued)
        if rec["status"] == "failed":
            raise BrokerUnavailable(
                f"command not sent: no MQTT broker reachable at {st.host}:{st.port} "
                f"({rec['error']}); recorded as failed",
                command_id=rec["command_id"],
            )
        return rec

    def send_sync(self, device_id: str, command: Any, params: Any = None) -> dict[str, Any]:
        """:meth:`send` from synchronous code (the CLI, alert sinks, automations)."""
        return run_sync(self.send(device_id, command, params))


T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from synchronous code — also when this thread already runs an
    event loop (a notebook, an async test harness), where ``asyncio.run`` refuses: then on a
    short-lived thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        try:
            return asyncio.run(coro)
        except RuntimeError as exc:  # a loop driven by greenlets (Playwright's sync API) is running
            if "running event loop" not in str(exc):
                raise
    with ThreadPoolExecutor(1, thread_name_prefix="sensorium-run-sync") as ex:
        return ex.submit(asyncio.run, coro).result()


def publisher_for(data_dir: Path, settings: CommandSettings, clock: Callable[[], int]) -> CommandPublisher:
    return CommandPublisher(settings, CommandStore(Path(data_dir) / "commands.sqlite"), clock=clock)


__all__ = [
    "BrokerUnavailable",
    "CommandPublisher",
    "CommandStore",
    "check_command",
    "publisher_for",
]
