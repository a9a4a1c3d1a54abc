from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensorium.quality.deadletters import DeadLetter, DeadLetterStore, StatsRecord, _summed

from .helpers import T0, S


def letter(
    line: int = 1,
    reason: str = "temperature=130 above maximum 100 degC",
    rule: str = "range:temperature",
    bucket: str = "b",
    device: str | None = "d1",
    received: int = T0,
) -> DeadLetter:
    return DeadLetter(
        bucket=bucket,
        measurement="env",
        line=line,
        raw=f"env,device_id={device} temperature=130 {received}",
        reason=reason,
        rule=rule,
        source="lp:ns",
        device_id=device,
        received_ns=received,
    )


@pytest.fixture
def store(tmp_path: Path):
    s = DeadLetterStore(tmp_path / "dl" / "deadletters.sqlite")
    yield s
    s.close()


def test_add_is_idempotent_per_offset(store: DeadLetterStore) -> None:
    assert store.last_offset() == -1
    assert store.add(5, [letter(1), letter(2)], duplicates=3, accepted_rows=10,
                     accepted_by_device={"d1": 10}, flagged_rows=2, rule_counts={"range:temperature": 4})
    assert not store.add(5, [letter(1), letter(2)], duplicates=3, accepted_rows=10,
                         accepted_by_device={"d1": 10}, flagged_rows=2, rule_counts={"range:temperature": 4})
    assert store.last_offset() == 5
    assert store.count() == 2
    c = store.counters()
    assert c["accepted_rows"] == 10 and c["rejected_rows"] == 2 and c["duplicates"] == 3
    assert c["flagged_rows"] == 2 and c["batches"] == 1 and c["pending"] == 2
    assert c["rules"] == {"range:temperature": 4}
    assert store.device_stats() == {"d1": {"accepted": 10, "rejected": 2}}


def test_add_many_equals_one_add_per_record(tmp_path: Path) -> None:
    """Records applied together (one transaction, counters summed first) leave the store as
    applying them one by one does; a record applied before is skipped, not counted twice."""
    recs = [
        StatsRecord(1, (letter(1, device="d1"),), duplicates=1, accepted_rows=4,
                    accepted_by_device={"d1": 3, "d2": 1}, flagged_rows=1, rule_counts={"range:temperature": 2}),
        StatsRecord(2, (), accepted_rows=5, accepted_by_device={"d2": 4, "é \"q\"": 1}),
        StatsRecord(3, (letter(7, device=None, rule="parse"),), accepted_rows=0, rule_counts={"parse": 1}),
    ]
    one = DeadLetterStore(tmp_path / "one.sqlite")
    many = DeadLetterStore(tmp_path / "many.sqlite")
    try:
        for r in recs:
            assert one.add(r.log_offset, r.letters, duplicates=r.duplicates, accepted_rows=r.accepted_rows,
                           accepted_by_device=r.accepted_by_device, flagged_rows=r.flagged_rows,
                           rule_counts=r.rule_counts)
        assert many.add_many(recs[:1]) == 1
        assert many.add_many(recs) == 2  # offset 1 is applied already
        assert many.add_many(recs) == 0
        assert many.counters() == one.counters()
        assert many.device_stats() == one.device_stats()
        assert many.device_stats()["d2"] == {"accepted": 5, "rejected": 0}
        assert many.device_stats()['é "q"']["accepted"] == 1
        assert [(d["log_offset"], d["line"]) for d in many.list()] == [(d["log_offset"], d["line"]) for d in one.list()]
    finally:
        one.close()
        many.close()


def test_counters_accumulate_and_offsets_out_of_order(store: DeadLetterStore) -> None:
    store.add(10, [], accepted_rows=5, accepted_by_device={"a": 5})
    store.add(3, [letter()], accepted_rows=1, accepted_by_device={"a": 1, "b": 0})
    assert store.last_offset() == 10
    assert not store.add(3, [letter()])
    c = store.counters()
    assert c["accepted_rows"] == 6 and c["rejected_rows"] == 1 and c["batches"] == 2
    assert store.device_stats()["a"] == {"accepted": 6, "rejected": 0}


def test_persists_and_uses_wal(tmp_path: Path) -> None:
    p = tmp_path / "dl.sqlite"
    with DeadLetterStore(p) as s:
        s.add(1, [letter()], accepted_rows=1)
    with DeadLetterStore(p) as s:
        assert s.count() == 1 and s.last_offset() == 1 and not s.add(1, [letter()])
    con = sqlite3.connect(p)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_failed_add_leaves_nothing_behind(store: DeadLetterStore) -> None:
    bad = DeadLetter(None, "m", 1, "", "r", "x", "s", None, 0)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.add(7, [letter(), bad], accepted_rows=9)
    assert store.count() == 0 and store.last_offset() == -1 and store.counters()["accepted_rows"] == 0
    assert store.add(7, [letter()], accepted_rows=9)  # the retry applies


