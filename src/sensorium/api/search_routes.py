"""Semantic search routes (docs/agent.md#semantic-search): ``GET /api/v1/search`` and
``GET /api/v1/search/similar``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from sensorium.api.body import json_response as _json
from sensorium.auth.http import principal_of
from sensorium.errors import BadRequest
from sensorium.platform import Sensorium


def register(
    app: FastAPI,
    platform: Sensorium,
    check_auth: Callable[[Request], None],
    to_json: Callable[[Any], Any],
) -> None:
    from sensorium.agent.search import SearchIndex, check_kind, check_limit, check_query

    made: list[SearchIndex] = []
    lock = threading.Lock()

    def index() -> SearchIndex:  # opened (and the model loaded) on the first search
        with lock:
            if not made:
                made.append(SearchIndex(platform))
            return made[0]

    @app.get("/api/v1/search", tags=["agent"])
    async def search(
        request: Request, q: str | None = Query(None), kind: str | None = Query(None), limit: int = Query(10),
    ) -> Response:
        """Devices, agent interactions and device logs ranked by meaning (sentence embeddings):
        ``{"query", "results": [{"kind", "id", "text", "score"}]}``; ``kind`` = device, interaction
        or log; ``limit`` 1..100."""
        check_auth(request)
        text = check_query(q)
        check_kind(kind)
        check_limit(limit)
        p = principal_of(request)

        def run() -> dict[str, Any]:
            return index().search(text, kind=kind, limit=limit, principal=p)

        return _json(await asyncio.to_thread(run))

    @app.get("/api/v1/search/similar", tags=["agent"])
    async def similar(request: Request, device_id: str | None = Query(None, max_length=256),
                      limit: int = Query(5)) -> Response:
        """Devices whose description (name, type, room, location, attributes) is closest to
        ``device_id``'s: ``{"device_id", "text", "results": [...]}``."""
        check_auth(request)
        if not device_id:
            raise BadRequest("device_id is required: GET /api/v1/search/similar?device_id=X")
        check_limit(limit)
        p = principal_of(request)

        def run() -> dict[str, Any]:
            return index().similar(device_id, limit=limit, principal=p)

        return _json(await asyncio.to_thread(run))
