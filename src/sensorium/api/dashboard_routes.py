"""Routes of the web dashboard: the page at ``/``, its packaged assets, and the JSON and
server-sent events it reads (overview, devices, registry, device charts downsampled to the
chart's pixel width).

With authentication off (``[auth] enabled = false``) the dashboard is served on loopback only:
when such a server listens on any other address every route here answers **403** with the
reason. With authentication on (the default off loopback) it is served anywhere: the page asks
for a token (or a session from ``POST /api/v1/login``), and a user or guest sees the devices
and alerts of their own locations only (docs/security.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse

from sensorium.api.body import json_response as _json
from sensorium.api.dashboard import (
    STATIC_DIR,
    Overview,
    StaticFiles,
    device_charts,
    devices,
    is_loopback,
    registry_tree,
    search,
)
from sensorium.api.dashboard._fleet import DEFAULT_OFFLINE_AFTER, REGISTERED_SQL, merge_registry
from sensorium.auth.http import principal_of
from sensorium.auth.principal import Forbidden, Principal
from sensorium.errors import BadRequest, SensoriumError
from sensorium.platform import Sensorium
from sensorium.query.downsample import duration_ns

#: Content-Security-Policy of the page: everything from this server, nothing from elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
HTML_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
#: A server-sent event stream ends after this long (the browser reconnects at once), so that a
#: stopping server never waits long on an open dashboard (uvicorn waits for open responses).
EVENTS_MAX_S = 5.0
STATUSES = ("online", "offline")


class DashboardForbidden(SensoriumError):
    status = 403
    code = "dashboard_loopback_only"


def forbidden_message(host: str) -> str:
    return (
        f"with authentication off the dashboard is served on loopback only, and this server "
        f"listens on {host}: turn [auth] on, or start it with --host 127.0.0.1 (the default) and "
        f"reach it from elsewhere through an SSH tunnel (ssh -L 7400:127.0.0.1:7400 server)"
    )


def scoped_overview(ov: dict[str, Any], p: Principal, rows: list[dict[str, Any]], alerts: Any) -> dict[str, Any]:
    """The overview as a user or guest sees it: their devices and their alerts (ingest rate,
    data quality, storage and the stream's state stay platform-wide numbers)."""
    online = sum(1 for d in rows if d["status"] == "online")
    devices = {**ov["devices"], "total": len(rows), "online": online, "offline": len(rows) - online}
    return {**ov, "devices": devices, "alerts": alerts}


def _forbidden_page(host: str) -> Response:
    msg = forbidden_message(host)
    html = (
        "<!doctype html><html lang=en><meta charset=utf-8><title>Sensorium — dashboard off</title>"
        "<body style='font:16px system-ui;max-width:40rem;margin:3rem auto;color:#1a1f29'>"
        f"<h1>Dashboard not available</h1><p>403: {msg}.</p><p>The HTTP API is unaffected.</p>"
    )
    return Response(html, status_code=403, media_type="text/html; charset=utf-8", headers=HTML_HEADERS)


def register(app: FastAPI, platform: Sensorium, check_auth: Callable[[Request], None], to_json: Callable[[Any], Any]) -> None:
    static = StaticFiles(STATIC_DIR)
    overview_state = Overview(platform)
    host = platform.settings.host
    served = is_loopback(host) or app.state.auth.auth.enabled

    def guard(request: Request, *, auth: bool = True) -> Principal | None:
        if not served:
            raise DashboardForbidden(forbidden_message(host), host=host)
        if auth:
            check_auth(request)
            return principal_of(request)
        return None

    def mine(p: Principal | None, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if p is None or not p.restricted:
            return rows
        return [d for d in rows if p.allows_device(d["device_id"])]

    def overview_for(p: Principal | None, bucket: str, after: int) -> dict[str, Any]:
        ov = overview_state.get(bucket, after)
        if p is None or not p.restricted:
            return ov
        rows = mine(p, devices(platform, bucket, platform.clock(), after))
        return scoped_overview(ov, p, rows, platform.alert_counts(p) if platform.alerts is not None else None)

    def offline_ns(text: str) -> int:
        try:
            return duration_ns(text)
        except BadRequest:
            raise BadRequest(f"bad offline_after {text!r}: a duration such as 90s, 5m or 1h") from None

    def bucket_of(bucket: str | None) -> str:
        return bucket or platform.settings.default_bucket

    # -- the page and its assets ------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def dashboard_page() -> Response:
        """The dashboard (one page; views are ``#/devices``, ``#/alerts``, ...)."""
        if not served:
            return _forbidden_page(host)
        page = static.get("index.html")
        assert page is not None, "the dashboard's index.html is missing from the package"
        return Response(page.body, media_type=page.media_type, headers=HTML_HEADERS)

    @app.get("/dashboard/static/{path:path}", include_in_schema=False)
    async def dashboard_static(request: Request, path: str) -> Response:
        guard(request, auth=False)  # code and styles only; the data needs the token
        asset = static.get(path)
        if asset is None:
            return _json({"code": "not_found", "message": f"no dashboard asset {path!r}"}, 404)
        headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    # -- data -------------------------------------------------------------------------------
    @app.get("/api/v1/dashboard/overview", tags=["dashboard"])
    async def dashboard_overview(
        request: Request,
        bucket: str | None = Query(None),
        offline_after: str = Query(DEFAULT_OFFLINE_AFTER, description="Age past which a device is offline"),
    ) -> Response:
        """Ingest rate, devices online/offline, alerts, data quality, storage, stream state."""
        p = guard(request)
        out = await asyncio.to_thread(overview_for, p, bucket_of(bucket), offline_ns(offline_after))
        return _json(out)

    @app.get("/api/v1/dashboard/devices", tags=["dashboard"])
    async def dashboard_devices(
        request: Request,
        bucket: str | None = Query(None),
        q: str | None = Query(None, description="Text in the id, location, room or kind", max_length=200),
        status: str | None = Query(None, description="online | offline"),
        offline_after: str = Query(DEFAULT_OFFLINE_AFTER),
    ) -> Response:
        """Devices seen in the telemetry, with location, status and last values."""
        p = guard(request)
        if status is not None and status not in STATUSES:
            raise BadRequest(f"status must be online or offline; got {status!r}")
        after = offline_ns(offline_after)

        def run() -> dict[str, Any]:
            now = platform.clock()
            rows = mine(p, devices(platform, bucket_of(bucket), now, after))
            found = search(rows, q, status)
            return {"now": now / 1e9, "total": len(rows), "devices": found}

        return _json(await asyncio.to_thread(run))

    @app.get("/api/v1/dashboard/registry", tags=["dashboard"])
    async def dashboard_registry(
        request: Request, bucket: str | None = Query(None), offline_after: str = Query(DEFAULT_OFFLINE_AFTER),
    ) -> Response:
        """Locations → rooms → devices: placed by the device registry where it knows them (its
        names win), by their telemetry tags otherwise; registered devices without data too."""
        p = guard(request)
        after = offline_ns(offline_after)

        def run() -> dict[str, Any]:
            now = platform.clock()
            rows = mine(p, devices(platform, bucket_of(bucket), now, after))
            try:
                registered = platform.query(REGISTERED_SQL, bucket_of(bucket), principal=p).to_pylist()
            except SensoriumError:  # no registry on this node
                registered = []
            rows = merge_registry(rows, registered)
            # devices the registry places (auto-registered ones have no room or location yet)
            placed = sum(1 for r in registered if r.get("room") or r.get("location"))
            source = "telemetry tags: location, room, device_id, sensor_type"
            if placed:
                source = f"device registry ({placed} placed devices) + {source} for the rest"
            return {"now": now / 1e9, "source": source, "registered": len(registered), "placed": placed,
                    "devices": len(rows), "locations": registry_tree(rows)}

        return _json(await asyncio.to_thread(run))

    @app.get("/api/v1/dashboard/devices/{device_id}/charts", tags=["dashboard"])
    async def dashboard_device_charts(
        request: Request,
        device_id: str,
        start: str = Query("now-1h", description="RFC 3339, ns, or now-<duration>"),
        end: str | None = Query(None),
        width: int = Query(800, description="Chart width in pixels: at most one point per pixel"),
        resolution: str = Query("auto", description="auto | raw | a rollup interval (1m, 1h, 1d)"),
        bucket: str | None = Query(None),
    ) -> Response:
        """Every numeric field of one device (mean, min, max and anomaly score per bucket) and
        its alerts, downsampled server-side to ``width`` buckets at most. A user or guest: a
        device of their locations only (403 otherwise, from the route's policy)."""
        guard(request)
        out = await asyncio.to_thread(
            device_charts, platform, device_id, start=start, end=end, width=width,
            resolution=resolution, bucket=bucket,
        )
        return _json(out)

    @app.get("/api/v1/dashboard/events", tags=["dashboard"])
    async def dashboard_events(
        request: Request,
        bucket: str | None = Query(None),
        device_id: str | None = Query(None, max_length=200),
        alerts: bool = Query(False, description="Also relay alert changes and acknowledgements"),
        interval: float = Query(2.0, ge=0.5, le=60.0, description="Seconds between updates"),
        offline_after: str = Query(DEFAULT_OFFLINE_AFTER),
    ) -> StreamingResponse:
        """Server-sent events: ``overview`` every ``interval`` seconds; with ``device_id``,
        ``device`` (that device's newest values); with ``alerts=true``, ``alert`` and ``ack`` as
        they happen (as on /api/v1/alerts/stream). Each stream ends after 5 s and the browser
        reconnects at once (``retry: 250``): a stopping server never waits on an open dashboard."""
        p = guard(request)
        assert p is not None
        if device_id is not None and not p.allows_device(device_id):
            raise Forbidden(f"device {device_id!r} is not in {p.id!r}'s locations", device_id=device_id)
        after = offline_ns(offline_after)
        b = bucket_of(bucket)

        def device_now() -> dict[str, Any] | None:
            if device_id is None:
                return None
            rows = devices(platform, b, platform.clock(), after, device_id=device_id)
            return rows[0] if rows else None

        async def events() -> AsyncIterator[bytes]:
            loop = asyncio.get_running_loop()
            until = loop.time() + EVENTS_MAX_S
            sub = platform.alerts.subscribe() if alerts and platform.alerts is not None else None
            try:
                yield b"retry: 250\n: connected\n\n"
                tick = loop.time()
                while not await request.is_disconnected() and loop.time() < until:
                    if loop.time() >= tick:
                        tick = loop.time() + interval
                        ov = await asyncio.to_thread(overview_for, p, b, after)
                        yield b"event: overview\ndata: " + orjson.dumps(ov) + b"\n\n"
                        if device_id is not None:
                            dev = await asyncio.to_thread(device_now)
                            yield b"event: device\ndata: " + orjson.dumps(dev) + b"\n\n"
                    wait = max(0.0, min(tick, until) - loop.time())
                    if sub is None:
                        await asyncio.sleep(wait)
                        continue
                    item = await sub.next(timeout=wait)
                    if item is not None and p.allows_device((item.data.get("tags") or {}).get("device_id")):
                        yield item.sse().encode()
            finally:
                if sub is not None:
                    sub.close()

        return StreamingResponse(
            events(), media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
