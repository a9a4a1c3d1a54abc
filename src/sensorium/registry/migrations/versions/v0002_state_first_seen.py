"""A registry revision counter (cache invalidation across processes) and devices.first_seen_at
(when telemetry first named a device).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from sensorium.registry.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registry_state"),
    )
    op.execute("INSERT INTO registry_state (id, revision) VALUES (1, 1)")
    with op.batch_alter_table("devices") as batch:
        batch.add_column(sa.Column("first_seen_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("devices") as batch:
        batch.drop_column("first_seen_at")
    op.drop_table("registry_state")
