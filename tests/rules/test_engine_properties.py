"""Properties of the rule engine over random logs: it equals a row-by-row reference, it does not
depend on how the log is cut into batches, and a checkpoint (state → pickle → restore) taken
anywhere continues exactly like an uninterrupted run."""

from __future__ import annotations

import pickle

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorium.rules.engine import RuleEngine
from sensorium.rules.model import RuleSet
from sensorium.rules.types import Transition
from tests.rules._frames import T0, S, meta_of, series_frame, values
from tests.rules._reference import ReferenceEngine, comparable

SERIES = ["climate,device_id=d1,room=garage", "climate,device_id=d2,room=attic", "energy,device_id=e1"]
FIELDS = ["temperature", "humidity", "temperature:std_10"]
VALS = {
    "temperature": [-25.0, -15.0, -9.5, 0.0, 47.5, 49.0, 50.0, 51.0, 58.5, 60.0, 61.0, 66.0, 70.0, float("nan")],
    "humidity": [50.0, 79.0, 80.0, 80.5, 84.0, 86.0, 90.0],
    "temperature:std_10": [0.5, 4.0, 5.0, 6.5],
}
RULES = RuleSet.from_dicts(
    [
        {
            "kind": "threshold", "name": "temp", "measurement": "climate", "field": "temperature",
            "above": {"warning": 50, "critical": 60}, "below": {"warning": -10, "critical": -20},
            "deadband": 2, "unit": "°C",
        },
        {
            "kind": "threshold", "name": "temp-for", "field": "temperature", "tags": {"room": "gar*"},
            "above": {"warning": 50}, "for": "20s",
        },
        {"kind": "threshold", "name": "hum", "field": "humidity", "above": {"warning": 80, "critical": 85}, "deadband": 1, "for": "15s"},
        {"kind": "rate", "name": "temp-rate", "field": "temperature", "above": {"warning": 0.5, "critical": 2}, "below": {"warning": -0.5}, "deadband": 0.1},
        {"kind": "sequence", "name": "surge", "field": "temperature", "first": {"gt": 55}, "then": {"ge": 66}, "within": "30s"},
        {"kind": "count", "name": "humid-often", "field": "humidity", "condition": {"gt": 82}, "count": 3, "within": "60s"},
        {"kind": "threshold", "name": "erratic", "field": "temperature", "stat": "std_10", "above": {"warning": 5}, "deadband": 0.5},
        {"kind": "threshold", "name": "any-field", "field": "*", "measurement": "energy", "above": {"info": 60}},
    ]
)
FLAP_W, FLAP_N = 40 * S, 3

row = st.tuples(
    st.sampled_from([0, 0, 0, 1, 1, 2]),  # series (skewed: long runs on one key)
    st.sampled_from([0, 0, 1, 1, 2]),  # field
    st.sampled_from([-7, -1, 0, 1, 1, 2, 2, 3, 5, 8, 21, 55]),  # seconds after the previous row
    st.integers(0, 13),
)


@st.composite
def logs(draw: st.DrawFn) -> pl.DataFrame:
    rows = draw(st.lists(row, min_size=1, max_size=250))
    t = T0
    out = []
    for si, fi, step, vi in rows:
        t += step * S
        f = FIELDS[fi]
        choices = VALS[f]
        out.append((SERIES[si], f, t, choices[vi % len(choices)]))
    return values(out)


def run(frames: list[pl.DataFrame]) -> list[Transition]:
    eng = RuleEngine(RULES, FLAP_W, FLAP_N)
    out: list[Transition] = []
    for f in frames:
        out += eng.process(f, series_frame(SERIES))
    return out


def same(a: list[Transition], b: list[Transition]) -> bool:
    """Equal transitions, every field (repr, so that NaN values compare equal)."""
    return [repr(t) for t in a] == [repr(t) for t in b]


def cut(df: pl.DataFrame, points: list[int]) -> list[pl.DataFrame]:
    edges = sorted({0, df.height, *(p % (df.height + 1) for p in points)})
    return [df.slice(a, b - a) for a, b in zip(edges, edges[1:], strict=False)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs())
def test_engine_equals_row_by_row_reference(log: pl.DataFrame) -> None:
    ref = ReferenceEngine(RULES, FLAP_W, FLAP_N)
    expected = ref.process(log, meta_of(SERIES))
    eng = RuleEngine(RULES, FLAP_W, FLAP_N)
    got = eng.process(log, series_frame(SERIES))
    assert [comparable(t) for t in got] == [comparable(t) for t in expected]
    assert eng.ignored_rows == ref.ignored


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(), st.lists(st.integers(0, 200), max_size=12))
def test_batch_boundaries_do_not_change_transitions(log: pl.DataFrame, points: list[int]) -> None:
    whole = run([log])
    assert same(run(cut(log, points)), whole)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(), st.integers(0, 200), st.lists(st.integers(0, 200), max_size=4))
def test_checkpoint_restore_continues_exactly(log: pl.DataFrame, at: int, points: list[int]) -> None:
    whole = run([log])
    k = at % (log.height + 1)
    first = RuleEngine(RULES, FLAP_W, FLAP_N)
    out: list[Transition] = []
    for f in cut(log.slice(0, k), points):
        out += first.process(f, series_frame(SERIES))
    blob = pickle.dumps(first.state())
    second = RuleEngine(RULES, FLAP_W, FLAP_N)
    second.restore(pickle.loads(blob))
    out += second.process(log.slice(k), series_frame(SERIES))
    assert same(out, whole)
    uninterrupted = RuleEngine(RULES, FLAP_W, FLAP_N)
    uninterrupted.process(log, series_frame(SERIES))
    assert repr(second.open_alerts()) == repr(uninterrupted.open_alerts())
