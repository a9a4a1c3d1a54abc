"""The FastAPI application factory. Routes are thin: they parse arguments, call the platform and
turn :class:`SensoriumError` into a status code and a JSON body (one handler, below)."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sensorium import __version__
from sensorium.api.body import json_response as _json
from sensorium.api.body import read_body
from sensorium.errors import BadRequest, SensoriumError
from sensorium.platform import Sensorium, WriteResult

log = logging.getLogger("sensorium.api")

ARROW_STREAM = "application/vnd.apache.arrow.stream"




def rfc3339(col: Any) -> Any:
    """Timestamps → RFC 3339 UTC strings, trailing zeros of the fraction trimmed."""
    if col.type.tz is None:
        col = col.cast(pa.timestamp(col.type.unit, tz="UTC"))
    out = pc.strftime(col, format="%Y-%m-%dT%H:%M:%SZ")
    out = pc.replace_substring_regex(out, pattern=r"(\.\d*?)0+Z$", replacement=r"\1Z")
    return pc.replace_substring_regex(out, pattern=r"\.Z$", replacement="Z")


def table_to_json(table: pa.Table) -> dict[str, Any]:
    """``{"columns": [...], "rows": [[...]]}`` with timestamps as RFC 3339 strings (ns, UTC)."""
    cols = []
    for i, f in enumerate(table.schema):
        c = table.column(i)  # by position: a result may repeat a column name
        if pa.types.is_timestamp(f.type):
            c = rfc3339(c)
        elif pa.types.is_date(f.type):
            c = pc.strftime(c, format="%Y-%m-%d")
        elif pa.types.is_decimal(f.type):
            c = c.cast(pa.float64())
        elif pa.types.is_dictionary(f.type):
            c = c.cast(pa.string())
        elif pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):  # base64 (JSON has no bytes)
            cols.append([None if v is None else base64.b64encode(v).decode() for v in c.to_pylist()])
            continue
        cols.append(c.to_pylist())
    rows = [list(r) for r in zip(*cols, strict=True)] if cols else []
    return {"columns": table.column_names, "types": [str(f.type) for f in table.schema], "rows": rows}


def create_app(platform: Sensorium) -> FastAPI:
    s = platform.settings
    app = FastAPI(
        title="Sensorium",
        version=__version__,
        description="IoT telemetry: InfluxDB-compatible writes, JSON readings, SQL over Delta Lake.",
    )
    app.state.platform = platform
    # the server sets this to its own "stop now" test (uvicorn's should_exit): endless responses
    # (the live alert stream) end by themselves instead of holding the shutdown up
    app.state.stopping = lambda: False

    # -- errors: one place ------------------------------------------------------------------
    @app.exception_handler(SensoriumError)
    async def _sensorium_error(request: Request, exc: SensoriumError) -> Response:
        platform.metrics.requests.labels(request.url.path, str(exc.status)).inc()
        resp = _json(exc.to_dict(), exc.status)
        if "retry_after_s" in exc.context:
            resp.headers["Retry-After"] = str(exc.context["retry_after_s"])
        return resp

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _json({"code": "invalid", "message": msgs}, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _json({"code": "not_found" if exc.status_code == 404 else "invalid", "message": str(exc.detail)}, exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return _json({"code": "internal", "message": f"internal error: {type(exc).__name__}"}, 500)

    # users, tokens, roles and per-location access (sensorium.auth, docs/security.md): the
    # middleware authenticates every request; check_auth applies the route's policy and leaves
    # the principal on request.state.principal (its access scope on request.state.registry_scope)
    from sensorium.auth.http import install as install_auth
    from sensorium.auth.http import principal_of

    auth = install_auth(app, platform)

    def check_auth(request: Request) -> None:
        auth.check(request)

    async def ingest(
        request: Request,
        *,
        fmt: str,
        bucket: str | None,
        precision: str,
        accept_partial: bool,
        source: str,
    ) -> Response:
        check_auth(request)
        body = await read_body(request, s.max_body_bytes, s.max_decompressed_bytes)
        res: WriteResult = await asyncio.to_thread(
            platform.write,
            body,
            fmt=fmt,
            bucket=bucket or None,
            precision=precision,
            source=source,
            accept_partial=accept_partial,
            principal=principal_of(request),
        )
        platform.metrics.requests.labels(request.url.path, "400" if res.rejects else "204").inc()
        if not res.rejects:
            if fmt == "json":
                return _json(res.summary(s.max_reported_errors), 200)
            return Response(status_code=204)
        summary = res.summary(s.max_reported_errors)
        msg = (
            f"partial write: {res.rejected} of {res.lines} lines rejected, "
            f"{res.accepted_rows} points stored; first error: line {summary['errors'][0]['line']}: "
            f"{summary['errors'][0]['reason']}"
        )
        body_out = {
            "code": "invalid",
            "message": msg,
            **summary,
            # InfluxDB 3 shape, for clients that read it
            "error": "partial write of line protocol occurred",
            "data": [
                {"original_line": e["raw"], "line_number": e["line"], "error_message": e["reason"]}
                for e in summary["errors"]
            ],
        }
        return _json(body_out, 400)

    # -- writes -----------------------------------------------------------------------------
    @app.post("/api/v2/write", status_code=204, tags=["write"])
    async def write_v2(
        request: Request,
        bucket: str | None = Query(None, description="Bucket (default: `default`)"),
        org: str | None = Query(None, description="Accepted for client compatibility; unused"),
        precision: str = Query("ns", description="ns, us, ms or s"),
        accept_partial: bool = Query(True),
    ) -> Response:
        """InfluxDB v2 write API (line protocol; gzip bodies; `Authorization: Token …`)."""
        return await ingest(request, fmt="lp", bucket=bucket, precision=precision, accept_partial=accept_partial, source="http-v2")

    @app.post("/write", status_code=204, tags=["write"])
    async def write_v1(
        request: Request,
        db: str | None = Query(None, description="Database = bucket"),
        precision: str = Query("ns", description="n/ns, u/us, ms or s"),
        rp: str | None = Query(None, description="Accepted for compatibility; unused"),
        accept_partial: bool = Query(True),
    ) -> Response:
        """InfluxDB v1 write API."""
        return await ingest(request, fmt="lp", bucket=db, precision=precision, accept_partial=accept_partial, source="http-v1")

    @app.post("/api/v1/readings", tags=["write"])
    async def write_readings(
        request: Request, bucket: str | None = Query(None), accept_partial: bool = Query(True)
    ) -> Response:
        """JSON readings: a JSON array or NDJSON of `{device_id, timestamp, sensor_type,
        measurement_type, value, unit, location, metadata}`."""
        return await ingest(request, fmt="json", bucket=bucket, precision="ns", accept_partial=accept_partial, source="http-json")

    # -- queries ----------------------------------------------------------------------------
    async def run_query(request: Request, sql: str | None, bucket: str | None, fmt: str | None) -> Response:
        check_auth(request)
        if not sql:
            raise BadRequest("missing `sql`: pass a SELECT statement (query parameter or body)")
        table = await asyncio.to_thread(lambda: platform.query(sql, bucket, principal=principal_of(request)))
        accept = request.headers.get("accept", "")
        fmt = (fmt or ("arrow" if ARROW_STREAM in accept else "csv" if "text/csv" in accept else "json")).lower()
        if fmt == "json":
            return _json(table_to_json(table))
        if fmt == "csv":
            buf = io.BytesIO()
            pacsv.write_csv(table, buf)
            return Response(buf.getvalue(), media_type="text/csv")
        if fmt == "arrow":
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
            return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)
        raise BadRequest(f"unknown format '{fmt}' (json, csv or arrow)")

    @app.get("/api/v1/query", tags=["query"])
    async def query_get(
        request: Request,
        sql: str | None = Query(None),
        bucket: str | None = Query(None),
        format: str | None = Query(None, description="json (default), csv or arrow"),
    ) -> Response:
        """Sandboxed SQL (DuckDB): read-only SELECT over this bucket's measurements."""
        return await run_query(request, sql, bucket, format)

    @app.post("/api/v1/query", tags=["query"])
    async def query_post(
        request: Request,
        sql: str | None = Query(None),
        bucket: str | None = Query(None),
        format: str | None = Query(None),
    ) -> Response:
        """As GET; the SQL may also come as a JSON body `{"sql": ..., "bucket": ...}` or plain text."""
        if sql is None:
            raw = await read_body(request, s.max_body_bytes, s.max_decompressed_bytes)
            ctype = request.headers.get("content-type", "")
            if "json" in ctype:
                try:
                    data = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise BadRequest(f"invalid JSON body: {exc}") from None
                if not isinstance(data, dict):
                    raise BadRequest("JSON body must be an object with `sql`")
                for key in ("sql", "bucket", "format"):
                    if data.get(key) is not None and not isinstance(data[key], str):
                        raise BadRequest(f"`{key}` in the JSON body must be a string")
                sql = data.get("sql")
                bucket = bucket or data.get("bucket")
                format = format or data.get("format")
            else:
                sql = raw.decode("utf-8", errors="replace")
        return await run_query(request, sql, bucket, format)

    @app.get("/api/v1/latest", tags=["query"])
    async def latest(
        request: Request,
        bucket: str | None = Query(None),
        measurement: str | None = Query(None),
        device_id: str | None = Query(None),
    ) -> Response:
        """Last value of each field per series (last-value cache)."""
        check_auth(request)
        tags = {k: v for k, v in request.query_params.items() if k not in ("bucket", "measurement", "p", "u")}
        if "principal" in tags:
            raise BadRequest("`principal` is not a tag filter of /api/v1/latest")
        rows = await asyncio.to_thread(
            lambda: platform.latest(bucket, measurement, principal=principal_of(request), **tags))
        for r in rows:
            t = r["time"]
            if not isinstance(t, str):
                r["time"] = rfc3339(pa.array([t], pa.int64()).cast(pa.timestamp("ns", tz="UTC")))[0].as_py()
        return _json({"series": rows})

    @app.get("/api/v1/measurements", tags=["query"])
    async def measurements(request: Request, bucket: str | None = Query(None)) -> Response:
        check_auth(request)
        b = bucket or s.default_bucket
        return _json({"bucket": b, "measurements": [
            {"name": m, "columns": platform.registry.columns(b, m)} for m in platform.measurements(b)
        ]})

    @app.get("/api/v1/storage", tags=["ops"])
    async def storage(request: Request) -> Response:
        check_auth(request)
        return _json(await asyncio.to_thread(platform.storage_stats))

    # -- quality ----------------------------------------------------------------------------
    @app.get("/api/v1/quality", tags=["quality"])
    async def quality(request: Request, top: int = Query(10, ge=1, le=1000)) -> Response:
        check_auth(request)
        from sensorium.quality.report import quality_report

        def report() -> dict[str, Any]:
            platform.process_pending()
            return quality_report(platform.deadletters, top=top, findings=platform.quality_findings())

        return _json(await asyncio.to_thread(report))

    @app.get("/api/v1/dead-letters", tags=["quality"])
    async def dead_letters(
        request: Request,
        bucket: str | None = Query(None),
        rule: str | None = Query(None),
        device_id: str | None = Query(None),
        reason: str | None = Query(None, description="substring of the reason"),
        include_replayed: bool = Query(False),
        limit: int = Query(100, ge=1, le=10_000),
        offset: int = Query(0, ge=0),
    ) -> Response:
        check_auth(request)
        store = platform.deadletters
        items = store.list(bucket=bucket, rule=rule, device_id=device_id, reason_contains=reason,
                           include_replayed=include_replayed, limit=limit, offset=offset)
        total = store.count(bucket=bucket, rule=rule, device_id=device_id, reason_contains=reason,
                            include_replayed=include_replayed)
        return _json({"total": total, "items": items})

    @app.post("/api/v1/dead-letters/replay", tags=["quality"])
    async def dead_letters_replay(
        request: Request,
        bucket: str | None = Query(None),
        rule: str | None = Query(None),
        device_id: str | None = Query(None),
        reason: str | None = Query(None),
        limit: int = Query(100_000, ge=1),
    ) -> Response:
        """Re-run dead letters through the current rules; the ones that now pass are stored."""
        check_auth(request)
        out = await asyncio.to_thread(
            platform.replay_dead_letters, bucket=bucket, rule=rule, device_id=device_id, reason_contains=reason, limit=limit
        )
        return _json(out)

    # -- operations -------------------------------------------------------------------------
    @app.get("/health", tags=["ops"])
    async def health() -> Response:
        err = platform.stream.error if platform.stream is not None else None
        log_ok = bool(getattr(platform.wal, "connected", True))  # NATS: the client is connected
        bad = err is not None or not log_ok
        return _json({"status": "fail" if bad else "pass", "name": "sensorium", "version": __version__,
                      "role": platform.role, "hot_rows": platform.hot.rows(),
                      "wal_segments": platform.wal.segment_count, "log_connected": log_ok,
                      "stream_error": err}, 503 if bad else 200)

    @app.get("/ping", tags=["ops"])
    @app.head("/ping", tags=["ops"])
    async def ping() -> Response:
        return Response(status_code=204, headers={"X-Influxdb-Version": "sensorium-" + __version__})

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(platform.metrics.render(), media_type="text/plain; version=0.0.4")

    from sensorium.api import stream_routes

    stream_routes.register(app, platform, check_auth, table_to_json)
    from sensorium.api import forecast_routes

    forecast_routes.register(app, platform, check_auth, table_to_json)
    from sensorium.api import device_config_routes

    device_config_routes.register(app, platform, check_auth, table_to_json)
    from sensorium.api import command_routes

    command_routes.register(app, platform, check_auth, table_to_json)
    from sensorium.api import automation_routes

    automation_routes.register(app, platform, check_auth, table_to_json)
    from sensorium.api import dashboard_routes

    dashboard_routes.register(app, platform, check_auth, table_to_json)
    from sensorium.api import graph_routes, registry_routes

    registry_routes.register(app, platform, check_auth, table_to_json)
    graph_routes.register(app, platform, check_auth, table_to_json)
    from sensorium.api import agent_routes

    agent_routes.register(app, platform, check_auth, table_to_json)
    from sensorium.api import search_routes

    search_routes.register(app, platform, check_auth, table_to_json)
    from sensorium.api import auth_routes, document_routes

    auth_routes.register(app, platform, check_auth, table_to_json)
    document_routes.register(app, platform, check_auth, table_to_json)
    return app
