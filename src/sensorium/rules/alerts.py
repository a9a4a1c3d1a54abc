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

Journal mode is WAL; one connection guarded by a lock serves all threads. ``apply`` handles a
batch set-based (one read of the alerts concerned, ``executemany`` writes, one commit), and a
daemon thread checkpoints the WAL after commits (:class:`WalCheckpointer`) so that a burst does not
wait for SQLite's automatic checkpoint.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import operator
import os
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from sensorium.errors import NotFound
from sensorium.rules.types import Transition

_log = logging.getLogger("sensorium.rules.alerts")

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
    UNIQUE (alert_id, seq)
);
"""
# ``alert_events`` is a rowid table with a unique index, not ``WITHOUT ROWID``: its rows (a
# transition's JSON, ~500 bytes) are past the ~200 bytes up to which SQLite recommends a table
# clustered on its key, and history rows come in by random alert id, so a clustered table split
# and rewrote pages all over the file; appended by rowid, only the small index is touched at
# random (``apply`` of 35.8 k transitions 0.62 -> 0.55 s, docs/benchmarks.md session 22). A store
# made before keeps its clustered table: the same statements work on both.

_COLUMNS = (
    "alert_id, rule, series, bucket, measurement, field, tags, state, severity, value, message, "
    "fired_at_ns, resolved_at_ns, updated_event_ns, last_seq, changes, flapping, acknowledged, "
    "acked_by, acked_at_ns, ack_note"
)

ListState = Literal["firing", "resolved", "acknowledged", "unacknowledged"]
#: Events a subscription holds before it drops the oldest (see :attr:`Subscription.dropped`).
DEFAULT_SUBSCRIPTION_SIZE = 10_000
#: Alert ids per ``IN (...)`` read in :meth:`AlertStore.apply` (under SQLite's oldest variable cap).
_IN_CHUNK = 500
#: Seconds from a commit to the background WAL checkpoint that follows it (see :class:`WalCheckpointer`).
CHECKPOINT_DELAY_S = 1.0
#: WAL pages past which a commit checkpoints by itself, in case the background checkpoint falls
#: behind (SQLite's default, 1000 pages, would put that work back into the commits of a burst).
BACKSTOP_CHECKPOINT_PAGES = 10_000
#: Page cache of a store's writing connection, KiB: SQLite's default, 2 MiB. 16 MiB filled up as
#: the store grew (~1 MB a minute of the stream process's resident memory at 100 k series, per
#: connection, until full) and made no difference to a burst of 10 k transitions applied to an
#: 809 MB store: median 1.10-1.17 s with 16 MiB, 1.17 s with 2 MiB (docs/benchmarks.md, session 13).
CACHE_KIB = 2_048


class AlertEvent:
    """One item of the live feed: ``kind`` is ``"alert"`` (``data`` is ``Transition.to_dict()``)
    or ``"ack"`` (``data`` is the acknowledged alert, as :meth:`AlertStore.get` without events).

    An event made with :meth:`of` builds ``data`` from its transition when first read, so a burst
    applied by the stream thread does not pay for dicts its subscribers read later (or drop)."""

    __slots__ = ("kind", "_data", "_transition")

    def __init__(self, kind: Literal["alert", "ack"], data: dict[str, Any]) -> None:
        self.kind = kind
        self._data: dict[str, Any] | None = data
        self._transition: Transition | None = None

    @classmethod
    def of(cls, t: Transition) -> AlertEvent:
        """The ``"alert"`` event of ``t``."""
        e = cls.__new__(cls)
        e.kind, e._data, e._transition = "alert", None, t
        return e

    @property
    def data(self) -> dict[str, Any]:
        d = self._data
        if d is None:
            assert self._transition is not None
            d = self._data = self._transition.to_dict()
        return d

    @property
    def id(self) -> str:
        """An id for the event: the transition's idempotency key, or ``<alert_id>:ack``."""
        if self._transition is not None:
            return self._transition.key
        return str(self.data.get("key") or f"{self.data.get('alert_id', '')}:ack")

    def to_dict(self) -> dict[str, Any]:
        """``data`` with ``event`` (the kind) added."""
        return {"event": self.kind, **self.data}

    def sse(self) -> str:
        """The event in server-sent-events framing (``id:``, ``event:`` the kind, ``data:`` JSON)."""
        body = self._transition.to_json() if self._transition is not None else _dumps(self.data)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {body}\n\n"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AlertEvent):
            return NotImplemented
        return self.kind == other.kind and self.data == other.data

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AlertEvent(kind={self.kind!r}, data={self.data!r})"


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
        self.put_many((event,))

    def put_many(self, events: Sequence[AlertEvent]) -> None:
        """Queue ``events`` in order (any thread), waking the readers once. Ignored once closed."""
        if not events:
            return
        with self._cond:
            if self.closed:
                return
            self._items.extend(events)
            over = len(self._items) - self._maxsize
            if over > 0:
                for _ in range(over):
                    self._items.popleft()
                self.dropped += over
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


