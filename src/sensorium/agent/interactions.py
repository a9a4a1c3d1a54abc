"""What people asked and told the agent, and what it did: ``data_dir/agent.sqlite``.

``interactions``   one row per question or command: principal, session, text, kind, intent (the
                   plan or the command intent, JSON), status (answered, declined,
                   needs_confirmation, executed, failed, cancelled, draft, saved), the response
                   (JSON) and feedback. (The registry's document store, #6, will absorb this
                   table; its shape follows the registry issue's "user interaction" document.)
``confirmations``  pending confirmations: a random token → the interaction and the action it will
                   run, for one principal, until it expires. A token runs at most once.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from sensorium.errors import BadRequest, NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS interactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_ns INTEGER NOT NULL,
    principal TEXT,
    session_id TEXT,
    kind TEXT NOT NULL,
    text TEXT NOT NULL,
    intent TEXT,
    status TEXT NOT NULL,
    response TEXT,
    feedback TEXT,
    updated_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS interactions_session ON interactions (session_id, id);
CREATE TABLE IF NOT EXISTS confirmations (
    token TEXT PRIMARY KEY,
    interaction_id INTEGER NOT NULL,
    principal TEXT,
    action TEXT NOT NULL,
    expires_ns INTEGER NOT NULL,
    used_ns INTEGER
);
"""
CONFIRM_TTL_NS = 10 * 60 * 1_000_000_000


class InteractionStore:
    def __init__(self, path: Path, clock: Callable[[], int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._lock = threading.Lock()
        self._con = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._con.row_factory = sqlite3.Row
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._con.close()

    def add(self, *, principal: str | None, session_id: str | None, kind: str, text: str,
            intent: Any, status: str, response: Any) -> int:
        now = self.clock()
        with self._lock:
            cur = self._con.execute(
                "INSERT INTO interactions (created_ns, principal, session_id, kind, text, intent, status, response, updated_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, principal, session_id, kind, text, _dump(intent), status, _dump(response), now))
            return int(cur.lastrowid or 0)

    def update(self, iid: int, *, status: str, response: Any = None) -> None:
        with self._lock:
            self._con.execute("UPDATE interactions SET status = ?, response = coalesce(?, response), updated_ns = ? WHERE id = ?",
                              (status, _dump(response) if response is not None else None, self.clock(), iid))

    def feedback(self, iid: int, feedback: str, principal: str | None) -> dict[str, Any]:
        if not feedback or len(feedback) > 2000:
            raise BadRequest("feedback must be 1-2000 characters")
        with self._lock:
            row = self._con.execute("SELECT principal FROM interactions WHERE id = ?", (iid,)).fetchone()
            if row is None or (row["principal"] is not None and row["principal"] != principal):
                raise NotFound(f"no interaction {iid}")
            self._con.execute("UPDATE interactions SET feedback = ?, updated_ns = ? WHERE id = ?", (feedback, self.clock(), iid))
        return self.get(iid)

    def get(self, iid: int) -> dict[str, Any]:
        with self._lock:
            row = self._con.execute("SELECT * FROM interactions WHERE id = ?", (iid,)).fetchone()
        if row is None:
            raise NotFound(f"no interaction {iid}")
        return _row(row)

    def list(self, *, principal: str | None = None, session_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        sql = "SELECT * FROM interactions WHERE 1 = 1"
        args: list[Any] = []
        if principal is not None:
            sql += " AND principal = ?"
            args.append(principal)
        if session_id is not None:
            sql += " AND session_id = ?"
            args.append(session_id)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(max(1, min(int(limit), 10_000)))
        with self._lock:
            rows = self._con.execute(sql, args).fetchall()
        return [_row(r) for r in rows]

    # -- confirmations -----------------------------------------------------------------------------
    def pending(self, interaction_id: int, principal: str | None, action: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._con.execute("INSERT INTO confirmations VALUES (?, ?, ?, ?, ?, NULL)",
                              (token, interaction_id, principal, _dump(action), self.clock() + CONFIRM_TTL_NS))
        return token

    def take(self, token: str, principal: str | None) -> tuple[int, dict[str, Any]]:
        """The action a token confirms, once; :class:`NotFound` for an unknown, used, expired or
        someone else's token."""
        if not isinstance(token, str) or not 8 <= len(token) <= 64:
            raise BadRequest("confirm must be the confirm_token string of an earlier answer")
        now = self.clock()
        with self._lock:
            row = self._con.execute("SELECT * FROM confirmations WHERE token = ?", (token,)).fetchone()
            if row is None or row["used_ns"] is not None or row["expires_ns"] < now or (
                    row["principal"] is not None and row["principal"] != principal):
                raise NotFound("unknown, expired or already used confirmation token; ask again")
            cur = self._con.execute("UPDATE confirmations SET used_ns = ? WHERE token = ? AND used_ns IS NULL", (now, token))
            if cur.rowcount != 1:
                raise NotFound("this confirmation token was already used")
        return int(row["interaction_id"]), orjson.loads(row["action"])


def _dump(v: Any) -> str | None:
    return None if v is None else orjson.dumps(v, default=str).decode()


def _row(r: sqlite3.Row) -> dict[str, Any]:
    from sensorium.agent.timeparse import iso

    return {"id": r["id"], "created_at": iso(r["created_ns"]), "principal": r["principal"], "session_id": r["session_id"],
            "kind": r["kind"], "text": r["text"], "intent": orjson.loads(r["intent"]) if r["intent"] else None,
            "status": r["status"], "response": orjson.loads(r["response"]) if r["response"] else None,
            "feedback": r["feedback"]}


__all__ = ["InteractionStore"]
