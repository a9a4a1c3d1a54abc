"""Rule engine semantics, one behaviour per test (hand-made logs, injected clock)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import pytest

from sensorium.rules.engine import RuleEngine
from sensorium.rules.model import (
    AbsenceRule,
    CountRule,
    RateRule,
    RuleSet,
    SequenceRule,
    ThresholdRule,
)
from sensorium.rules.types import Transition, alert_id
from tests.rules._frames import T0, S, series_frame, values

D7 = "climate,device_id=d7"
D8 = "climate,device_id=d8"
EN = "energy,device_id=e1"
MIN = 60 * S


def engine(*rules: object, window: int = 300 * S, changes: int = 6) -> RuleEngine:
    return RuleEngine(RuleSet(rules=tuple(rules)), window, changes)  # type: ignore[arg-type]


def feed(eng: RuleEngine, rows: Sequence[tuple[Any, ...]], arrival: bool = False) -> list[Transition]:
    keys = sorted({str(r[0]) for r in rows})
    return eng.process(values(rows, arrival=arrival), series_frame(keys))


def temp_rule(**kw: object) -> ThresholdRule:
    base: dict[str, object] = {
        "name": "temp",
        "measurement": "climate",
        "field": "temperature",
        "above": {"warning": 50, "critical": 60},
        "unit": "°C",
    }
    base.update(kw)
    return ThresholdRule.model_validate(base)


def states(trs: list[Transition]) -> list[tuple[str, str, int]]:
    return [(t.state, t.severity, t.seq) for t in trs]


# --------------------------------------------------------------------------- thresholds


def test_oscillation_inside_the_deadband_fires_once_and_resolves_once() -> None:
    eng = engine(temp_rule(deadband=2.0))
    signal = [49.0, 50.5, 49.2, 50.1, 48.6, 50.9, 49.9, 48.1, 50.0, 49.0, 47.9, 45.0]
    trs = feed(eng, [(D7, "temperature", T0 + i * S, x) for i, x in enumerate(signal)])
    assert states(trs) == [("firing", "warning", 1), ("resolved", "", 2)]
    assert trs[0].event_time_ns == T0 + 1 * S  # first crossing (50.5)
    assert trs[1].event_time_ns == T0 + 10 * S  # first value below 50 - 2 (47.9)
    assert trs[0].alert_id == trs[1].alert_id == alert_id("temp", D7, T0 + S)


def test_without_deadband_the_same_signal_flaps() -> None:
    eng = engine(temp_rule())
    signal = [49.0, 50.5, 49.2, 50.1, 48.6]
    trs = feed(eng, [(D7, "temperature", T0 + i * S, x) for i, x in enumerate(signal)])
    assert len(trs) == 4


def test_severity_is_the_highest_level_and_changes_update_the_alert() -> None:
    eng = engine(temp_rule(deadband=1.0))
    signal = [20, 55, 61, 59.5, 58.9, 45]
    trs = feed(eng, [(D7, "temperature", T0 + i * S, float(x)) for i, x in enumerate(signal)])
    assert states(trs) == [
        ("firing", "warning", 1),
        ("firing", "critical", 2),
        ("firing", "warning", 3),  # 58.9 < 60 - 1
        ("resolved", "", 4),
    ]
    assert len({t.alert_id for t in trs}) == 1
    assert trs[1].message == "temperature 61 °C on climate,device_id=d7 is above critical 60"
    assert trs[1].extra == {"direction": "above", "level": "critical", "threshold": 60.0}


def test_below_levels() -> None:
    eng = engine(temp_rule(above=None, below={"warning": -10, "critical": -20}, deadband=1.0))
    trs = feed(eng, [(D7, "temperature", T0 + i * S, x) for i, x in enumerate([0.0, -10.0, -25.0, -9.5, -8.9])])
    assert states(trs) == [("firing", "warning", 1), ("firing", "critical", 2), ("firing", "warning", 3), ("resolved", "", 4)]
    assert "is below critical -20" in trs[1].message


def test_for_shorter_than_the_duration_never_fires() -> None:
    eng = engine(temp_rule(for_="5m"))
    rows = [(D7, "temperature", T0 + i * MIN, 55.0) for i in range(5)]  # 4 min above
    rows.append((D7, "temperature", T0 + 5 * MIN - S, 40.0))
    rows += [(D7, "temperature", T0 + 6 * MIN + i * MIN, 55.0) for i in range(5)]
    assert feed(eng, rows) == []


def test_for_fires_at_the_first_point_past_the_duration() -> None:
    eng = engine(temp_rule(for_="5m"))
    rows = [(D7, "temperature", T0 + i * 90 * S, x) for i, x in enumerate([40.0, 52, 53, 54, 51, 56, 57])]
    # above from T0+90s; 5 minutes later is T0+390s; the points are at 90s steps: 450s is the first
    trs = feed(eng, rows)
    assert states(trs) == [("firing", "warning", 1)]
    assert trs[0].event_time_ns == T0 + 450 * S
    assert trs[0].fired_at_ns == T0 + 450 * S
    assert trs[0].message.endswith("is above warning 50 (for 5m)")


def test_for_holds_across_batches() -> None:
    eng = engine(temp_rule(for_="5m"))
    assert feed(eng, [(D7, "temperature", T0, 55.0)]) == []
    assert feed(eng, [(D7, "temperature", T0 + 4 * MIN, 55.0)]) == []
    trs = feed(eng, [(D7, "temperature", T0 + 5 * MIN, 55.0)])
    assert states(trs) == [("firing", "warning", 1)]


def test_out_of_order_and_duplicate_points_are_ignored_and_counted() -> None:
    eng = engine(temp_rule())
    rows = [
        (D7, "temperature", T0 + 10 * S, 20.0),
        (D7, "temperature", T0 + 5 * S, 70.0),  # late: ignored
        (D7, "temperature", T0 + 10 * S, 70.0),  # duplicate time: ignored
        (D7, "temperature", T0 + 11 * S, 21.0),
    ]
    assert feed(eng, rows) == []
    assert eng.ignored_rows == 2
    assert feed(eng, [(D7, "temperature", T0 + 9 * S, 99.0)]) == []  # late across batches
    assert eng.ignored_rows == 3


def test_selectors_measurement_tags_and_glob() -> None:
    rule = temp_rule(measurement=None, tags={"device_id": "d[78]"})
    eng = engine(rule)
    rows = [(D7, "temperature", T0, 70.0), (D8, "temperature", T0, 70.0), ("climate,device_id=d9", "temperature", T0, 70.0)]
    trs = feed(eng, rows)
    assert sorted(t.series for t in trs) == [D7, D8]
    assert trs[0].tags == {"device_id": "d7"} and trs[0].measurement == "climate"


def test_series_missing_from_the_series_frame_are_parsed_from_the_key() -> None:
    eng = engine(temp_rule())
    trs = eng.process(values([("climate,device_id=d1,room=x", "temperature", T0, 70.0)]), None)
    assert trs[0].tags == {"device_id": "d1", "room": "x"}


def test_rule_on_a_derived_value() -> None:
    rule = ThresholdRule(name="erratic", field="temperature", stat="std_10", above={"warning": 5})
    eng = engine(rule)
    rows = [
        (D7, "temperature", T0, 80.0),  # the plain field is not watched
        (D7, "temperature:std_10", T0, 6.0),
        (D7, "temperature:avg_10", T0, 80.0),
    ]
    trs = feed(eng, rows)
    assert [(t.field, t.value) for t in trs] == [("temperature:std_10", 6.0)]


# --------------------------------------------------------------------------- rate


def test_rate_of_change_per_second() -> None:
    rule = RateRule(name="jump", field="temperature", above={"warning": 1.0, "critical": 5.0}, deadband=0.2)
    eng = engine(rule)
    rows = [(D7, "temperature", T0 + i * 2 * S, x) for i, x in enumerate([20.0, 20.5, 23.0, 40.0, 40.5, 40.6])]
    # rates: 0.25/s, 1.25/s (warning), 8.5/s (critical), 0.25/s, 0.05/s
    trs = feed(eng, rows)
    assert states(trs) == [("firing", "warning", 1), ("firing", "critical", 2), ("resolved", "", 3)]
    assert trs[1].extra["rate_per_s"] == pytest.approx(8.5)
    assert trs[1].value == 40.0
    assert "changes by 8.5/s, above critical 5/s" in trs[1].message


def test_rate_needs_a_previous_point_and_carries_it_across_batches() -> None:
    rule = RateRule(name="jump", field="temperature", above={"warning": 1.0})
    eng = engine(rule)
    assert feed(eng, [(D7, "temperature", T0, 100.0)]) == []  # first point: no rate
    trs = feed(eng, [(D7, "temperature", T0 + S, 102.0)])
    assert states(trs) == [("firing", "warning", 1)]


# --------------------------------------------------------------------------- sequence and count


def surge() -> SequenceRule:
    return SequenceRule.model_validate(
        {"name": "surge", "field": "temperature", "first": {"gt": 100}, "then": {"gt": 150}, "within": "10s"}
    )


def test_sequence_fires_when_b_follows_a_within_the_window() -> None:
    eng = engine(surge())
    rows = [(D7, "temperature", T0 + i * S, x) for i, x in enumerate([20.0, 101.0, 120.0, 151.0, 30.0])]
    trs = feed(eng, rows)
    assert states(trs) == [("firing", "warning", 1)]
    assert trs[0].event_time_ns == T0 + 3 * S
    assert trs[0].message == "temperature 151 on climate,device_id=d7: > 150 within 10s after > 100"
    # resolves once no match happened for 10 s
    trs = feed(eng, [(D7, "temperature", T0 + 12 * S, 30.0), (D7, "temperature", T0 + 13 * S, 30.0)])
    assert states(trs) == [("resolved", "", 2)]
    assert trs[0].event_time_ns == T0 + 13 * S


def test_sequence_negative_cases() -> None:
    eng = engine(surge())
    too_late = [(D7, "temperature", T0, 101.0), (D7, "temperature", T0 + 11 * S, 151.0)]
    b_first = [(D8, "temperature", T0, 160.0), (D8, "temperature", T0 + S, 120.0)]
    other_series = [("climate,device_id=d9", "temperature", T0, 120.0), ("climate,device_id=d10", "temperature", T0 + S, 160.0)]
    assert feed(eng, too_late + b_first + other_series) == []


def test_sequence_a_single_point_meeting_both_conditions_is_not_a_sequence() -> None:
    eng = engine(surge())
    assert feed(eng, [(D7, "temperature", T0, 160.0)]) == []
    trs = feed(eng, [(D7, "temperature", T0 + 5 * S, 155.0)])  # the 160 was an A for this B
    assert states(trs) == [("firing", "warning", 1)]


def spikes(n: int = 3) -> CountRule:
    return CountRule.model_validate(
        {"name": "spikes", "field": "voltage", "condition": {"gt": 50}, "count": n, "within": "10m", "severity": "critical"}
    )


def test_count_fires_at_the_nth_occurrence_within_the_window() -> None:
    eng = engine(spikes())
    xs = [55.0, 12.0, 60.0, 12.0, 70.0, 12.0]
    trs = feed(eng, [(EN, "voltage", T0 + i * MIN, x) for i, x in enumerate(xs)])
    assert states(trs) == [("firing", "critical", 1)]
    assert trs[0].event_time_ns == T0 + 4 * MIN
    assert trs[0].message == "voltage 70 on energy,device_id=e1: 3 readings > 50 within 10m"
    # the first occurrence (T0) leaves the window at T0 + 10m: the next point resolves it
    trs = feed(eng, [(EN, "voltage", T0 + 10 * MIN, 12.0)])
    assert states(trs) == [("resolved", "", 2)]


def test_count_negative_spread_out_occurrences() -> None:
    eng = engine(spikes())
    xs = [55.0, 60.0, 70.0, 80.0]
    rows = [(EN, "voltage", T0 + i * 6 * MIN, x) for i, x in enumerate(xs)]  # 6 min apart
    assert feed(eng, rows) == []


def test_count_carries_occurrences_across_batches() -> None:
    eng = engine(spikes())
    out: list[Transition] = []
    for i in range(3):
        out += feed(eng, [(EN, "voltage", T0 + i * MIN, 60.0)])
    assert states(out) == [("firing", "critical", 1)]


# --------------------------------------------------------------------------- absence


def silent_rule(**kw: object) -> AbsenceRule:
    base: dict[str, object] = {"name": "silent", "measurement": "climate", "group_by": ["device_id"], "after": "10m"}
    base.update(kw)
    return AbsenceRule.model_validate(base)


def test_absence_fires_for_a_silent_device_and_resolves_when_data_returns() -> None:
    eng = engine(silent_rule())
    feed(eng, [(D7, "temperature", T0, 20.0, T0 + S), (D8, "humidity", T0, 40.0, T0 + S)], arrival=True)
    assert eng.tick(T0 + 5 * MIN) == []
    feed(eng, [(D8, "humidity", T0 + 8 * MIN, 40.0, T0 + 8 * MIN)], arrival=True)
    trs = eng.tick(T0 + 10 * MIN + S)
    assert [(t.series, t.state, t.severity) for t in trs] == [("climate,device_id=d7", "firing", "warning")]
    fired = trs[0]
    assert fired.fired_at_ns == T0  # the last event time seen: deterministic id
    assert fired.alert_id == alert_id("silent", "climate,device_id=d7", T0)
    assert fired.event_time_ns == T0 + 10 * MIN + S  # processing time
    assert fired.field is None and fired.value is None
    assert fired.tags == {"device_id": "d7"}
    assert fired.message == "no data from climate,device_id=d7 for 10m"
    assert eng.tick(T0 + 15 * MIN) == []  # still silent: no repeat
    assert [a["series"] for a in eng.open_alerts()] == ["climate,device_id=d7"]
    back = feed(eng, [(D7, "temperature", T0 + 16 * MIN, 20.0, T0 + 16 * MIN)], arrival=True)
    assert [(t.state, t.seq, t.alert_id) for t in back] == [("resolved", 2, fired.alert_id)]
    assert back[0].event_time_ns == T0 + 16 * MIN
    assert eng.open_alerts() == []


def test_absence_without_group_by_is_per_series_and_counts_any_field() -> None:
    eng = engine(silent_rule(group_by=(), measurement=None, after="1m"))
    feed(eng, [(D7, "temperature", T0, 20.0, T0), (EN, "power", T0, 5.0, T0 + 30 * S)], arrival=True)
    trs = eng.tick(T0 + 61 * S)
    assert [t.series for t in trs] == [D7]
    assert [t.series for t in eng.tick(T0 + 91 * S)] == [EN]


def test_absence_uses_event_time_when_rows_have_no_arrival() -> None:
    eng = engine(silent_rule())
    feed(eng, [(D7, "temperature", T0, 20.0)])
    assert len(eng.tick(T0 + 10 * MIN)) == 1


def test_absence_field_selector_and_derived_values_do_not_count_as_data() -> None:
    eng = engine(silent_rule(group_by=(), field="temperature"))
    feed(eng, [(D7, "temperature", T0, 20.0, T0), (D7, "humidity", T0 + 5 * MIN, 20.0, T0 + 5 * MIN)], arrival=True)
    assert [t.field for t in eng.tick(T0 + 10 * MIN)] == ["temperature"]
    eng2 = engine(silent_rule(group_by=()))
    feed(eng2, [(D7, "temperature", T0, 20.0, T0), (D7, "temperature:avg_10", T0, 20.0, T0 + 9 * MIN)], arrival=True)
    assert len(eng2.tick(T0 + 10 * MIN)) == 1


def test_absence_refiring_soon_after_resolving_reopens_the_alert() -> None:
    eng = engine(silent_rule(), window=30 * MIN)
    feed(eng, [(D7, "temperature", T0, 20.0, T0)], arrival=True)
    first = eng.tick(T0 + 10 * MIN)
    feed(eng, [(D7, "temperature", T0 + 11 * MIN, 20.0, T0 + 11 * MIN)], arrival=True)
    again = eng.tick(T0 + 21 * MIN)
    assert [(t.alert_id, t.seq, t.state) for t in again] == [(first[0].alert_id, 3, "firing")]


def test_absence_state_survives_a_checkpoint() -> None:
    eng = engine(silent_rule())
    feed(eng, [(D7, "temperature", T0, 20.0, T0)], arrival=True)
    fired = eng.tick(T0 + 10 * MIN)
    eng2 = engine(silent_rule())
    eng2.restore(pickle.loads(pickle.dumps(eng.state())))
    assert eng2.tick(T0 + 20 * MIN) == []
    back = feed(eng2, [(D7, "temperature", T0 + 21 * MIN, 20.0, T0 + 21 * MIN)], arrival=True)
    assert [(t.alert_id, t.seq, t.state) for t in back] == [(fired[0].alert_id, 2, "resolved")]


def test_absence_groups_fire_in_name_order_and_keep_their_ids_through_a_checkpoint() -> None:
    devices = ["d5", "d1", "d9", "d3"]  # first seen in this order, fire in name order
    rows = [(f"climate,device_id={d},room=r{i % 2}", "temperature", T0, 20.0, T0 + i * S) for i, d in enumerate(devices)]
    eng = engine(silent_rule())
    feed(eng, rows, arrival=True)
    eng2 = engine(silent_rule())
    eng2.restore(pickle.loads(pickle.dumps(eng.state())))
    for e in (eng, eng2):  # a restored engine has its groups before their series come back
        fired = e.tick(T0 + 11 * MIN)
        assert [t.series for t in fired] == [f"climate,device_id={d}" for d in sorted(devices)]
        assert [t.tags for t in fired] == [{"device_id": d} for d in sorted(devices)]
    # d9 comes back: in the restored engine its group gets its series (and subject) again
    back = feed(eng2, [("climate,device_id=d9,room=r0", "temperature", T0 + 12 * MIN, 20.0, T0 + 12 * MIN)], arrival=True)
    assert [(t.series, t.state, t.tags) for t in back] == [("climate,device_id=d9", "resolved", {"device_id": "d9"})]


# --------------------------------------------------------------------------- flapping


def test_refiring_within_the_flap_window_reopens_the_same_alert() -> None:
    eng = engine(temp_rule(), window=60 * S, changes=10)
    xs = [(0, 55.0), (10, 40.0), (30, 55.0), (200, 40.0), (300, 55.0)]
    trs = feed(eng, [(D7, "temperature", T0 + s * S, x) for s, x in xs])
    first = alert_id("temp", D7, T0)
    assert [(t.alert_id, t.seq, t.state) for t in trs] == [
        (first, 1, "firing"),
        (first, 2, "resolved"),
        (first, 3, "firing"),  # 20 s after resolving: reopened
        (first, 4, "resolved"),
        (alert_id("temp", D7, T0 + 300 * S), 1, "firing"),  # 100 s later: a new alert
    ]
    assert all(t.fired_at_ns == T0 for t in trs[:4])


def test_flapping_is_marked_and_cleared_by_a_stabilising_transition() -> None:
    eng = engine(temp_rule(), window=60 * S, changes=4)
    xs = [55.0, 40.0, 55.0, 40.0, 55.0, 40.0]  # a change every 5 s
    rows = [(D7, "temperature", T0 + i * 5 * S, x) for i, x in enumerate(xs)]
    rows += [(D7, "temperature", T0 + s * S, 40.0) for s in (40, 70, 84, 86, 100)]
    trs = feed(eng, rows)
    assert [t.flapping for t in trs] == [False, False, False, True, True, True, False]
    last = trs[-1]
    assert (last.state, last.seq, last.event_time_ns) == ("resolved", 7, T0 + 86 * S)  # 25 s + 60 s
    assert last.message.endswith("(no longer flapping)")
    assert len({t.alert_id for t in trs}) == 1


def test_flapping_ends_at_the_first_quiet_point_even_before_a_later_change() -> None:
    eng = engine(temp_rule(), window=60 * S, changes=3)
    xs = [55.0, 40.0, 55.0]  # flapping from the third change (T0 + 10 s)
    rows = [(D7, "temperature", T0 + i * 5 * S, x) for i, x in enumerate(xs)]
    rows += [(D7, "temperature", T0 + s * S, 56.0) for s in (30, 75)]
    rows += [(D7, "temperature", T0 + 80 * S, 40.0)]  # a change after the quiet minute
    trs = feed(eng, rows)
    assert [(t.seq, t.state, t.flapping, t.event_time_ns) for t in trs] == [
        (1, "firing", False, T0),
        (2, "resolved", False, T0 + 5 * S),
        (3, "firing", True, T0 + 10 * S),
        (4, "firing", False, T0 + 75 * S),  # stable since T0 + 10 s + 60 s
        (5, "resolved", False, T0 + 80 * S),
    ]


def test_flapping_ends_across_batches() -> None:
    eng = engine(temp_rule(), window=60 * S, changes=3)
    trs = feed(eng, [(D7, "temperature", T0 + i * 5 * S, x) for i, x in enumerate([55.0, 40.0, 55.0])])
    assert trs[-1].flapping
    assert feed(eng, [(D7, "temperature", T0 + 60 * S, 56.0)]) == []
    trs = feed(eng, [(D7, "temperature", T0 + 70 * S, 56.0)])
    assert [(t.seq, t.flapping, t.event_time_ns) for t in trs] == [(4, False, T0 + 70 * S)]


# --------------------------------------------------------------------------- the rest


def test_open_alerts_lists_firing_alerts() -> None:
    eng = engine(temp_rule(), spikes())
    feed(eng, [(D7, "temperature", T0, 61.0), (D8, "temperature", T0, 51.0), (D8, "temperature", T0 + S, 20.0)])
    (alert,) = eng.open_alerts()
    assert alert["series"] == D7 and alert["severity"] == "critical" and alert["seq"] == 1
    assert alert["alert_id"] == alert_id("temp", D7, T0)
    assert alert["tags"] == {"device_id": "d7"} and alert["field"] == "temperature"


def test_disabled_rules_do_nothing() -> None:
    eng = engine(temp_rule(enabled=False))
    assert feed(eng, [(D7, "temperature", T0, 99.0)]) == []


def test_restore_drops_the_state_of_an_edited_rule() -> None:
    eng = engine(temp_rule())
    feed(eng, [(D7, "temperature", T0, 61.0)])
    st = eng.state()
    same = engine(temp_rule())
    same.restore(st)
    assert len(same.open_alerts()) == 1
    edited = engine(temp_rule(above={"warning": 70}))
    edited.restore(st)
    assert edited.open_alerts() == []
    assert feed(edited, [(D7, "temperature", T0 + S, 71.0)])[0].seq == 1


def test_restore_reads_the_key_field_names_of_older_checkpoints() -> None:
    """Before session 11 a checkpoint held every key's field name; now ids into the names."""
    eng = engine(temp_rule())
    feed(eng, [(D7, "temperature", T0, 61.0), ("climate,device_id=d8", "temperature", T0, 20.0)])
    st = pickle.loads(pickle.dumps(eng.state()))
    old = {k: v for k, v in st.items() if k not in ("rfields", "key_rf")}
    old["key_field"] = [st["rfields"][i] for i in st["key_rf"]]
    for state in (st, old):
        back = engine(temp_rule())
        back.restore(state)
        assert np.array_equal(back._keys.sid, eng._keys.sid) and np.array_equal(back._keys.rf, eng._keys.rf)
        assert [(t.seq, t.state) for t in feed(back, [(D7, "temperature", T0 + S, 20.0)])] == [(2, "resolved")]


