"""The compiled kernels (sensorium.jit) against NumPy / plain-Python references: same results,
bit for bit (the stream's outputs must not depend on which implementation ran). Every test runs
twice: on the ahead-of-time built module and on Numba's in-process JIT (the fallback)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorium import jit
from sensorium.jit import (
    counting_argsort,
    observe_rows,
    rolling_stats,
    rolling_update,
    segment_sums,
    window_partials,
)
from sensorium.keyindex import stable_argsort
from sensorium.stream.aggregate import (
    NO_KEY,
    PARTIAL,
    aggregate_rows,
    decode_sketches,
    fold_partials,
    merge_partials,
    sketch_keys,
)
from sensorium.stream.rolling import _window_stats

MIN = np.iinfo(np.int64).min


@pytest.fixture(autouse=True, params=["aot", "jit"])
def kernel_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test on the built module (which must build here) and on the JIT."""
    saved = jit._impl, jit._kind
    jit._impl = jit._load_aot() if request.param == "aot" else jit._load_jit()
    jit._kind = request.param
    yield request.param
    jit._impl, jit._kind = saved


@given(st.lists(st.integers(0, 300), max_size=400), st.integers(-5, 5))
@settings(max_examples=60, deadline=None)
def test_counting_argsort_is_a_stable_sort(keys: list[int], shift: int) -> None:
    k = np.array(keys, dtype=np.int64) + shift
    if k.size == 0:
        return
    got = counting_argsort(k, int(k.min()), int(k.max()))
    assert np.array_equal(got, np.argsort(k, kind="stable"))


def test_stable_argsort_both_paths_agree_with_numpy() -> None:
    rng = np.random.default_rng(3)
    dense = rng.integers(0, 5000, 100_000)  # counting sort
    sparse = rng.integers(0, 1 << 40, 1000)  # radix passes
    for k in (dense, sparse, dense.astype(np.int32), np.zeros(7, np.int64)):
        assert np.array_equal(stable_argsort(k), np.argsort(k, kind="stable"))


def test_segment_sums_equal_numpy_reduceat_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        lens = rng.integers(1, 400, 30)
        a = rng.normal(size=int(lens.sum())) * 10.0 ** rng.integers(-3, 6)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        assert np.array_equal(segment_sums(a, starts), np.add.reduceat(a, starts))


def test_observe_rows_matches_a_row_by_row_reference() -> None:
    rng = np.random.default_rng(11)
    n, ns, lateness = 2000, 17, 5
    sid = rng.integers(0, ns, n)
    time = rng.integers(0, 1000, n)
    max_time = np.full(ns, MIN, dtype=np.int64)
    max_time[:5] = rng.integers(0, 800, 5)
    wm = np.full(ns, MIN, dtype=np.int64)
    wm[:5] = max_time[:5] - lateness + rng.integers(0, 3, 5)
    ref_max, ref_before, ref_late = max_time.copy(), [], False
    for s, t in zip(sid.tolist(), time.tolist(), strict=True):
        m = int(ref_max[s])
        b = max(int(wm[s]), m - lateness if m != MIN else MIN)
        ref_before.append(b)
        ref_late |= t < b
        ref_max[s] = max(m, t)
    seen = np.zeros(ns, dtype=bool)
    before = np.empty(n, dtype=np.int64)
    late = observe_rows(sid, time, max_time, wm.copy(), lateness, seen, before)
    assert late == ref_late
    assert before.tolist() == ref_before
    assert np.array_equal(max_time, ref_max)
    assert np.array_equal(seen, np.isin(np.arange(ns), sid))


