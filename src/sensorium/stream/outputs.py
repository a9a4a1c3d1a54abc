"""Stream outputs stored as tables: rollups (``<measurement>_<interval>``) and ``late_data``.

Finished rows wait in an *outbox* that is part of the stream checkpoint; once the checkpoint is
on disk they are committed to Delta tables with a transaction action (app id
``sensorium-stream``, version = checkpoint number). After a crash the outbox of the last
checkpoint is delivered again and a table whose recorded version is already that number skips
it: every finished row is stored exactly once.

For queries, a table's view is ``lake snapshot ∪ outbox rows ∪ open (provisional) rows``, taken
under one lock with the lake version they belong to, as the hot buffer does for raw data.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import polars as pl
import pyarrow as pa

from sensorium.store.lake import Lake, Pieces
from sensorium.stream.level import remove_orphans, spill_name

APP_ID = "sensorium-stream"
LATE_TABLE = "late_data"
Key = tuple[str, str]  # (bucket, table)


def to_arrow(df: pl.DataFrame, tags: list[str]) -> pa.Table:
    """Storage batch form: tag columns (and ``field``) dictionary-encoded, the rest as they are."""
    t = df.to_arrow()
    cols = []
    for name in t.column_names:
        c = t[name]
        if name in tags:
            c = c.cast(pa.string()).dictionary_encode()
        elif pa.types.is_large_string(c.type):
            c = c.cast(pa.string())
        elif pa.types.is_large_binary(c.type):
            c = c.cast(pa.binary())
        cols.append(c)
    return pa.Table.from_arrays(cols, names=t.column_names)


@dataclass(frozen=True, slots=True)
class Segment:
    """Outbox rows waiting in a file of their own (Arrow IPC, written once; a cache: the
    checkpoint holds the rows themselves)."""

    path: Path
    num_rows: int
    schema: pa.Schema

    def read(self) -> pa.Table:
        with pa.OSFile(str(self.path), "rb") as f:  # read, not mapped
            return pa.ipc.open_file(f).read_all()


Rows: TypeAlias = pa.Table | Segment  # an outbox item


def rows_of(item: Rows) -> pa.Table:
    return item.read() if isinstance(item, Segment) else item


_seq = itertools.count()

STREAM_SCHEMA_SUFFIX = "__stream"


class StreamSchemas:
    """The store port for stream outputs in PostgreSQL: the outputs of bucket ``b`` live in
    schema ``b__stream`` (beside the raw tables of schema ``b``, never clashing with them)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    @staticmethod
    def _b(bucket: str) -> str:
        return bucket + STREAM_SCHEMA_SUFFIX

    def tables(self) -> list[Key]:
        n = len(STREAM_SCHEMA_SUFFIX)
        return [(b[:-n], t) for b, t in self.store.tables(stream_outputs=True)]

    def version(self, bucket: str, table: str) -> int:
        return int(self.store.version(self._b(bucket), table))

    def applied_offset(self, bucket: str, table: str, app_id: str) -> int:
        return int(self.store.applied_offset(self._b(bucket), table, app_id=app_id))

    def append(self, bucket: str, table: str, data: pa.Table, offset: int | None, app_id: str) -> int:
        return int(self.store.append(self._b(bucket), table, data, offset=offset, app_id=app_id))

    def read(self, bucket: str, table: str) -> pa.Table:
        return self.store.read(self._b(bucket), table)  # type: ignore[no-any-return]

    def schema(self, bucket: str, table: str) -> pa.Schema | None:
        return self.store.schema(self._b(bucket), table)  # type: ignore[no-any-return]

    def lock(self, bucket: str, table: str) -> threading.RLock:
        return self.store.lock(self._b(bucket), table)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.store.close()


def stream_store(settings: Any) -> StreamSchemas | None:
    """Where stream outputs go besides a local lake: PostgreSQL schemas with
    ``store_backend = "postgres"`` (None: the Delta lake under ``data_dir/stream/lake``)."""
    if settings.store_backend != "postgres":
        return None
    from sensorium.store.postgres import PostgresStore

    return StreamSchemas(PostgresStore(settings.postgres_dsn))


