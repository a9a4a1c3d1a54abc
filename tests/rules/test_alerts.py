"""The alert store: idempotent, forward-only apply; acknowledgement; queries; the live feed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sensorium.errors import NotFound
from sensorium.rules.alerts import AlertEvent, AlertStore
from sensorium.rules.types import Transition, alert_id
from tests.conftest import T0, FakeClock

S = 1_000_000_000


def tr(
    seq: int = 1,
    *,
    rule: str = "too_hot",
    series: str = "temp|device_id=d1",
    fired_at: int = T0,
    state: str = "firing",
    severity: str = "warning",
    value: float | None = 31.0,
    at: int | None = None,
    tags: dict[str, str] | None = None,
    flapping: bool = False,
) -> Transition:
    return Transition(
        alert_id=alert_id(rule, series, fired_at),
        seq=seq,
        rule=rule,
        series=series,
        measurement="env",
        field="temperature",
        tags=tags if tags is not None else {"device_id": series.rsplit("=", 1)[-1]},
        state=state,  # type: ignore[arg-type]
        severity="" if state == "resolved" else severity,
        value=value,
        event_time_ns=at if at is not None else fired_at + (seq - 1) * 10 * S,
        fired_at_ns=fired_at,
        message=f"{rule} {state} {severity}",
        flapping=flapping,
    )


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> Iterator[AlertStore]:
    s = AlertStore(tmp_path / "alerts.sqlite", clock=clock)
    yield s
    s.close()


def test_apply_is_idempotent(store: AlertStore) -> None:
    ts = [tr(1), tr(2, severity="critical"), tr(1, series="temp|device_id=d2")]
    assert store.apply(ts) == ts
    assert store.apply(ts) == []
    assert store.apply(ts[1:]) == []
    assert store.counts()["total"] == 2
    a = store.get(ts[0].alert_id)
    assert a is not None
    assert a["last_seq"] == 2 and a["changes"] == 2 and a["severity"] == "critical"
    assert [e["seq"] for e in a["events"]] == [1, 2]
    assert a["events"][1] == ts[1].to_dict()


def test_replay_across_reopen_of_the_file(tmp_path: Path, clock: FakeClock) -> None:
    ts = [tr(1), tr(2, state="resolved")]
    with AlertStore(tmp_path / "a.sqlite", clock=clock) as s:
        assert s.apply(ts) == ts
    with AlertStore(tmp_path / "a.sqlite", clock=clock) as s:
        assert s.apply(ts) == []
        assert s.list()[0]["state"] == "resolved"


def test_rows_only_move_forward(store: AlertStore) -> None:
    first, second, third = tr(1), tr(2, severity="critical"), tr(3, state="resolved")
    assert store.apply([first, third]) == [first, third]
    # seq 2 was never seen, but it is older than the alert: history only, not re-notified
    assert store.apply([second]) == []
    a = store.get(first.alert_id)
    assert a is not None
    assert a["state"] == "resolved" and a["last_seq"] == 3 and a["changes"] == 2
    assert [e["seq"] for e in a["events"]] == [1, 2, 3]


def test_one_call_applies_an_alerts_transitions_in_seq_order(store: AlertStore) -> None:
    other = tr(1, series="temp|device_id=d9")
    batch = [tr(2, state="resolved"), other, tr(1)]
    new = store.apply(batch)
    assert [(t.series, t.seq) for t in new] == [
        ("temp|device_id=d1", 1),
        ("temp|device_id=d9", 1),
        ("temp|device_id=d1", 2),
    ]
    a = store.get(batch[0].alert_id)
    assert a is not None and a["state"] == "resolved" and a["resolved_at_ns"] == T0 + 10 * S


def test_resolved_alert_keeps_its_severity(store: AlertStore) -> None:
    store.apply([tr(1, severity="critical"), tr(2, state="resolved", value=20.0)])
    (a,) = store.list()
    assert a["severity"] == "critical" and a["value"] == 20.0 and a["state"] == "resolved"


def test_ack_survives_severity_change_and_resolve_and_reopen_clears_it(
    store: AlertStore, clock: FakeClock
) -> None:
    aid = tr(1).alert_id
    store.apply([tr(1)])
    acked = store.ack(aid, "alice", "on it")
    assert acked["acknowledged"] is True
    assert (acked["acked_by"], acked["ack_note"], acked["acked_at_ns"]) == (
        "alice",
        "on it",
        clock.now,
    )
    store.apply([tr(2, severity="critical")])
    a = store.get(aid)
    assert a is not None and a["acknowledged"] and a["severity"] == "critical"
    store.apply([tr(3, state="resolved")])
    a = store.get(aid)
    assert a is not None and a["acknowledged"] and a["resolved_at_ns"] is not None
    store.apply([tr(4, severity="warning")])  # reopen: same id, firing again
    a = store.get(aid)
    assert a is not None
    assert a["state"] == "firing" and a["resolved_at_ns"] is None
    assert not a["acknowledged"] and a["acked_by"] is None and a["ack_note"] is None


def test_ack_unknown_alert_raises_not_found(store: AlertStore) -> None:
    with pytest.raises(NotFound) as e:
        store.ack("nope", "bob", None)
    assert e.value.status == 404 and e.value.context["alert_id"] == "nope"


def test_list_filters_order_and_counts(store: AlertStore) -> None:
    a = tr(1, series="temp|device_id=Boiler-1", at=T0 + 1 * S)
    b = tr(1, series="temp|device_id=d2", severity="critical", at=T0 + 2 * S)
    c = tr(1, rule="offline", series="temp|device_id=d3", at=T0 + 3 * S)
    d = tr(1, series="temp|device_id=d4", at=T0 + 4 * S)
    d2 = tr(2, series="temp|device_id=d4", state="resolved", at=T0 + 5 * S)
    store.apply([a, b, c, d, d2])
    store.ack(b.alert_id, "ops", None)

    def ids(**kw: Any) -> list[str]:
        return [x["series"].rsplit("=", 1)[-1] for x in store.list(**kw)]

    assert ids() == ["d4", "d3", "d2", "Boiler-1"]  # most recently changed first
    assert ids(state="firing") == ["d3", "d2", "Boiler-1"]
    assert ids(state="resolved") == ["d4"]
    assert ids(state="acknowledged") == ["d2"]
    assert ids(state="unacknowledged") == ["d3", "Boiler-1"]
    assert ids(rule="offline") == ["d3"]
    assert ids(severity="critical") == ["d2"]
    assert ids(severity="warning") == ["d4", "d3", "Boiler-1"]  # d4 resolved, kept its severity
    assert ids(series_contains="boiler") == ["Boiler-1"]
    assert ids(since_ns=T0 + 3 * S) == ["d4", "d3"]
    assert ids(limit=2, offset=1) == ["d3", "d2"]
    assert ids(state="firing", rule="too_hot", severity="warning") == ["Boiler-1"]
    with pytest.raises(ValueError):
        store.list(state="bogus")  # type: ignore[arg-type]
    row = store.list(series_contains="d2")[0]
    assert row["tags"] == {"device_id": "d2"} and row["flapping"] is False
    assert "events" not in row
    assert store.counts() == {
        "total": 4,
        "firing": 3,
        "resolved": 1,
        "acknowledged": 1,
        "unacknowledged": 2,
        "flapping": 0,
        "by_severity": {"critical": 1, "warning": 2},
    }
    assert store.get("missing") is None


def test_flapping_transitions_are_stored(store: AlertStore) -> None:
    t = tr(1, flapping=True)
    assert store.apply([t]) == [t]
    assert store.list()[0]["flapping"] is True
    assert store.counts()["flapping"] == 1


def test_subscription_gets_transitions_from_another_thread_and_acks(store: AlertStore) -> None:
    with store.subscribe() as sub:
        ts = [tr(1), tr(2, severity="critical")]
        worker = threading.Thread(target=store.apply, args=(ts,))
        worker.start()
        got = [sub.get(timeout=5), sub.get(timeout=5)]
        worker.join()
        assert [e.kind for e in got if e] == ["alert", "alert"]
        assert [e.data for e in got if e] == [t.to_dict() for t in ts]
        store.apply(ts)  # a replay publishes nothing
        assert sub.get(timeout=0.05) is None
        store.ack(ts[0].alert_id, "alice", None)
        ack = sub.get(timeout=5)
        assert ack is not None and ack.kind == "ack" and ack.data["acked_by"] == "alice"
        assert ack.id == f"{ts[0].alert_id}:ack" and ack.to_dict()["event"] == "ack"
        assert got[0] is not None and got[0].id == ts[0].key
    assert sub.closed and sub.get(timeout=0) is None
    store.apply([tr(3, state="resolved")])  # closed subscriptions are no longer fed


def test_async_consumer_of_a_worker_thread(store: AlertStore) -> None:
    async def consume() -> list[AlertEvent | None]:
        sub = store.subscribe()
        try:
            assert await sub.next(timeout=0.05) is None  # times out quietly
            timer = threading.Timer(0.1, store.apply, args=([tr(1), tr(2, state="resolved")],))
            timer.start()
            started = time.monotonic()
            first = await sub.next(timeout=5)
            assert time.monotonic() - started < 4
            second = await sub.next(timeout=5)
            timer.join()
            return [first, second]
        finally:
            sub.close()

    got = asyncio.run(consume())
    assert [e.data["seq"] for e in got if e] == [1, 2]


def test_close_wakes_an_async_waiter(store: AlertStore) -> None:
    sub = store.subscribe()
    timer = threading.Timer(0.1, sub.close)

    async def main() -> AlertEvent | None:
        timer.start()
        return await sub.next(timeout=10)

    started = time.monotonic()
    assert asyncio.run(main()) is None
    assert time.monotonic() - started < 5
    timer.join()


def test_slow_subscriber_drops_the_oldest(store: AlertStore) -> None:
    sub = store.subscribe(maxsize=2)
    store.apply([tr(1), tr(2), tr(3)])
    assert sub.dropped == 1
    got = [sub.get_nowait(), sub.get_nowait(), sub.get_nowait()]
    assert [e.data["seq"] if e else None for e in got] == [2, 3, None]
    store.close()
    assert sub.closed


def test_sse_framing(store: AlertStore) -> None:
    sub = store.subscribe()
    store.apply([tr(1)])
    e = sub.get(timeout=1)
    assert e is not None
    text = e.sse()
    assert text.startswith(f"id: {tr(1).key}\nevent: alert\ndata: {{")
    assert text.endswith("}\n\n")
    sub.close()