def test_empty_and_unwatched_batches() -> None:
    eng = engine(temp_rule())
    assert eng.process(values([]), series_frame([])) == []
    assert feed(eng, [(D7, "battery", T0, 0.1)]) == []
    assert eng.rows_seen == 1


def test_values_with_nulls_in_arrival() -> None:
    eng = engine(silent_rule())
    df = values([(D7, "temperature", T0, 20.0, None)], arrival=True)
    eng.process(df, series_frame([D7]))
    assert len(eng.tick(T0 + 10 * MIN)) == 1


def test_state_is_picklable_and_restores_ids() -> None:
    eng = engine(temp_rule(deadband=1.0), spikes(), silent_rule())
    feed(eng, [(D7, "temperature", T0, 61.0), (EN, "voltage", T0, 60.0)])
    blob = pickle.dumps(eng.state())
    eng2 = engine(temp_rule(deadband=1.0), spikes(), silent_rule())
    eng2.restore(pickle.loads(blob))
    a = feed(eng, [(D7, "temperature", T0 + S, 40.0), (EN, "voltage", T0 + S, 60.0), (EN, "voltage", T0 + 2 * S, 60.0)])
    b = feed(eng2, [(D7, "temperature", T0 + S, 40.0), (EN, "voltage", T0 + S, 60.0), (EN, "voltage", T0 + 2 * S, 60.0)])
    assert a == b and len(a) == 2