class WalCheckpointer:
    """Checkpoints one SQLite database's WAL from a daemon thread on its own connection.

    SQLite's automatic checkpoint runs inside the commit that crosses its threshold: that commit
    copies the WAL into the database file and syncs it, and a burst of alerts (the stream's thread)
    waits for it. Instead, each commit calls :meth:`kick` and this thread checkpoints
    (``PASSIVE``: it never waits for, nor blocks, the writer) :data:`CHECKPOINT_DELAY_S` later,
    once for all the commits made meanwhile. Durability is unchanged: a commit is durable once its
    WAL frames are written with the writer's ``synchronous`` setting, and the checkpoint syncs with
    the same setting. The writer keeps an automatic checkpoint at
    :data:`BACKSTOP_CHECKPOINT_PAGES`. The thread starts at the first :meth:`kick`.
    """

    def __init__(
        self, path: Path, synchronous: str, *, name: str, delay_s: float | None = None
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._name = name
        self._delay = CHECKPOINT_DELAY_S if delay_s is None else delay_s
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.checkpoints = 0  # checkpoints run (for tests and curiosity)

    def kick(self) -> None:
        """Note a commit: a checkpoint follows within the delay."""
        if self._thread is None:
            with self._start_lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
        self._dirty.set()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None)
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.Error as exc:  # the writer's backstop checkpoint takes over
            _log.warning("cannot checkpoint %s in the background: %s", self.path, exc)
            return
        try:
            while True:
                self._dirty.wait()
                if self._stop.wait(self._delay):
                    return  # closing: the writer's close checkpoints what is left
                self._dirty.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the writer's backstop checkpoint still runs
                    _log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread (waiting for a checkpoint in progress)."""
        self._stop.set()
        self._dirty.set()
        with self._start_lock:
            thread = self._thread
        if thread is not None:
            thread.join()


def sync_wal(path: Path) -> None:
    """Make every commit so far to the database at ``path`` durable: fsync its ``-wal`` file.

    For a writer with ``synchronous=NORMAL`` (commits are not synced one by one; they survive a
    crash of the process, not of the machine): the owner calls this at the points where durability
    matters (the stream before its checkpoint, an acknowledgement before it returns). Without a
    ``-wal`` file every commit is in the database file, which its last checkpoint synced."""
    try:
        fd = os.open(f"{path}-wal", os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def configure_writer(conn: sqlite3.Connection, synchronous: str) -> None:
    """Pragmas of a store's writing connection: WAL journal, ``synchronous`` as given, a larger
    page cache, and SQLite's automatic checkpoint only as a backstop (see
    :class:`WalCheckpointer`)."""
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")


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
        self._followers: builtins.list[threading.Event] = []
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        c = self._conn
        configure_writer(c, synchronous)
        c.executescript(_SCHEMA)
        self._checkpointer = WalCheckpointer(
            self.path, synchronous, name="sensorium-alerts-checkpoint"
        )

    def sync(self) -> None:
        """Make every stored transition and acknowledgement durable (see :func:`sync_wal`; a
        no-op cost with ``synchronous=FULL``, whose commits are already synced)."""
        if self.synchronous != "FULL":  # no lock: the file's committed frames are what is synced
            sync_wal(self.path)

    # -- writing -------------------------------------------------------------------------------------

    def apply(self, transitions: Sequence[Transition]) -> builtins.list[Transition]:
        """Store ``transitions`` in one transaction; return those that are new and move their alert
        forward, in input order (what the sinks should deliver). Transitions of one alert are
        applied in ``seq`` order whatever their order in ``transitions``."""
        if not transitions:
            return []
        ordered = _seq_ordered(transitions)
        with self._lock:
            c = self._db()
            c.execute("BEGIN IMMEDIATE")
            try:
                new = self._apply_all(c, ordered)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            self._checkpointer.kick()
            if new and self._subs:
                self._publish([AlertEvent.of(t) for t in new])
        return new

    def _apply_all(
        self, c: sqlite3.Connection, ordered: builtins.list[Transition]
    ) -> builtins.list[Transition]:
        """The batch in a few set-based statements: one read of the current rows of the alerts
        concerned, the lifecycle worked out in memory, then ``executemany`` writes.

        Relies on an invariant every write keeps: an alert's history only holds seqs up to its
        row's ``last_seq`` (the first transition stored for an alert creates its row; a later one
        either moves ``last_seq`` up to its seq or is older than it). So a transition past
        ``last_seq`` (or of an alert without a row) is new and moves the alert forward, and one at
        or below it is a replay or a late gap: history only, ``INSERT OR IGNORE``.
        """
        ids = builtins.list(dict.fromkeys(t.alert_id for t in ordered))
        rows: dict[str, _Row] = {}
        for i in range(0, len(ids), _IN_CHUNK):
            chunk = ids[i : i + _IN_CHUNK]
            for aid, state, last_seq, severity in c.execute(
                "SELECT alert_id, state, last_seq, severity FROM alerts "
                f"WHERE alert_id IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                rows[aid] = _Row(None, state, int(last_seq), severity)
        new: builtins.list[Transition] = []
        for t in ordered:
            r = rows.get(t.alert_id)
            if r is None:
                rows[t.alert_id] = _Row(t, t.state, t.seq, t.severity, changes=1, last=t)
            elif t.seq > r.last_seq:
                if r.state == "resolved" and t.state == "firing":
                    r.reopen = True  # clears the acknowledgement
                r.state, r.last_seq, r.last = t.state, t.seq, t
                r.severity = t.severity or r.severity
                r.changes += 1
            else:
                continue  # a replay, or older than the alert: kept in the history only
            new.append(t)
        # Rows are generated as executemany consumes them (no burst-sized lists of tuples to
        # allocate, and to trigger garbage collections), in key order so that each B-tree page is
        # touched once. ``ordered`` has each alert's transitions in seq order, so a stable sort
        # by alert id gives (alert_id, seq) order, and of two same-key transitions the first is
        # the one kept, as in input order.
        c.executemany(
            "INSERT OR IGNORE INTO alert_events (alert_id, seq, transition) VALUES (?, ?, ?)",
            ((t.alert_id, int(t.seq), t.to_json()) for t in sorted(ordered, key=_alert_id)),
        )
        moved = [r for _, r in sorted(rows.items()) if r.last is not None]
        c.executemany(
            f"INSERT INTO alerts ({_COLUMNS}) VALUES ({','.join('?' * 21)})",
            (r.insert_args() for r in moved if r.first is not None),
        )
        c.executemany(
            "UPDATE alerts SET state = ?1, severity = ?2, value = ?3, message = ?4, tags = ?5, "
            "resolved_at_ns = ?6, updated_event_ns = ?7, last_seq = ?8, "
            "changes = changes + ?9, flapping = ?10, "
            "acknowledged = CASE WHEN ?11 THEN 0 ELSE acknowledged END, "
            "acked_by = CASE WHEN ?11 THEN NULL ELSE acked_by END, "
            "acked_at_ns = CASE WHEN ?11 THEN NULL ELSE acked_at_ns END, "
            "ack_note = CASE WHEN ?11 THEN NULL ELSE ack_note END WHERE alert_id = ?12",
            (r.update_args() for r in moved if r.first is None),
        )
        return new

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
            self.sync()  # an acknowledgement is durable once it returns
            self._checkpointer.kick()
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
            sub.put_many(events)

    def follow(self, interval_s: float = 1.0) -> threading.Event:
        """Publish to subscribers the transitions that *other processes* store (an api node beside
        scale-out workers): every ``interval_s`` compare each alert's ``last_seq`` with what was
        seen and read the new history entries. Returns the event that stops it (set on close)."""
        stop = threading.Event()
        with self._lock:
            seen = dict(self._db().execute("SELECT alert_id, last_seq FROM alerts").fetchall())

        def loop() -> None:
            while not stop.wait(interval_s):
                try:
                    with self._lock:
                        if self._conn is None:
                            return
                        c = self._conn
                        now = dict(c.execute("SELECT alert_id, last_seq FROM alerts").fetchall())
                        changed = [(a, seen.get(a, 0)) for a, q in now.items() if q > seen.get(a, 0)]
                        events = []
                        for aid, after in changed:
                            for (body,) in c.execute(
                                "SELECT transition FROM alert_events WHERE alert_id = ? AND seq > ? "
                                "ORDER BY seq", (aid, after),
                            ):
                                events.append(AlertEvent("alert", orjson.loads(body)))
                    seen.update(now)
                    if events and self._subs:
                        self._publish(events)
                except sqlite3.Error:  # closed or busy: try again next time
                    continue

        threading.Thread(target=loop, name="sensorium-alerts-follow", daemon=True).start()
        self._followers.append(stop)
        return stop

    # -- lifecycle -----------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database and every subscription."""
        for f in self._followers:
            f.set()
        self._checkpointer.close()
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


