"""Alert notifications: sinks (webhook, MQTT, log) and a durable outbox that delivers to them.

:class:`Dispatcher` keeps an outbox in SQLite: one ``deliveries`` row per (transition key, sink),
``PRIMARY KEY (key, sink)``, so a transition re-derived after a crash is never queued twice and a
receiver sees each key once (at-least-once: a crash between a receiver's success and the row's
update repeats that one delivery, with the same ``Idempotency-Key``). Rows move
``pending`` → ``delivered`` or ``dead``; pending rows survive a restart and the next dispatcher on
the same file delivers them.

The connection is set up like the alert store's (see
:func:`sensorium.rules.alerts.configure_writer`): WAL checkpoints happen in a background thread,
not in the commits of ``enqueue``.

Feed it ``dispatcher.enqueue(alert_store.apply(transitions))``. Because ``enqueue`` is idempotent,
a caller replaying after a crash may also enqueue every re-derived transition (not only the new
ones) to cover a crash between ``apply`` and ``enqueue``; delivered rows are kept for that.

Transitions with ``flapping=True`` are stored by the alert store but NOT notified: ``enqueue``
skips them (the alert stays visible in the store, the API and the live feed).

Retries: a failed attempt is retried after ``backoff_initial_s`` doubling per attempt, capped at
``backoff_max_s`` (minus a reproducible jitter, see :func:`~sensorium.rules._sink.backoff_s`), and
the delivery becomes ``dead`` after ``max_attempts`` with its last error. A permanent failure
(webhook 4xx other than 408/429) is dead at once. A sink whose attempt failed transiently is held
until that delivery's next attempt, so one dead endpoint costs one attempt per backoff step, not
one per queued delivery; each (sink, alert) is delivered in ``seq`` order.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import orjson

from sensorium.config import AlertSettings, CommandSettings
from sensorium.rules._mqtt import MqttSink, format_topic
from sensorium.rules._sink import DeliveryError, LogSink, Sink, backoff_s
from sensorium.rules._webhook import WebhookSink
from sensorium.rules.alerts import WalCheckpointer, configure_writer, sync_wal
from sensorium.rules.types import Transition

__all__ = [
    "DeliveryError",
    "Dispatcher",
    "LogSink",
    "MqttSink",
    "Sink",
    "WebhookSink",
    "build_sinks",
    "format_topic",
]

_dlog = logging.getLogger("sensorium.rules.sinks")

#: Longest wait of the delivery thread between passes (it is also woken by ``enqueue``).
MAX_IDLE_S = 1.0
#: Deliveries read per pass.
PASS_ROWS = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT NOT NULL,
    sink TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_ns INTEGER NOT NULL,
    last_error TEXT,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (key, sink)
);
CREATE INDEX IF NOT EXISTS deliveries_state ON deliveries (state, sink, alert_id, seq);
"""
# A rowid table on purpose: rowid is the enqueue order (nothing is deleted, so it only grows).
_COLUMNS = (
    "key, sink, alert_id, seq, state, attempts, next_attempt_ns, last_error, created_ns, "
    "updated_ns, payload"
)


def build_sinks(
    settings: AlertSettings,
    *,
    commands: CommandSettings | None = None,
    data_dir: Path | None = None,
    clock: Callable[[], int] | None = None,
) -> builtins.list[Sink]:
    """The sinks ``settings`` configures: log (if ``log``), each webhook, MQTT (if ``mqtt``), and
    each device command (``commands``; needs the ``[commands]`` broker settings and the data dir,
    where the commands are recorded)."""
    sinks: builtins.list[Sink] = []
    if settings.log:
        sinks.append(LogSink())
    sinks.extend(WebhookSink(w) for w in settings.webhooks)
    if settings.mqtt is not None:
        sinks.append(MqttSink(settings.mqtt))
    if settings.commands:
        if commands is None or data_dir is None or clock is None:
            raise ValueError("command sinks need the [commands] settings, the data dir and a clock")
        from sensorium.rules._command import CommandSink

        sinks.extend(CommandSink(c, commands, Path(data_dir), clock) for c in settings.commands)
    return sinks


# -- the outbox --------------------------------------------------------------------------------------


