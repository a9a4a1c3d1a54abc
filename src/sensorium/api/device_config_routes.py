"""Routes of device configuration: sampling-rate advice, and publishing it to the device (MQTT)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from sensorium.api.body import json_response as _json
from sensorium.errors import BadRequest
from sensorium.platform import Sensorium


def register(
    app: FastAPI,
    platform: Sensorium,
    check_auth: Callable[[Request], None],
    to_json: Callable[[Any], Any],
) -> None:
    from sensorium.detect import sampling

    def _check(hours: float, tolerance: str, stat: str) -> None:
        if not (math.isfinite(hours) and 0 < hours <= sampling.MAX_HOURS):
            raise BadRequest(f"hours must be within (0, {sampling.MAX_HOURS}]; got {hours}")
        sampling.parse_tolerance(tolerance)
        if stat not in ("p99", "max"):
            raise BadRequest(f"stat must be p99 or max; got {stat!r}")

    async def _advice(
        device_id: str, hours: float, tolerance: str, stat: str, noise: bool, bucket: str | None
    ) -> dict[str, Any]:
        _check(hours, tolerance, stat)
        return await asyncio.to_thread(
            sampling.device_advice, platform, device_id, hours=hours, tolerance=tolerance,
            bucket=bucket, stat=stat, noise=noise,
        )

    @app.get("/api/v1/devices/{device_id}/sampling", tags=["devices"])
    async def device_sampling(
        request: Request,
        device_id: str,
        hours: float = Query(24.0, description="Window analysed, ending now (hours)."),
        tolerance: str = Query("1%", description="Absolute (field units) or N% of each field's p1-p99 range."),
        stat: str = Query("p99", description="Error statistic: p99 or max of the absolute error."),
        noise: bool = Query(True, description="Widen each tolerance by what the series' own white noise causes."),
        bucket: str | None = Query(None),
    ) -> Response:
        """Sampling-rate advice: per field the longest interval (1 s ... 15 min) at which linear
        interpolation of the subsampled series stays within tolerance; the device's advice is
        the shortest over its fields. 404 for an unknown device."""
        check_auth(request)
        return _json(await _advice(device_id, hours, tolerance, stat, noise, bucket))

    @app.post("/api/v1/devices/{device_id}/sampling/publish", tags=["devices"])
    async def publish_sampling(
        request: Request,
        device_id: str,
        hours: float = Query(24.0),
        tolerance: str = Query("1%"),
        stat: str = Query("p99"),
        noise: bool = Query(True),
        bucket: str | None = Query(None),
    ) -> Response:
        """Publish the advice as device configuration: retained QoS-1 MQTT message on
        ``sensorium/devices/{device_id}/config``. 503 when no broker is reachable."""
        check_auth(request)
        topic = sampling.config_topic(device_id)  # 400 before any work for an unusable id
        advice = await _advice(device_id, hours, tolerance, stat, noise, bucket)
        payload = sampling.config_payload(advice)
        host, port = sampling.broker_of(platform.settings)
        await sampling.publish_config(host, port, device_id, payload)
        return _json({"published": True, "topic": topic, "broker": f"{host}:{port}",
                      "retain": True, "qos": 1, "config": payload})
