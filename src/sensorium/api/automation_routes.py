"""Routes of automations (definitions, runs) and notifications."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from sensorium.api.body import json_body
from sensorium.api.body import json_response as _json
from sensorium.automations.loader import parse_definition
from sensorium.automations.store import AutomationStore
from sensorium.errors import BadRequest, NotFound
from sensorium.platform import Sensorium

MAX_BODY = 256 * 1024


async def _json_body(request: Request) -> Any:
    return await json_body(request, MAX_BODY)


def register(
    app: FastAPI,
    platform: Sensorium,
    check_auth: Callable[[Request], None],
    to_json: Callable[[Any], Any],
) -> None:
    def store() -> AutomationStore:
        if platform.automations is None:
            raise NotFound("automations are not enabled here ([automations] enabled = false, or the stream is off)")
        return platform.automations

    @app.get("/api/v1/automations", tags=["automations"])
    async def list_automations(request: Request) -> Response:
        """Every automation: ``{"automations": [{name, definition, source, created_ns, updated_ns}]}``."""
        check_auth(request)
        return _json({"automations": await asyncio.to_thread(store().list)})

    @app.post("/api/v1/automations", tags=["automations"])
    async def create_automation(request: Request) -> Response:
        """Create an automation from its JSON definition (201); 400 listing every problem, 409 when
        the name exists."""
        check_auth(request)
        a = parse_definition(await _json_body(request))
        return _json(await asyncio.to_thread(store().put, a, create=True), 201)

    @app.post("/api/v1/automations/check", tags=["automations"])
    async def check_automation(request: Request) -> Response:
        """Validate a definition without saving it: ``{"ok": true, "automation": normalised}`` or
        400 with the problems (a draft from the agent is shown this way before it is saved)."""
        check_auth(request)
        a = parse_definition(await _json_body(request))
        return _json({"ok": True, "automation": a.definition()})

    @app.get("/api/v1/automations/runs", tags=["automations"])
    async def automation_runs(
        request: Request,
        automation: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
    ) -> Response:
        """Runs, newest first: trigger, rendered actions, per-action-kind delivery state and
        ``status`` (``ok`` / ``pending`` / ``failed``)."""
        check_auth(request)
        return _json({"runs": await asyncio.to_thread(platform.automation_runs, automation, limit)})

    @app.get("/api/v1/automations/{name}", tags=["automations"])
    async def get_automation(request: Request, name: str) -> Response:
        check_auth(request)
        return _json(await asyncio.to_thread(store().get, name))

    @app.put("/api/v1/automations/{name}", tags=["automations"])
    async def put_automation(request: Request, name: str) -> Response:
        """Create or replace an API automation (not one from the automations file: 409)."""
        check_auth(request)
        body = await _json_body(request)
        if isinstance(body, dict):
            if body.setdefault("name", name) != name:
                raise BadRequest(f"the body names {body['name']!r}, the path {name!r}")
        a = parse_definition(body)
        return _json(await asyncio.to_thread(store().put, a))

    @app.delete("/api/v1/automations/{name}", tags=["automations"])
    async def delete_automation(request: Request, name: str) -> Response:
        check_auth(request)
        await asyncio.to_thread(store().delete, name)
        return Response(status_code=204)

    @app.get("/api/v1/notifications", tags=["automations"])
    async def notifications(
        request: Request,
        user: str | None = None,
        unread: bool = False,
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0),
    ) -> Response:
        """Notifications (newest first) for ``user`` (and those to everyone), with ``total`` and
        ``unread`` counts."""
        check_auth(request)
        return _json(await asyncio.to_thread(
            store().notifications, user=user, unread=unread, limit=limit, offset=offset))

    @app.post("/api/v1/notifications/read", tags=["automations"])
    async def mark_read(request: Request) -> Response:
        """``{"ids": [1, 2], "read": true}`` marks notifications read (``false``: unread)."""
        check_auth(request)
        body = await _json_body(request)
        ids = body.get("ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise BadRequest('body must be {"ids": [<notification id>, ...], "read": true|false}')
        read = body.get("read", True)
        if not isinstance(read, bool):
            raise BadRequest("'read' must be true or false")
        n = await asyncio.to_thread(store().mark_read, ids, read)
        return _json({"updated": n})
