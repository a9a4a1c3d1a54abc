"""The registry store, run against SQLite and the real PostgreSQL (``backend`` fixture)."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from sensorium.errors import BadRequest, NotFound
from sensorium.registry.errors import Conflict
from sensorium.registry.store import RegistryStore
from tests.registry.conftest import home


def test_create_get_and_generated_ids(store: RegistryStore) -> None:
    loc = store.create("location", {"name": "Main Street 1", "latitude": 52.5, "longitude": 13.4})
    assert loc["id"] == "main-street-1" and loc["kind"] == "location"
    again = store.create("location", {"name": "Main Street 1"})
    assert again["id"] == "main-street-1-2"
    anon = store.create("service", {})
    assert anon["id"].startswith("service-") and anon["name"] == anon["id"]
    got = store.get("main-street-1")
    assert got == loc
    assert got["created_at"].endswith("Z")
    with pytest.raises(NotFound):
        store.get("main-street-1", "room")  # exists, but not as a room
    with pytest.raises(Conflict):
        store.create("device", {"id": "main-street-1"})  # ids are global across kinds


def test_references_are_checked_and_a_device_is_where_its_room_is(store: RegistryStore) -> None:
    home(store)
    therm = store.get("therm-1")
    assert therm["location_id"] == "home"  # from its room
    with pytest.raises(BadRequest, match="room_id: no room 'attic'"):
        store.create("device", {"id": "d9", "room_id": "attic"})
    with pytest.raises(BadRequest, match="room_id: 'home' is a location, not a room"):
        store.create("device", {"id": "d9", "room_id": "home"})
    with pytest.raises(BadRequest, match="location_id: 'cabin' but room 'kitchen' is in 'home'"):
        store.create("device", {"id": "d9", "room_id": "kitchen", "location_id": "cabin"})
    with pytest.raises(BadRequest, match="colour: unknown field"):
        store.create("device", {"id": "d9", "colour": "red"})
    with pytest.raises(BadRequest, match="status"):
        store.create("device", {"id": "d9", "status": "broken"})
    with pytest.raises(BadRequest, match="unknown time zone"):
        store.create("location", {"id": "x", "timezone": "Mars/Olympus"})
    # moving a room moves its devices; moving a device to a room moves it to the room's location
    store.patch("room", "kitchen", {"location_id": "cabin"})
    assert store.get("therm-1")["location_id"] == "cabin"
    store.patch("device", "therm-1", {"room_id": "office"})
    assert store.get("therm-1")["location_id"] == "home"


def test_put_replaces_and_patch_merges(store: RegistryStore) -> None:
    home(store)
    out = store.patch("device", "therm-1", {"firmware": "2.1", "attributes": {"vendor": None, "model": "T1"}})
    assert out["firmware"] == "2.1" and out["attributes"] == {"model": "T1"} and out["type"] == "thermostat"
    created_at = out["created_at"]
    out, created = store.replace("device", "therm-1", {"name": "Thermo", "room_id": "kitchen"})
    assert not created and out["type"] is None and out["firmware"] is None and out["attributes"] == {}
    assert out["created_at"] == created_at
    out, created = store.replace("device", "new-1", {"type": "plug"})
    assert created and out["status"] == "active"
    with pytest.raises(Conflict):
        store.replace("room", "therm-1", {})  # the id is a device
    with pytest.raises(BadRequest, match="id cannot be changed"):
        store.patch("device", "therm-1", {"id": "other"})


def test_filters_search_sort_and_pagination(store: RegistryStore) -> None:
    home(store)
    for i in range(25):
        store.create("device", {"id": f"s-{i:02d}", "type": "sensor-node", "room_id": "kitchen" if i % 2 else "office"})
    total, page = store.entities("device", {"type": "sensor-node"}, limit=10, offset=20)
    assert total == 25 and [d["id"] for d in page] == [f"s-{i:02d}" for i in range(20, 25)]
    total, page = store.entities("device", {"type": "sensor-node", "room_id": "kitchen"}, limit=5, sort="-id")
    assert total == 12 and page[0]["id"] == "s-23"
    assert store.entities("device", {"gateway": "true"})[1][0]["id"] == "gw-1"
    assert store.entities("device", {"room_id": ""})[1][0]["id"] == "plug-1"  # empty: null
    assert [d["id"] for d in store.entities("device", {"attributes.vendor": "acme"})[1]] == ["therm-1"]
    assert [d["id"] for d in store.entities("device", q="THERMO")[1]] == ["therm-1"]  # name, any case
    assert store.entities("device", q="%")[0] == 0  # a wildcard is a literal
    assert [u["id"] for u in store.entities("user", q="example.com")[1]] == ["alice"]
    with pytest.raises(BadRequest, match="cannot filter devices by 'colour'"):
        store.entities("device", {"colour": "red"})
    with pytest.raises(BadRequest, match="gateway is true or false"):
        store.entities("device", {"gateway": "maybe"})
    with pytest.raises(BadRequest, match="cannot sort"):
        store.entities("device", sort="attributes")
    with pytest.raises(BadRequest, match="limit"):
        store.entities("device", limit=0)


def test_relations_are_validated_and_unique(store: RegistryStore) -> None:
    home(store)
    rel, created = store.relate({"src": "gw-1", "rel": "communicates_with", "dst": "plug-1", "properties": {"latency_ms": 3}})
    assert created and rel["rel"] == "COMMUNICATES_WITH" and rel["src_kind"] == "device"
    with pytest.raises(Conflict):
        store.relate({"src": "gw-1", "rel": "COMMUNICATES_WITH", "dst": "plug-1"})
    again, created = store.relate({"src": "gw-1", "rel": "COMMUNICATES_WITH", "dst": "plug-1",
                                   "properties": {"latency_ms": 4}}, upsert=True)
    assert not created and again["id"] == rel["id"] and again["properties"] == {"latency_ms": 4}
    with pytest.raises(BadRequest, match="OWNS cannot start at a device"):
        store.relate({"src": "gw-1", "rel": "OWNS", "dst": "home"})
    with pytest.raises(BadRequest, match="PART_OF cannot join a device to a location"):
        store.relate({"src": "gw-1", "rel": "PART_OF", "dst": "home"})
    with pytest.raises(BadRequest, match="unknown relation 'LIKES'"):
        store.relate({"src": "alice", "rel": "LIKES", "dst": "bob"})
    with pytest.raises(BadRequest, match="dst: no entity 'nowhere'"):
        store.relate({"src": "alice", "rel": "OWNS", "dst": "nowhere"})
    with pytest.raises(BadRequest, match="latency_ms must be a number"):
        store.relate({"src": "gw-1", "rel": "COMMUNICATES_WITH", "dst": "therm-1", "properties": {"latency_ms": "fast"}})
    total, items = store.relations(entity="gw-1")
    assert total == 2 and {i["src"] for i in items} == {"gw-1", "therm-1"}
    assert store.relations(rel="owns")[0] == 1
    store.update_relation(rel["id"], {"latency_ms": 9})
    assert store.find_relation("gw-1", "COMMUNICATES_WITH", "plug-1")["properties"] == {"latency_ms": 9}
    store.unrelate(rel["id"])
    with pytest.raises(NotFound):
        store.unrelate(rel["id"])


def test_delete_refuses_orphans_unless_cascade(store: RegistryStore) -> None:
    home(store)
    with pytest.raises(Conflict, match=r"sensors \(1\), actuators \(1\)"):
        store.delete("therm-1")
    store.delete("therm-1", cascade=True)
    assert store.counts()["sensor"] == 0 and store.counts()["actuator"] == 0
    assert store.relations(entity="therm-1")[0] == 0  # its relations went with it
    with pytest.raises(Conflict):
        store.delete("home")
    store.delete("home", "location", cascade=True)
    kitchen = store.get("kitchen")
    assert kitchen["location_id"] is None  # kept, detached
    assert store.relations(rel="OWNS")[0] == 0


def test_every_write_bumps_the_revision_and_snapshots_follow(store: RegistryStore) -> None:
    r0 = store.revision()
    store.create("location", {"id": "home"})
    r1 = store.revision()
    assert r1 > r0
    snap = store.snapshot()
    assert snap.revision == r1 and [e["id"] for e in snap.entities["location"]] == ["home"]
    assert store.snapshot() is snap  # cached while nothing changes
    store.create("room", {"id": "hall", "location_id": "home"})
    assert store.snapshot().revision > r1


def test_auto_register_is_batched_and_known_devices_cost_no_round_trip(store: RegistryStore) -> None:
    home(store)
    many = [f"bulk-{i:05d}" for i in range(3000)]  # more rows than one INSERT may bind
    assert len(store.auto_register(many)) == 3000
    added = store.auto_register(["therm-1", "new-a", "new-b", "alice", "bad id/x"])
    assert added == ["new-a", "new-b"]  # a user's id is not re-registered as a device
    dev = store.get("new-a", "device")
    assert dev["status"] == "unregistered" and dev["first_seen_at"] is not None
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert store.auto_register(["therm-1", "new-a", "new-b", "bad id/x"]) == []
    assert statements == []
    assert store.auto_registered == 3002


def test_a_scoped_session_sees_only_the_users_places(store: RegistryStore) -> None:
    home(store)
    scope = store.access_scope("bob")  # HAS_ACCESS office → the office and the gateway in it
    assert scope.rooms == {"office"} and scope.devices == {"gw-1"} and scope.locations == set()
    total, items = store.entities("device", scope=scope)
    assert total == 1 and items[0]["id"] == "gw-1"
    assert store.entities("location", scope=scope)[0] == 0
    with pytest.raises(NotFound):
        store.get("therm-1", scope=scope)
    assert store.relations(scope=scope)[0] == 1  # bob HAS_ACCESS office
    alice = store.access_scope("alice")
    assert alice.locations == {"home"} and alice.devices == {"gw-1", "therm-1"}
    assert {"therm-1-t", "therm-1-valve"} <= alice.visible  # a device's parts come with it
