"""Documents on SQLite and PostgreSQL: add, get, filter (kind, device, user, time range, JSON
field equality), sort, page, delete; bad input is a precise 400; access by scope; the ``pii``
part encrypted and shown only to its own user and admins."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from sensorium.auth.principal import LOCAL, Forbidden, Principal
from sensorium.documents.store import DocumentStore, parse_where
from sensorium.errors import BadRequest, NotFound
from sensorium.registry.scope import AccessScope
from sensorium.registry.store import RegistryStore
from tests.conftest import T0, FakeClock

S = 1_000_000_000


@pytest.fixture
def docs(store: RegistryStore) -> Iterator[DocumentStore]:
    store.create("user", {"id": "alice"})
    store.create("user", {"id": "bob"})
    d = DocumentStore(store, clock=FakeClock(T0))
    rows: list[dict[str, Any]] = [
        {"kind": "interaction", "time": T0, "user_id": "alice",
         "data": {"intent": "set_temperature", "status": "done", "target": 21, "confirmed": True,
                  "slots": {"room": "kitchen"}}, "pii": {"text": "make it warmer, I'm freezing"}},
        {"kind": "interaction", "time": T0 + 10 * S, "user_id": "bob",
         "data": {"intent": "query", "status": "failed", "target": 21.5, "confirmed": False}},
        {"kind": "device_log", "time": "2026-01-01T00:00:05Z", "device_id": "d1",
         "data": {"level": "warn", "msg": "battery low"}},
        {"kind": "device_log", "time": T0 + 20 * S, "device_id": "d2", "data": {"level": "info"}},
        {"kind": "model_output", "time": T0 + 30 * S, "device_id": "d1",
         "data": {"model": "forecaster", "prediction": [1, 2, 3]}},
    ]
    for r in rows:
        d.add(r, LOCAL)
    yield d


def ids(got: tuple[int, list[dict[str, Any]]]) -> list[int]:
    return [x["id"] for x in got[1]]


def test_filters_sort_and_pages(docs: DocumentStore) -> None:
    total, items = docs.list(LOCAL)
    assert total == 5 and [i["kind"] for i in items] == ["model_output", "device_log", "interaction", "device_log", "interaction"]
    assert ids(docs.list(LOCAL, order="asc"))[0] == 1
    assert docs.list(LOCAL, kind="device_log")[0] == 2
    assert ids(docs.list(LOCAL, device_id="d1", order="asc")) == [3, 5]
    assert ids(docs.list(LOCAL, user_id="alice")) == [1]
    t = datetime.fromtimestamp(T0 / S, UTC)
    assert ids(docs.list(LOCAL, start=t.replace(second=5), end=t.replace(second=21), order="asc")) == [3, 2, 4]
    assert ids(docs.list(LOCAL, limit=2, offset=1)) == [4, 2]
    assert docs.list(LOCAL, limit=2, offset=1)[0] == 5


@pytest.mark.parametrize(("where", "want"), [
    (["intent:set_temperature"], [1]),
    (["status:failed"], [2]),
    (["intent:set_temperature", "status:failed"], []),
    (["level:warn"], [3]),
    (["slots.room:kitchen"], [1]),
    (["target:21"], [1]),
    (["confirmed:true"], [1]),
    (["missing:x"], []),
    (["intent:"], []),
])
def test_json_field_equality(docs: DocumentStore, where: list[str], want: list[int]) -> None:
    assert ids(docs.list(LOCAL, where=parse_where(where), order="asc")) == want


def test_bad_input_is_a_precise_400(docs: DocumentStore) -> None:
    for body, needle in [
        ([], "JSON object"),
        ({"data": {}}, "kind"),
        ({"kind": "Bad Kind"}, "kind"),
        ({"kind": "x", "colour": 1}, "colour"),
        ({"kind": "x", "data": [1]}, "data"),
        ({"kind": "x", "device_id": "no spaces"}, "device_id"),
        ({"kind": "x", "user_id": "nobody"}, "no user 'nobody'"),
        ({"kind": "x", "time": "yesterday"}, "time"),
        ({"kind": "x", "time": "2026-01-01T00:00:00"}, "time zone"),
        ({"kind": "x", "time": 10**30}, "out of range"),
    ]:
        with pytest.raises(BadRequest, match=needle):
            docs.add(body, LOCAL)
    for bad in (["nocolon"], ["a b:c"], [":x"], ["k:v"] * 9):
        with pytest.raises(BadRequest):
            parse_where(bad)
    with pytest.raises(BadRequest):
        docs.list(LOCAL, limit=0)
    with pytest.raises(BadRequest):
        docs.list(LOCAL, order="sideways")
    with pytest.raises(NotFound):
        docs.get(999, LOCAL)


def _user(uid: str, devices: set[str], role: str = "user") -> Principal:
    scope = AccessScope(user=uid, devices=frozenset(devices), visible=frozenset({uid, *devices}))
    return Principal(id=uid, role=role, via="token", user_id=uid, scope=scope)  # type: ignore[arg-type]


def test_access_follows_the_scope_and_pii_stays_with_its_user(docs: DocumentStore) -> None:
    alice = _user("alice", {"d1"})
    bob = _user("bob", set())
    assert ids(docs.list(alice, order="asc")) == [1, 3, 5]  # her own and her device's
    assert ids(docs.list(bob)) == [2]
    assert docs.get(1, alice)["pii"] == {"text": "make it warmer, I'm freezing"}
    with pytest.raises(NotFound):
        docs.get(1, bob)
    # someone else who may see the document (its device is theirs) does not see its pii part
    other = docs.add({"kind": "interaction", "user_id": "bob", "device_id": "d1", "data": {}, "pii": "bob's words"}, LOCAL)
    seen = docs.get(other["id"], alice)
    assert seen["pii"] is None and seen["pii_redacted"] is True
    assert docs.get(other["id"], LOCAL)["pii"] == "bob's words"
    # writes: own devices, about oneself; a document with neither is the writer's own
    mine = docs.add({"kind": "interaction", "data": {"intent": "hello"}}, alice)
    assert mine["user_id"] == "alice" and mine["created_by"] == "alice"
    with pytest.raises(Forbidden):
        docs.add({"kind": "device_log", "device_id": "d2", "data": {}}, alice)
    with pytest.raises(Forbidden):
        docs.add({"kind": "interaction", "user_id": "bob", "data": {}}, alice)
    with pytest.raises(Forbidden, match="read-only"):
        docs.add({"kind": "interaction", "data": {}}, _user("gus", {"d1"}, role="guest"))
    with pytest.raises(NotFound):
        docs.delete(2, alice)
    assert docs.delete(3, alice)["id"] == 3


def test_a_users_documents_go_with_the_user(docs: DocumentStore, store: RegistryStore) -> None:
    store.delete("alice", "user")
    assert ids(docs.list(LOCAL, order="asc")) == [3, 2, 4, 5]


def test_the_http_api(client: TestClient) -> None:
    r = client.post("/api/v1/documents", json={"kind": "device_log", "device_id": "d1", "time": "2026-01-01T00:00:00Z",
                                               "data": {"level": "warn"}})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["time"] == "2026-01-01T00:00:00Z" and doc["created_by"] == "local"
    client.post("/api/v1/documents", json={"kind": "device_log", "device_id": "d1", "data": {"level": "info"}})
    assert client.get(f"/api/v1/documents/{doc['id']}").json() == doc
    listing = client.get("/api/v1/documents", params={"where": "level:warn", "kind": "device_log"}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == doc["id"]
    assert client.get("/api/v1/documents", params={"sort": "time", "limit": 1}).json()["items"][0]["id"] == doc["id"]
    assert client.get("/api/v1/documents", params={"start": "now-30m"}).json()["total"] == 1  # the fake clock's now
    for params in ({"sort": "level"}, {"limit": 0}, {"where": "nope"}, {"start": "yesterday"}):
        r = client.get("/api/v1/documents", params=params)
        assert r.status_code == 400, (params, r.text)
    assert client.get("/api/v1/documents/abc").status_code == 400
    assert client.get("/api/v1/documents/999").status_code == 404
    assert client.post("/api/v1/documents", content=b"{").status_code == 400
    assert client.delete(f"/api/v1/documents/{doc['id']}").json()["deleted"]["id"] == doc["id"]
    assert client.get(f"/api/v1/documents/{doc['id']}").status_code == 404