class DerivedTables:
    """The lake of stream outputs (its own root) plus the rows not in it yet."""

    def __init__(
        self,
        root: Path,
        lake_settings: object | None = None,
        *,
        app_id: str = APP_ID,
        follow: bool = False,
        store: Any = None,
        spill_dir: Path | None = None,
    ) -> None:
        """``app_id``: the transaction id of this writer's commits (one per stream partition when
        several workers share the lake, see docs/deployment.md). ``follow``: other processes
        write the lake (a reader beside workers): every read looks at its newest version.
        ``spill_dir``: outbox rows wait there in files (:class:`Segment`) instead of in memory —
        at 100 k series a minute's rollup rows are ~80 MB — and a delivery to the local lake
        reads them back one at a time (:class:`~sensorium.store.lake.Pieces`)."""
        # ``store``: another store port for the outputs (:class:`StreamSchemas` in PostgreSQL)
        self.lake: Any = store if store is not None else Lake(root, lake_settings)  # type: ignore[arg-type]
        self.app_id = app_id
        self.follow = follow
        # held by the runner while it changes stage state and fills the outbox, and by views
        # while they read both: a row is in exactly one of lake, outbox and open windows
        self.lock = threading.RLock()
        self._lock = self.lock
        self._outbox: dict[Key, list[Rows]] = {}
        self.spill_dir = spill_dir
        if spill_dir is not None:
            spill_dir.mkdir(parents=True, exist_ok=True)
            remove_orphans(spill_dir, "*.arrow")  # a previous process's cache
        self._versions: dict[Key, int] = {}
        # tables in the lake: read from disk once, then kept as deliveries create them (no
        # directory walk per query)
        self._stored: set[Key] = set(self.lake.tables())
        # (bucket, table) -> provider of provisional rows (open windows), in storage batch form
        self.open_rows: Callable[[str, str], pa.Table | None] = lambda b, t: None
        self.open_names: Callable[[str], list[str]] = lambda b: []
        # held (under the lock) while a view reads the outbox and the open rows: the runner's
        # side work in progress finishes and its outputs join the outbox first
        self.read_guard: Callable[[], AbstractContextManager[None]] = nullcontext

    # -- outbox --------------------------------------------------------------------------------
    def add(self, key: Key, table: pa.Table) -> None:
        if not table.num_rows:
            return
        item: Rows = table
        if self.spill_dir is not None:
            path = self.spill_dir / f"{spill_name()}-{next(_seq)}.arrow"
            with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
                w.write_table(table)
            item = Segment(path, table.num_rows, table.schema)
        with self._lock:
            if key not in self._versions and not self.follow:
                # the lake version its waiting rows go with, known before a delivery can start
                # (a view reading it later could see a delivered version and the rows still here)
                self._versions[key] = self.lake.version(*key)
            self._outbox.setdefault(key, []).append(item)

    def outbox(self) -> dict[Key, list[Rows]]:
        with self._lock:
            return {k: list(v) for k, v in self._outbox.items()}

    @staticmethod
    def checkpoint_form(outbox: dict[Key, list[Rows]]) -> dict[Key, Any]:
        """``outbox`` for a checkpoint: the rows themselves, a table at a time (see
        :class:`~sensorium.stream.checkpoint.Parts`; loads as lists of tables)."""
        from sensorium.stream.checkpoint import Parts

        def parts(items: list[Rows]) -> Parts:
            return Parts(lambda: (rows_of(it) for it in items))

        return {k: parts(v) for k, v in outbox.items()}

    def restore_outbox(self, outbox: dict[Key, list[pa.Table]]) -> None:
        with self._lock:
            self._outbox = {k: list(v) for k, v in outbox.items()}

    def discard(self) -> None:
        """Forget the rows waiting for a checkpoint and remove their files (a runner being
        dropped: the last checkpoint holds its own copy of what it covers)."""
        with self._lock:
            items = [it for v in self._outbox.values() for it in v]
            self._outbox = {}
        for it in items:
            if isinstance(it, Segment):
                it.path.unlink(missing_ok=True)

    def deliver(self, seq: int, outbox: dict[Key, list[Rows]] | None = None) -> int:
        """Commit the outbox (as of checkpoint ``seq``: ``outbox``, the snapshot that checkpoint
        holds; default the outbox now) to the lake; returns rows committed. Rows added after the
        snapshot stay for the next checkpoint: committing them under ``seq`` would store them
        twice after a crash (the replay re-derives them into a later checkpoint)."""
        rows = 0
        for key, items in (self.outbox() if outbox is None else outbox).items():
            n = len(items)
            # the table's lock from the commit until the rows leave the outbox: a compaction
            # (which takes it first too) cannot slip a newer version in between, which a view
            # would pair with the rows still waiting (seen twice)
            with self.lake.lock(*key):
                if self.lake.applied_offset(*key, app_id=self.app_id) < seq:
                    version = self.lake.append(key[0], key[1], self._batch(items), offset=seq, app_id=self.app_id)
                    rows += sum(it.num_rows for it in items)
                else:
                    version = self.lake.version(*key)
                with self._lock:  # rows and the version they are in change together for views
                    self._outbox[key] = self._outbox.get(key, [])[n:]
                    if not self._outbox[key]:
                        del self._outbox[key]
                    # versions only move on (a compaction may have committed one after this append)
                    self._versions[key] = max(version, self._versions.get(key, -1))
                    if version >= 0:
                        self._stored.add(key)
            for it in items:  # committed (and in the checkpoint): the files have served
                if isinstance(it, Segment):
                    it.path.unlink(missing_ok=True)
        return rows

    def maintain(
        self, keys_of: Callable[[Key], list[str]], *, min_files: int | None = None,
        settled_s: float | None = None, vacuum_hours: float = 1.0,
    ) -> int:
        """Compact the stored outputs' small files (one per table and day at each checkpoint:
        ~1,440 a day for a 1-minute rollup) into one sorted file set per day, and vacuum old
        versions; ``keys_of(key)``: the columns to sort by after the day (the series' tags and
        ``field``). Rows are kept as they are (no merging: a late-data row is not keyed by series
        and time). Queries then read the compacted version. Returns partitions compacted. Only
        for a local lake written by this process (not PostgreSQL, not a lake other processes
        write)."""
        if not isinstance(self.lake, Lake) or self.follow:
            return 0
        done = 0
        for key in self.lake.tables():
            with self.lake.lock(*key):
                n = self.lake.compact(*key, keys_of(key), min_files=min_files, settled_s=settled_s, dedup=False)
                if n:
                    version = self.lake.version(*key)
                    with self._lock:
                        self._versions[key] = max(version, self._versions.get(key, -1))
            done += n
            self.lake.vacuum(*key, retention_hours=vacuum_hours)
        return done

    def _batch(self, items: list[Rows]) -> pa.Table | Pieces:
        """What one append commits: the items one at a time when they share a schema and the
        lake takes pieces, else one table."""
        if isinstance(self.lake, Lake) and len({it.schema for it in items}) == 1:
            return Pieces(items[0].schema, lambda: (rows_of(it) for it in items))
        return pa.concat_tables([rows_of(it) for it in items], promote_options="permissive")

    # -- reading -------------------------------------------------------------------------------
    def names(self, bucket: str) -> list[str]:
        if self.follow:
            stored = set(self.lake.tables())
            with self._lock:
                self._stored = stored
        with self._lock:
            known = {t for b, t in (*self._outbox, *self._stored) if b == bucket}
        return sorted(known | set(self.open_names(bucket)))

    def view(self, bucket: str, table: str) -> tuple[pa.Table | None, int]:
        """(rows not in the lake yet: outbox + open windows, lake version they go with)."""
        key = (bucket, table)
        with self._lock, self.read_guard():
            # spilled rows are read under the lock: a delivery removes their files once it has
            # taken them out of the outbox, under the same lock
            parts = [rows_of(it) for it in self._outbox.get(key, [])]
            version = None if self.follow else self._versions.get(key)
            opened = self.open_rows(bucket, table)
        if version is None:
            version = self.lake.version(bucket, table)
            with self._lock:
                self._versions.setdefault(key, version)
        if opened is not None and opened.num_rows:
            parts.append(opened)
        if not parts:
            # an empty table with its columns, when the provider knows them and nothing is stored
            return (opened if opened is not None and version < 0 else None), version
        mem = pa.concat_tables(parts, promote_options="permissive")
        return Lake.prepare(mem).drop_columns(["day"]), version
