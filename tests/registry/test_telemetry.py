"""Telemetry meets the registry: unknown devices auto-register through the write path, and every
query can join the registry's tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import event

from sensorium.errors import QueryError
from sensorium.platform import Sensorium
from tests.conftest import T0, FakeClock, make_settings
from tests.registry.conftest import home

S = 1_000_000_000


def lp(*rows: tuple[str, float, int]) -> str:
    return "\n".join(f"climate,device_id={d} temperature={v} {T0 + i * S}" for d, v, i in rows)


def test_unknown_devices_auto_register_as_unregistered(platform: Sensorium) -> None:
    store = platform.registry_store
    assert store is not None
    home(store)
    res = platform.write(lp(("therm-1", 20.0, 0), ("new-1", 21.0, 1), ("new-2", 22.0, 2), ("new-1", 23.0, 3)))
    assert res.accepted_rows == 4
    total, items = store.entities("device", {"status": "unregistered"})
    assert total == 2 and [d["id"] for d in items] == ["new-1", "new-2"]
    assert items[0]["first_seen_at"] == "2026-01-01T01:00:00Z"  # the platform's (fake) clock
    assert store.get("therm-1")["status"] == "active"  # a known device is left as it is
    # JSON readings and bulk loads register too; rejected points do not
    platform.write('[{"device_id": "json-1", "timestamp": "2026-01-01T00:00:00Z", "sensor_type": "climate", '
                   '"measurement_type": "temperature", "value": 20, "unit": "degC"}]', fmt="json")
    platform.write(lp(("bad-1", 1e9, 0)))  # out of range: rejected
    ids = {d["id"] for d in store.entities("device", limit=100)[1]}
    assert "json-1" in ids and "bad-1" not in ids


def test_known_devices_cost_no_registry_round_trip(platform: Sensorium) -> None:
    store = platform.registry_store
    assert store is not None
    platform.write(lp(("a", 1, 0), ("b", 2, 0)))
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    platform.write(lp(("a", 1, 1), ("b", 2, 1), ("a", 3, 2)))
    assert statements == []
    platform.write(lp(("a", 1, 3), ("c", 2, 3)))  # one new device: one short transaction
    assert any("INSERT INTO entities" in s for s in statements)
    assert store.get("c")["status"] == "unregistered"


def test_auto_registration_can_be_turned_off(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "d", stream={"enabled": False}, parse_workers=0, registry={"auto_register": False})
    with Sensorium(s, clock=FakeClock(), background=False) as p:
        p.write(lp(("x", 1, 0)))
        assert p.registry_store is not None and p.registry_store.counts()["device"] == 0


def test_queries_join_device_metadata(platform: Sensorium) -> None:
    store = platform.registry_store
    assert store is not None
    home(store)
    platform.write(lp(("therm-1", 20.0, 0), ("therm-1", 22.0, 1), ("gw-1", 30.0, 2), ("stray", 5.0, 3)))
    t = platform.query(
        "SELECT d.room, d.location, d.owner_id, avg(c.temperature) AS t, count(*) AS n "
        "FROM climate c JOIN devices d USING (device_id) GROUP BY ALL ORDER BY d.room NULLS LAST"
    )
    assert t.to_pylist() == [
        {"room": "kitchen", "location": "home", "owner_id": "alice", "t": 21.0, "n": 2},
        {"room": "office", "location": "home", "owner_id": "alice", "t": 30.0, "n": 1},
        {"room": None, "location": None, "owner_id": None, "t": 5.0, "n": 1},  # auto-registered
    ]
    t = platform.query(
        "WITH per_room AS (SELECT r.name AS room, l.name AS location, c.temperature FROM climate c "
        "JOIN devices d USING (device_id) JOIN rooms r ON r.room_id = d.room "
        "JOIN locations l ON l.location_id = r.location) "
        "SELECT location, room, max(temperature) AS hi FROM per_room GROUP BY ALL ORDER BY room"
    )
    assert t.to_pylist() == [{"location": "Home", "room": "Kitchen", "hi": 22.0},
                             {"location": "Home", "room": "Office", "hi": 30.0}]
    t = platform.query("SELECT s.sensor_id, s.unit, s.room FROM sensors s WHERE s.field = 'temperature'")
    assert t.to_pylist() == [{"sensor_id": "therm-1-t", "unit": "degC", "room": "kitchen"}]
    t = platform.query("SELECT json_extract_string(attributes, '$.vendor') AS v FROM devices WHERE device_id = 'therm-1'")
    assert t.to_pylist() == [{"v": "acme"}]
    # a change to the registry shows in the next query
    store.patch("device", "gw-1", {"room_id": "kitchen"})
    t = platform.query("SELECT room FROM devices WHERE device_id = 'gw-1'")
    assert t.to_pylist() == [{"room": "kitchen"}]
    with pytest.raises(QueryError, match="unknown table 'users'"):
        platform.query("SELECT * FROM users")  # personal data is not in SQL


def test_a_measurement_named_like_a_registry_table_wins(platform: Sensorium) -> None:
    platform.write(f"devices,device_id=x uptime=5i {T0}")
    t = platform.query("SELECT device_id, uptime FROM devices")
    assert t.to_pylist() == [{"device_id": "x", "uptime": 5}]
    assert platform.query("SELECT count(*) AS n FROM rooms").to_pylist() == [{"n": 0}]


def test_a_read_only_process_queries_the_registry_without_changing_it(tmp_path: Path) -> None:
    s = make_settings(tmp_path / "d", stream={"enabled": False}, parse_workers=0)
    with Sensorium(s, read_only=True, background=False) as p:
        assert p.registry_store is None  # none there yet: nothing is created
    assert not (tmp_path / "d" / "registry.sqlite").exists()
    with Sensorium(s, clock=FakeClock(), background=False) as p:
        p.write(lp(("dev-1", 1.0, 0)))
        with Sensorium(s, read_only=True, background=False) as ro:
            assert ro.query("SELECT device_id, status FROM devices").to_pylist() == [
                {"device_id": "dev-1", "status": "unregistered"}]


def test_ingest_nodes_register_and_the_api_node_serves_one_postgres_registry(tmp_path: Path) -> None:
    """Scale-out roles: ingest nodes only auto-register (they hold no SQL tables); an api node
    serves the registry and sees what the ingest nodes registered after it opened (the revision
    counter invalidates its caches)."""
    import uuid

    from tests.log.test_log_contract import NATS_URL, require_nats
    from tests.registry.conftest import drop_schema, pg_url

    require_nats()
    url = pg_url()
    schema = f"reg_{uuid.uuid4().hex[:12]}"
    stream = f"reg_{uuid.uuid4().hex[:12]}"
    settings = make_settings(
        tmp_path / "data", log_backend="nats", nats_url=NATS_URL, nats_stream=stream, parse_workers=0,
        stream={"enabled": False}, registry={"url": url, "pg_schema": schema},
    )
    from sensorium.log.nats import JetStreamLog

    one = two = api = None
    try:
        one = Sensorium(settings, role="ingest", node_id="in1", background=False)
        two = Sensorium(settings, role="ingest", node_id="in2", background=False)
        api = Sensorium(settings, role="api")
        assert one.engine.extra is None and api.registry_store is not None
        assert api.query("SELECT count(*) AS n FROM devices").to_pylist() == [{"n": 0}]
        one.write(lp(("dev-1", 1.0, 0), ("dev-2", 2.0, 0)))
        two.write(lp(("dev-2", 2.0, 1), ("dev-3", 3.0, 1)))  # dev-2 registered once
        t = api.query("SELECT device_id, status FROM devices ORDER BY 1")
        assert t.to_pylist() == [{"device_id": f"dev-{i}", "status": "unregistered"} for i in (1, 2, 3)]
        assert api.registry_store.entities("device")[0] == 3
    finally:
        for p in (one, two, api):
            if p is not None:
                p.close()
        JetStreamLog(NATS_URL, stream).delete_stream()
        drop_schema(schema)


def test_a_read_only_process_beside_an_older_registry_still_answers_queries(tmp_path: Path) -> None:
    from sensorium.registry import migrate

    s = make_settings(tmp_path / "d", stream={"enabled": False}, parse_workers=0)
    with Sensorium(s, clock=FakeClock(), background=False) as p:
        p.write(lp(("dev-1", 1.0, 0)))
    migrate.downgrade(f"sqlite:///{tmp_path / 'd' / 'registry.sqlite'}", "unused", "0001")
    with Sensorium(s, read_only=True, background=False) as ro:
        assert ro.registry_store is None  # not migrated by a reader
        assert ro.query("SELECT count(*) AS n FROM climate").to_pylist() == [{"n": 1}]
    with Sensorium(s, clock=FakeClock(), background=False) as p:  # a writer migrates it
        assert p.query("SELECT device_id FROM devices").to_pylist() == [{"device_id": "dev-1"}]
