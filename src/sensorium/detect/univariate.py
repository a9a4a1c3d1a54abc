"""Univariate detectors: EWMA residual, Holt (level + trend) residual, robust rolling z-score
(median/MAD), seasonal profile (hour of day / hour of week).

Each scores a point by its deviation from a causal prediction, in units of a causal scale, mapped
to [0, 1) by :func:`~sensorium.detect.base.squash` (0.5 at ``half`` sigmas).
"""

from __future__ import annotations

from typing import Any

import bottleneck as bn
import numpy as np
import polars as pl

from sensorium.detect.base import Detector, Layout, register, squash

HOUR_NS = 3_600_000_000_000


def ewm_rows(m: np.ndarray, alpha: float, acc0: np.ndarray) -> np.ndarray:
    """``y_t = alpha * x_t + (1 - alpha) * y_{t-1}`` along axis 1 from ``acc0`` (one per row).
    Padding at the right end of a row does not touch its real columns."""
    if m.shape[1] == 0:
        return m.copy()
    from scipy.signal import lfilter  # here: scipy.signal costs ~50 MB and ~1 s to import

    y, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], m, axis=1, zi=((1.0 - alpha) * acc0)[:, None])
    return np.asarray(y)


def _scale_floor(level: np.ndarray, rel: float = 1e-6, abs_: float = 1e-9) -> np.ndarray:
    return abs_ + rel * np.abs(level)


@register("ewma")
class EwmaResidual(Detector):
    """Deviation from an exponentially weighted moving average, in units of the EWMA of squared
    residuals (both bias-corrected, so the first points need no warm-up value).

    ``alpha``: weight of a new point in the level; ``alpha_var``: in the residual variance.
    Cold start: 0 for the first ``min_points`` points of a series. State per series: 5 numbers.
    """

    def __init__(self, alpha: float = 0.1, alpha_var: float = 0.0003, half: float = 3.0, min_points: int = 10) -> None:
        self.alpha, self.alpha_var, self.half, self.min_points = alpha, alpha_var, half, min_points
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "alpha_var": self.alpha_var, "half": self.half, "min_points": self.min_points}

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"n": ((), 0.0), "lvl": ((), 0.0), "var": ((), 0.0)}

    def deviations(self, lay: Layout, ids: np.ndarray, value: np.ndarray) -> np.ndarray:
        """|residual| / scale per row (layout order); updates the state."""
        a, av = self.alpha, self.alpha_var
        st = self.table
        n0, lvl0, var0 = st["n"][ids], st["lvl"][ids], st["var"][ids]
        x = lay.pad(value, 0.0)
        cnt = n0[:, None] + 1 + np.arange(x.shape[1])[None, :]  # points seen including this one
        acc = ewm_rows(x, a, lvl0)  # uncorrected level accumulator
        level = acc / (1.0 - (1.0 - a) ** cnt)
        prev_level = np.concatenate([(lvl0 / np.where(n0 > 0, 1.0 - (1.0 - a) ** n0, 1.0))[:, None], level[:, :-1]], axis=1)
        resid = np.where(cnt > 1, x - prev_level, 0.0)
        vacc = ewm_rows(resid * resid, av, var0)
        rcnt = np.maximum(cnt - 1, 0)
        var = np.where(rcnt > 0, vacc / (1.0 - (1.0 - av) ** np.maximum(rcnt, 1)), 0.0)
        prev_var = np.concatenate(
            [(var0 / np.where(n0 > 1, 1.0 - (1.0 - av) ** np.maximum(n0 - 1, 1), 1.0))[:, None], var[:, :-1]], axis=1
        )
        dev = np.abs(resid) / (np.sqrt(prev_var) + _scale_floor(prev_level))
        dev = np.where(cnt > self.min_points, dev, 0.0)
        st["n"][ids] = n0 + lay.lengths
        st["lvl"][ids] = lay.last(acc)
        st["var"][ids] = lay.last(vacc)
        return lay.unpad(dev)

    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        return squash(self.deviations(lay, ids, value), self.half)


@register("holt")
class HoltResidual(Detector):
    """Deviation from Holt's linear forecast (level + trend, exponential smoothing), in units of
    the EWMA of squared one-step forecast errors. Follows drifts that the plain EWMA lags behind.

    The recursion runs one column (point index) at a time for all series of a batch at once.
    Cold start: 0 for the first ``min_points`` points.
    """

    def __init__(self, alpha: float = 0.2, beta: float = 0.05, alpha_var: float = 0.001, half: float = 3.0,
                 min_points: int = 10) -> None:
        self.alpha, self.beta, self.alpha_var, self.half, self.min_points = alpha, beta, alpha_var, half, min_points
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "alpha_var": self.alpha_var, "half": self.half,
                "min_points": self.min_points}

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        return {"n": ((), 0.0), "lvl": ((), 0.0), "trend": ((), 0.0), "var": ((), 0.0), "vw": ((), 0.0)}

    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        st = self.table
        a, b, av = self.alpha, self.beta, self.alpha_var
        n, lvl, tr = st["n"][ids].copy(), st["lvl"][ids].copy(), st["trend"][ids].copy()
        var, vw = st["var"][ids].copy(), st["vw"][ids].copy()
        x = lay.pad(value, np.nan)
        dev = np.zeros_like(x)
        for j in range(x.shape[1]):
            xj = x[:, j]
            real = ~np.isnan(xj)
            first = real & (n == 0)
            second = real & (n == 1)
            later = real & (n >= 2)
            f = lvl + tr
            e = np.where(later, xj - f, 0.0)
            scale = np.sqrt(np.where(vw > 0, var / np.maximum(vw, 1e-300), 0.0))
            d = np.abs(e) / (scale + _scale_floor(f))
            dev[:, j] = np.where(later & (n >= self.min_points), d, 0.0)
            new_lvl = np.where(later, a * xj + (1 - a) * f, np.where(second | first, xj, lvl))
            new_tr = np.where(later, b * (new_lvl - lvl) + (1 - b) * tr, np.where(second, xj - lvl, tr))
            var = np.where(later, av * e * e + (1 - av) * var, var)
            vw = np.where(later, av + (1 - av) * vw, vw)
            lvl, tr = new_lvl, new_tr
            n = n + real
        st["n"][ids], st["lvl"][ids], st["trend"][ids], st["var"][ids], st["vw"][ids] = n, lvl, tr, var, vw
        return squash(lay.unpad(dev), self.half)


