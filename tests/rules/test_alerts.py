"""The alert store: idempotent, forward-only apply; acknowledgement; queries; the live feed."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import sensorium.rules.alerts as alerts_mod
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


def test_a_store_made_with_the_clustered_history_table_still_works(tmp_path: Path, clock: FakeClock) -> None:
    """Stores made before ``alert_events`` became a rowid table keep their ``WITHOUT ROWID``
    table: replays are still ignored and the history reads back in seq order."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = alerts_mod._SCHEMA.replace("    UNIQUE (alert_id, seq)\n);", "    PRIMARY KEY (alert_id, seq)\n) WITHOUT ROWID;")
    assert old != alerts_mod._SCHEMA
    with sqlite3.connect(path) as c:
        c.executescript(old)
    ts = [tr(1), tr(2, severity="critical"), tr(3, state="resolved")]
    with AlertStore(path, clock=clock) as s:
        assert s.apply(ts[:2]) == ts[:2]
        assert s.apply(ts) == ts[2:]  # the first two again: history only, ignored
        a = s.get(ts[0].alert_id)
        assert a is not None and [e["seq"] for e in a["events"]] == [1, 2, 3]
    with sqlite3.connect(path) as c:
        ddl = c.execute("SELECT sql FROM sqlite_master WHERE name = 'alert_events'").fetchone()[0]
    assert "WITHOUT ROWID" in ddl


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


def test_to_dict_and_to_json_match_dataclasses_asdict() -> None:
    t = Transition(
        alert_id="a", seq=3, rule="r", series="s", measurement="m", field=None,
        tags={"device_id": "d1"}, state="resolved", severity="", value=None,
        event_time_ns=T0, fired_at_ns=T0 - S, message="back", bucket="b", flapping=True,
        extra={"threshold": 50.0, "levels": [1, 2], "nested": {"x": 1}},
    )  # fmt: skip
    want = {k: v for k, v in dataclasses.asdict(t).items() if not k.startswith("_")}
    want["key"] = "a:3"
    d = t.to_dict()
    assert d == want and list(d) == list(want)  # same content, same key order
    assert t.to_json() == orjson.dumps(want).decode() and t.to_json() is t.to_json()
    d["tags"]["device_id"] = "changed"
    d["extra"]["nested"]["x"] = 2
    d["extra"]["levels"].append(3)
    assert t.tags == {"device_id": "d1"} and t.extra["nested"] == {"x": 1}  # copies
    assert t.extra["levels"] == [1, 2]
    assert dataclasses.replace(t, seq=4).to_json() != t.to_json()  # the cache is not carried
    assert t == dataclasses.replace(t) and "_json" not in repr(t)


# -- a realistic burst in one call ---------------------------------------------------------------


def _reference_apply(
    rows: dict[str, dict[str, Any]], history: set[tuple[str, int]], batch: list[Transition]
) -> list[Transition]:
    """The lifecycle one transition at a time (what apply did before it went set-based)."""
    new: list[Transition] = []
    order = {id(t): i for i, t in enumerate(batch)}
    slots: dict[str, list[int]] = {}
    for i, t in enumerate(batch):
        slots.setdefault(t.alert_id, []).append(i)
    ordered = list(batch)
    for idx in slots.values():
        by_seq = sorted((batch[i] for i in idx), key=lambda t: (t.seq, order[id(t)]))
        for i, t in zip(idx, by_seq, strict=True):
            ordered[i] = t
    for t in ordered:
        if (t.alert_id, t.seq) in history:
            continue
        history.add((t.alert_id, t.seq))
        resolved_at = t.event_time_ns if t.state == "resolved" else None
        r = rows.get(t.alert_id)
        if r is None:
            rows[t.alert_id] = {
                "alert_id": t.alert_id, "rule": t.rule, "series": t.series, "bucket": t.bucket,
                "measurement": t.measurement, "field": t.field, "tags": dict(t.tags),
                "state": t.state, "severity": t.severity, "value": t.value,
                "message": t.message, "fired_at_ns": t.fired_at_ns,
                "resolved_at_ns": resolved_at, "updated_event_ns": t.event_time_ns,
                "last_seq": t.seq, "changes": 1, "flapping": t.flapping,
                "acknowledged": False, "acked_by": None, "acked_at_ns": None, "ack_note": None,
            }  # fmt: skip
        elif t.seq <= r["last_seq"]:
            continue
        else:
            if r["state"] == "resolved" and t.state == "firing":
                r.update(acknowledged=False, acked_by=None, acked_at_ns=None, ack_note=None)
            r.update(
                state=t.state, severity=t.severity or r["severity"], value=t.value,
                message=t.message, tags=dict(t.tags), resolved_at_ns=resolved_at,
                updated_event_ns=t.event_time_ns, last_seq=t.seq, changes=r["changes"] + 1,
                flapping=t.flapping,
            )  # fmt: skip
        new.append(t)
    return new


