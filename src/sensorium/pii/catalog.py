"""The data catalog: every table Sensorium keeps and each column's classification —
``pii`` (personal data: encrypted at rest), ``internal`` (operational data, behind access
control) or ``public`` (safe to show to anyone who can reach the server).

Sources: the registry database's tables (the models' ``Column.info["classification"]``), the
registry's SQL tables (``devices``, ``rooms`` ...), and the telemetry measurements of every
bucket (tags and fields: ``internal``; they carry no personal data — put people in the registry,
not in tags).
"""

from __future__ import annotations

from typing import Any

from sensorium.pii.fields import ENCRYPTED_TYPES, classification_of

#: registry-database tables that hold nothing but schema bookkeeping
PUBLIC_TABLES = frozenset({"alembic_version", "registry_state"})


def registry_tables() -> list[dict[str, Any]]:
    from sensorium.registry.models import Base

    out = []
    for table in sorted(Base.metadata.tables.values(), key=lambda t: t.name):
        cols = []
        for c in table.columns:
            cls = "public" if table.name in PUBLIC_TABLES else classification_of(c)
            cols.append({"name": c.name, "type": type(c.type).__name__, "classification": cls,
                         "encrypted": isinstance(c.type, ENCRYPTED_TYPES)})
        out.append({"name": table.name, "store": "registry", "columns": cols})
    return out


def catalog(platform: Any) -> dict[str, Any]:
    """``{"classifications": [...], "tables": [{"name", "store", "bucket"?, "columns": [...]}]}``."""
    from sensorium.registry.sql import SCHEMAS

    tables = registry_tables()
    for name, schema in SCHEMAS.items():
        tables.append({"name": name, "store": "sql", "columns": [
            {"name": f.name, "type": str(f.type), "classification": "internal", "encrypted": False}
            for f in schema]})
    for bucket in platform.buckets():
        for m in platform.measurements(bucket):
            cols = [{"name": "time", "type": "timestamp", "role": "time", "classification": "internal",
                     "encrypted": False}]
            for c, role in platform.registry.columns(bucket, m).items():
                cols.append({"name": c, "type": role, "role": "tag" if role == "tag" else "field",
                             "classification": "internal", "encrypted": False})
            tables.append({"name": m, "store": "telemetry", "bucket": bucket, "columns": cols})
    return {"classifications": ["pii", "internal", "public"], "tables": tables}


__all__ = ["PUBLIC_TABLES", "catalog", "registry_tables"]
