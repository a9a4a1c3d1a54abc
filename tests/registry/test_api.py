"""The registry over HTTP: CRUD, filters, pagination, relations, import (bad rows with line
numbers, good rows kept), export, and every bad input a 4xx with a JSON reason."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sensorium.platform import Sensorium
from tests.conftest import FakeClock, make_settings

R = "/api/v1/registry"


def _seed(client: Any) -> None:
    for path, body in [
        ("locations", {"id": "home", "name": "Home"}),
        ("rooms", {"id": "kitchen", "location_id": "home"}),
        ("rooms", {"id": "office", "location_id": "home"}),
        ("users", {"id": "alice", "email": "alice@example.com"}),
    ]:
        r = client.post(f"{R}/{path}", json=body)
        assert r.status_code == 201, r.text
    for i in range(12):
        r = client.post(f"{R}/devices", json={"id": f"dev-{i:02d}", "name": f"Sensor {i}", "type": "climate",
                                              "room_id": "kitchen" if i < 5 else "office"})
        assert r.status_code == 201, r.text


def test_crud_round_trip(client: Any) -> None:
    _seed(client)
    r = client.get(f"{R}/devices/dev-03")
    assert r.status_code == 200 and r.json()["location_id"] == "home"
    r = client.patch(f"{R}/devices/dev-03", json={"status": "inactive", "attributes": {"serial": "A1"}})
    assert r.status_code == 200 and r.json()["status"] == "inactive" and r.json()["attributes"] == {"serial": "A1"}
    r = client.put(f"{R}/devices/dev-03", json={**client.get(f"{R}/devices/dev-03").json(), "firmware": "1.2"})
    assert r.status_code == 200 and r.json()["firmware"] == "1.2" and r.json()["status"] == "inactive"
    r = client.put(f"{R}/devices/dev-99", json={"type": "plug"})
    assert r.status_code == 201
    r = client.delete(f"{R}/devices/dev-99")
    assert r.status_code == 200 and r.json()["deleted"]["id"] == "dev-99"
    assert client.get(f"{R}/devices/dev-99").status_code == 404
    summary = client.get(R).json()
    assert summary["counts"]["devices"] == 12 and summary["counts"]["rooms"] == 2
    assert summary["relation_types"]["OWNS"]["src"] == ["user"]


def test_list_filters_search_and_pagination(client: Any) -> None:
    _seed(client)
    r = client.get(f"{R}/devices", params={"room_id": "office", "limit": 3, "offset": 3, "sort": "-id"})
    body = r.json()
    assert r.status_code == 200 and body["total"] == 7 and body["limit"] == 3
    assert [d["id"] for d in body["items"]] == ["dev-08", "dev-07", "dev-06"]
    body = client.get(f"{R}/devices", params={"q": "sensor 1"}).json()
    assert [d["id"] for d in body["items"]] == ["dev-01", "dev-10", "dev-11"]
    body = client.get(f"{R}/devices", params={"location_id": "home", "limit": 100}).json()
    assert body["total"] == 12 and len(body["items"]) == 12


def test_relations_over_http(client: Any) -> None:
    _seed(client)
    r = client.post(f"{R}/relations", json={"src": "alice", "rel": "OWNS", "dst": "home"})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert client.post(f"{R}/relations", json={"src": "alice", "rel": "OWNS", "dst": "home"}).status_code == 409
    r = client.post(f"{R}/relations", params={"upsert": "true"},
                    json={"src": "alice", "rel": "OWNS", "dst": "home", "properties": {"since": 2020}})
    assert r.status_code == 200 and r.json()["properties"] == {"since": 2020}
    r = client.patch(f"{R}/relations/{rid}", json={"properties": {"since": 2021}})
    assert r.status_code == 200 and r.json()["properties"] == {"since": 2021}
    body = client.get(f"{R}/relations", params={"src": "alice"}).json()
    assert body["total"] == 1 and body["items"][0]["dst_kind"] == "location"
    assert client.delete(f"{R}/relations/{rid}").status_code == 200
    assert client.delete(f"{R}/relations/{rid}").status_code == 404


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One seeded server for the bad-input cases (none of which changes anything)."""
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app

    p = Sensorium(make_settings(tmp_path_factory.mktemp("bad") / "data", stream={"enabled": False}, parse_workers=0),
                  clock=FakeClock(), background=False)
    try:
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            _seed(c)
            yield c
    finally:
        p.close()


