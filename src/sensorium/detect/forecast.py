"""Per-series forecasting: seasonal naive, ETS (Holt-Winters, statsmodels) and Prophet (optional).

Every model sits behind one small interface, :class:`Forecaster`::

    f = make_forecaster("ets", level=0.95).fit(times_ns, values)   # numpy int64 ns + float64
    fc = f.predict(96)          # Forecast: time, forecast, lower, upper (+ model, season length)
    fc.to_arrow()               # a pyarrow table; the details ride in its schema metadata

``fit`` first puts the history on a regular grid (:func:`regularize`: the sampling interval is
the median spacing of the timestamps, snapped to a round value; several readings in one slot are
averaged; short gaps are interpolated; before a long gap the history is dropped), then detects
the season length (:func:`detect_season`: daily and weekly candidates, confirmed by the
autocorrelation of the detrended series; none with less than two seasons of history), then fits.

Models
    ``naive``    seasonal naive: the value one season earlier (the last value without a season);
                 normal intervals from the in-sample seasonal differences, widening per season.
    ``ets``      additive Holt-Winters (error, optional damped trend, additive season) through
                 :mod:`statsmodels` (its ETS smoother). The smoothing parameters are estimated by
                 minimising the in-sample *multi-step* absolute error over horizons 1..H
                 (``estimation="multistep"``, H = the horizon asked for, at most one season; the
                 initial states come from the first two seasons only, so the season's smoothing
                 is judged on data it was not initialised from). The textbook one-step likelihood
                 (``estimation="mle"``, :class:`~statsmodels.tsa.exponential_smoothing.ets.ETSModel`)
                 drives the level smoothing towards 1 on series whose deviations persist for
                 hours — right one step ahead, wrong a day ahead (see docs/forecasting.md). A damped
                 trend and a Box-Cox transform are switched on or off per series by the in-sample
                 criterion (multistep: ``n·log(loss) + 2k`` on the original scale; MLE: AICc, the
                 Box-Cox likelihood with its Jacobian). Intervals: empirical quantiles of the
                 in-sample j-step errors (multistep), analytic (MLE).
    ``prophet``  Prophet, if installed (``pip install 'sensorium[prophet]'``).

:func:`forecast_errors` turns actuals against a forecast into standardised errors and an anomaly
score in [0, 1]; :func:`forecast_series` forecasts a stored series through the platform's query
API and can store the result as ``<measurement>_forecast``; :func:`compare_forecast` reads a
stored forecast back next to the actuals.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from sensorium.errors import BadRequest, NotFound
from sensorium.query.sql import ident as _q
from sensorium.query.sql import literal as _lit

if TYPE_CHECKING:
    from sensorium.platform import Sensorium

NS = 1_000_000_000
MINUTE_NS = 60 * NS
HOUR_NS = 60 * MINUTE_NS
DAY_NS = 24 * HOUR_NS
WEEK_NS = 7 * DAY_NS

#: Round sampling intervals an inferred one snaps to (within 10 %).
NICE_INTERVALS_NS = tuple(
    x * NS for x in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200,
                     10800, 14400, 21600, 43200, 86400)
)
#: Season candidates tried by :func:`detect_season` (as durations).
SEASON_CANDIDATES_NS = (DAY_NS, WEEK_NS)
MAX_GRID_POINTS = 1_000_000
MAX_HORIZON = 10_000
MODEL_NAMES = ("ets", "naive", "prophet")
METADATA_KEY = b"sensorium.forecast"
PROPHET_HINT = "pip install 'sensorium[prophet]'"

log = logging.getLogger("sensorium.forecast")


@contextmanager
def _quiet() -> Iterator[None]:
    """statsmodels / pandas warn about expected things (convergence, overflow while a trial
    parameter explodes): keep them inside the library."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _fmt_ns(ns: int) -> str:
    for unit, size in (("d", DAY_NS), ("h", HOUR_NS), ("m", MINUTE_NS), ("s", NS), ("ms", 1_000_000)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns}ns"


# -- the grid --------------------------------------------------------------------------------------
def snap_interval(ns: float) -> int:
    """An interval near a round one (1 s, 5 min, 15 min, 1 h, ...; within 10 %) becomes it;
    others are rounded to the millisecond (or kept in ns below that)."""
    if not ns > 0:
        raise BadRequest("the sampling interval must be positive")
    for nice in NICE_INTERVALS_NS:
        if abs(ns - nice) <= 0.1 * nice:
            return nice
    if ns >= 1_000_000:
        return int(round(ns / 1_000_000)) * 1_000_000
    return max(1, int(round(ns)))


def infer_interval(times: npt.ArrayLike) -> int:
    """The sampling interval of a series: the median spacing of its distinct timestamps, snapped
    by :func:`snap_interval`."""
    t = np.unique(np.asarray(times, dtype=np.int64))
    if len(t) < 2:
        raise BadRequest("need at least two distinct timestamps to infer the sampling interval")
    return snap_interval(float(np.median(np.diff(t))))


@dataclass(frozen=True)
class RegularSeries:
    """A series on a regular grid: ``values[i]`` is the value at ``start_ns + i * interval_ns``."""

    start_ns: int
    interval_ns: int
    values: np.ndarray
    filled: int = 0  # grid slots interpolated
    dropped: int = 0  # readings dropped before a long gap

    @property
    def times(self) -> np.ndarray:
        return self.start_ns + self.interval_ns * np.arange(len(self.values), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.values)

    def tail(self, n: int) -> RegularSeries:
        """The last ``n`` points."""
        if n >= len(self.values):
            return self
        cut = len(self.values) - n
        return RegularSeries(self.start_ns + cut * self.interval_ns, self.interval_ns,
                             self.values[cut:], self.filled, self.dropped)

    def head(self, n: int) -> RegularSeries:
        """The first ``n`` points."""
        return RegularSeries(self.start_ns, self.interval_ns, self.values[:n], self.filled, self.dropped)


