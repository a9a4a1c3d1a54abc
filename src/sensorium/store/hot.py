"""The hot buffer: recent batches in memory, queryable at once, flushed to the lake by size and age.

Chunks are appended in WAL-offset order (the caller holds the WAL append lock), so a flush that
takes a prefix of a table's chunks covers every offset up to its last one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.schema import TIME, for_storage, is_tag, unify

Key = tuple[str, str]


def _merge_rewrites(batch: pa.Table, storage: pa.Table) -> pa.Table:
    """Points of one series and time written in different requests are one point (later fields
    win), as they will be once flushed: a cheap hash check first, the merge only if needed."""
    tags = [f.name for f in batch.schema if is_tag(f.type)]
    keys = {TIME: batch[TIME].cast(pa.int64()).to_numpy()}
    if tags:
        batch = batch.unify_dictionaries()
    for i, t in enumerate(tags):
        col = batch[t].combine_chunks()
        keys[f"k{i}"] = pc.fill_null(col.indices, -1).to_numpy(zero_copy_only=False)
    if not pl.DataFrame(keys).is_duplicated().any():
        return storage
    from sensorium.store.lake import dedup_sorted

    return dedup_sorted(storage, tags)


@dataclass
class _Entry:
    chunks: list[tuple[int, pa.Table]] = field(default_factory=list)
    rows: int = 0
    since: float = 0.0  # monotonic time of the oldest unflushed chunk
    snapshot: pa.Table | None = None  # cached query form
    lake_version: int = -1  # lake version that goes with this hot content


class HotBuffer:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._entries: dict[Key, _Entry] = {}
        self._pending_offsets: dict[int, None] = {}

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    def append(self, key: Key, offset: int, table: pa.Table) -> None:
        with self._lock:
            e = self._entries.setdefault(key, _Entry())
            if not e.chunks:
                e.since = time.monotonic()
            e.chunks.append((offset, table))
            e.rows += table.num_rows
            e.snapshot = None

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._entries)

    def rows(self, key: Key | None = None) -> int:
        with self._lock:
            if key is not None:
                e = self._entries.get(key)
                return e.rows if e else 0
            return sum(e.rows for e in self._entries.values())

    def due(self, max_rows: int, max_age_s: float) -> list[Key]:
        now = time.monotonic()
        with self._lock:
            return [
                k
                for k, e in self._entries.items()
                if e.chunks and (e.rows >= max_rows or now - e.since >= max_age_s)
            ]

    def take(self, key: Key) -> tuple[list[pa.Table], int, int]:
        """The chunks to flush: (tables, highest offset, number of chunks). They stay visible
        until :meth:`release` is called with the new lake version."""
        with self._lock:
            e = self._entries.get(key)
            if not e or not e.chunks:
                return [], -1, 0
            chunks = list(e.chunks)
        return [t for _, t in chunks], chunks[-1][0], len(chunks)

    def release(self, key: Key, n_chunks: int, lake_version: int) -> None:
        """Atomically drop the first ``n_chunks`` (now in the lake) and move to ``lake_version``."""
        with self._lock:
            e = self._entries[key]
            gone = e.chunks[:n_chunks]
            e.chunks = e.chunks[n_chunks:]
            e.rows -= sum(t.num_rows for _, t in gone)
            e.since = time.monotonic()
            e.snapshot = None
            e.lake_version = lake_version

    def set_lake_version(self, key: Key, version: int) -> None:
        with self._lock:
            self._entries.setdefault(key, _Entry()).lake_version = version

    def view(self, key: Key) -> tuple[pa.Table | None, int]:
        """A consistent (hot snapshot in storage form, lake version) pair for a query."""
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                return None, -1
            if e.snapshot is None and e.chunks:
                data = unify([t for _, t in e.chunks])
                e.snapshot = for_storage(data)
                if len(e.chunks) > 1:  # one request is merged already; across requests, here
                    e.snapshot = _merge_rewrites(data, e.snapshot)
            return e.snapshot, e.lake_version

    def min_offset(self) -> int | None:
        """Lowest offset still only in memory (None: nothing pending)."""
        with self._lock:
            offs = [e.chunks[0][0] for e in self._entries.values() if e.chunks]
            offs.extend(self._pending_offsets)
            return min(offs) if offs else None

    def hold(self, offset: int) -> None:
        """Mark a non-data record (dead letters) as not yet applied elsewhere."""
        with self._lock:
            self._pending_offsets[offset] = None

    def unhold(self, offset: int) -> None:
        with self._lock:
            self._pending_offsets.pop(offset, None)