@pytest.mark.parametrize(("method", "path", "kw", "status", "needle"), [
    ("get", f"{R}/gadgets", {}, 404, "no registry kind 'gadgets'"),
    ("get", f"{R}/devices", {"params": {"colour": "red"}}, 400, "cannot filter devices by 'colour'"),
    ("get", f"{R}/devices", {"params": {"limit": 0}}, 400, "limit"),
    ("get", f"{R}/devices", {"params": {"limit": "many"}}, 400, "limit"),
    ("get", f"{R}/devices", {"params": {"sort": "nope"}}, 400, "cannot sort"),
    ("get", f"{R}/devices", {"params": {"gateway": "perhaps"}}, 400, "true or false"),
    ("post", f"{R}/devices", {"content": b"{not json"}, 400, "not JSON"),
    ("post", f"{R}/devices", {"content": b""}, 400, "empty"),
    ("post", f"{R}/devices", {"json": [1, 2]}, 400, "must be a JSON object"),
    ("post", f"{R}/devices", {"json": {"id": "has space"}}, 400, "not a valid id"),
    ("post", f"{R}/devices", {"json": {"id": "x" * 129}}, 400, "not a valid id"),
    ("post", f"{R}/devices", {"json": {"id": "d", "gateway": "sometimes"}}, 400, "gateway"),
    ("post", f"{R}/devices", {"json": {"id": "d", "room_id": "nowhere"}}, 400, "no room 'nowhere'"),
    ("post", f"{R}/devices", {"json": {"id": "d", "kind": "user"}}, 400, "does not match"),
    ("post", f"{R}/users", {"json": {"id": "u", "email": "not-an-email"}}, 400, "not an e-mail"),
    ("post", f"{R}/users", {"json": {"id": "u", "role": "root"}}, 400, "role"),
    ("post", f"{R}/sensors", {"json": {"id": "s"}}, 400, "device_id"),
    ("post", f"{R}/locations", {"json": {"id": "l", "latitude": 91}}, 400, "latitude"),
    ("post", f"{R}/rooms", {"json": {"id": "kitchen"}}, 409, "taken"),
    ("put", f"{R}/devices/kitchen", {"json": {}}, 409, "is a room"),
    ("put", f"{R}/devices/d1", {"json": {"id": "d2"}}, 400, "path says"),
    ("patch", f"{R}/devices/ghost", {"json": {"name": "x"}}, 404, "no device 'ghost'"),
    ("patch", f"{R}/rooms/kitchen", {"json": "name"}, 400, "JSON object"),
    ("delete", f"{R}/locations/home", {}, 409, "cascade=true"),
    ("delete", f"{R}/relations/abc", {}, 400, "relation_id"),
    ("patch", f"{R}/relations/1", {"json": {"rel": "OWNS"}}, 400, "properties"),
    ("post", f"{R}/relations", {"json": {"src": "kitchen", "rel": "OWNS", "dst": "home"}}, 400, "OWNS cannot start at a room"),
    ("post", f"{R}/relations", {"json": {"src": "home", "rel": "PART_OF", "dst": "home"}}, 400, "two different"),
    ("post", f"{R}/relations", {"json": {"src": "kitchen", "dst": "home"}}, 400, "rel"),
    ("post", f"{R}/import", {"content": b"devices: [a", "params": {"format": "yaml"}}, 400, "not valid YAML (line"),
    ("post", f"{R}/import", {"content": b"id\nx\n", "params": {"format": "csv"}}, 400, "needs its kind"),
    ("post", f"{R}/import", {"content": b"id\n", "params": {"format": "xml"}}, 400, "yaml or csv"),
    ("post", f"{R}/import", {"content": b"\xff\xfe", "params": {"format": "yaml"}}, 400, "UTF-8"),
    ("post", f"{R}/import", {"content": b"- 1", "params": {"mode": "merge"}}, 400, "upsert or create"),
    ("get", f"{R}/export", {"params": {"format": "csv"}}, 400, "kind"),
    ("get", f"{R}/export", {"params": {"format": "csv", "kind": "gizmos"}}, 400, "unknown kind"),
])
def test_bad_input_is_a_precise_4xx(seeded: Any, method: str, path: str, kw: dict[str, Any], status: int, needle: str) -> None:
    before = seeded.get(R).json()["revision"]
    r = seeded.request(method.upper(), path, **kw)
    assert r.status_code == status, r.text
    body = r.json()
    assert needle in body["message"], body
    assert body["code"]
    assert seeded.get(R).json()["revision"] == before  # a refused request changes nothing


