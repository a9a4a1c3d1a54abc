"""Pseudonymised exports for analytics (``sensorium pii export --pseudonymise``).

Every user id and e-mail becomes a keyed HMAC pseudonym (``u_…``, ``e_…``; the key is derived
from the current PII key, so the same user gets the same pseudonym in every row, every table and
every export until the key is rotated). Names, attributes and the ``pii`` part of documents are
left out; string values inside documents' ``data`` that are a user id or e-mail are replaced by
the pseudonym too. Files: ``users.jsonl``, ``relations.jsonl``, ``documents.jsonl``,
``audit.jsonl`` (one JSON object per line).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from sensorium.pii.keys import KeyRing, normalise


class Pseudonyms:
    """User ids and e-mails → pseudonyms; anything else unchanged."""

    def __init__(self, key: KeyRing, users: list[tuple[str, str | None]]) -> None:
        self.key = key
        self.ids = {uid for uid, _ in users}
        self.emails = {normalise(e): uid for uid, e in users if e}

    def user(self, uid: str | None) -> str | None:
        return None if uid is None else self.key.pseudonym(uid, "u")

    def email(self, email: str | None) -> str | None:
        return None if email is None else self.key.pseudonym(normalise(email), "e")

    def value(self, v: Any) -> Any:
        """Inside JSON: a user id or e-mail string → its pseudonym, recursively."""
        if isinstance(v, str):
            if v in self.ids:
                return self.user(v)
            if normalise(v) in self.emails:
                return self.email(v)
            return v
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        return v

    def actor(self, actor: str | None) -> str | None:
        return self.user(actor) if actor in self.ids else actor

    def target(self, target: str | None) -> str | None:
        """An audit target (an id, or ``METHOD /path``): user ids among its path segments → pseudonyms."""
        if target is None:
            return None
        return "/".join(self.key.pseudonym(seg, "u") if seg in self.ids else seg for seg in target.split("/"))


def export(
    store: Any, out_dir: Path, key: KeyRing, *, progress: Callable[[str, int], None] | None = None,
    pseudonymise: bool = True,
) -> dict[str, int]:
    """Write the files to ``out_dir``; returns rows per file. ``pseudonymise=False`` writes user
    ids, names and e-mails in clear (a data-subject export: handle with care)."""
    from sensorium.auth.models import AuditEntry
    from sensorium.documents.models import Document
    from sensorium.registry.models import Relation, User
    from sensorium.registry.schemas import iso

    out_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    with store.session() as s:
        users = list(s.scalars(select(User).order_by(User.id)))
        ps = Pseudonyms(key, [(u.id, u.email) for u in users])

        def uid(v: str | None) -> str | None:
            return ps.user(v) if pseudonymise else v

        def write(name: str, rows: Any) -> None:
            n = 0
            with (out_dir / name).open("wb") as f:
                for r in rows:
                    f.write(orjson.dumps(r) + b"\n")
                    n += 1
                    if progress is not None and n % 1000 == 0:
                        progress(name, n)
            counts[name] = n
            if progress is not None:
                progress(name, n)

        write("users.jsonl", ({
            "user": uid(u.id), "role": u.role, "created_at": iso(u.created_at),
            **({"email": ps.email(u.email)} if pseudonymise else
               {"email": u.email, "name": u.display_name or u.name, "attributes": u.pii_attributes or {}}),
        } for u in users))
        write("relations.jsonl", ({
            "src": uid(r.src_id) if r.src_id in ps.ids else r.src_id, "rel": r.rel,
            "dst": uid(r.dst_id) if r.dst_id in ps.ids else r.dst_id, "properties": r.properties,
            "created_at": iso(r.created_at),
        } for r in s.scalars(select(Relation).order_by(Relation.id))))
        docs = select(Document).order_by(Document.time, Document.id).execution_options(yield_per=1000)
        write("documents.jsonl", ({
            "id": d.id, "kind": d.kind, "time": iso(d.time), "device_id": d.device_id, "user": uid(d.user_id),
            "data": ps.value(d.data) if pseudonymise else d.data,
            **({} if pseudonymise else {"pii": d.pii}),
        } for d in s.scalars(docs)))
        audit = select(AuditEntry).order_by(AuditEntry.id).execution_options(yield_per=1000)
        write("audit.jsonl", ({
            "time": iso(a.time), "actor": ps.actor(a.actor) if pseudonymise else a.actor,
            "action": a.action, "target": ps.target(a.target) if pseudonymise else a.target,
            "status": a.status,
        } for a in s.scalars(audit)))
    return counts


__all__ = ["Pseudonyms", "export"]
