"""Users and access, personal data encrypted at rest, documents (issue #6 part B).

* ``auth_tokens`` (API and session tokens, SHA-256 of the secret), ``audit_log``, ``documents``;
* ``users``: ``email`` becomes a Fernet token (text) with an HMAC blind index ``email_index``; the
  name moves from ``entities.name`` (which keeps the id) into ``display_name``, encrypted, and the
  attributes from ``entities.attributes`` into ``pii_attributes``, encrypted; ``password_hash``.

Existing plaintext is encrypted **by this migration**, in its transaction, with the current PII key
(``SENSORIUM_PII_KEYS`` or ``[pii] key_file``): a registry with users' names, e-mails or attributes
and no key configured refuses to upgrade, with the reason. The downgrade decrypts them back.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from sensorium.pii.keys import KeyRing, PIIKeyMissing, ring
from sensorium.registry.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_entities = sa.table(
    "entities", sa.column("id", sa.String), sa.column("name", sa.String), sa.column("attributes", sa.JSON)
)


def _users_v3() -> Any:
    return sa.table(
        "users", sa.column("id", sa.String), sa.column("email", sa.Text), sa.column("email_index", sa.String),
        sa.column("display_name", sa.Text), sa.column("pii_attributes", sa.Text),
    )


def _key(n: int, what: str) -> KeyRing:
    r = ring()
    if r is None:
        raise PIIKeyMissing(
            f"the registry holds personal data of {n} user(s) in plaintext and revision 0003 {what} it, "
            "but no PII key is configured: set SENSORIUM_PII_KEYS (comma-separated Fernet keys, the "
            "first the current one) or [pii] key_file; `sensorium pii keygen` prints a new key"
        )
    return r


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":  # pages that held plaintext are zeroed, not just freed
        op.get_bind().exec_driver_sql("PRAGMA secure_delete = ON")
    op.create_table(
        "auth_tokens",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(160), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("last_used_at", UTCDateTime(), nullable=True),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_auth_tokens_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_auth_tokens"),
        sa.UniqueConstraint("secret_hash", name="uq_auth_tokens_secret_hash"),
    )
    op.create_index("ix_auth_tokens_user_id", "auth_tokens", ["user_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(160), nullable=True),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(512), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_time", "audit_log", ["time"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor"])
    op.create_index("ix_audit_log_action", "audit_log", ["action"])
    op.create_table(
        "documents",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("time", UTCDateTime(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("user_id", sa.String(128), nullable=True),
        sa.Column("data", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False),
        sa.Column("pii", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(160), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_documents_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
    )
    op.create_index("ix_documents_kind_time", "documents", ["kind", "time"])
    op.create_index("ix_documents_device_id_time", "documents", ["device_id", "time"])
    op.create_index("ix_documents_user_id_time", "documents", ["user_id", "time"])
    op.create_index("ix_documents_time", "documents", ["time"])

    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_email")
        batch.alter_column("email", type_=sa.Text(), existing_type=sa.String(320), existing_nullable=True)
        batch.add_column(sa.Column("email_index", sa.String(64), nullable=True))
        batch.add_column(sa.Column("display_name", sa.Text(), nullable=True))
        batch.add_column(sa.Column("pii_attributes", sa.Text(), nullable=True))
        batch.add_column(sa.Column("password_hash", sa.String(255), nullable=True))
        batch.create_index("ix_users_email_index", ["email_index"])
    _encrypt_users()


def _encrypt_users() -> None:
    """Plaintext e-mails, names and attributes of users → encrypted columns (same transaction)."""
    conn = op.get_bind()
    users = _users_v3()
    rows = conn.execute(
        sa.select(users.c.id, users.c.email, _entities.c.name, _entities.c.attributes)
        .join(_entities, _entities.c.id == users.c.id)
    ).all()
    personal = [r for r in rows if r.email is not None or r.name != r.id or (r.attributes or {})]
    if not personal:
        return
    key = _key(len(personal), "encrypts")
    for r in personal:
        attrs = r.attributes or {}
        conn.execute(users.update().where(users.c.id == r.id).values(
            email=None if r.email is None else key.encrypt(r.email),
            email_index=None if r.email is None else key.index(r.email),
            display_name=key.encrypt(r.name) if r.name != r.id else None,
            pii_attributes=key.encrypt(orjson.dumps(attrs).decode()) if attrs else None,
        ))
        conn.execute(_entities.update().where(_entities.c.id == r.id).values(name=r.id, attributes={}))


def downgrade() -> None:
    conn = op.get_bind()
    users = _users_v3()
    rows = conn.execute(
        sa.select(users.c.id, users.c.email, users.c.display_name, users.c.pii_attributes)
    ).all()
    personal = [r for r in rows if r.email is not None or r.display_name is not None or r.pii_attributes is not None]
    if personal:
        key = _key(len(personal), "must decrypt")
        for r in personal:
            conn.execute(users.update().where(users.c.id == r.id).values(
                email=None if r.email is None else key.decrypt(r.email)))
            values: dict[str, Any] = {}
            if r.display_name is not None:
                values["name"] = key.decrypt(r.display_name)[:256]
            if r.pii_attributes is not None:
                values["attributes"] = orjson.loads(key.decrypt(r.pii_attributes))
            if values:
                conn.execute(_entities.update().where(_entities.c.id == r.id).values(**values))
    with op.batch_alter_table("users") as batch:
        batch.drop_index("ix_users_email_index")
        batch.drop_column("password_hash")
        batch.drop_column("pii_attributes")
        batch.drop_column("display_name")
        batch.drop_column("email_index")
        batch.alter_column("email", type_=sa.String(320), existing_type=sa.Text(), existing_nullable=True)
        batch.create_index("ix_users_email", ["email"])
    op.drop_table("documents")
    op.drop_table("audit_log")
    op.drop_table("auth_tokens")
