"""The checkpoint file: a header then one pickle per stage, each stage's state taken in turn."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from sensorium.stream.checkpoint import CheckpointError, CheckpointStore


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
    assert cp["offset"] == 7 and cp["seq"] == 2 and cp["format"] == 3
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
