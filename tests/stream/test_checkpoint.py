"""The checkpoint file: a header then one pickle per stage, each stage's state taken in turn."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from sensorium.stream.checkpoint import CheckpointError, CheckpointStore, Frozen


def test_stage_states_are_taken_one_at_a_time_and_read_back(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    taken: list[str] = []

    def stage(name: str, value: object) -> object:
        def take() -> object:
            taken.append(name)
            return value
        return take

    big = np.arange(1000, dtype=np.float64)
    size = store.save({"offset": 7, "seq": 2, "series": None, "outbox": []},
                      {"rolling": stage("rolling", {"buf": big}), "rules": stage("rules", {"n": 1})})
    assert taken == ["rolling", "rules"]
    assert size == store.path.stat().st_size
    cp = store.load()
    assert cp is not None
    assert cp["offset"] == 7 and cp["seq"] == 2 and cp["format"] == 4
    assert list(cp["stages"]) == ["rolling", "rules"]
    assert np.array_equal(cp["stages"]["rolling"]["buf"], big)
    assert cp["stages"]["rules"] == {"n": 1}


def test_a_format_1_checkpoint_is_still_read(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    old = {"offset": 3, "seq": 1, "series": None, "stages": {"rolling": {"n": 10}}, "outbox": [], "format": 1}
    store.path.write_bytes(pickle.dumps(old))
    assert store.load() == old


def test_a_format_2_checkpoint_is_still_read(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    with store.path.open("wb") as fh:
        pickle.dump({"offset": 3, "seq": 1, "series": None, "outbox": [], "format": 2, "stage_ids": ["a", "b"]}, fh)
        pickle.dump(("a", {"n": 10}), fh)
        pickle.dump(("b", [1, 2]), fh)
    cp = store.load()
    assert cp is not None and cp["stages"] == {"a": {"n": 10}, "b": [1, 2]} and cp["offset"] == 3


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    store.save({"offset": 1, "seq": 1}, {"rolling": lambda: {"buf": np.zeros(100)}})
    data = store.path.read_bytes()
    store.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        store.load()


def _files(store: CheckpointStore) -> set[str]:
    d = store.dir / "arrays"
    return {f.name for f in d.iterdir()} if d.is_dir() else set()


def test_frozen_arrays_are_written_once_and_removed_when_no_longer_named(tmp_path: Path) -> None:
    """A large Frozen array goes to a file of its own with the first checkpoint that holds it;
    later checkpoints name that file (nothing rewritten); a checkpoint that no longer holds it
    removes it once in place. Small ones stay inside the checkpoint."""
    store = CheckpointStore(tmp_path / "cp")
    big1 = np.arange(300_000, dtype=np.int64)
    big2 = np.linspace(0.0, 1.0, 200_000)
    small = np.arange(10, dtype=np.int64)
    store.save({"offset": 1}, {"w": lambda: {"chunks": [(Frozen(big1), Frozen(big2), Frozen(small))]}})
    first = _files(store)
    assert len(first) == 2
    mtimes = {n: (store.dir / "arrays" / n).stat().st_mtime_ns for n in first}
    big3 = np.full(150_000, 7.5)
    store.save({"offset": 2}, {"w": lambda: {"chunks": [(Frozen(big1), Frozen(big2), Frozen(small)), (Frozen(big3),)]}})
    second = _files(store)
    assert first < second and len(second) == 3
    assert all((store.dir / "arrays" / n).stat().st_mtime_ns == t for n, t in mtimes.items())  # not rewritten
    got = CheckpointStore(tmp_path / "cp").load()
    assert got is not None and got["offset"] == 2
    (c1, c2) = got["stages"]["w"]["chunks"]
    assert np.array_equal(c1[0], big1) and np.array_equal(c1[1], big2) and np.array_equal(c1[2], small)
    assert np.array_equal(c2[0], big3) and all(isinstance(a, np.ndarray) for a in (*c1, *c2))
    store.save({"offset": 3}, {"w": lambda: {"chunks": [(Frozen(big3),)]}})
    assert len(_files(store)) == 1  # big1's and big2's files are gone with the checkpoint that named them
    # a checkpoint state taken and pickled outside a checkpoint: the arrays themselves
    assert np.array_equal(pickle.loads(pickle.dumps(Frozen(big1))), big1)


def test_array_files_of_a_checkpoint_never_put_in_place_are_removed_on_load(tmp_path: Path) -> None:
    """A crash between writing a checkpoint (its new array files) and renaming it into place
    leaves the previous checkpoint, which loads whole; the orphaned files go."""
    store = CheckpointStore(tmp_path / "cp")
    kept = np.arange(200_000, dtype=np.int64)
    store.save({"offset": 1}, {"w": lambda: [Frozen(kept)]})
    w = store.write({"offset": 2}, {"w": lambda: [Frozen(kept), Frozen(np.ones(200_000))]})
    assert len(_files(store)) == 1  # write only names a new array; its commit writes the file
    store._arrays.write_new(w)  # the crash comes after that, before the rename
    assert len(_files(store)) == 2
    after = CheckpointStore(tmp_path / "cp")
    got = after.load()
    assert got is not None and got["offset"] == 1 and np.array_equal(got["stages"]["w"][0], kept)
    assert len(_files(after)) == 1
    # the restored array is known: the next checkpoint names its file instead of writing it again
    name = next(iter(_files(after)))
    after.save({"offset": 3}, {"w": lambda: [Frozen(got["stages"]["w"][0])]})
    assert _files(after) == {name}
