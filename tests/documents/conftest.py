"""The registry fixtures (a store on SQLite and on PostgreSQL) for documents."""

from tests.registry.conftest import backend, store  # noqa: F401
