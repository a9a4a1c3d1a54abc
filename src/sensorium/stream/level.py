"""The running partials of a coarser rollup level, in memory or spilled to a file.

A coarser level (the hour and the day of ``1m, 1h, 1d``) keeps one partial per key and open
window, sorted by ``(kid, start)``, and is only touched when finer windows finish (a fold) or a
series' watermark passes one of its windows. At 100 k series x 4.4 fields each level holds ~90 MB
(~200 bytes per key with its percentile sketch), read once a minute and idle in between. A level
with a ``path`` keeps its rows in an Arrow IPC file there (a new file per change, the old one
removed), and only ``kid``/``start`` in memory (16 bytes per row, for the watermark checks); its
rows are read back a slice at a time, so neither the level nor two copies of it are ever in
memory whole. The file is a cache, not state: checkpoints hold the rows (:meth:`Level.batches`),
and a level restored from a checkpoint writes a new file.

Without a ``path`` the rows stay in memory as Polars frames (an operator used on its own).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

_gen = itertools.count()
_NONCE = uuid.uuid4().hex[:12]  # this process (a restarted container may get the same pid)


def spill_name() -> str:
    """The part of a spill file's name that says which process wrote it: ``<pid>-<nonce>``."""
    return f"{os.getpid()}-{_NONCE}"


def remove_orphans(directory: Path, pattern: str) -> None:
    """Remove the files matching ``pattern`` (names ``...<pid>-<nonce>-<n>.arrow``) left by
    processes that are gone: spill files are a cache of one process, and another live process on
    the host (a worker handing a partition over) may still be reading its own. A file with this
    process's pid but another nonce is from an earlier process that had the same pid."""
    for f in directory.glob(pattern):
        pid_s, _, rest = f.name.rsplit(".", 2)[-2].partition("-")
        nonce = rest.partition("-")[0]
        try:
            pid = int(pid_s)
        except ValueError:
            pid = -1
        if pid == os.getpid():
            if nonce == _NONCE:
                continue  # this process's (another runner of it may be finishing with them)
        elif pid > 0:
            try:
                os.kill(pid, 0)
                continue  # alive: its own
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # alive, someone else's
        f.unlink(missing_ok=True)


class Level:
    """Rows sorted by ``(kid, start)``; ``path`` (a file name prefix) spills them to disk."""

    def __init__(self, empty: pl.DataFrame, path: Path | None = None) -> None:
        self._empty = empty.clear()
        self.path = path
        self._frames: list[pl.DataFrame] = []  # in memory
        self._file: Path | None = None  # spilled: the current file
        self._offsets = np.zeros(1, dtype=np.int64)  # the first row of each of its batches, then the height
        self.kid = np.empty(0, dtype=np.int64)
        self.start = np.empty(0, dtype=np.int64)
        self._stale: list[Path] = []  # files taken, removed once read (or at the next commit)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_orphans(path.parent, f"{path.name}.*.arrow")  # a previous process's cache

    @property
    def height(self) -> int:
        return len(self.kid)

    def frame(self) -> pl.DataFrame:
        """All rows (read whole: for queries of open windows)."""
        if self._file is not None:
            with _Spill(self._file, self._offsets) as spill:
                parts = list(spill.rows(0, self.height))
        else:
            parts = self._frames
        return pl.concat(parts, rechunk=False) if parts else self._empty

    def batches(self) -> Iterator[pa.RecordBatch]:
        """All rows as Arrow record batches, one read at a time (for checkpoints)."""
        if self._file is None:
            for part in list(self._frames):
                yield from part.to_arrow().to_batches()
            return
        with _Spill(self._file, self._offsets) as spill:
            for b in range(len(self._offsets) - 1):
                yield spill.batch(b)

    def cursor(self) -> LevelCursor:
        """Hand the rows over, to be read forward by key, and leave the level empty (until a
        :meth:`writer` commits): what the cursor has read is released as it goes."""
        cur = LevelCursor(self.kid, self._offsets if self._file is not None else None,
                          self._frames, self._file, self._empty)
        if self._file is not None:
            self._stale.append(self._file)
        self._reset()
        return cur

    def _reset(self) -> None:
        self._frames = []
        self._file = None
        self._offsets = np.zeros(1, dtype=np.int64)
        self.kid = self.start = np.empty(0, dtype=np.int64)

    def writer(self) -> LevelWriter:
        """Where the level's next rows go, in order; :meth:`LevelWriter.commit` makes them the level."""
        return LevelWriter(self)

    def restore(self, data: pa.Table | pl.DataFrame | Iterable[pa.RecordBatch]) -> None:
        """Rows from a checkpoint (:meth:`batches` as loaded, or a table or frame)."""
        self.clear()
        w = self.writer()
        if isinstance(data, pl.DataFrame):
            w.add(data)
        elif isinstance(data, pa.Table):
            w.add(pl.DataFrame(pl.from_arrow(data)))
        else:
            for batch in data:
                w.add(pl.DataFrame(pl.from_arrow(batch)))
        w.commit()

    def clear(self) -> None:
        self.cursor().close()
        self._sweep()

    def _sweep(self) -> None:
        while self._stale:
            self._stale.pop().unlink(missing_ok=True)


