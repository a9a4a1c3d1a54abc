"""Event-time windows: watermarks, windowers, aggregations and the WindowOperator.

Properties are checked against a brute-force pure-Python reference (``reference`` below, also used
by the rollup tests): random points, shuffled within the allowed lateness, with duplicates (the
later arrival wins) and some rows far too late.
"""

from __future__ import annotations

import math
import pickle
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from unittest import mock

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorium.stream.aggregate import (
    SKETCH_ALPHA,
    aggregate_rows,
    decode_sketches,
    encode_sketches,
    parse_aggregations,
    percentile_name,
    sketch_keys,
    sketch_quantiles,
    sketch_values,
)
from sensorium.stream.watermark import _Dictionary
from sensorium.stream.window_op import WindowOperator
from sensorium.stream.windows import Hopping, Session, Tumbling, format_duration, parse_duration

S = 1_000_000_000
T0 = 1_767_225_600 * S  # 2026-01-01T00:00:00Z
ALL = ("count", "sum", "mean", "min", "max", "stddev", "first", "last", "p50", "p95", "p99", "rate", "integral")
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the reference --------------------------------------------------------------------------

Row = tuple[str, str, int, float, int]  # series, field, time, value, arrival


def ref_late(rows: Sequence[Row], lateness: int) -> list[bool]:
    """Late iff time < (max earlier time of the series - lateness), in arrival order."""
    top: dict[str, int] = {}
    out = []
    for series, _f, t, _v, _a in rows:
        out.append(series in top and t < top[series] - lateness)
        top[series] = max(top.get(series, t), t)
    return out


def ref_points(rows: Sequence[Row], late: Sequence[bool]) -> dict[tuple[str, str], dict[int, float]]:
    """Non-late points per (series, field): time -> value, the later arrival winning."""
    pts: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for (series, field, t, v, _a), is_late in zip(rows, late, strict=True):
        if not is_late:
            pts[(series, field)][t] = v
    return pts


def exact_percentile(vals: Sequence[float], q: float) -> float:
    s = sorted(vals)
    h = q / 100 * (len(s) - 1)
    lo, hi = math.floor(h), math.ceil(h)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def ref_aggs(points: dict[int, float]) -> dict[str, Any]:
    pts = sorted(points.items())
    vals = [v for _, v in pts]
    n = len(vals)
    mean = sum(vals) / n
    span = (pts[-1][0] - pts[0][0]) / S
    return {
        "count": n, "sum": sum(vals), "mean": mean, "min": min(vals), "max": max(vals),
        "stddev": math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else None,
        "first": pts[0][1], "last": pts[-1][1],
        "rate": (pts[-1][1] - pts[0][1]) / span if n > 1 else None,
        "integral": sum((a[1] + b[1]) / 2 * (b[0] - a[0]) / S for a, b in zip(pts, pts[1:], strict=False)),
        **{f"p{q}": exact_percentile(vals, q) for q in (50, 95, 99)},
    }


def ref_windows(
    pts: dict[tuple[str, str], dict[int, float]], assign: Callable[[list[int]], list[tuple[int, int, list[int]]]]
) -> dict[tuple[str, str, int], dict[str, Any]]:
    """(series, field, start) -> aggregates; ``assign`` maps sorted times to (start, end, times)."""
    out = {}
    for (series, field), by_time in pts.items():
        for start, end, times in assign(sorted(by_time)):
            aggs = ref_aggs({t: by_time[t] for t in times})
            out[(series, field, start)] = {"end": end, **aggs}
    return out


