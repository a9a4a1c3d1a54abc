"""The registry as a graph (networkx): traversals, impact analysis, PageRank, Louvain communities
and shortest paths weighted by latency.

Nodes are entity ids (attributes ``kind``, ``name``); edges are relations, keyed by their type
(one edge per (src, rel, dst), as in the table), with ``properties``, ``latency_ms`` and
``implied``. Implied edges come from the structural columns: a room's ``location_id`` is
``room PART_OF location``, a device's ``room_id`` is ``device LOCATED_IN room`` (its
``location_id``, when it has no room in that location, ``device LOCATED_IN location``), a sensor's
or actuator's ``device_id`` is ``ATTACHED_TO device``.

Build one with :func:`build_graph` from a :class:`~sensorium.registry.store.Snapshot` (the store
caches it per registry revision: ``store.cached("graph", build_graph)``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

import networkx as nx

from sensorium.errors import BadRequest, NotFound
from sensorium.registry.rules import (
    CONTAINED_IN,
    DEPENDS_ON_DST,
    DEPENDS_ON_SRC,
    GRANTS,
    IMPACT_RELATIONS,
    LINK_RELATIONS,
    RELATION_TYPES,
)
from sensorium.registry.scope import AccessScope

if TYPE_CHECKING:
    from sensorium.registry.store import Snapshot

DEFAULT_SEED = 42


def build_graph(snap: Snapshot) -> nx.MultiDiGraph:
    """A directed multigraph of every entity and relation, implied edges included."""
    g = nx.MultiDiGraph()
    for kind, rows in snap.entities.items():
        for e in rows:
            g.add_node(e["id"], kind=kind, name=e["name"])
    for r in snap.relations:
        props = r["properties"]
        g.add_edge(r["src"], r["dst"], key=r["rel"], rel=r["rel"], id=r["id"], properties=props,
                   latency_ms=_latency(props), implied=False)

    def imply(u: str, rel: str, v: str | None) -> None:
        if v is not None and v in g and not g.has_edge(u, v, key=rel):
            g.add_edge(u, v, key=rel, rel=rel, id=None, properties={}, latency_ms=None, implied=True)

    rooms = {r["id"]: r for r in snap.entities.get("room", [])}
    for r in rooms.values():
        imply(r["id"], "PART_OF", r["location_id"])
    for d in snap.entities.get("device", []):
        imply(d["id"], "LOCATED_IN", d["room_id"])
        room = rooms.get(d["room_id"] or "")
        if room is None or room["location_id"] != d["location_id"]:
            imply(d["id"], "LOCATED_IN", d["location_id"])
    for kind in ("sensor", "actuator"):
        for p in snap.entities.get(kind, []):
            imply(p["id"], "ATTACHED_TO", p["device_id"])
    return g


def _latency(props: dict[str, Any]) -> float | None:
    v = props.get("latency_ms")
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _node(g: nx.MultiDiGraph, n: str) -> dict[str, Any]:
    a = g.nodes[n]
    return {"id": n, "kind": a["kind"], "name": a["name"]}


def _need(g: nx.MultiDiGraph, n: str, kind: str | None = None) -> None:
    if n not in g:
        raise NotFound(f"no entity {n!r} in the registry")
    if kind is not None and g.nodes[n]["kind"] != kind:
        raise BadRequest(f"{n!r} is a {g.nodes[n]['kind']}, not a {kind}")


def _relations(names: Iterable[str] | None, default: Collection[str]) -> frozenset[str]:
    if names is None:
        return frozenset(default)
    out = frozenset(n.strip().upper() for n in names if n.strip())
    bad = sorted(out - set(RELATION_TYPES))
    if bad:
        raise BadRequest(f"unknown relation(s) {', '.join(bad)} (one of {', '.join(RELATION_TYPES)})")
    if not out:
        raise BadRequest("relations: name at least one relation type")
    return out


# -- traversals ----------------------------------------------------------------------------------
def user_reach(g: nx.MultiDiGraph, user: str) -> list[dict[str, Any]]:
    """What ``user`` OWNS or HAS_ACCESS to, and everything inside it (reverse LOCATED_IN, PART_OF
    and ATTACHED_TO: a location's sub-locations and rooms, a room's devices, a device's sensors
    and actuators). Access to a room does not open its location. Each item says how it was
    reached: ``grant`` (OWNS / HAS_ACCESS), ``via`` (the granted entity) and ``path``."""
    _need(g, user, "user")
    found: dict[str, dict[str, Any]] = {}
    queue: deque[str] = deque()
    for _, v, rel in sorted(g.out_edges(user, keys=True), key=lambda e: (e[2] != "OWNS", e[1])):
        if rel in GRANTS and v not in found:
            found[v] = {**_node(g, v), "grant": rel, "via": v, "path": [user, v], "depth": 1}
            queue.append(v)
    while queue:
        x = queue.popleft()
        for u, _, rel in sorted(g.in_edges(x, keys=True), key=lambda e: e[0]):
            if rel in CONTAINED_IN and u not in found and u != user:
                src = found[x]
                found[u] = {**_node(g, u), "grant": src["grant"], "via": src["via"],
                            "path": [*src["path"], u], "depth": src["depth"] + 1}
                queue.append(u)
    return sorted(found.values(), key=lambda r: (r["kind"], r["id"]))


def user_view(g: nx.MultiDiGraph, user: str) -> dict[str, Any]:
    """A user's locations, rooms, devices (and everything else reached), grouped by kind."""
    items = user_reach(g, user)
    out: dict[str, Any] = {"user": _node(g, user)}
    for kind in ("location", "room", "device", "sensor", "actuator", "ai_model", "service"):
        out[kind + "s"] = [i for i in items if i["kind"] == kind]
    out["count"] = len(items)
    return out


