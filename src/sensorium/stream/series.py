"""The series the stream has seen: key → bucket, measurement and tags (one Polars frame)."""

from __future__ import annotations

import numpy as np
import polars as pl

from sensorium.keyindex import NameIndex, append_rows, grow
from sensorium.stream.frame import empty_series

BASE = ("series", "bucket", "measurement")


class SeriesIndex:
    """``names``: the runner's series-name index (the framing's): with it, whether a series is new
    is a lookup of the batch's few new names' ids in a bitmap (O(new series)), not an anti-join
    against every series known (O(all series) per step: at 10 k series and a new device in every
    request, a measurable part of each step). The index gets every restored name first, so ids
    stay consistent after a restart."""

    def __init__(self, names: NameIndex | None = None) -> None:
        self.frame = empty_series()
        self._measurements: dict[str, set[str]] = {}  # bucket -> measurements, kept with frame
        self._names = names
        self._known = np.zeros(0, dtype=bool)  # by id in ``names``: in ``frame``

    def add(self, series: pl.DataFrame) -> int:
        """Remember new series; returns how many were new."""
        if not series.height:
            return 0
        if self._names is None:
            new = series.join(self.frame.select("series"), on="series", how="anti")
        else:
            new = series.unique(subset="series", keep="last", maintain_order=True)
            fresh = self._mark(new.get_column("series"))
            new = new.filter(pl.Series(fresh)) if not fresh.all() else new
        if new.height:
            self.frame = append_rows(self.frame, new)
            self._remember(new)
        return new.height

    def _remember(self, frame: pl.DataFrame) -> None:
        for b, m in frame.select("bucket", "measurement").unique().iter_rows():
            self._measurements.setdefault(b, set()).add(m)

    def __len__(self) -> int:
        return self.frame.height

    def attach(self, rows: pl.DataFrame) -> dict[tuple[str, str], tuple[pl.DataFrame, list[str]]]:
        """Split rows keyed by ``series`` per (bucket, measurement), with their tag columns.

        Returns ``{(bucket, measurement): (frame, tag names)}``; the frame keeps every column of
        ``rows`` except ``series`` and gains the tags that measurement has."""
        if not rows.height:
            return {}
        joined = rows.join(self.frame, on="series", how="left")
        out: dict[tuple[str, str], tuple[pl.DataFrame, list[str]]] = {}
        tag_cols = [c for c in self.frame.columns if c not in BASE]
        for (bucket, measurement), part in joined.partition_by(
            ["bucket", "measurement"], as_dict=True, maintain_order=True
        ).items():
            tags = [t for t in tag_cols if part.get_column(t).null_count() < part.height]
            keep = [c for c in rows.columns if c != "series"]
            out[(str(bucket), str(measurement))] = (part.select([*tags, *keep]), tags)
        return out

    def measurements(self, bucket: str) -> list[str]:
        return sorted(self._measurements.get(bucket, ()))

    def of(self, bucket: str, measurement: str) -> pl.Series:
        return self.frame.filter(
            (pl.col("bucket") == bucket) & (pl.col("measurement") == measurement)
        ).get_column("series")

    def state(self) -> pl.DataFrame:
        return self.frame

    def restore(self, frame: pl.DataFrame) -> None:
        self.frame = frame
        self._measurements = {}
        self._remember(frame)
        if self._names is not None:
            self._known = np.zeros(0, dtype=bool)
            if frame.height:
                self._mark(frame.get_column("series"))

    def _mark(self, names: pl.Series) -> np.ndarray:
        """Mark ``names`` (distinct) known; returns which of them were not known before."""
        assert self._names is not None
        ids = self._names.ids(names)
        self._known = grow(self._known, len(self._names), False)
        fresh = ~self._known[ids]
        self._known[ids] = True
        return fresh
