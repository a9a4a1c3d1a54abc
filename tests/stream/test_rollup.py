"""Rollups: coarser levels merged from finer partials equal a direct recomputation from raw rows."""

from __future__ import annotations

import math
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorium.stream.aggregate import SKETCH_ALPHA, fold_partials
from sensorium.stream.checkpoint import CheckpointStore
from sensorium.stream.rollup import RollupOperator, merge_rows, row_columns, row_schema
from sensorium.stream.windows import parse_duration
from tests.stream.test_windows import (
    T0,
    Row,
    S,
    aligned,
    close,
    frame,
    ref_late,
    ref_points,
    ref_windows,
)

PROPS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STATS = ("count", "sum", "mean", "min", "max", "stddev", "first", "last", "rate", "integral")
MIN = 60 * S


@st.composite
def days(draw: st.DrawFn) -> list[Row]:
    """Points over three days (minute grid plus seconds), shuffled within ~20 min, a few far late."""
    specs = draw(
        st.lists(
            st.tuples(
                st.integers(0, 1), st.integers(0, 1), st.integers(0, 3 * 24 * 60 - 1), st.integers(0, 59),
                st.floats(-500, 500, allow_nan=False), st.integers(0, 20), st.integers(0, 9),
            ),
            min_size=10, max_size=120,
        )
    )
    rows = []
    for i, (s, f, minute, sec, v, delay, kind) in enumerate(specs):
        t = T0 + minute * MIN + sec * S
        wait = (6 + delay) * 3600 * S if kind == 0 else delay * MIN
        rows.append((t + wait, i, (f"m,dev={s}", f"f{f}", t, v)))
        if kind == 1:
            rows.append((t + wait + S, i + 10_000, (f"m,dev={s}", f"f{f}", t, v * 2 + 1)))
    rows.sort()
    return [(*r, arrival) for arrival, _, r in rows]


def sketch_ok(est: float, vals: Sequence[float], q: float) -> bool:
    s = sorted(vals)
    h = q / 100 * (len(s) - 1)
    lo, hi = s[math.floor(h)], s[math.ceil(h)]
    exact = lo + (h - math.floor(h)) * (hi - lo)
    return abs(est - exact) <= SKETCH_ALPHA * max(abs(lo), abs(hi)) * (1 + 1e-9) + 1e-9


def check_level(rows_out: pl.DataFrame, rows: Sequence[Row], lateness: int, size: int, exact_pcts: bool) -> None:
    pts = ref_points(rows, ref_late(rows, lateness))
    ref = ref_windows(pts, aligned(size, size))
    got = {(r["series"], r["field"], r["time"]): r for r in rows_out.iter_rows(named=True)}
    assert rows_out.height == len(got), "a window was emitted twice"
    assert got.keys() == ref.keys()
    for key, want in ref.items():
        row = got[key]
        assert row["count"] == want["count"], key
        for a in STATS[1:]:
            tol = 1e-9 if a != "integral" else 1e-7
            assert close(row[a], want[a], tol), (key, a, row[a], want[a])
        vals = [v for t, v in pts[key[:2]].items() if key[2] <= t < key[2] + size]
        for q in (50, 95, 99):
            if exact_pcts:
                assert close(row[f"p{q}"], want[f"p{q}"]), (key, q)
            else:
                assert sketch_ok(row[f"p{q}"], vals, q), (key, q, row[f"p{q}"], want[f"p{q}"])


def run(op: RollupOperator, rows: Sequence[Row], cuts: Sequence[int] = ()) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    df = frame(rows)
    bounds = [0, *sorted(set(cuts)), df.height]
    fin: dict[str, list[pl.DataFrame]] = {iv: [] for iv in op.intervals}
    late = []
    outs = [op.process(df.slice(a, b - a)) for a, b in zip(bounds, bounds[1:], strict=False)]
    outs.append(op.flush())
    for out in outs:
        late.append(out.late)
        for iv, f in out.finalized.items():
            fin[iv].append(f)
    return {iv: pl.concat(fs).sort("series", "field", "time") for iv, fs in fin.items()}, pl.concat(late)