def _reference(k: np.ndarray, s: np.ndarray, t: np.ndarray, v: np.ndarray, qs: tuple[float, ...]) -> dict:
    """Per (key, start) with NumPy, the way the stream defines partials (later duplicate wins)."""
    out: dict[tuple[int, int], dict] = {}
    for key, start in sorted(set(zip(k.tolist(), s.tolist(), strict=True))):
        m = (k == key) & (s == start)
        tt, vv = t[m], v[m]
        o = np.argsort(tt, kind="stable")
        tt, vv = tt[o], vv[o]
        keep = np.append(tt[1:] != tt[:-1], True)
        tt, vv = tt[keep], vv[keep]
        total = np.add.reduceat(vv, [0])[0]
        dev = (vv - total / vv.size) ** 2
        contrib = np.zeros(vv.size)
        contrib[:-1] = ((vv[1:] + vv[:-1]) * np.diff(tt).astype(np.float64)) * 0.5e-9
        srt = np.sort(vv)
        pct = []
        for q in qs:
            h = q / 100.0 * (vv.size - 1)
            lo, hi = int(np.floor(h)), int(np.ceil(h))
            pct.append(srt[lo] if hi == lo else srt[lo] + (h - lo) * (srt[hi] - srt[lo]))
        keys = sketch_keys(vv)
        keys = keys[keys != NO_KEY]
        uk, uc = np.unique(keys, return_counts=True)
        out[(key, start)] = {
            "count": vv.size, "sum": total, "_m2": np.add.reduceat(dev, [0])[0], "min": vv.min(),
            "max": vv.max(), "_first_time": tt[0], "first": vv[0], "_last_time": tt[-1], "last": vv[-1],
            "integral": np.add.reduceat(contrib, [0])[0], "pct": pct, "sketch": (uk.tolist(), uc.tolist()),
        }
    return out


def _same(a: float, b: float) -> bool:
    """Equal, bit for bit (NaN equals NaN: an infinite value's deviations are NaN both ways)."""
    return bool(a == b or (np.isnan(a) and np.isnan(b)))


