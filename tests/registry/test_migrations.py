"""Alembic migrations of the registry, on SQLite and PostgreSQL: upgrade from empty, downgrade to
the previous revision and upgrade again with the data kept, and models == migrations; 0003
encrypts the personal data 0002 kept in clear (and refuses to without a key)."""

from __future__ import annotations

from pathlib import Path

import pytest
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
        assert migrate.current(engine) == migrate.head() == "0003"
        names = set(inspect(engine).get_table_names())
        assert {"entities", "users", "locations", "rooms", "devices", "sensors", "actuators",
                "ai_models", "services", "relations", "registry_state", "alembic_version",
                "auth_tokens", "audit_log", "documents"} <= names
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
        migrate.upgrade(url, schema)  # at head: nothing to do
        assert migrate.current(engine) == "0003"
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


def _plaintext_users_at_0002(url: str, schema: str) -> None:
    """A registry at revision 0002 with users as 0002 kept them: names, e-mails and attributes
    in clear."""
    from sqlalchemy import text

    migrate.upgrade(url, schema, "0002")
    engine = make_engine(url, pg_schema=schema)
    try:
        with engine.begin() as conn:
            for uid, name, email, attrs in [("alice", "Alice Liddell", "alice@example.com", '{"phone": "+44 1"}'),
                                            ("bob", "bob", None, "{}"), ("carl", "Carl", None, "{}")]:
                conn.execute(text(
                    "INSERT INTO entities (id, kind, name, attributes, created_at, updated_at) "
                    "VALUES (:id, 'user', :name, :attrs, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ), {"id": uid, "name": name, "attrs": attrs})
                conn.execute(text("INSERT INTO users (id, email, role) VALUES (:id, :email, 'user')"),
                             {"id": uid, "email": email})
    finally:
        engine.dispose()


def test_0003_encrypts_the_plaintext_of_0002_and_its_downgrade_decrypts_it(backend: tuple[str, str]) -> None:
    from sqlalchemy import text

    from sensorium.pii import require

    url, schema = _url(backend)
    _plaintext_users_at_0002(url, schema)
    migrate.upgrade(url, schema)
    engine = make_engine(url, pg_schema=schema)
    try:
        assert migrate.current(engine) == "0003"
        with engine.connect() as conn:
            rows = {r[0]: r for r in conn.execute(text(
                "SELECT e.id, e.name, e.attributes, u.email, u.email_index, u.display_name, u.pii_attributes "
                "FROM entities e JOIN users u ON u.id = e.id"))}
        alice = rows["alice"]
        assert alice[1] == "alice" and alice[2] in ("{}", {})  # entities keeps the id, no attributes
        key = require()
        assert key.decrypt(alice[3]) == "alice@example.com" and alice[4] == key.index("ALICE@example.com")
        assert key.decrypt(alice[5]) == "Alice Liddell" and key.decrypt(alice[6]) == '{"phone":"+44 1"}'
        assert "alice@example.com" not in str(rows) and "Liddell" not in str(rows)
        assert rows["bob"][3:] == (None, None, None, None)  # nothing personal: nothing encrypted
        assert key.decrypt(rows["carl"][5]) == "Carl"
    finally:
        engine.dispose()
    if url.startswith("sqlite"):  # no plaintext left in the file (secure_delete zeroes old pages)
        db = Path(url.removeprefix("sqlite:///"))
        for f in db.parent.glob(db.name + "*"):
            blob = f.read_bytes()
            assert b"alice@example.com" not in blob and b"Liddell" not in blob and b"+44 1" not in blob, f
    store = RegistryStore(url, pg_schema=schema, clock=FakeClock())
    try:
        got = store.get("alice", "user")
        assert (got["name"], got["email"], got["attributes"]) == ("Alice Liddell", "alice@example.com", {"phone": "+44 1"})
        assert [u["id"] for u in store.entities("user", {"email": "alice@example.com"})[1]] == ["alice"]
    finally:
        store.close()

    migrate.downgrade(url, schema, "0002")
    engine = make_engine(url, pg_schema=schema)
    try:
        with engine.connect() as conn:
            back = {r[0]: tuple(r[1:]) for r in conn.execute(text(
                "SELECT e.id, e.name, u.email FROM entities e JOIN users u ON u.id = e.id"))}
        assert back == {"alice": ("Alice Liddell", "alice@example.com"), "bob": ("bob", None), "carl": ("Carl", None)}
        assert not inspect(engine).has_table("documents")
    finally:
        engine.dispose()


def test_0003_refuses_to_upgrade_plaintext_personal_data_without_a_key(
    backend: tuple[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sensorium.pii import PIIKeyMissing

    url, schema = _url(backend)
    _plaintext_users_at_0002(url, schema)
    monkeypatch.delenv("SENSORIUM_PII_KEYS")
    with pytest.raises(PIIKeyMissing, match=r"personal data of 2 user\(s\) in plaintext.*SENSORIUM_PII_KEYS"):
        migrate.upgrade(url, schema)
    engine = make_engine(url, pg_schema=schema)
    try:
        assert migrate.current(engine) == "0002"  # all or nothing: nothing changed
        assert not inspect(engine).has_table("auth_tokens")
    finally:
        engine.dispose()
