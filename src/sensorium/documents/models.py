"""The ``documents`` table (migration ``0003``): JSON documents in the registry's database —
user interactions, device logs, AI model outputs — with indexes by kind, device and user over
time. ``data`` is queryable JSON (PostgreSQL: JSONB); ``pii`` is the part that is personal data,
encrypted at rest (never filterable)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from sensorium.pii.fields import PII, EncryptedJSON
from sensorium.registry.models import ID_LEN, Base

JSON_DOC = JSON().with_variant(JSONB(), "postgresql")


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        Index("ix_documents_kind_time", "kind", "time"),
        Index("ix_documents_device_id_time", "device_id", "time"),
        Index("ix_documents_user_id_time", "user_id", "time"),
        Index("ix_documents_time", "time"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    kind: Mapped[str] = mapped_column(String(32))
    time: Mapped[datetime]
    # no foreign key: the logs of a device are kept when the device leaves the registry
    device_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    # a user's documents go with the user (erasure)
    user_id: Mapped[str | None] = mapped_column(
        String(ID_LEN), ForeignKey("users.id", ondelete="CASCADE")
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSON_DOC, default=dict)
    pii: Mapped[Any] = mapped_column(EncryptedJSON(), nullable=True, info=PII)
    created_by: Mapped[str | None] = mapped_column(String(160))
    created_at: Mapped[datetime]


__all__ = ["Document"]
