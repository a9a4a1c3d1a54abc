"""The WAL keeps every appended record across reopen, detects torn tails and never skips data."""

from __future__ import annotations

import threading
from pathlib import Path

import pyarrow as pa
import pytest

from sensorium.config import WALSettings
from sensorium.errors import WALCorruption
from sensorium.log.wal import KIND_DATA, WAL, encode_payload


def _payload(i: int) -> bytes:
    return encode_payload(KIND_DATA, {"i": i}, pa.table({"v": [i, i + 1]}))


def test_append_and_replay_roundtrip(tmp_path: Path) -> None:
    w = WAL(tmp_path)
    offs = w.append([_payload(0), _payload(1)])
    offs += w.append([encode_payload(2, {"x": "y"}, None)])
    assert offs == [0, 1, 2]
    w.close()
    w2 = WAL(tmp_path)
    recs = list(w2.replay())
    assert [r.offset for r in recs] == [0, 1, 2]
    assert recs[1].header == {"i": 1} and recs[1].table is not None
    assert recs[1].table["v"].to_pylist() == [1, 2]
    assert recs[2].table is None and recs[2].kind == 2
    assert w2.next_offset == 3
    assert list(r.offset for r in w2.replay(2)) == [2]
    w2.close()


@pytest.mark.parametrize("cut", [1, 5, 17, 40])
def test_torn_tail_is_truncated(tmp_path: Path, cut: int) -> None:
    w = WAL(tmp_path)
    w.append([_payload(0)])
    w.append([_payload(1)])
    w.close()
    seg = sorted(tmp_path.glob("*.wal"))[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[: len(data) - cut])  # a crash mid-append
    w2 = WAL(tmp_path)
    assert [r.offset for r in w2.replay()] == [0]
    assert w2.truncated_bytes > 0
    # appends continue from the first lost offset, and survive another reopen
    assert w2.append([_payload(9)]) == [1]
    w2.close()
    assert [r.header["i"] for r in WAL(tmp_path, read_only=True).replay()] == [0, 9]


def test_corrupt_byte_in_tail_detected(tmp_path: Path) -> None:
    w = WAL(tmp_path)
    w.append([_payload(0)])
    w.append([_payload(1)])
    w.close()
    seg = sorted(tmp_path.glob("*.wal"))[-1]
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF
    seg.write_bytes(bytes(data))
    assert [r.offset for r in WAL(tmp_path).replay()] == [0]


def test_corruption_in_older_segment_is_an_error(tmp_path: Path) -> None:
    w = WAL(tmp_path, WALSettings(segment_bytes=1024))
    for i in range(20):
        w.append([_payload(i)])
    w.close()
    segs = sorted(tmp_path.glob("*.wal"))
    assert len(segs) > 2
    data = bytearray(segs[0].read_bytes())
    data[30] ^= 0xFF
    segs[0].write_bytes(bytes(data))
    with pytest.raises(WALCorruption, match="not the last segment"):
        WAL(tmp_path)


def test_segments_roll_and_truncate(tmp_path: Path) -> None:
    w = WAL(tmp_path, WALSettings(segment_bytes=1024))
    for i in range(30):
        w.append([_payload(i)])
    n = w.segment_count
    assert n > 3
    removed = w.truncate_before(20)
    assert removed > 0 and w.segment_count == n - removed
    offs = [r.offset for r in w.replay()]
    assert offs[-1] == 29 and 20 in offs and offs == list(range(offs[0], 30))
    w.close()
    assert [r.offset for r in WAL(tmp_path).replay()] == offs


def test_concurrent_appends_get_unique_ordered_offsets(tmp_path: Path) -> None:
    w = WAL(tmp_path)
    got: list[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(50):
            o = w.append([_payload(k * 1000 + i)])
            with lock:
                got.extend(o)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    w.close()
    assert sorted(got) == list(range(200))
    assert [r.offset for r in WAL(tmp_path).replay()] == list(range(200))


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_fsync_policies_persist_after_close(tmp_path: Path, policy: str) -> None:
    w = WAL(tmp_path, WALSettings(fsync=policy, fsync_interval_ms=5))  # type: ignore[arg-type]
    w.append([_payload(1)])
    w.close()
    assert len(list(WAL(tmp_path).replay())) == 1
