"""Rolling per-series statistics: equal to a brute-force reference for any cut into batches."""

from __future__ import annotations

import math
import pickle
import statistics
from collections import defaultdict

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorium.keyindex import NameIndex, stable_argsort
from sensorium.stream.frame import VALUES_SCHEMA
from sensorium.stream.rolling import RollingStats

T0 = 1_767_225_600_000_000_000
KEYS = [("climate,device_id=a", "temperature"), ("climate,device_id=a", "humidity"), ("climate,device_id=b", "temperature")]


def frame(rows: list[tuple[str, str, int, float]], arrival: bool = False) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema=dict(VALUES_SCHEMA), orient="row")
    return df.with_columns((pl.col("time") + 5).alias("arrival")) if arrival else df


def reference(rows: list[tuple[str, str, int, float]], n: int) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """Derived series → [(time, value)] in arrival order, computed point by point."""
    hist: dict[tuple[str, str], list[float]] = defaultdict(list)
    out: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for series, fld, t, v in rows:
        if not math.isfinite(v):
            continue
        h = hist[(series, fld)]
        h.append(v)
        w = h[-n:]
        m = len(w)
        out[(series, f"{fld}:avg_{n}")].append((t, sum(w) / m))
        out[(series, f"{fld}:min_{n}")].append((t, min(w)))
        out[(series, f"{fld}:max_{n}")].append((t, max(w)))
        if m >= 2:
            out[(series, f"{fld}:std_{n}")].append((t, statistics.stdev(w)))
            out[(series, f"{fld}:trend_{n}")].append((t, float(np.polyfit(np.arange(m), w, 1)[0])))
    return out


def collect(frames: list[pl.DataFrame]) -> dict[tuple[str, str], list[tuple[int, float]]]:
    out: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for f in frames:
        for series, fld, t, v in f.select("series", "field", "time", "value").iter_rows():
            out[(series, fld)].append((t, v))
    return out


def assert_close(got: dict[tuple[str, str], list[tuple[int, float]]], want: dict[tuple[str, str], list[tuple[int, float]]]) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert [t for t, _ in got[k]] == [t for t, _ in want[k]], k
        for (_, a), (_, b) in zip(got[k], want[k], strict=True):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9), k


row = st.tuples(
    st.integers(0, len(KEYS) - 1),
    st.integers(-3, 10),
    st.one_of(st.floats(-1e3, 1e3, allow_nan=False), st.sampled_from([1013.25, 1013.25, float("nan"), float("inf")])),
)


@st.composite
def logs(draw: st.DrawFn) -> list[tuple[str, str, int, float]]:
    t = T0
    out = []
    for k, step, v in draw(st.lists(row, max_size=120)):
        t += step * 1_000_000_000  # out of order allowed: the window is in arrival order
        out.append((*KEYS[k], t, v))
    return out


def cut(n: int, points: list[int]) -> list[tuple[int, int]]:
    edges = sorted({0, n, *(p % (n + 1) for p in points)})
    return list(zip(edges, edges[1:], strict=False))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(), st.lists(st.integers(0, 200), max_size=10), st.sampled_from([2, 3, 10]))
