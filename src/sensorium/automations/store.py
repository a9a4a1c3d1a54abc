"""Automations and notifications at rest (SQLite ``data_dir/automations.sqlite``, WAL journal).

``automations``   name, definition (JSON), source (``file``: loaded from ``automations.file`` at
                  start, replaced each start; ``api``: created over HTTP/CLI/agent, kept), times.
``notifications`` what ``notify`` actions produced: one row per (execution, user), read/unread.

Execution outcomes live in the action outbox (``automation-deliveries.sqlite``, the alert
Dispatcher's table): see :func:`sensorium.automations.actions.executions`.
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

from sensorium.automations.model import Automation
from sensorium.errors import Conflict, NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS automations (
    name TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    source TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL,
    automation TEXT NOT NULL,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    read_ns INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_user ON notifications (user, read_ns);
"""


class AutomationStore:
    def __init__(self, path: Path, *, clock: Callable[[], int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._lock = threading.RLock()
        self._local = 0  # changes made through this connection (data_version does not see them)
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("automation store is closed")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- automations ---------------------------------------------------------------------------
    def data_version(self) -> int:
        """Changes whenever any connection (any process) committed a change: cheap to poll."""
        with self._lock:
            return int(self._db().execute("PRAGMA data_version").fetchone()[0]) * 1_000_003 + self._local

    def load_file(self, automations: Iterable[Automation]) -> int:
        """Replace the file-sourced automations with ``automations`` (one transaction)."""
        now = self.clock()
        rows = [(a.name, orjson.dumps(a.definition()).decode(), now) for a in automations]
        with self._lock:
            c = self._db()
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("DELETE FROM automations WHERE source = 'file'")
                clash = [r[0] for r in rows if c.execute(
                    "SELECT 1 FROM automations WHERE name = ?", (r[0],)).fetchone()]
                if clash:
                    raise Conflict(f"automations in the file clash with ones created over the API: {clash}")
                c.executemany(
                    "INSERT INTO automations VALUES (?, ?, 'file', ?3, ?3)", rows
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            self._local += 1
        return len(rows)

    def put(self, a: Automation, *, create: bool = False) -> dict[str, Any]:
        """Create (``create``: refuse an existing name) or replace an API automation."""
        now = self.clock()
        with self._lock:
            c = self._db()
            row = c.execute("SELECT source FROM automations WHERE name = ?", (a.name,)).fetchone()
            if row is not None and create:
                raise Conflict(f"automation {a.name!r} exists (PUT /api/v1/automations/{a.name} replaces it)")
            if row is not None and row[0] == "file":
                raise Conflict(f"automation {a.name!r} comes from the automations file: edit the file")
            c.execute(
                "INSERT INTO automations VALUES (?, ?, 'api', ?3, ?3) ON CONFLICT (name) DO UPDATE "
                "SET definition = excluded.definition, updated_ns = excluded.updated_ns",
                (a.name, orjson.dumps(a.definition()).decode(), now),
            )
            self._local += 1
        return self.get(a.name)

    def delete(self, name: str) -> None:
        with self._lock:
            row = self._db().execute("SELECT source FROM automations WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no automation {name!r}")
            if row[0] == "file":
                raise Conflict(f"automation {name!r} comes from the automations file: edit the file")
            self._db().execute("DELETE FROM automations WHERE name = ?", (name,))
            self._local += 1

    def get(self, name: str) -> dict[str, Any]:
        with self._lock:
            row = self._db().execute(
                "SELECT name, definition, source, created_ns, updated_ns FROM automations WHERE name = ?",
                (name,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no automation {name!r}")
        return _row(row)

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db().execute(
                "SELECT name, definition, source, created_ns, updated_ns FROM automations ORDER BY name"
            ).fetchall()
        return [_row(r) for r in rows]

    def automations(self) -> builtins.list[Automation]:
        return [Automation.model_validate(r["definition"]) for r in self.list()]

    # -- notifications -------------------------------------------------------------------------
    def notify(self, key: str, user: str, automation: str, title: str, message: str) -> bool:
        """Add a notification once per ``key``. False: it was there already."""
        with self._lock:
            cur = self._db().execute(
                "INSERT OR IGNORE INTO notifications (key, user, automation, title, message, created_ns) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, user, automation, title, message, self.clock()),
            )
        return cur.rowcount == 1

    def notifications(
        self, *, user: str | None = None, unread: bool = False, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        where: builtins.list[str] = []
        args: builtins.list[Any] = []
        if user is not None:
            where.append("(user = ? OR user = '*')")
            args.append(user)
        if unread:
            where.append("read_ns IS NULL")
        sql_where = f" WHERE {' AND '.join(where)}" if where else ""
        with self._lock:
            c = self._db()
            total = c.execute(f"SELECT count(*) FROM notifications{sql_where}", args).fetchone()[0]
            unread_n = c.execute(
                f"SELECT count(*) FROM notifications{sql_where}{' AND' if where else ' WHERE'} read_ns IS NULL",
                args,
            ).fetchone()[0]
            rows = c.execute(
                "SELECT id, key, user, automation, title, message, created_ns, read_ns FROM notifications"
                f"{sql_where} ORDER BY id DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        cols = ("id", "key", "user", "automation", "title", "message", "created_ns", "read_ns")
        items = [dict(zip(cols, r, strict=True)) | {"read": r[7] is not None} for r in rows]
        return {"notifications": items, "total": int(total), "unread": int(unread_n)}

    def mark_read(self, ids: Iterable[int], read: bool = True) -> int:
        ids = builtins.list(ids)
        if not ids:
            return 0
        marks = ",".join("?" * len(ids))
        with self._lock:
            cur = self._db().execute(
                f"UPDATE notifications SET read_ns = ? WHERE id IN ({marks})",
                [self.clock() if read else None, *ids],
            )
        return int(cur.rowcount)


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "name": r[0],
        "definition": orjson.loads(r[1]),
        "source": r[2],
        "created_ns": r[3],
        "updated_ns": r[4],
    }