def test_filters(store: DeadLetterStore) -> None:
    store.add(1, [
        letter(1, bucket="b1", device="d1", received=T0),
        letter(2, reason="humidity is NaN", rule="non_finite:humidity", bucket="b1", device="d2", received=T0 + S),
        letter(3, reason="missing required tag 'site'; temperature=130 above maximum 100 degC",
               rule="required_tag:site,range:temperature", bucket="b2", device=None, received=T0 + 2 * S),
        letter(4, reason="invalid field value", rule="parse", bucket="b2", device=None, received=T0 + 3 * S),
    ])
    lines = lambda **kw: [d["line"] for d in store.list(**kw)]  # noqa: E731
    assert lines() == [4, 3, 2, 1]  # newest first
    assert lines(bucket="b1") == [2, 1]
    assert lines(reason_contains="NAN") == [2]
    assert lines(reason_contains="above MAXIMUM") == [3, 1]
    assert lines(rule="range:temperature") == [3, 1]
    assert lines(rule="required_tag:site") == [3]
    assert lines(rule="range") == []  # whole rule names only
    assert lines(device_id="d2") == [2]
    assert lines(since_ns=T0 + 2 * S) == [4, 3]
    assert lines(limit=2) == [4, 3] and lines(limit=2, offset=2) == [2, 1]
    assert store.count(bucket="b2") == 2 and store.count(rule="parse") == 1
    item = store.list(device_id="d1")[0]
    assert set(item) >= {"id", "bucket", "measurement", "line", "raw", "reason", "rule", "source",
                         "device_id", "received_ns", "replayed_ns", "log_offset"}
    assert item["raw"].startswith("env,device_id=d1")


def test_mark_replayed(store: DeadLetterStore) -> None:
    store.add(1, [letter(1), letter(2), letter(3)])
    ids = [d["id"] for d in store.list()]
    store.mark_replayed(ids[:2], T0 + 5 * S)
    assert store.count() == 1
    assert store.count(include_replayed=True) == 3
    replayed = [d for d in store.list(include_replayed=True) if d["replayed_ns"] is not None]
    assert {d["replayed_ns"] for d in replayed} == {T0 + 5 * S}
    c = store.counters()
    assert c["pending"] == 1 and c["replayed"] == 2 and c["rejected_rows"] == 3
    assert store.device_stats()["d1"]["rejected"] == 1
    assert [d["id"] for d in store.get(ids[:2])] == sorted(ids[:2])


def test_thread_safe_concurrent_adds(store: DeadLetterStore) -> None:
    def work(k: int) -> None:
        for i in range(20):
            store.add(k * 1000 + i, [letter(i)], accepted_rows=1, accepted_by_device={"d1": 1})
            store.list(limit=5)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.count() == 80
    assert store.counters()["accepted_rows"] == 80
    assert store.device_stats()["d1"] == {"accepted": 80, "rejected": 80}


def test_thousands_of_letters_per_call_are_fast(tmp_path: Path) -> None:
    with DeadLetterStore(tmp_path / "fast.sqlite", synchronous="NORMAL") as s:
        letters = [letter(i, device=f"d{i % 100}") for i in range(20_000)]
        t0 = time.perf_counter()
        s.add(1, letters)
        assert time.perf_counter() - t0 < 5.0
        assert s.count() == 20_000 and s.count(device_id="d7") == 200


def test_raw_is_capped(tmp_path: Path) -> None:
    with DeadLetterStore(tmp_path / "cap.sqlite", max_raw_chars=10) as s:
        s.add(1, [letter()])
        assert len(s.list()[0]["raw"]) == 10


def test_closed_store_raises(tmp_path: Path) -> None:
    s = DeadLetterStore(tmp_path / "c.sqlite")
    s.close()
    s.close()
    with pytest.raises(RuntimeError):
        s.count()


_counts = st.dictionaries(st.sampled_from(["a", "b", "é", "d 4", ""]), st.integers(-3, 10**12))


@given(st.lists(_counts, max_size=6), st.lists(_counts, max_size=4))
def test_maps_and_tables_summed_per_key_like_a_counter(maps: list[dict[str, int]], tabled: list[dict[str, int]]) -> None:
    """A drain's counter maps and count tables (how the platform logs devices) are summed per
    key before the upserts; zero sums are left out."""
    want: dict[str, int] = {}
    for m in maps + tabled:
        for k, v in m.items():
            want[k] = want.get(k, 0) + v
    tables = [pa.table({"device_id": list(m), "n": pa.array(list(m.values()), pa.int64())}) for m in tabled]
    got = _summed(maps, [*tables, None])
    assert dict(got) == {k: v for k, v in want.items() if v}
    assert len(got) == len({k for k, v in want.items() if v})  # one row per key