YAML = """\
users:
  - {id: alice, name: Alice, email: alice@example.com}
devices:
  - {id: dev-1, type: climate, room_id: kitchen}
  - {id: dev-2, room_id: attic}
  - {id: "bad id"}
rooms:
  - {id: kitchen, location_id: home}
locations:
  - {id: home, name: Home}
relations:
  - {src: alice, rel: OWNS, dst: home}
  - {src: dev-1, rel: OWNS, dst: home}
  - {src: dev-1, rel: COMMUNICATES_WITH, dst: gw-9, properties: {latency_ms: 5}}
gadgets:
  - {id: g}
"""


def test_yaml_import_keeps_good_rows_and_reports_bad_ones_by_line(client: Any) -> None:
    r = client.post(f"{R}/import", content=YAML.encode(), headers={"content-type": "application/yaml"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "partial_import"
    assert body["created"] == 4 and body["relations_created"] == 1 and body["rejected"] == 5
    errors = {e["line"]: e["message"] for e in body["errors"]}
    assert "room_id: no room 'attic'" in errors[5]
    assert "not a valid id" in errors[6]
    assert "OWNS cannot start at a device" in errors[13]
    assert "dst: no entity 'gw-9'" in errors[14]
    assert "unknown section 'gadgets'" in errors[15]
    assert client.get(f"{R}/devices/dev-1").json()["location_id"] == "home"  # rooms applied first
    # the same file again: idempotent upserts, the same rows rejected
    again = client.post(f"{R}/import", content=YAML.encode(), params={"format": "yaml"}).json()
    assert again["created"] == 0 and again["updated"] == 4 and again["relations_updated"] == 1
    assert again["rejected"] == 5


def test_csv_import_with_line_numbers_and_create_mode(client: Any) -> None:
    client.post(f"{R}/locations", json={"id": "home"})
    csv = (
        "id,name,type,location_id,gateway,attributes.vendor,attributes.weight\n"
        "d1,One,plug,home,false,acme,1.5\n"
        "d2,\"Two, with comma\",plug,home,yes,acme,2\n"
        "d3,Three,plug,mars,false,,\n"
        "d4,Four\n"
        "d5,\"multi\nline\",plug,home,perhaps,,\n"
        "d6,Six,plug,,true,,\n"
    )
    r = client.post(f"{R}/import", content=csv.encode(), params={"kind": "devices"},
                    headers={"content-type": "text/csv"})
    body = r.json()
    assert r.status_code == 400 and body["created"] == 3 and body["rejected"] == 3
    assert [e["line"] for e in body["errors"]] == [4, 5, 6]
    assert "no location 'mars'" in body["errors"][0]["message"]
    assert "header has 7 columns" in body["errors"][1]["message"]
    assert "gateway" in body["errors"][2]["message"]
    d1 = client.get(f"{R}/devices/d1").json()
    assert d1["attributes"] == {"vendor": "acme", "weight": 1.5} and d1["gateway"] is False
    assert client.get(f"{R}/devices/d2").json()["name"] == "Two, with comma"
    r = client.post(f"{R}/import", content=b"id,name\nd1,Again\n", params={"kind": "devices", "mode": "create", "format": "csv"})
    assert r.status_code == 400 and "taken" in r.json()["errors"][0]["message"]
    ok = client.post(f"{R}/import", content=b"kind,id\nrooms,r1\nrooms,r2\n", params={"format": "csv"})
    assert ok.status_code == 200 and ok.json()["created"] == 2


def test_export_round_trips_through_import(client: Any, tmp_path: Any) -> None:
    _seed(client)
    client.post(f"{R}/relations", json={"src": "alice", "rel": "HAS_ACCESS", "dst": "kitchen"})
    client.post(f"{R}/actuators", json={"id": "valve", "device_id": "dev-01", "capabilities": ["open", "close"]})
    text = client.get(f"{R}/export").text
    other = Sensorium(make_settings(tmp_path / "other", stream={"enabled": False}, parse_workers=0),
                      clock=FakeClock(), background=False)
    try:
        assert other.registry_store is not None
        from sensorium.registry.importer import export_yaml, import_text

        res = import_text(other.registry_store, text, "yaml")
        assert res.rejected == 0 and res.created == 17 and res.relations_created == 1
        assert export_yaml(other.registry_store) == text
    finally:
        other.close()
    csv = client.get(f"{R}/export", params={"format": "csv", "kind": "actuators"}).text
    assert csv.splitlines() == ["id,name,device_id,command_topic,capabilities,attributes",
                                'valve,valve,dev-01,,"[""open"",""close""]",']