@PROPS
@given(rows=days())
def test_levels_match_recomputation(rows: list[Row]) -> None:
    lateness = 30 * MIN
    fin, late = run(RollupOperator("r", ("1m", "1h", "1d"), lateness_ns=lateness), rows)
    for i, (iv, size) in enumerate((("1m", MIN), ("1h", 60 * MIN), ("1d", 1440 * MIN))):
        assert fin[iv].columns == row_columns()
        check_level(fin[iv], rows, lateness, size, exact_pcts=i == 0)
    assert late.height == sum(ref_late(rows, lateness))


@PROPS
@given(rows=days(), data=st.data())
def test_open_rows_are_merged_provisional_rows(rows: list[Row], data: st.DataObject) -> None:
    """Mid-stream: rows finished so far plus open rows = every window of the rows seen so far."""
    lateness = 30 * MIN
    cut = data.draw(st.integers(1, len(rows)))
    op = RollupOperator("r", ("1m", "1h", "1d"), lateness_ns=lateness)
    outs = [op.process(frame(rows[: cut // 2])), op.process(frame(rows[cut // 2 : cut]))]
    for i, (iv, size) in enumerate((("1m", MIN), ("1h", 60 * MIN), ("1d", 1440 * MIN))):
        both = pl.concat([*(o.finalized[iv] for o in outs), op.open_rows(iv)])
        check_level(both, rows[:cut], lateness, size, exact_pcts=i == 0)


@PROPS
@given(rows=days(), data=st.data())
def test_batching_and_checkpoints_do_not_change_results(rows: list[Row], data: st.DataObject) -> None:
    lateness = 30 * MIN
    whole = run(RollupOperator("r", lateness_ns=lateness), rows)
    cuts = data.draw(st.lists(st.integers(1, len(rows) - 1), max_size=6))
    parts = run(RollupOperator("r", lateness_ns=lateness), rows, cuts)
    for iv in whole[0]:
        assert same(whole[0][iv], parts[0][iv])
    assert whole[1].equals(parts[1])

    cut = data.draw(st.integers(0, len(rows)))
    df = frame(rows)
    spill = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as tmp:
        # spilled levels go through a checkpoint file (their rows written as parts), the others
        # through a plain pickle (parts pickle as lists)
        first = RollupOperator("r", lateness_ns=lateness, spill_dir=Path(tmp) / "a" if spill else None)
        a = first.process(df.head(cut))
        first.open_rows("1d")
        second = RollupOperator("r", lateness_ns=lateness, spill_dir=Path(tmp) / "b" if spill else None)
        if spill:
            store = CheckpointStore(Path(tmp) / "cp")
            store.save({"offset": 1}, {"r": first.state})
            loaded = store.load()
            assert loaded is not None
            second.restore(loaded["stages"]["r"])
        else:
            second.restore(pickle.loads(pickle.dumps(first.state())))
        for iv in second.intervals:
            assert second.open_rows(iv).equals(first.open_rows(iv))
        b, c = second.process(df.slice(cut)), second.flush()
    resumed = {iv: pl.concat([a.finalized[iv], b.finalized[iv], c.finalized[iv]]).sort("series", "field", "time") for iv in second.intervals}
    for iv in whole[0]:
        assert same(whole[0][iv], resumed[iv])


@PROPS
@given(rows=days(), budget=st.integers(1, 40), data=st.data())
def test_a_close_budget_does_not_change_results(rows: list[Row], budget: int, data: st.DataObject) -> None:
    """``close_max_rows``: windows due to close past the budget wait for later calls (a call
    with no values closes the next part); every level's rows and the late rows are those of an
    unlimited close, bit for bit."""
    lateness = 30 * MIN
    whole = run(RollupOperator("r", lateness_ns=lateness), rows)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(rows) - 1), max_size=8))))
    op = RollupOperator("r", lateness_ns=lateness, close_max_rows=budget)
    df = frame(rows)
    fin: dict[str, list[pl.DataFrame]] = {iv: [] for iv in op.intervals}
    late = []
    for a, b in zip([0, *cuts], [*cuts, df.height], strict=True):
        outs = [op.process(df.slice(a, b - a))]
        for _ in range(data.draw(st.integers(0, 3))):  # idle calls between batches close more
            outs.append(op.process(df.clear()))
        if b == df.height:
            outs.append(op.flush())
        for out in outs:
            late.append(out.late)
            for iv, f in out.finalized.items():
                fin[iv].append(f)
    assert not op.deferred
    got = {iv: pl.concat(fs).sort("series", "field", "time") for iv, fs in fin.items()}
    for iv in whole[0]:
        assert same(whole[0][iv], got[iv]), iv
    assert whole[1].equals(pl.concat(late))