def aligned(size: int, slide: int) -> Callable[[list[int]], list[tuple[int, int, list[int]]]]:
    def assign(times: list[int]) -> list[tuple[int, int, list[int]]]:
        wins: dict[int, list[int]] = defaultdict(list)
        for t in times:
            s = (t // slide) * slide
            while s + size > t:
                wins[s].append(t)
                s -= slide
        return [(s, s + size, ts) for s, ts in sorted(wins.items())]

    return assign


def sessions(gap: int) -> Callable[[list[int]], list[tuple[int, int, list[int]]]]:
    def assign(times: list[int]) -> list[tuple[int, int, list[int]]]:
        out: list[list[int]] = []
        for t in times:
            if out and t - out[-1][-1] < gap:
                out[-1].append(t)
            else:
                out.append([t])
        return [(ts[0], ts[-1] + gap, ts) for ts in out]

    return assign


def close(a: Any, b: Any, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol * 1e3)


def frame(rows: Sequence[Row]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"series": pl.Utf8, "field": pl.Utf8, "time": pl.Int64, "value": pl.Float64, "arrival": pl.Int64},
        orient="row",
    )


def check_windows(out: pl.DataFrame, ref: dict[tuple[str, str, int], dict[str, Any]], aggs: Iterable[str]) -> None:
    got = {(r["series"], r["field"], r["start"]): r for r in out.iter_rows(named=True)}
    assert out.height == len(got), "a window was emitted twice"
    assert got.keys() == ref.keys()
    for key, want in ref.items():
        row = got[key]
        assert row["end"] == want["end"], key
        for a in aggs:
            if a == "count":
                assert row[a] == want[a], (key, a)
            else:
                assert close(row[a], want[a]), (key, a, row[a], want[a])


# --- random streams -------------------------------------------------------------------------


@st.composite
def streams(draw: st.DrawFn, max_points: int = 50) -> list[Row]:
    """Points over ~2 minutes, arriving shuffled within ~6 s, some 20-90 s late, some duplicated."""
    specs = draw(
        st.lists(
            st.tuples(
                st.integers(0, 2), st.integers(0, 1), st.integers(0, 240),
                st.floats(-1000, 1000, allow_nan=False), st.integers(0, 12), st.integers(0, 9),
            ),
            min_size=8, max_size=max_points,
        )
    )
    rows = []
    for i, (s, f, half_s, v, delay, kind) in enumerate(specs):
        t = T0 + half_s * S // 2
        wait = (20 + 7 * delay) * S if kind == 0 else delay * S // 2  # kind 0: probably too late
        rows.append((t + wait, i, (f"m,dev={s}", f"f{f}", t, v)))
        if kind == 1:  # a duplicate with another value, arriving later
            rows.append((t + wait + S, i + 10_000, (f"m,dev={s}", f"f{f}", t, v + 1.5)))
    rows.sort()
    return [(*r, arrival) for arrival, _, r in rows]


