"""Running automation actions through the durable outbox that delivers alerts.

An :class:`Execution` is one run of one automation (deterministic ``key``: the same log gives the
same keys, so a replay after a crash queues nothing twice). It is queued in a
:class:`~sensorium.rules.sinks.Dispatcher` of its own (``automation-deliveries.sqlite``) with one
sink per action kind — ``command`` (MQTT, through the device-command publisher, which records
every command), ``webhook`` and ``notify`` — so actions get the same retries with backoff, dead
letters and ordering as alert deliveries. A sink runs the actions of its kind in the execution
(none: delivered, nothing to do). :func:`executions` reads the outcomes back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sensorium.automations.store import AutomationStore
from sensorium.config import CommandSettings, WebhookSinkSettings
from sensorium.rules._sink import DeliveryError

SINKS = ("command", "webhook", "notify")


@dataclass
class Execution:
    """Quacks like a :class:`~sensorium.rules.types.Transition` for the Dispatcher: ``alert_id`` is
    the automation (deliveries of one automation go in ``seq`` order), ``seq`` the trigger time."""

    key: str
    automation: str
    seq: int
    trigger: dict[str, Any]
    actions: list[dict[str, Any]]
    flapping: bool = False
    _json: str | None = field(default=None, repr=False)

    @property
    def alert_id(self) -> str:
        return self.automation

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "automation": self.automation, "time_ns": self.seq,
                "trigger": self.trigger, "actions": self.actions}

    def to_json(self) -> str:
        if self._json is None:
            self._json = orjson.dumps(self.to_dict()).decode()
        return self._json


def _mine(payload: Mapping[str, Any], kind: str) -> list[tuple[int, dict[str, Any]]]:
    """This sink's actions of an execution; an action that could not be filled in (a template
    naming a tag the trigger lacks) fails the delivery for good, with that reason."""
    mine = [(i, a) for i, a in enumerate(payload.get("actions") or []) if a.get("kind") == kind]
    bad = [a["error"] for _, a in mine if a.get("error")]
    if bad:
        raise DeliveryError("; ".join(bad), permanent=True)
    return mine


class CommandActionSink:
    name = "command"
    max_attempts = 8
    backoff_initial_s = 0.5
    backoff_max_s = 60.0

    def __init__(self, commands: CommandSettings, data_dir: Path, clock: Callable[[], int]) -> None:
        from sensorium.devices.commands import publisher_for

        self.target = f"mqtt://{commands.host}:{commands.port}"
        self.publisher = publisher_for(data_dir, commands, clock)

    def send(self, payload: Mapping[str, Any], body: bytes) -> None:
        from sensorium.devices.commands import BrokerUnavailable
        from sensorium.errors import BadRequest

        for i, a in _mine(payload, "command"):
            params = {**a.get("params", {}), "automation": payload["automation"],
                      "idempotency_key": f"{payload['key']}:{i}"}
            try:
                self.publisher.send_sync(str(a["device_id"]), a["command"], params)
            except BrokerUnavailable as exc:
                raise DeliveryError(str(exc)) from None
            except BadRequest as exc:
                raise DeliveryError(f"command {a['command']!r} to {a['device_id']!r}: {exc}", permanent=True) from None

    def close(self) -> None:
        return None


class WebhookActionSink:
    name = "webhook"
    target = "automation webhooks"
    max_attempts = 8
    backoff_initial_s = 0.5
    backoff_max_s = 60.0

    def __init__(self) -> None:
        from sensorium.rules._webhook import WebhookSink

        self._make = WebhookSink
        self._sinks: dict[tuple[str, float], Any] = {}

    def send(self, payload: Mapping[str, Any], body: bytes) -> None:
        for i, a in _mine(payload, "webhook"):
            k = (a["url"], float(a.get("timeout_s", 5.0)))
            if k not in self._sinks:
                self._sinks[k] = self._make(WebhookSinkSettings(url=k[0], timeout_s=k[1]), name=f"webhook:{i}")
            one = {**payload, "key": f"{payload['key']}:{i}"}
            self._sinks[k].send(one, orjson.dumps(one))

    def close(self) -> None:
        for s in self._sinks.values():
            s.close()


class NotifySink:
    name = "notify"
    target = "notifications table"
    max_attempts = 8
    backoff_initial_s = 0.2
    backoff_max_s = 10.0

    def __init__(self, store: AutomationStore) -> None:
        self.store = store

    def send(self, payload: Mapping[str, Any], body: bytes) -> None:
        for i, a in _mine(payload, "notify"):
            self.store.notify(f"{payload['key']}:{i}", str(a.get("user", "*")), str(payload["automation"]),
                              str(a.get("title", "")), str(a.get("message", "")))

    def close(self) -> None:
        return None


def executions(path: Path, *, automation: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Runs with their outcome (``pending`` / ``ok`` / ``failed``), newest first, from the outbox."""
    if not Path(path).exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    try:
        sql = ("SELECT key, sink, alert_id, seq, payload, state, attempts, last_error, created_ns, updated_ns "
               "FROM deliveries")
        args: list[Any] = []
        if automation is not None:
            sql += " WHERE alert_id = ?"
            args.append(automation)
        sql += " ORDER BY created_ns DESC, key"
        rows = conn.execute(sql, args).fetchall()
    finally:
        conn.close()
    out: dict[str, dict[str, Any]] = {}
    for key, sink, auto, seq, payload, state, attempts, error, created, updated in rows:
        e = out.get(key)
        if e is None:
            body = orjson.loads(payload)
            kinds = {a.get("kind") for a in body.get("actions", [])}
            e = out[key] = {"key": key, "automation": auto, "time_ns": seq, "trigger": body.get("trigger"),
                            "actions": body.get("actions"), "created_ns": created, "updated_ns": updated,
                            "deliveries": {}, "_kinds": kinds}
        if sink in e["_kinds"]:
            e["deliveries"][sink] = {"state": state, "attempts": attempts, "error": error}
            e["updated_ns"] = max(e["updated_ns"], updated)
    result = []
    for e in out.values():
        states = {d["state"] for d in e["deliveries"].values()}
        e["status"] = "failed" if "dead" in states else "pending" if "pending" in states else "ok"
        del e["_kinds"]
        result.append(e)
        if len(result) >= limit:
            break
    return result


def automation_outbox(
    path: Path, settings: Any, store: AutomationStore, data_dir: Path, clock: Callable[[], int]
) -> Any:
    """The Dispatcher that runs automation actions (one sink per action kind)."""
    from sensorium.config import AlertSettings
    from sensorium.rules.sinks import Dispatcher

    sinks: list[Any] = [CommandActionSink(settings.commands, data_dir, clock), WebhookActionSink(), NotifySink(store)]
    return Dispatcher(path, AlertSettings(log=False), clock=clock, sinks=sinks)
