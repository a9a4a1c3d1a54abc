"""Routes of the stream: alerts (list, one, acknowledge, live events), deliveries, rules, rollups."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse

from sensorium.api.body import json_response as _json
from sensorium.auth.http import principal_of
from sensorium.errors import BadRequest, NotFound
from sensorium.platform import Sensorium

ALERT_STATES = ("firing", "resolved", "acknowledged", "unacknowledged")




def register(app: FastAPI, platform: Sensorium, check_auth: Callable[[Request], None], to_json: Callable[[Any], Any]) -> None:
    def alerts() -> Any:
        if platform.alerts is None:
            raise NotFound("the stream processor is off (stream.enabled = false): no alerts")
        return platform.alerts

    @app.get("/api/v1/alerts", tags=["alerts"])
    async def list_alerts(
        request: Request,
        state: str | None = Query(None, description="firing | resolved | acknowledged | unacknowledged"),
        rule: str | None = Query(None),
        severity: str | None = Query(None),
        series: str | None = Query(None, description="Only alerts whose series contains this text."),
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0),
    ) -> Response:
        check_auth(request)
        if state is not None and state not in ALERT_STATES:
            raise BadRequest(f"state must be one of {', '.join(ALERT_STATES)}; got {state!r}")
        alerts()
        p = principal_of(request)  # a user's or guest's: the alerts of their devices only
        await asyncio.to_thread(platform.process_pending)
        items = await asyncio.to_thread(
            lambda: platform.list_alerts(principal=p, state=state, rule=rule, severity=severity,
                                         series_contains=series, limit=limit, offset=offset)
        )
        return _json({"alerts": items, "counts": await asyncio.to_thread(platform.alert_counts, p)})

    @app.get("/api/v1/alerts/stream", tags=["alerts"])
    async def alert_stream(request: Request, rule: str | None = Query(None)) -> StreamingResponse:
        """Server-sent events: one ``alert`` event per alert change (``id`` = idempotency key),
        ``ack`` events for acknowledgements, a comment every 15 s to keep the connection open."""
        check_auth(request)
        p = principal_of(request)
        sub = alerts().subscribe()

        stopping = request.app.state.stopping

        async def events() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            quiet_since = loop.time()
            try:
                yield b": connected\n\n"
                while not stopping() and not await request.is_disconnected():
                    item = await sub.next(timeout=1.0)  # short: notice a server stopping
                    if item is None:
                        if loop.time() - quiet_since >= 15.0:
                            quiet_since = loop.time()
                            yield b": keep-alive\n\n"
                        continue
                    quiet_since = loop.time()
                    data = item.to_dict() if hasattr(item, "to_dict") else dict(item)
                    if rule is not None and data.get("rule") not in (None, rule):
                        continue
                    if p.restricted and not p.allows_device((data.get("tags") or {}).get("device_id")):
                        continue
                    kind = data.get("event", "alert")
                    key = data.get("key") or f"{data.get('alert_id', '')}:ack"
                    yield f"id: {key}\nevent: {kind}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"
            finally:
                sub.close()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.get("/api/v1/alerts/deliveries", tags=["alerts"])
    async def deliveries(request: Request, state: str = Query("dead", description="dead | pending")) -> Response:
        check_auth(request)
        if platform.dispatcher is None:
            raise NotFound("the stream processor is off: no alert deliveries")
        if state not in ("dead", "pending"):
            raise BadRequest(f"state must be dead or pending; got {state!r}")
        rows = platform.dispatcher.dead_letters() if state == "dead" else platform.dispatcher.pending()
        return _json({"deliveries": rows})

    @app.get("/api/v1/alerts/{alert_id}", tags=["alerts"])
    async def get_alert(request: Request, alert_id: str) -> Response:
        check_auth(request)
        alerts()
        return _json(await asyncio.to_thread(lambda: platform.get_alert(alert_id, principal=principal_of(request))))

    @app.post("/api/v1/alerts/{alert_id}/ack", tags=["alerts"])
    async def ack_alert(request: Request, alert_id: str) -> Response:
        check_auth(request)
        body = await request.body()
        data: dict[str, Any] = {}
        if body.strip():
            try:
                parsed = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"body must be JSON like {{\"by\": \"name\", \"note\": \"...\"}}: {exc}") from None
            if not isinstance(parsed, dict):
                raise BadRequest('body must be a JSON object like {"by": "name", "note": "..."}')
            data = parsed
        by, note = data.get("by", "api"), data.get("note")
        if not isinstance(by, str) or (note is not None and not isinstance(note, str)):
            raise BadRequest("'by' and 'note' must be strings")
        p = principal_of(request)
        alerts()
        await asyncio.to_thread(lambda: platform.get_alert(alert_id, principal=p))  # 404 unless visible
        if p.via != "local":  # authenticated: the acknowledgement is the caller's
            by = p.id
        return _json(await asyncio.to_thread(alerts().ack, alert_id, by, note))

    @app.get("/api/v1/rules", tags=["alerts"])
    async def rules(request: Request) -> Response:
        check_auth(request)
        if platform.stream is None:
            raise NotFound("the stream processor is off: no rules")
        rs = platform.stream.ruleset
        return _json({"rules": [r.model_dump(mode="json", by_alias=True, exclude_none=True) for r in rs.rules]})

    @app.post("/api/v1/rules/check", tags=["alerts"])
    async def rules_check(request: Request, format: str = Query("toml", description="toml | yaml")) -> Response:
        """Validate a rules file (the body) without loading it; problems carry line numbers."""
        check_auth(request)
        from sensorium.rules.loader import check_text

        if format not in ("toml", "yaml"):
            raise BadRequest(f"format must be toml or yaml; got {format!r}")
        text = (await request.body()).decode("utf-8", errors="replace")
        problems = check_text(text, "yaml" if format == "yaml" else "toml")
        return _json({"ok": not problems, "problems": [p.to_dict() for p in problems]}, 200 if not problems else 400)

    @app.get("/api/v1/stream", tags=["ops"])
    async def stream_status(request: Request) -> Response:
        check_auth(request)
        return _json(platform.stream_status())

    @app.get("/api/v1/series", tags=["query"])
    async def series(
        request: Request,
        measurement: str = Query(...),
        field: str = Query(...),
        start: str = Query(..., description="RFC 3339 or now-<duration>, e.g. now-7d"),
        end: str | None = Query(None),
        every: str = Query("1h", description="Bucket width, e.g. 1m, 15m, 1h, 1d"),
        agg: str = Query("mean", description="count sum mean min max stddev first last pNN"),
        bucket: str | None = Query(None),
        by: str | None = Query(None, description="Comma-separated tags: one series per value"),
    ) -> Response:
        """A downsampled series; reads the coarsest rollup table that fits ``every`` (raw data
        otherwise). ``tag=value`` query parameters filter series."""
        check_auth(request)
        known = {"measurement", "field", "start", "end", "every", "agg", "bucket", "by"}
        tags = {k: v for k, v in request.query_params.items() if k not in known}
        tags = {k: v for k, v in tags.items() if k not in ("p", "u")}  # credentials, not tags
        table, source = await asyncio.to_thread(
            lambda: platform.series(
                measurement, field, start=start, end=end, every=every, agg=agg, bucket=bucket, tags=tags,
                by=[b.strip() for b in by.split(",") if b.strip()] if by else None,
                principal=principal_of(request)),
        )
        out = to_json(table)
        out["source"] = source
        return _json(out)