def burst(n: int, *, seed: int, start: int, first_seq: int = 1) -> list[Transition]:
    """``n`` transitions of many alerts, 1 to 4 changes each (firing, severity changes,
    resolved, reopened), some flapping; alerts interleaved, each alert's changes in seq order."""
    rnd = random.Random(seed)
    per_alert: list[list[Transition]] = []
    total, i = 0, 0
    while total < n:
        i += 1
        series, fired = f"climate|device_id=b{seed}-{i}", start + i * S
        states = ["firing"]
        for _ in range(rnd.choice([0, 0, 0, 1, 1, 2, 3])):
            states.append(rnd.choice(["firing", "resolved"]))
        changes = [
            tr(first_seq + k, series=series, fired_at=fired, state=st,
               severity=rnd.choice(["warning", "critical"]), value=rnd.random() * 100,
               at=fired + k * S, flapping=rnd.random() < 0.05,
               tags={"device_id": f"b{seed}-{i}", "site": f"s{i % 7}"})
            for k, st in enumerate(states)
        ]  # fmt: skip
        per_alert.append(changes)
        total += len(changes)
    # interleave the alerts at random, each one's changes staying in order
    out: list[Transition] = []
    queues = [list(reversed(c)) for c in per_alert]
    while queues:
        q = queues[rnd.randrange(len(queues))]
        out.append(q.pop())
        if not q:
            queues.remove(q)
    return out[:n]


def test_a_burst_of_ten_thousand_in_one_call(tmp_path: Path, clock: FakeClock) -> None:
    """One apply call of a 10k burst gives what applying it one transition at a time gives:
    the same new transitions (in order), rows, history, acknowledgements cleared on reopen only,
    the live feed, and the outbox queues each non-flapping new key once per sink."""
    from sensorium.config import AlertSettings
    from sensorium.rules.sinks import Dispatcher, LogSink

    class Named(LogSink):
        def __init__(self, name: str) -> None:
            self.name = name

    rnd = random.Random(42)
    store = AlertStore(tmp_path / "alerts.sqlite", clock=clock)
    out = Dispatcher(
        tmp_path / "deliveries.sqlite", AlertSettings(), clock=clock,
        sinks=[Named("log"), Named("hook")],
    )  # fmt: skip
    ref_rows: dict[str, dict[str, Any]] = {}
    ref_history: set[tuple[str, int]] = set()
    try:
        # what was there before: ~2,000 alerts, some resolved, some acknowledged
        before = burst(4_000, seed=1, start=T0)
        assert store.apply(before) == _reference_apply(ref_rows, ref_history, before)
        out.enqueue(before)
        acked = rnd.sample(sorted(ref_rows), 300)
        for aid in acked:
            store.ack(aid, "ops", "seen")
            ref_rows[aid].update(
                acknowledged=True, acked_by="ops", acked_at_ns=clock.now, ack_note="seen"
            )
        # the burst: new alerts, further changes of existing ones (reopening some), replays of
        # stored transitions, late never-seen older seqs, duplicates in the call, disorder
        cont: list[Transition] = []
        for aid in sorted(ref_rows)[:1_000]:
            r = ref_rows[aid]
            for k in range(rnd.choice([1, 2])):
                state = (
                    "firing"
                    if (k == 0 and r["state"] == "resolved")
                    else rnd.choice(["firing", "resolved"])
                )
                cont.append(tr(
                    r["last_seq"] + 1 + k, series=r["series"], fired_at=r["fired_at_ns"],
                    state=state, severity=rnd.choice(["warning", "critical"]),
                    at=r["updated_event_ns"] + (k + 1) * S, tags=r["tags"],
                ))  # fmt: skip
        stored_again = rnd.sample(before, 400)
        late = [
            tr(r["last_seq"] + 5, series=r["series"], fired_at=r["fired_at_ns"])
            for r in list(ref_rows.values())[1_000:1_100]
        ]  # gaps: seq +5 now, seq +3 (never seen, older) later in this same call
        late += [
            tr(r["last_seq"] + 3, series=r["series"], fired_at=r["fired_at_ns"], state="resolved")
            for r in list(ref_rows.values())[1_000:1_100]
        ]
        fresh = burst(
            10_000 - len(cont) - len(stored_again) - len(late) - 200, seed=2, start=T0 + 10**6 * S
        )
        batch = fresh + cont + stored_again + late
        rnd.shuffle(batch)  # alerts' changes out of seq order too
        batch += rnd.sample(batch, 200)  # duplicates within the call
        assert len(batch) == 10_000

        with store.subscribe(maxsize=20_000) as sub:
            new = store.apply(batch)
            want = _reference_apply(ref_rows, ref_history, batch)
            assert [t.key for t in new] == [t.key for t in want]
            assert new == want
            events = []
            while (e := sub.get_nowait()) is not None:
                events.append(e)
            assert [e.id for e in events] == [t.key for t in new]
            assert [e.data for e in events[:50]] == [t.to_dict() for t in new[:50]]

        # rows: exactly the reference, for every alert
        got = {a["alert_id"]: a for a in store.list(limit=100_000)}
        assert got.keys() == ref_rows.keys()
        assert got == ref_rows
        counts = store.counts()
        assert counts["total"] == len(ref_rows)
        assert counts["acknowledged"] == sum(
            1 for r in ref_rows.values() if r["acknowledged"] and r["state"] == "firing"
        )
        # both ways were taken: acknowledgements cleared by a reopen, and kept otherwise
        assert any(not got[a]["acknowledged"] for a in acked)
        assert any(got[a]["acknowledged"] and a in {t.alert_id for t in cont} for a in acked)
        # history: every distinct (alert_id, seq) once, the first of duplicates kept
        for t in rnd.sample(late, 20) + rnd.sample(fresh, 20):
            a = store.get(t.alert_id)
            assert a is not None and (t.alert_id, t.seq) in {
                (e["alert_id"], e["seq"]) for e in a["events"]
            }
        n_events = store._db().execute("SELECT COUNT(*) FROM alert_events").fetchone()[0]
        assert n_events == len(ref_history)

        # the outbox: each non-flapping key once per sink, in call order, then nothing again
        keys_before = {t.key for t in before if not t.flapping}
        want_keys = list(
            dict.fromkeys(t.key for t in batch if not t.flapping and t.key not in keys_before)
        )
        assert out.enqueue(batch) == 2 * len(want_keys)
        pending = out.pending(limit=100_000)
        tail = [p["key"] for p in pending[-2 * len(want_keys) :]]
        assert tail == [k for k in want_keys for _ in ("log", "hook")]
        assert [p["sink"] for p in pending[:2]] == ["log", "hook"]
        by_key = {t.key: t for t in reversed(batch)}  # the first of duplicates
        assert all(p["payload"] == by_key[p["key"]].to_dict() for p in pending[-200:])
        assert out.enqueue(batch) == 0 and out.enqueue(new) == 0
        assert store.apply(batch) == []

        # durability as configured: FULL by default
        assert store._db().execute("PRAGMA synchronous").fetchone() == (2,)
        assert out._db().execute("PRAGMA synchronous").fetchone() == (2,)
    finally:
        store.close()
        out.close()


