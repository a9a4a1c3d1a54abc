"""Initial registry schema: entities, one table per kind, relations.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from sensorium.registry.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(128)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _kind_table(name: str, *cols: sa.Column[Any], checks: tuple[sa.CheckConstraint, ...] = ()) -> None:
    op.create_table(
        name,
        sa.Column("id", ID, sa.ForeignKey("entities.id", ondelete="CASCADE", name=f"fk_{name}_id_entities"), nullable=False),
        *cols,
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
        *checks,
    )


def upgrade() -> None:
    op.create_table(
        "entities",
        sa.Column("id", ID, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_entities"),
    )
    op.create_index("ix_entities_kind", "entities", ["kind"])
    op.create_index("ix_entities_name", "entities", ["name"])
    _kind_table(
        "users",
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        checks=(sa.CheckConstraint(_in("role", ("admin", "user", "guest")), name="ck_users_role"),),
    )
    op.create_index("ix_users_email", "users", ["email"])
    _kind_table(
        "locations",
        sa.Column("address", sa.String(512), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
    )
    _kind_table(
        "rooms",
        sa.Column("location_id", ID, sa.ForeignKey("locations.id", ondelete="SET NULL", name="fk_rooms_location_id_locations"), nullable=True),
        sa.Column("floor", sa.String(64), nullable=True),
    )
    op.create_index("ix_rooms_location_id", "rooms", ["location_id"])
    _kind_table(
        "devices",
        sa.Column("type", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("room_id", ID, sa.ForeignKey("rooms.id", ondelete="SET NULL", name="fk_devices_room_id_rooms"), nullable=True),
        sa.Column("location_id", ID, sa.ForeignKey("locations.id", ondelete="SET NULL", name="fk_devices_location_id_locations"), nullable=True),
        sa.Column("gateway", sa.Boolean(), nullable=False),
        sa.Column("firmware", sa.String(64), nullable=True),
        checks=(sa.CheckConstraint(_in("status", ("active", "inactive", "unregistered")), name="ck_devices_status"),),
    )
    for col in ("type", "status", "room_id", "location_id"):
        op.create_index(f"ix_devices_{col}", "devices", [col])
    _kind_table(
        "sensors",
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE", name="fk_sensors_device_id_devices"), nullable=False),
        sa.Column("measurement", sa.String(256), nullable=True),
        sa.Column("field", sa.String(256), nullable=True),
        sa.Column("unit", sa.String(64), nullable=True),
    )
    op.create_index("ix_sensors_device_id", "sensors", ["device_id"])
    _kind_table(
        "actuators",
        sa.Column("device_id", ID, sa.ForeignKey("devices.id", ondelete="CASCADE", name="fk_actuators_device_id_devices"), nullable=False),
        sa.Column("command_topic", sa.String(512), nullable=True),
        sa.Column("capabilities", sa.JSON(), nullable=False),
    )
    op.create_index("ix_actuators_device_id", "actuators", ["device_id"])
    _kind_table(
        "ai_models",
        sa.Column("framework", sa.String(64), nullable=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("task", sa.String(128), nullable=True),
    )
    _kind_table(
        "services",
        sa.Column("endpoint", sa.String(1024), nullable=True),
        sa.Column("protocol", sa.String(32), nullable=True),
    )
    rels = (
        "OWNS", "HAS_ACCESS", "LOCATED_IN", "PART_OF", "ATTACHED_TO", "USES", "COMMUNICATES_WITH",
        "INTERACTS_WITH", "PROCESSES_DATA_FROM", "CONTROLS",
    )
    op.create_table(
        "relations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("src_id", ID, sa.ForeignKey("entities.id", ondelete="CASCADE", name="fk_relations_src_id_entities"), nullable=False),
        sa.Column("rel", sa.String(32), nullable=False),
        sa.Column("dst_id", ID, sa.ForeignKey("entities.id", ondelete="CASCADE", name="fk_relations_dst_id_entities"), nullable=False),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_relations"),
        sa.UniqueConstraint("src_id", "rel", "dst_id", name="uq_relations_src_rel_dst"),
        sa.CheckConstraint(_in("rel", rels), name="ck_relations_rel"),
    )
    op.create_index("ix_relations_src_id", "relations", ["src_id"])
    op.create_index("ix_relations_dst_id", "relations", ["dst_id"])


def downgrade() -> None:
    for table in ("relations", "services", "ai_models", "actuators", "sensors", "devices", "rooms",
                  "locations", "users", "entities"):
        op.drop_table(table)
