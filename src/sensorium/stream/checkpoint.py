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
it loads as a list. Format 4: a large array its owner never changes again, marked
:class:`Frozen` (the raw values of an open window, in blocks), is written once to a file of its own
under ``arrays/`` and named by every later checkpoint that still holds it — with a minute of
100 k points/s open, a checkpoint writes the last seconds' values, not the minute's ~300 MB again.
Array files are synced before the checkpoint that names them, and removed once a checkpoint that
no longer names them is in place. Formats 1 (one pickle of everything), 2 (no parts) and 3 (no
array files) are still read.
"""

from __future__ import annotations

import os
import pickle
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sensorium.errors import SensoriumError

FORMAT = 4
NAME = "checkpoint.pkl"
ARRAYS = "arrays"
_END = "sensorium.checkpoint.parts.end"
#: Smaller :class:`Frozen` arrays are pickled in the checkpoint itself (a file each would cost more).
FROZEN_MIN_BYTES = 1 << 20


class Frozen:
    """Marks an array of stage state that its owner never changes again (in place or otherwise:
    new rows make new arrays). A checkpoint writes it to a file of its own the first time and only
    names the file after that (see the module docs). Pickled outside a checkpoint, it is the array."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __reduce__(self) -> tuple[Any, ...]:
        return (_itself, (self.array,))


def _itself(x: Any) -> Any:
    return x


def _array_slot(name: str) -> np.ndarray:
    raise CheckpointError("checkpoint array files can only be read by CheckpointStore.load")


@dataclass
class Written:
    """A checkpoint written by :meth:`CheckpointStore.write`, not yet committed."""

    size: int
    arrays: set[str] = field(default_factory=set)  # the array files it names
    new: dict[int, tuple[str, np.ndarray]] = field(default_factory=dict)  # of which not yet written


