"""The dead-letter store: rejected lines with their reasons, and the quality counters, in SQLite.

Each :meth:`DeadLetterStore.add` (each record of :meth:`DeadLetterStore.add_many`) is tied to the
WAL offset of the write it comes from and applied in ONE transaction together with that offset, so applying the same write again (WAL replay after a
crash) is a no-op: the store never double-counts. Journal mode is WAL; ``synchronous`` defaults to
FULL (each ``add`` is durable when it returns). One connection, guarded by a lock, serves all threads.

Tables: ``dead_letters`` (one row per rejected line; ``rule`` holds the failing rule names joined by
``,``), ``applied`` (the log offsets applied), ``counters`` (name → total), ``device_counts``
(device → accepted rows), ``rule_counts`` (rule → rows that failed it, rejected or flagged).
"""

from __future__ import annotations

import builtins
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    log_offset INTEGER NOT NULL,
    bucket TEXT NOT NULL,
    measurement TEXT,
    line INTEGER NOT NULL,
    raw TEXT NOT NULL,
    reason TEXT NOT NULL,
    rule TEXT NOT NULL,
    source TEXT NOT NULL,
    device_id TEXT,
    received_ns INTEGER NOT NULL,
    replayed_ns INTEGER
);
CREATE INDEX IF NOT EXISTS dead_letters_received ON dead_letters (received_ns);
CREATE INDEX IF NOT EXISTS dead_letters_device ON dead_letters (device_id);
CREATE INDEX IF NOT EXISTS dead_letters_bucket ON dead_letters (bucket);
CREATE INDEX IF NOT EXISTS dead_letters_rule ON dead_letters (rule);
CREATE TABLE IF NOT EXISTS applied (log_offset INTEGER PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_counts (
    device_id TEXT PRIMARY KEY, accepted INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rule_counts (rule TEXT PRIMARY KEY, failed INTEGER NOT NULL) WITHOUT ROWID;
"""

_COLUMNS = (
    "id, log_offset, bucket, measurement, line, raw, reason, rule, source, device_id, "
    "received_ns, replayed_ns"
)
#: Counter names kept in ``counters``.
COUNTERS = ("accepted_rows", "rejected_rows", "duplicates", "flagged_rows", "batches")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    bucket: str
    measurement: str | None
    line: int
    raw: str
    reason: str
    rule: str
    source: str
    device_id: str | None
    received_ns: int


@dataclass(frozen=True, slots=True)
class StatsRecord:
    """One write's dead letters and quality counters, tied to its log offset."""

    log_offset: int
    letters: Sequence[DeadLetter] = ()
    duplicates: int = 0
    accepted_rows: int = 0
    accepted_by_device: Mapping[str, int] = field(default_factory=dict)
    flagged_rows: int = 0
    rule_counts: Mapping[str, int] = field(default_factory=dict)
    #: accepted points per device as a table (first column the device, second the count),
    #: summed with ``accepted_by_device``: how the platform logs them (no Python object per device)
    device_counts: pa.Table | None = None


def _summed(maps: Sequence[Mapping[str, int]], tables: Sequence[pa.Table | None] = ()) -> list[tuple[str, int]]:
    """The maps' values and the tables' counts (first column the key, second the count) summed
    per key (keys whose sum is 0 left out)."""
    maps = [m for m in maps if m]
    parts = [
        pa.table({"k": t.column(0).cast(pa.string()), "n": t.column(1).cast(pa.int64())})
        for t in tables if t is not None and t.num_rows
    ]
    if maps:
        keys = pa.array(list(chain.from_iterable(maps)), pa.string())
        counts = pa.array(list(chain.from_iterable(m.values() for m in maps)), pa.int64())
        parts.append(pa.table({"k": keys, "n": counts}))
    if not parts:
        return []
    sums = pa.concat_tables(parts).group_by("k", use_threads=False).aggregate([("n", "sum")])
    sums = sums.filter(pc.not_equal(sums["n_sum"], 0))
    return list(zip(sums["k"].to_pylist(), sums["n_sum"].to_pylist(), strict=True))


class DeadLetterStore:
    """Durable dead letters and quality counters (SQLite, WAL journal)."""

    def __init__(
        self,
        path: Path | str,
        *,
        synchronous: Literal["FULL", "NORMAL", "OFF"] = "FULL",
        max_raw_chars: int = 4096,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._max_raw = max_raw_chars
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            str(self.path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        c = self._conn
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"PRAGMA synchronous={synchronous}")
        c.execute("PRAGMA foreign_keys=OFF")
        c.executescript(_SCHEMA)

    # -- writing -------------------------------------------------------------------------------------

    def add(
        self,
        log_offset: int,
        letters: Sequence[DeadLetter],
        *,
        duplicates: int = 0,
        accepted_rows: int = 0,
        accepted_by_device: Mapping[str, int] | None = None,
        flagged_rows: int = 0,
        rule_counts: Mapping[str, int] | None = None,
    ) -> bool:
        """Store ``letters`` and add the counters, atomically, once per ``log_offset``.

        Returns False (and changes nothing) if this offset was applied before.
        """
        rec = StatsRecord(log_offset, tuple(letters), duplicates, accepted_rows,
                          accepted_by_device or {}, flagged_rows, rule_counts or {})
        return self.add_many([rec]) == 1

    def add_many(self, records: Sequence[StatsRecord]) -> int:
        """Apply several writes' records in ONE transaction, each at most once (by its
        ``log_offset``); returns how many were new. The writes' counter maps are summed per key
        first (Arrow's hash aggregation), so a device seen in many writes is one upsert: at 100 k
        points/s over 10 k devices a 2-s drain's ~160 k (device, count) pairs are ≤ 10 k upserts."""
        if not records:
            return 0
        with self._lock:
            c = self._db()
            c.execute("BEGIN IMMEDIATE")
            try:
                new: list[StatsRecord] = []
                for r in records:
                    cur = c.execute("INSERT OR IGNORE INTO applied (log_offset) VALUES (?)", (r.log_offset,))
                    if cur.rowcount:
                        new.append(r)
                if not new:
                    c.execute("ROLLBACK")
                    return 0
                cap = self._max_raw
                letters = [
                    (r.log_offset, d.bucket, d.measurement, d.line, d.raw[:cap], d.reason, d.rule,
                     d.source, d.device_id, d.received_ns)
                    for r in new
                    for d in r.letters
                ]
                if letters:
                    c.executemany(
                        "INSERT INTO dead_letters (log_offset, bucket, measurement, line, raw, reason, "
                        "rule, source, device_id, received_ns) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        letters,
                    )
                deltas = {
                    "accepted_rows": sum(r.accepted_rows for r in new),
                    "rejected_rows": len(letters),
                    "duplicates": sum(r.duplicates for r in new),
                    "flagged_rows": sum(r.flagged_rows for r in new),
                    "batches": len(new),
                }
                for table, key, col, rows in (
                    ("counters", "name", "value", _summed([deltas])),
                    ("rule_counts", "rule", "failed", _summed([r.rule_counts for r in new])),
                    ("device_counts", "device_id", "accepted",
                     _summed([r.accepted_by_device for r in new], [r.device_counts for r in new])),
                ):
                    if rows:  # one upsert per key however many writes named it
                        c.executemany(
                            f"INSERT INTO {table} ({key}, {col}) VALUES (?, ?) "
                            f"ON CONFLICT({key}) DO UPDATE SET {col} = {col} + excluded.{col}",
                            rows,
                        )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return len(new)

    def mark_replayed(self, ids: Sequence[int], replayed_ns: int) -> None:
        """Mark dead letters as replayed (they leave the default listings and the rejected totals)."""
        if not ids:
            return
        with self._lock:
            c = self._db()
            c.execute("BEGIN IMMEDIATE")
            try:
                c.executemany(
                    "UPDATE dead_letters SET replayed_ns = ? WHERE id = ?",
                    [(replayed_ns, int(i)) for i in ids],
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    # -- reading -------------------------------------------------------------------------------------

    def last_offset(self) -> int:
        """The highest log offset applied, -1 if none."""
        with self._lock:
            row = self._db().execute("SELECT MAX(log_offset) FROM applied").fetchone()
        return -1 if row[0] is None else int(row[0])

    def list(
        self,
        *,
        bucket: str | None = None,
        reason_contains: str | None = None,
        rule: str | None = None,
        device_id: str | None = None,
        since_ns: int | None = None,
        include_replayed: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[dict[str, Any]]:
        """Dead letters matching the filters, newest first. ``rule`` matches any of a letter's rules;
        ``reason_contains`` is case-insensitive; ``since_ns`` compares with ``received_ns``."""
        where, args = _where(bucket, reason_contains, rule, device_id, since_ns, include_replayed)
        sql = f"SELECT {_COLUMNS} FROM dead_letters{where} ORDER BY id DESC LIMIT ? OFFSET ?"
        with self._lock:
            cur = self._db().execute(sql, [*args, max(0, int(limit)), max(0, int(offset))])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def count(
        self,
        *,
        bucket: str | None = None,
        reason_contains: str | None = None,
        rule: str | None = None,
        device_id: str | None = None,
        since_ns: int | None = None,
        include_replayed: bool = False,
    ) -> int:
        where, args = _where(bucket, reason_contains, rule, device_id, since_ns, include_replayed)
        with self._lock:
            row = self._db().execute(f"SELECT COUNT(*) FROM dead_letters{where}", args).fetchone()
        return int(row[0])

    def get(self, ids: Sequence[int]) -> builtins.list[dict[str, Any]]:
        """Dead letters by id (in id order), replayed or not."""
        if not ids:
            return []
        out: builtins.list[dict[str, Any]] = []
        with self._lock:
            c = self._db()
            for i in range(0, len(ids), 500):
                chunk = [int(x) for x in ids[i : i + 500]]
                marks = ",".join("?" * len(chunk))
                cur = c.execute(
                    f"SELECT {_COLUMNS} FROM dead_letters WHERE id IN ({marks}) ORDER BY id", chunk
                )
                names = [d[0] for d in cur.description]
                out.extend(dict(zip(names, row, strict=True)) for row in cur.fetchall())
        return sorted(out, key=lambda d: d["id"])

    def counters(self) -> dict[str, Any]:
        """Totals: ``accepted_rows``, ``rejected_rows`` (ever stored), ``pending`` (not replayed),
        ``replayed``, ``duplicates``, ``flagged_rows``, ``batches``, and ``rules`` (rule → rows that
        failed it)."""
        with self._lock:
            c = self._db()
            out: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
            out.update({k: int(v) for k, v in c.execute("SELECT name, value FROM counters")})
            pending, replayed = c.execute(
                "SELECT COUNT(*) - COUNT(replayed_ns), COUNT(replayed_ns) FROM dead_letters"
            ).fetchone()
            out["pending"] = int(pending or 0)
            out["replayed"] = int(replayed or 0)
            out["rules"] = {
                r: int(n)
                for r, n in c.execute(
                    "SELECT rule, failed FROM rule_counts ORDER BY failed DESC, rule"
                )
            }
        return out

    def device_stats(self) -> dict[str, dict[str, int]]:
        """Per device: ``accepted`` rows and ``rejected`` (pending dead letters)."""
        with self._lock:
            c = self._db()
            out: dict[str, dict[str, int]] = {
                d: {"accepted": int(a), "rejected": 0}
                for d, a in c.execute("SELECT device_id, accepted FROM device_counts")
            }
            for d, n in c.execute(
                "SELECT device_id, COUNT(*) FROM dead_letters WHERE replayed_ns IS NULL "
                "AND device_id IS NOT NULL GROUP BY device_id"
            ):
                out.setdefault(d, {"accepted": 0, "rejected": 0})["rejected"] = int(n)
        return out

    def rule_groups(self) -> builtins.list[tuple[str, int, str]]:
        """Pending dead letters grouped by their ``rule`` string: ``(rule, count, latest reason)``."""
        with self._lock:
            rows = (
                self._db()
                .execute(
                    "SELECT d.rule, g.n, d.reason FROM (SELECT rule, COUNT(*) AS n, MAX(id) AS last "
                    "FROM dead_letters WHERE replayed_ns IS NULL GROUP BY rule) AS g "
                    "JOIN dead_letters AS d ON d.id = g.last"
                )
                .fetchall()
            )
        return [(str(r), int(n), str(reason)) for r, n, reason in rows]

    # -- lifecycle -----------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Make every committed change durable on disk (a FULL WAL checkpoint, fsynced)."""
        with self._lock:
            self._db().execute("PRAGMA wal_checkpoint(FULL)")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> DeadLetterStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("dead-letter store is closed")
        return self._conn


def _where(
    bucket: str | None,
    reason_contains: str | None,
    rule: str | None,
    device_id: str | None,
    since_ns: int | None,
    include_replayed: bool,
) -> tuple[str, list[Any]]:
    conds: list[str] = []
    args: list[Any] = []
    if bucket is not None:
        conds.append("bucket = ?")
        args.append(bucket)
    if reason_contains:
        conds.append("instr(lower(reason), lower(?)) > 0")
        args.append(reason_contains)
    if rule is not None:
        conds.append("(rule = ? OR instr(',' || rule || ',', ',' || ? || ',') > 0)")
        args.extend([rule, rule])
    if device_id is not None:
        conds.append("device_id = ?")
        args.append(device_id)
    if since_ns is not None:
        conds.append("received_ns >= ?")
        args.append(int(since_ns))
    if not include_replayed:
        conds.append("replayed_ns IS NULL")
    return ((" WHERE " + " AND ".join(conds)) if conds else ""), args
