"""Column types that keep personal data encrypted at rest, and the classification every column
of the registry database carries (``Column.info["classification"]``: the catalog reads it).

A value is encrypted on its way into the database and decrypted on its way out (SQLAlchemy
``TypeDecorator``), so the rest of the code sees plaintext and the database (its files, its WAL,
a dump) only Fernet tokens. Equality on such a column cannot work in SQL (each encryption is
randomised): look-ups go through a blind index (:meth:`KeyRing.indexes`).
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from sqlalchemy import Dialect, Text, TypeDecorator

from sensorium.pii.keys import require

Classification = Literal["pii", "internal", "public"]
CLASSIFICATIONS: tuple[Classification, ...] = ("pii", "internal", "public")

#: ``info=`` of a column holding personal data (it must also be an encrypted type: a test checks)
PII: dict[str, Any] = {"classification": "pii"}
#: ``info=`` of a column that may be shown to anyone allowed to read its table
PUBLIC: dict[str, Any] = {"classification": "public"}
#: ``info=`` of operational data (the default of an unmarked column)
INTERNAL: dict[str, Any] = {"classification": "internal"}


class EncryptedText(TypeDecorator[str]):
    """A string stored as a Fernet token (text) under the current PII key."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return require().encrypt(str(value))

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return require().decrypt(value)


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON value stored as a Fernet token of its serialised form."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return require().encrypt(orjson.dumps(value).decode())

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return orjson.loads(require().decrypt(value))


ENCRYPTED_TYPES = (EncryptedText, EncryptedJSON)


def classification_of(column: Any) -> Classification:
    got = (getattr(column, "info", None) or {}).get("classification", "internal")
    if got not in CLASSIFICATIONS:
        raise ValueError(f"column {column}: unknown classification {got!r}")
    c: Classification = got
    return c


__all__ = [
    "CLASSIFICATIONS",
    "ENCRYPTED_TYPES",
    "INTERNAL",
    "PII",
    "PUBLIC",
    "Classification",
    "EncryptedJSON",
    "EncryptedText",
    "classification_of",
]