def user_scope(g: nx.MultiDiGraph, user: str) -> AccessScope:
    """The :class:`AccessScope` of ``user``: what :func:`user_reach` finds, and the user."""
    items = user_reach(g, user)
    by: dict[str, set[str]] = {}
    for i in items:
        by.setdefault(i["kind"], set()).add(i["id"])
    return AccessScope(
        user=user,
        locations=frozenset(by.get("location", ())),
        rooms=frozenset(by.get("room", ())),
        devices=frozenset(by.get("device", ())),
        visible=frozenset({user, *(i["id"] for i in items)}),
    )


def impact(g: nx.MultiDiGraph, node: str, relations: Iterable[str] | None = None) -> dict[str, Any]:
    """Everything that depends on ``node``, directly or not: the sources of its incoming
    COMMUNICATES_WITH, ATTACHED_TO, PART_OF and PROCESSES_DATA_FROM edges and the targets of its
    CONTROLS edges, and so on transitively (breadth first; ``depth`` 1 = direct)."""
    _need(g, node)
    rels = _relations(relations, IMPACT_RELATIONS)
    found: dict[str, dict[str, Any]] = {}
    queue: deque[str] = deque([node])
    paths = {node: [node]}
    while queue:
        x = queue.popleft()
        nxt = [(u, rel) for u, _, rel in g.in_edges(x, keys=True) if rel in DEPENDS_ON_DST and rel in rels]
        nxt += [(v, rel) for _, v, rel in g.out_edges(x, keys=True) if rel in DEPENDS_ON_SRC and rel in rels]
        for y, rel in sorted(nxt):
            if y == node or y in found:
                continue
            paths[y] = [*paths[x], y]
            found[y] = {**_node(g, y), "depth": len(paths[y]) - 1, "relation": rel, "path": paths[y]}
            queue.append(y)
    items = sorted(found.values(), key=lambda r: (r["depth"], r["kind"], r["id"]))
    by_kind: dict[str, int] = {}
    for i in items:
        by_kind[i["kind"]] = by_kind.get(i["kind"], 0) + 1
    return {**_node(g, node), "relations": sorted(rels), "count": len(items), "by_kind": by_kind,
            "impacted": items}


# -- analytics -----------------------------------------------------------------------------------
def _simple(g: nx.MultiDiGraph, directed: bool) -> nx.Graph:
    """The multigraph folded to a simple graph; ``weight`` = number of relations folded."""
    h: nx.Graph = nx.DiGraph() if directed else nx.Graph()
    h.add_nodes_from(g.nodes)
    for u, v in g.edges():
        if u == v:
            continue
        w = h[u][v]["weight"] + 1 if h.has_edge(u, v) else 1
        h.add_edge(u, v, weight=w)
    return h


