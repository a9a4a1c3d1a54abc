"""Apply the registry's Alembic migrations programmatically (no ``alembic.ini``): the scripts
ship inside the package (``registry/migrations``) and run on one connection in one transaction.

Concurrent openers (several ingest nodes, an api node) serialise: PostgreSQL by an advisory
lock, SQLite by ``BEGIN IMMEDIATE`` (the migration holds the write lock); the second finds the
database at head and does nothing.
"""

from __future__ import annotations

import functools
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text

from sensorium.errors import ConfigError
from sensorium.registry.db import WRITE, ensure_schema, make_engine

MIGRATIONS = Path(__file__).parent / "migrations"
#: the newest revision in ``migrations/versions`` (a test keeps the two in step): opening a
#: registry already at head then needs no Alembic import at all
HEAD = "0003"
_PG_LOCK = 0x5E5E_0006  # advisory lock key of registry migrations


def _config(conn: Connection | None = None) -> object:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if conn is not None:
        cfg.attributes["connection"] = conn
    return cfg


def head() -> str:
    """The newest revision the package ships."""
    return HEAD


@functools.cache
def script_head() -> str | None:
    """The newest revision as Alembic finds it in the scripts (for the test that pins HEAD)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()  # type: ignore[arg-type]


def current(engine: Engine) -> str | None:
    """The database's revision (None: no registry tables yet)."""
    with engine.connect() as conn:
        return _current(conn)


def _current(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    row = conn.execute(text("SELECT version_num FROM alembic_version")).first()
    return None if row is None else str(row[0])


def upgrade(url: str, pg_schema: str, revision: str = "head") -> None:
    _run(url, pg_schema, "upgrade", revision)


def downgrade(url: str, pg_schema: str, revision: str) -> None:
    _run(url, pg_schema, "downgrade", revision)


def _run(url: str, pg_schema: str, what: str, revision: str) -> None:
    engine = make_engine(url, pg_schema=pg_schema, migrating=True)
    try:
        ensure_schema(engine, pg_schema)
        with engine.execution_options(**{WRITE: True}).begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
            if what == "upgrade" and revision == "head" and _current(conn) == HEAD:
                return
            from alembic import command

            cfg = _config(conn)
            if what == "upgrade":
                command.upgrade(cfg, revision)  # type: ignore[arg-type]
            else:
                command.downgrade(cfg, revision)  # type: ignore[arg-type]
            if conn.dialect.name == "sqlite":  # batch copies ran without foreign keys: check them
                bad = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if bad:
                    raise ConfigError(f"registry migration left dangling references: {bad[:5]}")
    finally:
        engine.dispose()


__all__ = ["HEAD", "MIGRATIONS", "current", "downgrade", "head", "script_head", "upgrade"]