class LevelCursor:
    """A level's rows handed over (see :meth:`Level.cursor`), read forward in key order."""

    def __init__(self, kid: np.ndarray, offsets: np.ndarray | None, frames: list[pl.DataFrame],
                 file: Path | None, empty: pl.DataFrame) -> None:
        self.kid = kid
        self.pos = 0
        self._empty = empty
        self._file = file
        self._spill = _Spill(file, offsets) if file is not None and offsets is not None else None
        self._frames: list[pl.DataFrame | None] = list(frames)
        self._starts = np.concatenate([[0], np.cumsum([f.height for f in frames], dtype=np.int64)])

    def until(self, kid: int) -> pl.DataFrame:
        """The rows not read yet whose kid is at most ``kid``."""
        return self._upto(int(np.searchsorted(self.kid, kid, side="right")))

    def rest(self) -> pl.DataFrame:
        """Every row not read yet."""
        return self._upto(len(self.kid))

    def rest_slices(self, rows: int) -> Iterator[pl.DataFrame]:
        """:meth:`rest` about ``rows`` rows at a time, each slice ending where a key's rows end."""
        n = len(self.kid)
        while self.pos < n:
            end = min(self.pos + rows, n)
            if end < n:
                end = int(np.searchsorted(self.kid, self.kid[end], side="left"))
                if end <= self.pos:  # one key with more rows than that
                    end = int(np.searchsorted(self.kid, self.kid[self.pos], side="right"))
            yield self._upto(end)

    def _upto(self, end: int) -> pl.DataFrame:
        lo = self.pos
        if end <= lo:
            return self._empty
        self.pos = end
        if self._spill is not None:
            parts = list(self._spill.rows(lo, end))
        else:
            parts = []
            for b in range(int(np.searchsorted(self._starts, lo, side="right")) - 1, len(self._frames)):
                b_lo, b_hi = int(self._starts[b]), int(self._starts[b + 1])
                if b_lo >= end:
                    break
                f = self._frames[b]
                assert f is not None
                parts.append(f.slice(max(lo, b_lo) - b_lo, min(end, b_hi) - max(lo, b_lo)))
                if b_hi <= end:
                    self._frames[b] = None  # read to its end: released with the caller's slice
        return pl.concat(parts, rechunk=False) if len(parts) > 1 else parts[0]

    def close(self) -> None:
        """Drop what was not read (and the spill file)."""
        self._frames = []
        if self._spill is not None:
            self._spill.__exit__()
            self._spill = None
        if self._file is not None:
            self._file.unlink(missing_ok=True)


class _Spill:
    """Reads rows of a spill file by row range (a batch read once, however many ranges it spans)."""

    def __init__(self, file: Path, offsets: np.ndarray) -> None:
        self.offsets = offsets
        self._src = pa.OSFile(str(file), "rb")  # read, not mapped: only what is asked is resident
        self._reader = pa.ipc.open_file(self._src)
        self._cached: tuple[int, pl.DataFrame | None] = (-1, None)

    def __enter__(self) -> _Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cached = (-1, None)
        self._src.close()

    def batch(self, b: int) -> pa.RecordBatch:
        return self._reader.get_batch(b)

    def rows(self, lo: int, hi: int) -> Iterator[pl.DataFrame]:
        """Rows ``lo:hi``, batch by batch (an empty range: one empty piece)."""
        offsets = self.offsets
        if hi <= lo:
            yield self._get(0).clear()
            return
        first = int(np.searchsorted(offsets, lo, side="right")) - 1
        for b in range(first, len(offsets) - 1):
            b_lo, b_hi = int(offsets[b]), int(offsets[b + 1])
            if b_lo >= hi:
                break
            part = self._get(b)
            s, e = max(lo, b_lo) - b_lo, min(hi, b_hi) - b_lo
            yield part if (s, e) == (0, b_hi - b_lo) else part.slice(s, e - s)

    def _get(self, b: int) -> pl.DataFrame:
        if self._cached[0] != b:
            self._cached = (-1, None)
            self._cached = (b, pl.DataFrame(pl.from_arrow(self._reader.get_batch(b))))
        part = self._cached[1]
        assert part is not None
        return part


class LevelWriter:
    """Rows of a level's next content, in order (a new spill file, or frames in memory)."""

    def __init__(self, level: Level) -> None:
        self.level = level
        self._frames: list[pl.DataFrame] = []
        self._kids: list[np.ndarray] = []
        self._starts: list[np.ndarray] = []
        self._sizes: list[int] = []
        self._sink: Any = None
        self._ipc: Any = None
        self._file: Path | None = None

    def add(self, part: pl.DataFrame) -> None:
        if not part.height:
            return
        self._kids.append(part.get_column("kid").to_numpy())
        self._starts.append(part.get_column("start").to_numpy())
        if self.level.path is None:
            self._frames.append(part)
            return
        table = part.to_arrow()
        if self._ipc is None:
            self._file = self.level.path.with_name(f"{self.level.path.name}.{spill_name()}-{next(_gen)}.arrow")
            self._sink = pa.OSFile(str(self._file), "wb")
            self._ipc = pa.ipc.new_file(self._sink, table.schema)
        for batch in table.to_batches():
            self._ipc.write_batch(batch)
            self._sizes.append(batch.num_rows)

    def commit(self) -> None:
        """The rows added become the level (its previous file removed)."""
        level = self.level
        if level._file is not None:
            level._stale.append(level._file)
        level._reset()
        level._sweep()
        if self._ipc is not None:
            self._ipc.close()
            self._sink.close()
            self._ipc = None
            level._file = self._file
            level._offsets = np.concatenate([[0], np.cumsum(self._sizes, dtype=np.int64)])
        level._frames = self._frames
        if self._kids:
            level.kid = np.concatenate(self._kids)
            level.start = np.concatenate(self._starts)
        self._frames, self._kids, self._starts = [], [], []

    def abort(self) -> None:
        """Drop what was added (the level stays as it was: empty if it was taken)."""
        if self._ipc is not None:
            self._ipc.close()
            self._sink.close()
            self._ipc = None
            assert self._file is not None
            self._file.unlink(missing_ok=True)
        self._frames, self._kids, self._starts = [], [], []
