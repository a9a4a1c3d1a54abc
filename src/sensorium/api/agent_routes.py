"""Routes of the natural-language agent (docs/agent.md): ask, confirm, feedback, interactions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from sensorium.agent.context import who
from sensorium.api.body import json_body
from sensorium.api.body import json_response as _json
from sensorium.auth.http import principal_of
from sensorium.errors import BadRequest
from sensorium.platform import Sensorium

MAX_BODY = 16 * 1024
ASK_KEYS = {"question", "session_id", "confirm"}


async def _body(request: Request, keys: set[str]) -> dict[str, Any]:
    data = await json_body(request, MAX_BODY)
    if not isinstance(data, dict):
        raise BadRequest('body must be a JSON object like {"question": "..."}')
    unknown = sorted(set(data) - keys)
    if unknown:
        raise BadRequest(f"unknown keys in the body: {', '.join(unknown)} (use {', '.join(sorted(keys))})")
    for k in keys & set(data):
        if data[k] is not None and not isinstance(data[k], str | int) or isinstance(data[k], bool):
            raise BadRequest(f"`{k}` must be a string")
    return data


def register(
    app: FastAPI,
    platform: Sensorium,
    check_auth: Callable[[Request], None],
    to_json: Callable[[Any], Any],
) -> None:
    from sensorium.agent import Agent

    made: list[Agent] = []

    def agent() -> Agent:  # agent.sqlite appears with the first question
        if not made:
            made.append(Agent(platform))
        return made[0]

    def own(request: Request) -> str | None:
        """Whose interactions a caller sees: an admin everyone's, anyone else their own."""
        p = principal_of(request)
        return None if p.is_admin else who(p)

    @app.post("/api/v1/ask", tags=["agent"])
    async def ask(request: Request) -> Response:
        """A question, command or automation in plain language: ``{"question", "session_id"?}`` →
        ``answer, plan, sql, table, chart, value, understood, confidence`` (and ``needs_confirmation``
        + ``confirm_token`` for risky or ambiguous commands and automation drafts); ``{"confirm":
        token}`` runs what a token confirms."""
        check_auth(request)
        data = await _body(request, ASK_KEYS)
        if data.get("confirm") is None and not data.get("question"):
            raise BadRequest('body needs "question" (or "confirm" with a confirm_token)')
        a = agent()
        out = await asyncio.to_thread(a.ask, data.get("question"), principal=principal_of(request),
                                      session_id=data.get("session_id"), confirm=data.get("confirm"))
        return _json(out)

    @app.post("/api/v1/ask/feedback", tags=["agent"])
    async def feedback(request: Request) -> Response:
        """``{"interaction_id": N, "feedback": "..."}``: kept with the interaction."""
        check_auth(request)
        data = await json_body(request, MAX_BODY)  # size limits and errors as every JSON route
        if not isinstance(data, dict) or not isinstance(data.get("interaction_id"), int) or isinstance(
                data.get("interaction_id"), bool) or not isinstance(data.get("feedback"), str):
            raise BadRequest('body must be {"interaction_id": <int>, "feedback": "<text>"}')
        out = await asyncio.to_thread(agent().interactions.feedback, data["interaction_id"], data["feedback"],
                                      who(principal_of(request)))
        return _json(out)

    @app.get("/api/v1/ask/interactions", tags=["agent"])
    async def interactions(
        request: Request, session_id: str | None = Query(None, max_length=128),
        limit: int = Query(100, ge=1, le=10_000),
    ) -> Response:
        """Questions and commands with their intent, status, response and feedback, newest first."""
        check_auth(request)
        items = await asyncio.to_thread(agent().interactions.list, principal=own(request),
                                        session_id=session_id, limit=limit)
        return _json({"interactions": items})