def test_a_close_past_the_budget_goes_on_in_later_calls() -> None:
    """Three series' minutes close together; with a budget of one series' rows, each call
    aggregates the next series (in id order) until none waits."""
    rows = [(f"m,dev={d}", "f", T0 + i * S, float(i)) for d in range(3) for i in range(50)]
    rows += [(f"m,dev={d}", "f", T0 + 3 * MIN, 0.0) for d in range(3)]  # every watermark past minute 0
    df = frame([(*r, T0) for r in rows])
    op = RollupOperator("r", ("1m", "1h"), close_max_rows=50)
    out = op.process(df)
    assert op.deferred and out.finalized["1m"].get_column("series").to_list() == ["m,dev=0"]
    # the windows waiting are still open rows (a query sees each window once, finished or open)
    waiting = op.open_rows("1m").filter(pl.col("time") == T0)
    assert sorted(waiting.get_column("series").to_list()) == ["m,dev=1", "m,dev=2"]
    assert waiting.get_column("count").to_list() == [50, 50]
    assert op.open_rows("1h").filter(pl.col("time") == T0).get_column("count").sum() == 3 * 51
    # a restore while windows wait goes on closing them
    again = RollupOperator("r", ("1m", "1h"), close_max_rows=50)
    again.restore(pickle.loads(pickle.dumps(op.state())))
    assert again.deferred
    seen = ["m,dev=0"]
    while op.deferred:
        seen += op.process(df.clear()).finalized["1m"].get_column("series").to_list()
    assert seen == ["m,dev=0", "m,dev=1", "m,dev=2"]
    resumed = ["m,dev=0"]
    while again.deferred:
        resumed += again.process(df.clear()).finalized["1m"].get_column("series").to_list()
    assert resumed == seen


