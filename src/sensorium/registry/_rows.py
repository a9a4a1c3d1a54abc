"""Rows as plain data: entities and relations as JSON-ready dicts, and a registry snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sensorium.registry.models import Device, Entity, Relation, User
from sensorium.registry.schemas import FIELDS, iso


def ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).replace(microsecond=(ns // 1000) % 1_000_000)


def entity_dict(e: Entity) -> dict[str, Any]:
    """An entity as JSON-ready data: id, kind, name, its kind's columns, attributes, times."""
    out: dict[str, Any] = {"id": e.id, "kind": e.kind, "name": e.name}
    for f in FIELDS[e.kind]:
        out[f] = getattr(e, f)
    if isinstance(e, Device):
        out["first_seen_at"] = iso(e.first_seen_at)
    out["attributes"] = dict(e.attributes or {})
    if isinstance(e, User):  # personal data, decrypted (see models.User)
        out["name"] = e.display_name or e.name
        out["attributes"] = dict(e.pii_attributes or {})
    out["created_at"] = iso(e.created_at)
    out["updated_at"] = iso(e.updated_at)
    return out


def relation_dict(r: Relation, kinds: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": r.id,
        "src": r.src_id,
        "src_kind": kinds.get(r.src_id),
        "rel": r.rel,
        "dst": r.dst_id,
        "dst_kind": kinds.get(r.dst_id),
        "properties": dict(r.properties or {}),
        "created_at": iso(r.created_at),
    }


@dataclass(frozen=True)
class Snapshot:
    """Everything in the registry at one revision (for the graph and the SQL tables)."""

    revision: int
    entities: dict[str, list[dict[str, Any]]]  # kind → rows (entity_dict)
    relations: list[dict[str, Any]]

    def kinds(self) -> dict[str, str]:
        return {e["id"]: k for k, rows in self.entities.items() for e in rows}


__all__ = ["Snapshot", "entity_dict", "ns_to_datetime", "relation_dict"]
