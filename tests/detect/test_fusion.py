"""Sensor fusion and the Kalman filter, against the simulator's ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sensorium.detect.fusion import fuse, fuse_and_store, kalman, kalman_frame, rmse
from sensorium.errors import BadRequest
from sensorium.ingest.sim.truth import Colocated, colocated_temperatures
from sensorium.platform import Sensorium
from tests.conftest import T0, FakeClock, make_settings

NS = 1_000_000_000
MIN = 60 * NS


@pytest.fixture(scope="module")
def two_days() -> Colocated:
    return colocated_temperatures(rooms=2, sensors=4, duration_s=2 * 86400, seed=11)


def _truth(c: Colocated) -> pl.DataFrame:
    return c.truth.select("time", "group", pl.col("value").alias("truth"))


def _sensor_rmse(c: Colocated) -> dict[str, float]:
    b = c.readings.with_columns(((pl.col("time") // c.interval_ns) * c.interval_ns).alias("time"))
    j = b.join(_truth(c), on=["time", "group"])
    out = j.group_by("sensor").agg(((pl.col("value") - pl.col("truth")) ** 2).mean().sqrt().alias("e"))
    return dict(zip(out["sensor"].to_list(), out["e"].to_list(), strict=True))


def _fused_rmse(fused: pl.DataFrame, c: Colocated) -> float:
    j = fused.join(_truth(c), on=["time", "group"])
    assert j.height == fused.height
    return rmse(j["value"].to_numpy(), j["truth"].to_numpy())


def test_fused_rmse_is_below_the_best_single_sensor(two_days: Colocated) -> None:
    singles = _sensor_rmse(two_days)
    best = min(singles.values())
    assert best == pytest.approx(0.1, rel=0.1)  # the best sensor's noise is 0.1 degC
    fused = fuse(two_days.readings, bucket="1m", by="group")
    assert fused.height == 2 * 2 * 1440
    assert (fused["sensors"] == 4).mean() > 0.99 and fused["sensors"].min() >= 3  # type: ignore[operator]
    e = _fused_rmse(fused, two_days)
    optimum = 1 / np.sqrt(sum(1 / s**2 for s in (0.1, 0.2, 0.4, 0.8)))  # known variances: 0.0868
    assert e < 0.97 * best, (e, best)
    assert e < 1.1 * optimum
    # the stated uncertainty matches the error actually made (after the first day's warm-up)
    late = fused.filter(pl.col("time") >= fused["time"].min() + 86400 * NS)  # type: ignore[operator]
    z = late.join(_truth(two_days), on=["time", "group"]).select(
        ((pl.col("value") - pl.col("truth")) / pl.col("std")).std()
    ).item()
    assert 0.8 < z < 1.3


def test_peer_median_variances_are_too_equal(two_days: Colocated) -> None:
    """The documented reason for the pairwise estimator: against the peer median, the best
    sensor's residual carries its noisy peers' variance too."""
    pair = _fused_rmse(fuse(two_days.readings, by="group"), two_days)
    peer = _fused_rmse(fuse(two_days.readings, by="group", method="peer_median"), two_days)
    assert pair < peer


def test_outliers_are_gated_and_gaps_tolerated() -> None:
    c = colocated_temperatures(rooms=1, sensors=4, duration_s=86400, outlier_rate=0.01,
                               missing_rate=0.05, seed=5)
    best = min(_sensor_rmse(c).values())
    fused = fuse(c.readings, by="group")
    assert _fused_rmse(fused, c) < 0.5 * best  # a 5-10 degC outlier in 1 % of readings
    assert fused["sensors"].min() >= 1 and fused["sensors"].max() == 4  # type: ignore[operator]
    ungated = fuse(c.readings, by="group", gate=None)
    assert _fused_rmse(fused, c) < _fused_rmse(ungated, c)


def test_fused_std_is_inverse_variance_formula_with_known_variances() -> None:
    t = T0 + np.arange(3) * MIN
    df = pl.DataFrame({
        "time": np.concatenate([t, t, t[:2]]),
        "group": ["r"] * 8,
        "sensor": ["a"] * 3 + ["b"] * 3 + ["c"] * 2,
        "value": [20.0, 21.0, 22.0, 20.4, 21.4, 22.4, 19.0, 20.0],
    })
    var = {"a": 0.01, "b": 0.04, "c": 0.25}
    out = fuse(df, by="group", variances=var)
    w = np.array([1 / 0.01, 1 / 0.04, 1 / 0.25])
    assert out["std"].to_list()[:2] == pytest.approx([1 / np.sqrt(w.sum())] * 2)
    x0 = np.array([20.0, 20.4, 19.0])
    assert out["value"][0] == pytest.approx((w * x0).sum() / w.sum())
    # the last bucket has no reading of c: two sensors
    w2 = w[:2]
    assert out.row(2, named=True)["sensors"] == 2
    assert out["std"][2] == pytest.approx(1 / np.sqrt(w2.sum()))
    assert out["value"][2] == pytest.approx((w2 * np.array([22.0, 22.4])).sum() / w2.sum())
    assert out["time"].to_list() == t.tolist()


def test_one_sensor_passes_through_and_two_split_evenly() -> None:
    c = colocated_temperatures(rooms=1, sensors=2, duration_s=6 * 3600, noise_std=(0.1, 0.5), seed=3)
    out = fuse(c.readings, by="group")
    assert (out["sensors"] == 2).all()
    lone = fuse(c.readings.filter(pl.col("sensor").str.ends_with("s1")), by="group")
    assert lone["std"].null_count() == lone.height  # no peers: no variance estimate
    b = c.readings.filter(pl.col("sensor").str.ends_with("s1"))
    assert lone["value"].to_list() == pytest.approx(b["value"].to_list())


def test_fusion_is_causal_and_deterministic(two_days: Colocated) -> None:
    full = fuse(two_days.readings, by="group")
    cut = two_days.truth["time"].min() + 20 * 3600 * NS  # type: ignore[operator]  # a bucket edge
    part = fuse(two_days.readings.filter(pl.col("time") < cut), by="group")
    head = full.filter(pl.col("time") < cut)
    assert part.equals(head)  # later data never changes an earlier bucket
    again = colocated_temperatures(rooms=2, sensors=4, duration_s=2 * 86400, seed=11)
    assert again.readings.equals(two_days.readings) and again.truth.equals(two_days.truth)
    assert fuse(again.readings, by="group").equals(full)


def test_bad_input_is_a_bad_request(two_days: Colocated) -> None:
    with pytest.raises(BadRequest):
        fuse(two_days.readings, by="nope")
    with pytest.raises(BadRequest):
        fuse(two_days.readings, by="group", bucket="soon")
    assert fuse(two_days.readings.head(0), by="group").height == 0


# -- Kalman ------------------------------------------------------------------------------------


def test_kalman_smoothing_beats_the_raw_sensor(two_days: Colocated) -> None:
    b = two_days.readings.with_columns(
        ((pl.col("time") // two_days.interval_ns) * two_days.interval_ns).alias("time")
    ).join(_truth(two_days), on=["time", "group"])
    for smooth in (True, False):
        kf = kalman_frame(b, by=["sensor"], smooth=smooth)
        per = kf.group_by("sensor").agg(
            ((pl.col("value") - pl.col("truth")) ** 2).mean().sqrt().alias("raw"),
            ((pl.col("value_kf") - pl.col("truth")) ** 2).mean().sqrt().alias("kf"),
        )
        assert (per["kf"] < per["raw"]).all(), per
        if smooth:  # the noisiest sensor gains most: 0.8 -> about a third
            worst = per.sort("raw").row(-1, named=True)
            assert worst["kf"] < 0.45 * worst["raw"]


def test_kalman_noise_estimates_and_methods_agree() -> None:
    rng = np.random.default_rng(0)
    n = 20_000
    level = np.cumsum(rng.normal(0, 0.05, n))  # Q = 0.0025
    y = level + rng.normal(0, 0.5, n)  # R = 0.25
    res = kalman(y)
    assert res.method == "steady"
    assert res.r[0] == pytest.approx(0.25, rel=0.1) and res.q[0] == pytest.approx(0.0025, rel=0.3)
    assert rmse(res.mean, level) < 0.5 * rmse(y, level)
    exact = kalman(y, q=res.q, r=res.r, method="exact")
    assert np.abs(exact.mean[1000:-1000] - res.mean[1000:-1000]).max() < 1e-6  # steady state
    assert exact.std[5000] == pytest.approx(res.std[5000], rel=1e-6)
    # missing samples: the exact recursion predicts through them
    y2 = y.copy()
    y2[100:130] = np.nan
    gap = kalman(y2, q=res.q, r=res.r)
    assert gap.method == "exact" and np.isfinite(gap.mean).all()
    assert gap.std[115] > gap.std[5000]  # less certain inside the gap
    causal = kalman(y, q=res.q, r=res.r, smooth=False)
    assert causal.mean[:500].tolist() == kalman(y[:500], q=res.q, r=res.r, smooth=False).mean.tolist()


# -- storing ------------------------------------------------------------------------------------


def test_fuse_and_store_writes_a_fused_measurement(tmp_path: Path) -> None:
    c = colocated_temperatures(rooms=2, sensors=3, duration_s=6 * 3600, noise_std=(0.1, 0.3, 0.6),
                               seed=2, start_ns=T0)
    r = c.readings
    lines = (
        pl.lit("climate,device_id=") + pl.col("sensor").str.replace_all("/", "-")
        + pl.lit(",location=") + pl.col("location") + pl.lit(",room=") + pl.col("room")
        + pl.lit(" temperature=") + pl.col("value").cast(pl.Utf8) + pl.lit(" ")
        + pl.col("time").cast(pl.Utf8)
    )
    body = "\n".join(r.select(lines.alias("l"))["l"].to_list())
    clock = FakeClock(T0 + 7 * 3600 * NS)
    p = Sensorium(make_settings(tmp_path / "d"), clock=clock, background=False)
    try:
        res = p.write(body)
        assert res.rejected == 0
        fused, summary = fuse_and_store(p, "climate", "temperature", start="now-8h", bucket="1m")
        assert summary["rows"] == fused.height == 2 * 360 and summary["stored"] == fused.height
        got = p.query(
            "SELECT location, room, count(*) AS n, count(temperature_std) AS n_std, "
            "max(sensors) AS s, avg(abs(temperature)) AS t FROM climate_fused GROUP BY ALL ORDER BY room"
        ).to_pylist()
        assert [(g["room"], g["n"], g["s"]) for g in got] == [("kitchen", 360, 3), ("living_room", 360, 3)]
        assert all(g["n_std"] >= 300 for g in got)  # std once the variances have warmed up
        stored = pl.from_arrow(p.query(
            "SELECT epoch_ns(time) AS time, room, temperature FROM climate_fused ORDER BY room, time"
        ))
        assert isinstance(stored, pl.DataFrame)
        assert stored["temperature"].to_list() == pytest.approx(fused.sort("room", "time")["value"].to_list())
        j = stored.join(c.truth.select("time", "room", pl.col("value").alias("truth")), on=["time", "room"])
        assert rmse(j["temperature"].to_numpy(), j["truth"].to_numpy()) < 0.12
        assert "climate_fused" in p.measurements("default")
    finally:
        p.close()
