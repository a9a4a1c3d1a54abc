"""Last-value cache: per series, the newest value of each field and its time.

Writes only append to a pending list (cheap on the ingest path); reads fold pending batches in
with one vectorised group-by, and so does :meth:`LastValueCache.maintain` (the platform's flush
calls it) for a table whose pending rows reach :data:`FOLD_ROWS` or the size of its folded state,
so memory stays bounded by the series count, not by the data written, when nobody reads (the
folds cost O(1) amortised per row). A fold's working set (~3x the rows it folds, ~45 MB at 50 k
series) comes after a flush, when the process holds least, not inside a write (under the log's
lock, beside the request's parsed batches); a write folds only past :data:`HARD_FACTOR` times
that, when nothing calls ``maintain``. A table's cache is seeded from the lake on first read. A
series not updated for ``ttl_s`` (by the injected clock) is forgotten. The in-memory adapter of
:class:`sensorium.query.cache.LatestCache`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa

from sensorium.schema import RESERVED, TIME, for_storage

Key = tuple[str, str]
FOLD_ROWS = 65_536
HARD_FACTOR = 4  # a write folds a table itself once its pending rows reach this many times the due size
_TOUCHED = "\x00touched"  # clock of the last update of a series (never a column name from input)


class LastValueCache:
    def __init__(
        self,
        seed: Callable[[Key], pa.Table | None],
        tags_of: Callable[[Key], list[str]],
        *,
        ttl_s: float | None = None,
        clock: Callable[[], int] = time.time_ns,
    ):
        self._seed = seed
        self._tags_of = tags_of
        self._ttl_ns = int(ttl_s * 1e9) if ttl_s else None
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[Key, pl.DataFrame] = {}
        self._pending: dict[Key, list[tuple[int, pa.Table]]] = {}
        self._waiting: dict[Key, int] = {}  # rows in _pending
        self._fold_locks: dict[Key, threading.Lock] = {}

    def update(self, key: Key, batch: pa.Table) -> None:
        with self._lock:
            self._pending.setdefault(key, []).append((self._clock(), batch))
            waiting = self._waiting[key] = self._waiting.get(key, 0) + batch.num_rows
            due = waiting >= HARD_FACTOR * self._due_rows(key)
        if due:
            self._fold(key)

    def _due_rows(self, key: Key) -> int:
        """Pending rows at which a table is folded (call with ``_lock`` held)."""
        state = self._state.get(key)
        return max(FOLD_ROWS, state.height if state is not None else 0)

    def maintain(self) -> int:
        """Fold every table whose pending rows are due. Returns tables folded."""
        with self._lock:
            due = [k for k, w in self._waiting.items() if w >= self._due_rows(k)]
        for key in due:
            self._fold(key)
        return len(due)

    def clear(self, key: Key | None = None) -> None:
        with self._lock:
            if key is None:
                self._state.clear()
                self._pending.clear()
                self._waiting.clear()
            else:
                self._state.pop(key, None)
                self._pending.pop(key, None)
                self._waiting.pop(key, None)

    def close(self) -> None:
        pass

    @staticmethod
    def _frame(table: pa.Table, touched: int) -> pl.DataFrame:
        df: pl.DataFrame = pl.from_arrow(for_storage(table))  # type: ignore[assignment]
        return df.with_columns(pl.lit(touched, pl.Int64).alias(_TOUCHED))

    def _fold(self, key: Key) -> pl.DataFrame | None:
        # one fold per table at a time: two interleaved folds would each write back a state
        # missing the other's pending batches
        with self._lock:
            fold_lock = self._fold_locks.setdefault(key, threading.Lock())
        with fold_lock:
            return self._fold_locked(key)

    def _fold_locked(self, key: Key) -> pl.DataFrame | None:
        with self._lock:
            pending = self._pending.pop(key, [])
            self._waiting.pop(key, None)
            state = self._state.get(key)
        now = self._clock()
        if state is None:
            seeded = self._seed(key)
            if seeded is not None and seeded.num_rows:
                state = self._frame(seeded, now)
        frames = [state] if state is not None else []
        frames += [self._frame(t, at) for at, t in pending]
        if not frames:
            return None
        df = pl.concat(frames, how="diagonal_relaxed")
        tags = [t for t in self._tags_of(key) if t in df.columns]
        fields = [c for c in df.columns if c not in RESERVED and c not in tags and c != _TOUCHED]
        df = df.sort(TIME, maintain_order=True)  # equal times: the later update wins
        aggs = [pl.col(TIME).max(), pl.col(_TOUCHED).max()]
        aggs += [pl.col(f).drop_nulls().last() for f in fields]
        df = df.group_by(tags, maintain_order=True).agg(aggs) if tags else df.select(aggs)
        if self._ttl_ns is not None:
            df = df.filter(pl.col(_TOUCHED) > now - self._ttl_ns)
        with self._lock:
            self._state[key] = df
        return df

    def get(
        self,
        keys: list[Key],
        tag_filter: dict[str, str],
        tags_of: Callable[[Key], list[str]] | None = None,
    ) -> list[dict[str, Any]]:
        tags_of = tags_of or self._tags_of
        out: list[dict[str, Any]] = []
        for key in keys:
            df = self._fold(key)
            if df is None:
                continue
            df = df.drop(_TOUCHED)
            tags = [t for t in tags_of(key) if t in df.columns]
            ok = True
            for k, v in tag_filter.items():
                if k not in df.columns:
                    ok = False
                    break
                df = df.filter(pl.col(k) == v)
            if not ok or df.height == 0:
                continue
            for row in df.to_dicts():
                ts = row.pop(TIME)
                out.append(
                    {
                        "bucket": key[0],
                        "measurement": key[1],
                        "tags": {t: row.pop(t) for t in tags if row.get(t) is not None},
                        "time": ts,
                        "fields": {k: v for k, v in row.items() if v is not None and k not in tags},
                    }
                )
        return out
