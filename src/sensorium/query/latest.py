"""Last-value cache: per series, the newest value of each field and its time.

Writes only append to a pending list (cheap on the ingest path); reads fold pending batches in
with one vectorised group-by. A table's cache is seeded from the lake on first read.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import polars as pl
import pyarrow as pa

from sensorium.schema import RESERVED, TIME, for_storage

Key = tuple[str, str]


class LastValueCache:
    def __init__(self, seed: Callable[[Key], pa.Table | None], tags_of: Callable[[Key], list[str]]):
        self._seed = seed
        self._tags_of = tags_of
        self._lock = threading.Lock()
        self._state: dict[Key, pl.DataFrame] = {}
        self._pending: dict[Key, list[pa.Table]] = {}

    def update(self, key: Key, batch: pa.Table) -> None:
        with self._lock:
            self._pending.setdefault(key, []).append(batch)

    def _fold(self, key: Key) -> pl.DataFrame | None:
        with self._lock:
            pending = self._pending.pop(key, [])
            state = self._state.get(key)
        if state is None:
            seeded = self._seed(key)
            if seeded is not None and seeded.num_rows:
                state = pl.from_arrow(for_storage(seeded))  # type: ignore[assignment]
        frames = [state] if state is not None else []
        frames += [pl.from_arrow(for_storage(t)) for t in pending]  # type: ignore[misc]
        if not frames:
            return None
        df = pl.concat(frames, how="diagonal_relaxed")
        tags = [t for t in self._tags_of(key) if t in df.columns]
        fields = [c for c in df.columns if c not in RESERVED and c not in tags]
        df = df.sort(TIME)
        if tags:
            aggs = [pl.col(TIME).max()] + [pl.col(f).drop_nulls().last() for f in fields]
            df = df.group_by(tags, maintain_order=True).agg(aggs)
        else:
            df = df.select([pl.col(TIME).max()] + [pl.col(f).drop_nulls().last() for f in fields])
        with self._lock:
            self._state[key] = df
        return df

    def get(
        self, keys: list[Key], tag_filter: dict[str, str], tags_of: Callable[[Key], list[str]]
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for key in keys:
            df = self._fold(key)
            if df is None:
                continue
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
