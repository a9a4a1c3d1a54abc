"""End to end: a platform with ``cache = "redis"`` answers ``/api/v1/latest`` from Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sensorium.platform import Sensorium
from tests.conftest import T0, FakeClock, make_settings
from tests.query.test_cache_contract import REDIS_URL, require_redis
from tests.query.test_cache_redis import closed_port


@pytest.fixture
def redis_client() -> Iterator[Any]:
    c = require_redis()
    yield c
    c.close()


def _client(p: Sensorium) -> Any:
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app

    return TestClient(create_app(p), raise_server_exceptions=False)


def test_latest_route_is_served_from_redis(tmp_path: Path, clock: FakeClock, redis_client: Any) -> None:
    instance = f"test-e2e-{uuid.uuid4().hex[:8]}"
    settings = make_settings(tmp_path / "data", cache="redis", redis_url=REDIS_URL, cache_instance=instance)
    p = Sensorium(settings, clock=clock, background=False)
    try:
        with _client(p) as c:
            body = "\n".join([
                f"climate,device_id=d1,room=kitchen temperature=21.5,ok=true {T0}",
                f"climate,device_id=d1,room=kitchen temperature=22.5,ok=false,label=\"x\" {T0 + 10**9}",
                f"climate,device_id=d2,room=hall temperature=19.0,co2=400i,ok=true {T0}",
            ])
            assert c.post("/api/v2/write", params={"bucket": "home"}, content=body).status_code == 204
            r = c.get("/api/v1/latest", params={"bucket": "home", "device_id": "d1"})
            assert r.status_code == 200, r.text
            assert r.json()["series"] == [{
                "bucket": "home", "measurement": "climate",
                "tags": {"device_id": "d1", "room": "kitchen"},
                "time": "2026-01-01T00:00:01Z",
                "fields": {"temperature": 22.5, "ok": False, "label": "x"},
            }]
        # the values are in Redis, under the instance's prefix
        key = f"sensorium:{instance}:lv:home:climate:s:device_id=d1,room=kitchen"
        assert redis_client.hget(key, "temperature") == f"{T0 + 10**9 + 2**63:020d}f22.5".encode()
        # what Redis says is what the route answers: change it behind the platform's back
        redis_client.hset(key, "temperature", f"{T0 + 5 * 10**9 + 2**63:020d}f-1.0")
        with _client(p) as c:
            row = c.get("/api/v1/latest", params={"bucket": "home", "device_id": "d1"}).json()["series"][0]
        assert row["fields"]["temperature"] == -1.0 and row["time"] == "2026-01-01T00:00:05Z"
    finally:
        p.latest_cache.clear()
        p.close()
    # a restart (Redis flushed for this instance) answers from the stored data
    redis_client.delete(*redis_client.keys(f"sensorium:{instance}:*") or ["none"])
    p = Sensorium(settings, clock=clock, background=False)
    try:
        rows = p.latest("home", device_id="d2")
        assert [r["fields"] for r in rows] == [{"temperature": 19.0, "co2": 400, "ok": True}]
        assert redis_client.exists(f"sensorium:{instance}:lv:home:climate:seeded")
    finally:
        p.latest_cache.clear()
        p.close()


def test_redis_down_answers_503_and_writes_still_succeed(tmp_path: Path, clock: FakeClock) -> None:
    settings = make_settings(tmp_path / "data", cache="redis",
                             redis_url=f"redis://127.0.0.1:{closed_port()}/0")
    p = Sensorium(settings, clock=clock, background=False)
    try:
        with _client(p) as c:
            assert c.post("/api/v2/write", params={"bucket": "home"},
                          content=f"climate,device_id=d1 t=1 {T0}").status_code == 204
            r = c.get("/api/v1/latest", params={"bucket": "home"})
            assert r.status_code == 503
            assert r.json()["code"] == "cache_unavailable"
            assert "cannot reach Redis" in r.json()["message"]
            assert c.post("/api/v1/query", params={"bucket": "home"},
                          content="SELECT count(*) AS n FROM climate").status_code == 200
    finally:
        p.close()