def test_equals_brute_force_for_any_batches(rows: list[tuple[str, str, int, float]], points: list[int], n: int) -> None:
    r = RollingStats("rolling", n=n)
    frames = [r.process(frame(rows[a:b])) for a, b in cut(len(rows), points)]
    got = collect(frames)
    assert_close(got, reference(rows, n))
    # bit for bit the same as one batch: rules on derived values must not depend on batching
    one = collect([RollingStats("rolling", n=n).process(frame(rows))])
    assert repr(sorted(got.items())) == repr(sorted(one.items()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(), st.integers(0, 200))
def test_checkpoint_restore_continues_exactly(rows: list[tuple[str, str, int, float]], at: int) -> None:
    k = at % (len(rows) + 1)
    whole = RollingStats("rolling")
    expected = collect([whole.process(frame(rows))])
    first = RollingStats("rolling")
    frames = [first.process(frame(rows[:k]))]
    state = pickle.loads(pickle.dumps(first.state()))
    second = RollingStats("rolling")
    second.restore(state)
    frames.append(second.process(frame(rows[k:])))
    assert collect(frames) == expected
    assert second.latest().equals(whole.latest())
    # the series names are an Arrow column (no list of every name kept for checkpoints); a
    # checkpoint of sessions 11-15 (a list) restores the same
    names = state["series_names"].to_pylist()
    listed = RollingStats("rolling")
    listed.restore({**state, "series_names": names})
    assert collect([*frames[:1], listed.process(frame(rows[k:]))]) == expected
    # a checkpoint from before session 11 (every key's names) restores the same
    old = {k: v for k, v in state.items() if k not in ("series_names", "key_sid", "field_names", "key_fid")}
    old["series"] = [names[i] for i in state["key_sid"]]
    old["fields"] = [state["field_names"][i] for i in state["key_fid"]]
    third = RollingStats("rolling")
    third.restore(old)
    assert collect([*frames[:1], third.process(frame(rows[k:]))]) == expected


ONLY = st.sampled_from(
    [(), ("temperature:std_10",), ("*:std_10", "humidity:max_10"), ("temperature:*",), ("*:avg_*", "*:trend_*")]
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(logs(), st.lists(st.integers(0, 200), max_size=6), ONLY)
def test_only_gives_the_wanted_rows_of_the_full_output_bit_for_bit(
    rows: list[tuple[str, str, int, float]], points: list[int], only: tuple[str, ...]
) -> None:
    from fnmatch import fnmatchcase

    full, part = RollingStats("rolling"), RollingStats("rolling")
    want = collect([full.process(frame(rows))])
    got = collect([part.process(frame(rows[a:b]), only=only) for a, b in cut(len(rows), points)])
    wanted = {k: v for k, v in want.items() if any(fnmatchcase(k[1], p) for p in only)}
    assert repr(sorted(got.items())) == repr(sorted(wanted.items()))
    # the state of every key was kept up to date all the same
    assert part.latest().equals(full.latest())
    more = [(s, f, T0 + 10**12 + i, float(i)) for i, (s, f) in enumerate(KEYS * 4)]
    assert full.process(frame(more)).equals(part.process(frame(more)))


def test_only_keeps_the_block_layout_and_arrival() -> None:
    r = RollingStats("rolling", n=10)
    df = frame([("s", "x", T0, 1.0), ("s", "x", T0 + 1, 3.0), ("s", "y", T0 + 2, 5.0)], arrival=True)
    out = r.process(df, only=["x:std_10", "*:max_10"])
    assert out.schema == pl.Schema({**VALUES_SCHEMA, "arrival": pl.Int64()})
    assert out.get_column("field").to_list() == ["x:std_10", "x:max_10", "x:max_10", "y:max_10"]
    assert out.get_column("arrival").to_list() == [T0 + 6, T0 + 5, T0 + 6, T0 + 7]
    assert r.process(frame([("s", "x", T0 + 3, 1.0)]), only=()).height == 0


def test_output_schema_blocks_and_arrival() -> None:
    r = RollingStats("rolling", n=10)
    df = frame([("s", "x", T0, 1.0), ("s", "x", T0 + 1, 3.0), ("s", "y", T0 + 2, 5.0)], arrival=True)
    out = r.process(df)
    assert out.schema == pl.Schema({**VALUES_SCHEMA, "arrival": pl.Int64()})
    # one block per statistic, each in arrival order; std/trend from a series' second point on
    assert out.get_column("field").to_list() == [
        "x:avg_10", "x:avg_10", "y:avg_10",
        "x:std_10",
        "x:min_10", "x:min_10", "y:min_10",
        "x:max_10", "x:max_10", "y:max_10",
        "x:trend_10",
    ]
    assert out.filter(pl.col("field") == "x:trend_10").get_column("value").to_list() == [2.0]
    assert out.get_column("arrival").to_list()[:3] == [T0 + 5, T0 + 6, T0 + 7]
    assert r.process(frame([])).height == 0


def test_latest_per_series_and_field() -> None:
    r = RollingStats("rolling", n=3)
    r.process(frame([("s", "x", T0 + i, float(i)) for i in range(5)] + [("s", "y", T0, 7.0)]))
    latest = r.latest().sort("field")
    assert latest.columns == ["series", "field", "avg_3", "std_3", "min_3", "max_3", "trend_3", "time"]
    x, y = latest.rows()
    assert x == ("s", "x", 3.0, 1.0, 2.0, 4.0, 1.0, T0 + 4)
    assert y == ("s", "y", 7.0, None, 7.0, 7.0, None, T0)


def test_non_finite_values_are_skipped() -> None:
    r = RollingStats("rolling", n=10)
    out = r.process(frame([("s", "x", T0, float("nan")), ("s", "x", T0 + 1, 2.0), ("s", "x", T0 + 2, float("inf"))]))
    assert out.get_column("time").to_list() == [T0 + 1] * 3


def test_window_must_hold_two_points() -> None:
    with pytest.raises(ValueError):
        RollingStats("rolling", n=1)


def test_many_series_large_batch_matches_reference_sample() -> None:
    rng = np.random.default_rng(7)
    n = 20_000
    keys = [f"m,device_id=d{i}" for i in range(3000)]
    rows = [(keys[int(k)], "v", T0 + i, float(x)) for i, (k, x) in enumerate(zip(rng.integers(0, 3000, n), rng.normal(1000, 5, n), strict=True))]
    r = RollingStats("rolling")
    got = collect([r.process(frame(rows[:7000])), r.process(frame(rows[7000:]))])
    want = reference(rows, 10)
    for k in list(want)[:200]:
        for (_, a), (_, b) in zip(got[k], want[k], strict=True):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9)


def test_name_index_and_radix_argsort() -> None:
    ix = NameIndex()
    col = pl.Series(["a", "b", "a", "c"])
    assert ix.ids(col).tolist() == [0, 1, 0, 2]
    assert ix.lookup(pl.Series(["c", "zz"])).tolist() == [2, -1]
    ix.add([f"n{i}" for i in range(5000)])  # grows the table
    assert ix.lookup(pl.Series(["n4999", "a"])).tolist() == [5002, 0]
    keys = np.random.default_rng(1).integers(0, 1 << 40, 5000)
    assert (stable_argsort(keys) == np.argsort(keys, kind="stable")).all()
    small = np.random.default_rng(2).integers(0, 50, 5000)
    assert (stable_argsort(small) == np.argsort(small, kind="stable")).all()


def test_name_index_finds_names_in_home_slots_and_in_the_overflow() -> None:
    ix = NameIndex()
    names = [f"climate,device_id=d{i}" for i in range(20_000)]
    col = pl.Series(names[:9000])
    assert ix.ids(col).tolist() == list(range(9000))
    assert len(ix._over_h) > 0  # some names found their home slot taken
    ix.add(names[9000:])  # rebuilds the table
    rng = np.random.default_rng(4)
    pick = rng.integers(0, 20_000, 50_000)
    unknown = pl.Series([f"energy,device_id=d{i}" for i in range(100)])
    got = ix.lookup(pl.concat([pl.Series(names).gather(pick), unknown]))
    assert (got[:50_000] == pick).all() and (got[50_000:] == -1).all()

