"""``POST /api/v1/forecast``: forecast a stored series (seasonal naive, ETS, Prophet), optionally
storing the forecast as ``<measurement>_forecast``. See :mod:`sensorium.detect.forecast`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from sensorium.api.body import json_response as _json
from sensorium.auth.http import principal_of
from sensorium.errors import BadRequest
from sensorium.platform import Sensorium


class ForecastRequest(BaseModel):
    """The JSON body of ``POST /api/v1/forecast``."""

    model_config = ConfigDict(extra="forbid")

    measurement: str = Field(min_length=1)
    field: str = Field(min_length=1)
    tags: dict[str, str] = Field(default_factory=dict, description="Tag filters selecting the series.")
    bucket: str | None = None
    start: str | None = Field(None, description="History start: RFC 3339, ns, or now-<duration>.")
    end: str | None = Field(None, description="History end (default: after the latest point).")
    history: str | None = Field(None, description="History length before the latest point, e.g. 14d (default 28d).")
    every: str | None = Field(None, description="Grid width, e.g. 15m (default: inferred).")
    horizon: StrictInt | str = Field("1d", description="Steps ahead, or a duration such as 1d.")
    model: Literal["ets", "naive", "prophet"] = "ets"
    level: float = Field(0.95, gt=0.0, lt=1.0, description="Prediction-interval coverage.")
    season_length: int | None = Field(None, ge=1, le=10_000, description="Samples per season (default: detected).")
    store: bool = Field(False, description="Also store the forecast as <measurement>_forecast.")




def parse_request(body: bytes) -> ForecastRequest:
    """The body as a :class:`ForecastRequest`, or :class:`BadRequest` saying what is wrong."""
    try:
        data = orjson.loads(body or b"null")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body must be JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest('body must be a JSON object like {"measurement": "climate", "field": "temperature"}')
    try:
        return ForecastRequest.model_validate(data)
    except ValidationError as exc:
        msgs = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise BadRequest(msgs) from None


def register(app: FastAPI, platform: Sensorium, check_auth: Callable[[Request], None], to_json: Callable[[Any], Any]) -> None:
    @app.post("/api/v1/forecast", tags=["query"])
    async def forecast(request: Request) -> Response:
        """Forecast one series: ``{"measurement", "field", "tags", "horizon", "model", ...}`` →
        ``time, forecast, lower, upper`` rows plus the model, season length and grid used."""
        check_auth(request)
        req = parse_request(await request.body())
        from sensorium.detect.forecast import forecast_meta, forecast_series

        p = principal_of(request)  # a user's or guest's: series of their devices only
        if req.store:
            p.require_write("store forecasts")
        await asyncio.to_thread(platform.check_series_scope, p, req.measurement, req.tags, req.bucket)

        table = await asyncio.to_thread(
            forecast_series, platform, req.measurement, req.field, tags=req.tags, bucket=req.bucket,
            start=req.start, end=req.end, history=req.history, every=req.every, horizon=req.horizon,
            model=req.model, level=req.level, season_length=req.season_length, store=req.store,
        )
        out = to_json(table)
        out.update(forecast_meta(table))
        return _json(out)

    @app.get("/api/v1/forecast/compare", tags=["query"])
    async def compare(
        request: Request,
        measurement: str = Query(..., min_length=1),
        field: str = Query(..., min_length=1),
        tag: list[str] = Query([], description="Series filter key=value (repeatable)."),
        model: str | None = Query(None),
        start: str | None = Query(None),
        end: str | None = Query(None),
        bucket: str | None = Query(None),
    ) -> Response:
        """A stored forecast next to the actuals: ``time, actual, forecast, lower, upper, error,
        z, score`` (forecast-error anomalies: ``score`` in [0, 1])."""
        check_auth(request)
        tags: dict[str, str] = {}
        for t in tag:
            k, sep, v = t.partition("=")
            if not sep or not k:
                raise BadRequest(f"tag must be key=value; got {t!r}")
            tags[k] = v
        from sensorium.detect.forecast import compare_forecast

        await asyncio.to_thread(platform.check_series_scope, principal_of(request), measurement, tags, bucket)
        table = await asyncio.to_thread(
            compare_forecast, platform, measurement, field, tags=tags, model=model, start=start, end=end,
            bucket=bucket,
        )
        return _json(to_json(table))