def test_transitions_are_ordered_by_row_then_rule() -> None:
    eng = engine(temp_rule(), temp_rule(name="temp2"))
    trs = feed(eng, [(D8, "temperature", T0, 70.0), (D7, "temperature", T0, 70.0)])
    assert [(t.series, t.rule) for t in trs] == [(D8, "temp"), (D8, "temp2"), (D7, "temp"), (D7, "temp2")]


def test_values_frame_columns_may_come_in_any_order() -> None:
    eng = engine(temp_rule())
    df = values([(D7, "temperature", T0, 70.0)]).select("value", "time", "field", "series")
    assert len(eng.process(df, series_frame([D7]))) == 1
    assert isinstance(df, pl.DataFrame)


def test_a_growing_series_frame_registers_only_its_new_rows_with_their_tags() -> None:
    """The runner's series frame only grows: the rules register the rows after the ones they saw
    (tags from the frame, not parsed from the key — ``room`` is in no key here); a frame that does
    not extend the last one is registered whole."""
    from sensorium.rules.engine import _added

    def frame(rows: list[tuple[str, str]]) -> pl.DataFrame:
        return pl.DataFrame(
            [{"series": k, "bucket": "default", "measurement": "climate", "device_id": k.split("=")[1], "room": r}
             for k, r in rows]
        )

    eng = engine(temp_rule())
    f1 = frame([(D7, "a")])
    f2 = pl.concat([f1, frame([(D8, "b")])])
    f3 = frame([("climate,device_id=d9", "c")])
    assert _added(f2, f1).get_column("series").to_list() == [D8]
    assert _added(f3, f1) is f3 and _added(f1, None) is f1 and _added(f1, f1) is f1
    assert eng.process(values([(D7, "temperature", T0, 20.0)]), f1) == []
    trs = eng.process(values([(D8, "temperature", T0, 70.0)]), f2)
    assert [(t.series, t.tags) for t in trs] == [(D8, {"device_id": "d8", "room": "b"})]
    trs = eng.process(values([("climate,device_id=d9", "temperature", T0, 70.0)]), f3)
    assert [t.tags for t in trs] == [{"device_id": "d9", "room": "c"}]
