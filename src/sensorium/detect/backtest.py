"""Rolling-origin backtest of forecasters: MASE and sMAPE per model.

For ``origins`` forecast origins, ``step`` grid points apart, the last one ``horizon`` points
before the end, every model is fitted on the history before the origin (at most ``max_history``
points) and forecasts ``horizon`` steps, which are compared with what happened:

* **MASE** — mean absolute error divided by the in-sample mean absolute error of the seasonal
  naive forecast (one season back) on that model's training window (Hyndman & Koehler 2006);
  below 1 beats the in-sample naive, and the seasonal naive's own out-of-sample MASE is the bar.
* **sMAPE** — ``100 · mean(2|y − ŷ| / (|y| + |ŷ|))`` in percent (0/0 counts as 0).
* **coverage** — the share of actuals inside the prediction interval.

The season length is detected once, on the data before the first origin (nothing from the test
windows leaks into it), and given to every model, so all of them — and the MASE scale — use the
same season. Per-origin rows and a per-model summary (means over origins) come back as polars
frames.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from sensorium.detect.forecast import (
    RegularSeries,
    detect_season,
    make_forecaster,
    regularize,
)
from sensorium.errors import BadRequest

ModelSpec = str | tuple[str, str, Mapping[str, Any]]


def mase(actual: npt.ArrayLike, pred: npt.ArrayLike, train: npt.ArrayLike, m: int = 1) -> float:
    """Mean absolute scaled error: MAE(actual, pred) / in-sample MAE of the lag-``m`` naive."""
    a, p, y = (np.asarray(x, dtype=np.float64) for x in (actual, pred, train))
    m = max(1, int(m))
    if len(y) <= m:
        raise BadRequest(f"MASE needs more than {m} training points; got {len(y)}")
    scale = float(np.mean(np.abs(y[m:] - y[:-m])))
    mae = float(np.mean(np.abs(a - p)))
    if scale == 0.0:
        return 0.0 if mae == 0.0 else float("inf")
    return mae / scale


def smape(actual: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Symmetric MAPE in percent: ``100 · mean(2|a − p| / (|a| + |p|))``, 0/0 as 0."""
    a, p = np.asarray(actual, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    num = 2.0 * np.abs(a - p)
    den = np.abs(a) + np.abs(p)
    ratio = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(100.0 * np.mean(ratio))


@dataclass
class BacktestResult:
    per_origin: pl.DataFrame  # model, origin, origin_time, mase, smape, coverage, fit_seconds, ...
    season_length: int
    horizon: int
    interval_ns: int

    def summary(self) -> pl.DataFrame:
        """One row per model: origins, mean MASE, mean sMAPE, mean coverage, mean fit seconds."""
        return (
            self.per_origin.group_by("model", maintain_order=True)
            .agg(
                pl.len().alias("origins"),
                pl.col("mase").mean(),
                pl.col("smape").mean(),
                pl.col("coverage").mean(),
                pl.col("fit_seconds").mean(),
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "season_length": self.season_length,
            "horizon": self.horizon,
            "interval_s": self.interval_ns / 1e9,
            "models": {r["model"]: {k: v for k, v in r.items() if k != "model"} for r in self.summary().to_dicts()},
        }


def _specs(models: Sequence[ModelSpec]) -> list[tuple[str, str, dict[str, Any]]]:
    out: list[tuple[str, str, dict[str, Any]]] = []
    for spec in models:
        if isinstance(spec, str):
            out.append((spec, spec, {}))
        else:
            label, name, kw = spec
            out.append((label, name, dict(kw)))
    return out


def backtest(
    times: npt.ArrayLike,
    values: npt.ArrayLike,
    models: Sequence[ModelSpec] = ("naive", "ets"),
    *,
    horizon: int,
    origins: int = 5,
    step: int | None = None,
    season_length: int | None = None,
    level: float = 0.95,
    interval_ns: int | None = None,
    max_history: int | None = None,
) -> BacktestResult:
    """Rolling-origin backtest of raw readings (put on a grid by
    :func:`~sensorium.detect.forecast.regularize`); see :func:`backtest_series`."""
    return backtest_series(
        regularize(times, values, interval_ns), models, horizon=horizon, origins=origins, step=step,
        season_length=season_length, level=level, max_history=max_history,
    )


def backtest_series(
    series: RegularSeries,
    models: Sequence[ModelSpec] = ("naive", "ets"),
    *,
    horizon: int,
    origins: int = 5,
    step: int | None = None,
    season_length: int | None = None,
    level: float = 0.95,
    max_history: int | None = None,
) -> BacktestResult:
    """``models``: names (``"ets"``) or ``(label, name, kwargs)`` tuples, e.g.
    ``("ets-mle", "ets", {"estimation": "mle"})``."""
    if horizon < 1 or origins < 1:
        raise BadRequest("horizon and origins must be >= 1")
    step = step or horizon
    n = len(series)
    at = [n - horizon - i * step for i in range(origins)][::-1]
    if at[0] < 3:
        raise BadRequest(
            f"too little data for {origins} origins {step} apart with horizon {horizon}: {n} points"
        )
    y = series.values
    first = series.head(at[0])
    if max_history is not None:
        first = first.tail(max_history)
    m = season_length if season_length is not None else detect_season(first.values, series.interval_ns)
    rows: list[dict[str, Any]] = []
    for label, name, kw in _specs(models):
        for o in at:
            train = series.head(o)
            if max_history is not None:
                train = train.tail(max_history)
            f = make_forecaster(name, season_length=m, level=level, fit_horizon=horizon, **kw)
            t0 = time.perf_counter()
            fc = f.fit_series(train).predict(horizon)
            secs = time.perf_counter() - t0
            actual = y[o : o + horizon]
            rows.append({
                "model": label,
                "origin": o,
                "origin_time": int(series.start_ns + o * series.interval_ns),
                "mase": mase(actual, fc.forecast, train.values, m),
                "smape": smape(actual, fc.forecast),
                "coverage": float(np.mean((actual >= fc.lower) & (actual <= fc.upper))),
                "fit_seconds": secs,
                "season_length": f.m,
            })
    return BacktestResult(pl.DataFrame(rows), m, horizon, series.interval_ns)
