"""Forecasting: the grid, season detection, the models, forecast errors and the backtest metrics."""

from __future__ import annotations

import builtins
import sys
from typing import Any

import numpy as np
import pytest

from sensorium.detect.backtest import backtest, backtest_series, mase, smape
from sensorium.detect.forecast import (
    DAY_NS,
    ETSForecaster,
    RegularSeries,
    SeasonalNaive,
    detect_season,
    forecast_errors,
    infer_interval,
    make_forecaster,
    regularize,
)
from sensorium.errors import BadRequest

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
MIN = 60 * 10**9
Q = 15 * MIN  # 15 minutes


def daily(days: int, *, seed: int = 0, trend: float = 0.0, noise: float = 0.5, step: int = Q) -> tuple[np.ndarray, np.ndarray]:
    """A daily-seasonal series with a trend and AR(1) noise, one reading per ``step``."""
    rng = np.random.default_rng(seed)
    per_day = DAY_NS // step
    n = days * per_day
    i = np.arange(n)
    ar = np.zeros(n)
    eps = rng.normal(0.0, noise, n)
    for k in range(1, n):  # test data only
        ar[k] = 0.6 * ar[k - 1] + eps[k]
    y = 20.0 + trend * i / per_day + 3.0 * np.sin(2 * np.pi * i / per_day) + ar
    return T0 + i * step, y


# -- the grid ---------------------------------------------------------------------------------------
def test_interval_is_inferred_and_snapped_despite_jitter() -> None:
    rng = np.random.default_rng(1)
    t = T0 + np.arange(500) * Q + rng.integers(-30, 30, 500) * 10**9
    assert infer_interval(t) == Q


def test_regularize_averages_interpolates_and_drops_before_long_gaps() -> None:
    t = T0 + np.array([0, 0, 1, 3, 4], dtype=np.int64) * Q
    s = regularize(t, np.array([1.0, 3.0, 4.0, 8.0, 10.0]), Q)
    assert s.start_ns == T0 and s.interval_ns == Q
    assert s.values.tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]  # slot 2 interpolated
    assert s.filled == 1 and s.dropped == 0
    # a 10-hour hole: the history before it is dropped
    t2 = np.concatenate([T0 + np.arange(5) * Q, T0 + (45 + np.arange(5)) * Q])
    s2 = regularize(t2, np.arange(10.0), Q)
    assert s2.start_ns == T0 + 45 * Q and len(s2) == 5 and s2.dropped == 5
    with pytest.raises(BadRequest, match="no finite values"):
        regularize(t, np.full(5, np.nan), Q)


# -- seasons ----------------------------------------------------------------------------------------
def test_season_detection_finds_the_day() -> None:
    t, y = daily(10)
    assert detect_season(y, Q) == 96
    th, yh = daily(10, step=60 * MIN)
    assert detect_season(yh, 60 * MIN) == 24


