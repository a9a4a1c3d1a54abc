"""Atomic checkpoints of the stream: stage state, log offset and undelivered outputs, together.

A checkpoint is one file, written to a temporary name, fsynced, then renamed over the previous
one (and the directory fsynced), so a crash leaves either the old or the new checkpoint, never a
mix. State is plain data (Polars frames, NumPy arrays, bytes, numbers) serialised with pickle;
the file is only ever read back by the process that owns the data directory.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from sensorium.errors import SensoriumError

FORMAT = 1
NAME = "checkpoint.pkl"


class CheckpointError(SensoriumError):
    status = 500


class CheckpointStore:
    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.path = self.dir / NAME

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when there is none."""
        if not self.path.exists():
            return None
        try:
            with self.path.open("rb") as fh:
                data = pickle.load(fh)
        except Exception as exc:  # a checkpoint is renamed into place whole; this is not a torn write
            raise CheckpointError(
                f"stream checkpoint {self.path} cannot be read ({exc}); move it away to rebuild "
                "the stream state from the log"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"stream checkpoint {self.path} has an unknown format")
        return data

    def save(self, state: dict[str, Any]) -> int:
        """Write ``state`` atomically; returns the bytes written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            # streamed to the file (not built as one bytes object first: with 100 k series the
            # state is a few hundred MB, and a second copy of it was the process's peak)
            pickle.dump({**state, "format": FORMAT}, fh, protocol=pickle.HIGHEST_PROTOCOL)
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
