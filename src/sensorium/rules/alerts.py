"""The alert store: the lifecycle of every alert, acknowledgements, queries and a live feed, in SQLite.

The rule engine hands :meth:`AlertStore.apply` the :class:`~sensorium.rules.types.Transition`\\ s it
derives. Their ``(alert_id, seq)`` pairs are a deterministic function of the log, so replaying the
log after a crash re-derives the same pairs: a pair already stored is ignored, and ``apply`` returns
only the transitions that are new *and* move their alert forward. Those are what the sinks deliver
(see :class:`sensorium.rules.sinks.Dispatcher`).

Lifecycle rules (one ``alerts`` row per ``alert_id``):

* the row only moves forward: a transition with ``seq <= last_seq`` does not change it. One older
  than the row but never seen before (a gap filled late) is kept in the history but not returned,
  so a sink never receives "firing" after the "resolved" that followed it;
* an acknowledgement survives severity changes and the resolution; a *reopen* (firing after
  resolved, same id) clears it;
* a resolved alert keeps the severity it last fired with (a resolving transition carries ``""``).

``list(state="acknowledged")`` and ``"unacknowledged"`` are about firing alerts (what needs
attention); a resolved alert is ``"resolved"`` whether acknowledged or not.

Live feed: :meth:`AlertStore.subscribe` returns a :class:`Subscription` that receives every new
transition (kind ``"alert"``) and every acknowledgement (``"ack"``) as an :class:`AlertEvent`, after its transaction commits. It
is fed from whatever thread calls ``apply``/``ack`` and read with :meth:`Subscription.get` (threads)
or ``await`` :meth:`Subscription.next` (asyncio, without holding an executor thread).

Journal mode is WAL; one connection guarded by a lock serves all threads.
"""

from __future__ import annotations

import asyncio
import builtins
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from sensorium.errors import NotFound
from sensorium.rules.types import Transition

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    series TEXT NOT NULL,
    bucket TEXT NOT NULL,
    measurement TEXT NOT NULL,
    field TEXT,
    tags TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    value REAL,
    message TEXT NOT NULL,
    fired_at_ns INTEGER NOT NULL,
    resolved_at_ns INTEGER,
    updated_event_ns INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    changes INTEGER NOT NULL,
    flapping INTEGER NOT NULL,
    acknowledged INTEGER NOT NULL DEFAULT 0,
    acked_by TEXT,
    acked_at_ns INTEGER,
    ack_note TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_event_ns);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts (state, acknowledged);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (rule);
CREATE TABLE IF NOT EXISTS alert_events (
    alert_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    transition TEXT NOT NULL,
    PRIMARY KEY (alert_id, seq)
) WITHOUT ROWID;
"""

_COLUMNS = (
    "alert_id, rule, series, bucket, measurement, field, tags, state, severity, value, message, "
    "fired_at_ns, resolved_at_ns, updated_event_ns, last_seq, changes, flapping, acknowledged, "
    "acked_by, acked_at_ns, ack_note"
)

ListState = Literal["firing", "resolved", "acknowledged", "unacknowledged"]
#: Events a subscription holds before it drops the oldest (see :attr:`Subscription.dropped`).
DEFAULT_SUBSCRIPTION_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One item of the live feed: ``kind`` is ``"alert"`` (``data`` is ``Transition.to_dict()``)
    or ``"ack"`` (``data`` is the acknowledged alert, as :meth:`AlertStore.get` without events)."""

    kind: Literal["alert", "ack"]
    data: dict[str, Any]

    @property
    def id(self) -> str:
        """An id for the event: the transition's idempotency key, or ``<alert_id>:ack``."""
        return str(self.data.get("key") or f"{self.data.get('alert_id', '')}:ack")

    def to_dict(self) -> dict[str, Any]:
        """``data`` with ``event`` (the kind) added."""
        return {"event": self.kind, **self.data}

    def sse(self) -> str:
        """The event in server-sent-events framing (``id:``, ``event:`` the kind, ``data:`` JSON)."""
        return f"id: {self.id}\nevent: {self.kind}\ndata: {_dumps(self.data)}\n\n"