@pytest.mark.parametrize("wide", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_window_partials_equal_the_numpy_reference(seed: int, wide: bool) -> None:
    """``wide``: values over many orders of magnitude, both signs and infinities, so a group's
    sketch keys span more buckets than its bucket table holds (the sorted path) — the narrow
    values take the table path."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    k = (rng.integers(0, 40, n) << 20) | rng.integers(0, 3, n)  # series << FIELD_BITS | field
    s = rng.integers(0, 3, n) * 60_000_000_000
    t = s + rng.integers(0, 60, n) * 1_000_000_000  # duplicates and disorder
    v = np.round(rng.normal(20, 15, n), int(rng.integers(0, 4)))
    v[rng.random(n) < 0.01] = 0.0
    if wide:
        v = np.exp(rng.uniform(-20, 40, n)) * rng.choice([-1.0, 1.0], n)
        v[rng.random(n) < 0.01] = np.inf
    qs = (50.0, 95.0, 99.0)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the reference's deviations
        got = aggregate_rows(k, s, t, v, percentiles=qs, sketch=True)
        ref = _reference(k, s, t, v, qs)
    assert got.height == len(ref)
    assert list(zip(got["kid"].to_list(), got["start"].to_list(), strict=True)) == sorted(ref)
    row, key, cnt = decode_sketches(got.get_column("_sketch"))
    for i, r in enumerate(got.iter_rows(named=True)):
        e = ref[(r["kid"], r["start"])]
        for c in ("count", "sum", "_m2", "min", "max", "_first_time", "first", "_last_time", "last", "integral"):
            assert _same(r[c], e[c]), (c, r[c], e[c])
        assert all(_same(a, b) for a, b in zip([r["p50"], r["p95"], r["p99"]], e["pct"], strict=True))
        assert (key[row == i].tolist(), cnt[row == i].tolist()) == e["sketch"]


def test_window_partials_single_start_and_nan() -> None:
    k = np.array([5, 5, 5, 9], dtype=np.int64)
    t = np.array([3, 1, 2, 1], dtype=np.int64)
    v = np.array([1.0, np.nan, 2.0, 4.0])
    out = window_partials(k, np.array([60], np.int64), t, v, np.array([50.0]), np.empty(0, np.int32), NO_KEY)
    ok, os_, cnt, total, m2, mn, mx = out[:7]
    assert ok.tolist() == [5, 9] and os_.tolist() == [60, 60] and cnt.tolist() == [3, 1]
    assert np.isnan(total[0]) and np.isnan(mn[0]) and np.isnan(mx[0])  # NaN propagates as in NumPy
    assert total[1] == 4.0 and out[12][1, 0] == 4.0



# --- rolling statistics: the NumPy formulation the kernels replaced -------------------------
def _rolling_reference(
    buf: np.ndarray, count: np.ndarray, gk: np.ndarray, v: np.ndarray, starts: np.ndarray, which: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(stats, m) by gathering every row's window as a matrix and reducing it with
    ``_window_stats``; then the carried buffers and counts after the batch."""
    n, w = len(v), buf.shape[1]
    ends = np.append(starts[1:], n) - 1
    gs = np.zeros(n, dtype=np.intp)
    gs[starts[1:]] = 1
    group = np.cumsum(gs)
    p = np.arange(n) + (group + 1) * (w - 1)  # position of each row in ext
    ext = np.empty(n + len(starts) * (w - 1))
    ext[p] = v
    slots = (starts + np.arange(len(starts)) * (w - 1))[:, None] + np.arange(w - 1)[None, :]
    ext[slots] = buf[gk, 1:]
    pos = np.arange(n) - starts[group]
    m = np.minimum(w, pos + 1 + count[gk][group])
    back = np.arange(w)[::-1, None]
    stats = np.empty((len(which), n))
    _window_stats(ext[p[None, :] - back], m, stats, which)
    new_buf, new_count = buf.copy(), count.copy()
    back1 = np.arange(w - 1, -1, -1)
    idx = ends[:, None] - back1[None, :]
    lo = starts[:, None]
    carried = buf[gk[:, None], np.minimum(w + idx - lo, w - 1)]
    new_buf[gk] = np.where(idx >= lo, v[np.maximum(idx, 0)], carried)
    new_count[gk] = np.minimum(w, ends - starts + 1 + count[gk])
    return stats, m, new_buf, new_count


@pytest.mark.parametrize("seed", range(6))
def test_rolling_kernels_equal_the_numpy_reference_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    w = int(rng.integers(2, 12))
    keys = 40
    count = rng.integers(0, w + 1, keys).astype(np.int64)
    count[:3] = (0, w, 1)
    buf = np.full((keys, w), np.nan)
    for k in range(keys):  # the last count[k] slots hold values, the rest NaN (never filled)
        if count[k]:
            buf[k, w - count[k]:] = rng.normal(size=count[k]) * 10.0 ** rng.integers(-2, 4)
    buf[5, -1] = -0.0
    gk = rng.permutation(keys)[: int(rng.integers(1, keys))].astype(np.int64)
    lens = rng.integers(1, 3 * w, gk.size)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    v = rng.normal(size=int(lens.sum())) * 100
    v[rng.integers(0, v.size, 3)] = -0.0
    v[rng.integers(0, v.size, 3)] = 0.0
    which = tuple(sorted(rng.choice(5, size=int(rng.integers(1, 6)), replace=False).tolist()))
    ref_stats, ref_m, ref_buf, ref_count = _rolling_reference(buf, count, gk, v, starts, which)
    stats, m = rolling_stats(buf, count, gk, v, starts, which)
    assert np.array_equal(m, ref_m)
    # bit for bit, NaN where the reference has NaN, signed zeros included
    assert np.array_equal(stats.view(np.int64), ref_stats.view(np.int64))
    rolling_update(buf, count, gk, v, starts)
    assert np.array_equal(count, ref_count)
    assert np.array_equal(buf, ref_buf, equal_nan=True)
    with pytest.raises(TypeError):
        rolling_update(buf.astype(np.float32), count, gk, v, starts)


@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 6), st.integers(0, 3)), max_size=300),
       st.integers(1, 4), st.integers(-3, 3))
@settings(max_examples=60, deadline=None)
def test_group_order_is_lexsort_by_key_then_start_rank(rows: list[tuple[int, int, int]], ns: int, shift: int) -> None:
    """One counting sort of the dense (series, field, start rank) code gives the stable order of
    ``np.lexsort((rank, kid))``, negative series ids included; a code wider than ``max_span`` is
    refused (None) so the caller sorts another way."""
    if not rows:
        assert len(jit.group_order(np.empty(0, np.int64), None, 1, 8, 100)) == 0  # type: ignore[arg-type]
        return
    sid, fid, rank = (np.array(c, dtype=np.int64) for c in zip(*rows, strict=True))
    kid = ((sid + shift) << 8) | fid
    rank %= ns
    got = jit.group_order(kid, rank, ns, 8, 1 << 20)
    assert got is not None
    want = np.lexsort((rank, kid)) if ns > 1 else np.argsort(kid, kind="stable")
    assert np.array_equal(got, want)
    assert jit.group_order(kid, rank, ns, 8, 0) is None


