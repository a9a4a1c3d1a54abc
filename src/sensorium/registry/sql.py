"""The registry in SQL: tables ``devices``, ``locations``, ``rooms``, ``sensors`` and ``actuators``
in every query, to join telemetry with what it came from::

    SELECT d.room, avg(c.temperature) FROM climate c JOIN devices d USING (device_id) GROUP BY 1

The query engine asks :class:`RegistryTables` (its ``extra`` provider) for the names a query uses;
each table is an Arrow snapshot built once per registry revision. A measurement (or stream table)
of the same name wins. Users are not exposed (personal data).
"""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa

from sensorium.registry.scope import AccessScope
from sensorium.registry.store import RegistryStore, Snapshot

TS = pa.timestamp("us", tz="UTC")
_S = pa.string()

SCHEMAS: dict[str, pa.Schema] = {
    "devices": pa.schema([
        ("device_id", _S), ("name", _S), ("type", _S), ("status", _S), ("gateway", pa.bool_()),
        ("firmware", _S), ("room", _S), ("room_name", _S), ("location", _S), ("location_name", _S),
        ("owner_id", _S), ("first_seen_at", TS), ("created_at", TS), ("updated_at", TS), ("attributes", _S),
    ]),
    "locations": pa.schema([
        ("location_id", _S), ("name", _S), ("address", _S), ("timezone", _S), ("latitude", pa.float64()),
        ("longitude", pa.float64()), ("owner_id", _S), ("created_at", TS), ("updated_at", TS), ("attributes", _S),
    ]),
    "rooms": pa.schema([
        ("room_id", _S), ("name", _S), ("location", _S), ("location_name", _S), ("floor", _S),
        ("owner_id", _S), ("created_at", TS), ("updated_at", TS), ("attributes", _S),
    ]),
    "sensors": pa.schema([
        ("sensor_id", _S), ("name", _S), ("device_id", _S), ("measurement", _S), ("field", _S),
        ("unit", _S), ("room", _S), ("location", _S), ("created_at", TS), ("updated_at", TS), ("attributes", _S),
    ]),
    "actuators": pa.schema([
        ("actuator_id", _S), ("name", _S), ("device_id", _S), ("command_topic", _S),
        ("capabilities", pa.list_(_S)), ("room", _S), ("location", _S), ("created_at", TS),
        ("updated_at", TS), ("attributes", _S),
    ]),
}
TABLES = tuple(SCHEMAS)


def _ts(v: str | None) -> Any:
    if v is None:
        return None
    from datetime import datetime

    return datetime.fromisoformat(v.replace("Z", "+00:00"))


def _owners(snap: Snapshot) -> dict[str, str]:
    """entity → its owner (the lowest user id that OWNS it)."""
    out: dict[str, str] = {}
    for r in snap.relations:
        if r["rel"] == "OWNS" and (r["dst"] not in out or r["src"] < out[r["dst"]]):
            out[r["dst"]] = r["src"]
    return out


def build_tables(snap: Snapshot) -> dict[str, pa.Table]:
    """Every registry table at one revision. An owner is the device's, else its room's, else
    its location's."""
    owners = _owners(snap)
    names = {e["id"]: e["name"] for rows in snap.entities.values() for e in rows}
    devices = {d["id"]: d for d in snap.entities["device"]}
    rows: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}

    def common(e: dict[str, Any]) -> dict[str, Any]:
        return {"name": e["name"], "created_at": _ts(e["created_at"]), "updated_at": _ts(e["updated_at"]),
                "attributes": orjson.dumps(e["attributes"]).decode()}

    for e in snap.entities["location"]:
        rows["locations"].append({"location_id": e["id"], "address": e["address"], "timezone": e["timezone"],
                                  "latitude": e["latitude"], "longitude": e["longitude"],
                                  "owner_id": owners.get(e["id"]), **common(e)})
    for e in snap.entities["room"]:
        loc = e["location_id"]
        rows["rooms"].append({"room_id": e["id"], "location": loc, "location_name": names.get(loc or ""),
                              "floor": e["floor"], "owner_id": owners.get(e["id"]) or owners.get(loc or ""),
                              **common(e)})
    for e in snap.entities["device"]:
        room, loc = e["room_id"], e["location_id"]
        owner = owners.get(e["id"]) or owners.get(room or "") or owners.get(loc or "")
        rows["devices"].append({
            "device_id": e["id"], "type": e["type"], "status": e["status"], "gateway": e["gateway"],
            "firmware": e["firmware"], "room": room, "room_name": names.get(room or ""), "location": loc,
            "location_name": names.get(loc or ""), "owner_id": owner, "first_seen_at": _ts(e["first_seen_at"]),
            **common(e),
        })
    for kind, table in (("sensor", "sensors"), ("actuator", "actuators")):
        for e in snap.entities[kind]:
            dev = devices.get(e["device_id"], {})
            row = {f"{kind}_id": e["id"], "device_id": e["device_id"], "room": dev.get("room_id"),
                   "location": dev.get("location_id"), **common(e)}
            if kind == "sensor":
                row.update(measurement=e["measurement"], field=e["field"], unit=e["unit"])
            else:
                row.update(command_topic=e["command_topic"], capabilities=list(e["capabilities"]))
            rows[table].append(row)
    return {t: pa.Table.from_pylist(rows[t], schema=SCHEMAS[t]) for t in TABLES}


_KEY = {"devices": "device_id", "locations": "location_id", "rooms": "room_id",
        "sensors": "sensor_id", "actuators": "actuator_id"}


def restrict(table: pa.Table, name: str, scope: AccessScope) -> pa.Table:
    """Only the rows ``scope`` may see."""
    import pyarrow.compute as pc

    keep = pc.is_in(table[_KEY[name]], value_set=pa.array(sorted(scope.visible), _S))
    return table.filter(keep)


class RegistryTables:
    """The query engine's provider of registry tables (``names`` / ``table``)."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def names(self, bucket: str) -> list[str]:
        return list(TABLES)

    def table(self, bucket: str, name: str, scope: AccessScope | None = None) -> pa.Table:
        t: pa.Table = self.store.cached("sql", build_tables)[name]
        return restrict(t, name, scope) if scope is not None else t


__all__ = ["SCHEMAS", "TABLES", "RegistryTables", "build_tables", "restrict"]
