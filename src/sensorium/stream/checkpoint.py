"""Atomic checkpoints of the stream: stage state, log offset and undelivered outputs, together.

A checkpoint is one file, written to a temporary name, fsynced, then renamed over the previous
one (and the directory fsynced), so a crash leaves either the old or the new checkpoint, never a
mix. State is plain data (Arrow tables, Polars frames, NumPy arrays, bytes, numbers) serialised
with pickle; the file is only ever read back by the process that owns the data directory.

Format 2: the file is a sequence of pickles, a header (offset, series, outbox, the stage ids) and
then one ``(step_id, state)`` per stage, each stage's state taken only when its turn comes and
dropped once written: the memory a checkpoint needs is one stage's state, not all of them (with
100 k series, ~180 MB of copies at once were a peak of the process). Format 1 (one pickle of
everything) is still read.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sensorium.errors import SensoriumError

FORMAT = 2
NAME = "checkpoint.pkl"


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
                data = pickle.load(fh)
                if isinstance(data, dict) and data.get("format") == FORMAT:
                    stages: dict[str, Any] = {}
                    for _ in data.pop("stage_ids"):
                        step_id, st = pickle.load(fh)
                        stages[step_id] = st
                    data["stages"] = stages
        except Exception as exc:  # a checkpoint is renamed into place whole; this is not a torn write
            raise CheckpointError(
                f"stream checkpoint {self.path} cannot be read ({exc}); move it away to rebuild "
                "the stream state from the log"
            ) from None
        if not isinstance(data, dict) or data.get("format") not in (1, FORMAT):
            raise CheckpointError(f"stream checkpoint {self.path} has an unknown format")
        return data

    def save(self, state: dict[str, Any], stages: Mapping[str, Callable[[], Any]] | None = None) -> int:
        """Write ``state`` and the states of ``stages`` (step id -> function returning its state,
        called one at a time while writing) atomically; returns the bytes written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        stages = stages or {}
        with tmp.open("wb") as fh:
            # streamed to the file (not built as one bytes object first: with 100 k series the
            # state is a few hundred MB, and a second copy of it was the process's peak)
            pickle.dump({**state, "format": FORMAT, "stage_ids": list(stages)}, fh, protocol=pickle.HIGHEST_PROTOCOL)
            for step_id, take in stages.items():
                pickle.dump((step_id, take()), fh, protocol=pickle.HIGHEST_PROTOCOL)
            fh.flush()
            os.fsync(fh.fileno())
            size = fh.tell()
        os.replace(tmp, self.path)
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return size
