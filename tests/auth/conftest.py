"""A platform with authentication on and two households:

* ``alice`` (user) OWNS ``home`` (room ``kitchen``: devices ``a1``, ``a2``);
* ``bob`` (user) OWNS ``cabin`` (device ``b1``);
* ``gus`` (guest) HAS_ACCESS ``home``; ``root`` is an admin; ``x9`` sends data and is nobody's.

Telemetry in ``climate`` (every device) and ``power`` (``b1`` only), anomaly scores and rollups
from the stream, an alert ``hot`` on ``a1`` and on ``b1``. Argon2 runs with cheap parameters.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sensorium.api.app import create_app
from sensorium.platform import Sensorium
from sensorium.rules.loader import parse_rules
from tests.conftest import T0, FakeClock, make_settings

S = 1_000_000_000
#: cheap Argon2 for tests (the defaults take ~50 ms per hash)
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 8, "argon2_parallelism": 1}
PASSWORD = "correct horse battery"
RULES = """
[[rules]]
name = "hot"
kind = "threshold"
measurement = "climate"
field = "temperature"
above = { warning = 50 }
"""


def auth_settings(data_dir: Path, **kw: Any) -> Any:
    auth = {"enabled": True, **FAST, **kw.pop("auth", {})}
    return make_settings(data_dir, parse_workers=0, auth=auth, **kw)


@dataclass
class World:
    platform: Sensorium
    client: TestClient
    clock: FakeClock
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, str] = field(default_factory=dict)

    def as_(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Token {self.tokens[who]}"}

    def get(self, who: str, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self.as_(who), **kw)

    def post(self, who: str, path: str, **kw: Any) -> Any:
        return self.client.post(path, headers=self.as_(who), **kw)

    def sql(self, who: str, sql: str) -> list[list[Any]]:
        r = self.get(who, "/api/v1/query", params={"sql": sql})
        assert r.status_code == 200, r.text
        rows: list[list[Any]] = r.json()["rows"]
        return rows


def lines() -> str:
    out = []
    for i in range(30):
        t = T0 + i * S
        for dev, temp in (("a1", 20.0), ("a2", 21.0), ("b1", 22.0), ("x9", 23.0)):
            hot = 70.0 if dev in ("a1", "b1") and i >= 25 else temp + (i % 3) * 0.1
            out.append(f"climate,device_id={dev} temperature={hot} {t}")
        out.append(f"power,device_id=b1 watts={100 + i} {t}")
    return "\n".join(out)


def seed(p: Sensorium) -> None:
    from sensorium.auth.service import Auth

    store = p.registry_store
    assert store is not None
    auth = Auth(p.settings, store, clock=p.clock)
    auth.add_user("root", name="Root Admin", email="root@example.com", role="admin", password=PASSWORD)
    auth.add_user("alice", name="Alice Liddell", email="alice@example.com", role="user", password=PASSWORD)
    auth.add_user("bob", name="Bob Builder", email="bob@example.com", role="user", password=PASSWORD)
    auth.add_user("gus", name="Gus Guest", role="guest", password=PASSWORD)
    store.create("location", {"id": "home", "name": "Home"})
    store.create("location", {"id": "cabin", "name": "Cabin"})
    store.create("room", {"id": "kitchen", "name": "Kitchen", "location_id": "home"})
    store.create("device", {"id": "a1", "room_id": "kitchen"})
    store.create("device", {"id": "a2", "room_id": "kitchen"})
    store.create("device", {"id": "b1", "location_id": "cabin"})
    store.relate({"src": "alice", "rel": "OWNS", "dst": "home"})
    store.relate({"src": "bob", "rel": "OWNS", "dst": "cabin"})
    store.relate({"src": "gus", "rel": "HAS_ACCESS", "dst": "home"})


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One world for the many read-only cases of a module (none of them may change it)."""
    yield from make_world(tmp_path_factory.mktemp("world"))


def make_world(tmp_path: Path) -> Iterator[World]:
    clock = FakeClock(T0 + 60 * S)
    p = Sensorium(auth_settings(tmp_path / "data"), clock=clock, background=False, rules=parse_rules(RULES))
    try:
        seed(p)
        res = p.write(lines())
        assert res.accepted_rows == 150, res.summary()
        p.process_stream()
        clock.advance(3600)
        p.process_stream()  # idle series: windows close, rollups are written
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            w = World(p, c, clock)
            from sensorium.auth.service import Auth

            auth = Auth(p.settings, p.registry_store, clock=clock)
            for who in ("root", "alice", "bob", "gus"):
                w.tokens[who], info = auth.create_token(who, f"{who}-test")
                w.token_ids[who] = info["id"]
            yield w
    finally:
        p.close()
