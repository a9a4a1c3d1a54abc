"""The names the agent understands, collected from what the platform knows.

* measurements, their fields (with types) and tags: the schema registry;
* units: the quality rules' canonical units (``temperature`` → ``degC`` ...) and the registry's
  ``sensors.unit`` when it has one;
* rooms, locations, devices, sensor types: distinct tag values in telemetry
  (``SELECT DISTINCT room ...``) AND the registry's SQL tables (``rooms``, ``locations``,
  ``devices``) when they exist (a query naming a missing table is simply skipped);
* actuators: the registry's ``actuators`` table when present.

Everything is read through :class:`~sensorium.agent.context.AgentContext`, so an access layer that
restricts what a user sees restricts the vocabulary too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sensorium.errors import SensoriumError

if TYPE_CHECKING:
    from sensorium.agent.context import AgentContext

#: Words that name a field (before fuzzy or embedding matching is tried).
FIELD_SYNONYMS: dict[str, tuple[str, ...]] = {
    "temperature": ("temperature", "temperatures", "temp", "temps", "warm", "warmest", "warmer",
                    "hot", "hottest", "hotter", "cold", "coldest", "colder", "cool", "coolest", "cooler",
                    "chilly", "chillier", "chilliest", "heat", "degrees", "thermostat"),
    "humidity": ("humidity", "humid", "humidities", "damp", "dampest", "damper", "moisture", "relative humidity",
                 "muggy", "muggiest", "driest", "drier", "dryer", "dry", "wettest"),
    "pressure": ("pressure", "air pressure", "barometric pressure", "barometer", "hpa"),
    "power": ("power", "power draw", "power usage", "wattage", "watts", "load", "consumption",
              "power consumption", "draw"),
    "energy": ("energy", "kwh", "electricity", "energy use", "energy usage", "energy consumption",
               "electricity use", "electricity usage", "meter"),
    "voltage": ("voltage", "volts", "volt", "supply voltage"),
    "battery": ("battery", "batteries", "battery level", "charge"),
    "rssi": ("rssi", "signal", "signal strength", "wifi", "wi-fi", "reception"),
    "motion": ("motion", "movement", "movements", "occupancy", "presence", "activity", "moving", "move",
               "moves", "moved"),
}
#: Fields that count up (a meter): "how much energy" is last − first per series.
CUMULATIVE_FIELDS = frozenset({"energy"})
#: Units shown to people.
UNIT_LABELS = {"degC": "°C", "degF": "°F", "percent": "%", "%": "%", "hPa": "hPa", "W": "W", "V": "V",
               "kWh": "kWh", "dBm": "dBm", "fraction": ""}
TAG_ENTITY = {"room": "room", "location": "location", "device_id": "device", "sensor_type": "sensor type"}


def norm(text: str) -> str:
    """Lowercase words separated by single spaces (``living_room`` → ``living room``)."""
    return re.sub(r"[\s_\-]+", " ", text.strip().lower())


@dataclass(frozen=True)
class Name:
    """One value a question may name: a room, a location, a device, a sensor type."""

    tag: str  # the telemetry tag it filters (room, location, device_id, sensor_type)
    value: str  # the tag value
    label: str  # what people call it
    source: str  # "telemetry" or "registry"


@dataclass(frozen=True)
class Actuator:
    actuator_id: str
    name: str
    device_id: str
    capabilities: tuple[str, ...]
    room: str | None
    location: str | None
    attributes: dict[str, Any]


@dataclass
class Vocabulary:
    #: measurement → {column: role} (role: "tag" or a field type)
    columns: dict[str, dict[str, str]] = field(default_factory=dict)
    #: field → canonical stored unit (``degC``), when known
    units: dict[str, str] = field(default_factory=dict)
    #: alias (normalised words) → the names it may mean
    aliases: dict[str, list[Name]] = field(default_factory=dict)
    #: device id → its tags (room, location, sensor_type, measurement)
    devices: dict[str, dict[str, str]] = field(default_factory=dict)
    actuators: list[Actuator] = field(default_factory=list)
    derived: set[str] = field(default_factory=set)

    # -- lookups -----------------------------------------------------------------------------------
    @property
    def measurements(self) -> list[str]:
        return sorted(self.columns)

    def fields(self) -> dict[str, list[str]]:
        """field → measurements holding it (numeric and boolean fields)."""
        out: dict[str, list[str]] = {}
        for m, cols in sorted(self.columns.items()):
            for c, role in cols.items():
                if role != "tag" and role != "string":
                    out.setdefault(c, []).append(m)
        return out

    def field_type(self, measurement: str, fld: str) -> str | None:
        return self.columns.get(measurement, {}).get(fld)

    def tags(self, measurement: str) -> list[str]:
        return [c for c, r in self.columns.get(measurement, {}).items() if r == "tag"]

    def names(self, tag: str) -> list[str]:
        return sorted({n.value for ns in self.aliases.values() for n in ns if n.tag == tag})

    def field_aliases(self) -> dict[str, str]:
        """alias words → field, for every field that exists."""
        have = self.fields()
        out: dict[str, str] = {}
        for f in have:
            out[norm(f)] = f
            for w in FIELD_SYNONYMS.get(f, ()):
                out.setdefault(norm(w), f)
        return out

    def unit(self, fld: str) -> str | None:
        return self.units.get(fld)

    def summary(self) -> dict[str, Any]:
        return {
            "measurements": {m: sorted(c for c, r in cols.items() if r != "tag") for m, cols in sorted(self.columns.items())},
            "rooms": self.names("room"),
            "locations": self.names("location"),
            "devices": len(self.devices),
            "actuators": [a.name for a in self.actuators],
        }

    # -- building ------------------------------------------------------------------------------------
    def add_name(self, tag: str, value: str, label: str | None, source: str) -> None:
        if not value:
            return
        n = Name(tag, value, label or value, source)
        for alias in {norm(value), norm(label or value)}:
            if not alias:
                continue
            bucket = self.aliases.setdefault(alias, [])
            if all((x.tag, x.value) != (tag, value) for x in bucket):
                bucket.append(n)
        if tag == "device_id":
            m = re.fullmatch(r"dev (\d+)", norm(value))  # "device 9" for dev-00009
            if m:
                for alias in (f"device {int(m.group(1))}", f"dev {int(m.group(1))}", f"device {m.group(1)}"):
                    self.aliases.setdefault(alias, []).append(n)
        if tag == "location":
            m = re.fullmatch(r"(\w+) (\d+)", norm(value))  # "home 1" → also "home1"
            if m:
                self.aliases.setdefault(f"{m.group(1)}{m.group(2)}", []).append(n)


def _rows(ctx: AgentContext, sql: str) -> list[dict[str, Any]]:
    try:
        rows: list[dict[str, Any]] = ctx.query(sql).to_pylist()
        return rows
    except SensoriumError:  # a table that does not exist (no registry yet), or none of its columns
        return []


def build(ctx: AgentContext) -> Vocabulary:
    """A fresh vocabulary (a handful of small queries)."""
    from sensorium.quality.rules import effective_rules

    v = Vocabulary()
    names = ctx.measurements()
    raw_names = set(names)
    for m in names:
        v.columns[m] = dict(ctx.columns(m))
    v.derived = ctx.derived_tables() - raw_names
    for fld, rules in effective_rules(ctx.settings.quality).items():
        for rule in rules:
            if rule.unit:
                v.units.setdefault(fld, rule.unit)
    # tag values in telemetry: one query over every measurement
    parts = []
    for m in names:
        tags = v.tags(m)
        want = [t for t in ("device_id", "room", "location", "sensor_type") if t in tags]
        if want:
            sel = ", ".join(f'CAST("{t}" AS VARCHAR) AS "{t}"' for t in want)
            parts.append(f"SELECT DISTINCT {sel}, '{m}' AS measurement FROM \"{m}\"")
    if parts:
        for r in _rows(ctx, " UNION ALL BY NAME ".join(parts)):
            for t in ("room", "location", "sensor_type"):
                if r.get(t):
                    v.add_name(t, r[t], None, "telemetry")
            dev = r.get("device_id")
            if dev:
                v.add_name("device_id", dev, None, "telemetry")
                info = v.devices.setdefault(dev, {})
                info.update({k: r[k] for k in ("room", "location", "sensor_type") if r.get(k)})
                info.setdefault("measurements", "")
                ms = set(filter(None, info["measurements"].split(","))) | {r["measurement"]}
                info["measurements"] = ",".join(sorted(ms))
    # the registry's tables, when there is a registry
    for r in _rows(ctx, "SELECT room_id, name, location FROM rooms"):
        v.add_name("room", r["room_id"], r["name"], "registry")
    for r in _rows(ctx, "SELECT location_id, name FROM locations"):
        v.add_name("location", r["location_id"], r["name"], "registry")
    for r in _rows(ctx, "SELECT device_id, name, room, location, type FROM devices"):
        if r["name"] and r["name"] != r["device_id"]:
            v.add_name("device_id", r["device_id"], r["name"], "registry")
        info = v.devices.setdefault(r["device_id"], {})
        for k in ("room", "location"):
            if r.get(k) and k not in info:
                info[k] = r[k]
        if r.get("type"):
            info["type"] = r["type"]
        if r.get("name"):
            info["name"] = r["name"]
    for r in _rows(ctx, "SELECT field, unit FROM sensors WHERE unit IS NOT NULL AND field IS NOT NULL"):
        v.units.setdefault(r["field"], r["unit"])
    import orjson

    for r in _rows(ctx, "SELECT actuator_id, name, device_id, capabilities, room, location, attributes FROM actuators"):
        try:
            attrs = orjson.loads(r["attributes"] or "{}")
        except orjson.JSONDecodeError:
            attrs = {}
        v.actuators.append(Actuator(
            r["actuator_id"], r["name"] or r["actuator_id"], r["device_id"],
            tuple(r["capabilities"] or ()), r["room"], r["location"], attrs if isinstance(attrs, dict) else {},
        ))
        v.add_name("actuator", r["actuator_id"], r["name"], "registry")
    return v


def labels(values: Iterable[str]) -> str:
    vs = [norm(x) for x in values]
    if len(vs) <= 1:
        return "".join(vs)
    return ", ".join(vs[:-1]) + " and " + vs[-1]


__all__ = ["CUMULATIVE_FIELDS", "FIELD_SYNONYMS", "Actuator", "Name", "Vocabulary", "build", "norm"]
