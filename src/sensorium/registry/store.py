"""The registry store: entities and relations in SQLite or PostgreSQL, behind one class.

:class:`RegistryStore` validates what it writes (kinds, references, relation endpoint rules),
bumps a revision counter in the same transaction as every write (so every process's caches
know when they are stale), and hands out sessions — optionally limited to one user's
:class:`~sensorium.registry.scope.AccessScope`, the seam an access-control layer uses.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from sensorium.errors import BadRequest, NotFound, SensoriumError, check_page
from sensorium.registry import migrate
from sensorium.registry._filters import apply_scope, conditions, order
from sensorium.registry._rows import Snapshot, entity_dict, ns_to_datetime, relation_dict
from sensorium.registry.db import WRITE, make_engine
from sensorium.registry.errors import Conflict, RegistryUnavailable
from sensorium.registry.models import (
    MODELS,
    Base,
    Device,
    Entity,
    RegistryState,
    Relation,
    Room,
)
from sensorium.registry.rules import ID_RE, KINDS, RELATIONS, check_relation
from sensorium.registry.schemas import (
    FIELDS,
    REFERENCES,
    EntityIn,
    parse_entity,
    parse_relation,
    slugify,
)
from sensorium.registry.scope import AccessScope

log = logging.getLogger("sensorium.registry")

MAX_LIMIT = 1000
INSERT_CHUNK = 500  # rows per INSERT of auto-registered devices
KNOWN_REFRESH_S = 30.0  # how often the write path checks for devices deleted by another process
class RegistryStore:
    """Users, places, things and their relations in one database (see docs/registry.md)."""

    def __init__(
        self,
        url: str,
        *,
        pg_schema: str = "sensorium_registry",
        clock: Callable[[], int] = time.time_ns,
        migrate_on_open: bool = True,
    ) -> None:
        """``url``: a SQLAlchemy URL (``sqlite:///...`` or ``postgresql://...``). Opening applies
        the packaged migrations up to head (``migrate_on_open``)."""
        self.url = url
        self.pg_schema = pg_schema
        self.clock = clock
        try:
            if migrate_on_open:
                migrate.upgrade(url, pg_schema)
            self.engine = make_engine(url, pg_schema=pg_schema)
            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
            self._writes = sessionmaker(self.engine.execution_options(**{WRITE: True}), expire_on_commit=False)
            if not migrate_on_open and migrate.current(self.engine) != migrate.head():
                self.engine.dispose()
                raise RegistryUnavailable(
                    f"the registry at {self.safe_url} is not at revision {migrate.head()}: open it "
                    "once read-write (e.g. `sensorium up`) to migrate it"
                )
        except OperationalError as exc:
            raise RegistryUnavailable(f"cannot open the registry at {self.safe_url}: {exc.orig}") from None
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._known_rev = -1
        self._known_checked = 0.0
        self._snapshot: Snapshot | None = None
        self._cache: dict[tuple[str, int], Any] = {}
        self.auto_registered = 0

    @property
    def safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- sessions --------------------------------------------------------------------------------
    @contextmanager
    def session(self, scope: AccessScope | None = None, *, write: bool = False) -> Iterator[Session]:
        """A session (committed at the end of the block, rolled back on error). With ``scope``,
        every ORM query of the session sees only the entities (and relations between them) the
        scope allows: the seam an access-control layer filters by."""
        maker = self._writes if write else self._sessions
        with maker() as s:
            if scope is not None:
                s.info["scope"] = scope
                apply_scope(s, scope)
            try:
                with s.begin():
                    yield s
            except OperationalError as exc:
                raise RegistryUnavailable(f"registry database error: {exc.orig}") from None
            except StatementError as exc:  # e.g. no key to encrypt personal data (sensorium.pii)
                if isinstance(exc.orig, SensoriumError):
                    raise exc.orig from None
                raise

    def revision(self) -> int:
        """The registry's revision: bumped by every write, in its transaction."""
        with self.session() as s:
            return int(s.execute(select(RegistryState.revision).where(RegistryState.id == 1)).scalar_one())

    @staticmethod
    def _bump(s: Session) -> None:
        s.execute(update(RegistryState).where(RegistryState.id == 1).values(revision=RegistryState.revision + 1))

    def _now(self) -> datetime:
        return ns_to_datetime(self.clock())

    # -- entities --------------------------------------------------------------------------------
    def create(self, kind: str, data: Any) -> dict[str, Any]:
        """Add an entity; its id is the body's ``id`` or made from its name (or kind). 409 when
        the id is taken."""
        _check_kind(kind)
        body = parse_entity(kind, data)
        with self.session(write=True) as s:
            eid = body.id or self._new_id(s, kind, body.name)
            if s.get(Entity, eid) is not None:
                raise Conflict(f"id {eid!r} is taken (by a {self._kind_of(s, eid)})", id=eid)
            obj = self._save(s, kind, eid, body, None)
            self._bump(s)
            out = entity_dict(obj)
        self._forget_caches()
        return out

    def replace(self, kind: str, eid: str, data: Any) -> tuple[dict[str, Any], bool]:
        """PUT: create or fully replace ``eid`` (fields not given return to their defaults;
        creation time is kept). Returns (entity, created)."""
        _check_kind(kind)
        if isinstance(data, dict) and data.get("id") not in (None, eid):
            raise BadRequest(f"id: the body says {data['id']!r} but the path says {eid!r}")
        if not isinstance(data, dict):
            raise BadRequest(f"a {kind} must be a JSON object; got {type(data).__name__}")
        body = parse_entity(kind, {**data, "id": eid})
        with self.session(write=True) as s:
            existing = s.get(Entity, eid)
            if existing is not None and existing.kind != kind:
                raise Conflict(f"id {eid!r} is a {existing.kind}, not a {kind}", id=eid)
            obj = self._save(s, kind, eid, body, existing)
            self._bump(s)
            out = entity_dict(obj)
        self._forget_caches()
        return out, existing is None

    def patch(self, kind: str, eid: str, data: Any) -> dict[str, Any]:
        """PATCH: change the given fields; ``attributes`` merge (a null value removes a key)."""
        _check_kind(kind)
        if not isinstance(data, dict):
            raise BadRequest(f"a patch must be a JSON object; got {type(data).__name__}")
        if data.get("id") not in (None, eid):
            raise BadRequest("id cannot be changed (create a new entity and delete this one)")
        with self.session(write=True) as s:
            obj = self._get(s, eid, kind)
            current = entity_dict(obj)
            merged = {k: v for k, v in current.items() if k in INPUT_KEYS[kind]}
            for k, v in data.items():
                if k == "attributes" and isinstance(v, dict):
                    attrs = dict(merged.get("attributes") or {})
                    for ak, av in v.items():
                        if av is None:
                            attrs.pop(ak, None)
                        else:
                            attrs[ak] = av
                    merged["attributes"] = attrs
                else:
                    merged[k] = v
            if kind == "device" and data.get("room_id") is not None and "location_id" not in data:
                room = s.get(Room, data["room_id"])  # moved to another room: to its location too
                if room is not None and room.location_id is not None:
                    merged["location_id"] = room.location_id
            body = parse_entity(kind, merged)
            obj = self._save(s, kind, eid, body, obj)
            self._bump(s)
            out = entity_dict(obj)
        self._forget_caches()
        return out

    def get(self, eid: str, kind: str | None = None, scope: AccessScope | None = None) -> dict[str, Any]:
        with self.session(scope) as s:
            return entity_dict(self._get(s, eid, kind))

    def delete(self, eid: str, kind: str | None = None, *, cascade: bool = False) -> dict[str, Any]:
        """Remove an entity and its relations. Refused (409) while rooms, devices, sensors or
        actuators refer to it, unless ``cascade``: then its sensors and actuators go with a
        device, and rooms and devices of a location or room are kept, detached."""
        with self.session(write=True) as s:
            obj = self._get(s, eid, kind)
            deps = self._dependants(s, obj)
            if deps and not cascade:
                what = ", ".join(f"{k} ({n})" for k, n in deps.items())
                raise Conflict(
                    f"{obj.kind} {eid!r} is referred to by {what}; remove those first or pass "
                    "cascade=true", dependants=deps,
                )
            out = entity_dict(obj)
            if obj.kind == "device":  # sensors and actuators are parts of their device
                for part in s.scalars(select(Entity).where(Entity.id.in_(self._parts_of(s, eid)))):
                    s.delete(part)
            s.delete(obj)
            s.flush()
            self._bump(s)
        self._forget_caches()
        with self._lock:
            self._known.discard(eid)
        return out

    def entities(
        self,
        kind: str,
        filters: Mapping[str, str] | None = None,
        *,
        q: str | None = None,
        limit: int = 100,
        offset: int = 0,
        sort: str | None = None,
        scope: AccessScope | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total matching, one page). ``filters``: exact values of the kind's columns (empty:
        null; ``attributes.KEY``: a string attribute); ``q``: case-insensitive substring of id,
        name and the kind's text columns; ``sort``: a column, ``-column`` for descending."""
        _check_kind(kind)
        check_page(limit, offset, MAX_LIMIT)
        model = MODELS[kind]
        conds = conditions(kind, filters or {}, q if kind != "user" else None)
        sort_by = order(kind, sort)
        with self.session(scope) as s:
            if kind == "user" and q:  # encrypted personal data: searched after decryption
                conds.append(_users_matching(s, q))
            total = int(s.execute(select(func.count()).select_from(model).where(*conds)).scalar_one())
            rows = s.scalars(select(model).where(*conds).order_by(*sort_by).limit(limit).offset(offset)).all()
            return total, [entity_dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self.session() as s:
            got = {row[0]: int(row[1]) for row in s.execute(select(Entity.kind, func.count()).group_by(Entity.kind))}
            rels = int(s.execute(select(func.count()).select_from(Relation)).scalar_one())
        return {**{k: int(got.get(k, 0)) for k in KINDS}, "relations": rels}

    # -- relations -------------------------------------------------------------------------------
    def relate(self, data: Any, *, upsert: bool = False) -> tuple[dict[str, Any], bool]:
        """Add ``src -[rel]-> dst`` (endpoint kinds checked). 409 when it exists, unless
        ``upsert`` (then its properties are replaced). Returns (relation, created)."""
        r = parse_relation(data)
        with self.session(write=True) as s:
            kinds = self._kinds(s, (r.src, r.dst))
            for end, eid in (("src", r.src), ("dst", r.dst)):
                if eid not in kinds:
                    raise BadRequest(f"{end}: no entity {eid!r}")
            if r.src == r.dst:
                raise BadRequest(f"a relation needs two different entities; got {r.src!r} twice")
            why = check_relation(kinds[r.src], r.rel, kinds[r.dst])
            if why is not None:
                raise BadRequest(f"{r.src} {r.rel} {r.dst}: {why}")
            rel = s.scalars(select(Relation).where(
                Relation.src_id == r.src, Relation.rel == r.rel, Relation.dst_id == r.dst)).first()
            created = rel is None
            if rel is not None and not upsert:
                raise Conflict(f"{r.src} {r.rel} {r.dst} exists already (relation {rel.id})", id=rel.id)
            if rel is None:
                rel = Relation(src_id=r.src, rel=r.rel, dst_id=r.dst, properties=r.properties,
                               created_at=self._now())
                s.add(rel)
            else:
                rel.properties = r.properties
            s.flush()
            self._bump(s)
            out = relation_dict(rel, kinds)
        self._forget_caches()
        return out, created

    def update_relation(self, rid: int, properties: Any) -> dict[str, Any]:
        with self.session(write=True) as s:
            rel = s.get(Relation, rid)
            if rel is None:
                raise NotFound(f"no relation {rid}")
            checked = parse_relation({"src": rel.src_id, "rel": rel.rel, "dst": rel.dst_id,
                                      "properties": properties})
            rel.properties = checked.properties
            s.flush()
            self._bump(s)
            out = relation_dict(rel, self._kinds(s, (rel.src_id, rel.dst_id)))
        self._forget_caches()
        return out

    def unrelate(self, rid: int) -> dict[str, Any]:
        with self.session(write=True) as s:
            rel = s.get(Relation, rid)
            if rel is None:
                raise NotFound(f"no relation {rid}")
            out = relation_dict(rel, self._kinds(s, (rel.src_id, rel.dst_id)))
            s.delete(rel)
            self._bump(s)
        self._forget_caches()
        return out

    def get_relation(self, rid: int, scope: AccessScope | None = None) -> dict[str, Any]:
        with self.session(scope) as s:
            rel = s.scalars(select(Relation).where(Relation.id == rid)).first()
            if rel is None:
                raise NotFound(f"no relation {rid}")
            return relation_dict(rel, self._kinds(s, (rel.src_id, rel.dst_id)))

    def find_relation(self, src: str, rel: str, dst: str) -> dict[str, Any]:
        with self.session() as s:
            r = s.scalars(select(Relation).where(
                Relation.src_id == src, Relation.rel == rel.upper(), Relation.dst_id == dst)).first()
            if r is None:
                raise NotFound(f"no relation {src} {rel.upper()} {dst}")
            return relation_dict(r, self._kinds(s, (src, dst)))

    def relations(
        self,
        *,
        src: str | None = None,
        dst: str | None = None,
        rel: str | None = None,
        entity: str | None = None,
        limit: int = 100,
        offset: int = 0,
        scope: AccessScope | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Relations, oldest first; ``entity``: those touching it at either end."""
        check_page(limit, offset, MAX_LIMIT)
        conds: list[ColumnElement[bool]] = []
        if src is not None:
            conds.append(Relation.src_id == src)
        if dst is not None:
            conds.append(Relation.dst_id == dst)
        if rel is not None:
            r = rel.upper()
            if r not in RELATIONS:
                raise BadRequest(f"unknown relation {rel!r} (one of {', '.join(RELATIONS)})")
            conds.append(Relation.rel == r)
        if entity is not None:
            conds.append(or_(Relation.src_id == entity, Relation.dst_id == entity))
        with self.session(scope) as s:
            total = int(s.execute(select(func.count()).select_from(Relation).where(*conds)).scalar_one())
            rows = s.scalars(select(Relation).where(*conds).order_by(Relation.id).limit(limit).offset(offset)).all()
            kinds = self._kinds(s, {e for r in rows for e in (r.src_id, r.dst_id)})
            return total, [relation_dict(r, kinds) for r in rows]

    # -- telemetry -------------------------------------------------------------------------------
    def unknown(self, device_ids: Collection[str]) -> set[str]:
        """Device ids of a write that this process has not seen in the registry (a set
        difference: no database round trip for known devices)."""
        if self._known_rev < 0 or time.monotonic() - self._known_checked > KNOWN_REFRESH_S:
            self._refresh_known()
        return set(device_ids) - self._known

    def auto_register(self, device_ids: Collection[str]) -> list[str]:
        """Register the devices among ``device_ids`` that the registry does not hold, as
        ``unregistered`` with ``first_seen_at`` now. One transaction for the lot; a known id
        (any kind) costs nothing. Returns the ids registered."""
        new = self.unknown(device_ids)
        if not new:
            return []
        with self._lock:
            new -= self._known
            if not new:
                return []
            bad = sorted(d for d in new if not ID_RE.fullmatch(d))
            if bad:
                log.warning("not registering devices with ids the registry cannot hold: %s", bad[:10])
            good = sorted(new.difference(bad))
            added: list[str] = []
            if good:
                added = self._insert_devices(good)
            self._known |= new
            self.auto_registered += len(added)
        if added:
            self._forget_caches()
        return added

    def _insert_devices(self, ids: list[str]) -> list[str]:
        now = self._now()
        ent = Base.metadata.tables["entities"]
        dev = Base.metadata.tables["devices"]
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert  # type: ignore[assignment]
        added: list[str] = []
        with self.session(write=True) as s:
            for i in range(0, len(ids), INSERT_CHUNK):  # within SQLite's bound-parameter limit
                stmt = insert(ent).values([
                    {"id": d, "kind": "device", "name": d, "attributes": {}, "created_at": now, "updated_at": now}
                    for d in ids[i:i + INSERT_CHUNK]
                ]).on_conflict_do_nothing(index_elements=["id"]).returning(ent.c.id)
                added += s.execute(stmt).scalars().all()
            if added:
                s.execute(dev.insert(), [
                    {"id": d, "status": "unregistered", "gateway": False, "first_seen_at": now} for d in added
                ])
                self._bump(s)
        return sorted(added)

    def _refresh_known(self) -> None:
        rev = self.revision()
        self._known_checked = time.monotonic()
        if rev == self._known_rev:
            return
        with self.session() as s:
            ids = set(s.scalars(select(Entity.id)).all())
        with self._lock:
            self._known = ids
            self._known_rev = rev

    # -- snapshots (graph, SQL) ------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """Every entity and relation, cached until the registry's revision changes."""
        rev = self.revision()
        snap = self._snapshot
        if snap is not None and snap.revision == rev:
            return snap
        with self.session() as s:
            rev = int(s.execute(select(RegistryState.revision)).scalar_one())
            ents: dict[str, list[dict[str, Any]]] = {}
            for kind, model in MODELS.items():
                ents[kind] = [entity_dict(e) for e in s.scalars(select(model).order_by(model.id))]
            kinds = {e["id"]: k for k, rows in ents.items() for e in rows}
            rels = [relation_dict(r, kinds) for r in s.scalars(select(Relation).order_by(Relation.id))]
        snap = Snapshot(rev, ents, rels)
        self._snapshot = snap
        return snap

    def cached(self, key: str, build: Callable[[Snapshot], Any]) -> Any:
        """``build(snapshot)``, computed once per registry revision (graphs, SQL tables)."""
        snap = self.snapshot()
        hit = self._cache.get((key, snap.revision))
        if hit is None:
            hit = build(snap)
            self._cache = {k: v for k, v in self._cache.items() if k[1] == snap.revision}
            self._cache[(key, snap.revision)] = hit
        return hit

    def access_scope(self, user_id: str) -> AccessScope:
        """What ``user_id`` may see (see :func:`sensorium.registry.graph.user_scope`)."""
        from sensorium.registry.graph import build_graph, user_scope

        return user_scope(self.cached("graph", build_graph), user_id)

    def _forget_caches(self) -> None:
        self._snapshot = None

    # -- helpers ---------------------------------------------------------------------------------
    def _get(self, s: Session, eid: str, kind: str | None) -> Entity:
        obj = s.get(Entity, eid)
        scope = s.info.get("scope")
        if obj is None or (scope is not None and not scope.allows(eid)):
            raise NotFound(f"no {kind or 'entity'} {eid!r}")
        if kind is not None and obj.kind != kind:
            raise NotFound(f"no {kind} {eid!r} ({eid!r} is a {obj.kind})")
        return obj

    @staticmethod
    def _kind_of(s: Session, eid: str) -> str | None:
        return s.execute(select(Entity.kind).where(Entity.id == eid)).scalar()

    @staticmethod
    def _kinds(s: Session, ids: Collection[str]) -> dict[str, str]:
        if not ids:
            return {}
        return {row[0]: row[1] for row in s.execute(select(Entity.id, Entity.kind).where(Entity.id.in_(list(ids))))}

    def _new_id(self, s: Session, kind: str, name: str | None) -> str:
        base = slugify(name) if name else ""
        if base and ID_RE.fullmatch(base):
            if s.get(Entity, base) is None:
                return base
            for i in range(2, 100):
                cand = f"{base}-{i}"
                if s.get(Entity, cand) is None:
                    return cand
        return f"{kind.replace('_', '-')}-{secrets.token_hex(4)}"

    def _save(self, s: Session, kind: str, eid: str, body: EntityIn, existing: Entity | None) -> Entity:
        values = body.model_dump(exclude={"id"})
        values["name"] = values["name"] or eid
        if kind == "user":  # personal data: encrypted columns of users (docs/security.md)
            values = _user_values(s, eid, values)
        refs = REFERENCES.get(kind, {})
        wanted = {v for c in refs if (v := values.get(c)) is not None}
        have = self._kinds(s, wanted)
        for col, ref_kind in refs.items():
            v = values.get(col)
            if v is None:
                continue
            if v not in have:
                raise BadRequest(f"{col}: no {ref_kind} {v!r}")
            if have[v] != ref_kind:
                raise BadRequest(f"{col}: {v!r} is a {have[v]}, not a {ref_kind}")
        if kind == "device" and values.get("room_id") is not None:
            room = s.get(Room, values["room_id"])
            assert room is not None
            if room.location_id is not None:
                if values.get("location_id") is None:
                    values["location_id"] = room.location_id  # a device is where its room is
                elif values["location_id"] != room.location_id:
                    raise BadRequest(
                        f"location_id: {values['location_id']!r} but room {room.id!r} is in "
                        f"{room.location_id!r}"
                    )
        now = self._now()
        if existing is None:
            obj = MODELS[kind](id=eid, created_at=now, updated_at=now, **values)
            s.add(obj)
        else:
            obj = existing
            for k, v in values.items():
                setattr(obj, k, v)
            obj.updated_at = now
        if kind == "room" and values.get("location_id") is not None:  # its devices move with it
            s.execute(
                update(Device).where(Device.room_id == eid).values(location_id=values["location_id"])
                .execution_options(synchronize_session=False)
            )
        try:
            s.flush()
        except IntegrityError as exc:
            raise Conflict(f"cannot store {kind} {eid!r}: {exc.orig}") from None
        return obj

    @staticmethod
    def _dependants(s: Session, obj: Entity) -> dict[str, int]:
        from sensorium.registry.models import Actuator, Sensor

        checks: list[tuple[str, Any, Any]] = []
        if obj.kind == "location":
            checks = [("rooms", Room, Room.location_id), ("devices", Device, Device.location_id)]
        elif obj.kind == "room":
            checks = [("devices", Device, Device.room_id)]
        elif obj.kind == "device":
            checks = [("sensors", Sensor, Sensor.device_id), ("actuators", Actuator, Actuator.device_id)]
        out = {}
        for name, model, col in checks:
            n = int(s.execute(select(func.count()).select_from(model).where(col == obj.id)).scalar_one())
            if n:
                out[name] = n
        return out

    @staticmethod
    def _parts_of(s: Session, device_id: str) -> list[str]:
        from sensorium.registry.models import Actuator, Sensor

        ids = list(s.scalars(select(Sensor.id).where(Sensor.device_id == device_id)))
        ids += list(s.scalars(select(Actuator.id).where(Actuator.device_id == device_id)))
        return ids

def _user_values(s: Session, eid: str, values: dict[str, Any]) -> dict[str, Any]:
    """A user's name and attributes go to encrypted columns (``entities`` keeps the id and no
    attributes); an e-mail another user has is a conflict (found by its blind index)."""
    from sensorium.pii.keys import require
    from sensorium.registry.models import User

    out = dict(values)
    name, attrs = out.pop("name"), out.pop("attributes") or {}
    out.update(name=eid, attributes={}, display_name=name if name != eid else None,
               pii_attributes=attrs or None)
    email = out.get("email")
    if email is not None:
        taken = s.scalars(select(User.id).where(
            User.email_index.in_(require("an e-mail address").indexes(email)), User.id != eid)).first()
        if taken is not None:
            raise Conflict(f"e-mail address already used by user {taken!r}", id=taken)
    return out


def _users_matching(s: Session, q: str) -> ColumnElement[bool]:
    """Users whose id, name or e-mail contains ``q`` (any case). Names and e-mails are encrypted,
    so they are compared here, after decryption (users are few)."""
    from sensorium.registry.models import User

    low = q.lower()
    ids = [u.id for u in s.scalars(select(User))
           if any(low in (v or "").lower() for v in (u.id, u.display_name, u.email))]
    return User.id.in_(ids)


INPUT_KEYS: dict[str, frozenset[str]] = {
    k: frozenset(("id", "name", "attributes", *FIELDS[k])) for k in KINDS
}


def _check_kind(kind: str) -> None:
    if kind not in MODELS:
        raise NotFound(f"no kind {kind!r} (one of {', '.join(KINDS)})")


__all__ = ["RegistryStore", "Snapshot", "entity_dict", "ns_to_datetime", "relation_dict"]
