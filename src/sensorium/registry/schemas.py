"""What a registry entity may look like on the way in: one pydantic model per kind, every field
checked, unknown fields refused with their name (a typo never passes silently).

Output is the plain dict :func:`entity_dict` builds from a row.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from sensorium.errors import BadRequest
from sensorium.registry.rules import ID_RE, KINDS

#: never accepted from a client, ignored when a body carries them (a GET → PUT round trip)
READ_ONLY = frozenset({"kind", "created_at", "updated_at", "first_seen_at"})
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _check_id(v: str | None, what: str) -> str | None:
    if v is not None and not ID_RE.fullmatch(v):
        raise ValueError(
            f"{what} {v!r} is not a valid id: 1-128 characters, letters, digits and _ . : @ + ~ - "
            "(starting with a letter, digit or _)"
        )
    return v


class EntityIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str | None = None
    name: str | None = Field(None, min_length=1, max_length=256)
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        return _check_id(v, "id")


class UserIn(EntityIn):
    email: str | None = Field(None, max_length=320)
    role: Literal["admin", "user", "guest"] = "user"

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL.fullmatch(v):
            raise ValueError(f"{v!r} is not an e-mail address")
        return v


class LocationIn(EntityIn):
    address: str | None = Field(None, max_length=512)
    timezone: str | None = Field(None, max_length=64)
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r} (an IANA name such as Europe/Berlin)") from None
        return v


class RoomIn(EntityIn):
    location_id: str | None = None
    floor: str | None = Field(None, max_length=64)

    @field_validator("location_id")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        return _check_id(v, "location_id")


class DeviceIn(EntityIn):
    type: str | None = Field(None, max_length=64)
    status: Literal["active", "inactive", "unregistered"] = "active"
    room_id: str | None = None
    location_id: str | None = None
    gateway: bool = False
    firmware: str | None = Field(None, max_length=64)

    @field_validator("room_id", "location_id")
    @classmethod
    def _ref(cls, v: str | None) -> str | None:
        return _check_id(v, "reference")


class SensorIn(EntityIn):
    device_id: str
    measurement: str | None = Field(None, max_length=256)
    field: str | None = Field(None, max_length=256)
    unit: str | None = Field(None, max_length=64)

    @field_validator("device_id")
    @classmethod
    def _ref(cls, v: str) -> str:
        return _check_id(v, "device_id") or v


class ActuatorIn(EntityIn):
    device_id: str
    command_topic: str | None = Field(None, max_length=512)
    capabilities: list[str] = Field(default_factory=list)

    @field_validator("device_id")
    @classmethod
    def _ref(cls, v: str) -> str:
        return _check_id(v, "device_id") or v


class AIModelIn(EntityIn):
    framework: str | None = Field(None, max_length=64)
    version: str | None = Field(None, max_length=64)
    task: str | None = Field(None, max_length=128)


class ServiceIn(EntityIn):
    endpoint: str | None = Field(None, max_length=1024)
    protocol: str | None = Field(None, max_length=32)


INPUT: dict[str, type[EntityIn]] = {
    "user": UserIn,
    "location": LocationIn,
    "room": RoomIn,
    "device": DeviceIn,
    "sensor": SensorIn,
    "actuator": ActuatorIn,
    "ai_model": AIModelIn,
    "service": ServiceIn,
}
assert tuple(INPUT) == KINDS

#: columns of each kind (beyond id, name, attributes): what a list may filter and sort by
FIELDS: dict[str, tuple[str, ...]] = {
    k: tuple(f for f in m.model_fields if f not in ("id", "name", "attributes")) for k, m in INPUT.items()
}
#: columns that refer to another entity, and the kind they must be
REFERENCES: dict[str, dict[str, str]] = {
    "room": {"location_id": "location"},
    "device": {"room_id": "room", "location_id": "location"},
    "sensor": {"device_id": "device"},
    "actuator": {"device_id": "device"},
}


class RelationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    src: str
    rel: str
    dst: str
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("src", "dst")
    @classmethod
    def _ids(cls, v: str) -> str:
        return _check_id(v, "endpoint") or v

    @field_validator("rel")
    @classmethod
    def _rel(cls, v: str) -> str:
        return v.upper()

    @field_validator("properties")
    @classmethod
    def _props(cls, v: dict[str, Any]) -> dict[str, Any]:
        lat = v.get("latency_ms")
        if lat is not None and (isinstance(lat, bool) or not isinstance(lat, int | float) or lat < 0):
            raise ValueError(f"properties.latency_ms must be a number >= 0; got {lat!r}")
        return v


def validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def parse_entity(kind: str, data: Any) -> EntityIn:
    """Validate one entity body of ``kind``; :class:`BadRequest` names every problem."""
    if not isinstance(data, dict):
        raise BadRequest(f"a {kind} must be a JSON object; got {type(data).__name__}")
    given_kind = data.get("kind")
    if given_kind is not None and given_kind != kind:
        raise BadRequest(f"kind: {given_kind!r} does not match the {kind} being written")
    body = {k: v for k, v in data.items() if k not in READ_ONLY}
    try:
        return INPUT[kind].model_validate(body)
    except ValidationError as exc:
        raise BadRequest(f"invalid {kind}: {validation_message(exc)}") from None


def parse_relation(data: Any) -> RelationIn:
    if not isinstance(data, dict):
        raise BadRequest(f"a relation must be a JSON object {{src, rel, dst, properties}}; got {type(data).__name__}")
    body = {k: v for k, v in data.items() if k not in ("id", "created_at", "src_kind", "dst_kind")}
    try:
        return RelationIn.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(f"invalid relation: {validation_message(exc)}") from None


def iso(t: datetime | None) -> str | None:
    """RFC 3339 UTC (``2026-01-01T00:00:00.123456Z``)."""
    if t is None:
        return None
    return t.isoformat().replace("+00:00", "Z")


def slugify(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:100]


__all__ = [
    "FIELDS",
    "INPUT",
    "READ_ONLY",
    "REFERENCES",
    "EntityIn",
    "RelationIn",
    "iso",
    "parse_entity",
    "parse_relation",
    "slugify",
    "validation_message",
]