def regularize(
    times: npt.ArrayLike,
    values: npt.ArrayLike,
    interval_ns: int | None = None,
    *,
    max_gap_ns: int | None = None,
) -> RegularSeries:
    """Put readings on a regular grid (vectorised).

    The grid is aligned to multiples of the interval (epoch-aligned: 15-minute data lands on
    :00, :15, ...); each reading goes to its nearest slot, several in one slot are averaged;
    non-finite values are ignored. Gaps up to ``max_gap_ns`` (default: the larger of 3 intervals
    and 6 hours) are interpolated linearly; the history before a longer gap is dropped (it would
    distort the season), and counted in ``dropped``."""
    t = np.asarray(times, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if t.shape != v.shape or t.ndim != 1:
        raise BadRequest("times and values must be 1-d arrays of the same length")
    ok = np.isfinite(v)
    t, v = t[ok], v[ok]
    if len(t) == 0:
        raise BadRequest("no finite values in the history")
    step = int(interval_ns) if interval_ns else (infer_interval(t) if len(t) > 1 else NS)
    if step <= 0:
        raise BadRequest("interval must be positive")
    anchor = (int(t.min()) + step // 2) // step * step
    idx = (t - anchor + step // 2) // step
    n = int(idx.max()) + 1
    if n > MAX_GRID_POINTS:
        raise BadRequest(
            f"the history spans {n} slots of {_fmt_ns(step)} (at most {MAX_GRID_POINTS}): "
            "use a coarser interval or a shorter history"
        )
    sums = np.bincount(idx, weights=v, minlength=n)
    counts = np.bincount(idx, minlength=n)
    have = counts > 0
    pos = np.flatnonzero(have)
    max_gap = max(3, (max_gap_ns if max_gap_ns is not None else 6 * HOUR_NS) // step)
    dropped = 0
    gaps = np.diff(pos) - 1
    long = np.flatnonzero(gaps > max_gap)
    if len(long):
        first = int(pos[long[-1] + 1])
        dropped = int(counts[:first].sum())
        sums, counts, have = sums[first:], counts[first:], have[first:]
        anchor += first * step
        n -= first
        pos = np.flatnonzero(have)
    y = np.empty(n, dtype=np.float64)
    y[have] = sums[have] / counts[have]
    filled = int(n - len(pos))
    if filled:
        missing = np.flatnonzero(~have)
        y[missing] = np.interp(missing, pos, y[pos])
    return RegularSeries(int(anchor), step, y, filled, dropped)


# -- seasonality -----------------------------------------------------------------------------------
def season_candidates(interval_ns: int, n: int, *, periods_ns: tuple[int, ...] = SEASON_CANDIDATES_NS,
                      min_cycles: int = 2, max_season: int = 2_000) -> list[int]:
    """Season lengths (in samples) worth testing: each period that is a whole number (≥ 2) of
    intervals, not longer than ``max_season``, with at least ``min_cycles`` cycles of history."""
    out = []
    for p in periods_ns:
        if p % interval_ns:
            continue
        m = p // interval_ns
        if 2 <= m <= max_season and n >= min_cycles * m:
            out.append(int(m))
    return sorted(set(out))


def detect_season(
    values: npt.ArrayLike,
    interval_ns: int,
    *,
    periods_ns: tuple[int, ...] = SEASON_CANDIDATES_NS,
    min_acf: float = 0.2,
    min_cycles: int = 2,
    max_season: int = 2_000,
) -> int:
    """The season length in samples (1: none).

    Candidates come from :func:`season_candidates` (daily, weekly). On the linearly detrended
    series, a candidate ``m`` is *confirmed* when its autocorrelation at lag ``m`` is at least
    ``min_acf``, significant (above 3/√(n − m)) and above the autocorrelation at ``m/2`` (a peak,
    not mere persistence). Of the confirmed candidates the one whose seasonal profile (the mean
    per phase) fits best by AIC wins, ``n·log(SSE/n) + 2m``: weekly taxi demand, whose weekends
    differ, goes weekly; a purely daily signal, which a weekly profile only overfits, stays
    daily."""
    y = np.asarray(values, dtype=np.float64)
    n = len(y)
    cands = season_candidates(interval_ns, n, periods_ns=periods_ns, min_cycles=min_cycles,
                              max_season=max_season)
    if not cands:
        return 1
    x = np.arange(n, dtype=np.float64)
    z = y - np.polyval(np.polyfit(x, y, 1), x)
    if not np.std(z) > 1e-12 * max(1.0, float(np.abs(y).max())):
        return 1
    from statsmodels.tsa.stattools import acf

    with _quiet():
        r = acf(z, nlags=max(cands), fft=True, adjusted=True)
    best, best_aic = 1, math.inf
    for m in cands:
        peak = float(r[m])
        if peak < max(min_acf, 3.0 / math.sqrt(n - m)) or peak <= float(r[m // 2]):
            continue
        phase = np.arange(n) % m
        profile = np.bincount(phase, weights=z, minlength=m) / np.bincount(phase, minlength=m)
        sse = float(np.sum((z - profile[phase]) ** 2))
        aic = n * math.log(max(sse, 1e-300) / n) + 2.0 * m
        if aic < best_aic:
            best, best_aic = m, aic
    return best


# -- results ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Forecast:
    """``h`` forecast steps: times (UTC ns), point forecast and a ``level`` prediction interval."""

    time: np.ndarray
    forecast: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    model: str
    season_length: int
    interval_ns: int
    level: float
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)

    def meta(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "season_length": self.season_length,
            "interval_ns": self.interval_ns,
            "every": _fmt_ns(self.interval_ns),
            "level": self.level,
            **self.info,
        }

    def to_arrow(self) -> pa.Table:
        """``time`` (timestamp ns UTC), ``forecast``, ``lower``, ``upper``; :meth:`meta` as JSON in
        the schema metadata (read it back with :func:`forecast_meta`)."""
        t = pa.table({
            "time": pa.array(self.time, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            "forecast": pa.array(self.forecast, pa.float64()),
            "lower": pa.array(self.lower, pa.float64()),
            "upper": pa.array(self.upper, pa.float64()),
        })
        return t.replace_schema_metadata({METADATA_KEY: json.dumps(self.meta(), default=str).encode()})


def forecast_meta(table: pa.Table) -> dict[str, Any]:
    """The details :meth:`Forecast.to_arrow` (and :func:`forecast_series`) put in a table."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return dict(json.loads(raw)) if raw else {}


def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2.0)


# -- the interface ---------------------------------------------------------------------------------
class Forecaster(ABC):
    """Fit on a history (times ns + values), predict ``h`` steps with a prediction interval.

    ``season_length``: samples per season (``None``: detect; ``1``: none). ``interval_ns``: the
    grid (``None``: inferred). ``max_history``: fit on at most this many latest grid points.
    ``fit_horizon``: the horizon the model is tuned for, when it matters (ETS)."""

    name: ClassVar[str] = "base"
    min_points: ClassVar[int] = 2

    def __init__(
        self,
        *,
        season_length: int | None = None,
        level: float = 0.95,
        interval_ns: int | None = None,
        max_history: int | None = None,
        fit_horizon: int | None = None,
    ) -> None:
        if not 0.0 < level < 1.0:
            raise BadRequest(f"level must be between 0 and 1 (exclusive); got {level}")
        if season_length is not None and season_length < 1:
            raise BadRequest(f"season_length must be >= 1; got {season_length}")
        if max_history is not None and max_history < self.min_points:
            raise BadRequest(f"max_history must be >= {self.min_points}")
        self.season_length = season_length
        self.level = float(level)
        self.interval_ns = interval_ns
        self.max_history = max_history
        self.fit_horizon = fit_horizon
        self.m = 1
        self._series: RegularSeries | None = None
        self.info: dict[str, Any] = {}

    # public ------------------------------------------------------------------------------------
    def fit(self, times: npt.ArrayLike, values: npt.ArrayLike) -> Self:
        return self.fit_series(regularize(times, values, self.interval_ns))

    def fit_series(self, series: RegularSeries) -> Self:
        """Fit on a series already on its grid (what :func:`~sensorium.detect.backtest.backtest`
        uses)."""
        if self.max_history is not None:
            series = series.tail(self.max_history)
        y = series.values
        n = len(y)
        if n < self.min_points:
            raise BadRequest(
                f"too little history for {self.name}: {n} points on a {_fmt_ns(series.interval_ns)} "
                f"grid; need at least {self.min_points}"
            )
        info: dict[str, Any] = {"history_points": n, "filled": series.filled, "dropped": series.dropped}
        if self.season_length is None:
            m = detect_season(y, series.interval_ns)
            info["season"] = "detected" if m > 1 else "none found"
        else:
            m = self.season_length
            info["season"] = "given"
        need = self.seasonal_min_points(m)
        if m > 1 and n < need:
            info["season"] = f"off: {n} points, a season of {m} needs {need}"
            m = 1
        self.m = m
        self._series = series
        self.info = info
        self._fit(np.asarray(y, dtype=np.float64), m)
        return self

    def seasonal_min_points(self, m: int) -> int:
        return 2 * m

    def predict(self, h: int) -> Forecast:
        if self._series is None:
            raise RuntimeError("fit first")
        if not 1 <= h <= MAX_HORIZON:
            raise BadRequest(f"horizon must be between 1 and {MAX_HORIZON} steps; got {h}")
        mean, lo, hi = self._predict(int(h))
        s = self._series
        last = s.start_ns + (len(s) - 1) * s.interval_ns
        times = last + s.interval_ns * np.arange(1, h + 1, dtype=np.int64)
        lo = np.minimum(lo, mean)
        hi = np.maximum(hi, mean)
        return Forecast(times, mean, lo, hi, self.name, self.m, s.interval_ns, self.level, dict(self.info))

    # per model ---------------------------------------------------------------------------------
    @abstractmethod
    def _fit(self, y: np.ndarray, m: int) -> None: ...

    @abstractmethod
    def _predict(self, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


class SeasonalNaive(Forecaster):
    """ŷ(T+j) = y(T+j-k·m), k = ⌈j/m⌉ (m = 1: the last value). σ from in-sample seasonal
    differences; the j-step interval is ±z·σ·√k (Hyndman & Athanasopoulos, FPP3 §5.5)."""

    name = "naive"
    min_points = 2

    def _fit(self, y: np.ndarray, m: int) -> None:
        if len(y) <= m:
            m = self.m = 1
        self._y = y[-m:].copy()
        d = y[m:] - y[:-m]
        self._sigma = float(np.sqrt(np.mean(d * d))) if len(d) else 0.0

    def _predict(self, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m = self.m
        mean = self._y[np.arange(h) % m]
        k = np.ceil(np.arange(1, h + 1) / m)
        half = _z(self.level) * self._sigma * np.sqrt(k)
        return mean.astype(np.float64), mean - half, mean + half


# -- ETS -------------------------------------------------------------------------------------------
def _boxcox_lambda(y: np.ndarray) -> float:
    from scipy.stats import boxcox_normmax

    with _quiet():
        lam = float(boxcox_normmax(y, method="mle"))
    if not math.isfinite(lam):
        return 1.0
    return min(1.0, max(0.0, lam))


def _bc(y: np.ndarray, lam: float | None) -> np.ndarray:
    if lam is None:
        return y
    return np.log(y) if lam == 0.0 else (np.power(y, lam) - 1.0) / lam


def _inv_bc(z: np.ndarray, lam: float | None) -> np.ndarray:
    if lam is None:
        return z
    if lam == 0.0:
        return np.exp(np.minimum(z, 700.0))
    base = np.maximum(lam * z + 1.0, 1e-12)
    return np.power(base, 1.0 / lam)


@dataclass
class _EtsFit:
    trend: bool
    lam: float | None
    score: float
    params: dict[str, float]
    result: Any
    err_q: np.ndarray | None = None  # (H, 2): lower/upper error quantiles per step (z scale)
    k: int = 0


class ETSForecaster(Forecaster):
    """Additive Holt-Winters through statsmodels; see the module docs.

    ``trend``: ``None`` tries no trend and a damped trend; ``boxcox``: ``None`` tries off and on
    (positive series only; λ by maximum likelihood, clipped to [0, 1]); ``estimation``:
    ``"multistep"`` (default) or ``"mle"``; ``loss`` of the multistep fit: ``"mae"`` (default: what
    MASE measures, and robust to holidays and outages in the history) or ``"mse"``;
    ``max_origins``: in-sample forecast origins the multistep loss averages over."""

    name = "ets"
    min_points = 10

    def __init__(
        self,
        *,
        trend: bool | None = None,
        boxcox: bool | None = None,
        estimation: str = "multistep",
        loss: str = "mae",
        max_origins: int = 400,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        if loss not in ("mse", "mae"):
            raise BadRequest(f"loss must be mse or mae; got {loss!r}")
        self.loss = loss
        if estimation not in ("multistep", "mle"):
            raise BadRequest(f"estimation must be multistep or mle; got {estimation!r}")
        self.trend = trend
        self.boxcox = boxcox
        self.estimation = estimation
        self.max_origins = max_origins
        self._fit_result: _EtsFit | None = None
        self._const: float | None = None

    def _configs(self, y: np.ndarray) -> list[tuple[bool, bool]]:
        trends = [False, True] if self.trend is None else [self.trend]
        positive = bool(np.all(y > 0))
        bcs = [False, True] if self.boxcox is None else [self.boxcox]
        return [(t, b) for t in trends for b in bcs if not b or positive]

    def _fit(self, y: np.ndarray, m: int) -> None:
        self._fit_result = None
        self._const = None
        if np.ptp(y) == 0.0:
            self._const = float(y[0])
            self.info["ets"] = "constant history"
            return
        lam_cache: dict[str, float] = {}
        fits: list[_EtsFit] = []
        errors: list[str] = []
        for trend, boxcox in self._configs(y):
            lam = None
            if boxcox:
                if "lam" not in lam_cache:
                    lam_cache["lam"] = _boxcox_lambda(y)
                lam = lam_cache["lam"]
                if lam >= 0.95 and self.boxcox is None:  # ≈ no transform: the "off" fit covers it
                    continue
            try:
                with _quiet():
                    f = self._fit_multistep(y, m, trend, lam) if self.estimation == "multistep" else self._fit_mle(y, m, trend, lam)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError, ZeroDivisionError) as exc:
                errors.append(f"trend={trend} boxcox={boxcox}: {exc}")
                continue
            if math.isfinite(f.score):
                fits.append(f)
        if not fits:
            raise BadRequest("ETS could not be fitted to this history: " + "; ".join(errors or ["no finite fit"]))
        best = min(fits, key=lambda f: f.score)
        self._fit_result = best
        self.info["ets"] = {
            "estimation": self.estimation,
            "trend": "damped" if best.trend else "none",
            "boxcox": None if best.lam is None else round(best.lam, 3),
            "params": {k: round(v, 4) for k, v in best.params.items()},
            "candidates": len(fits),
        }

    # multistep ---------------------------------------------------------------------------------
    def seasonal_min_points(self, m: int) -> int:
        return max(2 * m, 10 + 2 * (m // 2))

    def _model(self, z: np.ndarray, m: int, trend: bool) -> tuple[Any, int]:
        """The statsmodels ETS model, its initial states from the first ``n0`` points only (two
        seasons; statsmodels' heuristic on them), so the in-sample errors after ``n0`` are honest
        about the season: initialised from all the data, the season would be fitted to the very
        points the errors are measured on, and the smoothing of the season would look useless."""
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        kind = {"error": "add", "trend": "add" if trend else None, "damped_trend": trend,
                "seasonal": "add" if m > 1 else None, "seasonal_periods": m if m > 1 else None}
        n0 = self.seasonal_min_points(m) if m > 1 else 10
        if len(z) < n0 + max(10, m // 2):  # too short to hold out: statsmodels' heuristic on all
            return ETSModel(z, initialization_method="heuristic", **kind), max(10, min(m, len(z) - 10))
        init = ETSModel(z[:n0], initialization_method="heuristic", **kind)
        model = ETSModel(
            z, initialization_method="known", initial_level=init.initial_level,
            initial_trend=init.initial_trend if trend else None,
            initial_seasonal=init.initial_seasonal if m > 1 else None, **kind,
        )
        return model, n0

    @staticmethod
    def _params(p: np.ndarray, m: int, trend: bool) -> dict[str, float]:
        """Box coordinates → ETS parameters within the usual region: 0 < α < 1, 0 ≤ β ≤ α,
        0 ≤ γ ≤ 1 − α, 0.8 ≤ φ ≤ 0.98 (statsmodels' ``param_names`` order)."""
        a = float(p[0])
        out = {"smoothing_level": a}
        if trend:
            out["smoothing_trend"] = float(p[2]) * a
        if m > 1:
            out["smoothing_seasonal"] = float(p[1]) * (1.0 - a)
        if trend:
            out["damping_trend"] = float(p[3])
        return out

    def _fit_multistep(self, y: np.ndarray, m: int, trend: bool, lam: float | None) -> _EtsFit:
        """Parameters minimising the mean absolute (or squared) in-sample error over horizons 1..H (H = the
        fit horizon, at most one season), from every origin after the points the initial states
        were taken from (at most ``max_origins`` of them, evenly spaced). The states come from statsmodels' ETS
        smoother; the forecast from origin t, j steps ahead, is l_t + b_t·(φ + … + φ^j) +
        s_{t+j−m⌈j/m⌉}."""
        from scipy.optimize import minimize

        z = _bc(y, lam)
        n = len(z)
        mod, burn = self._model(z, m, trend)
        H = self.fit_horizon or (m if m > 1 else 24)
        H = max(1, min(H, m if m > 1 else H, max(1, (n - burn) // 2)))
        origins = np.arange(burn, n - 1)
        if len(origins) > self.max_origins:  # evenly spaced, always including the latest
            origins = origins[np.linspace(0, len(origins) - 1, self.max_origins).round().astype(np.int64)]
        j = np.arange(1, H + 1)
        T = origins[:, None] + j[None, :]
        valid = T < n
        Tc = np.minimum(T, n - 1)
        s_idx = Tc - m * np.ceil(j / m).astype(np.int64) if m > 1 else Tc
        actual = y[Tc]

        def path(p: np.ndarray) -> np.ndarray:
            kw = self._params(p, m, trend)
            _, states = mod.smooth(np.asarray(list(kw.values())), return_raw=True)
            x = np.asarray(states, dtype=np.float64)
            fc = x[origins, 0][:, None] + np.zeros((1, H))
            if m > 1:
                fc = fc + x[s_idx, -1]
            if trend:
                phi = kw["damping_trend"]
                fc = fc + x[origins, 1][:, None] * np.cumsum(phi ** j)[None, :]
            return fc

        def loss(p: np.ndarray) -> float:
            e = (actual - _inv_bc(path(p), lam))[valid]
            v = float(np.mean(e * e)) if self.loss == "mse" else float(np.mean(np.abs(e)))
            return v if math.isfinite(v) else 1e300

        x0 = [0.2, 0.1 if m > 1 else 0.0] + ([0.1, 0.9] if trend else [])
        bounds = [(1e-3, 0.999), (0.0, 1.0 if m > 1 else 0.0)] + ([(0.0, 1.0), (0.8, 0.98)] if trend else [])
        # a coarse look over the level smoothing first, then Nelder-Mead from the best
        starts = [x0] + [[a, *x0[1:]] for a in (0.02, 0.5, 0.9)]
        x0 = min(starts, key=lambda s: loss(np.asarray(s)))
        opt = minimize(loss, np.asarray(x0), method="Nelder-Mead", bounds=bounds,
                       options={"xatol": 1e-3, "fatol": 1e-10, "maxfev": 200 if trend else 100})
        p = np.asarray(opt.x)
        params = self._params(p, m, trend)
        result = mod.smooth(np.asarray(list(params.values())))
        ez = np.where(valid, _bc(actual, lam) - path(p), np.nan)  # errors on the model's scale
        a = (1.0 - self.level) / 2.0
        q = np.nanquantile(ez, [a, 1.0 - a], axis=0).T  # (H, 2)
        k = len(params)
        n_eff = max(1, int(valid.sum() // H))
        score = n_eff * math.log(max(float(opt.fun), 1e-300)) + 2.0 * (k + (1 if lam is not None else 0))
        return _EtsFit(trend, lam, score, params, result, q, k)

    # one-step likelihood ----------------------------------------------------------------------
    def _fit_mle(self, y: np.ndarray, m: int, trend: bool, lam: float | None) -> _EtsFit:
        import pandas as pd
        from statsmodels.tsa.exponential_smoothing.ets import ETSModel

        z = _bc(y, lam)
        res = ETSModel(  # a Series: get_prediction needs an index
            pd.Series(z), error="add", trend="add" if trend else None, damped_trend=trend,
            seasonal="add" if m > 1 else None, seasonal_periods=m if m > 1 else None,
            initialization_method="heuristic",
        ).fit(disp=False)
        n = len(z)
        k = len(res.params) + (1 if lam is not None else 0)
        llf = float(res.llf) + ((lam - 1.0) * float(np.sum(np.log(y))) if lam is not None else 0.0)
        aicc = -2.0 * llf + 2.0 * k + (2.0 * k * (k + 1) / (n - k - 1) if n - k - 1 > 0 else math.inf)
        params = {str(name): float(v) for name, v in zip(res.param_names, res.params, strict=True)}
        return _EtsFit(trend, lam, aicc, params, res, None, k)

    def _predict(self, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._const is not None:
            c = np.full(h, self._const)
            return c, c.copy(), c.copy()
        f = self._fit_result
        assert f is not None
        n = len(self._series) if self._series is not None else 0
        with _quiet():
            if f.err_q is None:  # MLE: analytic intervals (additive errors)
                pred = f.result.get_prediction(start=n, end=n + h - 1)
                frame = pred.summary_frame(alpha=1.0 - self.level)
                mean_z = np.asarray(frame["mean"], dtype=np.float64)
                lo_z = np.asarray(frame["pi_lower"], dtype=np.float64)
                hi_z = np.asarray(frame["pi_upper"], dtype=np.float64)
            else:
                mean_z = np.asarray(f.result.forecast(h), dtype=np.float64)
                H = len(f.err_q)
                q = f.err_q[np.minimum(np.arange(h), H - 1)]
                widen = np.sqrt(np.maximum(1.0, np.arange(1, h + 1) / H))[:, None]
                q = q * widen
                lo_z = mean_z + q[:, 0]
                hi_z = mean_z + q[:, 1]
            return _inv_bc(mean_z, f.lam), _inv_bc(lo_z, f.lam), _inv_bc(hi_z, f.lam)


# -- Prophet (optional) ----------------------------------------------------------------------------
_PROPHET_LOGGERS = ("prophet", "prophet.plot", "prophet.models", "prophet.forecaster", "cmdstanpy")


@contextmanager
def _prophet_quiet() -> Iterator[None]:
    """Prophet and cmdstanpy log chatter (plotly missing, every Stan chain) on their own
    handlers, and cmdstanpy resets its level when it starts: switch those loggers off for the
    duration."""
    loggers = [logging.getLogger(n) for n in _PROPHET_LOGGERS]
    before = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        with _quiet():
            yield
    finally:
        for lg, was in zip(loggers, before, strict=True):
            lg.disabled = was


def _import_prophet() -> Any:
    try:
        with _prophet_quiet():
            from prophet import Prophet
    except ImportError as exc:  # the optional extra
        raise ImportError(f"the prophet model needs the optional extra: {PROPHET_HINT}") from exc
    return Prophet


class ProphetForecaster(Forecaster):
    """Prophet (additive trend + daily/weekly seasonality), when the extra is installed. The
    season length reported is the detected one; Prophet models its seasons itself (daily with ≥ 2
    days of history, weekly with ≥ 2 weeks)."""

    name = "prophet"
    min_points = 10

    def _fit(self, y: np.ndarray, m: int) -> None:
        Prophet = _import_prophet()
        import pandas as pd

        s = self._series
        assert s is not None
        span = len(y) * s.interval_ns
        ds = pd.to_datetime(s.times, unit="ns")
        with _prophet_quiet():
            model = Prophet(
                interval_width=self.level,
                daily_seasonality=bool(span >= 2 * DAY_NS and s.interval_ns < DAY_NS),
                weekly_seasonality=bool(span >= 2 * WEEK_NS),
                yearly_seasonality=False,
                uncertainty_samples=300,
            )
            model.fit(pd.DataFrame({"ds": ds, "y": y}))
        self._model = model

    def _predict(self, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        import pandas as pd

        s = self._series
        assert s is not None
        last = s.start_ns + (len(s) - 1) * s.interval_ns
        future = pd.DataFrame({"ds": pd.to_datetime(last + s.interval_ns * np.arange(1, h + 1), unit="ns")})
        with _prophet_quiet():
            out = self._model.predict(future)
        return (out["yhat"].to_numpy(np.float64), out["yhat_lower"].to_numpy(np.float64),
                out["yhat_upper"].to_numpy(np.float64))


MODELS: dict[str, type[Forecaster]] = {
    "ets": ETSForecaster,
    "naive": SeasonalNaive,
    "prophet": ProphetForecaster,
}


def make_forecaster(model: str, **kw: Any) -> Forecaster:
    """A forecaster by name (``ets``, ``naive``, ``prophet``); keyword arguments go to it."""
    cls = MODELS.get(model)
    if cls is None:
        raise BadRequest(f"unknown model {model!r}: use one of {', '.join(MODEL_NAMES)}")
    return cls(**kw)


# -- forecast errors -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForecastErrors:
    """``error`` = actual − forecast; ``z`` = error / the interval's half-width on the error's side
    (|z| = 1 on the interval's edge); ``score`` in [0, 1] = the probability mass of a normal
    forecast distribution nearer the forecast than the actual: ``level`` on the edge, → 1 far
    outside. NaN where the actual is missing."""

    error: np.ndarray
    z: np.ndarray
    score: np.ndarray


def forecast_errors(
    actual: npt.ArrayLike,
    forecast: Forecast | pa.Table | tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike],
    *,
    level: float | None = None,
) -> ForecastErrors:
    """Standardised forecast errors and an anomaly score for ``actual`` against ``forecast``
    (a :class:`Forecast`, a table with ``forecast``/``lower``/``upper`` columns, or a
    ``(forecast, lower, upper)`` tuple; aligned with ``actual``)."""
    if isinstance(forecast, Forecast):
        mean, lo, hi = forecast.forecast, forecast.lower, forecast.upper
        lvl = forecast.level if level is None else level
    elif isinstance(forecast, pa.Table):
        mean, lo, hi = (forecast[c].to_numpy(zero_copy_only=False).astype(np.float64)
                        for c in ("forecast", "lower", "upper"))
        lvl = level if level is not None else float(forecast_meta(forecast).get("level", 0.95))
    else:
        mean, lo, hi = (np.asarray(a, dtype=np.float64) for a in forecast)
        lvl = 0.95 if level is None else level
    a = np.asarray(actual, dtype=np.float64)
    if not (a.shape == np.shape(mean) == np.shape(lo) == np.shape(hi)):
        raise BadRequest("actual and forecast must have the same length")
    from scipy.special import erf

    err = a - mean
    half = np.where(err >= 0, hi - mean, mean - lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(half > 0, err / np.where(half > 0, half, 1.0), np.where(err == 0, 0.0, np.sign(err) * np.inf))
    z = np.where(np.isnan(a), np.nan, z)
    score = erf(np.abs(z) * _z(lvl) / math.sqrt(2.0))
    return ForecastErrors(err, z, np.where(np.isnan(z), np.nan, score))


# -- through the platform --------------------------------------------------------------------------
NUMERIC_KINDS = ("float", "integer", "unsigned")
DEFAULT_HISTORY = "28d"
DEFAULT_HORIZON = "1d"
MAX_POINTS = 4_032  # grid points of history at most (28 days at 10 minutes)


def _horizon_steps(horizon: int | str, every_ns: int) -> int:
    from sensorium.query.downsample import duration_ns

    if isinstance(horizon, bool):
        raise BadRequest("horizon must be a number of steps or a duration such as 1d")
    if isinstance(horizon, int):
        h = horizon
    elif isinstance(horizon, str) and horizon.strip().isdigit():
        h = int(horizon.strip())
    elif isinstance(horizon, str):
        try:
            h = -(-duration_ns(horizon) // every_ns)
        except BadRequest:
            raise BadRequest(
                f"bad horizon {horizon!r}: give a number of steps or a duration such as 6h or 1d"
            ) from None
    else:
        raise BadRequest("horizon must be a number of steps or a duration such as 1d")
    if not 1 <= h <= MAX_HORIZON:
        raise BadRequest(
            f"horizon must be between 1 and {MAX_HORIZON} steps of {_fmt_ns(every_ns)}; got {h}"
        )
    return h


def _check_target(platform: Sensorium, bucket: str, measurement: str, field: str,
                  tags: Mapping[str, str]) -> dict[str, str]:
    if measurement not in platform.measurements(bucket):
        raise NotFound(f"no measurement {measurement!r} in bucket {bucket!r}")
    cols = platform.registry.columns(bucket, measurement)
    role = cols.get(field)
    if role is None:
        fields = sorted(c for c, r in cols.items() if r in NUMERIC_KINDS)
        raise NotFound(f"measurement {measurement!r} has no field {field!r} (numeric fields: {', '.join(fields) or 'none'})")
    if role not in NUMERIC_KINDS:
        raise BadRequest(f"{field!r} in {measurement!r} is a {role}, not a numeric field")
    for t in tags:
        if cols.get(t) != "tag":
            known = sorted(c for c, r in cols.items() if r == "tag")
            raise BadRequest(f"{t!r} is not a tag of {measurement!r} (tags: {', '.join(known) or 'none'})")
    return cols


def _where(field: str, tags: Mapping[str, str], start_ns: int | None = None, end_ns: int | None = None) -> str:
    w = [f"{_q(field)} IS NOT NULL"]
    w += [f"{_q(k)} = {_lit(v)}" for k, v in sorted(tags.items())]
    if start_ns is not None:
        w.append(f"time >= make_timestamp_ns({start_ns})")
    if end_ns is not None:
        w.append(f"time < make_timestamp_ns({end_ns})")
    return " AND ".join(w)


def _ns(col: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column (any unit; SQL results come back in µs) as int64 UTC nanoseconds."""
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.timestamp("ns", tz=col.type.tz))
    return np.asarray(col.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)


def _nice_ceil(ns: float) -> int:
    for nice in NICE_INTERVALS_NS:
        if nice >= ns:
            return nice
    return int(math.ceil(ns / DAY_NS)) * DAY_NS


def forecast_series(
    platform: Sensorium,
    measurement: str,
    field: str,
    *,
    tags: Mapping[str, str] | None = None,
    device_id: str | None = None,
    start: str | None = None,
    end: str | None = None,
    history: str | None = None,
    horizon: int | str = DEFAULT_HORIZON,
    model: str = "ets",
    every: str | None = None,
    level: float = 0.95,
    season_length: int | None = None,
    bucket: str | None = None,
    store: bool = False,
    max_points: int = MAX_POINTS,
) -> pa.Table:
    """Forecast one stored series; returns ``time, forecast, lower, upper`` (see
    :func:`forecast_meta` for the model, season length, grid and history used).

    The history is the mean per ``every`` slot (default: the series' own median spacing, coarsened
    so the history holds at most ``max_points`` slots) between ``start`` and ``end``; without
    ``start`` it is the ``history`` (default 28 days) up to the series' latest point. ``tags``
    (and ``device_id``) select the series; without them the matching series are averaged.
    ``horizon``: steps, or a duration (``"1d"``). ``store=True`` writes the forecast as
    ``<measurement>_forecast`` (fields ``forecast``, ``lower``, ``upper``; the same tags plus
    ``model``) through the normal write path (validated, in the WAL)."""
    from sensorium.query.downsample import duration_ns, parse_time

    bucket = bucket or platform.settings.default_bucket
    tags = dict(tags or {})
    if device_id is not None:
        tags["device_id"] = device_id
    if model not in MODELS:
        raise BadRequest(f"unknown model {model!r}: use one of {', '.join(MODEL_NAMES)}")
    if not 0.0 < level < 1.0:
        raise BadRequest(f"level must be between 0 and 1 (exclusive); got {level}")
    if start is not None and history is not None:
        raise BadRequest("give start or history, not both")
    platform.process_pending()
    _check_target(platform, bucket, measurement, field, tags)
    now = platform.clock()
    end_ns = parse_time(end, now) if end else None
    start_ns = parse_time(start, now) if start else None
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise BadRequest("end must be after start")
    where = _where(field, tags, start_ns, end_ns)
    span = platform.query(
        f"SELECT epoch_ns(min(time)) AS lo, epoch_ns(max(time)) AS hi, count(*) AS n "
        f"FROM {_q(measurement)} WHERE {where}", bucket
    ).to_pylist()[0]
    if not span["n"]:
        sel = ", ".join(f"{k}={v}" for k, v in sorted(tags.items())) or "all series"
        raise NotFound(f"no values of {measurement}.{field} ({sel}) in the requested range")
    last = int(span["hi"])
    if end_ns is None:
        end_ns = last + 1
    if start_ns is None:
        start_ns = max(int(span["lo"]), end_ns - duration_ns(history or DEFAULT_HISTORY))
    # the grid
    if every is not None:
        every_ns = duration_ns(every)
    else:
        part = ", ".join(_q(c) for c, r in platform.registry.columns(bucket, measurement).items() if r == "tag")
        over = f"PARTITION BY {part} " if part else ""
        med = platform.query(
            f"SELECT median(d) AS d FROM (SELECT epoch_ns(time) - lag(epoch_ns(time)) OVER ({over}ORDER BY time) AS d "
            f"FROM {_q(measurement)} WHERE {_where(field, tags, start_ns, end_ns)}) WHERE d > 0", bucket
        ).to_pylist()[0]["d"]
        every_ns = snap_interval(float(med)) if med else HOUR_NS
        every_ns = max(every_ns, _nice_ceil((end_ns - start_ns) / max(1, max_points)))
    h = _horizon_steps(horizon, every_ns)
    table, source = platform.series(
        measurement, field, start=str(start_ns), end=str(end_ns), every=_fmt_ns(every_ns),
        agg="mean", bucket=bucket, tags=tags,
    )
    times = _ns(table["time"])
    values = table["mean"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    f = make_forecaster(model, level=level, season_length=season_length, interval_ns=every_ns,
                        max_history=max_points, fit_horizon=h)
    need = f.min_points
    if int(np.isfinite(values).sum()) < need:
        raise BadRequest(
            f"too little history: {int(np.isfinite(values).sum())} points of {_fmt_ns(every_ns)} "
            f"between {_iso(start_ns)} and {_iso(end_ns)}; {model} needs at least {need} "
            "(give an earlier start, a longer history or a finer every)"
        )
    try:
        fc = f.fit(times, values).predict(h)
    except ImportError as exc:
        raise BadRequest(f"model {model!r} is not available here: {exc}") from None
    fc.info.update({
        "measurement": measurement, "field": field, "tags": tags, "bucket": bucket,
        "history": {"start": _iso(start_ns), "end": _iso(end_ns), "source": source},
        "horizon": h,
    })
    out = fc.to_arrow()
    if store:
        stored = store_forecast(platform, measurement, fc, tags=tags, bucket=bucket)
        meta = forecast_meta(out) | {"stored": stored, "stored_as": f"{measurement}_forecast"}
        out = out.replace_schema_metadata({METADATA_KEY: json.dumps(meta, default=str).encode()})
    return out


def _iso(ns: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ns // NS, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def store_forecast(
    platform: Sensorium,
    measurement: str,
    fc: Forecast,
    *,
    tags: Mapping[str, str] | None = None,
    bucket: str | None = None,
) -> int:
    """Write a forecast as ``<measurement>_forecast`` (fields ``forecast``, ``lower``, ``upper``;
    ``tags`` plus ``model``) through :meth:`Sensorium.write_parsed`: schema check, validation
    and ONE WAL append, like any write. Forecast times lie ahead, so the future-time check is
    made against the forecast's own end instead of the clock. Returns the rows stored."""
    from sensorium.quality.validate import Validator
    from sensorium.schema import LINE, TAG_TYPE, TIME_TYPE, ParseResult

    name = f"{measurement}_forecast"
    n = len(fc)
    all_tags = {**dict(tags or {}), "model": fc.model}
    cols: dict[str, pa.Array] = {"time": pa.array(fc.time, pa.int64()).cast(TIME_TYPE)}
    for k, v in sorted(all_tags.items()):
        cols[k] = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([v], pa.string())).cast(TAG_TYPE)
    for c, arr in (("forecast", fc.forecast), ("lower", fc.lower), ("upper", fc.upper)):
        cols[c] = pa.array(np.asarray(arr, dtype=np.float64), pa.float64())
    cols[LINE] = pa.array(np.arange(1, n + 1, dtype=np.int32))
    batch = pa.table(cols)
    horizon_end = int(fc.time.max()) if n else platform.clock()
    validator = Validator(platform.settings.quality, now=lambda: max(platform.clock(), horizon_end))
    res = platform.write_parsed(
        ParseResult(batches={name: batch}, lines_total=n),
        bucket=bucket, source="forecast", accept_partial=False, prevalidated={name: validator.validate(name, batch)},
    )
    return res.accepted_rows


def compare_forecast(
    platform: Sensorium,
    measurement: str,
    field: str,
    *,
    tags: Mapping[str, str] | None = None,
    model: str | None = None,
    start: str | None = None,
    end: str | None = None,
    bucket: str | None = None,
) -> pa.Table:
    """A stored forecast (``<measurement>_forecast``) next to the actuals: ``time, actual,
    forecast, lower, upper, error, z, score`` (see :func:`forecast_errors`); one row per forecast
    slot that has actuals. The actuals are the mean per slot of the forecast's grid."""
    from sensorium.query.downsample import parse_time

    bucket = bucket or platform.settings.default_bucket
    tags = dict(tags or {})
    name = f"{measurement}_forecast"
    platform.process_pending()
    if name not in platform.measurements(bucket):
        raise NotFound(f"no stored forecast {name!r} in bucket {bucket!r} (store one with store=true)")
    _check_target(platform, bucket, measurement, field, tags)
    ftags = dict(tags)
    if model is not None:
        ftags["model"] = model
    now = platform.clock()
    w = [f"{_q(k)} = {_lit(v)}" for k, v in sorted(ftags.items())]
    if start:
        w.append(f"time >= make_timestamp_ns({parse_time(start, now)})")
    if end:
        w.append(f"time < make_timestamp_ns({parse_time(end, now)})")
    cond = " AND ".join(w) or "TRUE"
    fct = platform.query(
        f"SELECT epoch_ns(time) AS t, avg(forecast) AS forecast, avg(lower) AS lower, avg(upper) AS upper "
        f"FROM {_q(name)} WHERE {cond} GROUP BY 1 ORDER BY 1", bucket
    )
    t = fct["t"].to_numpy(zero_copy_only=False).astype(np.int64)
    if len(t) == 0:
        raise NotFound(f"no stored forecast rows in {name!r} for the selection")
    every_ns = infer_interval(t) if len(t) > 1 else HOUR_NS
    act, _ = platform.series(
        measurement, field, start=str(int(t[0])), end=str(int(t[-1]) + every_ns), every=_fmt_ns(every_ns),
        agg="mean", bucket=bucket, tags=tags,
    )
    at = _ns(act["time"])
    av = act["mean"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    pos = np.searchsorted(at, t)
    hit = (pos < len(at)) & (at[np.minimum(pos, max(len(at) - 1, 0))] == t) if len(at) else np.zeros(len(t), bool)
    keep = np.flatnonzero(hit)
    actual = av[pos[keep]]
    mean, lo, hi = (fct[c].to_numpy(zero_copy_only=False).astype(np.float64)[keep] for c in ("forecast", "lower", "upper"))
    e = forecast_errors(actual, (mean, lo, hi))
    return pa.table({
        "time": pa.array(t[keep], pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        "actual": actual, "forecast": mean, "lower": lo, "upper": hi,
        "error": e.error, "z": e.z, "score": e.score,
    })


__all__ = [
    "MODELS",
    "ETSForecaster",
    "Forecast",
    "ForecastErrors",
    "Forecaster",
    "ProphetForecaster",
    "RegularSeries",
    "SeasonalNaive",
    "compare_forecast",
    "detect_season",
    "forecast_errors",
    "forecast_meta",
    "forecast_series",
    "infer_interval",
    "make_forecaster",
    "regularize",
    "season_candidates",
    "snap_interval",
    "store_forecast",
]
