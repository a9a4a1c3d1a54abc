"""Routes of the registry graph: a user's places and things, impact analysis, PageRank, Louvain
communities and latency-weighted shortest paths (docs/registry.md#graph).

With an access scope on the request (``request.state.registry_scope``) every answer is computed
on the part of the graph the scope allows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import networkx as nx
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from sensorium.api.body import json_response as _json
from sensorium.api.registry_routes import registry_of, request_scope
from sensorium.errors import BadRequest
from sensorium.platform import Sensorium
from sensorium.registry import graph as G
from sensorium.registry.rules import KINDS


def _split(text: str | None) -> list[str] | None:
    return None if text is None else text.split(",")


def register(
    app: FastAPI,
    platform: Sensorium,
    check_auth: Callable[[Request], None],
    to_json: Callable[[Any], Any],
) -> None:
    def graph_for(request: Request) -> nx.MultiDiGraph:
        g: nx.MultiDiGraph = registry_of(platform).cached("graph", G.build_graph)
        scope = request_scope(request)
        return g.subgraph(scope.visible) if scope is not None else g

    async def run(request: Request, fn: Callable[[nx.MultiDiGraph], Any]) -> Response:
        check_auth(request)
        return _json(await asyncio.to_thread(lambda: fn(graph_for(request))))

    @app.get("/api/v1/graph/users/{user_id}", tags=["graph"])
    async def graph_user(request: Request, user_id: str) -> Response:
        """What a user OWNS or HAS_ACCESS to and everything inside it, by kind (`locations`,
        `rooms`, `devices`, `sensors`, ...), each with `grant`, `via` and `path`."""
        return await run(request, lambda g: G.user_view(g, user_id))

    @app.get("/api/v1/graph/impact/{entity_id}", tags=["graph"])
    async def graph_impact(
        request: Request,
        entity_id: str,
        relations: str | None = Query(None, description="Comma-separated relation types followed (default: COMMUNICATES_WITH, ATTACHED_TO, PART_OF, PROCESSES_DATA_FROM, CONTROLS)."),
    ) -> Response:
        """Everything that depends on an entity (e.g. a gateway), with depth and path."""
        return await run(request, lambda g: G.impact(g, entity_id, _split(relations)))

    @app.get("/api/v1/graph/pagerank", tags=["graph"])
    async def graph_pagerank(
        request: Request,
        top: int | None = Query(None, ge=1, le=100_000, description="Only the N highest."),
        kind: str | None = Query(None, description="Only entities of this kind (device, location, ...)."),
        alpha: float = Query(0.85, gt=0, lt=1, description="Damping factor."),
    ) -> Response:
        """PageRank of every entity over the directed relations, highest first."""
        if kind is not None and kind not in KINDS:
            raise BadRequest(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
        return await run(request, lambda g: {"alpha": alpha, "ranks": G.pagerank(g, alpha=alpha, kind=kind, top=top)})

    @app.get("/api/v1/graph/communities", tags=["graph"])
    async def graph_communities(
        request: Request,
        seed: int = Query(G.DEFAULT_SEED, description="Random seed (same seed, same registry → same answer)."),
        resolution: float = Query(1.0, gt=0, le=100, description="Louvain resolution: higher → smaller communities."),
    ) -> Response:
        """Louvain communities (undirected), largest first, with their modularity."""
        return await run(request, lambda g: G.communities(g, seed=seed, resolution=resolution))

    @app.get("/api/v1/graph/path", tags=["graph"])
    async def graph_path(
        request: Request,
        src: str = Query(..., description="Start entity."),
        dst: str = Query(..., description="End entity."),
        relations: str | None = Query(None, description="Comma-separated relation types usable as links (default: COMMUNICATES_WITH, ATTACHED_TO, PROCESSES_DATA_FROM, CONTROLS)."),
        default_latency_ms: float = Query(0.0, ge=0, le=1e9, description="Cost of a link without latency_ms."),
        directed: bool = Query(False, description="Follow relations only from src to dst."),
    ) -> Response:
        """The path of least total `latency_ms` between two entities; 404 when there is none."""
        return await run(request, lambda g: G.shortest_path(
            g, src, dst, relations=_split(relations), default_latency_ms=default_latency_ms, directed=directed))