def test_group_order_refuses_sparse_keys_without_overflow() -> None:
    kid = np.array([0, (1 << 50) << 8, 5], dtype=np.int64)
    assert jit.group_order(kid, None, 1, 8, 1 << 20) is None
    assert jit.group_order(kid, np.array([0, 1, 0]), 1 << 40, 8, 1 << 20) is None


def test_group_order_without_ranks_ignores_ns_and_checks_ranks() -> None:
    """No ranks (None) with ``ns`` > 1 sorts by key alone (the kernel must not read ranks it was
    not given); ranks out of [0, ns) or of another length are refused before the kernel runs."""
    kid = np.array([3, 1, 2, 1], dtype=np.int64)
    got = jit.group_order(kid, None, 3, 8, 1 << 20)
    assert got is not None and got.tolist() == [1, 3, 2, 0]
    for bad in (np.array([0, 1, 3, 0]), np.array([0, 1]), np.array([0, -1, 0, 0])):
        with pytest.raises(ValueError):
            jit.group_order(kid, bad, 3, 8, 1 << 20)


def test_window_partials_sketch_of_small_groups_beside_a_large_one() -> None:
    """The bucket table is used only when a group's key range is near its size (a small group of
    values straddling zero spans ~2,000 buckets): the records equal the sorted path's either way."""
    rng = np.random.default_rng(11)
    big = rng.normal(0.0, 1.0, 600)
    small = np.tile([-1.0, 1.0], 50)
    k = np.concatenate([np.zeros(600, np.int64), np.repeat(np.arange(1, 51), 2)])
    v = np.concatenate([big, small])
    t = np.concatenate([np.arange(600), np.tile([0, 1], 50)]).astype(np.int64)
    got = aggregate_rows(k, np.zeros(1, np.int64), t, v, sketch=True)
    row, key, cnt = decode_sketches(got.get_column("_sketch"))
    for i, kk in enumerate(got["kid"].to_list()):
        vals = v[k == kk]
        keys = sketch_keys(vals)
        uk, uc = np.unique(keys[keys != NO_KEY], return_counts=True)
        assert (key[row == i].tolist(), cnt[row == i].tolist()) == (uk.tolist(), uc.tolist())


def test_grouping_of_sparse_keys_falls_back_to_the_same_order() -> None:
    """Keys too far apart for the counting sort (series ids ~2^30 apart) are grouped by radix
    passes or a lexsort: the same stable (key, start) order."""
    from sensorium.stream.aggregate import _group_order

    rng = np.random.default_rng(4)
    kid = (rng.choice([0, 1 << 30, 1 << 31], 500) << 20) | rng.integers(0, 3, 500)
    start = rng.choice([0, 60, 120], 500).astype(np.int64)
    assert jit.group_order(kid, None, 1, 20, 1 << 20) is None
    assert np.array_equal(_group_order(kid, start[:1]), np.argsort(kid, kind="stable"))
    assert np.array_equal(_group_order(kid, start), np.lexsort((start, kid)))


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), min_size=1, max_size=200), st.data())
@settings(max_examples=60, deadline=None)
def test_pair_counts_and_scatter_group_rows_by_pair_in_row_order(rows: list[tuple[int, int]], data: st.DataObject) -> None:
    """Counts and first rows per (field, series) code over the span of the ids present equal
    NumPy's; placing the rows of any chosen pairs, in any order, gives each pair's rows in row
    order, pair after pair; tables wider than the limit are refused."""
    sid = np.array([r[0] + 7 for r in rows], dtype=np.int32)
    fid = np.array([r[1] + 2 for r in rows], dtype=np.int32)
    got = jit.pair_counts(sid, fid, 1 << 20)
    assert got is not None
    s0, f0, ns, counts, first = got
    assert (s0, f0, ns) == (int(sid.min()), int(fid.min()), int(sid.max()) - int(sid.min()) + 1)
    nf = int(fid.max()) - f0 + 1
    code = (fid.astype(np.int64) - f0) * ns + sid - s0
    assert np.array_equal(counts, np.bincount(code, minlength=ns * nf)) and counts.size == ns * nf
    for c in range(ns * nf):
        hits = np.flatnonzero(code == c)
        assert first[c] == (hits[0] if len(hits) else -1)
    assert jit.pair_counts(sid, fid, ns * nf - 1) is None
    present = np.flatnonzero(counts)
    pick = data.draw(st.permutations(present.tolist()))[: data.draw(st.integers(0, len(present)))]
    offset = np.full(ns * nf, -1, dtype=np.int64)
    sizes = counts[pick] if pick else np.zeros(0, np.int64)
    offset[pick] = np.cumsum(sizes) - sizes
    placed = jit.pair_scatter(sid, fid, s0, f0, ns, offset, int(sizes.sum()))
    want = np.concatenate([np.flatnonzero(code == c) for c in pick]) if pick else np.zeros(0, np.int64)
    assert np.array_equal(placed, want)


