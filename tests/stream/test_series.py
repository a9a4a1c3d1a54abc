"""SeriesIndex: the series the stream has seen, found new by their ids in the framing's name
index (a bitmap) — the same frame as an anti-join against every known series gives."""

from __future__ import annotations

import numpy as np
import polars as pl

from sensorium.keyindex import NameIndex
from sensorium.stream.series import SeriesIndex


def _rows(ids: list[int]) -> pl.DataFrame:
    return pl.DataFrame({
        "series": [f"m,d=d{i}" for i in ids], "bucket": ["default"] * len(ids), "measurement": ["m"] * len(ids),
        "d": [f"d{i}" for i in ids],
    })


def test_new_series_by_id_equal_the_anti_join() -> None:
    rng = np.random.default_rng(5)
    names = NameIndex()
    by_id, by_join = SeriesIndex(names), SeriesIndex()
    for _ in range(40):
        # distinct within a batch, as the framing's series frames are
        batch = _rows(rng.choice(60, int(rng.integers(0, 12)), replace=False).tolist())
        names.ids(batch.get_column("series"))  # the framing names them first (some not at all)
        assert by_id.add(batch) == by_join.add(batch)
        assert by_id.frame.equals(by_join.frame)


def test_restored_series_are_known_to_a_fresh_name_index() -> None:
    """After a restart the framing's index is empty: the restored names get ids first, so a
    series framed again is not added twice."""
    first = SeriesIndex(NameIndex())
    first.add(_rows([1, 2, 3]))
    names = NameIndex()
    again = SeriesIndex(names)
    again.restore(first.state())
    batch = _rows([3, 4, 2])
    names.ids(batch.get_column("series"))
    assert again.add(batch) == 1
    assert again.frame.get_column("series").to_list() == ["m,d=d1", "m,d=d2", "m,d=d3", "m,d=d4"]
    assert again.measurements("default") == ["m"]


def test_a_series_twice_in_one_batch_is_added_once() -> None:
    names = NameIndex()
    idx = SeriesIndex(names)
    batch = _rows([4, 4, 5])
    names.ids(batch.get_column("series"))
    assert idx.add(batch) == 2
    assert idx.frame.get_column("series").to_list() == ["m,d=d4", "m,d=d5"]
