"""Registry fixtures: a store on SQLite (in ``tmp_path``) and on the real PostgreSQL
(``SENSORIUM_TEST_POSTGRES_DSN``, a fresh schema per test, dropped afterwards; skipped when the
server is absent -- failing under ``CI=true``), and a platform with its HTTP client."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sensorium.platform import Sensorium
from sensorium.registry.store import RegistryStore
from tests.conftest import FakeClock, make_settings, service_missing

PG_DSN = os.environ.get("SENSORIUM_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def pg_url() -> str:
    """The test server's URL for SQLAlchemy; skips without one (fails under CI)."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover
        service_missing(f"psycopg is not installed ({exc}): pip install 'sensorium[postgres]'")
    try:
        psycopg.connect(PG_DSN, connect_timeout=2).close()
    except psycopg.OperationalError as exc:
        service_missing(f"PostgreSQL not reachable at {PG_DSN}: {exc}")
    return PG_DSN


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(url, pg_schema) of an empty registry database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite'}", "unused"
        return
    url = pg_url()
    schema = f"reg_{uuid.uuid4().hex[:12]}"
    try:
        yield url, schema
    finally:
        drop_schema(schema)


@pytest.fixture
def store(backend: tuple[str, str]) -> Iterator[RegistryStore]:
    from sensorium.registry.db import resolve_url

    url, schema = backend
    s = RegistryStore(resolve_url(url, Path(".")), pg_schema=schema, clock=FakeClock())
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Sensorium]:
    p = Sensorium(make_settings(tmp_path / "data", stream={"enabled": False}, parse_workers=0),
                  clock=FakeClock(), background=False)
    yield p
    p.close()


@pytest.fixture
def client(platform: Sensorium) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app

    with TestClient(create_app(platform), raise_server_exceptions=False) as c:
        yield c


def home(store: RegistryStore) -> None:
    """A small household: alice owns home (kitchen, office), bob has access to the office."""
    store.create("user", {"id": "alice", "name": "Alice", "email": "alice@example.com", "role": "admin"})
    store.create("user", {"id": "bob", "name": "Bob", "role": "guest"})
    store.create("location", {"id": "home", "name": "Home", "timezone": "Europe/Berlin"})
    store.create("location", {"id": "cabin", "name": "Cabin"})
    store.create("room", {"id": "kitchen", "name": "Kitchen", "location_id": "home"})
    store.create("room", {"id": "office", "name": "Office", "location_id": "home", "floor": "1"})
    store.create("device", {"id": "gw-1", "name": "Gateway", "type": "gateway", "gateway": True, "room_id": "office"})
    store.create("device", {"id": "therm-1", "name": "Thermostat", "type": "thermostat", "room_id": "kitchen",
                            "attributes": {"vendor": "acme"}})
    store.create("device", {"id": "plug-1", "name": "Plug", "type": "plug", "location_id": "cabin", "status": "inactive"})
    store.create("sensor", {"id": "therm-1-t", "device_id": "therm-1", "measurement": "climate", "field": "temperature", "unit": "degC"})
    store.create("actuator", {"id": "therm-1-valve", "device_id": "therm-1", "command_topic": "home/therm-1/set",
                              "capabilities": ["open", "close"]})
    store.relate({"src": "alice", "rel": "OWNS", "dst": "home"})
    store.relate({"src": "bob", "rel": "HAS_ACCESS", "dst": "office"})
    store.relate({"src": "therm-1", "rel": "COMMUNICATES_WITH", "dst": "gw-1", "properties": {"latency_ms": 12}})