def test_pair_kernels_refuse_ids_out_of_range_and_bad_offsets() -> None:
    sid, fid = np.array([0, 3], np.int32), np.array([1, 0], np.int32)
    with pytest.raises(ValueError, match="some rows"):
        jit.pair_counts(sid[:0], fid[:0], 100)
    with pytest.raises(ValueError, match="a series id and a field id per row"):
        jit.pair_counts(sid, fid[:1], 100)
    offset = np.full(8, -1, dtype=np.int64)
    offset[4] = 0
    offset[3] = 5  # past the end of the output
    with pytest.raises(ValueError, match="rows placed"):
        jit.pair_scatter(sid, fid, 0, 0, 4, offset, 2)
    with pytest.raises(ValueError, match="out of range"):
        jit.pair_scatter(sid, fid, 1, 0, 4, np.full(8, -1, np.int64), 1)  # series 0 below s0
    with pytest.raises(ValueError, match="out of range"):
        jit.pair_scatter(sid, fid, 0, 0, 4, np.zeros(4, np.int64), 2)  # one field's offsets, ids of two


@given(st.lists(st.lists(st.integers(-3, 8), min_size=1, max_size=12), max_size=25), st.data())
@settings(max_examples=80, deadline=None)
def test_rising_rows_equal_the_numpy_reference(groups: list[list[int]], data: st.DataObject) -> None:
    """Rows after every earlier row of their group and the carried time: as ``in_order``."""
    from sensorium.rules._kernels import Segments, in_order

    t = np.array([x for g in groups for x in g], dtype=np.int64)
    sizes = np.array([len(g) for g in groups], dtype=np.int64)
    si = np.cumsum(sizes) - sizes
    carry = np.array([data.draw(st.sampled_from([MIN, -2, 0, 4])) for _ in groups], dtype=np.int64)
    ok, kept = jit.rising_rows(t, si, carry)
    if len(t):
        kid = np.repeat(np.arange(len(groups), dtype=np.int32), sizes)
        want = in_order(Segments(kid, t, t.astype(np.float64), np.arange(len(t)), si), carry)
        assert np.array_equal(ok, want)
    assert np.array_equal(kept, np.add.reduceat(ok, si) if len(t) else np.zeros(0, np.int64))
    with pytest.raises(ValueError):
        jit.rising_rows(t, si, carry[:-1] if len(carry) else np.zeros(1, np.int64))


@given(st.lists(st.tuples(st.integers(-50, 400), st.integers(0, 7)), min_size=1, max_size=200),
       st.integers(1, 90), st.integers(0, 89))
@settings(max_examples=60, deadline=None)
def test_pane_buckets_order_rows_by_pane_then_series_stably(rows: list[tuple[int, int]], p: int, off: int) -> None:
    """Rows in (pane, series) order, arrival order within one, as a stable lexsort; each code's
    end as the cumulative counts; a span over the limit refused (None)."""
    off %= p
    t = np.array([r[0] for r in rows], dtype=np.int64)
    sid = np.array([r[1] + 3 for r in rows], dtype=np.int64)
    kid = sid * 100 + np.arange(len(rows))
    v = np.arange(len(rows), dtype=np.float64) / 7
    got = jit.pane_buckets(t, sid, kid, v, off, p, 1 << 20)
    assert got is not None
    q0, s0, ns, ends, (k2, t2, v2) = got
    q = (t - off) // p  # floor division, as the panes of negative times need
    want = np.lexsort((sid, q))
    assert q0 == int(q.min()) and s0 == int(sid.min()) and ns == int(sid.max()) - s0 + 1
    assert np.array_equal(k2, kid[want]) and np.array_equal(t2, t[want]) and np.array_equal(v2, v[want])
    code = (q - q0) * ns + sid - s0
    assert np.array_equal(ends, np.cumsum(np.bincount(code, minlength=ends.size)))
    assert jit.pane_buckets(t, sid, kid, v, off, p, ends.size - 1) is None
    with pytest.raises(ValueError):
        jit.pane_buckets(t, sid[:-1], kid, v, off, p, 1 << 20)