class Dispatcher:
    """The durable outbox and its delivery thread. See the module docstring.

    ``sinks`` replaces the ones built from ``settings`` (tests, custom sinks). ``sleep``, if given,
    is how the delivery thread waits between passes (tests with a fake clock); by default it waits
    on an event that :meth:`enqueue` and :meth:`close` set.
    """

    def __init__(
        self,
        store_path: Path | str,
        settings: AlertSettings,
        *,
        clock: Callable[[], int],
        sleep: Callable[[float], None] | None = None,
        sinks: Sequence[Sink] | None = None,
        jitter: float = 0.2,  # fraction of each backoff taken off, at most 0.5 (0: exact)
        synchronous: Literal["FULL", "NORMAL", "OFF"] = "FULL",
    ) -> None:
        self.path = Path(store_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.settings = settings
        self._clock = clock
        self._sleep = sleep
        self._jitter = min(max(0.0, jitter), 0.5)
        built = builtins.list(sinks) if sinks is not None else build_sinks(settings)
        self.sinks: dict[str, Sink] = {s.name: s for s in built}
        if len(self.sinks) != len(built):
            raise ValueError("alert sinks need distinct names")
        self._lock = threading.RLock()  # the connection
        self._pass_lock = threading.Lock()  # one delivery pass at a time
        self._held_until: dict[str, int] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None  # what stopped the delivery thread, if anything
        self.synchronous = synchronous
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        c = self._conn
        configure_writer(c, synchronous)
        c.executescript(_SCHEMA)
        self._checkpointer = WalCheckpointer(
            self.path, synchronous, name="sensorium-alert-outbox-checkpoint"
        )

    def sync(self) -> None:
        """Make every queued delivery durable (with ``synchronous=NORMAL``; see
        :func:`~sensorium.rules.alerts.sync_wal`)."""
        if self.synchronous != "FULL":  # no lock: the file's committed frames are what is synced
            sync_wal(self.path)

    # -- queueing ------------------------------------------------------------------------------------

    def enqueue(self, transitions: Sequence[Transition]) -> int:
        """Queue a delivery of each non-flapping transition to every sink, in one transaction;
        returns how many deliveries were new (a (key, sink) queued before is ignored)."""
        names = builtins.list(self.sinks)
        if not names:
            return 0
        if all(t.flapping for t in transitions):
            return 0
        now = int(self._clock())
        # One execution per transition inserts its row for every sink, in sink order (rowids keep
        # the enqueue order). The payload is the transition's JSON, serialised once and shared
        # with the alert store; rows are generated as executemany consumes them.
        rows = (
            (t.key, t.alert_id, int(t.seq), t.to_json(), now, *names)
            for t in transitions
            if not t.flapping
        )
        values = ",".join(
            f"(?1, ?{6 + i}, ?2, ?3, ?4, 'pending', 0, ?5, ?5, ?5)" for i in range(len(names))
        )
        with self._lock:
            c = self._db()
            c.execute("BEGIN IMMEDIATE")
            try:
                before = c.total_changes
                c.executemany(
                    "INSERT OR IGNORE INTO deliveries (key, sink, alert_id, seq, payload, state, "
                    f"attempts, next_attempt_ns, created_ns, updated_ns) VALUES {values}",
                    rows,
                )
                added = c.total_changes - before
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            self._checkpointer.kick()
        if added:
            self._wake.set()
        return added

    def retry_dead(self, *, sink: str | None = None) -> int:
        """Put dead deliveries (of ``sink``, or all) back in the queue with fresh attempts."""
        now = int(self._clock())
        sql = (
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ns = ?, "
            "updated_ns = ? WHERE state = 'dead'"
        )
        args: builtins.list[Any] = [now, now]
        if sink is not None:
            sql += " AND sink = ?"
            args.append(sink)
        with self._lock:
            n = self._db().execute(sql, args).rowcount
            self._checkpointer.kick()
        if n:
            self._wake.set()
        return int(n)

    # -- delivering ----------------------------------------------------------------------------------

    def deliver_due(self) -> int:
        """Deliver what is due, in the calling thread: every due delivery of a configured sink that
        is not held, oldest first, each (sink, alert) in seq order, each attempted at most once per
        call. Returns the attempts made."""
        attempted: set[tuple[str, str]] = set()
        with self._pass_lock:
            while not self._stop.is_set():
                now = int(self._clock())
                with self._lock:
                    rows = [r for r in self._due(now) if (r["key"], r["sink"]) not in attempted]
                if not rows:
                    break
                for row in rows:
                    name = row["sink"]
                    if self._stop.is_set():
                        break
                    if self._held_until.get(name, 0) > now:
                        continue
                    attempted.add((row["key"], name))
                    self._attempt(self.sinks[name], row)
        return len(attempted)

    def _due(self, now: int) -> builtins.list[dict[str, Any]]:
        names = [n for n in self.sinks if self._held_until.get(n, 0) <= now]
        if not names:
            return []
        marks = ",".join("?" * len(names))
        cur = self._db().execute(
            f"SELECT {_COLUMNS} FROM deliveries AS d WHERE state = 'pending' "
            f"AND next_attempt_ns <= ? AND sink IN ({marks}) AND NOT EXISTS ("
            "SELECT 1 FROM deliveries AS p WHERE p.state = 'pending' AND p.sink = d.sink "
            "AND p.alert_id = d.alert_id AND p.seq < d.seq) ORDER BY rowid LIMIT ?",
            [now, *names, PASS_ROWS],
        )
        cols = [x[0] for x in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def _attempt(self, sink: Sink, row: dict[str, Any]) -> None:
        body = row["payload"].encode()
        error: str | None = None
        permanent = False
        retry_after: float | None = None
        try:
            sink.send(orjson.loads(body), body)
        except DeliveryError as exc:
            error, permanent, retry_after = exc.message, exc.permanent, exc.retry_after_s
        except Exception as exc:  # a failed attempt like any other: retried, then a dead letter
            error = f"{type(exc).__name__}: {exc}"
        now = int(self._clock())
        attempts = int(row["attempts"]) + 1
        if error is None:
            state, next_ns = "delivered", now
            self._held_until.pop(sink.name, None)
        elif permanent or attempts >= sink.max_attempts:
            state, next_ns = "dead", now
            _dlog.warning("alert delivery %s to %s is dead: %s", row["key"], sink.name, error)
        else:
            delay = backoff_s(
                attempts,
                sink.backoff_initial_s,
                sink.backoff_max_s,
                jitter=self._jitter,
                key=f"{row['key']}\x1f{sink.name}",
            )
            if retry_after is not None:
                delay = max(delay, min(retry_after, sink.backoff_max_s))
            state, next_ns = "pending", now + int(delay * 1e9)
            self._held_until[sink.name] = next_ns
        with self._lock:
            self._db().execute(
                "UPDATE deliveries SET state = ?, attempts = ?, next_attempt_ns = ?, "
                "last_error = ?, updated_ns = ? WHERE key = ? AND sink = ?",
                (state, attempts, next_ns, error, now, row["key"], row["sink"]),
            )
            self._checkpointer.kick()

    def _next_wake_s(self) -> float:
        """Seconds until something may be due (at most :data:`MAX_IDLE_S`)."""
        names = builtins.list(self.sinks)
        if not names:
            return MAX_IDLE_S
        marks = ",".join("?" * len(names))
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT sink, MIN(next_attempt_ns) FROM deliveries WHERE state = 'pending' "
                    f"AND sink IN ({marks}) GROUP BY sink",
                    names,
                )
                .fetchall()
            )
        if not rows:
            return MAX_IDLE_S
        due = min(max(int(t), self._held_until.get(s, 0)) for s, t in rows)
        return min(MAX_IDLE_S, max(0.0, (due - int(self._clock())) / 1e9))

    # -- the delivery thread -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery thread (once)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._run, name="sensorium-alert-delivery", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                self.deliver_due()
                if self._stop.is_set():
                    break
                wait = self._next_wake_s()
                if wait <= 0:
                    continue
                if self._sleep is not None:
                    self._sleep(wait)
                else:
                    self._wake.wait(wait)
        except BaseException as exc:  # kept for health checks; the outbox keeps the work
            self.error = exc
            _dlog.exception("alert delivery thread stopped")

    # -- reading -------------------------------------------------------------------------------------

    def pending(
        self, *, sink: str | None = None, limit: int = 100
    ) -> builtins.list[dict[str, Any]]:
        """Deliveries not yet done, oldest first."""
        return self._list("pending", sink, "rowid", limit, 0)

    def dead_letters(
        self, *, sink: str | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        """Deliveries given up on (with ``last_error``), newest first."""
        return self._list("dead", sink, "updated_ns DESC, rowid DESC", limit, offset)

    def delivered(
        self, *, sink: str | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[dict[str, Any]]:
        """Delivered deliveries, newest first."""
        return self._list("delivered", sink, "updated_ns DESC, rowid DESC", limit, offset)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per sink: ``pending``, ``delivered``, ``dead``."""
        out: dict[str, dict[str, int]] = {
            n: {"pending": 0, "delivered": 0, "dead": 0} for n in self.sinks
        }
        with self._lock:
            for sink, state, n in self._db().execute(
                "SELECT sink, state, COUNT(*) FROM deliveries GROUP BY sink, state"
            ):
                out.setdefault(sink, {"pending": 0, "delivered": 0, "dead": 0})[state] = int(n)
        return out

    def _list(
        self, state: str, sink: str | None, order: str, limit: int, offset: int
    ) -> builtins.list[dict[str, Any]]:
        sql = f"SELECT {_COLUMNS} FROM deliveries WHERE state = ?"
        args: builtins.list[Any] = [state]
        if sink is not None:
            sql += " AND sink = ?"
            args.append(sink)
        sql += f" ORDER BY {order} LIMIT ? OFFSET ?"
        args += [max(0, int(limit)), max(0, int(offset))]
        with self._lock:
            cur = self._db().execute(sql, args)
            cols = [x[0] for x in cur.description]
            rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
        for r in rows:
            r["payload"] = orjson.loads(r["payload"])
        return rows

    # -- lifecycle -----------------------------------------------------------------------------------

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the thread (after the attempt in flight), close the sinks and the database.
        Pending deliveries stay in the outbox for the next dispatcher."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout_s)
        with self._pass_lock:
            for sink in self.sinks.values():
                sink.close()
            self._checkpointer.close()
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("alert dispatcher is closed")
        return self._conn
