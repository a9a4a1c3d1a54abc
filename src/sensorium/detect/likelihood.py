"""The default detector: prediction misses → anomaly likelihood, with a range-excess score.

Tuned on NAB (docs/detection.md; ``python bench/nab.py``). For every point of a series:

1. **Prediction misses.** A point *misses* when it is more than ``k`` sigmas from the EWMA level
   of the previous points (``a_level``; sigma: EWMA of squared residuals, ``a_scale``), or — once
   a season is known — more than ``k_seas`` sigmas from the value one season earlier. The season
   ``P`` is the strongest autocorrelation peak between lags ``pmin`` and ``pmax`` after the first
   zero crossing, found once from the series' first ``learn`` points (none if no peak exceeds
   ``acf_thr``).
2. **Anomaly likelihood** (as in Numenta's HTM detector, Ahmad et al. 2017): the share of misses
   among the last ``avg`` points is compared with its long-run mean and variance (EWMAs,
   ``a_long``, floored); the two-sided Gaussian tail ``q`` of the current share gives
   ``log(q) / log(1e-10)`` (1 at q = 1e-10). A second *red* (q <= ``red``) within ``refractory``
   points of a previous one counts as ``yellow``, so one incident reports once.
3. **Range excess**: how far the value lies beyond the running min/max of all earlier points,
   relative to that range (``e / (e + spatial_c)``): a value never seen before.

The score is the larger of 2 and 3. Cold start: the likelihood is 0 for the first ``warm``
points; the seasonal test starts after ``learn`` points. State per series: a dozen numbers, the
last ``avg`` misses and ``refractory`` red flags, the first ``learn`` values while learning, and
the last ``P`` values of a seasonal series.
"""

from __future__ import annotations

from typing import Any

import bottleneck as bn
import numpy as np
import polars as pl
from scipy.special import erfc

from sensorium.detect.base import Detector, Layout, register
from sensorium.detect.univariate import ewm_rows

DEFAULTS: dict[str, float | int] = dict(
    a_level=0.3, a_scale=0.001, k=3.0, k_seas=3.0, learn=600, pmin=4, pmax=300, acf_thr=0.3,
    avg=10, a_long=0.002, warm=300, mean_floor=0.03, var_floor=0.0003,
    red=1e-5, yellow=1e-3, refractory=50, spatial_c=0.005, z_half=40.0, z_window=64, z_warm=40, gate_excess=0.0, spatial_warm=100,
)


def _lag(m: np.ndarray, first: np.ndarray) -> np.ndarray:
    return np.concatenate([first[:, None], m[:, :-1]], axis=1)


