"""Alembic migrations of the registry, on SQLite and PostgreSQL: upgrade from empty, downgrade to
the previous revision and upgrade again with the data kept, and models == migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect

from sensorium.registry import migrate
from sensorium.registry.db import make_engine, resolve_url
from sensorium.registry.models import Base
from sensorium.registry.store import RegistryStore
from tests.conftest import FakeClock
from tests.registry.conftest import home


def _url(backend: tuple[str, str]) -> tuple[str, str]:
    url, schema = backend
    return resolve_url(url, Path(".")), schema


def test_the_pinned_head_is_the_newest_script() -> None:
    assert migrate.script_head() == migrate.HEAD


def test_upgrade_from_empty_creates_what_the_models_describe(backend: tuple[str, str]) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url, schema = _url(backend)
    engine = make_engine(url, pg_schema=schema)
    try:
        assert migrate.current(engine) is None
        migrate.upgrade(url, schema)
        assert migrate.current(engine) == migrate.head() == "0002"
        names = set(inspect(engine).get_table_names())
        assert {"entities", "users", "locations", "rooms", "devices", "sensors", "actuators",
                "ai_models", "services", "relations", "registry_state", "alembic_version"} <= names
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
        migrate.upgrade(url, schema)  # at head: nothing to do
        assert migrate.current(engine) == "0002"
    finally:
        engine.dispose()


def test_downgrade_to_the_previous_revision_and_upgrade_again_keeps_the_data(backend: tuple[str, str]) -> None:
    url, schema = _url(backend)
    store = RegistryStore(url, pg_schema=schema, clock=FakeClock())
    home(store)
    store.auto_register(["auto-1"])
    before = store.snapshot()
    store.close()

    migrate.downgrade(url, schema, "0001")
    engine = make_engine(url, pg_schema=schema)
    try:
        assert migrate.current(engine) == "0001"
        assert "first_seen_at" not in {c["name"] for c in inspect(engine).get_columns("devices")}
        assert not inspect(engine).has_table("registry_state")
    finally:
        engine.dispose()

    store = RegistryStore(url, pg_schema=schema, clock=FakeClock())  # opening upgrades to head
    try:
        after = store.snapshot()
        # every row survived the table copies (SQLite's batch mode must not cascade-delete the
        # sensors and actuators of the copied devices table)
        for kind, rows in before.entities.items():
            want = [{k: v for k, v in r.items() if k != "first_seen_at"} for r in rows]
            got = [{k: v for k, v in r.items() if k != "first_seen_at"} for r in after.entities[kind]]
            assert got == want, kind
        assert after.relations == before.relations
        assert store.get("auto-1")["first_seen_at"] is None  # the column came back empty
        assert store.revision() >= 1
        store.create("device", {"id": "after-upgrade", "room_id": "kitchen"})  # still writable
    finally:
        store.close()