class _Row:
    """An alert's row while :meth:`AlertStore.apply` works out a batch: ``first`` is set for an
    alert the batch creates, ``last`` is the last transition that moved it forward (None: none)."""

    __slots__ = ("first", "state", "last_seq", "severity", "changes", "reopen", "last")

    def __init__(
        self,
        first: Transition | None,
        state: str,
        last_seq: int,
        severity: str,
        *,
        changes: int = 0,
        last: Transition | None = None,
    ) -> None:
        self.first = first
        self.state = state
        self.last_seq = last_seq
        self.severity = severity
        self.changes = changes  # changes made by the batch
        self.reopen = False  # the batch reopened it (resolved -> firing): acknowledgement cleared
        self.last = last

    def insert_args(self) -> tuple[Any, ...]:
        """The row of an alert the batch created (``_COLUMNS`` order)."""
        f, t = self.first, self.last
        assert f is not None and t is not None
        resolved_at = t.event_time_ns if t.state == "resolved" else None
        return (
            f.alert_id, f.rule, f.series, f.bucket, f.measurement, f.field, _dumps(t.tags),
            t.state, self.severity, t.value, t.message, f.fired_at_ns, resolved_at,
            t.event_time_ns, t.seq, self.changes, int(t.flapping), 0, None, None, None,
        )  # fmt: skip

    def update_args(self) -> tuple[Any, ...]:
        """The parameters of the UPDATE of an alert the batch moved forward."""
        t = self.last
        assert t is not None
        resolved_at = t.event_time_ns if t.state == "resolved" else None
        return (
            t.state, self.severity, t.value, t.message, _dumps(t.tags), resolved_at,
            t.event_time_ns, t.seq, self.changes, int(t.flapping), int(self.reopen), t.alert_id,
        )  # fmt: skip


_alert_id = operator.attrgetter("alert_id")


def _seq_ordered(transitions: Sequence[Transition]) -> builtins.list[Transition]:
    """``transitions`` with each alert's transitions sorted by seq, in the slots they held."""
    last: dict[str, int] = {}
    for t in transitions:  # the usual case: already in order (one pass, nothing to move)
        if last.get(t.alert_id, -1) > t.seq:
            break
        last[t.alert_id] = t.seq
    else:
        return builtins.list(transitions)
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
