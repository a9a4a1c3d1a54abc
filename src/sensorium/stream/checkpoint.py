"""Atomic checkpoints of the stream: stage state, log offset and undelivered outputs, together.

A checkpoint is one file, written to a temporary name, fsynced, then renamed over the previous
one (and the directory fsynced), so a crash leaves either the old or the new checkpoint, never a
mix. State is plain data (Arrow tables, Polars frames, NumPy arrays, bytes, numbers) serialised
with pickle; the file is only ever read back by the process that owns the data directory.

Format 3: the file is a sequence of pickles, a header (offset, series, outbox, the stage ids) and
then one ``(step_id, state)`` per stage, each stage's state taken only when its turn comes and
dropped once written: the memory a checkpoint needs is one stage's state, not all of them (with
100 k series, ~180 MB of copies at once were a peak of the process). A value of a state may be
:class:`Parts` (items produced one at a time, e.g. record batches read back from a spill file):
its items follow the stage's pickle, one pickle each, so only one is in memory while writing;
it loads as a list. Formats 1 (one pickle of everything) and 2 (no parts) are still read.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sensorium.errors import SensoriumError

FORMAT = 3
NAME = "checkpoint.pkl"
_END = "sensorium.checkpoint.parts.end"


class Parts:
    """A value of stage state written as a sequence of items (see the module docs); ``items`` is
    called once per write. Pickled on its own (outside a checkpoint) it is a list."""

    __slots__ = ("_items",)

    def __init__(self, items: Callable[[], Iterator[Any]]) -> None:
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return self._items()

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))


def _parts_slot(n: int) -> list[Any]:
    raise CheckpointError("checkpoint parts can only be read by CheckpointStore.load")


class _Pickler(pickle.Pickler):
    """Writes :class:`Parts` as a slot, then (:meth:`dump_parts`) their items one pickle each."""

    def __init__(self, fh: Any) -> None:
        super().__init__(fh, protocol=pickle.HIGHEST_PROTOCOL)
        self.fh = fh
        self.parts: list[Parts] = []

    def reducer_override(self, obj: Any) -> Any:  # not called for str, list, dict, int, ...: cheap
        if type(obj) is Parts:
            self.parts.append(obj)
            return (_parts_slot, (len(self.parts) - 1,))
        return NotImplemented

    def dump_parts(self) -> None:
        parts, self.parts = self.parts, []
        for p in parts:
            for item in p:
                pickle.dump(item, self.fh, protocol=pickle.HIGHEST_PROTOCOL)
                del item
            pickle.dump(_END, self.fh, protocol=pickle.HIGHEST_PROTOCOL)


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh: Any) -> None:
        super().__init__(fh)
        self.fh = fh
        self.slots: list[list[Any]] = []

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (__name__, "_parts_slot"):
            return self._slot
        return super().find_class(module, name)

    def _slot(self, n: int) -> list[Any]:
        # filled after the pickle is loaded: Parts may only be values of dicts and lists (a
        # container that copied the list while loading would keep it empty)
        if n != len(self.slots):
            raise CheckpointError(f"checkpoint parts out of order ({n} after {len(self.slots)})")
        self.slots.append([])
        return self.slots[-1]

    def load_parts(self) -> None:
        slots, self.slots = self.slots, []
        for slot in slots:
            while not (isinstance(item := pickle.load(self.fh), str) and item == _END):
                slot.append(item)


class CheckpointError(SensoriumError):
    status = 500


class CheckpointStore:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / NAME

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when there is none (``stages`` holds each stage's state)."""
        if not self.path.exists():
            return None
        try:
            with self.path.open("rb") as fh:
                head = _Unpickler(fh)
                data = head.load()
                head.load_parts()
                if isinstance(data, dict) and data.get("format") in (2, FORMAT):
                    stages: dict[str, Any] = {}
                    for _ in data.pop("stage_ids"):
                        u = _Unpickler(fh)
                        step_id, st = u.load()
                        u.load_parts()
                        stages[step_id] = st
                    data["stages"] = stages
        except Exception as exc:  # a checkpoint is renamed into place whole; this is not a torn write
            raise CheckpointError(
                f"stream checkpoint {self.path} cannot be read ({exc}); move it away to rebuild "
                "the stream state from the log"
            ) from None
        if not isinstance(data, dict) or data.get("format") not in (1, 2, FORMAT):
            raise CheckpointError(f"stream checkpoint {self.path} has an unknown format")
        return data

    def save(self, state: dict[str, Any], stages: Mapping[str, Callable[[], Any]] | None = None) -> int:
        """Write ``state`` and the states of ``stages`` (step id -> function returning its state,
        called one at a time while writing) atomically; returns the bytes written."""
        return self.commit(self.write(state, stages))

    def write(self, state: dict[str, Any], stages: Mapping[str, Callable[[], Any]] | None = None) -> int:
        """The first half of :meth:`save`: pickle everything to the temporary file (the stages'
        states taken one at a time) and return its size. Nothing is durable or in place until
        :meth:`commit`, so a caller may let its state change again in between (the stream goes on
        while the file reaches the disk)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        stages = stages or {}
        with self._tmp.open("wb") as fh:
            # streamed to the file (not built as one bytes object first: with 100 k series the
            # state is a few hundred MB, and a second copy of it was the process's peak)
            p = _Pickler(fh)  # the header may hold parts too (the outbox, a table at a time)
            p.dump({**state, "format": FORMAT, "stage_ids": list(stages)})
            p.clear_memo()  # what was pickled is not kept alive while the parts are written
            p.dump_parts()
            del p
            for step_id, take in stages.items():
                p = _Pickler(fh)
                p.dump((step_id, take()))
                p.clear_memo()
                p.dump_parts()
                del p
            return fh.tell()

    def commit(self, size: int) -> int:
        """The second half of :meth:`save`: the file written by :meth:`write` made durable and
        renamed into place (then the directory synced). Returns ``size``."""
        fd = os.open(self._tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, self.path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return size

    @property
    def _tmp(self) -> Path:
        return self.path.with_suffix(".tmp")
