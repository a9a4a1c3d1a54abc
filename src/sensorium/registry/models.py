"""The registry's tables (SQLAlchemy 2, typed ORM): one ``entities`` row per thing, a table per
kind for its own columns (joined-table inheritance), and ``relations`` between entities.

Ids are global: a device and a user cannot share one, so a relation, a graph node or a URL names
an entity by its id alone. Structural links that every entity of a kind has (a room's location, a
device's room and location, a sensor's or actuator's device) are columns with foreign keys; the
graph adds them as implied edges (see :mod:`sensorium.registry.graph`). Everything else is a row
of ``relations``.

Migrations (``registry/migrations/versions``) create exactly these tables; a test compares the
two (Alembic's ``compare_metadata``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from sensorium.pii.fields import PII, EncryptedJSON, EncryptedText
from sensorium.pii.keys import require
from sensorium.registry.rules import DEVICE_STATUSES, RELATION_TYPES, USER_ROLES

ID_LEN = 128


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: registry timestamps are UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Entity(Base):
    """What every registered thing has: a global id, its kind, a name, free attributes, times."""

    __tablename__ = "entities"

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "entity"}


def _parent_fk() -> Any:
    return mapped_column(
        String(ID_LEN), ForeignKey("entities.id", ondelete="CASCADE"), primary_key=True
    )


class User(Entity):
    """Revision 0003: everything personal about a user is encrypted at rest (Fernet,
    :mod:`sensorium.pii`): the e-mail, the name (``entities.name`` holds the id instead) and the
    attributes (``entities.attributes`` stays empty); ``email_index`` is an HMAC blind index for
    look-ups by e-mail; ``password_hash`` an Argon2id hash (:mod:`sensorium.auth`)."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", USER_ROLES), name="role"),)
    __mapper_args__ = {"polymorphic_identity": "user"}

    id: Mapped[str] = _parent_fk()
    email: Mapped[str | None] = mapped_column(EncryptedText(), info=PII)
    role: Mapped[str] = mapped_column(String(16), default="user")
    email_index: Mapped[str | None] = mapped_column(String(64), index=True)
    display_name: Mapped[str | None] = mapped_column(EncryptedText(), info=PII)
    pii_attributes: Mapped[Any] = mapped_column(EncryptedJSON(), nullable=True, info=PII)
    password_hash: Mapped[str | None] = mapped_column(String(255))

    @validates("email")
    def _index_email(self, _key: str, value: str | None) -> str | None:
        self.email_index = None if value is None else require("an e-mail address").index(value)
        return value


class Location(Entity):
    __tablename__ = "locations"
    __mapper_args__ = {"polymorphic_identity": "location"}

    id: Mapped[str] = _parent_fk()
    address: Mapped[str | None] = mapped_column(String(512))
    timezone: Mapped[str | None] = mapped_column(String(64))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)


class Room(Entity):
    __tablename__ = "rooms"
    __mapper_args__ = {"polymorphic_identity": "room"}

    id: Mapped[str] = _parent_fk()
    location_id: Mapped[str | None] = mapped_column(
        String(ID_LEN), ForeignKey("locations.id", ondelete="SET NULL"), index=True
    )
    floor: Mapped[str | None] = mapped_column(String(64))


class Device(Entity):
    __tablename__ = "devices"
    __table_args__ = (CheckConstraint(_in("status", DEVICE_STATUSES), name="status"),)
    __mapper_args__ = {"polymorphic_identity": "device"}

    id: Mapped[str] = _parent_fk()
    type: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active", index=True)
    room_id: Mapped[str | None] = mapped_column(
        String(ID_LEN), ForeignKey("rooms.id", ondelete="SET NULL"), index=True
    )
    location_id: Mapped[str | None] = mapped_column(
        String(ID_LEN), ForeignKey("locations.id", ondelete="SET NULL"), index=True
    )
    gateway: Mapped[bool] = mapped_column(Boolean, default=False)
    firmware: Mapped[str | None] = mapped_column(String(64))
    # revision 0002: when telemetry first named it (auto-registration), UTC
    first_seen_at: Mapped[datetime | None]


class Sensor(Entity):
    __tablename__ = "sensors"
    __mapper_args__ = {"polymorphic_identity": "sensor"}

    id: Mapped[str] = _parent_fk()
    device_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    measurement: Mapped[str | None] = mapped_column(String(256))
    field: Mapped[str | None] = mapped_column(String(256))
    unit: Mapped[str | None] = mapped_column(String(64))


class Actuator(Entity):
    __tablename__ = "actuators"
    __mapper_args__ = {"polymorphic_identity": "actuator"}

    id: Mapped[str] = _parent_fk()
    device_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("devices.id", ondelete="CASCADE"), index=True
    )
    command_topic: Mapped[str | None] = mapped_column(String(512))
    capabilities: Mapped[list[str]] = mapped_column(default=list)


class AIModel(Entity):
    __tablename__ = "ai_models"
    __mapper_args__ = {"polymorphic_identity": "ai_model"}

    id: Mapped[str] = _parent_fk()
    framework: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[str | None] = mapped_column(String(64))
    task: Mapped[str | None] = mapped_column(String(128))


class Service(Entity):
    __tablename__ = "services"
    __mapper_args__ = {"polymorphic_identity": "service"}

    id: Mapped[str] = _parent_fk()
    endpoint: Mapped[str | None] = mapped_column(String(1024))
    protocol: Mapped[str | None] = mapped_column(String(32))


class Relation(Base):
    """A typed, directed edge ``src -[rel]-> dst`` with JSON properties (e.g. ``latency_ms``);
    one per (src, rel, dst). Removed with either endpoint."""

    __tablename__ = "relations"
    __table_args__ = (
        UniqueConstraint("src_id", "rel", "dst_id", name="uq_relations_src_rel_dst"),
        CheckConstraint(_in("rel", RELATION_TYPES), name="rel"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    src_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("entities.id", ondelete="CASCADE"), index=True
    )
    rel: Mapped[str] = mapped_column(String(32))
    dst_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("entities.id", ondelete="CASCADE"), index=True
    )
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]


class RegistryState(Base):
    """Revision 0002: one row whose ``revision`` every write bumps, in the write's transaction,
    so every process (api and ingest nodes on one PostgreSQL) knows when its caches (known
    device ids, SQL tables, the graph) are stale with one tiny query."""

    __tablename__ = "registry_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


#: kind name → ORM class, in dependency order (a kind only references kinds before it)
MODELS: dict[str, type[Entity]] = {
    "user": User,
    "location": Location,
    "room": Room,
    "device": Device,
    "sensor": Sensor,
    "actuator": Actuator,
    "ai_model": AIModel,
    "service": Service,
}

# the tables of credentials, the audit log and documents (issue #6) share the registry's database
# and its migrations: importing them here puts them in ``Base.metadata``
from sensorium.auth import models as _auth_models  # noqa: E402,F401
from sensorium.documents import models as _document_models  # noqa: E402,F401

__all__ = [
    "MODELS",
    "AIModel",
    "Actuator",
    "Base",
    "Device",
    "Entity",
    "Location",
    "Relation",
    "RegistryState",
    "Room",
    "Sensor",
    "Service",
    "UTCDateTime",
    "User",
]