class _Arrays:
    """The ``arrays/`` directory: one ``.npy`` file per :class:`Frozen` array, remembered by the
    array's identity (a weak reference: an id reused by another array is not mistaken for it)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._known: dict[int, tuple[weakref.ref[np.ndarray], str]] = {}

    def name_of(self, a: np.ndarray, written: Written) -> str:
        """The file name of ``a`` in ``written``: its file's if a committed checkpoint wrote one,
        else a new name, written at :meth:`write_new` (the array does not change meanwhile)."""
        hit = self._known.get(id(a))
        if hit is not None and hit[0]() is a:
            name = hit[1]
        elif id(a) in written.new:
            name = written.new[id(a)][0]
        else:
            name = f"{uuid.uuid4().hex}.npy"
            written.new[id(a)] = (name, a)
        written.arrays.add(name)
        return name

    def write_new(self, written: Written) -> None:
        """Write and sync the files ``written`` names first; from now on they are known."""
        if not written.new:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for name, a in written.new.values():
            _save_npy(self.dir / name, a)
        _fsync(self.dir)
        for name, a in written.new.values():
            self._known[id(a)] = (weakref.ref(a), name)
        written.new = {}

    def load(self, name: str, names: set[str]) -> np.ndarray:
        a = np.load(self.dir / name, allow_pickle=False)
        self._known[id(a)] = (weakref.ref(a), name)
        names.add(name)
        return a

    def keep_only(self, names: set[str]) -> None:
        """Remove the files (and forget the arrays) a committed checkpoint does not name."""
        self._known = {k: v for k, v in self._known.items() if v[1] in names and v[0]() is not None}
        if self.dir.is_dir():
            for f in self.dir.iterdir():
                if f.name not in names:
                    f.unlink(missing_ok=True)


def _save_npy(path: Path, a: np.ndarray) -> None:
    """``np.save`` with the data written by one unbuffered ``write`` (which lets go of the GIL
    while the disk works; ``np.save`` writes files with ``ndarray.tofile``, which holds it: a
    checkpoint's blocks of a busy minute held the stream thread up for seconds), then synced."""
    a = np.ascontiguousarray(a)
    with path.open("wb", buffering=0) as fh:
        np.lib.format.write_array_header_1_0(fh, np.lib.format.header_data_from_array_1_0(a))
        view = a.reshape(-1).view(np.uint8).data
        while len(view):
            n = fh.write(view)
            view = view[n:]
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    def __init__(self, fh: Any, arrays: _Arrays | None = None, written: Written | None = None) -> None:
        super().__init__(fh, protocol=pickle.HIGHEST_PROTOCOL)
        self.fh = fh
        self.parts: list[Parts] = []
        self.arrays, self.written = arrays, written

    def reducer_override(self, obj: Any) -> Any:  # not called for str, list, dict, int, ...: cheap
        if type(obj) is Parts:
            self.parts.append(obj)
            return (_parts_slot, (len(self.parts) - 1,))
        if type(obj) is Frozen:
            a = obj.array
            if self.arrays is None or self.written is None or a.nbytes < FROZEN_MIN_BYTES or a.dtype.hasobject:
                return (_itself, (a,))
            return (_array_slot, (self.arrays.name_of(a, self.written),))
        return NotImplemented

    def dump_parts(self) -> None:
        parts, self.parts = self.parts, []
        for p in parts:
            for item in p:
                pickle.dump(item, self.fh, protocol=pickle.HIGHEST_PROTOCOL)
                del item
            pickle.dump(_END, self.fh, protocol=pickle.HIGHEST_PROTOCOL)


class _Unpickler(pickle.Unpickler):
    def __init__(self, fh: Any, arrays: _Arrays | None = None, names: set[str] | None = None) -> None:
        super().__init__(fh)
        self.fh = fh
        self.slots: list[list[Any]] = []
        self.arrays, self.names = arrays, names if names is not None else set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == (__name__, "_parts_slot"):
            return self._slot
        if (module, name) == (__name__, "_array_slot") and self.arrays is not None:
            arrays, names = self.arrays, self.names
            return lambda file: arrays.load(file, names)
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
        self._arrays = _Arrays(self.dir / ARRAYS)

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when there is none (``stages`` holds each stage's state)."""
        if not self.path.exists():
            return None
        names: set[str] = set()  # the array files it names
        try:
            with self.path.open("rb") as fh:
                head = _Unpickler(fh, self._arrays, names)
                data = head.load()
                head.load_parts()
                if isinstance(data, dict) and data.get("format") in (2, 3, FORMAT):
                    stages: dict[str, Any] = {}
                    for _ in data.pop("stage_ids"):
                        u = _Unpickler(fh, self._arrays, names)
                        step_id, st = u.load()
                        u.load_parts()
                        stages[step_id] = st
                    data["stages"] = stages
        except Exception as exc:  # a checkpoint is renamed into place whole; this is not a torn write
            raise CheckpointError(
                f"stream checkpoint {self.path} cannot be read ({exc}); move it away to rebuild "
                "the stream state from the log"
            ) from None
        if not isinstance(data, dict) or data.get("format") not in (1, 2, 3, FORMAT):
            raise CheckpointError(f"stream checkpoint {self.path} has an unknown format")
        self._arrays.keep_only(names)  # files of a checkpoint that was written but never put in place
        return data

    def save(self, state: dict[str, Any], stages: Mapping[str, Callable[[], Any]] | None = None) -> int:
        """Write ``state`` and the states of ``stages`` (step id -> function returning its state,
        called one at a time while writing) atomically; returns the bytes written."""
        return self.commit(self.write(state, stages))

    def write(self, state: dict[str, Any], stages: Mapping[str, Callable[[], Any]] | None = None) -> Written:
        """The first half of :meth:`save`: pickle everything to the temporary file (the stages'
        states taken one at a time) and return its size. Nothing is durable or in place until
        :meth:`commit`, so a caller may let its state change again in between (the stream goes on
        while the file reaches the disk). :class:`Frozen` arrays no committed checkpoint wrote are
        only named here; :meth:`commit` writes their files."""
        self.dir.mkdir(parents=True, exist_ok=True)
        stages = stages or {}
        written = Written(0)
        with self._tmp.open("wb") as fh:
            # streamed to the file (not built as one bytes object first: with 100 k series the
            # state is a few hundred MB, and a second copy of it was the process's peak)
            p = _Pickler(fh, self._arrays, written)  # the header may hold parts too (the outbox, a table at a time)
            p.dump({**state, "format": FORMAT, "stage_ids": list(stages)})
            p.clear_memo()  # what was pickled is not kept alive while the parts are written
            p.dump_parts()
            del p
            for step_id, take in stages.items():
                p = _Pickler(fh, self._arrays, written)
                p.dump((step_id, take()))
                p.clear_memo()
                p.dump_parts()
                del p
            written.size = fh.tell()
        return written

    def commit(self, written: Written) -> int:
        """The second half of :meth:`save`: the array files :meth:`write` was the first to name
        written and synced, then its file made durable, renamed into place, the directory synced;
        then the array files it does not name removed. Returns the bytes written."""
        self._arrays.write_new(written)
        _fsync(self._tmp)
        os.replace(self._tmp, self.path)
        _fsync(self.dir)
        self._arrays.keep_only(written.arrays)
        return written.size

    @property
    def _tmp(self) -> Path:
        return self.path.with_suffix(".tmp")
