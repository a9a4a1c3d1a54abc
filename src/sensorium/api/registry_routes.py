"""Routes of the registry: CRUD of users, locations, rooms, devices, sensors, actuators, AI models
and services (``/api/v1/registry/{kind}``), relations, bulk import and export (docs/registry.md).

Access control hooks in through ``request.state.registry_scope`` (an
:class:`~sensorium.registry.scope.AccessScope`): when set, lists and lookups see only what it
allows, and anything else is a 404.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from sensorium.api.body import json_body, read_body
from sensorium.api.body import json_response as _json
from sensorium.errors import BadRequest, NotFound, ParseError
from sensorium.platform import Sensorium
from sensorium.registry.errors import RegistryUnavailable
from sensorium.registry.rules import KINDS, PLURAL, RELATIONS, kind_of_path
from sensorium.registry.scope import AccessScope
from sensorium.registry.store import MAX_LIMIT, RegistryStore

RESERVED = frozenset({"q", "limit", "offset", "sort"})
IMPORT_TYPES = {"text/csv": "csv", "application/yaml": "yaml", "application/x-yaml": "yaml",
                "text/yaml": "yaml", "text/x-yaml": "yaml"}


def request_scope(request: Request) -> AccessScope | None:
    """What the caller may see, when an access-control layer has said so."""
    return getattr(request.state, "registry_scope", None)


def registry_of(platform: Sensorium) -> RegistryStore:
    store = platform.registry_store
    if store is None:
        raise RegistryUnavailable(
            f"this node ({platform.role}) does not serve the registry: ask a `sensorium up` or "
            "`sensorium api` node"
        )
    return store


def _kind(segment: str) -> str:
    kind = kind_of_path(segment)
    if kind is None:
        raise NotFound(f"no registry kind {segment!r} (one of {', '.join(PLURAL.values())}, relations)")
    return kind


def _visible(request: Request, entity_id: str, kind: str | None = None) -> None:
    scope = request_scope(request)
    if scope is not None and not scope.allows(entity_id):
        raise NotFound(f"no {kind or 'entity'} {entity_id!r}")


def register(
    app: FastAPI,
    platform: Sensorium,
    check_auth: Callable[[Request], None],
    to_json: Callable[[Any], Any],
) -> None:
    s = platform.settings

    def store() -> RegistryStore:
        return registry_of(platform)

    async def body_of(request: Request) -> Any:
        return await json_body(request, s.max_body_bytes, s.max_decompressed_bytes)

    @app.get("/api/v1/registry", tags=["registry"])
    async def registry_summary(request: Request) -> Response:
        """Counts per kind, the relation types with the kinds each may join, and the revision."""
        check_auth(request)
        st = store()
        counts = await asyncio.to_thread(st.counts)
        rev = await asyncio.to_thread(st.revision)
        return _json({
            "revision": rev,
            "counts": {PLURAL[k]: counts[k] for k in KINDS} | {"relations": counts["relations"]},
            "kinds": [PLURAL[k] for k in KINDS],
            "relation_types": {r: {"src": sorted(a), "dst": sorted(b)} for r, (a, b) in RELATIONS.items()},
            "auto_register": s.registry.auto_register,
            "auto_registered": st.auto_registered,
        })

    # -- relations (before /{kind}: "relations" is not a kind) ---------------------------------
    @app.get("/api/v1/registry/relations", tags=["registry"])
    async def list_relations(
        request: Request,
        src: str | None = Query(None, description="Only relations from this entity."),
        dst: str | None = Query(None, description="Only relations to this entity."),
        rel: str | None = Query(None, description="Only this relation type (OWNS, LOCATED_IN, ...)."),
        entity: str | None = Query(None, description="Relations touching this entity at either end."),
        limit: int = Query(100, ge=1, le=MAX_LIMIT),
        offset: int = Query(0, ge=0),
    ) -> Response:
        """Relations, oldest first: `{"total", "limit", "offset", "items": [{"id", "src",
        "src_kind", "rel", "dst", "dst_kind", "properties", "created_at"}]}`."""
        check_auth(request)
        total, items = await asyncio.to_thread(
            store().relations, src=src, dst=dst, rel=rel, entity=entity, limit=limit, offset=offset,
            scope=request_scope(request),
        )
        return _json({"total": total, "limit": limit, "offset": offset, "items": items})

    @app.post("/api/v1/registry/relations", status_code=201, tags=["registry"])
    async def create_relation(request: Request, upsert: bool = Query(False)) -> Response:
        """Add `{"src", "rel", "dst", "properties"}` (endpoint kinds checked per relation type);
        201, or 409 when it exists (with `upsert=true`: its properties are replaced, 200)."""
        check_auth(request)
        data = await body_of(request)
        if isinstance(data, dict):
            for end in ("src", "dst"):
                if isinstance(data.get(end), str):
                    _visible(request, data[end])
        out, created = await asyncio.to_thread(store().relate, data, upsert=upsert)
        return _json(out, 201 if created else 200)

    @app.patch("/api/v1/registry/relations/{relation_id}", tags=["registry"])
    async def patch_relation(request: Request, relation_id: int) -> Response:
        """Replace a relation's properties: body `{"properties": {...}}`."""
        check_auth(request)
        data = await body_of(request)
        if not isinstance(data, dict) or set(data) != {"properties"}:
            raise BadRequest('body must be {"properties": {...}} (a relation\'s ends and type cannot change)')
        await _check_relation_visible(request, relation_id)
        return _json(await asyncio.to_thread(store().update_relation, relation_id, data["properties"]))

    @app.delete("/api/v1/registry/relations/{relation_id}", tags=["registry"])
    async def delete_relation(request: Request, relation_id: int) -> Response:
        """Remove a relation; answers `{"deleted": relation}`."""
        check_auth(request)
        await _check_relation_visible(request, relation_id)
        return _json({"deleted": await asyncio.to_thread(store().unrelate, relation_id)})

    async def _check_relation_visible(request: Request, relation_id: int) -> None:
        scope = request_scope(request)
        if scope is not None:
            await asyncio.to_thread(store().get_relation, relation_id, scope)

    # -- import / export ------------------------------------------------------------------------
    @app.post("/api/v1/registry/import", tags=["registry"])
    async def import_registry(
        request: Request,
        format: str | None = Query(None, description="yaml or csv (default: from Content-Type, else yaml)."),
        kind: str | None = Query(None, description="CSV: the kind of every row (or a `kind` column)."),
        mode: str = Query("upsert", description="upsert (create or replace by id) or create (an existing id is an error)."),
    ) -> Response:
        """Bulk import (YAML or CSV body). Bad rows are listed with line numbers and reasons and
        the good ones are stored: 200 when all were, else 400 `partial_import` with the counts."""
        from sensorium.registry.importer import import_text

        check_auth(request)
        raw = await read_body(request, s.max_body_bytes, s.max_decompressed_bytes)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        fmt = (format or IMPORT_TYPES.get(ctype) or "yaml").lower()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ParseError(f"the body is not UTF-8: {exc}") from None
        if mode not in ("upsert", "create"):
            raise BadRequest(f"mode must be upsert or create; got {mode!r}")
        res = await asyncio.to_thread(import_text, store(), text, fmt, kind=kind, mode=mode)  # type: ignore[arg-type]
        out = res.to_dict()
        if not res.rejected:
            return _json(out)
        first = out["errors"][0]
        return _json({"code": "partial_import", "message": (
            f"{res.rejected} of {res.rows} rows rejected, the others stored; first error: line "
            f"{first['line']}: {first['message']}"), **out}, 400)

    @app.get("/api/v1/registry/export", tags=["registry"])
    async def export_registry(
        request: Request,
        format: str = Query("yaml", description="yaml (everything) or csv (one kind)."),
        kind: str | None = Query(None, description="CSV: the kind (devices, ..., relations)."),
    ) -> Response:
        """The registry in the import format: YAML (every kind and the relations) or CSV (one kind)."""
        from sensorium.registry.importer import export_csv, export_yaml

        check_auth(request)
        if format == "yaml":
            if kind is not None:
                raise BadRequest("kind applies to format=csv only")
            text = await asyncio.to_thread(export_yaml, store())
            return Response(text, media_type="application/yaml")
        if format == "csv":
            if kind is None:
                raise BadRequest("format=csv exports one kind: pass kind (e.g. kind=devices)")
            text = await asyncio.to_thread(export_csv, store(), kind)
            return Response(text, media_type="text/csv")
        raise BadRequest(f"format must be yaml or csv; got {format!r}")

    # -- entities -------------------------------------------------------------------------------
    @app.get("/api/v1/registry/{kind}", tags=["registry"])
    async def list_entities(
        request: Request,
        kind: str,
        q: str | None = Query(None, description="Case-insensitive substring of id, name and text columns."),
        limit: int = Query(100, ge=1, le=MAX_LIMIT),
        offset: int = Query(0, ge=0),
        sort: str | None = Query(None, description="A column; prefix - for descending (e.g. -created_at)."),
    ) -> Response:
        """Entities of a kind, filtered by any column (`?status=active&room_id=kitchen`; an empty
        value matches null; `attributes.KEY=value` a string attribute), one page at a time:
        `{"kind", "total", "limit", "offset", "items"}`."""
        check_auth(request)
        k = _kind(kind)
        filters: dict[str, str] = {}
        for key, value in request.query_params.multi_items():
            if key in RESERVED:
                continue
            if key in filters:
                raise BadRequest(f"filter {key!r} given twice")
            filters[key] = value
        total, items = await asyncio.to_thread(
            store().entities, k, filters, q=q, limit=limit, offset=offset, sort=sort, scope=request_scope(request)
        )
        return _json({"kind": PLURAL[k], "total": total, "limit": limit, "offset": offset, "items": items})

    @app.post("/api/v1/registry/{kind}", status_code=201, tags=["registry"])
    async def create_entity(request: Request, kind: str) -> Response:
        """Add an entity (JSON object; `id` optional: made from the name). 201 with it; 409 when
        the id is taken; 400 naming every invalid or unknown field."""
        check_auth(request)
        k = _kind(kind)
        data = await body_of(request)
        return _json(await asyncio.to_thread(store().create, k, data), 201)

    @app.get("/api/v1/registry/{kind}/{entity_id}", tags=["registry"])
    async def get_entity(request: Request, kind: str, entity_id: str) -> Response:
        check_auth(request)
        k = _kind(kind)
        _visible(request, entity_id, k)
        return _json(await asyncio.to_thread(store().get, entity_id, k))

    @app.put("/api/v1/registry/{kind}/{entity_id}", tags=["registry"])
    async def put_entity(request: Request, kind: str, entity_id: str) -> Response:
        """Create or replace (fields left out return to their defaults): 201 created, 200 replaced."""
        check_auth(request)
        k = _kind(kind)
        _visible(request, entity_id, k)
        data = await body_of(request)
        out, created = await asyncio.to_thread(store().replace, k, entity_id, data)
        return _json(out, 201 if created else 200)

    @app.patch("/api/v1/registry/{kind}/{entity_id}", tags=["registry"])
    async def patch_entity(request: Request, kind: str, entity_id: str) -> Response:
        """Change the given fields; `attributes` are merged (a null value removes a key)."""
        check_auth(request)
        k = _kind(kind)
        _visible(request, entity_id, k)
        data = await body_of(request)
        return _json(await asyncio.to_thread(store().patch, k, entity_id, data))

    @app.delete("/api/v1/registry/{kind}/{entity_id}", tags=["registry"])
    async def delete_entity(request: Request, kind: str, entity_id: str, cascade: bool = Query(False)) -> Response:
        """Remove an entity and its relations: `{"deleted": entity}`. 409 while others refer to
        it, unless `cascade=true` (a device's sensors and actuators go with it; rooms and devices
        of a location or room are kept, detached)."""
        check_auth(request)
        k = _kind(kind)
        _visible(request, entity_id, k)
        return _json({"deleted": await asyncio.to_thread(store().delete, entity_id, k, cascade=cascade)})