def same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Rows bit-identical (mean, stddev and rate are computed with NumPy: Polars' expressions gave
    last-bit differences for the same inputs)."""
    return a.equals(b)


def run_sink(op: RollupOperator, rows: Sequence[Row], cuts: Sequence[int] = ()) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """:func:`run` through ``process_partials`` with a sink (the runner's way): slices of
    finished partials, each a key range of one level, turned into rows as they come."""
    df = frame(rows)
    bounds = [0, *sorted(set(cuts)), df.height]
    fin: dict[str, list[pl.DataFrame]] = {iv: [] for iv in op.intervals}
    late = []

    def sink(iv: str, part: pl.DataFrame) -> None:
        assert part.height
        kid = part.get_column("kid").to_numpy()
        assert (np.diff(kid) >= 0).all()  # a slice is in key order
        fin[iv].append(op.rows(iv, part))

    for a, b in zip(bounds, bounds[1:], strict=False):
        out = op.process_partials(df.slice(a, b - a), sink=sink)
        assert out.partials == {}
        late.append(out.late)
    last = op.flush()  # the eager way, for the end
    late.append(last.late)
    for iv, f in last.finalized.items():
        fin[iv].append(f)
    return {iv: pl.concat(fs).sort("series", "field", "time") for iv, fs in fin.items()}, pl.concat(late)


@PROPS
@given(rows=days(), fold=st.integers(1, 5), data=st.data())
def test_folding_in_slices_does_not_change_results(rows: list[Row], fold: int, data: st.DataObject) -> None:
    """Coarser levels fold finished partials in slices of keys (bounded memory when the windows
    of many series close together): the rows are identical whatever the slice size."""
    lateness = 30 * MIN
    cuts = data.draw(st.lists(st.integers(1, len(rows) - 1), max_size=4))
    whole = run(RollupOperator("r", lateness_ns=lateness), rows, cuts)
    with mock.patch("sensorium.stream.rollup.FOLD_ROWS", fold), tempfile.TemporaryDirectory() as tmp:
        sliced = run(RollupOperator("r", lateness_ns=lateness), rows, cuts)
        # the coarser levels spilled to files between folds: the same rows, and no file left over
        spilled = run(RollupOperator("r", lateness_ns=lateness, spill_dir=Path(tmp)), rows, cuts)
        assert not list(Path(tmp).iterdir())  # flushed: every level empty
        # finished partials handed to a sink slice by slice as the levels advance together
        sunk = run_sink(RollupOperator("r", lateness_ns=lateness, spill_dir=Path(tmp)), rows, cuts)
    for iv in whole[0]:
        assert same(whole[0][iv], sliced[0][iv])
        assert same(whole[0][iv], spilled[0][iv])
        assert same(whole[0][iv], sunk[0][iv])
    assert whole[1].equals(sliced[1]) and whole[1].equals(spilled[1]) and whole[1].equals(sunk[1])


def dense(n_series: int = 3, seconds: int = 200, seed: int = 3) -> list[Row]:
    """Four points a second per series, in order but for some jitter within a second."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(seconds * 4):
        for s in range(n_series):
            t = T0 + i * S // 4 + int(rng.integers(0, S // 8))
            rows.append((t + int(rng.integers(0, S)), (f"d,dev={s}", "power", t, float(np.round(rng.normal(100 * (s + 1), 10), 2)))))
    rows.sort()
    return [(*r, arrival) for arrival, r in rows]


def test_dense_fine_levels() -> None:
    rows = dense()
    lateness = S
    fin, late = run(RollupOperator("r", ("1s", "10s", "1m"), lateness_ns=lateness), rows, cuts=range(97, len(rows), 97))
    for i, (iv, size) in enumerate((("1s", S), ("10s", 10 * S), ("1m", MIN))):
        check_level(fin[iv], rows, lateness, size, exact_pcts=i == 0)
    assert late.height == 0


def test_merge_rows_of_stored_levels() -> None:
    rows = dense(seconds=150)
    fin, _ = run(RollupOperator("r", ("1s", "10s", "1m"), lateness_ns=S), rows)
    merged = merge_rows(fin["10s"], every="1m")
    assert merged.schema == pl.Schema(row_schema())
    want = fin["1m"]
    assert merged.select("series", "field", "time", "count").equals(want.select("series", "field", "time", "count"))
    for a in (*STATS[1:], "p50", "p95", "p99"):
        assert np.allclose(merged[a].to_numpy(), want[a].to_numpy(), rtol=1e-9, equal_nan=True), a
    assert merged["_sketch"].equals(want["_sketch"])
    whole = merge_rows(fin["1s"])  # no `every`: one row per series and field
    assert whole.height == 3 and whole["count"].sum() == len(rows)


def test_idle_series_finishes_every_level() -> None:
    op = RollupOperator("r", ("1m", "1h"), lateness_ns=0, idle_timeout_ns="5m")
    out = op.process(frame([("quiet", "x", T0 + 10 * S, 4.0, T0 + 10 * S), ("quiet", "x", T0 + 20 * S, 6.0, T0 + 21 * S)]))
    assert all(f.height == 0 for f in out.finalized.values())
    assert op.open_rows("1h").select("count", "mean", "integral").rows() == [(2, 5.0, 50.0)]
    assert all(f.height == 0 for f in op.tick(T0 + 5 * MIN).finalized.values())
    ticked = op.tick(T0 + 21 * S + 5 * MIN)  # silent 5 min: watermark 20 s + 5 min
    assert ticked.finalized["1m"].select("time", "count").rows() == [(T0, 2)]
    assert ticked.finalized["1h"].height == 0
    ticked = op.tick(T0 + 21 * S + 60 * MIN)
    assert ticked.finalized["1h"].select("time", "count", "sum").rows() == [(T0, 2, 10.0)]
    assert op.open_rows("1h").height == 0


def test_interval_validation() -> None:
    with pytest.raises(ValueError, match=r"rollup interval '1h' \(1h\) must be a whole multiple \(>1\) of the finer interval '7m'"):
        RollupOperator("r", ("7m", "1h"))
    with pytest.raises(ValueError, match="whole multiple"):
        RollupOperator("r", ("1h", "1m"))
    with pytest.raises(ValueError, match="invalid duration"):
        RollupOperator("r", ("1m", "1hour"))
    with pytest.raises(ValueError, match="no rollup interval '5m'"):
        RollupOperator("r").open_rows("5m")
    assert parse_duration("1d") % parse_duration("1h") == 0


def test_single_level_and_schema() -> None:
    op = RollupOperator("r", ("1m",), percentiles=(90,))
    op.process(frame([("a", "x", T0, 1.0, 0), ("a", "x", T0 + S, 3.0, 1)]))
    out = op.flush().finalized["1m"]
    assert out.schema == pl.Schema(row_schema((90,)))
    row: dict[str, Any] = out.row(0, named=True)
    assert row["p90"] == pytest.approx(2.8) and row["_sketch"] is None  # no coarser level: no sketch


@pytest.mark.parametrize("spill", [False, True])
def test_a_fold_failing_part_way_refuses_to_checkpoint(spill: bool, tmp_path: Path) -> None:
    """The fold releases the running partials slice by slice (never two copies of a level in
    memory); if it fails part-way the level is lost, so the operator must not checkpoint it —
    the stream restarts from the last checkpoint instead."""
    rows = dense(seconds=150)
    op = RollupOperator("r", ("1s", "10s", "1m"), lateness_ns=S, spill_dir=tmp_path if spill else None)
    df = frame(rows)
    op.process(df.head(len(rows) // 2))
    before = pickle.dumps(op.state())
    calls = {"n": 0}
    real = fold_partials

    def failing(*a: object, **k: object) -> pl.DataFrame:
        calls["n"] += 1
        if calls["n"] == 2:
            raise MemoryError("no room")
        return real(*a, **k)  # type: ignore[arg-type]

    with mock.patch("sensorium.stream.rollup.FOLD_ROWS", 1), mock.patch("sensorium.stream.rollup.fold_partials", failing):
        with pytest.raises(MemoryError):
            op.process(df.slice(len(rows) // 2))
    with pytest.raises(RuntimeError, match="restart from the last checkpoint"):
        op.state()
    for iv in op.intervals:  # queries of open rows still answer (the lost level reads as empty)
        assert op.open_rows(iv).columns == row_columns()
    op.process(df.tail(5))  # later folds succeed; the lost level stays lost
    with pytest.raises(RuntimeError, match="restart from the last checkpoint"):
        op.state()
    again = RollupOperator("r", ("1s", "10s", "1m"), lateness_ns=S)
    again.restore(pickle.loads(before))  # the last checkpoint still works
    whole = RollupOperator("r", ("1s", "10s", "1m"), lateness_ns=S)
    assert again.process(df.slice(len(rows) // 2)).finalized["10s"].equals(
        (whole.process(df.head(len(rows) // 2)), whole.process(df.slice(len(rows) // 2)))[1].finalized["10s"]
    )


def test_a_failure_anywhere_in_the_cascade_refuses_to_checkpoint() -> None:
    """Not only a fold: once the finest level has moved on, any failure before the coarser levels
    took its finished partials loses them."""
    rows = dense(seconds=150)
    op = RollupOperator("r", ("1s", "10s", "1m"), lateness_ns=S)
    df = frame(rows)
    op.process(df.head(len(rows) // 2))
    with mock.patch("sensorium.stream.rollup._sorted", side_effect=MemoryError("no room")):
        with pytest.raises(MemoryError):
            op.process(df.slice(len(rows) // 2))
    with pytest.raises(RuntimeError, match="restart from the last checkpoint"):
        op.state()
