"""Delta Lake tables, one per (bucket, measurement), partitioned by day, zstd-compressed.

Exactly-once from the log: each flush commits its rows together with a Delta *transaction*
(``txn``) action carrying the highest WAL offset it contains (``app_id = "sensorium-wal"``).
After a crash, records at or below :meth:`Lake.applied_offset` are already in the table and are
skipped on replay; the rest are replayed. The commit is atomic, so there is no window in which
rows are stored but the offset is not (or the reverse).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    WriterProperties,
    write_deltalake,
)
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, TableNotFoundError
from deltalake.transaction import (
    AddAction,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)

from sensorium.config import StoreSettings
from sensorium.errors import TypeConflictError
from sensorium.obs.memory import trim as trim_heap
from sensorium.schema import TAG_TYPE, TIME, TIME_TYPE, for_storage, is_tag

APP_ID = "sensorium-wal"
log = logging.getLogger("sensorium.lake")
NS_PER_DAY = 86_400_000_000_000
DAY = "day"
#: rows per slice a commit prepares and hands to the writer at a time (:meth:`Lake.prepared`)
PREPARE_ROWS = 131_072
#: rows per Parquet file a commit writes (more start a new file of the same day)
FILE_ROWS = 4_194_304


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


def _enc(name: str) -> str:
    """A directory name for any bucket/measurement: unsafe bytes become ``~XX`` (hex). Not ``%``:
    delta-rs treats table paths as URLs and would decode it."""
    out = "".join(c if c in _SAFE else "".join(f"~{b:02X}" for b in c.encode()) for c in name)
    return "~2E" + out[1:] if out.startswith(".") else out


def _dec(name: str) -> str:
    raw = bytearray()
    i = 0
    while i < len(name):
        if name[i] == "~" and i + 2 < len(name) + 1:
            raw.append(int(name[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(name[i].encode())
            i += 1
    return raw.decode()


@dataclass(frozen=True, slots=True)
class Pieces:
    """A batch given as pieces with one ``schema`` (``read()`` yields them, again on each call),
    each prepared (sorted, merged) on its own, so the whole batch is never in memory at once: for
    rows no two pieces share a (series, time) of — stream outputs, one row per window. The files
    of one append are then sorted piece by piece, not as a whole (compaction sorts them)."""

    schema: pa.Schema
    read: Callable[[], Iterator[pa.Table]]


@dataclass(frozen=True, slots=True)
class TableStats:
    bucket: str
    measurement: str
    files: int
    bytes: int
    rows: int
    version: int


COMMIT_ATTEMPTS = 8


def _concurrent_commit(exc: Exception) -> bool:
    """A commit that lost a race with another writer (worth retrying on a fresh snapshot)."""
    msg = str(exc).lower()
    return isinstance(exc, CommitFailedError) or any(
        s in msg for s in ("already exists", "version", "concurrent", "conflict")
    )


class Lake:
    """The embedded lake adapter: local Delta tables under ``root/<bucket>/<measurement>``."""

    def __init__(self, root: Path, settings: StoreSettings | None = None) -> None:
        self.root = Path(root)
        self.settings = settings or StoreSettings()
        self._locks: dict[tuple[str, str], threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._tables: dict[tuple[str, str], DeltaTable] = {}
        # files compaction looked at and found sharing no point with another (see compact;
        # kept in each table's INSPECTED file too)
        self._inspected: dict[tuple[str, str], set[str]] = {}

    # -- layout --------------------------------------------------------------------------------
    def path(self, bucket: str, measurement: str) -> Path:
        return self.root / _enc(bucket) / _enc(measurement)

    def lock(self, bucket: str, measurement: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault((bucket, measurement), threading.RLock())

    def tables(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if not self.root.exists():
            return out
        for b in sorted(self.root.iterdir()):
            if not b.is_dir():
                continue
            for m in sorted(b.iterdir()):
                if (m / "_delta_log").is_dir():
                    out.append((_dec(b.name), _dec(m.name)))
        return out

    def _table(self, bucket: str, measurement: str) -> DeltaTable | None:
        key = (bucket, measurement)
        dt = self._tables.get(key)
        if dt is None:
            p = self.path(bucket, measurement)
            if not (p / "_delta_log").is_dir():
                return None
            try:
                dt = DeltaTable(str(p))
            except TableNotFoundError:  # a log with no commit yet (being created, or its creator died)
                return None
            self._tables[key] = dt
        return dt

    def version(self, bucket: str, measurement: str) -> int:
        dt = self._table(bucket, measurement)
        if dt is None:
            return -1
        dt.update_incremental()
        return int(dt.version())

    def applied_offset(self, bucket: str, measurement: str, app_id: str = APP_ID) -> int:
        """Highest offset of ``app_id`` (default: the WAL's) committed to this table (-1: none)."""
        dt = self._table(bucket, measurement)
        if dt is None:
            return -1
        dt.update_incremental()
        v = dt.transaction_version(app_id)
        return -1 if v is None else int(v)

    # -- writing -------------------------------------------------------------------------------
    def _writer_properties(self) -> WriterProperties:
        cols: dict[str, ColumnProperties] = {
            TIME: ColumnProperties(dictionary_enabled=False, encoding="DELTA_BINARY_PACKED")
        }
        return WriterProperties(
            compression="ZSTD",
            compression_level=self.settings.compression_level,
            max_row_group_size=1_048_576,
            column_properties=cols,
        )

    @staticmethod
    def prepare(table: pa.Table) -> pa.Table:
        """Storage form: tags as strings, a ``day`` partition column, sorted by day, series, time
        (see :meth:`prepared`, of which this is the whole in one table)."""
        schema, parts = Lake.prepared(table, rows=None)
        return pa.Table.from_batches([b for t in parts for b in t.to_batches()], schema=schema)

    @staticmethod
    def prepared(table: pa.Table, rows: int | None) -> tuple[pa.Schema, Iterator[pa.Table]]:
        """The storage form of ``table`` as its schema and an iterator of consecutive slices of
        about ``rows`` rows (None: one slice), made one at a time: tags as strings, a ``day``
        partition column, sorted by day, series, time, rows of one series and time merged (later
        fields win). A writer that consumes the slices in turn never holds a sorted copy of the
        whole batch.

        The sort runs on integers (tag dictionary ranks and nanoseconds, ``np.lexsort``), not on
        strings, and day labels are formatted once per distinct day. Slices end only between
        different (series, time), so merging within a slice merges every duplicate."""
        tags = [f.name for f in table.schema if is_tag(f.type)]
        ns = table[TIME].cast(pa.int64()).to_numpy()
        day = ns // NS_PER_DAY
        keys: list[np.ndarray] = [ns]
        if tags:
            table = table.unify_dictionaries()
        for t in reversed(tags):
            arr = table[t].combine_chunks()
            if not isinstance(arr, pa.DictionaryArray):
                arr = arr.dictionary_encode()
            rank = pc.rank(arr.dictionary, sort_keys="ascending", tiebreaker="dense").to_numpy()
            codes = pc.fill_null(arr.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
            if not len(rank):  # every value null (an empty dictionary)
                keys.append(np.zeros(len(codes), dtype=np.int64))
                continue
            keys.append(np.where(codes < 0, 0, rank[np.maximum(codes, 0)]))
        keys.append(day)
        order = np.lexsort(keys)
        days, inverse = np.unique(day[order], return_inverse=True)
        labels = pc.strftime(pa.array(days * NS_PER_DAY, pa.int64()).cast(TIME_TYPE), format="%Y-%m-%d")
        # same series and time sort next to each other (lexsort is stable: arrival order kept)
        n = len(order)
        same = np.ones(max(n - 1, 0), dtype=bool)
        for k in keys[:-1]:
            ks = k[order]
            same &= ks[1:] == ks[:-1]
        del keys, ns, day
        schema = for_storage(table.slice(0, 0)).schema.append(pa.field(DAY, pa.string()))
        # slice ends: every ``rows`` rows, moved on to the next change of (series, time)
        ends = [n]
        if rows is not None and n > rows:
            free = np.flatnonzero(~same) + 1  # a slice may end before these rows
            at = np.searchsorted(free, np.arange(rows, n, rows), side="left")
            ends = sorted({int(free[i]) for i in at.tolist() if i < len(free)} | {n})

        def parts() -> Iterator[pa.Table]:
            a = 0
            for b in ends:
                idx = order[a:b]
                t = for_storage(table.take(pa.array(idx)))
                day_col = pa.DictionaryArray.from_arrays(pa.array(inverse[a:b], pa.int32()), labels)
                t = t.append_column(DAY, day_col.cast(pa.string()))
                if same[a : max(b - 1, a)].any():  # a point written again: later fields win (merge)
                    t = dedup_sorted(t, tags).select(schema.names).cast(schema)
                yield t
                a = b

        return schema, parts()

    def append(
        self, bucket: str, measurement: str, table: pa.Table | Pieces, offset: int | None, app_id: str = APP_ID
    ) -> int:
        """Commit ``table`` (batch form, or :class:`Pieces` of it); record ``offset`` of
        ``app_id`` atomically when given.
        A batch whose ``offset`` is at or below the one already recorded is skipped (stored once).
        Returns the new version.

        The batch is written as Parquet files by :meth:`_write_files` (a slice at a time, ~1x the
        data in memory) and committed with their add actions (a new table is created with them,
        version 0). New columns are first committed with no rows (and no offset) by delta-rs's
        writer, which merges the schema; a column whose type clashes with the stored one raises
        :class:`TypeConflictError` (delta-rs's writer refuses it, nothing is stored). A batch with
        columns Delta stores differently from Parquet (timestamps, narrow unsigned integers) is
        written by delta-rs's writer, fed a slice at a time (it holds ~3-4x the batch while
        writing)."""
        path = self.path(bucket, measurement)
        path.parent.mkdir(parents=True, exist_ok=True)
        commit = CommitProperties(
            app_transactions=[Transaction(app_id=app_id, version=offset)] if offset is not None else None
        )
        files: _Files | None = None
        empty = table.schema.empty_table()
        storage = for_storage(empty).schema  # the batch's columns as stored
        plain = all(_plain(f.type) for f in storage)
        with self.lock(bucket, measurement):
            try:
                for attempt in range(COMMIT_ATTEMPTS):
                    dt = self._table(bucket, measurement)
                    if dt is not None:
                        dt.update_incremental()  # other processes may write this table (workers)
                    if offset is not None and dt is not None:  # already stored (a replay): store once
                        done = dt.transaction_version(app_id)
                        if done is not None and offset <= int(done):
                            return int(dt.version())
                    try:
                        if not plain:
                            self._write_merging(path, dt, table, commit)
                            break
                        if dt is not None and not _fits(dt, storage):
                            # new columns: the schema first (a commit of no rows, no offset)
                            self._write_merging(path, dt, empty, None)
                            self._tables.pop((bucket, measurement), None)
                            dt = self._table(bucket, measurement)
                            assert dt is not None
                            if not _fits(dt, storage):  # a type clash: delta-rs's writer refuses it
                                self._write_merging(path, dt, table, commit)
                                break
                        if files is None:
                            files = self._write_files(path, table)
                        if dt is None:  # a new table, created with the files (version 0)
                            create_table_with_add_actions(
                                str(path), files.schema, files.actions, mode="error",
                                partition_by=[DAY], commit_properties=commit,
                            )
                        else:
                            dt.create_write_transaction(
                                list[AddAction | RemoveAction](files.actions), mode="append",
                                schema=dt.schema(), partition_by=[DAY], commit_properties=commit,
                            )
                        files = None  # committed: the table's now
                        break
                    except Exception as exc:  # delta-rs: a generic error for a column type clash
                        if "Cast error" in str(exc) or "Schema error" in str(exc):
                            raise TypeConflictError(
                                f"{bucket}/{measurement}: a column's type conflicts with the stored one: {exc}",
                                bucket=bucket,
                                measurement=measurement,
                            ) from exc
                        if attempt + 1 < COMMIT_ATTEMPTS and _concurrent_commit(exc):
                            # another process committed (or created the table) first: look again
                            # (files already written are committed as they are)
                            self._tables.pop((bucket, measurement), None)
                            time.sleep(0.01 * (attempt + 1))
                            continue
                        raise
            finally:
                if files is not None:  # maybe not committed (skipped as a replay, or an error)
                    # a commit can fail after its log entry is durable (e.g. in a post-commit
                    # hook): only files the table does not reference are removed
                    files.remove_uncommitted(path)
            self._tables.pop((bucket, measurement), None)
            return self.version(bucket, measurement)

    def _prepared(self, table: pa.Table | Pieces) -> tuple[pa.Schema, Iterator[pa.Table]]:
        """:meth:`prepared` of a batch, or of each of its pieces in turn."""
        if isinstance(table, pa.Table):
            return self.prepared(table, PREPARE_ROWS)
        schema, _ = self.prepared(table.schema.empty_table(), PREPARE_ROWS)
        return schema, (part for piece in table.read() for part in self.prepared(piece, PREPARE_ROWS)[1])

    def _write_merging(
        self, path: Path, dt: DeltaTable | None, table: pa.Table | Pieces, commit: CommitProperties | None
    ) -> None:
        """delta-rs's writer, merging new columns into the table's schema (creates the table)."""
        # prepared a slice at a time as the writer reads it (again on each attempt)
        schema, parts = self._prepared(table)
        data = pa.RecordBatchReader.from_batches(schema, (b for t in parts for b in t.to_batches()))
        write_deltalake(
            dt if dt is not None else str(path),
            data,
            mode="append",
            partition_by=[DAY],
            schema_mode="merge",
            writer_properties=self._writer_properties(),
            commit_properties=commit,
        )

    def _write_files(self, path: Path, table: pa.Table | Pieces) -> _Files:
        """Write ``table`` in storage form as Parquet files under ``path`` (one per day, a new one
        past :data:`FILE_ROWS` rows), a prepared slice at a time; their add actions (with
        statistics) to commit. zstd at the store's level, ``time`` delta-encoded without a
        dictionary, one row group per slice of a day (at most :data:`PREPARE_ROWS` rows)."""
        return self._write_parts(path, *self._prepared(table))

    def _write_parts(
        self, path: Path, schema: pa.Schema, parts: Iterable[pa.Table], written_ms: int | None = None
    ) -> _Files:
        """Write storage-form ``parts`` (``schema``: with the ``day`` column; each part sorted,
        days in order) as Parquet files under ``path``; see :meth:`_write_files`.
        ``written_ms``: the files' write order (modification time) when they hold older writes
        (a compaction's output: its newest input's), instead of the time they are written."""
        data_schema = pa.schema([f for f in schema if f.name != DAY])
        has_time = TIME in data_schema.names
        out = _Files(path, DeltaSchema.from_arrow(schema), written_ms)
        current: _Open | None = None

        def close() -> None:
            nonlocal current
            if current is not None:
                done, current = current, None
                done.writer.close()
                out.add(done.rel, done.day, done.stats)

        try:
            for t in parts:
                if not t.num_rows:
                    continue
                runs = pc.run_end_encode(t[DAY].combine_chunks())
                ends = runs.run_ends.to_numpy().tolist()
                days = runs.values.to_pylist()
                a = 0
                for day, b in zip(days, ends, strict=True):
                    piece = t.slice(a, b - a).drop_columns([DAY])
                    a = b
                    if current is not None and (current.day != day or current.stats.rows >= FILE_ROWS):
                        close()
                    if current is None:
                        rel = f"{DAY}={day}/part-{len(out.actions):05d}-{uuid.uuid4()}-c000.zstd.parquet"
                        (path / rel).parent.mkdir(parents=True, exist_ok=True)
                        out.paths.append(path / rel)
                        w = pq.ParquetWriter(
                            str(path / rel),
                            data_schema,
                            compression="zstd",
                            compression_level=self.settings.compression_level,
                            use_dictionary=[n for n in data_schema.names if n != TIME],
                            column_encoding={TIME: "DELTA_BINARY_PACKED"} if has_time else None,
                            write_statistics=True,
                        )
                        current = _Open(day, w, rel, _Stats(data_schema))
                    current.writer.write_table(piece, row_group_size=max(piece.num_rows, 1))
                    current.stats.add(piece)
            close()
        except BaseException:
            if current is not None:
                current.writer.close()
            out.remove()
            raise
        return out

    # -- reading -------------------------------------------------------------------------------
    def dataset(self, bucket: str, measurement: str, version: int | None = None) -> Any:
        """A pyarrow dataset of the table at ``version`` (latest when None), or None."""
        p = self.path(bucket, measurement)
        if not (p / "_delta_log").is_dir():
            return None
        dt = DeltaTable(str(p), version=version) if version is not None else DeltaTable(str(p))
        return dt.to_pyarrow_dataset()

    def schema(self, bucket: str, measurement: str) -> pa.Schema | None:
        ds = self.dataset(bucket, measurement)
        return None if ds is None else ds.schema

    def read(
        self,
        bucket: str,
        measurement: str,
        start_ns: int | None = None,
        end_ns: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows with ``start_ns <= time < end_ns`` in read form (see :mod:`sensorium.store.base`):
        ``time`` as ``timestamp[ns, UTC]``, no ``day`` column. Day partitions outside the range
        are pruned by the filter."""
        ds = self.dataset(bucket, measurement)
        if ds is None:
            return pa.table({TIME: pa.array([], TIME_TYPE)})
        flt = None
        if start_ns is not None:
            flt = pads.field(TIME) >= start_ns
        if end_ns is not None:
            f2 = pads.field(TIME) < end_ns
            flt = f2 if flt is None else flt & f2
        names = [n for n in ds.schema.names if n != DAY]
        if columns is not None:
            names = [n for n in names if n in set(columns) or n == TIME]
        t = ds.to_table(columns=names, filter=flt)
        return t.set_column(t.schema.get_field_index(TIME), TIME, t[TIME].cast(TIME_TYPE))

    def drop_before(self, bucket: str, measurement: str, cutoff_ns: int) -> int:
        """Retention: delete rows with ``time < cutoff_ns`` (whole old day files are removed,
        the boundary day rewritten; :meth:`vacuum` frees the space). Returns rows removed."""
        dt = self._table(bucket, measurement)
        if dt is None:
            return 0
        with self.lock(bucket, measurement):
            dt.update_incremental()
            metrics = dt.delete(f"{TIME} < {int(cutoff_ns)}")
            self._tables.pop((bucket, measurement), None)
        return int(metrics.get("num_deleted_rows", 0) or 0)

    # -- maintenance ---------------------------------------------------------------------------
    def stats(self, bucket: str, measurement: str) -> TableStats:
        dt = self._table(bucket, measurement)
        if dt is None:
            return TableStats(bucket, measurement, 0, 0, 0, -1)
        dt.update_incremental()
        acts = pa.table(dt.get_add_actions(flatten=True))
        return TableStats(
            bucket,
            measurement,
            acts.num_rows,
            int(pc.sum(acts["size_bytes"]).as_py() or 0),
            int(pc.sum(acts["num_records"]).as_py() or 0),
            int(dt.version()),
        )

    def compact(
        self,
        bucket: str,
        measurement: str,
        tags: list[str],
        *,
        min_files: int | None = None,
        settled_s: float | None = None,
        now_ms: int | None = None,
        dedup: bool = True,
        max_rows: int | None = None,
    ) -> int:
        """Merge the small files of day partitions into larger sorted, de-duplicated (merged)
        ones, a bounded group at a time. Returns the number of partitions compacted.

        A file is *small* below half of ``max_rows`` (``store.compact_max_rows``) rows. A day is
        compacted once it holds ``>= min_files`` small files, or 2 or more small files none of
        its files younger than ``settled_s`` (a quiet partition with 2 or more files of which one
        is small, e.g. an old day that got a late rewrite). Its small files, in time order, are packed into groups of at most ``max_rows``
        rows; each group of 2 or more files is read, merged and written as new files, and the
        group's files removed, in one commit. A file that is not small is rewritten only when it
        holds a point (same series and time) of such a group — it then joins the group, and so
        does any file sharing a point with it, and so on — or of another file: each large file
        is looked at once (the files found clean are listed in the table's :data:`INSPECTED`
        file), reading only its keys and those of the files whose time range meets its own. So a point written twice merges however far apart the two writes were,
        and memory is bounded by a group (and the files it shares points with), not by the day:
        at 100 k series a day is ~10^9 points.

        Keeps the table's transaction versions (the WAL offset, the stream's checkpoint numbers).
        ``dedup=False``: rows are only sorted (by day, ``tags`` and time), every one kept (stream
        outputs, where a row is not keyed by series and time). Of two files, the one written later
        (modification time) holds the later writes: its fields win a merge."""
        min_files = min_files or self.settings.compact_min_files
        max_rows = max_rows or self.settings.compact_max_rows
        dt = self._table(bucket, measurement)
        if dt is None:
            return 0
        path = self.path(bucket, measurement)
        with self.lock(bucket, measurement):
            dt.update_incremental()
            odd = [f.name for f in pa.schema(dt.schema().to_arrow()) if f.name != DAY and not _plain(f.type)]
            if odd:  # the lake's writer keeps no statistics for these: readers would prune rows
                log.info("%s/%s not compacted: columns %s are not plain types", bucket, measurement, odd)
                return 0
            by_day = _files_by_day(pa.table(dt.get_add_actions(flatten=True)))
            quiet_before = None
            if settled_s is not None:
                quiet_before = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(settled_s * 1000)
            done = 0
            live = {f.path for fs in by_day.values() for f in fs}
            seen = self._inspected.get((bucket, measurement))
            if seen is None:
                seen = self._inspected[(bucket, measurement)] = _load_inspected(path)
                if not (path / INSPECTED).exists() and quiet_before is not None:
                    # a table compacted before the list existed (an upgrade): its settled files
                    # count as looked at (no scan of its whole history under the table's lock)
                    seen |= {f.path for fs in by_day.values() for f in fs if f.mtime <= quiet_before}
            seen &= live  # forget files gone
            before = set(seen)
            for day, files in sorted(by_day.items()):
                small = [f for f in files if 2 * f.rows < max_rows]
                due = len(small) >= min_files or (
                    quiet_before is not None and small and len(files) >= 2
                    and max(f.mtime for f in files) <= quiet_before
                )
                rewrote = False
                for group in _pack(small, max_rows) if due else []:
                    group = [f for f in group if f in files]  # an earlier group's closure took some
                    if len(group) < 2:
                        continue
                    members = self._closure(dt, day, group, files, tags) if dedup else group
                    seen |= self._rewrite(dt, path, day, members, files, tags, dedup)
                    rewrote = True
                # a large file (and, when due, a small one left out of the groups) is looked at
                # once: does it share a point with another file (a point written again, e.g. a
                # bulk load run twice)? Then the two are merged.
                for f in [f for f in files if dedup and (due or 2 * f.rows >= max_rows) and f.path not in seen]:
                    if f not in files:
                        continue  # merged already, with a file looked at before it
                    members = self._closure(dt, day, [f], files, tags)
                    if len(members) > 1:
                        seen |= self._rewrite(dt, path, day, members, files, tags, dedup)
                        rewrote = True
                    else:
                        seen.add(f.path)
                done += rewrote
            if seen != before:
                _save_inspected(path, seen)
            if done:
                self._tables.pop((bucket, measurement), None)
            return done

    @staticmethod
    def _day_dataset(dt: DeltaTable, day: str) -> tuple[Any, dict[str, Any]]:
        ds = dt.to_pyarrow_dataset()
        return ds, {f.path: f for f in ds.get_fragments(filter=pads.field(DAY) == day)}

    @staticmethod
    def _read(ds: Any, frags: dict[str, Any], fs: list[_File], columns: list[str] | None = None, flt: Any = None) -> pa.Table:
        sub = pads.FileSystemDataset([frags[f.path] for f in fs], ds.schema, ds.format, ds.filesystem)
        # one thread: compaction is background work, and Arrow's pool would take every core from
        # the stream and ingest while it decodes (an alert-latency stall at every maintenance)
        return sub.to_table(columns=columns, filter=flt, use_threads=False)

    def _closure(self, dt: DeltaTable, day: str, start: list[_File], files: list[_File], tags: list[str]) -> list[_File]:
        """``start`` and every file of ``files`` linked to it by shared points (series and time),
        directly or through another such file: what a merge must rewrite together, so that no
        file left out holds a point of the result (whose write order is then its own)."""
        # read once, when a file first needs looking at (the table does not change meanwhile)
        view = functools.cache(lambda: self._day_dataset(dt, day))
        members, frontier = list(start), list(start)
        while frontier:
            inside = {f.path for f in members}
            frontier = self._sharing(view, frontier, [f for f in files if f.path not in inside], tags)
            members += frontier
        return members

    def _sharing(
        self, view: Callable[[], tuple[Any, dict[str, Any]]], group: list[_File], others: list[_File], tags: list[str]
    ) -> list[_File]:
        """The ``others`` that hold a point (series and time) of ``group``: only files whose time
        range meets the group's are read, and only their keys in that range."""
        import polars as pl

        lo, hi = min(f.tmin for f in group), max(f.tmax for f in group)
        near = [f for f in others if f.tmin <= hi and f.tmax >= lo]
        if not near:
            return []
        ds, frags = view()
        keys = [c for c in (*tags, TIME) if c in ds.schema.names]

        def hashes(t: pa.Table) -> pl.Series:  # 8 bytes a point (a collision only costs a merge)
            return pl.DataFrame(t).hash_rows(seed=0)

        # only the group's points where a near file has points too: files flushed one after
        # another meet at their ends only, so this is a few rows of each, not all of them
        a, b = max(lo, min(f.tmin for f in near)), min(hi, max(f.tmax for f in near))
        mine = pl.concat(
            [hashes(self._read(ds, frags, [f], keys, (pads.field(TIME) >= a) & (pads.field(TIME) <= b))) for f in group]
        ).unique()
        span = (pads.field(TIME) >= lo) & (pads.field(TIME) <= hi)
        out = [f for f in near if mine.len() and hashes(self._read(ds, frags, [f], keys, span)).is_in(mine).any()]
        del mine
        trim_heap(force=True)
        return out

    def _rewrite(
        self,
        dt: DeltaTable,
        path: Path,
        day: str,
        members: list[_File],
        files: list[_File],
        tags: list[str],
        dedup: bool,
    ) -> set[str]:
        """Rewrite ``members`` (files of ``day``) as sorted (with ``dedup``: merged) files and
        remove them, in one commit; ``files`` is updated (members out, the new files in).
        Returns the new files' paths."""
        ds, frags = self._day_dataset(dt, day)
        members = sorted(members, key=lambda f: (f.mtime, f.seq))  # older writes first: later fields win
        schema = pa.schema([f.with_type(pa.string()) if f.name == DAY else f for f in ds.schema])
        part = pa.concat_tables([self._read(ds, frags, [f]).cast(schema) for f in members])
        if dedup:  # back to batch form: sorted and merged a slice at a time, as appends are
            batch = _batch_form(part.drop_columns([DAY]), tags)
            del part
            parts: Iterator[pa.Table] = (p.select(schema.names).cast(schema) for p in self.prepared(batch, PREPARE_ROWS)[1])
        else:
            part = sorted_rows(part, tags)
            parts = (part.slice(i, PREPARE_ROWS) for i in range(0, part.num_rows, PREPARE_ROWS))
        # the output holds writes up to its newest input's: a file written meanwhile (another
        # process, or this one's flush) is newer, whatever the time this output is written
        out = self._write_parts(path, schema, parts, written_ms=max(f.mtime for f in members))
        del parts
        now = int(time.time() * 1000)
        removes = [RemoveAction(f.path, True, now, f.size, {DAY: day}) for f in members]
        try:
            dt.create_write_transaction(
                list[AddAction | RemoveAction]([*out.actions, *removes]), mode="append",
                schema=dt.schema(), partition_by=[DAY],
            )
        except BaseException:
            out.remove_uncommitted(path)
            raise
        dt.update_incremental()
        trim_heap(force=True)  # the group's buffers, before the next group is read
        gone = {f.path for f in members}
        new = [
            _File(a.path, day, s.rows, a.size, s.lo.get(TIME, _MIN), s.hi.get(TIME, _MAX), a.modification_time, 0)
            for a, s in zip(out.actions, out.stats, strict=True)
        ]
        files[:] = [f for f in files if f.path not in gone] + new
        return {f.path for f in new}

    def vacuum(self, bucket: str, measurement: str, retention_hours: float = 1.0) -> int:
        dt = self._table(bucket, measurement)
        if dt is None:
            return 0
        with self.lock(bucket, measurement):
            removed = dt.vacuum(
                retention_hours=int(retention_hours),
                enforce_retention_duration=False,
                dry_run=False,
            )
            dt.cleanup_metadata()
        return len(removed)


_MIN, _MAX = -(2**63), 2**63 - 1  # a file without time statistics spans all time


class _File(NamedTuple):
    """A data file of a day partition, as compaction sees it."""

    path: str
    day: str
    rows: int
    size: int
    tmin: int  # time range (statistics; unknown: all time)
    tmax: int
    mtime: int  # modification time (ms): the order of writes
    seq: int  # place in the table's file list (ties of mtime)


def _files_by_day(acts: pa.Table) -> dict[str, list[_File]]:
    """The table's data files (its add actions) by day partition."""
    part_col = "partition.day"
    if acts.num_rows == 0 or part_col not in acts.column_names:
        return {}

    def ints(name: str, default: int) -> list[int]:
        if name not in acts.column_names:
            return [default] * acts.num_rows
        col = acts[name]
        if not pa.types.is_integer(col.type):
            col = col.cast(pa.int64())
        return [default if v is None else int(v) for v in col.to_pylist()]

    out: dict[str, list[_File]] = {}
    for i, (path, day, rows, size, lo, hi, mtime) in enumerate(zip(
        acts["path"].to_pylist(), acts[part_col].to_pylist(), ints("num_records", 0),
        ints("size_bytes", 0), ints(f"min.{TIME}", _MIN), ints(f"max.{TIME}", _MAX),
        ints("modification_time", 0), strict=True,
    )):
        out.setdefault(day, []).append(_File(path, day, rows, size, lo, hi, mtime, i))
    return out


#: the files compaction found sharing no point with another (a table's own, not Delta's: a name
#: starting with "_" is left alone by vacuum)
INSPECTED = "_sensorium_inspected.txt"


def _load_inspected(table_path: Path) -> set[str]:
    try:
        return set((table_path / INSPECTED).read_text().split("\n")) - {""}
    except FileNotFoundError:
        return set()


def _save_inspected(table_path: Path, paths: set[str]) -> None:
    tmp = table_path / f"{INSPECTED}.{os.getpid()}.tmp"
    tmp.write_text("".join(p + "\n" for p in sorted(paths)))
    tmp.replace(table_path / INSPECTED)  # a crash leaves the old list: files are looked at again


def _pack(small: list[_File], max_rows: int) -> list[list[_File]]:
    """Small files in time order, packed into runs of at most ``max_rows`` rows; the runs of 2
    or more files (a file alone is already sorted and merged)."""
    groups: list[list[_File]] = []
    cur: list[_File] = []
    rows = 0
    for f in sorted(small, key=lambda f: (f.tmin, f.tmax, f.seq)):
        if cur and rows + f.rows > max_rows:
            groups.append(cur)
            cur, rows = [], 0
        cur.append(f)
        rows += f.rows
    groups.append(cur)
    return [g for g in groups if len(g) >= 2]


def _batch_form(t: pa.Table, tags: list[str]) -> pa.Table:
    """Storage-form rows (no ``day``) as a batch: ``tags`` dictionary-encoded, ``time`` a
    timestamp (what :meth:`Lake.prepared` sorts and merges)."""
    for name in tags:
        if name in t.column_names:
            t = t.set_column(t.schema.get_field_index(name), name, pc.dictionary_encode(t[name]).cast(TAG_TYPE))
    return t.set_column(t.schema.get_field_index(TIME), TIME, t[TIME].cast(TIME_TYPE))


def sorted_rows(part: pa.Table, keys: list[str]) -> pa.Table:
    """Rows sorted by day, the ``keys`` the table has, and time (stable: ties keep their order)."""
    order = [(c, "ascending") for c in (DAY, *keys, TIME) if c in part.column_names]
    return part.sort_by(order) if order else part


def dedup_sorted(part: pa.Table, tags: list[str]) -> pa.Table:
    """Sort storage-form rows by (day,) series and time; rows of one series and time merge into
    one (later fields win, earlier ones fill the gaps)."""
    import polars as pl

    tags = [t for t in tags if t in part.column_names]
    df = pl.from_arrow(part)
    assert isinstance(df, pl.DataFrame)
    keys = [TIME, *tags]
    dup = df.select(pl.struct(keys).is_duplicated()).to_series()
    if dup.any():  # same series and time: later fields win, earlier ones fill the gaps
        others = [c for c in df.columns if c not in keys]
        merged = (
            df.filter(dup)
            .group_by(keys, maintain_order=True)
            .agg([pl.col(c).drop_nulls().last() for c in others])
            .select(df.columns)
        )
        df = pl.concat([df.filter(~dup), merged], how="vertical_relaxed")
    order = [c for c in (DAY, *tags, TIME) if c in df.columns]
    df = df.sort(order, nulls_last=False)
    return df.to_arrow()


def _fits(dt: DeltaTable, storage: pa.Schema) -> bool:
    """Whether a batch whose columns are stored as ``storage`` can be committed without a schema
    change: the table is partitioned by day and has every one of them with the same type."""
    if list(dt.metadata().partition_columns) != [DAY]:
        return False
    have = {f.name: f.type for f in dt.schema().fields}
    want = DeltaSchema.from_arrow(storage)
    return all(f.name in have and f.name != DAY and have[f.name] == f.type for f in want.fields)


def _plain(t: pa.DataType) -> bool:
    """A type Parquet stores as Delta reads it, with no conversion (not so timestamps, which
    Delta keeps in microseconds, or unsigned integers: delta-rs's writer converts those)."""
    return (
        pa.types.is_signed_integer(t)
        or pa.types.is_floating(t)
        or pa.types.is_boolean(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
    )


class _Open(NamedTuple):
    """The file :meth:`Lake._write_files` is writing."""

    day: str
    writer: pq.ParquetWriter
    rel: str  # path in the table
    stats: _Stats


class _Stats:
    """Delta file statistics (``numRecords``, ``minValues``, ``maxValues``, ``nullCount``) of
    the pieces written to one file, merged as they come — as delta-rs's writer makes them:
    min/max of numbers (NaN skipped; an infinity is written as null), booleans and strings, null
    counts of every column but binary ones. A reader (delta-rs's ``to_pyarrow_dataset``) turns a
    missing min/max of a column that other files have into a guarantee that prunes the file for
    any filter on it, so no column with values is left without its range."""

    def __init__(self, schema: pa.Schema) -> None:
        self.rows = 0
        self.nulls = {f.name: 0 for f in schema if not pa.types.is_binary(f.type)}
        self.lo: dict[str, Any] = {}
        self.hi: dict[str, Any] = {}
        self._ranged = [
            f.name for f in schema
            if pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type)
            or pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
        ]

    def add(self, piece: pa.Table) -> None:
        self.rows += piece.num_rows
        for name in self.nulls:
            self.nulls[name] += piece[name].null_count
        for name in self._ranged:
            mm = pc.min_max(piece[name]).as_py()
            lo, hi = mm["min"], mm["max"]
            if lo is None or (isinstance(lo, float) and lo != lo):
                continue  # all null (or all NaN) here
            self.lo[name] = lo if name not in self.lo else min(self.lo[name], lo)
            self.hi[name] = hi if name not in self.hi else max(self.hi[name], hi)

    def json(self) -> str:
        return orjson.dumps({
            "numRecords": self.rows,
            "minValues": self.lo,
            "maxValues": self.hi,
            "nullCount": self.nulls,
        }).decode()


_order_lock = threading.Lock()
_last_ms = 0


def _write_order(mtime_ms: int) -> int:
    """A file's modification time, later than every earlier file's of this process (compaction
    merges files in this order: within a millisecond, file system times would tie)."""
    global _last_ms
    with _order_lock:
        _last_ms = max(mtime_ms, _last_ms + 1)
        return _last_ms


class _Files:
    """Parquet files written for one commit, and their add actions."""

    def __init__(self, root: Path, schema: DeltaSchema, written_ms: int | None = None) -> None:
        self.root = root
        self.written_ms = written_ms
        self.schema = schema  # of the files, with the partition column (for a new table)
        self.paths: list[Path] = []
        self.actions: list[AddAction] = []
        self.stats: list[_Stats] = []  # of each action's file

    def add(self, rel: str, day: str, stats: _Stats) -> None:
        full = self.root / rel
        st = full.stat()
        self.stats.append(stats)
        self.actions.append(
            AddAction(
                rel, st.st_size, {DAY: day},
                _write_order(int(st.st_mtime * 1000)) if self.written_ms is None else self.written_ms,
                True, stats.json(),
            )
        )

    def remove(self) -> None:
        for p in self.paths:
            p.unlink(missing_ok=True)

    def remove_uncommitted(self, table_path: Path) -> None:
        """Remove the files the table at ``table_path`` does not reference (all kept when the
        table cannot be read: an orphan file wastes space, a removed committed one loses rows)."""
        try:
            acts = pa.table(DeltaTable(str(table_path)).get_add_actions(flatten=True))
            committed = {str(table_path / p) for p in acts["path"].to_pylist()}
        except Exception:  # noqa: BLE001 - keep everything
            log.warning("could not read %s to clean up uncommitted files; kept them", table_path,
                        exc_info=True)
            return
        for p in self.paths:
            if str(p) not in committed:
                p.unlink(missing_ok=True)
