"""The tables of credentials and the audit log, in the registry's database (SQLite or
PostgreSQL, migration ``0003``): API and session tokens (only a SHA-256 of each secret is kept)
and the audit log of logins, token use and changes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from sensorium.registry.models import ID_LEN, Base

TOKEN_KINDS = ("api", "session")


class AuthToken(Base):
    """An API token (made by an admin, shown once) or a session (``POST /api/v1/login``). The
    secret is 256 random bits; ``secret_hash`` is its SHA-256 (hex), which is how a presented
    token is found. Removed with its user."""

    __tablename__ = "auth_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(
        String(ID_LEN), ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(String(160))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class AuditEntry(Base):
    """One audited event: a login (or a failed one), a token's use (at most once a minute per
    token), a change (users, tokens, registry, automations, acknowledgements, documents ...).
    ``actor`` is a user id (or ``auth_token``, ``local``, ``cli:<name>``); no personal data is
    written here (a failed login for an unknown name records no name)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    time: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str | None] = mapped_column(String(160), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


__all__ = ["TOKEN_KINDS", "AuditEntry", "AuthToken"]
