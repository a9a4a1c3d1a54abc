"""The log contract (``sensorium.log.base.Log``), run against every adapter: the embedded WAL and
NATS JetStream (a real server on ``SENSORIUM_TEST_NATS_URL``; skipped without one, except under
``CI=true``, where it must run). Each JetStream test uses its own stream, deleted afterwards."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from sensorium.log.base import Log
from sensorium.log.wal import KIND_DATA, KIND_DEAD_LETTERS, WAL, encode_payload
from tests.conftest import service_missing

NATS_URL = os.environ.get("SENSORIUM_TEST_NATS_URL", "nats://127.0.0.1:4222")

Opener = Callable[[], Any]


def require_nats() -> None:
    """Skip without a NATS server -- but fail under CI, where it must run."""
    try:
        import nats  # noqa: F401

        from sensorium.errors import LogUnavailable
        from sensorium.log.nats import JetStreamLog
    except ImportError as exc:  # pragma: no cover
        reason = f"the NATS client is not installed ({exc}): pip install 'sensorium[nats]'"
    else:
        try:
            probe = JetStreamLog(NATS_URL, f"probe_{uuid.uuid4().hex[:12]}", connect_timeout_s=1)
        except LogUnavailable as exc:
            reason = f"NATS JetStream not reachable at {NATS_URL}: {exc}"
        else:
            probe.delete_stream()
            probe.close()
            return
    service_missing(reason)


def _payload(i: int, measurement: str = "climate") -> bytes:
    return encode_payload(
        KIND_DATA, {"i": i, "measurement": measurement}, pa.table({"v": [i, i * 10]})
    )


@pytest.fixture(params=["wal", "nats"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A function opening (or re-opening) the same log; every opened log is closed at the end."""
    opened: list[Any] = []
    if request.param == "wal":

        def open_wal() -> WAL:
            w = WAL(tmp_path / "wal")
            opened.append(w)
            return w

        yield open_wal
    else:
        require_nats()
        from sensorium.log.nats import JetStreamLog

        name = f"contract_{uuid.uuid4().hex[:12]}"

        def open_js() -> JetStreamLog:
            j = JetStreamLog(NATS_URL, name, partitions=3)
            opened.append(j)
            return j

        yield open_js
        cleanup = JetStreamLog(NATS_URL, name)
        cleanup.delete_stream()
        cleanup.close()
    for log in opened:
        log.close()


def test_adapters_satisfy_the_port(opener: Opener) -> None:
    assert isinstance(opener(), Log)


def test_append_then_replay_in_order(opener: Opener) -> None:
    log = opener()
    offs = log.append([_payload(0), _payload(1, "power")])
    offs += log.append([encode_payload(KIND_DEAD_LETTERS, {"x": "y"}, None)])
    offs += log.append([_payload(i, f"m{i % 4}") for i in range(2, 20)])
    assert offs == sorted(offs) and len(set(offs)) == 21
    recs = list(log.replay(0))
    assert [r.offset for r in recs] == offs
    assert recs[0].header == {"i": 0, "measurement": "climate"}
    assert recs[0].table is not None and recs[0].table["v"].to_pylist() == [0, 0]
    assert recs[2].kind == KIND_DEAD_LETTERS and recs[2].table is None
    assert [r.header.get("i") for r in recs[3:]] == list(range(2, 20))
    assert log.next_offset > offs[-1]


def test_replay_from_an_offset(opener: Opener) -> None:
    log = opener()
    offs = log.append([_payload(i) for i in range(10)])
    assert [r.offset for r in log.replay(offs[6])] == offs[6:]
    assert [r.header["i"] for r in log.replay(offs[6])] == [6, 7, 8, 9]
    assert list(log.replay(offs[-1] + 1)) == []


def test_records_survive_close_and_reopen(opener: Opener) -> None:
    log = opener()
    offs = log.append([_payload(i) for i in range(5)])
    log.close()
    log2 = opener()
    assert [r.offset for r in log2.replay(0)] == offs
    more = log2.append([_payload(5)])
    assert more[0] > offs[-1]
    assert [r.header["i"] for r in log2.replay(0)] == [0, 1, 2, 3, 4, 5]


def test_concurrent_appends_land_once(opener: Opener) -> None:
    log = opener()
    threads_n, per = 4, 25
    got: list[int] = []
    lock = threading.Lock()
    applied: list[int] = []

    def writer(t: int) -> None:
        for k in range(per):
            offs = log.append(
                [_payload(t * 1000 + k, f"m{t}")],
                under_lock=(lambda o: applied.extend(o)) if k % 2 else None,
            )
            with lock:
                got.extend(offs)

    ths = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert len(got) == len(set(got)) == threads_n * per
    recs = list(log.replay(0))
    assert sorted(got) == [r.offset for r in recs]
    keys = [r.header["i"] for r in recs]
    assert sorted(keys) == sorted(t * 1000 + k for t in range(threads_n) for k in range(per))
    assert applied == sorted(applied)  # under_lock runs in offset order