def run(op: WindowOperator, rows: Sequence[Row], cuts: Sequence[int] = ()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Feed ``rows`` cut at ``cuts``, then flush; (finalized, late) of the whole run."""
    df = frame(rows)
    bounds = [0, *sorted(set(cuts)), df.height]
    fin, late = [], []
    for a, b in zip(bounds, bounds[1:], strict=False):
        out = op.process(df.slice(a, b - a))
        fin.append(out.finalized)
        late.append(out.late)
    fin.append(op.flush().finalized)
    return pl.concat(fin).sort("series", "field", "start"), pl.concat(late)


WINDOWERS = {
    "tumbling": (lambda: Tumbling("10s"), aligned(10 * S, 10 * S)),
    "hopping": (lambda: Hopping("10s", "4s"), aligned(10 * S, 4 * S)),
    "session": (lambda: Session("3s"), sessions(3 * S)),
}


@pytest.mark.parametrize("kind", sorted(WINDOWERS))
@PROPS
@given(rows=streams())
def test_windows_match_reference(kind: str, rows: list[Row]) -> None:
    make, assign = WINDOWERS[kind]
    lateness = 5 * S
    fin, late = run(WindowOperator("w", make(), ALL, lateness, 60 * S), rows)
    is_late = ref_late(rows, lateness)
    check_windows(fin, ref_windows(ref_points(rows, is_late), assign), ALL)
    want_late = [r[:4] for r, x in zip(rows, is_late, strict=True) if x]
    assert late.select("series", "field", "time", "value").rows() == want_late
    assert all(r.startswith("event time ") and "(allowed lateness 5s)" in r for r in late["reason"])
    assert (late["time"] < late["watermark"]).all()


@pytest.mark.parametrize("kind", sorted(WINDOWERS))
@PROPS
@given(rows=streams(), data=st.data())
def test_micro_batch_invariance(kind: str, rows: list[Row], data: st.DataObject) -> None:
    make = WINDOWERS[kind][0]
    whole = run(WindowOperator("w", make(), ALL, 5 * S), rows)
    cuts = data.draw(st.lists(st.integers(1, max(1, len(rows) - 1)), max_size=8))
    parts = run(WindowOperator("w", make(), ALL, 5 * S), rows, cuts)
    assert whole[0].equals(parts[0])
    assert whole[1].equals(parts[1])


@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
@PROPS
@given(rows=streams(), data=st.data())
def test_rows_bucketed_by_pane_by_table_or_by_sort_alike(kind: str, rows: list[Row], data: st.DataObject) -> None:
    """A step's rows across several panes are bucketed by (pane, series) with a compiled table
    of counts, or, where series ids are too sparse for one, by a stable sort: same windows."""
    import sensorium.stream.window_op as window_op

    make = WINDOWERS[kind][0]
    cuts = data.draw(st.lists(st.integers(1, max(1, len(rows) - 1)), max_size=3))
    by_table = run(WindowOperator("w", make(), ALL, 5 * S), rows, cuts)
    with mock.patch.object(window_op, "pane_buckets", lambda *a, **k: None):
        by_sort = run(WindowOperator("w", make(), ALL, 5 * S), rows, cuts)
    assert by_table[0].equals(by_sort[0])
    assert by_table[1].equals(by_sort[1])


@pytest.mark.parametrize("kind", sorted(WINDOWERS))
@PROPS
@given(rows=streams(), agg=st.integers(1, 6), chunks=st.integers(2, 4), block=st.integers(2, 12), data=st.data())
def test_aggregating_in_key_slices_changes_nothing(
    kind: str, rows: list[Row], agg: int, chunks: int, block: int, data: st.DataObject
) -> None:
    """Windows closing together are aggregated in slices of whole series past AGG_ROWS rows
    (bounded memory), and a pane's small chunks are joined (sorted by series again) every
    PANE_CHUNKS steps or once they hold BLOCK_ROWS rows: the output is identical whatever the
    slice size and however the chunks were joined."""
    make = WINDOWERS[kind][0]
    cuts = data.draw(st.lists(st.integers(1, max(1, len(rows) - 1)), max_size=6))
    whole = run(WindowOperator("w", make(), ALL, 5 * S), rows, cuts)
    with mock.patch("sensorium.stream.window_op.AGG_ROWS", agg), mock.patch(
        "sensorium.stream.window_op.PANE_CHUNKS", chunks
    ), mock.patch("sensorium.stream.window_op.BLOCK_ROWS", block):
        sliced = run(WindowOperator("w", make(), ALL, 5 * S), rows, cuts)
    assert whole[0].equals(sliced[0])
    assert whole[1].equals(sliced[1])


@pytest.mark.parametrize("kind", sorted(WINDOWERS))
@PROPS
@given(rows=streams(), data=st.data())
def test_checkpoint_round_trip(kind: str, rows: list[Row], data: st.DataObject) -> None:
    make = WINDOWERS[kind][0]
    cut = data.draw(st.integers(0, len(rows)))
    df = frame(rows)
    straight = WindowOperator("w", make(), ALL, 5 * S)
    a1 = straight.process(df.head(cut))
    a2 = straight.process(df.slice(cut))
    a3 = straight.flush()

    first = WindowOperator("w", make(), ALL, 5 * S)
    b1 = first.process(df.head(cut))
    first.open_windows()  # a cached view must not leak into the state
    state = pickle.loads(pickle.dumps(first.state()))
    if data.draw(st.booleans()):  # panes as checkpoints held them before: one array per column
        for pane in state["panes"].values():
            chunks = pane.pop("chunks")
            for i, name in enumerate(("kid", "time", "value")):
                pane[name] = np.concatenate([c[i] for c in chunks])
    second = WindowOperator("w", make(), ALL, 5 * S)
    second.restore(state)
    assert second.open_windows().equals(first.open_windows())
    b2 = second.process(df.slice(cut))
    b3 = second.flush()
    for x, y in ((a1, b1), (a2, b2), (a3, b3)):
        assert x.finalized.equals(y.finalized)
        assert x.late.equals(y.late)


@PROPS
@given(rows=streams())
def test_open_windows_are_provisional_aggregates(rows: list[Row]) -> None:
    """Open windows plus finalized ones = every window of the non-late rows, each exactly once."""
    op = WindowOperator("w", Tumbling("10s"), ALL, 5 * S)
    out = op.process(frame(rows))
    both = pl.concat([out.finalized, op.open_windows()])
    ref = ref_windows(ref_points(rows, ref_late(rows, 5 * S)), aligned(10 * S, 10 * S))
    check_windows(both, ref, ALL)


def ref_late_with_ticks(rows: Sequence[Row], ticks: dict[int, int], lateness: int, idle: int) -> list[bool]:
    """ref_late, with ``tick(now)`` before row i for each ``ticks[i] = now`` (idle watermarks)."""
    top: dict[str, int] = {}
    wm: dict[str, int] = {}
    last: dict[str, int] = {}
    out = []
    for i, (series, _f, t, _v, arrival) in enumerate(rows):
        if i in ticks:
            now = ticks[i]
            for s in top:
                if now - last[s] >= idle:
                    wm[s] = max(wm[s], top[s] - lateness + now - last[s])
        if series in top:
            wm[series] = max(wm[series], top[series] - lateness)
            out.append(t < wm[series])
        else:
            out.append(False)
        top[series] = max(top.get(series, t), t)
        wm[series] = max(wm.get(series, top[series] - lateness), top[series] - lateness)
        last[series] = max(last.get(series, arrival), arrival)
    return out


@pytest.mark.parametrize("kind", ["tumbling", "session"])
@PROPS
@given(rows=streams(), data=st.data())
def test_idle_ticks_match_reference_and_batching(kind: str, rows: list[Row], data: st.DataObject) -> None:
    """Ticks between rows advance idle watermarks; late rows and windows follow the reference and
    do not depend on further batch cuts."""
    make, assign = WINDOWERS[kind]
    ticks: dict[int, int] = {}
    for i in sorted(data.draw(st.lists(st.integers(1, len(rows) - 1), max_size=4, unique=True))):
        pause = data.draw(st.integers(0, 40)) * S  # processing time stands still, then a tick
        rows = [*rows[:i], *((*r[:4], r[4] + pause) for r in rows[i:])]
        ticks[i] = rows[i - 1][4] + pause
    cuts = data.draw(st.lists(st.integers(1, len(rows) - 1), max_size=5))
    results = []
    for bounds in (sorted({0, *ticks, len(rows)}), sorted({0, *ticks, *cuts, len(rows)})):
        op = WindowOperator("w", make(), ALL, 5 * S, 15 * S)
        df = frame(rows)
        fin, late = [], []
        for a, b in zip(bounds, bounds[1:], strict=False):
            if a in ticks:
                fin.append(op.tick(ticks[a]).finalized)
            out = op.process(df.slice(a, b - a))
            fin.append(out.finalized)
            late.append(out.late)
        fin.append(op.flush().finalized)
        results.append((pl.concat(fin).sort("series", "field", "start"), pl.concat(late)))
    assert results[0][0].equals(results[1][0]) and results[0][1].equals(results[1][1])
    is_late = ref_late_with_ticks(rows, ticks, 5 * S, 15 * S)
    check_windows(results[0][0], ref_windows(ref_points(rows, is_late), assign), ALL)
    assert results[0][1].select("series", "field", "time", "value").rows() == [
        r[:4] for r, x in zip(rows, is_late, strict=True) if x
    ]


@pytest.mark.parametrize("kind", ["tumbling", "hopping"])
@PROPS
@given(rows=streams(max_points=80), data=st.data())
def test_panes_sorted_by_series_close_parts_and_idle_series_like_the_reference(
    kind: str, rows: list[Row], data: st.DataObject
) -> None:
    """Panes keep their chunks sorted by series, so a close of some series (idle ticks, a close
    cut by ``close_max_rows``) reads only theirs and leaves the others' rows in place (``stale``):
    with ticks, a budget and a checkpoint restore in between, windows and late rows follow the
    reference, and equal a run whose panes hold chunks in arrival order (an older checkpoint)."""
    make, assign = WINDOWERS[kind]
    ticks: dict[int, int] = {}
    for i in sorted(data.draw(st.lists(st.integers(1, len(rows) - 1), max_size=4, unique=True))):
        pause = data.draw(st.integers(0, 40)) * S
        rows = [*rows[:i], *((*r[:4], r[4] + pause) for r in rows[i:])]
        ticks[i] = rows[i - 1][4] + pause
    cuts = data.draw(st.lists(st.integers(1, len(rows) - 1), max_size=5))
    budget = data.draw(st.sampled_from([None, 1, 3, 10]))
    restore_at = data.draw(st.integers(0, len(rows)))
    bounds = sorted({0, *ticks, *cuts, restore_at, len(rows)})
    idle_calls = [data.draw(st.integers(0, 2)) for _ in bounds[1:]]  # each closes more of a cut close
    df = frame(rows)

    def go(arrival_order: bool) -> tuple[pl.DataFrame, pl.DataFrame]:
        op = WindowOperator("w", make(), ALL, 5 * S, 15 * S, close_max_rows=budget)
        fin, late = [], []
        for a, b, idle in zip(bounds, bounds[1:], idle_calls, strict=False):
            if a == restore_at:
                if arrival_order:  # as an older checkpoint (version 1): no stale rows, read unsorted
                    for pane in op._panes.values():
                        pane.drop(pane.present.copy())
                        pane.chunks = [c for c in pane.rows_of(pane.present, copy=True) if c[0].size]
                        pane.gone = 0
                state = pickle.loads(pickle.dumps(op.state()))
                if arrival_order:
                    state["version"] = 1
                    for pane in state["panes"].values():
                        del pane["by_series"], pane["gone"]
                op = WindowOperator.from_state(state)
                op.close_max_rows = budget
            if a in ticks:
                fin.append(op.tick(ticks[a]).finalized)
            out = op.process(df.slice(a, b - a))
            fin.append(out.finalized)
            late.append(out.late)
            for _ in range(idle):
                fin.append(op.process(df.clear()).finalized)
        fin.append(op.flush().finalized)
        assert not op.deferred
        return pl.concat(fin).sort("series", "field", "start"), pl.concat(late)

    with mock.patch("sensorium.stream.window_op.BLOCK_ROWS", data.draw(st.sampled_from([3, 8, 1 << 18]))):
        sorted_run, arrival_run = go(False), go(True)
    assert sorted_run[0].equals(arrival_run[0]) and sorted_run[1].equals(arrival_run[1])
    is_late = ref_late_with_ticks(rows, ticks, 5 * S, 15 * S)
    check_windows(sorted_run[0], ref_windows(ref_points(rows, is_late), assign), ALL)
    assert sorted_run[1].select("series", "field", "time", "value").rows() == [
        r[:4] for r, x in zip(rows, is_late, strict=True) if x
    ]


def test_late_reason_and_watermark() -> None:
    rows = [("m", "x", T0 + 30 * S, 1.0, 0), ("m", "x", T0 + 5 * S, 2.0, 1), ("n", "x", T0 + 5 * S, 3.0, 2)]
    out = WindowOperator("w", Tumbling("10s"), ["count"], "10s").process(frame(rows))
    assert out.late.rows() == [
        ("m", "x", T0 + 5 * S, 2.0, T0 + 20 * S,
         "event time 2026-01-01T00:00:05Z is behind the watermark 2026-01-01T00:00:20Z (allowed lateness 10s)"),
    ]
    assert out.finalized.height == 0  # m has only [30s, 40s) (watermark 20s); n is at -5s


def test_finalize_exactly_when_watermark_reaches_end() -> None:
    op = WindowOperator("w", Tumbling("10s"), ["count", "sum"], "2s")
    first = op.process(frame([("m", "x", T0 + 1 * S, 1.0, 0), ("m", "x", T0 + 11 * S, 2.0, 1)]))
    assert first.finalized.height == 0  # watermark 9s < 10s
    assert op.open_windows()["count"].to_list() == [1, 1]
    second = op.process(frame([("m", "x", T0 + 12 * S, 3.0, 2)]))  # watermark 10s
    assert second.finalized.select("start", "count", "sum").rows() == [(T0, 1, 1.0)]
    assert op.open_windows().select("start", "count", "sum").rows() == [(T0 + 10 * S, 2, 5.0)]


def test_idle_series_is_finalized_by_tick() -> None:
    op = WindowOperator("w", Tumbling("10s"), ["count"], lateness_ns="5s", idle_timeout_ns="30s")
    rows = [("quiet", "x", T0 + 1 * S, 1.0, T0 + 1 * S)]
    rows += [("busy", "x", T0 + i * S, float(i), T0 + i * S) for i in range(0, 40)]
    out = op.process(frame(rows))
    assert set(out.finalized["series"]) == {"busy"}
    assert op.tick(T0 + 30 * S).finalized.height == 0  # quiet for 29 s: not idle yet
    late_tick = op.tick(T0 + 31 * S)  # 30 s: watermark 1 - 5 + 30 = 26 s >= 10 s
    assert late_tick.finalized.select("series", "start", "count").rows() == [("quiet", T0, 1)]
    wm = dict(op.watermarks().select("series", "watermark").rows())
    assert wm["quiet"] == T0 + 26 * S
    # its watermark stays advanced: a point behind it is late, one ahead is not
    after = op.process(frame([("quiet", "x", T0 + 20 * S, 5.0, T0 + 32 * S), ("quiet", "x", T0 + 27 * S, 6.0, T0 + 33 * S)]))
    assert after.late["time"].to_list() == [T0 + 20 * S]
    assert op.open_windows().filter(pl.col("series") == "quiet")["start"].to_list() == [T0 + 20 * S]


def test_tick_without_arrival_starts_idle_clock_at_first_tick() -> None:
    op = WindowOperator("w", Tumbling("10s"), ["count"], 0, "30s")
    op.process(pl.DataFrame({"series": ["a"], "field": ["x"], "time": [T0 + S], "value": [1.0]}))
    assert op.tick(T0 + 100 * S).finalized.height == 0  # the clock starts here
    assert op.tick(T0 + 130 * S).finalized.height == 1


# --- durations, windowers, aggregations -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [("10s", 10 * S), ("1m", 60 * S), ("1h", 3600 * S), ("1d", 86400 * S), ("1h30m", 5400 * S),
     ("250ms", S // 4), ("1.5s", 3 * S // 2), (" 2W ".lower(), 14 * 86400 * S), (7, 7)],
)
def test_parse_duration(text: str | int, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text", ["", "10", "s", "10x", "1h 30m", "-5s", "1m2"])
def test_parse_duration_errors(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for ns in (0, 1, 10 * S, 90 * S, 86400 * S + 1, S // 4):
        assert parse_duration(format_duration(ns)) == ns


def test_windower_validation() -> None:
    with pytest.raises(ValueError, match="longer than its size"):
        Hopping("1s", "2s")
    with pytest.raises(ValueError, match="must be positive"):
        Tumbling(0)
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        parse_aggregations(["median"])
    assert parse_aggregations(["p99.9", "count"]) == (("p99.9", "count"), (99.9,))


def test_hopping_assign_matches_reference() -> None:
    times = np.array([T0, T0 + 3 * S, T0 + 9_999_999_999, T0 - 1])
    rows, starts = Hopping("10s", "4s").assign(times)
    got = sorted(zip(rows.tolist(), starts.tolist(), strict=True))
    want = sorted((i, s) for i, t in enumerate(times.tolist()) for s, _, ts in aligned(10 * S, 4 * S)([t]) if t in ts)
    assert got == want


def test_duplicates_keep_later_arrival_and_aggregations() -> None:
    t = np.array([3, 1, 2, 1, 5], dtype=np.int64) * S
    v = np.array([30.0, 10.0, 20.0, 11.0, 50.0])
    out = aggregate_rows(np.zeros(5, np.int64), np.zeros(5, np.int64), t, v, percentiles=(50,))
    row = out.row(0, named=True)
    assert row["count"] == 4 and row["sum"] == 111.0
    assert row["first"] == 11.0 and row["last"] == 50.0
    assert row["integral"] == pytest.approx((11 + 20) / 2 + (20 + 30) / 2 + (30 + 50) / 2 * 2)
    assert row["p50"] == pytest.approx(25.0)


def test_sketch_round_trip_and_bound() -> None:
    rng = np.random.default_rng(7)
    vals = np.concatenate([rng.normal(0, 50, 3000), [0.0, 1e-12, -3.5, 1e300]])
    keys = sketch_keys(np.sort(vals))
    assert (np.diff(keys) >= 0).all()  # monotone
    reps = sketch_values(keys)
    assert np.all(np.abs(reps - np.sort(vals)) <= SKETCH_ALPHA * np.abs(np.sort(vals)) * (1 + 1e-9) + 1e-9)
    uniq, counts = np.unique(keys, return_counts=True)
    col = encode_sketches(np.zeros(uniq.size, np.int64), uniq, counts, 1)
    seg, k, c = decode_sketches(col)
    assert (k == uniq).all() and (c == counts).all() and (seg == 0).all()
    qs = sketch_quantiles(seg, k, c, 1, [1, 50, 99], np.array([vals.min()]), np.array([vals.max()]))
    s = np.sort(vals)
    for q in (1, 50, 99):
        h = q / 100 * (s.size - 1)
        lo, hi = s[math.floor(h)], s[math.ceil(h)]
        exact = lo + (h - math.floor(h)) * (hi - lo)
        assert abs(qs[percentile_name(q)][0] - exact) <= SKETCH_ALPHA * max(abs(lo), abs(hi)) * (1 + 1e-9) + 1e-9


@pytest.mark.parametrize("collide", ["slots", "hashes"])
def test_key_dictionary_probing_and_collisions(collide: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ids follow first appearance; crowded slots are probed; colliding hashes fall back to joins."""
    real = _Dictionary._hash

    def crowded(col: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        h1, h2 = real(col)
        if collide == "slots":  # distinct hashes, all in a few home slots: long probe chains
            return h1 << np.uint64(40), h2
        return h1 % np.uint64(7), h2  # few distinct first hashes: the second one disagrees

    monkeypatch.setattr(_Dictionary, "_hash", staticmethod(crowded))
    d = _Dictionary("series")
    names = [f"dev-{i}" for i in range(300)]
    rng = np.random.default_rng(1)
    for chunk in np.array_split(rng.permutation(np.repeat(np.arange(300), 3)), 7):
        col = pl.Series([names[i] for i in chunk])
        ids = d.ids(col)
        assert d.names.gather(ids).to_list() == col.to_list()
    assert sorted(d.names.to_list()) == sorted(names) and len(d) == 300
    assert d._exact == (collide == "hashes")


def test_restore_rejects_other_configuration() -> None:
    state = WindowOperator("w", Tumbling("10s"), ["count"], 0).state()
    with pytest.raises(ValueError, match="checkpoint is for step 'w'"):
        WindowOperator("w", Tumbling("20s"), ["count"], 0).restore(state)
    with pytest.raises(ValueError, match="checkpoint is for step 'w'"):
        WindowOperator("v", Tumbling("10s"), ["count"], 0).restore(state)
    assert WindowOperator.from_state(state).windower == Tumbling("10s")