@register("robust_z")
class RobustZ(Detector):
    """Robust rolling z-score: deviation from the median of the previous ``window`` points in
    units of their running MAD (× 1.4826, the normal-consistent scale). Insensitive to the
    outliers it looks for. State per series: the last ``window`` values and deviations.
    Cold start: 0 until ``min_points`` points.
    """

    def __init__(self, window: int = 128, half: float = 3.0, min_points: int = 10) -> None:
        self.window, self.half, self.min_points = window, half, min_points
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "half": self.half, "min_points": self.min_points}

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        w = self.window
        return {"n": ((), 0.0), "x": ((w,), np.nan), "d": ((w,), np.nan)}

    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        st, w = self.table, self.window
        n0 = st["n"][ids]
        x = lay.pad(value, np.nan, lead=st["x"][ids])
        # median of the previous `window` points (lead columns hold the carried history)
        med_all = bn.move_median(x, w, min_count=1, axis=1)
        prev_med = np.concatenate([np.full((x.shape[0], 1), np.nan), med_all[:, :-1]], axis=1)
        dev_now = np.abs(x - prev_med)
        d = np.concatenate([st["d"][ids], dev_now[:, w:]], axis=1)
        mad_all = bn.move_median(d, w, min_count=1, axis=1)
        prev_mad = np.concatenate([np.full((x.shape[0], 1), np.nan), mad_all[:, :-1]], axis=1)
        cnt = n0[:, None] + 1 + np.arange(x.shape[1] - w)[None, :]
        # a MAD of 0 (more than half the window equal: counters, quantised sensors) is floored by
        # the mean absolute deviation, so one step off a flat line is not an infinite z
        mean_d = bn.move_mean(d, w, min_count=1, axis=1)
        prev_mean_d = np.concatenate([np.full((x.shape[0], 1), np.nan), mean_d[:, :-1]], axis=1)
        scale = np.maximum(1.4826 * np.nan_to_num(prev_mad[:, w:]), 1.2533 * np.nan_to_num(prev_mean_d[:, w:]))
        z = dev_now[:, w:] / (scale + _scale_floor(np.nan_to_num(prev_med[:, w:])))
        z = np.where((cnt > self.min_points) & np.isfinite(z), z, 0.0)
        st["n"][ids] = n0 + lay.lengths
        st["x"][ids] = lay.tail(x, w, lead=w)
        st["d"][ids] = lay.tail(d, w, lead=w)
        return squash(lay.unpad(z), self.half)


@register("seasonal")
class SeasonalProfile(Detector):
    """Deviation from the series' own profile for this hour of the day (``period="day"``) or hour
    of the week (``period="week"``, 168 slots): an EWMA level and residual variance per slot
    (event time, UTC; ``tz_offset_h`` shifts the slots to local time). Catches a value normal for
    the day but wrong for the hour (heating at night, a fridge not cycling). Cold start: 0 until a
    slot has seen ``min_points`` points.
    """

    def __init__(self, period: str = "day", alpha: float = 0.05, alpha_var: float = 0.02, half: float = 3.0,
                 min_points: int = 5, tz_offset_h: float = 0.0) -> None:
        if period not in ("day", "week"):
            raise ValueError(f"period must be 'day' or 'week', got {period!r}")
        self.period, self.alpha, self.alpha_var, self.half = period, alpha, alpha_var, half
        self.min_points, self.tz_offset_h = min_points, tz_offset_h
        self._inner = EwmaResidual(alpha=alpha, alpha_var=alpha_var, half=half, min_points=min_points)
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {"period": self.period, "alpha": self.alpha, "alpha_var": self.alpha_var, "half": self.half,
                "min_points": self.min_points, "tz_offset_h": self.tz_offset_h}

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        return {}

    def _slot_keys(self, keys: np.ndarray, time: np.ndarray) -> pl.Series:
        hours = (time + int(self.tz_offset_h * HOUR_NS)) // HOUR_NS
        slot = (hours + (72 if self.period == "week" else 0)) % (168 if self.period == "week" else 24)  # epoch: Thu
        return pl.DataFrame({"k": keys, "s": slot}).select(pl.concat_str([pl.col("k"), pl.col("s").cast(pl.Utf8)],
                                                                     separator="\x1f")).to_series()

    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        keys = np.asarray(lay.keys, dtype=object)[lay.seg]
        slot_keys = self._slot_keys(keys, time)
        inner_lay = Layout.of(slot_keys)
        inner_ids = self._inner.table.ids(inner_lay.keys)
        dev = self._inner.deviations(inner_lay, inner_ids, value[inner_lay.order])
        return squash(inner_lay.scatter(dev), self.half)

    def _extra_state(self) -> dict[str, Any]:
        return {"slots": self._inner.table.state()}

    def _restore_extra(self, extra: dict[str, Any]) -> None:
        if "slots" in extra:
            self._inner.table.restore(extra["slots"])