class Pool:
    """Rows of a 2-D buffer handed out to series and recycled (a free list)."""

    def __init__(self, width: int, dtype: Any) -> None:
        self.data = np.zeros((0, width), dtype=dtype)
        self.free_rows = np.zeros(0, dtype=np.int64)

    def alloc(self, n: int) -> np.ndarray:
        if len(self.free_rows) < n:
            have = self.data.shape[0]
            grow = max(n - len(self.free_rows), have // 4, 64)
            self.data = np.concatenate([self.data, np.zeros((grow, self.data.shape[1]), self.data.dtype)])
            self.free_rows = np.concatenate([self.free_rows, np.arange(have, have + grow)])
        rows, self.free_rows = self.free_rows[:n], self.free_rows[n:]
        return rows

    def free(self, rows: np.ndarray) -> None:
        self.free_rows = np.concatenate([self.free_rows, np.asarray(rows, np.int64)])

    def compact(self) -> np.ndarray | None:
        """Give memory back once most rows are free (the learning buffers of 100 k series are
        ~1 GB; after they learned, a few new series need rows): keep the used rows only.
        Returns old row → new row (-1: freed) when it compacted, else None."""
        cap = self.data.shape[0]
        if cap < 1024 or len(self.free_rows) * 2 < cap:
            return None
        used = np.ones(cap, dtype=bool)
        used[self.free_rows] = False
        remap = np.full(cap, -1, dtype=np.int64)
        remap[used] = np.arange(int(used.sum()))
        self.data = self.data[used].copy()
        self.free_rows = np.zeros(0, dtype=np.int64)
        return remap

    def state(self) -> dict[str, Any]:
        return {"data": self.data.copy(), "free": self.free_rows.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        self.data = np.array(state["data"], dtype=self.data.dtype)
        self.free_rows = np.array(state["free"], dtype=np.int64)


def seasonal_periods(v: np.ndarray, pmin: int, pmax: int, thr: float) -> np.ndarray:
    """Season length (0: none) of each row of ``v`` (``[series, L]``): the highest
    autocorrelation peak at lags ``pmin..pmax`` after the first negative autocorrelation."""
    m, L = v.shape
    x = v - v.mean(axis=1, keepdims=True)
    f = np.fft.rfft(x, 2 * L, axis=1)
    ac = np.fft.irfft(f * np.conj(f), axis=1)[:, :L]
    with np.errstate(invalid="ignore", divide="ignore"):
        ac = ac / ac[:, :1] * (L / (L - np.arange(L)))
    pmax = min(pmax, L // 2)
    ac = np.nan_to_num(ac[:, : pmax + 1], nan=0.0)
    lags = np.arange(pmax + 1)
    neg = ac < 0
    first_neg = np.where(neg.any(axis=1), neg.argmax(axis=1), pmax + 1)
    start = np.maximum(first_neg, pmin)
    masked = np.where(lags[None, :] >= start[:, None], ac, -np.inf)
    k = masked.argmax(axis=1)
    ok = (first_neg <= pmax) & (masked[np.arange(m), k] > thr)
    return np.where(ok, k, 0).astype(np.int64)


@register("likelihood")
class LikelihoodDetector(Detector):
    """Prediction misses (EWMA + seasonal) → anomaly likelihood, max with range excess (module
    docstring). The registry's ``"default"``."""

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown parameters {sorted(unknown)}; known: {sorted(DEFAULTS)}")
        self.p: dict[str, Any] = {**DEFAULTS, **params}
        self.min_points = int(self.p["warm"])
        # pooled buffers, one row per series that needs one (rows recycled): the first `learn`
        # values of series still learning (float32: 2.4 KB a series instead of 4.8 — they only
        # find the season and seed the lag buffer), the last P values of seasonal series
        self.pools = {"first": Pool(int(self.p["learn"]), np.float32), "lag": Pool(int(self.p["pmax"]), np.float64)}
        super().__init__()

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in self.p.items() if DEFAULTS[k] != v}

    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        p = self.p
        return {
            "n": ((), 0.0), "lvl": ((), 0.0), "s2": ((), 0.0), "mu": ((), 0.0), "var": ((), 0.0),
            "mx": ((), 0.0), "mn": ((), 0.0), "P": ((), 0.0), "ss": ((), 0.0),
            "hits": ((int(p["avg"]) - 1,), np.nan), "since_red": ((), 1e9),
            "absres": ((int(p["z_window"]),), np.nan), "mono": ((), 1.0), "last": ((), np.nan),
            "first_row": ((), -1.0), "lag_row": ((), -1.0),
        }

    def _extra_state(self) -> dict[str, Any]:
        return {"pools": {k: v.state() for k, v in self.pools.items()}}

    def _restore_extra(self, extra: dict[str, Any]) -> None:
        for k, v in extra.get("pools", {}).items():
            self.pools[k].restore(v)

    # -- seasonal misses -----------------------------------------------------------------------
    def _seasonal(self, lay: Layout, ids: np.ndarray, x: np.ndarray, n0: np.ndarray) -> np.ndarray:
        """Seasonal misses ``[segments, width]`` (False before a season is known)."""
        p, st = self.p, self.table
        L = int(p["learn"])
        a = float(p["a_scale"])
        miss = np.zeros(x.shape, dtype=bool)
        cnt = n0.astype(np.int64)[:, None] + np.arange(x.shape[1])[None, :]
        # 1. series still learning: their first L values go to a pooled buffer (one row each)
        learning = np.flatnonzero(n0 < L)
        if len(learning):
            first_pool = self.pools["first"]
            rows = st["first_row"][ids[learning]].astype(np.int64)
            fresh = rows < 0
            if fresh.any():
                rows[fresh] = first_pool.alloc(int(fresh.sum()))
                st["first_row"][ids[learning[fresh]]] = rows[fresh]
            take = (cnt[learning] < L) & ~np.isnan(x[learning])
            r_i, c_i = np.nonzero(take)
            first_pool.data[rows[r_i], cnt[learning][r_i, c_i]] = x[learning][r_i, c_i]
            done = n0[learning] + lay.lengths[learning] >= L
            if done.any():
                segs, drows = learning[done], rows[done]
                first = first_pool.data[drows].astype(np.float64)
                first_pool.free(drows)
                st["first_row"][ids[segs]] = -1
                remap = first_pool.compact()
                if remap is not None:
                    held = st["first_row"] >= 0
                    st["first_row"][held] = remap[st["first_row"][held].astype(np.int64)]
                periods = seasonal_periods(first, int(p["pmin"]), int(p["pmax"]), float(p["acf_thr"]))
                st["P"][ids[segs]] = periods
                for per in np.unique(periods[periods > 0]).tolist():
                    k = np.flatnonzero(periods == per)
                    v = first[k]
                    es = v - np.concatenate([np.repeat(v[:, :1], per, axis=1), v[:, :-per]], axis=1)
                    init = es[:, per:L].var(axis=1) + 1e-12
                    ss = ewm_rows(es * es, a, init)
                    st["ss"][ids[segs[k]]] = ss[:, -1]
                    lrows = self.pools["lag"].alloc(len(k))
                    st["lag_row"][ids[segs[k]]] = lrows
                    self.pools["lag"].data[lrows, :per] = v[:, -per:]
        # 2. points after the learning period of seasonal series (grouped by season length)
        P = st["P"][ids]
        active = (cnt >= L) & (P[:, None] > 0) & ~np.isnan(x)
        lag_pool = self.pools["lag"]
        for per in np.unique(P[P > 0]).astype(int).tolist():
            segs = np.flatnonzero((P == per) & active.any(axis=1))
            if not len(segs):
                continue
            lrows = st["lag_row"][ids[segs]].astype(np.int64)
            lead = lag_pool.data[lrows, :per]
            sub_active = active[segs]
            # each row's post-learning values, left-aligned
            start = np.argmax(sub_active, axis=1)
            width = sub_active.sum(axis=1)
            w = int(width.max())
            cols = start[:, None] + np.arange(w)[None, :]
            valid = np.arange(w)[None, :] < width[:, None]
            vals = np.where(valid, x[segs[:, None], np.minimum(cols, x.shape[1] - 1)], np.nan)
            full = np.concatenate([lead, vals], axis=1)
            prev = full[:, :w]  # the value one season before each
            es = np.where(valid, vals - prev, 0.0)
            ss0 = st["ss"][ids[segs]]
            ss = ewm_rows(es * es, a, ss0)
            prev_ss = _lag(ss, ss0)
            scs = np.maximum(np.sqrt(prev_ss), 1e-9 + 1e-6 * np.abs(np.nan_to_num(prev)))
            z = np.abs(es) / scs
            m = valid & (z > float(p["k_seas"]))
            rows_i = np.broadcast_to(segs[:, None], cols.shape)
            miss[rows_i[valid], cols[valid]] = m[valid]
            st["ss"][ids[segs]] = ss[np.arange(len(segs)), width - 1]
            # keep the last `per` values
            tail_cols = width[:, None] + np.arange(per)[None, :]
            lag_pool.data[lrows, :per] = np.take_along_axis(full, tail_cols, axis=1)
        return miss

    # -- the whole score -----------------------------------------------------------------------
    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        p, st = self.p, self.table
        n0 = st["n"][ids].copy()
        new = n0 == 0
        x = lay.pad(value, np.nan)
        xf = np.where(np.isnan(x), 0.0, x)
        v0 = x[:, 0]
        real = ~np.isnan(x)
        cnt = n0[:, None] + np.arange(x.shape[1])[None, :]
        # 1. EWMA misses
        lvl0 = np.where(new, v0, st["lvl"][ids])
        level = ewm_rows(xf, float(p["a_level"]), lvl0)
        pred = _lag(level, lvl0)
        e = np.where(real, x - pred, 0.0)
        s2_0 = st["s2"][ids]
        s2 = ewm_rows(e * e, float(p["a_scale"]), s2_0)
        prev_s2 = _lag(s2, np.where(new, 1e-12, s2_0))
        sc = np.maximum(np.sqrt(prev_s2), 1e-9 + 1e-6 * np.abs(pred))
        z = np.abs(e) / sc
        hit = real & (z > float(p["k"]))
        hit |= self._seasonal(lay, ids, x, n0)
        # 2. likelihood of the recent miss rate
        avg = int(p["avg"])
        r = lay.pad(lay.unpad(hit.astype(np.float64)), np.nan, lead=st["hits"][ids])
        mm = bn.move_mean(r, avg, min_count=1, axis=1)[:, avg - 1 :]
        mm = np.where(real, mm, 0.0)
        a_long = float(p["a_long"])
        mu0 = np.where(new, mm[:, 0], st["mu"][ids])
        mu = ewm_rows(mm, a_long, mu0)
        var0 = st["var"][ids]
        var = ewm_rows(np.where(real, (mm - mu) ** 2, 0.0), a_long, var0)
        mu_prev = np.maximum(_lag(mu, mu0), float(p["mean_floor"]))
        sd = np.sqrt(np.maximum(_lag(var, var0), float(p["var_floor"])))
        q = 0.5 * erfc(np.abs(mm - mu_prev) / sd / np.sqrt(2.0))
        q = np.where(cnt < int(p["warm"]), 1.0, q)  # cold start: no likelihood yet (score 0)
        red = real & (q <= float(p["red"]))
        R = int(p["refractory"])
        # column of the last red before each point (relative to the batch; the state keeps how
        # many points ago the last red was)
        col = np.arange(x.shape[1], dtype=np.float64)[None, :]
        last_red = np.fmax.accumulate(
            np.concatenate([-st["since_red"][ids][:, None], np.where(red, col, -np.inf)], axis=1), axis=1
        )
        prev_red = (col - last_red[:, :-1]) <= R
        q = np.where(red & prev_red, float(p["yellow"]), q)
        lik = np.log(1.0000000001 - (1.0 - q)) / np.log(1.0 - 0.9999999999)
        # 3. range excess over all earlier values
        mx0 = np.where(new, v0, st["mx"][ids])
        mn0 = np.where(new, v0, st["mn"][ids])
        mx = np.fmax.accumulate(np.concatenate([mx0[:, None], x], axis=1), axis=1)
        mn = np.fmin.accumulate(np.concatenate([mn0[:, None], x], axis=1), axis=1)
        mx_prev, mn_prev = mx[:, :-1], mn[:, :-1]
        rg = mx_prev - mn_prev
        with np.errstate(invalid="ignore", divide="ignore"):
            ex = np.where(rg > 0, np.maximum(x - mx_prev, mn_prev - x) / rg, 0.0)
        ex = np.maximum(np.nan_to_num(ex), 0.0)
        sp = ex / (ex + float(p["spatial_c"]))
        sp = np.where(cnt >= int(p["spatial_warm"]), sp, 0.0)  # a young series' range means little
        # a counter (never decreasing so far) sets a new maximum at every point: no excess
        last0 = np.where(new, v0, st["last"][ids])
        prev_x = np.concatenate([last0[:, None], x[:, :-1]], axis=1)
        step_ok = ~real | (x >= prev_x)
        mono = np.logical_and.accumulate(np.concatenate([(st["mono"][ids] > 0)[:, None], step_ok], axis=1), axis=1)
        sp = np.where(mono[:, 1:], 0.0, sp)
        if p["gate_excess"] > 0:
            # beyond the range by more than `gate_excess` residual sigmas: a counter rising by its
            # usual step sets a new maximum every point, but by less than its residual scale
            beyond = np.maximum(x - mx_prev, mn_prev - x)
            sp = np.where(np.nan_to_num(beyond) > float(p["gate_excess"]) * sc, sp, 0.0)
        out = np.maximum(lik, sp)
        W = int(p["z_window"])
        absres = lay.pad(lay.unpad(np.abs(e)), np.nan, lead=st["absres"][ids])
        if p["z_half"] > 0:
            # a single large miss scores on its own: |residual| in units of the median absolute
            # residual of the previous `z_window` points (robust: frequent faults don't inflate it)
            med = bn.move_median(absres, W, min_count=W // 2, axis=1)[:, W - 1 : -1]
            # floored by a quarter of the EWMA sigma: quantised or flat series have a median of 0
            scale = np.maximum(1.4826 * np.nan_to_num(med, nan=np.inf), 0.25 * sc)
            zr = np.abs(e) / scale
            zh = float(p["z_half"])
            out = np.maximum(out, np.where(real & (cnt >= int(p["z_warm"])), zr / (zr + zh), 0.0))
        out = np.clip(out, 0.0, 1.0)
        # state
        st["n"][ids] = n0 + lay.lengths
        st["lvl"][ids] = lay.last(level)
        st["s2"][ids] = lay.last(s2)
        st["mu"][ids] = lay.last(mu)
        st["var"][ids] = lay.last(var)
        st["mx"][ids] = lay.last(mx, lead=1)
        st["mn"][ids] = lay.last(mn, lead=1)
        st["hits"][ids] = lay.tail(r, avg - 1, lead=avg - 1)
        st["since_red"][ids] = np.minimum(lay.lengths - lay.last(last_red, lead=1), 1e9)
        st["absres"][ids] = lay.tail(absres, W, lead=W)
        st["mono"][ids] = lay.last(mono, lead=1)
        st["last"][ids] = lay.last(x)
        return lay.unpad(out)


def _default(**params: Any) -> Detector:
    return LikelihoodDetector(**params)


def _register_default() -> None:
    from sensorium.detect.base import register_factory

    register_factory("default", _default)


_register_default()
_ = pl  # polars is the frame type callers pass (see base.score_many)
