from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorium.config import QualitySettings, RuleSettings
from sensorium.quality.validate import Validator
from sensorium.schema import LINE, Point

from .helpers import T0, S, batch

_temps = st.one_of(
    st.floats(min_value=-80, max_value=130, allow_nan=False),
    st.sampled_from([math.nan, math.inf, -math.inf, 100.0, -50.0]),
    st.none(),
)
_rows = st.lists(
    st.tuples(
        st.sampled_from([None, "a", "b"]),  # device_id
        st.sampled_from([None, "degC", "degF", "K", "furlongs", "kPa"]),  # unit
        _temps,  # temperature
        st.one_of(st.none(), st.floats(min_value=-10, max_value=110, allow_nan=False)),  # humidity
        st.sampled_from([T0, T0 + S, T0 + 2 * S, T0 + 3600 * S]),  # time (the last is in the future)
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=_rows,
    dedup=st.booleans(),
    action=st.sampled_from(["reject", "flag"]),
)
def test_every_row_is_accounted_for(rows: list[tuple], dedup: bool, action: str) -> None:
    points = []
    for dev, unit, temp, hum, t in rows:
        tags = {k: v for k, v in (("device_id", dev), ("unit", unit)) if v is not None}
        fields = {k: v for k, v in (("temperature", temp), ("humidity", hum)) if v is not None}
        fields.setdefault("n", 1)
        points.append(Point("env", tags, fields, t))
    q = QualitySettings(
        dedup=dedup,
        non_finite=action,
        rules={"humidity": RuleSettings(min=0, max=100, unit="percent", action=action)},
    )
    table = batch(points)
    r = Validator(q, now=lambda: T0).validate("env", table)
    n = len(points)
    assert r.valid.num_rows + len(r.rejects) + r.duplicates == n
    assert r.rejected == len(r.rejects)
    # every input line is either kept, rejected once, or a duplicate
    kept = set(r.valid[LINE].to_pylist())
    rejected = [x.line for x in r.rejects]
    assert len(set(rejected)) == len(rejected) and not kept & set(rejected)
    assert rejected == sorted(rejected)
    # kept temperatures are in range (in degC) and finite-or-flagged
    temps = r.valid["temperature"].to_pylist() if "temperature" in r.valid.column_names else []
    for v in temps:
        if v is not None and math.isfinite(v):
            assert -50 <= v <= 100
    if dedup and r.valid.num_rows:
        tags = [c for c in ("device_id", "unit") if c in r.valid.column_names]
        keys = list(zip(*(r.valid[c].to_pylist() for c in [*tags, "time"]), strict=True))
        assert len(keys) == len(set(keys))
    quality = r.valid["quality"].to_pylist()
    flags = r.valid["quality_flags"].to_pylist()
    for q_, f in zip(quality, flags, strict=True):
        assert (q_ == 1.0) == (f is None)
        if f is not None:
            assert abs(q_ - max(0.0, 1 - 0.25 * len(f.split(",")))) < 1e-6
    if r.rejects:
        assert r.reject_tags is None or r.reject_tags.num_rows == len(r.rejects)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from([None, "a", "b"]),
            st.sampled_from([None, "x"]),
            st.sampled_from([T0, T0 + 1, T0 + 2]),
            st.sampled_from([20.0, 500.0]),  # 500 is out of range: rejected
        ),
        min_size=1,
        max_size=60,
    )
)
def test_dedup_matches_reference(rows: list[tuple]) -> None:
    points = [
        Point("env", {k: v for k, v in (("device_id", d), ("site", s)) if v is not None},
              {"temperature": v}, t)
        for d, s, t, v in rows
    ]
    r = Validator(QualitySettings(), now=lambda: T0).validate("env", batch(points))
    last: dict[tuple, int] = {}
    for line, (d, s, t, v) in enumerate(rows, start=1):
        if v <= 100:
            last[(d, s, t)] = line
    assert sorted(r.valid[LINE].to_pylist()) == sorted(last.values())
    assert [x.line for x in r.rejects] == [i for i, row in enumerate(rows, start=1) if row[3] > 100]
    assert r.duplicates == sum(1 for row in rows if row[3] <= 100) - len(last)
