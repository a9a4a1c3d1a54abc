"""The audit log: logins (and failed ones), token use (the first use per token per
``[auth] token_use_audit_s``), and changes — users, tokens, registry writes, automations,
acknowledgements, documents. One table (``audit_log``) in the registry's database, so every api
node of a deployment writes to one place. Nothing personal is written: actors and targets are
ids and request paths."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from sensorium.auth.models import AuditEntry
from sensorium.errors import BadRequest, check_page
from sensorium.registry.schemas import iso
from sensorium.registry.store import RegistryStore, ns_to_datetime

MAX_LIMIT = 10_000
ACTIONS = (
    "login", "login_failed", "logout", "token_use", "token_create", "token_revoke",
    "user_create", "user_update", "user_delete", "password_change", "change", "pii_rotate",
)


def entry_dict(e: AuditEntry) -> dict[str, Any]:
    return {"id": e.id, "time": iso(e.time), "actor": e.actor, "action": e.action,
            "target": e.target, "status": e.status, "detail": dict(e.detail or {})}


class AuditLog:
    def __init__(self, store: RegistryStore, clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.clock = clock

    def record(
        self, actor: str | None, action: str, target: str | None = None, *, status: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        with self.store.session(write=True) as s:
            s.add(AuditEntry(time=ns_to_datetime(self.clock()), actor=actor, action=action,
                             target=None if target is None else target[:512], status=status,
                             detail=detail or {}))

    def list(
        self,
        *,
        actor: str | None = None,
        action: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total matching, a page, newest first)."""
        check_page(limit, offset, MAX_LIMIT)
        if action is not None and action not in ACTIONS:
            raise BadRequest(f"unknown action {action!r} (one of {', '.join(ACTIONS)})")
        conds = []
        if actor is not None:
            conds.append(AuditEntry.actor == actor)
        if action is not None:
            conds.append(AuditEntry.action == action)
        if since is not None:
            conds.append(AuditEntry.time >= since)
        if until is not None:
            conds.append(AuditEntry.time < until)
        with self.store.session() as s:
            total = int(s.execute(select(func.count()).select_from(AuditEntry).where(*conds)).scalar_one())
            rows = s.scalars(select(AuditEntry).where(*conds)
                             .order_by(AuditEntry.time.desc(), AuditEntry.id.desc())
                             .limit(limit).offset(offset)).all()
            return total, [entry_dict(r) for r in rows]


__all__ = ["ACTIONS", "AuditLog", "entry_dict"]
