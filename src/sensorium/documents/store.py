"""JSON documents in the registry's database: user interactions (intent, status, feedback),
device logs, AI model outputs — anything with a kind, a time, maybe a device and a user.

A document is ``{"kind", "time", "device_id", "user_id", "data", "pii"}``: ``data`` is a JSON
object stored as JSON (PostgreSQL: JSONB) and filterable by field equality; ``pii`` is any JSON
value holding personal data (free text a user typed, a name), encrypted at rest, never
filterable, and returned only to the document's own user and to admins.

Access: an admin sees every document; a user or guest sees the documents of their devices
(``device_id`` in their scope) and their own (``user_id`` = theirs). A user writes documents of
their own devices or about themselves only; a guest writes none.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import ColumnElement, false, func, or_, select

from sensorium.auth.principal import Forbidden, Principal
from sensorium.documents.models import Document
from sensorium.errors import BadRequest, NotFound, check_page
from sensorium.registry.models import User
from sensorium.registry.rules import ID_RE
from sensorium.registry.schemas import iso
from sensorium.registry.store import RegistryStore, ns_to_datetime

MAX_LIMIT = 1000
#: the kinds Sensorium writes itself; any other lower-case name is accepted too
KINDS = ("interaction", "device_log", "model_output")
KIND_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
KEY_RE = re.compile(r"[A-Za-z0-9_\-]{1,64}")
MAX_WHERE = 8


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    time: datetime | int | None = None
    device_id: str | None = None
    user_id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    pii: Any = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if not KIND_RE.fullmatch(v):
            raise ValueError(f"kind {v!r}: lower-case letters, digits and _ (e.g. {', '.join(KINDS)})")
        return v

    @field_validator("device_id", "user_id")
    @classmethod
    def _id(cls, v: str | None) -> str | None:
        if v is not None and not ID_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid id")
        return v


def parse_when(text: str, now_ns: int, what: str = "time") -> datetime:
    """RFC 3339, nanoseconds or ``now-<duration>`` → a UTC datetime (400 when out of range)."""
    from sensorium.query.downsample import parse_time

    ns = parse_time(text, now_ns)
    try:
        return ns_to_datetime(ns)
    except (OverflowError, ValueError, OSError):
        raise BadRequest(f"{what} {text!r} is out of range") from None


def parse_where(items: Sequence[str]) -> list[tuple[tuple[str, ...], str]]:
    """``["intent:set_temperature", "result.ok:true"]`` → [(path, value)]."""
    if len(items) > MAX_WHERE:
        raise BadRequest(f"at most {MAX_WHERE} where filters")
    out = []
    for item in items:
        key, sep, value = item.partition(":")
        path = tuple(key.split("."))
        if not sep or not all(KEY_RE.fullmatch(p) for p in path):
            raise BadRequest(
                f"where {item!r}: use FIELD:VALUE (FIELD a key of `data`, dotted for nested keys: "
                "letters, digits, _ and -)"
            )
        out.append((path, value))
    return out


def _doc_dict(d: Document, p: Principal) -> dict[str, Any]:
    own = p.scope is None or (p.user_id is not None and d.user_id == p.user_id)
    return {"id": d.id, "kind": d.kind, "time": iso(d.time), "device_id": d.device_id,
            "user_id": d.user_id, "data": d.data, "pii": d.pii if own else None,
            "pii_redacted": bool(d.pii is not None and not own),
            "created_by": d.created_by, "created_at": iso(d.created_at)}


class DocumentStore:
    def __init__(self, registry: RegistryStore, clock: Callable[[], int] = time.time_ns) -> None:
        self.registry = registry
        self.clock = clock

    def _visible(self, p: Principal) -> ColumnElement[bool] | None:
        if p.scope is None:
            return None
        conds: list[ColumnElement[bool]] = []
        if p.scope.devices:
            conds.append(Document.device_id.in_(sorted(p.scope.devices)))
        if p.user_id is not None:
            conds.append(Document.user_id == p.user_id)
        return or_(*conds) if conds else false()

    def add(self, body: Any, p: Principal) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest('a document is a JSON object: {"kind", "data", ...}')
        try:
            doc = DocumentIn.model_validate(body)
        except ValidationError as exc:
            raise BadRequest("; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}"
                                       for e in exc.errors())) from None
        p.require_write("write documents")
        user_id = doc.user_id
        if p.scope is not None:
            if doc.device_id is not None and doc.device_id not in p.scope.devices:
                raise Forbidden(f"device {doc.device_id!r} is not in {p.id!r}'s locations")
            if user_id is not None and user_id != p.user_id:
                raise Forbidden(f"{p.id!r} may write documents about itself only, not {user_id!r}")
            if doc.device_id is None:
                user_id = p.user_id  # a user's own document (they can read it back)
        now = ns_to_datetime(self.clock())
        t = doc.time
        when = parse_when(str(t), self.clock()) if isinstance(t, int) else now if t is None else t
        if when.tzinfo is None:
            raise BadRequest("time: give a time zone (e.g. 2026-01-01T00:00:00Z) or nanoseconds")
        with self.registry.session(write=True) as s:
            if user_id is not None and s.get(User, user_id) is None:
                raise BadRequest(f"user_id: no user {user_id!r}")
            row = Document(kind=doc.kind, time=when, device_id=doc.device_id, user_id=user_id,
                           data=doc.data, pii=doc.pii, created_by=p.id, created_at=now)
            s.add(row)
            s.flush()
            return _doc_dict(row, p)

    def get(self, doc_id: int, p: Principal) -> dict[str, Any]:
        with self.registry.session() as s:
            q = select(Document).where(Document.id == doc_id)
            vis = self._visible(p)
            if vis is not None:
                q = q.where(vis)
            row = s.scalars(q).first()
            if row is None:
                raise NotFound(f"no document {doc_id}")
            return _doc_dict(row, p)

    def delete(self, doc_id: int, p: Principal) -> dict[str, Any]:
        """Remove a document: admins any, a user their own or their devices'."""
        p.require_write("delete documents")
        with self.registry.session(write=True) as s:
            q = select(Document).where(Document.id == doc_id)
            vis = self._visible(p)
            if vis is not None:
                q = q.where(vis)
            row = s.scalars(q).first()
            if row is None:
                raise NotFound(f"no document {doc_id}")
            out = _doc_dict(row, p)
            s.delete(row)
            return out

    def list(
        self,
        p: Principal,
        *,
        kind: str | None = None,
        device_id: str | None = None,
        user_id: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        where: Sequence[tuple[tuple[str, ...], str]] = (),
        order: str = "desc",
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total matching, one page) sorted by time (``order`` asc or desc)."""
        check_page(limit, offset, MAX_LIMIT)
        if order not in ("asc", "desc"):
            raise BadRequest(f"sort by time asc or desc; got {order!r}")
        conds: list[ColumnElement[bool]] = []
        if kind is not None:
            conds.append(Document.kind == kind)
        if device_id is not None:
            conds.append(Document.device_id == device_id)
        if user_id is not None:
            conds.append(Document.user_id == user_id)
        if start is not None:
            conds.append(Document.time >= start)
        if end is not None:
            conds.append(Document.time < end)
        for path, value in where:
            conds.append(self._json_eq(path, value))
        vis = self._visible(p)
        if vis is not None:
            conds.append(vis)
        by = (Document.time.asc(), Document.id.asc()) if order == "asc" else (Document.time.desc(), Document.id.desc())
        with self.registry.session() as s:
            total = int(s.execute(select(func.count()).select_from(Document).where(*conds)).scalar_one())
            rows = s.scalars(select(Document).where(*conds).order_by(*by).limit(limit).offset(offset)).all()
            return total, [_doc_dict(r, p) for r in rows]

    def _json_eq(self, path: tuple[str, ...], value: str) -> ColumnElement[bool]:
        """``data`` at ``path`` equals ``value``: as text (a JSON string, or the text of a number
        or boolean); on SQLite numbers and booleans also by value (``21`` matches ``21.0``)."""
        elem = Document.data[path] if len(path) > 1 else Document.data[path[0]]
        alts: list[ColumnElement[bool]] = [elem.as_string() == value]
        if self.registry.engine.dialect.name == "sqlite":
            low = value.lower()
            if low in ("true", "false"):
                alts.append(elem.as_boolean() == (low == "true"))
            else:
                try:
                    alts.append(elem.as_float() == float(value))
                except ValueError:
                    pass
        return or_(*alts) if len(alts) > 1 else alts[0]


__all__ = ["KINDS", "DocumentIn", "DocumentStore", "parse_when", "parse_where"]