def test_commits_are_checkpointed_in_the_background(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(alerts_mod, "CHECKPOINT_DELAY_S", 0.01)
    store = AlertStore(tmp_path / "alerts.sqlite", clock=clock)
    cp = store._checkpointer
    assert cp._thread is None  # nothing written yet: no thread
    store.apply(burst(500, seed=3, start=T0))
    deadline = time.monotonic() + 10
    while cp.checkpoints == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cp.checkpoints >= 1
    # everything written is in the database file: a checkpoint finds nothing left to copy
    busy, wal_frames, done = store._db().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and wal_frames == done
    thread = cp._thread
    store.close()
    assert thread is not None and not thread.is_alive()
    with AlertStore(tmp_path / "alerts.sqlite", clock=clock) as again:
        assert again.counts()["total"] > 0


def test_follow_relays_what_another_process_stores(tmp_path: Path, clock: FakeClock) -> None:
    """An api node's store follows the file the workers write: their transitions reach its live
    feed (once each, in seq order); its own acknowledgements are not echoed twice."""
    writer = AlertStore(tmp_path / "a.sqlite", clock=clock)
    reader = AlertStore(tmp_path / "a.sqlite", clock=clock)
    try:
        writer.apply([tr(1)])  # before following: not relayed
        reader.follow(interval_s=0.05)
        sub = reader.subscribe()
        writer.apply([tr(2, state="resolved", severity=""), tr(1, series="other", rule="r2")])
        got = [sub.get(timeout=5), sub.get(timeout=5)]
        assert sorted((e.data["rule"], e.data["seq"], e.data["state"]) for e in got if e is not None) == [
            ("r2", 1, "firing"), ("too_hot", 2, "resolved")]
        reader.ack(got[0].data["alert_id"], by="ops")  # type: ignore[union-attr]
        assert sub.get(timeout=5).kind == "ack"  # type: ignore[union-attr]
        assert sub.get(timeout=0.3) is None  # nothing relayed twice
    finally:
        reader.close()
        writer.close()
