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


def _spy_commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the commits made from files the lake wrote itself (add actions per commit)."""
    from deltalake import DeltaTable

    made: list[int] = []
    real = DeltaTable.create_write_transaction

    def spy(self: DeltaTable, actions: list[object], *a: object, **k: object) -> None:
        made.append(len(actions))
        real(self, actions, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(DeltaTable, "create_write_transaction", spy)
    real_create = lake_mod.create_table_with_add_actions

    def spy_create(uri: str, schema: object, actions: list[object], *a: object, **k: object) -> None:
        made.append(len(actions))
        real_create(uri, schema, actions, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(lake_mod, "create_table_with_add_actions", spy_create)
    return made


def test_appends_to_a_table_with_the_batch_columns_write_their_own_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = _spy_commits(monkeypatch)
    lake = Lake(tmp_path)
    lake.append("b", "m", _batch(), offset=1)  # creates the table with its files
    assert made == [2]
    assert lake.version("b", "m") == 0 and lake.applied_offset("b", "m") == 1
    later = _batch()
    later = later.set_column(0, "time", pa.array([t + 100 for t in later["time"].cast(pa.int64()).to_pylist()], pa.int64()).cast(TIME_TYPE))
    lake.append("b", "m", later, offset=2)
    assert made == [2, 2]  # one file per day, one commit
    assert lake.applied_offset("b", "m") == 2
    stored = lake.read("b", "m")
    assert stored.num_rows == 12
    assert sorted(stored["v"].to_pylist()) == sorted([1.0, 2.0, 3.0, 4.0, 5.0, 6.0] * 2)
    # file statistics: what readers prune on
    from deltalake import DeltaTable

    acts = pa.table(DeltaTable(str(lake.path("b", "m"))).get_add_actions(flatten=True)).to_pylist()
    ours = [a for a in acts if a["max.time"] > T0 + 100 or a["min.time"] >= T0 + 100]
    assert sum(a["num_records"] for a in acts) == 12
    day1 = next(a for a in ours if a["partition.day"] == "2026-01-01")
    assert (day1["num_records"], day1["min.time"], day1["max.time"]) == (4, T0 + 101, T0 + 107)
    assert (day1["null_count.device_id"], day1["min.v"], day1["max.v"]) == (1, 2.0, 6.0)
    # a replay of the same offset stores nothing and leaves no file behind
    files = sorted(p.name for p in lake.path("b", "m").rglob("*.parquet"))
    lake.append("b", "m", later, offset=2)
    assert lake.read("b", "m").num_rows == 12
    assert sorted(p.name for p in lake.path("b", "m").rglob("*.parquet")) == files


def test_new_columns_are_merged_first_and_type_clashes_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sensorium.errors import TypeConflictError

    made = _spy_commits(monkeypatch)
    lake = Lake(tmp_path)
    lake.append("b", "m", _batch(), offset=1)
    wider = _batch().append_column("w", pa.array([7.0] * 6))
    lake.append("b", "m", wider, offset=2)  # a new column: the schema is merged, then the rows
    assert made == [2, 2]
    assert lake.read("b", "m")["w"].to_pylist().count(7.0) == 6
    clash = _batch().set_column(2, "v", pa.array(["x"] * 6))
    with pytest.raises(TypeConflictError):
        lake.append("b", "m", clash, offset=3)
    assert lake.applied_offset("b", "m") == 2 and lake.read("b", "m").num_rows == 12
    stamped = _batch().append_column("at", pa.array([T0] * 6, pa.int64()).cast(TIME_TYPE))
    lake.append("b", "m", stamped, offset=4)  # a timestamp column: delta-rs converts it
    assert made == [2, 2]
    assert lake.read("b", "m")["at"].drop_null().to_pylist()[0].timestamp() * 1e9 == T0


def test_files_of_a_failed_commit_are_removed_and_a_lost_race_commits_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltalake import DeltaTable
    from deltalake.exceptions import CommitFailedError

    lake = Lake(tmp_path)
    lake.append("b", "m", _batch(), offset=1)
    before = set(lake.path("b", "m").rglob("*.parquet"))
    real = DeltaTable.create_write_transaction
    calls: list[list[str]] = []

    def once_lost(self: DeltaTable, actions: list, *a: object, **k: object) -> None:  # type: ignore[type-arg]
        calls.append([x.path for x in actions])
        if len(calls) == 1:
            raise CommitFailedError("version 2 already exists")  # another writer was first
        real(self, actions, *a, **k)

    monkeypatch.setattr(DeltaTable, "create_write_transaction", once_lost)
    lake.append("b", "m", _batch(), offset=2)
    assert len(calls) == 2 and calls[0] == calls[1]  # the same files, committed on the retry
    assert lake.applied_offset("b", "m") == 2 and lake.read("b", "m").num_rows == 12

    def broken(self: DeltaTable, actions: list, *a: object, **k: object) -> None:  # type: ignore[type-arg]
        raise OSError("disk gone")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", broken)
    now = set(lake.path("b", "m").rglob("*.parquet"))
    with pytest.raises(OSError, match="disk gone"):
        lake.append("b", "m", _batch(), offset=3)
    assert set(lake.path("b", "m").rglob("*.parquet")) == now  # nothing left behind
    assert len(now - before) == 2


def test_files_of_a_commit_that_failed_after_it_was_durable_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # e.g. a post-commit hook (checkpoint, log cleanup) failing: the rows are in the table
    from deltalake import DeltaTable

    lake = Lake(tmp_path)
    lake.append("b", "m", _batch(), offset=1)
    real = DeltaTable.create_write_transaction

    def late_failure(self: DeltaTable, actions: list, *a: object, **k: object) -> None:  # type: ignore[type-arg]
        real(self, actions, *a, **k)
        raise OSError("checkpoint could not be written")

    monkeypatch.setattr(DeltaTable, "create_write_transaction", late_failure)
    with pytest.raises(OSError, match="checkpoint"):
        lake.append("b", "m", _batch(), offset=2)
    assert lake.applied_offset("b", "m") == 2
    assert lake.read("b", "m").num_rows == 12  # every referenced file still there


def test_file_statistics_are_the_ones_delta_rs_writes(tmp_path: Path) -> None:
    # readers prune files on them: a missing range where other files have one prunes the file
    # for any filter on that column, so they must be what delta-rs's own writer records
    from deltalake import DeltaTable, write_deltalake

    b = _batch().append_column("s", pa.array(["x" * 40, "b", None, "d", "é", "f"]))
    b = b.set_column(2, "v", pa.array([1.0, float("nan"), None, float("nan"), -0.0, float("inf")]))
    b = b.append_column("n", pa.array([3, None, -7, 2**40, 0, 1], pa.int64()))
    b = b.append_column("ok", pa.array([True, None, False, True, None, True]))
    b = b.append_column("none", pa.array([None] * 6, pa.float64()))
    b = b.append_column("raw", pa.array([b"\x00", b"z", None, b"", b"a", b"b"]))
    lake = Lake(tmp_path / "ours")
    lake.append("b", "m", b, offset=1)
    write_deltalake(str(tmp_path / "theirs"), Lake.prepare(b), partition_by=["day"])

    def stats(path: Path) -> list[dict[str, object]]:
        acts = pa.table(DeltaTable(str(path)).get_add_actions(flatten=True)).drop_columns(
            ["path", "size_bytes", "modification_time"]
        )
        rows = [{k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()} for r in acts.to_pylist()]
        return sorted(rows, key=lambda r: str(r["partition.day"]))

    assert stats(lake.path("b", "m")) == stats(tmp_path / "theirs")


def test_a_batch_over_several_days_and_slices_splits_into_files_per_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lake_mod, "PREPARE_ROWS", 3)
    monkeypatch.setattr(lake_mod, "FILE_ROWS", 4)
    made = _spy_commits(monkeypatch)
    n = 20
    t = pa.table({
        "time": pa.array([T0 + (i % 3) * DAY_NS + i for i in range(n)], pa.int64()).cast(TIME_TYPE),
        "device_id": pa.array([f"d{i % 4}" for i in range(n)]).dictionary_encode().cast(TAG_TYPE),
        "v": pa.array([float(i) for i in range(n)]),
    })
    lake = Lake(tmp_path)
    lake.append("b", "m", t, offset=1)
    assert len(made) == 1 and made[0] >= 6  # 3 days, each past 4 rows more than once
    days = {p.parent.name: 0 for p in lake.path("b", "m").rglob("*.parquet")}
    assert sorted(days) == ["day=2026-01-01", "day=2026-01-02", "day=2026-01-03"]
    stored = lake.read("b", "m")
    assert sorted(stored["v"].to_pylist()) == [float(i) for i in range(n)]


def test_a_table_another_writer_created_first_gets_the_files_on_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deltalake.exceptions import DeltaError

    real = lake_mod.create_table_with_add_actions
    raced: list[bool] = []

    def race(uri: str, schema: object, actions: list[object], *a: object, **k: object) -> None:
        if raced:
            real(uri, schema, actions, *a, **k)  # type: ignore[arg-type]
            return
        raced.append(True)
        Lake(tmp_path).append("b", "m", _batch().slice(0, 2), offset=None)  # another process, first
        raise DeltaError("Generic error: A Delta Lake table already exists at that location.")

    monkeypatch.setattr(lake_mod, "create_table_with_add_actions", race)
    lake = Lake(tmp_path)
    lake.append("b", "m", _batch(), offset=4)
    assert lake.applied_offset("b", "m") == 4
    assert lake.read("b", "m").num_rows == 8  # the other writer's 2 rows and our 6
    files = len(list(lake.path("b", "m").rglob("*.parquet")))
    assert lake.stats("b", "m").files == files  # no orphan, none lost


def test_a_table_whose_creator_died_before_its_first_commit_is_created_again(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    (lake.path("b", "m") / "_delta_log").mkdir(parents=True)  # the log directory, no commit in it
    assert lake.version("b", "m") == -1 and lake.applied_offset("b", "m") == -1
    lake.append("b", "m", _batch(), offset=1)
    assert lake.version("b", "m") == 0 and lake.read("b", "m").num_rows == 6


def test_an_append_of_pieces_commits_them_once_each_prepared_on_its_own(tmp_path: Path) -> None:
    """Stream outputs go to the lake a piece at a time (never the whole batch in memory): one
    commit with the offset, every row stored, each piece sorted on its own; a replay skips."""
    lake = Lake(tmp_path)
    whole = _batch()
    pieces = [whole.slice(0, 2), whole.slice(2, 3), whole.slice(5)]
    reads = []

    def read() -> Iterator[pa.Table]:
        reads.append(1)
        return iter(pieces)

    v = lake.append("b", "m", lake_mod.Pieces(whole.schema, read), offset=3, app_id="s")
    assert lake.applied_offset("b", "m", app_id="s") == 3 and v == lake.version("b", "m")
    stored = lake.dataset("b", "m").to_table().sort_by([("time", "ascending")])
    want = Lake.prepare(whole).drop_columns(["day"]).sort_by([("time", "ascending")])
    assert stored.select(want.column_names).to_pylist() == want.to_pylist()
    assert lake.append("b", "m", lake_mod.Pieces(whole.schema, read), offset=3, app_id="s") == v  # stored once
    assert len(reads) == 1


# -- compaction: bounded groups of small files, merges across however many writes ----------------

def _points(rows: list[tuple[int, str | None, float | None, float | None]]) -> pa.Table:
    """A batch of (time offset, device, v, w) points on the first day."""
    return pa.table({
        "time": pa.array([T0 + t for t, _, _, _ in rows], pa.int64()).cast(TIME_TYPE),
        "device_id": pa.array([d for _, d, _, _ in rows], pa.string()).dictionary_encode().cast(TAG_TYPE),
        "v": pa.array([v for _, _, v, _ in rows], pa.float64()),
        "w": pa.array([w for _, _, _, w in rows], pa.float64()),
    })


def _file_rows(lake: Lake) -> dict[str, int]:
    from deltalake import DeltaTable

    acts = pa.table(DeltaTable(str(lake.path("b", "m"))).get_add_actions(flatten=True))
    return dict(zip(acts["path"].to_pylist(), acts["num_records"].to_pylist(), strict=True))


def _stored(lake: Lake) -> list[tuple[object, ...]]:
    t = lake.read("b", "m")
    t = t.set_column(t.schema.get_field_index("time"), "time", t["time"].cast(pa.int64()))
    return sorted(((r["time"], r["device_id"], r.get("v"), r.get("w")) for r in t.to_pylist()), key=repr)


def test_compaction_merges_small_files_in_groups_of_at_most_max_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    for i in range(10):  # 10 files of 10 points, consecutive in time
        lake.append("b", "m", _points([(i * 10 + k, "a", float(k), None) for k in range(10)]), offset=i)
    before = _stored(lake)
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=40) == 1
    assert sorted(_file_rows(lake).values()) == [20, 40, 40]  # 4 + 4 + 2 files, never more than 40 rows
    assert _stored(lake) == before
    assert lake.applied_offset("b", "m") == 9
    # files of half the bound or more are left alone: nothing more to do
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=40) == 0


def test_compaction_leaves_large_files_alone_unless_they_hold_a_point_written_again(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.append("b", "m", _points([(k, "a", float(k), None) for k in range(30)]), offset=0)  # large: [0, 29]
    lake.append("b", "m", _points([(100 + k, "a", float(k), None) for k in range(30)]), offset=1)  # large: [100, 129]
    large = set(_file_rows(lake))
    # two small writes: a point of the first large file again (a new field), and new points
    lake.append("b", "m", _points([(5, "a", None, 7.0), (50, "b", 1.0, None)]), offset=2)
    lake.append("b", "m", _points([(60, "b", 2.0, None), (61, "b", 3.0, None)]), offset=3)
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=40) == 1
    files = _file_rows(lake)
    kept = large & set(files)
    assert len(kept) == 1 and files[kept.pop()] == 30  # [100, 129] shares no point: not rewritten
    rows = _stored(lake)
    assert len(rows) == 30 + 30 + 3  # the point written twice is one row ...
    assert (T0 + 5, "a", 5.0, 7.0) in rows  # ... with both writes' fields


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 11), st.sampled_from(["a", "b", None]),
                      st.one_of(st.none(), st.floats(0, 9)), st.one_of(st.none(), st.floats(0, 9))),
            min_size=1, max_size=6,
        ),
        min_size=1, max_size=6,
    ),
    st.lists(st.integers(2, 12), min_size=6, max_size=6),
)
def test_compactions_between_writes_give_the_writes_merged_in_order(
    tmp_path_factory: pytest.TempPathFactory, writes: list[list[tuple[int, str | None, float | None, float | None]]],
    bounds: list[int],
) -> None:
    # whatever the group bounds and wherever compactions fall between writes, once quiet the
    # table holds each (series, time) once, later fields winning and earlier ones filling the
    # gaps: the same as all writes prepared as one batch
    lake = Lake(tmp_path_factory.mktemp("lake"))
    for i, rows in enumerate(writes):
        lake.append("b", "m", _points(rows), offset=i)
        lake.compact("b", "m", ["device_id"], min_files=2, max_rows=bounds[i])
    # once the partition is quiet, every point written more than once is merged
    lake.compact("b", "m", ["device_id"], min_files=2, max_rows=bounds[-1], settled_s=1, now_ms=2**62)
    expected = Lake.prepare(pa.concat_tables([_points(rows) for rows in writes])).drop_columns(["day"])
    want = sorted(((r["time"], r["device_id"], r.get("v"), r.get("w")) for r in expected.to_pylist()), key=repr)
    assert _stored(lake) == want
    assert lake.applied_offset("b", "m") == len(writes) - 1


def test_large_files_are_looked_at_once_even_across_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = Lake(tmp_path)
    lake.append("b", "m", _points([(k, "a", float(k), None) for k in range(30)]), offset=0)
    lake.append("b", "m", _points([(20 + k, "b", float(k), None) for k in range(30)]), offset=1)  # meets the first
    looked: list[int] = []
    real = Lake._sharing

    def spy(self: Lake, *a: object, **k: object) -> object:
        looked.append(1)
        return real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Lake, "_sharing", spy)
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=40) == 0  # no point shared
    assert len(looked) == 2
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=40) == 0
    assert len(looked) == 2  # not again ...
    lake.vacuum("b", "m", retention_hours=0)
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=40) == 0
    assert Lake(tmp_path).compact("b", "m", ["device_id"], min_files=2, max_rows=40) == 0  # a new process
    assert len(looked) == 2  # ... nor by the next process (the list survives a vacuum)
    # a later write of a point they hold: looked at, merged
    lake.append("b", "m", _points([(25, "b", None, 1.0)] + [(100 + k, "c", 1.0, None) for k in range(25)]), offset=2)
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=40) == 1
    assert (T0 + 25, "b", 5.0, 1.0) in _stored(lake)
    assert len(_stored(lake)) == 30 + 30 + 25


def test_a_group_whose_files_an_earlier_merge_took_is_skipped(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    lake.append("b", "m", _points([(t, "a", 1.0, None) for t in range(4)]), offset=0)
    lake.append("b", "m", _points([(t, "b", 1.0, None) for t in range(4)]), offset=1)
    # packed with the next file, but it holds a point of the first: the first merge takes it
    lake.append("b", "m", _points([(3, "a", None, 9.0), (20, "a", 1.0, None), (21, "a", 1.0, None)]), offset=2)
    lake.append("b", "m", _points([(t, "c", 1.0, None) for t in range(30, 34)]), offset=3)
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=10) == 1
    rows = _stored(lake)
    assert len(rows) == 4 + 4 + 2 + 4 and (T0 + 3, "a", 1.0, 9.0) in rows


def test_a_write_committed_during_a_compaction_stays_the_later_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # another process (a scale-out worker) commits a newer value of a point while the owner
    # compacts the files holding the older one: the compaction's output must not pass for newer
    from deltalake import DeltaTable
    from deltalake.transaction import RemoveAction

    worker, owner = Lake(tmp_path), Lake(tmp_path)
    worker.append("b", "m", _points([(5, "a", 1.0, None)]), offset=0)
    worker.append("b", "m", _points([(6, "a", 1.0, None)]), offset=1)
    path = worker.path("b", "m")
    newer = worker._write_files(path, _points([(5, "a", 2.0, None)]))  # written before the owner's commit
    real = DeltaTable.create_write_transaction

    def commit_first(self: DeltaTable, actions: list[object], *a: object, **k: object) -> None:
        if any(isinstance(x, RemoveAction) for x in actions):
            other = DeltaTable(str(path))
            real(other, list(newer.actions), mode="append", schema=other.schema(), partition_by=["day"])
        real(self, actions, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(DeltaTable, "create_write_transaction", commit_first)
    assert owner.compact("b", "m", ["device_id"], min_files=2, max_rows=10) == 1
    monkeypatch.setattr(DeltaTable, "create_write_transaction", real)
    owner.compact("b", "m", ["device_id"], min_files=2, max_rows=10, settled_s=1, now_ms=2**62)
    assert _stored(owner) == [(T0 + 5, "a", 2.0, None), (T0 + 6, "a", 1.0, None)]


def test_tables_with_columns_the_writer_keeps_no_statistics_for_are_not_compacted(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    for i in range(3):
        t = _points([(i, "a", 1.0, None)])
        lake.append("b", "m", t.append_column("seen_at", pa.array([T0 + i], pa.int64()).cast(pa.timestamp("us", tz="UTC"))), offset=i)
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=10) == 0
    assert lake.stats("b", "m").files == 3


def test_settled_files_of_a_table_without_a_list_count_as_looked_at(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a table compacted before the list existed (an upgrade): its settled large files are not
    # all read again under the table's lock; files written since are
    import time

    lake = Lake(tmp_path)
    lake.append("b", "m", _points([(k, "a", float(k), None) for k in range(30)]), offset=0)
    lake.append("b", "m", _points([(20 + k, "b", float(k), None) for k in range(30)]), offset=1)
    looked: list[int] = []
    real = Lake._sharing
    monkeypatch.setattr(Lake, "_sharing", lambda self, *a, **k: looked.append(1) or real(self, *a, **k))  # type: ignore[arg-type]
    later = int(time.time() * 1000) + 3_600_000
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=40, settled_s=600, now_ms=later) == 0
    assert looked == []
    lake.append("b", "m", _points([(25, "b", None, 1.0)] + [(100 + k, "c", 1.0, None) for k in range(25)]), offset=2)
    assert lake.compact("b", "m", ["device_id"], min_files=2, max_rows=40, settled_s=600) == 1  # the new file
    assert (T0 + 25, "b", 5.0, 1.0) in _stored(lake)
