"""Rollup levels in memory and spilled to a file; checkpoint parts written one item at a time."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sensorium.stream.checkpoint import CheckpointStore, Parts
from sensorium.stream.level import Level


def rows(kids: list[int], start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {"kid": kids, "start": [start] * len(kids), "sum": [float(k) for k in kids], "_sketch": [bytes([k % 256]) * (k % 5) for k in kids]},
        schema={"kid": pl.Int64, "start": pl.Int64, "sum": pl.Float64, "_sketch": pl.Binary},
    )


@pytest.fixture(params=["memory", "spill"])
def level(request: pytest.FixtureRequest, tmp_path: Path) -> Level:
    return Level(rows([]), tmp_path / "spill" / "r-1h" if request.param == "spill" else None)


def fill(level: Level, *pieces: list[int]) -> None:
    w = level.writer()
    for p in pieces:
        w.add(rows(p))
    w.commit()


def test_a_cursor_reads_forward_by_key_across_pieces_and_empties_the_level(level: Level) -> None:
    fill(level, [1, 2, 3], [5, 8], [9, 12, 13, 14])
    assert level.height == 9 and level.kid.tolist() == [1, 2, 3, 5, 8, 9, 12, 13, 14]
    cur = level.cursor()
    assert level.height == 0 and level.frame().height == 0  # handed over at once
    got = [cur.until(k).get_column("kid").to_list() for k in (1, 4, 9, 9, 0, 12)]
    assert got == [[1], [2, 3], [5, 8, 9], [], [], [12]]
    assert cur.rest().get_column("kid").to_list() == [13, 14]
    assert cur.rest().height == 0
    cur.close()
    if level.path is not None:
        assert list(level.path.parent.iterdir()) == []  # the handed-over file went


def test_the_rest_comes_in_slices_cut_between_keys(level: Level) -> None:
    fill(level, [1, 2, 2, 2, 3], [3, 5, 8, 8], [9, 9, 9, 9, 9, 12])
    cur = level.cursor()
    assert cur.until(1).get_column("kid").to_list() == [1]
    slices = [s.get_column("kid").to_list() for s in cur.rest_slices(2)]
    assert slices == [[2, 2, 2], [3, 3], [5], [8, 8], [9, 9, 9, 9, 9], [12]]
    assert list(cur.rest_slices(2)) == [] and cur.rest().height == 0


def test_a_cursor_keeps_columns_and_order(level: Level) -> None:
    fill(level, [1, 2], [4])
    cur = level.cursor()
    assert cur.rest().equals(rows([1, 2, 4]))
    cur.close()
    assert level.cursor().rest().height == 0


def test_writer_replaces_the_level_and_the_spill_file(level: Level, tmp_path: Path) -> None:
    fill(level, [1, 2], [3])
    fill(level, [7])  # a level is replaced as a whole
    assert level.frame().equals(rows([7]))
    if level.path is not None:
        assert len(list(level.path.parent.iterdir())) == 1  # the old file went
    w = level.writer()
    w.add(rows([9]))
    w.abort()  # nothing changes
    assert level.frame().equals(rows([7]))
    level.clear()
    assert level.height == 0
    if level.path is not None:
        assert list(level.path.parent.iterdir()) == []


def test_batches_restore_and_a_previous_process_files(level: Level, tmp_path: Path) -> None:
    fill(level, [1, 2], [3, 4, 5])
    batches = list(level.batches())
    assert sum(b.num_rows for b in batches) == 5
    other = Level(rows([]), None if level.path is None else level.path.with_name("other"))
    other.restore(batches)
    assert other.frame().equals(level.frame())
    other.restore(level.frame().to_arrow())  # a checkpoint of the previous format: one table
    assert other.frame().equals(level.frame())
    if level.path is not None:
        dead = level.path.with_name(f"{level.path.name}.999999999-abc-0.arrow")  # no such process
        dead.write_bytes(b"x")
        # this pid, another nonce: an earlier process that had the same pid (a restarted container)
        earlier = level.path.with_name(f"{level.path.name}.{os.getpid()}-0123456789ab-0.arrow")
        earlier.write_bytes(b"x")
        mine = sorted(level.path.parent.glob(f"{level.path.name}.*"))
        again = Level(rows([]), level.path)  # a new level removes what gone processes left
        assert again.height == 0 and not dead.exists() and not earlier.exists()
        assert sorted(level.path.parent.glob(f"{level.path.name}.*")) == [m for m in mine if m not in (dead, earlier)]


class Counted:
    """An item that counts how many of its kind are alive."""

    alive = 0
    most = 0

    def __init__(self, n: int) -> None:
        self.n = n
        self.blob = bytes(10)
        Counted.alive += 1
        Counted.most = max(Counted.most, Counted.alive)

    def __del__(self) -> None:
        Counted.alive -= 1

    def __reduce__(self) -> tuple[Any, ...]:
        return (int, (self.n,))


def test_checkpoint_parts_are_written_one_at_a_time(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    Counted.alive = Counted.most = 0
    state = {"a": Parts(lambda: (Counted(i) for i in range(50))), "b": [Parts(lambda: iter([b"x", b"y"])), 3]}
    store.save({"offset": 7}, {"s": lambda: state, "t": lambda: {"c": Parts(lambda: iter(()))}})
    assert Counted.most <= 2  # the pickler holds the item it writes (and none before it)
    cp = store.load()
    assert cp is not None and cp["offset"] == 7
    assert cp["stages"]["s"] == {"a": list(range(50)), "b": [[b"x", b"y"], 3]}
    assert cp["stages"]["t"] == {"c": []}
    assert pickle.loads(pickle.dumps(state))["a"] == list(range(50))  # a plain pickle: a list


def test_a_parts_slot_outside_a_checkpoint_is_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"offset": 1}, {"s": lambda: Parts(lambda: iter([1]))})
    with store.path.open("rb") as fh:
        pickle.load(fh)
        with pytest.raises(Exception, match="only be read by CheckpointStore.load"):
            pickle.load(fh)
