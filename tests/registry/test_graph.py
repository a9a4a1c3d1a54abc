"""Graph analytics on a known registry: a user's reach, impact analysis, PageRank order, Louvain
communities, shortest path by latency -- through the library, the HTTP API and the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import networkx as nx
import pytest

from sensorium.errors import BadRequest, NotFound
from sensorium.registry import graph as G
from sensorium.registry.store import RegistryStore


def two_sites(store: RegistryStore) -> None:
    """Two sites, each a room with a gateway and devices; both gateways uplink to a cloud
    service (site A's slowly, so its fast path runs through site B's gateway)."""
    add = store.create
    for site in ("a", "b"):
        add("location", {"id": f"site-{site}"})
        add("room", {"id": f"{site}-room", "location_id": f"site-{site}"})
        add("device", {"id": f"gw-{site}", "gateway": True, "room_id": f"{site}-room"})
    for d in ("a1", "a2", "a3", "b1", "b2"):
        add("device", {"id": d, "room_id": f"{d[0]}-room"})
        store.relate({"src": d, "rel": "COMMUNICATES_WITH", "dst": f"gw-{d[0]}", "properties": {"latency_ms": 5}})
    add("service", {"id": "cloud", "protocol": "mqtt"})
    add("service", {"id": "hvac"})
    add("sensor", {"id": "a1-t", "device_id": "a1", "field": "temperature"})
    add("actuator", {"id": "a2-valve", "device_id": "a2"})
    add("ai_model", {"id": "anomaly", "task": "anomaly detection"})
    add("user", {"id": "alice"})
    add("user", {"id": "bob"})
    for src, rel, dst, props in [
        ("gw-a", "COMMUNICATES_WITH", "cloud", {"latency_ms": 100}),
        ("gw-b", "COMMUNICATES_WITH", "cloud", {"latency_ms": 10}),
        ("gw-a", "COMMUNICATES_WITH", "gw-b", {"latency_ms": 20}),
        ("anomaly", "PROCESSES_DATA_FROM", "a1-t", {}),
        ("hvac", "CONTROLS", "b1", {}),
        ("alice", "OWNS", "site-a", {}),
        ("bob", "HAS_ACCESS", "b-room", {}),
    ]:
        store.relate({"src": src, "rel": rel, "dst": dst, "properties": props})


@pytest.fixture
def g(tmp_path: Any) -> Iterator[nx.MultiDiGraph]:
    store = RegistryStore(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    two_sites(store)
    yield store.cached("graph", G.build_graph)
    store.close()


SITE_A = {"site-a", "a-room", "a1", "a3", "alice"}
SITE_B = {"site-b", "b-room", "b1", "b2", "bob"}


def test_the_graph_holds_relations_and_implied_edges(g: nx.MultiDiGraph) -> None:
    assert g.nodes["cloud"]["kind"] == "service" and g.number_of_nodes() == 18
    assert g.has_edge("a-room", "site-a", key="PART_OF") and g["a-room"]["site-a"]["PART_OF"]["implied"]
    assert g.has_edge("a1", "a-room", key="LOCATED_IN") and not g.has_edge("a1", "site-a")  # via its room
    assert g.has_edge("a1-t", "a1", key="ATTACHED_TO")
    e = g["gw-a"]["cloud"]["COMMUNICATES_WITH"]
    assert e["latency_ms"] == 100.0 and not e["implied"]


def test_a_users_reach_follows_grants_and_containment(g: nx.MultiDiGraph) -> None:
    alice = G.user_view(g, "alice")
    assert [x["id"] for x in alice["locations"]] == ["site-a"]
    assert [x["id"] for x in alice["rooms"]] == ["a-room"]
    assert [x["id"] for x in alice["devices"]] == ["a1", "a2", "a3", "gw-a"]
    assert [x["id"] for x in alice["sensors"]] == ["a1-t"] and [x["id"] for x in alice["actuators"]] == ["a2-valve"]
    assert alice["sensors"][0]["path"] == ["alice", "site-a", "a-room", "a1", "a1-t"]
    bob = G.user_view(g, "bob")  # access to a room does not open its location
    assert bob["locations"] == [] and [x["id"] for x in bob["devices"]] == ["b1", "b2", "gw-b"]
    assert {x["grant"] for x in bob["devices"]} == {"HAS_ACCESS"}
    scope = G.user_scope(g, "bob")
    assert scope.visible == {"bob", "b-room", "b1", "b2", "gw-b"}
    with pytest.raises(BadRequest, match="is a device, not a user"):
        G.user_view(g, "a1")
    with pytest.raises(NotFound):
        G.user_view(g, "carol")


def test_impact_of_a_gateway_is_everything_behind_it(g: nx.MultiDiGraph) -> None:
    gw_a = G.impact(g, "gw-a")
    assert [(x["id"], x["depth"]) for x in gw_a["impacted"]] == [
        ("a1", 1), ("a2", 1), ("a3", 1), ("a2-valve", 2), ("a1-t", 2), ("anomaly", 3)]
    assert gw_a["by_kind"] == {"device": 3, "actuator": 1, "sensor": 1, "ai_model": 1}
    assert next(x for x in gw_a["impacted"] if x["id"] == "anomaly")["path"] == ["gw-a", "a1", "a1-t", "anomaly"]
    # gw-a uplinks through gw-b: all of site A depends on gw-b as well
    gw_b = {x["id"] for x in G.impact(g, "gw-b")["impacted"]}
    assert gw_b == {"b1", "b2", "gw-a", "a1", "a2", "a3", "a1-t", "a2-valve", "anomaly"}
    assert {x["id"] for x in G.impact(g, "hvac")["impacted"]} == {"b1"}  # CONTROLS: what it controls
    assert {x["id"] for x in G.impact(g, "site-a")["impacted"]} == {"a-room"}  # PART_OF
    only_comm = {x["id"] for x in G.impact(g, "gw-a", ["COMMUNICATES_WITH"])["impacted"]}
    assert only_comm == {"a1", "a2", "a3"}
    with pytest.raises(BadRequest, match="unknown relation"):
        G.impact(g, "gw-a", ["DEPENDS"])


def test_pagerank_order(g: nx.MultiDiGraph) -> None:
    ranks = G.pagerank(g)
    assert [r["id"] for r in ranks[:8]] == ["site-a", "site-b", "b-room", "a-room", "gw-a", "cloud", "gw-b", "a1"]
    assert sum(r["score"] for r in ranks) == pytest.approx(1.0)
    assert ranks[-1]["score"] == pytest.approx(min(r["score"] for r in ranks))
    devices = G.pagerank(g, kind="device", top=3)
    assert [r["id"] for r in devices] == ["gw-a", "gw-b", "a1"]
    with pytest.raises(BadRequest):
        G.pagerank(g, alpha=1.0)


def test_louvain_communities_split_the_sites(g: nx.MultiDiGraph) -> None:
    got = G.communities(g, seed=42)
    groups = [{m["id"] for m in c["members"]} for c in got["communities"]]
    assert sum(len(x) for x in groups) == 18 and got["modularity"] > 0.3
    assert {"b-room", "b1", "b2", "bob", "hvac", "site-b"} in groups
    assert G.communities(g, seed=42) == got  # seeded: reproducible
    for seed in range(5):  # whatever the seed, no community mixes the two sites
        for c in G.communities(g, seed=seed)["communities"]:
            ids = {m["id"] for m in c["members"]}
            assert not (ids & SITE_A and ids & SITE_B), (seed, ids)
    assert len(G.communities(g, resolution=0.01)["communities"]) == 1


def test_shortest_path_is_weighted_by_latency(g: nx.MultiDiGraph) -> None:
    p = G.shortest_path(g, "a1", "cloud")
    assert [n["id"] for n in p["path"]] == ["a1", "gw-a", "gw-b", "cloud"]  # 35 ms, not 105 ms direct
    assert p["latency_ms"] == 35.0 and p["hops"] == 3
    assert [e["latency_ms"] for e in p["edges"]] == [5.0, 20.0, 10.0]
    p = G.shortest_path(g, "a1-t", "b2")  # sensor → its device (implied, no latency) → ... → b2
    assert [n["id"] for n in p["path"]] == ["a1-t", "a1", "gw-a", "gw-b", "b2"] and p["latency_ms"] == 30.0
    assert G.shortest_path(g, "a1-t", "b2", default_latency_ms=1)["latency_ms"] == 31.0
    with pytest.raises(NotFound, match="no path"):
        G.shortest_path(g, "b1", "a1", directed=True)
    with pytest.raises(NotFound, match="no path"):
        G.shortest_path(g, "a1", "site-a")  # rooms and locations are not links
    with pytest.raises(NotFound):
        G.shortest_path(g, "a1", "nowhere")


def test_graph_over_http(client: Any, platform: Any) -> None:
    two_sites(platform.registry_store)
    r = client.get("/api/v1/graph/users/alice")
    assert r.status_code == 200 and [d["id"] for d in r.json()["devices"]] == ["a1", "a2", "a3", "gw-a"]
    r = client.get("/api/v1/graph/impact/gw-a", params={"relations": "COMMUNICATES_WITH,ATTACHED_TO"})
    assert r.status_code == 200 and r.json()["count"] == 5
    r = client.get("/api/v1/graph/pagerank", params={"top": 2})
    assert [x["id"] for x in r.json()["ranks"]] == ["site-a", "site-b"]
    r = client.get("/api/v1/graph/communities", params={"seed": 42})
    assert r.status_code == 200 and r.json()["seed"] == 42 and r.json()["communities"]
    r = client.get("/api/v1/graph/path", params={"src": "a1", "dst": "cloud"})
    assert r.status_code == 200 and r.json()["latency_ms"] == 35.0
    # a change shows at once (the graph is cached per registry revision)
    platform.registry_store.relate({"src": "a1", "rel": "COMMUNICATES_WITH", "dst": "cloud", "properties": {"latency_ms": 1}})
    assert client.get("/api/v1/graph/path", params={"src": "a1", "dst": "cloud"}).json()["latency_ms"] == 1.0
    for path, params, status in [
        ("/api/v1/graph/users/carol", {}, 404),
        ("/api/v1/graph/users/a1", {}, 400),
        ("/api/v1/graph/impact/nowhere", {}, 404),
        ("/api/v1/graph/impact/gw-a", {"relations": "LIKES"}, 400),
        ("/api/v1/graph/pagerank", {"alpha": 2}, 400),
        ("/api/v1/graph/pagerank", {"kind": "gadget"}, 400),
        ("/api/v1/graph/communities", {"resolution": 0}, 400),
        ("/api/v1/graph/path", {"src": "a1"}, 400),
        ("/api/v1/graph/path", {"src": "b1", "dst": "a1", "directed": "true"}, 404),
        ("/api/v1/graph/path", {"src": "a1", "dst": "b1", "default_latency_ms": -1}, 400),
    ]:
        r = client.get(path, params=params)
        assert r.status_code == status, (path, params, r.text)
        assert r.json()["message"]


def test_a_scoped_request_sees_only_its_part_of_the_graph(platform: Any) -> None:
    """The access-control seam: a middleware sets ``request.state.registry_scope``."""
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app

    two_sites(platform.registry_store)
    scope = platform.registry_store.access_scope("bob")
    app = create_app(platform)

    @app.middleware("http")
    async def as_bob(request: Any, call_next: Any) -> Any:
        request.state.registry_scope = scope
        return await call_next(request)

    with TestClient(app, raise_server_exceptions=False) as client:
        assert [d["id"] for d in client.get("/api/v1/registry/devices").json()["items"]] == ["b1", "b2", "gw-b"]
        assert client.get("/api/v1/registry/devices/a1").status_code == 404
        assert client.patch("/api/v1/registry/devices/a1", json={"name": "x"}).status_code == 404
        assert {x["id"] for x in client.get("/api/v1/graph/pagerank").json()["ranks"]} == scope.visible
        assert client.get("/api/v1/graph/path", params={"src": "b1", "dst": "a1"}).status_code == 404
        assert client.get("/api/v1/graph/users/bob").json()["count"] == 4
