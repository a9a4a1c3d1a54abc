"""Lake storage form: sorted by day, series and time; day partitions; exact nanoseconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sensorium.store.lake as lake_mod

from sensorium.schema import TAG_TYPE, TIME_TYPE
from sensorium.store.lake import Lake

DAY_NS = 86_400_000_000_000
T0 = 1_767_225_600_000_000_000


def _batch() -> pa.Table:
    times = [T0 + DAY_NS + 5, T0 + 3, T0 + 1, T0 + DAY_NS + 1, T0 + 2, T0 + 7]
    devs = ["b", "b", None, "a", "a", "b"]
    return pa.table({
        "time": pa.array(times, pa.int64()).cast(TIME_TYPE),
        "device_id": pa.array(devs, pa.string()).dictionary_encode().cast(TAG_TYPE),
        "v": pa.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
    })


def test_prepare_sorts_by_day_series_time() -> None:
    t = Lake.prepare(_batch())
    assert t.column_names == ["time", "device_id", "v", "day"]
    rows = t.to_pylist()
    assert [(r["day"], r["device_id"], r["time"] - T0) for r in rows] == [
        ("2026-01-01", None, 1), ("2026-01-01", "a", 2), ("2026-01-01", "b", 3), ("2026-01-01", "b", 7),
        ("2026-01-02", "a", DAY_NS + 1), ("2026-01-02", "b", DAY_NS + 5),
    ]
    assert t.schema.field("device_id").type == pa.string()
    assert t.schema.field("time").type == pa.int64()


def test_append_records_offset_and_partitions(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    assert lake.applied_offset("b", "m") == -1
    lake.append("b", "m", _batch(), offset=41)
    assert lake.applied_offset("b", "m") == 41
    lake.append("b", "m", _batch(), offset=None)  # a bulk load keeps the log offset
    assert lake.applied_offset("b", "m") == 41
    parts = sorted(p.name for p in lake.path("b", "m").iterdir() if p.name.startswith("day="))
    assert parts == ["day=2026-01-01", "day=2026-01-02"]
    assert lake.tables() == [("b", "m")]
    st = lake.stats("b", "m")
    assert st.rows == 12 and st.files == 4


def test_names_with_odd_characters_roundtrip(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.append("my bucket/1", "cpu load,%", _batch(), offset=0)
    assert lake.tables() == [("my bucket/1", "cpu load,%")]


def test_quiet_partitions_are_compacted_even_with_few_files(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.append("b", "m", _batch(), offset=0)
    lake.append("b", "m", _batch(), offset=1)  # the same points again: a rewrite
    assert lake.stats("b", "m").rows == 12
    assert lake.compact("b", "m", ["device_id"], min_files=8, settled_s=3600) == 0  # not quiet yet
    import time

    later = int(time.time() * 1000) + 7200 * 1000
    assert lake.compact("b", "m", ["device_id"], min_files=8, settled_s=3600, now_ms=later) == 2
    assert lake.stats("b", "m").rows == 6  # merged


def test_prepare_accepts_a_tag_column_that_is_all_null() -> None:
    # e.g. quality findings of dropouts: `field` is null for the whole batch
    field = pa.array([None, None, None], pa.string()).dictionary_encode()
    t = pa.table({"time": pa.array([3, 1, 2], pa.int64()), "field": field, "v": [1.0, 2.0, 3.0]})
    out = Lake.prepare(t)
    assert out["time"].to_pylist() == [1, 2, 3]
    assert out["field"].null_count == 3


def _rows(t: pa.Table) -> list[tuple[object, ...]]:
    return [tuple(r.values()) for r in t.to_pylist()]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from(["a", "b", "c", None]), st.one_of(st.none(), st.floats(0, 9))),
        min_size=0,
        max_size=40,
    ),
    st.integers(1, 7),
    st.integers(1, 4),
)
def test_prepared_slices_are_the_whole_prepared_batch(
    points: list[tuple[int, str | None, float | None]], rows: int, chunks: int
) -> None:
    # the writer's slices: each sorted, duplicates (same series and time) never split between
    # two slices, and together exactly the batch prepared in one piece
    times = [T0 + (k % 2) * DAY_NS + k for k, _, _ in points]
    whole = pa.table({
        "time": pa.array(times, pa.int64()).cast(TIME_TYPE),
        "device_id": pa.array([d for _, d, _ in points], pa.string()).dictionary_encode().cast(TAG_TYPE),
        "v": pa.array([v for _, _, v in points], pa.float64()),
    })
    step = max(1, len(points) // chunks)
    batch = pa.concat_tables([whole.slice(i, step) for i in range(0, len(points), step)] or [whole])
    expected = Lake.prepare(batch)
    schema, parts = Lake.prepared(batch, rows=rows)
    got = list(parts)
    assert all(p.schema == schema for p in got)
    assert _rows(pa.concat_tables(got)) == _rows(expected)
    keys = [(r["day"], r["device_id"], r["time"]) for r in expected.to_pylist()]
    assert len(keys) == len(set(keys))  # merged: one row per series and time


def test_append_writes_the_batch_a_slice_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lake_mod, "PREPARE_ROWS", 2)
    seen: list[int] = []
    real = Lake.prepared

    def spy(table: pa.Table, rows: int | None) -> tuple[pa.Schema, Iterator[pa.Table]]:
        schema, parts = real(table, rows)
        return schema, (p for p in parts if seen.append(p.num_rows) or True)

    monkeypatch.setattr(Lake, "prepared", staticmethod(spy))
    lake = Lake(tmp_path)
    batch = pa.concat_tables([_batch(), _batch()])  # every point twice: merged
    lake.append("b", "m", batch, offset=3)
    assert len(seen) >= 3 and max(seen) <= 3  # slices of 2 rows, moved on past a merged pair
    stored = lake.read("b", "m")
    expected = Lake.prepare(batch).drop_columns(["day"])
    assert stored.num_rows == 6
    assert sorted(_rows(stored.select(expected.column_names).cast(expected.schema)), key=repr) == sorted(
        _rows(expected), key=repr
    )
    assert lake.applied_offset("b", "m") == 3