def test_truncate_before_keeps_what_is_after(opener: Opener) -> None:
    log = opener()
    offs = log.append([_payload(i) for i in range(6)])
    log.truncate_before(offs[3])
    assert [r.offset for r in log.replay(offs[3])] == offs[3:]  # never drops what is needed


# -- JetStream-specific ------------------------------------------------------------------------


@pytest.fixture
def jslog() -> Iterator[Any]:
    require_nats()
    from sensorium.log.nats import JetStreamLog

    log = JetStreamLog(NATS_URL, f"js_{uuid.uuid4().hex[:12]}", partitions=2)
    yield log
    log.delete_stream()
    log.close()


def test_duplicate_message_id_is_stored_once(jslog: Any) -> None:
    a = jslog.append([_payload(1)], msg_ids=["writer-a-7"])
    b = jslog.append([_payload(1)], msg_ids=["writer-a-7"])  # a retried publish
    assert a == b
    c = jslog.append([_payload(2)])
    assert [r.offset for r in jslog.replay(0)] == [a[0], c[0]]


def test_message_ids_are_deterministic_per_writer(jslog: Any) -> None:
    assert jslog.message_ids(2) == [f"{jslog.writer_id}-0", f"{jslog.writer_id}-1"]
    assert jslog.message_ids(1) == [f"{jslog.writer_id}-2"]


def test_partitions_route_by_measurement(jslog: Any) -> None:
    subj = {m: jslog.subject(_payload(0, m)) for m in ("a", "b", "c", "d", "e")}
    assert all(s.startswith(f"{jslog.subject_prefix}.") for s in subj.values())
    assert len(set(subj.values())) == 2  # both partitions used
    assert jslog.subject(_payload(9, "a")) == subj["a"]  # stable


def test_unacked_records_are_redelivered_after_ack_wait(jslog: Any) -> None:
    offs = jslog.append([_payload(i) for i in range(3)])
    c = jslog.consumer("w", ack_wait_s=1.0)
    first = c.fetch(10, timeout=2)
    assert [r.offset for r in first] == offs
    assert c.fetch(10, timeout=0.3) == []  # in flight, not yet due
    time.sleep(1.2)
    again = c.fetch(10, timeout=2)
    assert [r.offset for r in again] == offs  # at-least-once
    c.ack(again)
    time.sleep(1.2)
    assert c.fetch(10, timeout=0.5) == []  # acked: never again


def test_acked_records_are_not_redelivered_to_a_new_worker(jslog: Any) -> None:
    offs = jslog.append([_payload(i) for i in range(4)])
    c = jslog.consumer("w", ack_wait_s=1.0)
    got = c.fetch(2, timeout=2)
    c.ack(got)
    c.close()
    c2 = jslog.consumer("w", ack_wait_s=1.0)  # a restarted worker binds the same durable
    rest = c2.fetch(10, timeout=2)
    assert [r.offset for r in rest] == offs[2:]
    c2.ack(rest)


def test_two_consumers_of_one_durable_share_the_work(jslog: Any) -> None:
    offs = jslog.append([_payload(i, f"m{i}") for i in range(40)])
    c1 = jslog.consumer("shared", ack_wait_s=30.0)
    c2 = jslog.consumer("shared", ack_wait_s=30.0)
    seen1: list[int] = []
    seen2: list[int] = []
    for _ in range(20):
        for c, seen in ((c1, seen1), (c2, seen2)):
            recs = c.fetch(3, timeout=0.3)
            seen.extend(r.offset for r in recs)
            c.ack(recs)
        if len(seen1) + len(seen2) >= len(offs):
            break
    assert sorted(seen1 + seen2) == offs  # every record exactly once across the two
    assert not set(seen1) & set(seen2)
    assert seen1 and seen2  # both did work


def test_unreachable_server_is_a_503_error() -> None:
    pytest.importorskip("nats")
    from sensorium.errors import LogUnavailable
    from sensorium.log.nats import JetStreamLog

    with pytest.raises(LogUnavailable) as ei:
        JetStreamLog("nats://127.0.0.1:1", "nowhere", connect_timeout_s=1, timeout_s=1)
    assert ei.value.status == 503 and ei.value.code == "log_unavailable"
