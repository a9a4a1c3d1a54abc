"""Operational endpoints: health, ping, measurements, storage, OpenAPI."""

from __future__ import annotations

from typing import Any

from tests.conftest import T0


def test_health_and_ping(client: Any) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "pass"
    assert client.get("/ping").status_code == 204


def test_measurements_and_storage(client: Any, platform: Any) -> None:
    client.post("/api/v2/write", content=f"climate,device_id=a temperature=20,rssi=-60i {T0}")
    ms = client.get("/api/v1/measurements").json()
    assert ms["measurements"] == [
        {"name": "climate", "columns": {"device_id": "tag", "rssi": "integer", "temperature": "float"}}
    ]
    platform.flush(force=True)
    st = client.get("/api/v1/storage").json()
    assert st["values"] == 2 and st["tables"][0]["measurement"] == "climate"


def test_openapi_lists_write_and_query(client: Any) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/api/v2/write", "/write", "/api/v1/readings", "/api/v1/query", "/api/v1/quality"):
        assert path in spec["paths"]


def test_unknown_route_is_404_json(client: Any) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_wrong_parameter_type_is_400(client: Any) -> None:
    r = client.get("/api/v1/dead-letters", params={"limit": "lots"})
    assert r.status_code == 400 and "limit" in r.json()["message"]