def pagerank(
    g: nx.MultiDiGraph, *, alpha: float = 0.85, kind: str | None = None, top: int | None = None
) -> list[dict[str, Any]]:
    """PageRank over the directed graph (an edge passes rank from src to dst: what much depends
    on, is located in or is owned ranks high), highest first; ties by id."""
    if not 0 < alpha < 1:
        raise BadRequest(f"alpha must be within (0, 1); got {alpha}")
    if g.number_of_nodes() == 0:
        return []
    ranks = nx.pagerank(_simple(g, directed=True), alpha=alpha, weight="weight")
    out = [{**_node(g, n), "score": float(s)} for n, s in ranks.items()
           if kind is None or g.nodes[n]["kind"] == kind]
    out.sort(key=lambda r: (-r["score"], r["id"]))
    return out[:top] if top is not None else out


def communities(
    g: nx.MultiDiGraph, *, seed: int = DEFAULT_SEED, resolution: float = 1.0
) -> dict[str, Any]:
    """Louvain communities of the undirected graph (seeded: the same registry and seed give the
    same answer), largest first, with the partition's modularity."""
    if resolution <= 0:
        raise BadRequest(f"resolution must be > 0; got {resolution}")
    u = _simple(g, directed=False)
    if u.number_of_nodes() == 0:
        return {"seed": seed, "resolution": resolution, "modularity": None, "communities": []}
    parts = nx.community.louvain_communities(u, weight="weight", resolution=resolution, seed=seed)
    groups = sorted((sorted(p) for p in parts), key=lambda p: (-len(p), p[0]))
    modularity = (
        float(nx.community.modularity(u, groups, weight="weight", resolution=resolution))
        if u.number_of_edges() else None
    )
    return {
        "seed": seed,
        "resolution": resolution,
        "modularity": modularity,
        "communities": [
            {"size": len(p), "members": [_node(g, n) for n in p]} for p in groups
        ],
    }


def shortest_path(
    g: nx.MultiDiGraph,
    src: str,
    dst: str,
    *,
    relations: Iterable[str] | None = None,
    default_latency_ms: float = 0.0,
    directed: bool = False,
) -> dict[str, Any]:
    """The path from ``src`` to ``dst`` with the least total ``latency_ms`` (Dijkstra), over the
    data and command links (COMMUNICATES_WITH, ATTACHED_TO, PROCESSES_DATA_FROM, CONTROLS unless
    ``relations`` says otherwise), direction ignored unless ``directed``; a link without
    ``latency_ms`` costs ``default_latency_ms``."""
    _need(g, src)
    _need(g, dst)
    if default_latency_ms < 0:
        raise BadRequest(f"default_latency_ms must be >= 0; got {default_latency_ms}")
    rels = _relations(relations, LINK_RELATIONS)
    h: nx.Graph = nx.DiGraph() if directed else nx.Graph()
    h.add_nodes_from(g.nodes)
    for u, v, rel, a in g.edges(keys=True, data=True):
        if rel not in rels:
            continue
        w = a["latency_ms"] if a["latency_ms"] is not None else default_latency_ms
        if not h.has_edge(u, v) or w < h[u][v]["weight"]:
            h.add_edge(u, v, weight=w, edge={"src": u, "rel": rel, "dst": v,
                                             "latency_ms": a["latency_ms"], "implied": a["implied"]})
    try:
        total, path = nx.single_source_dijkstra(h, src, dst, weight="weight")
    except nx.NetworkXNoPath:
        raise NotFound(
            f"no path from {src!r} to {dst!r} over {', '.join(sorted(rels))}"
            + ("" if directed else " (direction ignored)")
        ) from None
    edges = [h[a][b]["edge"] for a, b in zip(path, path[1:], strict=False)]
    return {
        "src": src,
        "dst": dst,
        "latency_ms": float(total),
        "hops": len(path) - 1,
        "path": [_node(g, n) for n in path],
        "edges": edges,
        "relations": sorted(rels),
        "directed": directed,
    }


__all__ = [
    "DEFAULT_SEED",
    "build_graph",
    "communities",
    "impact",
    "pagerank",
    "shortest_path",
    "user_reach",
    "user_scope",
    "user_view",
]