def test_season_detection_prefers_week_only_when_weekends_differ() -> None:
    rng = np.random.default_rng(3)
    n = 24 * 7 * 5  # five weeks of hours
    i = np.arange(n)
    day_shape = np.sin(2 * np.pi * i / 24)
    weekend = ((i // 24) % 7) >= 5
    y_week = 10 + np.where(weekend, 0.3, 3.0) * day_shape + rng.normal(0, 0.3, n)
    assert detect_season(y_week, 60 * MIN) == 168
    y_day = 10 + 3.0 * day_shape + rng.normal(0, 0.3, n)
    assert detect_season(y_day, 60 * MIN) == 24


def test_no_season_in_noise_random_walks_or_short_histories() -> None:
    rng = np.random.default_rng(4)
    assert detect_season(rng.normal(size=2000), Q) == 1
    assert detect_season(np.cumsum(rng.normal(size=2000)), Q) == 1
    _, y = daily(1)  # one day: fewer than two seasons
    assert detect_season(y, Q) == 1
    f = ETSForecaster(season_length=96).fit(*daily(1))
    assert f.m == 1 and "off" in f.info["season"]


# -- models -----------------------------------------------------------------------------------------
def test_seasonal_naive_repeats_the_last_season_and_widens_per_season() -> None:
    t = T0 + np.arange(12) * Q
    y = np.tile([1.0, 2.0, 3.0, 5.0], 3) + np.arange(12) * 0.0
    y[-4:] += 1.0  # last season differs: residuals are non-zero
    fc = SeasonalNaive(season_length=4).fit(t, y).predict(6)
    assert fc.forecast.tolist() == [2.0, 3.0, 4.0, 6.0, 2.0, 3.0]
    assert fc.time[0] == T0 + 12 * Q and fc.model == "naive" and fc.season_length == 4
    half = fc.upper - fc.forecast
    assert np.allclose(half[:4], half[0]) and np.isclose(half[4], half[0] * np.sqrt(2))


def test_ets_beats_seasonal_naive_on_a_daily_series_with_trend_and_noise() -> None:
    t, y = daily(12, seed=5, trend=0.2, noise=0.6)
    res = backtest(t, y, ("naive", "ets"), horizon=96, origins=3, step=96)
    assert res.season_length == 96
    s = {r["model"]: r for r in res.summary().to_dicts()}
    assert s["ets"]["mase"] < 0.85 * s["naive"]["mase"], s
    assert s["ets"]["smape"] < s["naive"]["smape"]
    assert 0.8 <= s["ets"]["coverage"] <= 1.0


def test_ets_follows_a_clean_seasonal_signal_and_reports_its_choice() -> None:
    t, y = daily(6, noise=0.0)
    f = ETSForecaster().fit(t, y)
    fc = f.predict(96)
    truth = 20.0 + 3.0 * np.sin(2 * np.pi * np.arange(96) / 96)
    assert f.m == 96 and np.max(np.abs(fc.forecast - truth)) < 0.05
    assert f.info["ets"]["estimation"] == "multistep" and f.info["ets"]["trend"] in ("none", "damped")
    assert np.all(fc.lower <= fc.forecast) and np.all(fc.forecast <= fc.upper)


def test_ets_estimates_the_smoothing_from_the_data() -> None:
    rng = np.random.default_rng(8)
    t = T0 + np.arange(600) * Q
    noise = 5.0 + rng.normal(0.0, 1.0, 600)  # a fixed level: smooth hard
    walk = 5.0 + np.cumsum(rng.normal(0.0, 1.0, 600))  # a wandering level: follow it
    a_noise = ETSForecaster(season_length=1, trend=False).fit(t, noise).info["ets"]["params"]["smoothing_level"]
    a_walk = ETSForecaster(season_length=1, trend=False).fit(t, walk).info["ets"]["params"]["smoothing_level"]
    assert a_noise < 0.1 < 0.7 < a_walk


def test_ets_mle_and_constant_histories() -> None:
    t, y = daily(5, seed=6)
    fc = ETSForecaster(estimation="mle").fit(t, y).predict(10)
    assert len(fc) == 10 and np.all(np.isfinite(fc.forecast)) and np.all(fc.upper > fc.lower)
    flat = ETSForecaster().fit(t, np.full(len(t), 7.0)).predict(5)
    assert flat.forecast.tolist() == [7.0] * 5 and flat.lower.tolist() == [7.0] * 5


def test_bad_inputs_are_bad_requests() -> None:
    with pytest.raises(BadRequest, match="unknown model 'arima'"):
        make_forecaster("arima")
    with pytest.raises(BadRequest, match="level"):
        make_forecaster("ets", level=1.0)
    with pytest.raises(BadRequest, match="too little history for ets: 5 points"):
        ETSForecaster().fit(T0 + np.arange(5) * Q, np.arange(5.0))
    f = SeasonalNaive().fit(T0 + np.arange(5) * Q, np.arange(5.0))
    with pytest.raises(BadRequest, match="horizon must be between 1 and"):
        f.predict(0)


# -- Prophet (optional) -----------------------------------------------------------------------------
def test_prophet_missing_gives_an_actionable_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_prophet(name: str, *args: Any, **kw: Any) -> Any:
        if name == "prophet" or name.startswith("prophet."):
            raise ModuleNotFoundError("No module named 'prophet'")
        return real_import(name, *args, **kw)

    monkeypatch.delitem(sys.modules, "prophet", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_prophet)
    with pytest.raises(ImportError, match=r"pip install 'sensorium\[prophet\]'"):
        make_forecaster("prophet").fit(*daily(3))


def test_prophet_forecasts() -> None:
    # the test extra installs prophet, so this runs in CI (a missing extra fails here)
    t, y = daily(4, seed=7)
    fc = make_forecaster("prophet").fit(t, y).predict(8)
    assert fc.model == "prophet" and len(fc) == 8
    assert np.all(fc.lower <= fc.forecast) and np.all(fc.forecast <= fc.upper)
    assert np.max(np.abs(fc.forecast - (20 + 3 * np.sin(2 * np.pi * np.arange(8) / 96)))) < 1.5


# -- forecast errors --------------------------------------------------------------------------------
def test_forecast_errors_standardise_by_the_interval_and_score_in_0_1() -> None:
    mean = np.array([10.0, 10.0, 10.0, 10.0, 10.0])
    lo, hi = mean - 2.0, mean + np.array([2.0, 2.0, 2.0, 4.0, 2.0])
    actual = np.array([10.0, 12.0, 6.0, 14.0, np.nan])
    e = forecast_errors(actual, (mean, lo, hi), level=0.95)
    assert e.error[:4].tolist() == [0.0, 2.0, -4.0, 4.0]
    assert e.z[:4].tolist() == [0.0, 1.0, -2.0, 1.0]  # asymmetric interval: its upper side
    assert e.score[0] == 0.0 and abs(e.score[1] - 0.95) < 1e-9 and e.score[2] > 0.999
    assert np.isnan(e.z[4]) and np.isnan(e.score[4])
    assert np.all((e.score[:4] >= 0) & (e.score[:4] <= 1))


# -- backtest metrics -------------------------------------------------------------------------------
def test_metrics_match_hand_computed_values() -> None:
    # scale: mean(|2-1|, |3-2|, |5-3|) = 4/3; MAE = (1 + 2) / 2 = 1.5
    assert mase([3.0, 4.0], [2.0, 6.0], [1.0, 2.0, 3.0, 5.0], 1) == pytest.approx(1.125)
    # seasonal scale, m = 2: mean(|3-1|, |5-2|) = 2.5
    assert mase([3.0, 4.0], [2.0, 6.0], [1.0, 2.0, 3.0, 5.0], 2) == pytest.approx(0.6)
    # 100 · mean(2·1/5, 2·2/10) = 40 %; 0/0 counts as 0
    assert smape([3.0, 4.0], [2.0, 6.0]) == pytest.approx(40.0)
    assert smape([0.0, 1.0], [0.0, 1.0]) == 0.0


def test_rolling_origin_backtest_on_a_tiny_series() -> None:
    s = RegularSeries(T0, Q, np.arange(1.0, 9.0))  # 1..8
    res = backtest_series(s, ["naive"], horizon=2, origins=2, step=2, season_length=1)
    rows = res.per_origin.to_dicts()
    assert [r["origin"] for r in rows] == [4, 6]
    # origin 4: train 1..4, forecast [4, 4] for [5, 6]: MAE 1.5, scale 1; sMAPE 100·(2/9 + 4/10)/2
    assert rows[0]["mase"] == pytest.approx(1.5)
    assert rows[0]["smape"] == pytest.approx(100 * (2 / 9 + 4 / 10) / 2)
    # origin 6: forecast [6, 6] for [7, 8]
    assert rows[1]["mase"] == pytest.approx(1.5)
    assert rows[1]["smape"] == pytest.approx(100 * (2 / 13 + 4 / 14) / 2)
    summary = res.summary().to_dicts()[0]
    assert summary["origins"] == 2 and summary["mase"] == pytest.approx(1.5)
    assert summary["smape"] == pytest.approx(100 * (2 / 9 + 4 / 10 + 2 / 13 + 4 / 14) / 4)
    with pytest.raises(BadRequest, match="too little data"):
        backtest_series(s, ["naive"], horizon=2, origins=4, step=2)