class Subscription:
    """A thread-safe queue of :class:`AlertEvent`\\ s from one :class:`AlertStore`.

    Holds at most ``maxsize`` events; past that the oldest is dropped and :attr:`dropped` counts it
    (a consumer that sees it grow should re-read the alert list). Close it when done.
    """

    def __init__(self, store: AlertStore | None, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> None:
        self._store = store
        self._items: deque[AlertEvent] = deque()
        self._maxsize = max(1, int(maxsize))
        self._cond = threading.Condition()
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.dropped = 0
        self.closed = False

    def put(self, event: AlertEvent) -> None:
        """Queue ``event`` (any thread). Ignored once closed."""
        with self._cond:
            if self.closed:
                return
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(event)
            self._cond.notify_all()
            waiters = list(self._waiters)
        _wake(waiters)

    def get(self, timeout: float | None = None) -> AlertEvent | None:
        """The next event, waiting up to ``timeout`` seconds (None: until one comes or it is
        closed). None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._items or self.closed, timeout)
            if self.closed or not self._items:
                return None
            return self._items.popleft()

    def get_nowait(self) -> AlertEvent | None:
        with self._cond:
            if self.closed or not self._items:
                return None
            return self._items.popleft()

    async def next(self, timeout: float | None = None) -> AlertEvent | None:
        """Like :meth:`get`, for asyncio: waits on the running loop (no executor thread)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            event = asyncio.Event()
            with self._cond:
                if self.closed:
                    return None
                if self._items:
                    return self._items.popleft()
                waiter = (loop, event)
                self._waiters.add(waiter)
            try:
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(event.wait(), remaining)
                except TimeoutError:
                    return self.get_nowait()
            finally:
                with self._cond:
                    self._waiters.discard(waiter)

    def close(self) -> None:
        """Stop receiving; wakes every waiter (they get None)."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            self._items.clear()
            self._cond.notify_all()
            waiters = list(self._waiters)
        _wake(waiters)
        if self._store is not None:
            self._store._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _wake(waiters: Sequence[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
    for loop, event in waiters:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # that loop is closed; its waiter is gone with it
            pass


class AlertStore:
    """Durable alerts and their history (SQLite, WAL journal). See the module docstring."""

    def __init__(
        self,
        path: Path | str,
        *,
        clock: Callable[[], int],
        synchronous: Literal["FULL", "NORMAL", "OFF"] = "FULL",
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._lock = threading.RLock()
        self._subs: set[Subscription] = set()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"PRAGMA synchronous={synchronous}")
        c.executescript(_SCHEMA)

    # -- writing -------------------------------------------------------------------------------------

    def apply(self, transitions: Sequence[Transition]) -> builtins.list[Transition]:
        """Store ``transitions`` in one transaction; return those that are new and move their alert
        forward, in input order (what the sinks should deliver). Transitions of one alert are
        applied in ``seq`` order whatever their order in ``transitions``."""
        if not transitions:
            return []
        new: builtins.list[Transition] = []
        with self._lock:
            c = self._db()
            c.execute("BEGIN IMMEDIATE")
            try:
                for t in _seq_ordered(transitions):
                    if self._apply_one(c, t):
                        new.append(t)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            self._publish([AlertEvent("alert", t.to_dict()) for t in new])
        return new

    def _apply_one(self, c: sqlite3.Connection, t: Transition) -> bool:
        cur = c.execute(
            "INSERT OR IGNORE INTO alert_events (alert_id, seq, transition) VALUES (?, ?, ?)",
            (t.alert_id, int(t.seq), _dumps(t.to_dict())),
        )
        if cur.rowcount == 0:
            return False  # seen before (replay)
        row = c.execute(
            "SELECT state, last_seq, severity FROM alerts WHERE alert_id = ?", (t.alert_id,)
        ).fetchone()
        resolved_at = t.event_time_ns if t.state == "resolved" else None
        if row is None:
            c.execute(
                f"INSERT INTO alerts ({_COLUMNS}) VALUES ({','.join('?' * 21)})",
                (
                    t.alert_id, t.rule, t.series, t.bucket, t.measurement, t.field,
                    _dumps(t.tags), t.state, t.severity, t.value, t.message, t.fired_at_ns,
                    resolved_at, t.event_time_ns, t.seq, 1, int(t.flapping), 0, None, None, None,
                ),
            )  # fmt: skip
            return True
        state, last_seq, severity = row
        if t.seq <= last_seq:
            return False  # stale: kept in the history only
        reopen = state == "resolved" and t.state == "firing"
        ack_sql = (
            ", acknowledged = 0, acked_by = NULL, acked_at_ns = NULL, ack_note = NULL"
            if reopen
            else ""
        )
        c.execute(
            "UPDATE alerts SET state = ?, severity = ?, value = ?, message = ?, tags = ?, "
            "resolved_at_ns = ?, updated_event_ns = ?, last_seq = ?, changes = changes + 1, "
            f"flapping = ?{ack_sql} WHERE alert_id = ?",
            (
                t.state, t.severity or severity, t.value, t.message, _dumps(t.tags), resolved_at,
                t.event_time_ns, t.seq, int(t.flapping), t.alert_id,
            ),
        )  # fmt: skip
        return True

    def ack(self, alert_id: str, by: str, note: str | None = None) -> dict[str, Any]:
        """Acknowledge ``alert_id`` (again: the newest acknowledgement wins); returns the alert.
        Raises :class:`~sensorium.errors.NotFound` for an unknown id."""
        with self._lock:
            c = self._db()
            cur = c.execute(
                "UPDATE alerts SET acknowledged = 1, acked_by = ?, acked_at_ns = ?, ack_note = ? "
                "WHERE alert_id = ?",
                (by, int(self._clock()), note, alert_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no alert {alert_id!r}", alert_id=alert_id)
            alert = self._row(c, alert_id)
            assert alert is not None
            self._publish([AlertEvent("ack", alert)])
        return alert

    # -- reading -------------------------------------------------------------------------------------

    def list(
        self,
        *,
        state: ListState | None = None,
        rule: str | None = None,
        severity: str | None = None,
        series_contains: str | None = None,
        since_ns: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[dict[str, Any]]:
        """Alerts matching the filters, most recently changed first. ``since_ns`` compares with the
        event time of an alert's latest change; ``series_contains`` is case-insensitive."""
        conds: builtins.list[str] = []
        args: builtins.list[Any] = []
        if state == "firing" or state == "resolved":
            conds.append("state = ?")
            args.append(state)
        elif state == "acknowledged" or state == "unacknowledged":
            conds.append("state = 'firing' AND acknowledged = ?")
            args.append(int(state == "acknowledged"))
        elif state is not None:
            raise ValueError(f"unknown alert state filter: {state!r}")
        if rule is not None:
            conds.append("rule = ?")
            args.append(rule)
        if severity is not None:
            conds.append("severity = ?")
            args.append(severity)
        if series_contains:
            conds.append("instr(lower(series), lower(?)) > 0")
            args.append(series_contains)
        if since_ns is not None:
            conds.append("updated_event_ns >= ?")
            args.append(int(since_ns))
        where = (" WHERE " + " AND ".join(conds)) if conds else ""
        sql = (
            f"SELECT {_COLUMNS} FROM alerts{where} "
            "ORDER BY updated_event_ns DESC, alert_id LIMIT ? OFFSET ?"
        )
        with self._lock:
            cur = self._db().execute(sql, [*args, max(0, int(limit)), max(0, int(offset))])
            return [_alert_dict(cur.description, r) for r in cur.fetchall()]

    def get(self, alert_id: str) -> dict[str, Any] | None:
        """The alert with ``events`` (its transitions, ``Transition.to_dict()`` form, by seq)."""
        with self._lock:
            c = self._db()
            alert = self._row(c, alert_id)
            if alert is None:
                return None
            alert["events"] = [
                orjson.loads(t)
                for (t,) in c.execute(
                    "SELECT transition FROM alert_events WHERE alert_id = ? ORDER BY seq",
                    (alert_id,),
                )
            ]
        return alert

    def counts(self) -> dict[str, Any]:
        """``total``, ``firing``, ``resolved``, ``acknowledged`` / ``unacknowledged`` (firing ones),
        ``flapping`` (firing ones), and ``by_severity`` (severity → firing alerts)."""
        with self._lock:
            c = self._db()
            total, firing, acked, flapping = c.execute(
                "SELECT COUNT(*), COALESCE(SUM(state = 'firing'), 0), "
                "COALESCE(SUM(state = 'firing' AND acknowledged), 0), "
                "COALESCE(SUM(state = 'firing' AND flapping), 0) FROM alerts"
            ).fetchone()
            by_sev = {
                str(s): int(n)
                for s, n in c.execute(
                    "SELECT severity, COUNT(*) FROM alerts WHERE state = 'firing' "
                    "GROUP BY severity ORDER BY severity"
                )
            }
        return {
            "total": int(total),
            "firing": int(firing),
            "resolved": int(total) - int(firing),
            "acknowledged": int(acked),
            "unacknowledged": int(firing) - int(acked),
            "flapping": int(flapping),
            "by_severity": by_sev,
        }

    # -- live feed -----------------------------------------------------------------------------------

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> Subscription:
        """A new :class:`Subscription` to transitions and acknowledgements from now on."""
        sub = Subscription(self, maxsize)
        with self._lock:
            self._subs.add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    def _publish(self, events: builtins.list[AlertEvent]) -> None:
        if not events:
            return
        for sub in list(self._subs):
            for e in events:
                sub.put(e)

    # -- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database and every subscription."""
        with self._lock:
            subs = list(self._subs)
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        for sub in subs:
            sub.close()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("alert store is closed")
        return self._conn

    def _row(self, c: sqlite3.Connection, alert_id: str) -> dict[str, Any] | None:
        cur = c.execute(f"SELECT {_COLUMNS} FROM alerts WHERE alert_id = ?", (alert_id,))
        row = cur.fetchone()
        return None if row is None else _alert_dict(cur.description, row)


def _seq_ordered(transitions: Sequence[Transition]) -> builtins.list[Transition]:
    """``transitions`` with each alert's transitions sorted by seq, in the slots they held."""
    slots: dict[str, builtins.list[int]] = {}
    for i, t in enumerate(transitions):
        slots.setdefault(t.alert_id, []).append(i)
    out = builtins.list(transitions)
    for idx in slots.values():
        if len(idx) > 1:
            for i, t in zip(
                idx, sorted((transitions[i] for i in idx), key=lambda t: t.seq), strict=True
            ):
                out[i] = t
    return out


def _alert_dict(description: Any, row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip([x[0] for x in description], row, strict=True))
    d["tags"] = orjson.loads(d["tags"])
    d["flapping"] = bool(d["flapping"])
    d["acknowledged"] = bool(d["acknowledged"])
    return d


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS, default=str).decode()
