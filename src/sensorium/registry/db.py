"""Database engines for the registry: SQLite (default, ``data_dir/registry.sqlite``) or
PostgreSQL (``[registry] url``), set up the same way for the store and for migrations.

SQLite: WAL journal (readers never wait for the writer), foreign keys on, a busy timeout, and
transactions emitted by us (``BEGIN`` / ``BEGIN IMMEDIATE`` for writes, so two writers queue
instead of deadlocking on a lock upgrade, and DDL is transactional too). PostgreSQL: psycopg 3,
every table in one schema (``pg_schema``, created when missing) through ``search_path``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from sensorium.errors import ConfigError

WRITE = "sensorium_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)
SQLITE_BUSY_S = 30.0
_SCHEMA_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def resolve_url(url: str | None, data_dir: Path) -> str:
    """The SQLAlchemy URL: SQLite in the data directory when unset; ``postgresql://`` means
    psycopg 3 (``postgresql+psycopg://``)."""
    if not url:
        return f"sqlite:///{(Path(data_dir) / 'registry.sqlite').resolve()}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str, *, pg_schema: str, migrating: bool = False) -> Engine:
    """An engine for ``url``. ``migrating``: one connection at a time, SQLite foreign keys off
    (Alembic's batch mode copies tables; a cascade must not fire while it does)."""
    try:
        u = make_url(url)
    except Exception as exc:  # sqlalchemy.exc.ArgumentError
        raise ConfigError(f"registry.url is not a database URL: {exc}") from None
    backend = u.get_backend_name()
    kw: dict[str, Any] = {}
    if migrating:
        kw["poolclass"] = NullPool
    if backend == "sqlite":
        db = u.database
        if db and db != ":memory:":
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False}, **kw)
        _sqlite_events(engine, foreign_keys=not migrating)
        return engine
    if backend == "postgresql":
        if not _SCHEMA_RE.fullmatch(pg_schema):
            raise ConfigError(f"registry.pg_schema {pg_schema!r}: use lower-case letters, digits and _")
        if u.get_driver_name() != "psycopg":
            raise ConfigError("the registry talks to PostgreSQL with psycopg 3: use a postgresql:// URL")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError(
                "a PostgreSQL registry needs psycopg 3: pip install 'sensorium[postgres]'"
            ) from None
        connect_args = {"options": f"-csearch_path={pg_schema}", "connect_timeout": 5}
        engine = create_engine(url, connect_args=connect_args, pool_pre_ping=True, **kw)
        return engine
    raise ConfigError(f"registry.url: unsupported database {backend!r} (sqlite or postgresql)")


def ensure_schema(engine: Engine, pg_schema: str) -> None:
    """PostgreSQL: create the registry's schema when it is missing."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{pg_schema}"'))


def _sqlite_events(engine: Engine, *, foreign_keys: bool) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(WRITE) else "BEGIN")


__all__ = ["WRITE", "ensure_schema", "make_engine", "resolve_url"]
