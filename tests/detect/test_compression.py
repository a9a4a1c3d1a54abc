"""Deadband and swinging-door compression: the error bound holds for any finite series.

The bound is checked exactly (no float tolerance): ``abs(x - decompress(...)) <= E`` in float64,
as the module guarantees (see its docstring), for values from ±1e-300 to ±1.7e308.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sensorium.detect.compression as comp
from sensorium.detect.compression import compress, compress_frame, decompress

NS = 1_000_000_000
finite = st.floats(allow_nan=False, allow_infinity=False)
moderate = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


@st.composite
def series(draw: Any) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(1, 120))
    gaps = draw(st.lists(st.integers(1, 10**12), min_size=n, max_size=n))
    t = np.cumsum(np.array(gaps, dtype=np.int64))
    kind = draw(st.sampled_from(["any", "constant", "steps", "noise", "ramp", "tiny", "huge"]))
    if kind == "any":
        x = np.array(draw(st.lists(finite, min_size=n, max_size=n)))
    elif kind == "constant":
        x = np.full(n, draw(finite))
    elif kind == "steps":
        levels = draw(st.lists(moderate, min_size=1, max_size=6))
        x = np.array([levels[i * len(levels) // n] for i in range(n)])
    elif kind == "noise":
        seed = draw(st.integers(0, 2**32 - 1))
        scale = draw(st.sampled_from([1e-9, 1.0, 1e9]))
        x = np.random.default_rng(seed).normal(0, scale, n)
    elif kind == "ramp":
        x = draw(moderate) + draw(moderate) * np.arange(n, dtype=np.float64)
    elif kind == "tiny":
        x = np.array(draw(st.lists(st.floats(-1e-300, 1e-300), min_size=n, max_size=n)))
    else:
        x = np.array(draw(st.lists(st.sampled_from([1.7e308, -1.7e308, 1e308, 0.0, -5e307]),
                                   min_size=n, max_size=n)))
    return t, x


errors = st.one_of(
    st.just(0.0),
    st.floats(min_value=0.0, max_value=1e300),
    st.sampled_from([1e-12, 1e-3, 0.5, 1.0, 10.0, 1e6]),
)


def _check(t: np.ndarray, x: np.ndarray, e: float, method: str, max_gap: int | None) -> None:
    res = compress(t, x, e, method=method, max_gap=max_gap)  # type: ignore[arg-type]
    keep = res.keep
    assert keep[0] and keep[-1], "first and last points are kept"
    rec = decompress(t[keep], x[keep], t, method=method)  # type: ignore[arg-type]
    with np.errstate(over="ignore", invalid="ignore"):
        err = np.abs(x - rec)
    assert np.all(err <= e), (method, e, float(np.max(err)))
    assert res.max_error <= e
    if max_gap is not None:
        kt = t[keep]
        raw_gap = np.diff(t)
        # a kept-to-kept gap over max_gap only where the raw data itself has one
        for a, b in zip(kt[:-1], kt[1:], strict=True):
            if b - a > max_gap:
                i = np.searchsorted(t, a)
                assert raw_gap[i] > max_gap


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(series(), errors, st.sampled_from(["deadband", "sdt"]),
       st.one_of(st.none(), st.integers(1, 10**13)))
def test_reconstruction_error_never_exceeds_the_bound(
    s: tuple[np.ndarray, np.ndarray], e: float, method: str, max_gap: int | None
) -> None:
    t, x = s
    _check(t, x, e, method, max_gap)


@settings(max_examples=60, deadline=None)
@given(series(), errors, st.sampled_from(["deadband", "sdt"]))
def test_block_and_window_passes_select_the_same_points(
    s: tuple[np.ndarray, np.ndarray], e: float, method: str
) -> None:
    """The dense (block) and sparse (window) passes are two ways to the same greedy selection."""
    t, x = s
    old = comp._DENSE_GAP
    try:
        comp._DENSE_GAP = 1e9  # always blocks
        a = compress(t, x, e, method=method).keep  # type: ignore[arg-type]
        comp._DENSE_GAP = 0.0  # always windows
        b = compress(t, x, e, method=method).keep  # type: ignore[arg-type]
    finally:
        comp._DENSE_GAP = old
    assert np.array_equal(a, b)


def _brute(t: np.ndarray, x: np.ndarray, e: float, method: str) -> list[int]:
    """The definition, point by point (slow; the reference)."""
    n = len(t)
    keep, k = {0, n - 1}, 0
    if method == "deadband":
        for i in range(1, n):
            if abs(x[i] - x[k]) > e:
                keep.add(i)
                k = i
        return sorted(keep)
    while k < n - 1:
        good = j = k + 1
        while j < n:
            line = x[k] + (x[j] - x[k]) * (t[k + 1 : j] - t[k]) / (t[j] - t[k])
            if np.any(np.abs(x[k + 1 : j] - line) > e):
                break
            good, j = j, j + 1
        keep.add(good)
        k = good
    return sorted(keep)


@pytest.mark.parametrize("method", ["deadband", "sdt"])
def test_matches_the_point_by_point_definition(method: str) -> None:
    rng = np.random.default_rng(4)
    for _ in range(60):
        n = int(rng.integers(2, 150))
        t = np.cumsum(rng.integers(1, 5, n)).astype(np.int64) * NS
        x = np.cumsum(rng.normal(0, 1, n)) * float(rng.choice([0.1, 1.0, 10.0]))
        e = float(rng.choice([0.0, 0.3, 1.0, 3.0]))
        got = np.flatnonzero(compress(t, x, e, method=method).keep).tolist()  # type: ignore[arg-type]
        assert got == _brute(t, x, e, method)


def test_compression_ratio_on_smooth_data() -> None:
    t = np.arange(86_400, dtype=np.int64) * NS
    x = 20 + 3 * np.sin(2 * np.pi * t / (86_400 * NS)) + np.round(np.sin(t / (600 * NS)) * 0.2, 2)
    sdt = compress(t, x, 0.05, method="sdt")
    dead = compress(t, x, 0.05, method="deadband")
    assert sdt.ratio > 50 and dead.ratio > 10
    assert sdt.ratio > dead.ratio  # lines follow slopes that steps cannot
    assert sdt.fixups == 0 and dead.fixups == 0
    # a heartbeat bounds the spacing of kept points
    hb = compress(t, x, 0.05, method="sdt", max_gap=300 * NS)
    assert np.diff(t[hb.keep]).max() <= 300 * NS and hb.ratio < sdt.ratio


def test_frame_of_many_series_equals_one_by_one() -> None:
    rng = np.random.default_rng(9)
    parts = []
    for i, n in enumerate([1, 2, 500, 3000, 40]):
        t = np.cumsum(rng.integers(1, 3, n)).astype(np.int64) * NS
        parts.append(pl.DataFrame({"dev": f"d{i}", "time": t, "value": np.cumsum(rng.normal(0, 1, n))}))
    df = pl.concat(parts).sample(fraction=1.0, shuffle=True, seed=1)  # any row order
    for method in ("sdt", "deadband"):
        frame, res = compress_frame(df, 1.5, method=method, by=["dev"])  # type: ignore[arg-type]
        for part in parts:
            one = compress(part["time"].to_numpy(), part["value"].to_numpy(), 1.5, method=method)  # type: ignore[arg-type]
            got = frame.filter(pl.col("dev") == part["dev"][0])["kept"].to_numpy()
            assert np.array_equal(got, one.keep)
        assert res.kept == int(frame["kept"].sum())
        # per-series bounds
        per = frame.with_columns(pl.when(pl.col("dev") == "d3").then(0.1).otherwise(5.0).alias("e"))
        _, r2 = compress_frame(per, method=method, by=["dev"], error_col="e")  # type: ignore[arg-type]
        assert r2.kept != res.kept


def test_bad_input_is_refused() -> None:
    t = np.arange(5, dtype=np.int64)
    x = np.zeros(5)
    for kwargs in ({"error": -1.0}, {"error": float("nan")}, {"error": 1.0, "method": "zip"},
                   {"error": 1.0, "max_gap": 0}):
        with pytest.raises(ValueError):
            compress(t, x, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        compress(t[::-1].copy(), x, 1.0)  # not increasing
    with pytest.raises(ValueError):
        compress(t, np.array([0, 1, np.nan, 2, 3.0]), 1.0)
    assert compress(t[:0], x[:0], 1.0).kept == 0
    assert decompress([10], [2.5], [0, 10, 20]).tolist() == [2.5, 2.5, 2.5]


def test_stream_stage_stores_what_whole_series_compression_keeps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from sensorium.platform import Sensorium
    from tests.conftest import T0, FakeClock, make_settings

    ns = 1_000_000_000
    rng = np.random.default_rng(4)
    n = 1500
    x = 20 + np.cumsum(rng.normal(0, 0.05, n))
    settings = make_settings(tmp_path / "data", detect={"compression": {"enabled": True, "errors": {"temperature": 0.2}}})
    p = Sensorium(settings, clock=FakeClock(T0 + 3600 * ns), background=False)
    try:
        lines = [f"climate,device_id=a temperature={float(v)!r},humidity=40 {T0 + i * ns}" for i, v in enumerate(x)]
        for i in range(0, n, 97):  # many micro-batches
            p.write("\n".join(lines[i : i + 97]))
            p.process_stream()
        assert p.stream is not None
        p.stream.checkpoint()
        got = p.query("SELECT epoch_ns(time) AS t, value, field, measurement, device_id FROM historian ORDER BY t")
    finally:
        p.close()
    t = T0 + np.arange(n, dtype=np.int64) * ns
    whole = compress(t, x, 0.2, method="sdt", max_gap=3600 * ns)
    kept_t = np.asarray(got.column("t").to_pylist())
    assert set(got.column("field").to_pylist()) == {"temperature"}  # humidity has no bound: not compressed
    assert got.column("device_id").to_pylist()[0] == "a" and got.column("measurement").to_pylist()[0] == "climate"
    # every decided point, in order; only the still-open tail is missing
    assert np.array_equal(kept_t, t[whole.keep][: len(kept_t)]) and len(kept_t) >= whole.kept - 3
    # the stored points reconstruct the series within the bound up to the last stored point
    upto = t <= kept_t[-1]
    rec = decompress(kept_t, np.asarray(got.column("value").to_pylist()), t[upto], method="sdt")
    assert np.max(np.abs(rec - x[upto])) <= 0.2 + 1e-9
    assert len(kept_t) < n / 3
