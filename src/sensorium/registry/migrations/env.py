"""Alembic environment of the registry. Run programmatically (``sensorium.registry.migrate``):
the caller hands in an open connection inside a transaction, so a migration is all or nothing
(on SQLite too: we emit its ``BEGIN``)."""

from __future__ import annotations

from alembic import context

from sensorium.registry.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
