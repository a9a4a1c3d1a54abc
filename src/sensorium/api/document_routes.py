"""Routes of documents (docs/documents.md): user interactions, device logs and AI model outputs
as JSON, filtered (kind, device, user, time range, `data` field equality), sorted by time and
paged — each caller seeing the documents of their own devices and their own only."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from sensorium.api.body import json_body
from sensorium.api.body import json_response as _json
from sensorium.api.registry_routes import registry_of
from sensorium.auth.http import principal_of
from sensorium.documents.store import MAX_LIMIT, DocumentStore, parse_when, parse_where
from sensorium.errors import BadRequest
from sensorium.platform import Sensorium


def register(
    app: FastAPI,
    platform: Sensorium,
    check_auth: Callable[[Request], None],
    to_json: Callable[[Any], Any],
) -> None:
    s = platform.settings
    made: list[DocumentStore] = []

    def store() -> DocumentStore:
        if not made:
            made.append(DocumentStore(registry_of(platform), clock=platform.clock))
        return made[0]

    @app.post("/api/v1/documents", status_code=201, tags=["documents"])
    async def add_document(request: Request) -> Response:
        """`{"kind", "time"?, "device_id"?, "user_id"?, "data": {...}, "pii"?: ...}` → 201 with
        the stored document (`id`). `pii` is encrypted at rest."""
        check_auth(request)
        body = await json_body(request, s.max_body_bytes, s.max_decompressed_bytes)
        p = principal_of(request)
        return _json(await asyncio.to_thread(store().add, body, p), 201)

    @app.get("/api/v1/documents", tags=["documents"])
    async def list_documents(
        request: Request,
        kind: str | None = Query(None, description="interaction, device_log, model_output, ..."),
        device_id: str | None = Query(None),
        user: str | None = Query(None, description="Only this user's documents."),
        start: str | None = Query(None, description="From this time (RFC 3339, ns or now-<duration>)."),
        end: str | None = Query(None, description="Before this time."),
        where: list[str] = Query([], description="FIELD:VALUE — `data` field equality (dotted for nested keys); repeatable."),
        sort: str = Query("-time", description="time (oldest first) or -time (newest first)."),
        limit: int = Query(100, ge=1, le=MAX_LIMIT),
        offset: int = Query(0, ge=0),
    ) -> Response:
        """`{"total", "limit", "offset", "items": [document]}`."""
        check_auth(request)
        if sort not in ("time", "-time", "+time"):
            raise BadRequest(f"sort must be time or -time; got {sort!r}")
        now = platform.clock()
        lo = parse_when(start, now, "start") if start else None
        hi = parse_when(end, now, "end") if end else None
        conds = parse_where(where)
        p = principal_of(request)
        total, items = await asyncio.to_thread(lambda: store().list(
            p, kind=kind, device_id=device_id, user_id=user, start=lo, end=hi, where=conds,
            order="desc" if sort == "-time" else "asc", limit=limit, offset=offset))
        return _json({"total": total, "limit": limit, "offset": offset, "items": items})

    @app.get("/api/v1/documents/{document_id}", tags=["documents"])
    async def get_document(request: Request, document_id: int) -> Response:
        """One document; 404 when there is none the caller may see."""
        check_auth(request)
        return _json(await asyncio.to_thread(store().get, document_id, principal_of(request)))

    @app.delete("/api/v1/documents/{document_id}", tags=["documents"])
    async def delete_document(request: Request, document_id: int) -> Response:
        """Remove a document (erasure): `{"deleted": document}`."""
        check_auth(request)
        return _json({"deleted": await asyncio.to_thread(store().delete, document_id, principal_of(request))})
