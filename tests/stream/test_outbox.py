"""The stream's outbox spilled to files: rows wait on disk, queries and checkpoints read them,
a delivery commits them once and removes the files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from sensorium.stream.checkpoint import CheckpointStore
from sensorium.stream.outputs import DerivedTables, Segment

T0 = 1_767_225_600_000_000_000


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({
        "time": pa.array([T0 + (start + i) * 60_000_000_000 for i in range(n)], pa.int64()),
        "device_id": pa.array([f"d{i % 3}" for i in range(n)]).dictionary_encode(),
        "field": pa.array(["temperature"] * n).dictionary_encode(),
        "mean": pa.array([float(start + i) for i in range(n)]),
    })


def test_spilled_rows_are_read_checkpointed_and_delivered_once(tmp_path: Path) -> None:
    spill = tmp_path / "outbox"
    d = DerivedTables(tmp_path / "lake", spill_dir=spill)
    key = ("default", "climate_1m")
    d.add(key, rows(4))
    d.add(key, rows(3, start=4))
    box = d.outbox()
    assert all(isinstance(it, Segment) for it in box[key]) and len(list(spill.iterdir())) == 2
    mem, _ = d.view(*key)  # queries see the waiting rows
    assert mem is not None and sorted(mem["mean"].to_pylist()) == [float(i) for i in range(7)]

    store = CheckpointStore(tmp_path / "cp")  # the checkpoint holds the rows themselves
    store.save({"offset": 1, "seq": 1, "outbox": d.checkpoint_form(box)})
    d.add(key, rows(2, start=7))  # after the checkpoint: waits for the next one
    assert d.deliver(1, box) == 7
    assert len(list(spill.iterdir())) == 1  # delivered files removed, the later one kept
    assert d.lake.dataset(*key).to_table().num_rows == 7

    again = DerivedTables(tmp_path / "lake", spill_dir=spill)  # after a crash: from the checkpoint
    cp = store.load()
    assert cp is not None
    again.restore_outbox(cp["outbox"])
    assert [t.num_rows for t in cp["outbox"][key]] == [4, 3]
    assert again.deliver(1) == 0  # the lake holds checkpoint 1 already: stored once
    assert again.lake.dataset(*key).to_table().num_rows == 7


def test_a_view_taken_while_a_delivery_removes_the_files_sees_every_row_once(tmp_path: Path) -> None:
    """A query reads the spilled rows under the outbox lock: a delivery that commits them and
    removes their files either happened before (rows in the lake, at the view's version) or
    after (rows read from the files)."""
    import threading

    d = DerivedTables(tmp_path / "lake", spill_dir=tmp_path / "outbox")
    key = ("default", "climate_1m")
    seen: list[int] = []
    stop = threading.Event()

    def query() -> None:
        while not stop.is_set() or not seen:
            mem, version = d.view(*key)
            stored = d.lake.dataset(*key, version=version).to_table().num_rows if version >= 0 else 0
            seen.append((0 if mem is None else mem.num_rows) + stored)

    for seq in range(1, 6):
        d.add(key, rows(3, start=3 * seq))
        t = threading.Thread(target=query)
        stop.clear()
        t.start()
        d.deliver(seq)
        stop.set()
        t.join()
        assert seen and all(n == 3 * seq for n in seen), seen
        seen.clear()
