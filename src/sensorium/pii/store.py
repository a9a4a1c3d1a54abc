"""Personal data in the registry's database, column by column: every column whose
``info["classification"]`` is ``pii`` (:mod:`sensorium.pii.fields`) — found in the models'
metadata, so a new PII column is covered without touching this module.

* :func:`check_keys` — at start: personal data stored and no key (or a key that does not fit) is a
  clear error, not a failure at the first read.
* :func:`rotate` — ``sensorium pii rotate``: every value re-encrypted with the current key, and
  the blind indexes recomputed with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Column, Table, Text, func, select, type_coerce

from sensorium.errors import ConfigError
from sensorium.pii.fields import classification_of
from sensorium.pii.keys import MISSING_HINT, KeyRing, ring

BATCH = 500


def pii_columns(metadata: Any) -> Iterator[tuple[Table, Column[Any]]]:
    """(table, column) of every column classified ``pii``, in a stable order."""
    for table in sorted(metadata.tables.values(), key=lambda t: t.name):
        for col in table.columns:
            if classification_of(col) == "pii":
                yield table, col


def _raw(col: Column[Any]) -> Any:
    return type_coerce(col, Text())  # the stored text (the Fernet token), not decrypted


def count_values(conn: Any, metadata: Any) -> dict[str, int]:
    """``table.column`` → how many values of personal data are stored."""
    out = {}
    for table, col in pii_columns(metadata):
        out[f"{table.name}.{col.name}"] = int(conn.execute(
            select(func.count()).select_from(table).where(col.is_not(None))).scalar_one())
    return out


def check_keys(store: Any) -> None:
    """Raise :class:`ConfigError` when personal data is stored and no configured key reads it."""
    from sensorium.registry.models import Base

    r = ring()
    with store.engine.connect() as conn:
        if r is None:
            counts = {k: n for k, n in count_values(conn, Base.metadata).items() if n}
            if counts:
                what = ", ".join(f"{n} in {k}" for k, n in counts.items())
                raise ConfigError(
                    f"the registry at {store.safe_url} holds encrypted personal data ({what}) and no "
                    f"PII key is configured: {MISSING_HINT}"
                )
            return
        for table, col in pii_columns(Base.metadata):
            sample = conn.execute(select(_raw(col)).select_from(table).where(col.is_not(None)).limit(1)).scalar()
            if sample is not None:
                r.decrypt(sample)  # PIIKeyInvalid with the reason


def rotate(store: Any, key: KeyRing, progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Re-encrypt every PII value not yet under the current key, and recompute every blind index
    (users' ``email_index``). One transaction per batch; safe to re-run. Returns rows rewritten
    per ``table.column``."""
    from sensorium.registry.models import Base, User

    with store.engine.connect() as conn:
        counts = count_values(conn, Base.metadata)
    total = sum(counts.values())
    done = 0
    out: dict[str, int] = {}
    for table, col in pii_columns(Base.metadata):
        pk = next(iter(table.primary_key.columns))
        rewritten = 0
        last: Any = None
        while True:
            q = select(pk, _raw(col)).where(col.is_not(None)).order_by(pk).limit(BATCH)
            if last is not None:
                q = q.where(pk > last)
            with _writing(store) as conn:
                rows = conn.execute(q).all()
                for ident, token in rows:
                    if not key.current_key_wrote(token):
                        conn.execute(_raw_update(table, col, pk, ident, key.rotate(token)))
                        rewritten += 1
            done += len(rows)
            if progress is not None:
                progress(done, total)
            if len(rows) < BATCH:
                break
            last = rows[-1][0]
        out[f"{table.name}.{col.name}"] = rewritten
    # blind indexes: the current key's
    users: Any = User.__table__
    with _writing(store) as conn:
        for ident, token in conn.execute(select(users.c.id, _raw(users.c.email)).where(users.c.email.is_not(None))).all():
            conn.execute(users.update().where(users.c.id == ident).values(email_index=key.index(key.decrypt(token))))
    return out


def _writing(store: Any) -> Any:
    from sensorium.registry.db import WRITE

    return store.engine.execution_options(**{WRITE: True}).begin()


def _raw_update(table: Table, col: Column[Any], pk: Column[Any], ident: Any, token: str) -> Any:
    """An UPDATE that stores ``token`` as it is (bypassing the column's encryption)."""
    return table.update().where(pk == ident).values({col.name: type_coerce(token, Text())})


__all__ = ["check_keys", "count_values", "pii_columns", "rotate"]
