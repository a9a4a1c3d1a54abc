"""Routes of device commands: publish one to a device over MQTT, list what was sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from sensorium.api.body import json_body
from sensorium.api.body import json_response as _json
from sensorium.errors import BadRequest
from sensorium.platform import Sensorium

MAX_BODY = 128 * 1024




def register(
    app: FastAPI,
    platform: Sensorium,
    check_auth: Callable[[Request], None],
    to_json: Callable[[Any], Any],
) -> None:
    from sensorium.devices.commands import CommandPublisher, check_command, publisher_for

    made: list[CommandPublisher] = []

    def publisher() -> CommandPublisher:  # commands.sqlite appears with the first command
        if not made:
            made.append(publisher_for(platform.dir, platform.settings.commands, platform.clock))
        return made[0]

    @app.post("/api/v1/devices/{device_id}/commands", tags=["devices"])
    async def send_command(request: Request, device_id: str) -> Response:
        """Publish a command (``{"command": "set", "params": {...}}``) to the device's command
        topic at QoS 1; 202 with the command's record once the broker has it. 400 for a bad body,
        503 (recorded as failed) when the broker cannot be reached."""
        check_auth(request)
        data = await json_body(request, MAX_BODY)
        if not isinstance(data, dict):
            raise BadRequest('body must be a JSON object: {"command": "...", "params": {...}}')
        unknown = sorted(set(data) - {"command", "params"})
        if unknown:
            raise BadRequest(f"unknown keys in the body: {', '.join(unknown)} (use command, params)")
        check_command(device_id, data.get("command"), data.get("params"))
        rec = await publisher().send(device_id, data.get("command"), data.get("params"))
        return _json(rec, 202)

    @app.get("/api/v1/devices/{device_id}/commands", tags=["devices"])
    async def list_commands(
        request: Request, device_id: str, limit: int = Query(100, ge=1, le=10_000)
    ) -> Response:
        """Commands sent to the device, newest first, with their outcome."""
        check_auth(request)
        items = await asyncio.to_thread(publisher().store.list, device_id, limit)
        return _json({"commands": items})