def _fold_reference(held: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """The fold as the rollups did it before the kernel: one ``merge_partials`` per rank of the
    new rows within their window (held + the rank's rows, merged pairwise in time order)."""
    rank = new.select(pl.int_range(pl.len()).over("kid", "start")).to_series()
    for r in range(int(rank.max() or 0) + 1):  # type: ignore[operator]
        held = merge_partials(pl.concat([held, new.filter(rank == r)]), percentiles=(), sketch=True)
    return held


@pytest.mark.parametrize("seed", range(8))
def test_fold_partials_equal_merging_rank_by_rank(seed: int) -> None:
    """Finished minutes folded into hours: held rows (some windows with none), several new
    minutes per window (the ranks), NaN and infinite values among them; every column and the
    sketches bit for bit as the rank-by-rank ``merge_partials`` gave."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 2000))
    k = (rng.integers(0, 30, n) << 20) | rng.integers(0, 3, n)
    minute = rng.integers(0, 180, n)
    t = minute * 60_000_000_000 + rng.integers(0, 60, n) * 1_000_000_000
    v = np.round(rng.normal(20, 15, n), 2)
    v[rng.random(n) < 0.01] = np.nan
    v[rng.random(n) < 0.005] = -np.inf
    with np.errstate(invalid="ignore", over="ignore"):
        minutes = aggregate_rows(k, minute * 60_000_000_000, t, v, sketch=True)
    hour = 3_600_000_000_000
    lifted = minutes.with_columns((pl.col("start") // hour * hour).alias("start"))
    first = rng.random(minutes.height) < 0.5  # about half the minutes are already in the hours
    cols = ["kid", "start", *PARTIAL, "_sketch"]
    with np.errstate(invalid="ignore", over="ignore"):
        held = _fold_reference(lifted.filter(first).select(cols).clear(), lifted.filter(first).select(cols).sort("kid", "start", "_first_time"))
        held = held.filter(pl.Series(rng.random(held.height) < 0.8))  # windows with no held row
        new = lifted.filter(~pl.Series(first)).select(cols).sort("kid", "start", "_first_time")
        got = fold_partials(held.select(cols), new)
        ref = _fold_reference(held.select(cols), new)
    assert got.columns == ref.columns
    assert got.height == ref.height
    for c in cols:
        a, b = got.get_column(c), ref.get_column(c)
        if c == "_sketch":
            assert a.to_list() == b.to_list()
        else:
            x, y = a.to_numpy(), b.to_numpy()
            assert x.dtype == y.dtype, c
            same = (x == y) | (np.isnan(x) & np.isnan(y)) if x.dtype.kind == "f" else x == y
            assert same.all(), (c, np.flatnonzero(~same)[:5])


def test_fold_partials_of_nothing_and_into_nothing() -> None:
    cols = ["kid", "start", *PARTIAL, "_sketch"]
    minutes = aggregate_rows(np.array([1, 1, 2], np.int64), np.array([0, 60, 0], np.int64) * 1_000_000_000,
                             np.array([1, 61, 5], np.int64) * 1_000_000_000, np.array([1.0, 2.0, 3.0]), sketch=True)
    lifted = minutes.with_columns(pl.lit(0, pl.Int64).alias("start")).select(cols)
    assert fold_partials(lifted.clear(), lifted.clear()).height == 0
    once = fold_partials(lifted.clear(), lifted)
    assert once.get_column("count").to_list() == [2, 1]
    assert once.get_column("sum").to_list() == [3.0, 3.0]
    assert fold_partials(once, lifted.clear()).rows() == once.rows()  # nothing new: unchanged


_LEVEL_RULES = """
[[rules]]
name = "hot"
kind = "threshold"
field = "x"
above = { warning = 5, critical = 8 }
below = { warning = -5, critical = -8.5 }
deadband = 1.5

[[rules]]
name = "hot-for"
kind = "threshold"
field = "x"
above = { warning = 3, critical = 6 }
deadband = 0.5
for = "30ns"

[[rules]]
name = "jump"
kind = "rate"
field = "x"
above = { warning = 2e8, critical = 6e8 }
below = { warning = -2e8 }
deadband = 5e7

[[rules]]
name = "jump-for"
kind = "rate"
field = "x"
below = { warning = -1e8, critical = -3e8 }
deadband = 0
for = "20ns"
"""


@pytest.mark.parametrize("seed", range(6))
def test_level_rows_equal_the_numpy_level_kernels(seed: int) -> None:
    """Threshold and rate levels (hysteresis, ``for``, NaN, carried state and points) computed by
    the compiled pass equal the NumPy passes, batch after batch, state included."""
    from sensorium.rules._kernels import NONE, Segments, make_kernel
    from sensorium.rules.loader import parse_rules

    rng = np.random.default_rng(seed)
    n_keys = 40
    for rule in parse_rules(_LEVEL_RULES).rules:
        fast, ref = make_kernel(rule), make_kernel(rule)
        fast.grow(n_keys)
        ref.grow(n_keys)
        last_t = np.full(n_keys, NONE, dtype=np.int64)
        last_v = np.full(n_keys, np.nan)
        clock = 0
        for _batch in range(8):
            keys = np.sort(rng.choice(n_keys, size=int(rng.integers(1, n_keys)), replace=False))
            sizes = rng.integers(1, 30, size=len(keys))
            kid = np.repeat(keys.astype(np.int32), sizes)
            t = clock + np.concatenate([np.cumsum(rng.integers(1, 9, size=k)) for k in sizes]).astype(np.int64)
            clock = int(t.max()) + 1
            v = rng.normal(0, 6, size=len(t)).round(1)
            v[rng.random(len(v)) < 0.08] = np.nan
            si = np.cumsum(sizes) - sizes
            carried = (last_t, last_v)
            slots = (n_keys - 1 - keys).astype(np.int32)  # slots in another order than keys
            got = fast.eval(Segments(kid, t, v, np.arange(len(t)), si, gl=slots, carried=carried))
            want = ref.eval_numpy(Segments(kid, t, v, np.arange(len(t)), si, gl=slots, carried=carried))
            for g, w in zip(got, want, strict=True):
                assert g.dtype == w.dtype
                np.testing.assert_array_equal(g, w)
            for name in ("active", "start", "any_active"):
                np.testing.assert_array_equal(getattr(fast, name), getattr(ref, name))
            ends = np.append(si[1:], len(t)) - 1
            last_t[keys], last_v[keys] = t[ends], v[ends]
        assert fast.any_active.any() or rule.name == "jump-for"  # the data reaches the levels


def test_level_rows_refuse_slots_and_state_that_do_not_fit() -> None:
    active, start, any_active = np.zeros((1, 4), bool), np.zeros((1, 4), np.int64), np.zeros(4, bool)
    args = (np.array([1.0]), np.array([5]), np.array([0]))
    ok = (np.array([1], np.int8), np.array([0.5]), 0.1, np.array([2], np.int8), 0, active, start, any_active)
    sev, lvl, sig = jit.level_rows(*args, np.array([3], np.int32), None, *ok)
    assert sev.tolist() == [2] and lvl.tolist() == [0] and sig.tolist() == [1.0] and any_active[3]
    with pytest.raises(ValueError, match="slot"):
        jit.level_rows(*args, np.array([4], np.int32), None, *ok)
    with pytest.raises(ValueError, match="shape"):
        jit.level_rows(*args, np.array([0], np.int32), None, *ok[:5], np.zeros((2, 4), bool), start, any_active)
    with pytest.raises(ValueError, match="carried"):
        jit.level_rows(*args, np.array([0], np.int32), (np.zeros(2, np.int64), np.zeros(2)), *ok)


def test_combo_add_equals_the_numpy_mix() -> None:
    """Each row adds splitmix64(hash ^ key) of its code's hash, nothing for null codes or zero
    hashes, wrapping around 2**64: as NumPy's uint64 arithmetic."""
    from sensorium.stream.frame import _mix

    rng = np.random.default_rng(3)
    ha = rng.integers(0, 2**63, size=50, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    hb = rng.integers(0, 2**63, size=50, dtype=np.uint64)
    ha[7] = hb[9] = 0
    codes = rng.integers(-1, 50, size=400).astype(np.int64)
    start = rng.integers(0, 2**63, size=400, dtype=np.uint64) * np.uint64(2)
    oa, ob = start.copy(), start.copy()
    jit.combo_add(codes, ha, hb, 0xABC, 2**64 - 5, oa, ob)
    for h, key, got in ((ha, 0xABC, oa), (hb, 2**64 - 5, ob)):
        x = np.where(codes >= 0, h[np.maximum(codes, 0)], np.uint64(0))
        part = _mix(x ^ np.uint64(key))
        part[x == 0] = 0
        assert np.array_equal(got, start + part)
    with pytest.raises(ValueError, match="hash per code"):
        jit.combo_add(np.array([50]), ha, hb, 1, 1, oa[:1].copy(), ob[:1].copy())
    with pytest.raises(ValueError, match="uint64 output"):
        jit.combo_add(codes, ha, hb, 1, 1, oa.astype(np.int64), ob)


@pytest.mark.parametrize("seed", range(5))
def test_window_partials_percentiles_of_large_groups_equal_a_sort(seed: int) -> None:
    """Percentiles come from order statistics selected by partitions (not a sort): groups large
    enough to be partitioned, ties, NaN, infinities, unsorted and extreme percentiles — every
    one equals the interpolation over the sorted values."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 700, size=12)
    k = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    t = np.concatenate([rng.permutation(n) for n in sizes]).astype(np.int64)  # distinct times, disordered
    v = np.round(rng.normal(0, 50, len(k)), int(rng.integers(-1, 2)))  # many ties when rounded to tens
    v[rng.random(len(v)) < 0.02] = np.nan
    v[rng.random(len(v)) < 0.01] = -np.inf
    if seed % 2:
        v[k == 3] = 7.0  # a group of one value
    qs = np.array([99.0, 0.0, 50.0, 100.0, 12.5, 95.0])
    out = jit.window_partials(k, np.zeros(1, np.int64), t, v, qs, np.empty(0, np.int32), int(NO_KEY))
    o_k, o_q = out[0], out[12]
    for g, key in enumerate(o_k.tolist()):
        vv = np.sort(v[k == key])
        for qi, q in enumerate(qs.tolist()):
            h = q / 100.0 * (vv.size - 1)
            lo, hi = int(np.floor(h)), int(np.ceil(h))
            with np.errstate(invalid="ignore"):
                want = vv[lo] if hi == lo else vv[lo] + (h - lo) * (vv[hi] - vv[lo])
            assert _same(o_q[g, qi], want), (seed, key, q, o_q[g, qi], want)


def test_remap_keys_maps_through_the_tables_and_counts_misses() -> None:
    ts = np.array([3, -1, 0, 7], dtype=np.int32)
    tf = np.array([1, 0], dtype=np.int32)
    sid, kid, missed = jit.remap_keys(ts, tf, np.array([0, 2, 3, 0], np.int32), np.array([1, 0, 1, 0], np.int32), 20)
    assert missed == 0 and sid.dtype == np.int64 and kid.dtype == np.int64
    assert sid.tolist() == [3, 0, 7, 3]
    assert kid.tolist() == [(3 << 20) | 0, (0 << 20) | 1, (7 << 20) | 0, (3 << 20) | 1]
    # not cached (-1), past the series table, past the field table
    sid, kid, missed = jit.remap_keys(ts, tf, np.array([1, 4, 0, 2], np.int32), np.array([0, 0, 2, 1], np.int32), 20)
    assert missed == 3 and sid.tolist() == [-1, -1, -1, 0] and kid.tolist() == [-1, -1, -1, 0]
    assert jit.remap_keys(ts, tf, np.zeros(0, np.int32), np.zeros(0, np.int32), 20)[2] == 0
