"""An alert sink that commands a device: when an alert of a matching rule fires (or resolves), the
device named by one of its tags gets a command over MQTT (through the device-command publisher,
which records every command). Delivered through the alert outbox like any sink, so a broker that
is down means retries with backoff, then a dead letter — never a lost or silent command."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from sensorium.config import CommandSettings, CommandSinkSettings
from sensorium.rules._sink import DeliveryError


class CommandSink:
    def __init__(self, cfg: CommandSinkSettings, commands: CommandSettings, data_dir: Path,
                 clock: Callable[[], int]) -> None:
        from sensorium.devices.commands import publisher_for

        self.cfg = cfg
        self.name = f"command:{cfg.rule}:{cfg.on}:{cfg.command}"
        self.target = f"mqtt://{commands.host}:{commands.port} ({commands.topic})"
        self.max_attempts = cfg.max_attempts
        self.backoff_initial_s = 0.5
        self.backoff_max_s = 60.0
        self.publisher = publisher_for(data_dir, commands, clock)

    def send(self, payload: Mapping[str, Any], body: bytes) -> None:
        from sensorium.devices.commands import BrokerUnavailable

        cfg = self.cfg
        if not fnmatchcase(str(payload.get("rule", "")), cfg.rule) or payload.get("state") != cfg.on:
            return  # not this sink's business: delivered as nothing to do
        device = (payload.get("tags") or {}).get(cfg.device_tag)
        if not device:
            raise DeliveryError(f"alert has no {cfg.device_tag!r} tag: no device to command", permanent=True)
        params = {**cfg.params, "alert_id": payload.get("alert_id"), "rule": payload.get("rule"),
                  "idempotency_key": f"{payload.get('alert_id')}:{payload.get('seq')}"}
        try:
            self.publisher.send_sync(str(device), cfg.command, params)
        except BrokerUnavailable as exc:
            raise DeliveryError(str(exc)) from None

    def close(self) -> None:
        return None  # the publisher connects per command
