"""How a registry list filters, searches, sorts and is limited to an access scope."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import Session, with_loader_criteria

from sensorium.errors import BadRequest
from sensorium.registry.models import MODELS, Entity, Relation
from sensorium.registry.schemas import FIELDS
from sensorium.registry.scope import AccessScope

_UNFILTERABLE = frozenset({"capabilities"})
_TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "user": (),  # e-mail and name are encrypted: the store searches them after decryption
    "location": ("address",),
    "room": ("floor",),
    "device": ("type", "firmware"),
    "sensor": ("measurement", "field", "unit"),
    "actuator": ("command_topic",),
    "ai_model": ("framework", "task"),
    "service": ("endpoint", "protocol"),
}


def conditions(kind: str, filters: Mapping[str, str], q: str | None) -> list[ColumnElement[bool]]:
    model = MODELS[kind]
    allowed = ("id", "name", *FIELDS[kind])
    conds: list[ColumnElement[bool]] = []
    for key, raw in filters.items():
        if kind == "user" and (key in ("name", "email") or key.startswith("attributes.")):
            conds.append(_user_filter(key, raw))
            continue
        if key.startswith("attributes."):
            attr = key.split(".", 1)[1]
            if not attr:
                raise BadRequest("filter attributes.KEY needs a key")
            conds.append(model.attributes[attr].as_string() == raw)
            continue
        if key not in allowed or key in _UNFILTERABLE:
            usable = [f for f in allowed if f not in _UNFILTERABLE]
            raise BadRequest(
                f"cannot filter {kind}s by {key!r}: filter by {', '.join(usable)} or attributes.KEY"
            )
        col = getattr(model, key)
        if raw == "":
            conds.append(col.is_(None))
        else:
            conds.append(col == _typed(kind, key, raw))
    if q:
        pat = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        cols = [model.id, model.name, *(getattr(model, c) for c in _TEXT_COLUMNS[kind])]
        conds.append(or_(*(c.ilike(pat, escape="\\") for c in cols)))
    return conds


def _user_filter(key: str, raw: str) -> ColumnElement[bool]:
    """Users' personal data is encrypted: an e-mail is found by its blind index (exact, case
    insensitive); names and attributes cannot be searched."""
    from sensorium.pii.keys import require
    from sensorium.registry.models import User

    if key != "email":
        raise BadRequest(f"cannot filter users by {key!r}: it is encrypted personal data (filter "
                         "by id, role or the exact email)")
    if raw == "":
        return User.email.is_(None)
    return User.email_index.in_(require("an e-mail look-up").indexes(raw))


def order(kind: str, sort: str | None) -> list[Any]:
    model = MODELS[kind]
    if not sort:
        return [model.id]
    desc = sort.startswith("-")
    key = sort.lstrip("-+")
    allowed = ("id", "name", "created_at", "updated_at", *(f for f in FIELDS[kind] if f not in _UNFILTERABLE))
    if kind == "user" and key == "email":
        raise BadRequest("cannot sort users by email: it is encrypted personal data")
    if key not in allowed:
        raise BadRequest(f"cannot sort {kind}s by {key!r}: sort by {', '.join(allowed)} (prefix - to reverse)")
    col = getattr(model, key)
    return [col.desc() if desc else col.asc(), model.id]


def _typed(kind: str, key: str, raw: str) -> Any:
    from sensorium.registry.schemas import INPUT

    ann = INPUT[kind].model_fields[key].annotation
    if ann in (bool, bool | None):
        low = raw.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise BadRequest(f"{key} is true or false; got {raw!r}")
    if ann in (float, float | None):
        try:
            return float(raw)
        except ValueError:
            raise BadRequest(f"{key} is a number; got {raw!r}") from None
    return raw


def apply_scope(s: Session, scope: AccessScope) -> None:
    """Every ORM SELECT of ``s`` sees only what ``scope`` allows (SQLAlchemy loader criteria)."""
    from sqlalchemy import event

    visible = sorted(scope.visible)

    @event.listens_for(s, "do_orm_execute")
    def _limit(state: Any) -> None:
        if state.is_select:
            state.statement = state.statement.options(
                with_loader_criteria(Entity, lambda cls: cls.id.in_(visible), include_aliases=True),
                with_loader_criteria(
                    Relation, and_(Relation.src_id.in_(visible), Relation.dst_id.in_(visible)),
                    include_aliases=True,
                ),
            )


__all__ = ["apply_scope", "conditions", "order"]
