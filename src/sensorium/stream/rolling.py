"""Rolling statistics per series and field over the last N points, in arrival order.

For every input row the stage can emit derived values (same values-frame schema) named
``"<field>:avg_N"``, ``"<field>:min_N"``, ``"<field>:max_N"`` (from the first point of a
series/field on) and ``"<field>:std_N"`` (sample standard deviation), ``"<field>:trend_N"``
(least-squares slope of the value against the point index: change per point), from the second
point on; ``process(values, only=...)`` makes only the derived fields named (what the rules read,
:meth:`RuleEngine.wanted_derived() <sensorium.rules.engine.RuleEngine.wanted_derived>`). The
window holds the last N points *in arrival order*, out-of-order points included; non-finite
values are skipped (no window slot, no output).

State: the last N values of every series/field (a numpy matrix by key id), updated for every
key whatever ``only`` asks for, so a batch needs no history, :meth:`RollingStats.latest` (the
``rolling_stats`` table) computes from it on demand, and the result does not depend on how the
log is cut into batches.

Vectorised: rows are sorted by key (stable); one compiled pass (:func:`sensorium.jit.rolling_stats`)
walks each wanted row's window (its key's carried values, then its rows up to it) and another
(:func:`sensorium.jit.rolling_update`) shifts each key's last N values in place, so a batch
allocates no ``[rows, N]`` matrices (at 100 k series, ~250 MB of temporaries per step before).
:func:`_window_stats` is the NumPy definition of the statistics (and computes ``latest()``).

The derived frame holds one block per statistic (avg, std, min, max, trend), each block in the
input's arrival order, so every derived series/field is in arrival order.
"""

from __future__ import annotations

from collections.abc import Iterable
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from sensorium.jit import rolling_stats, rolling_update
from sensorium.keyindex import KeyIndex as _KeyIndex
from sensorium.keyindex import Keys, pair_groups, stable_argsort, unique
from sensorium.keyindex import grow as _grow
from sensorium.stream.frame import empty_values

STATS: tuple[str, ...] = ("avg", "std", "min", "max", "trend")
def _seqsum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in a fixed order (row by row). ``ndarray.sum(axis=0)`` switches to
    pairwise, 8-way unrolled summation when the reduced axis is contiguous (e.g. one column),
    which rounds differently: results would depend on how many rows a batch has."""
    acc = a[0].copy()
    for i in range(1, a.shape[0]):
        acc += a[i]
    return acc


def _window_stats(win: np.ndarray, m: np.ndarray, out: np.ndarray, which: tuple[int, ...] = (0, 1, 2, 3, 4)) -> None:
    """Statistics ``which`` (indices into :data:`STATS`: avg, std, min, max, trend) of windows
    ``win`` [N, rows] (the last ``m`` rows present), into ``out[j]`` for ``which[j]``.

    Every reduction runs over axis 0 one window row at a time, so each result is bit-for-bit the
    same whatever the other columns (how the log was cut into batches) and whichever other
    statistics are computed — no einsum or BLAS."""
    w = win.shape[0]
    x = np.arange(w, dtype=np.float64)[:, None]
    at = {s: j for j, s in enumerate(which)}
    spread = 1 in at or 4 in at  # std and trend need the deviations from the mean
    if (m == w).all():  # steady state: every window full, no masks
        if 0 in at or spread:
            mean = _seqsum(win) / w
        if spread:
            dev = win - mean
        if 0 in at:
            out[at[0]] = mean
        if 1 in at:
            out[at[1]] = np.sqrt(_seqsum(dev * dev) / (w - 1))
        if 2 in at:
            out[at[2]] = win.min(axis=0)
        if 3 in at:
            out[at[3]] = win.max(axis=0)
        if 4 in at:
            out[at[4]] = _seqsum((x - (w - 1) / 2.0) * dev) / (w * (w * w - 1) / 12.0)
        return
    present = (w - 1 - x) < m[None, :]
    if 0 in at or spread:
        mean = _seqsum(np.where(present, win, 0.0)) / m
    if spread:
        dev = np.where(present, win - mean, 0.0)
    two = m >= 2
    if 0 in at:
        out[at[0]] = mean
    if 1 in at:
        out[at[1]] = np.where(two, np.sqrt(_seqsum(dev * dev) / np.where(two, m - 1, 1)), np.nan)
    if 2 in at:
        out[at[2]] = np.where(present, win, np.inf).min(axis=0)
    if 3 in at:
        out[at[3]] = np.where(present, win, -np.inf).max(axis=0)
    if 4 in at:
        xbar = (w - 1) - (m - 1) / 2.0
        sxx = np.where(two, m * (m * m - 1) / 12.0, 1.0)
        out[at[4]] = np.where(two, _seqsum((x - xbar) * dev) / sxx, np.nan)


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


class RollingStats:
    """Last-N statistics per (series, field); see the module docstring."""

    def __init__(self, step_id: str = "rolling", n: int = 10) -> None:
        if n < 2:
            raise ValueError(f"rolling window must hold at least 2 points, not {n}")
        self.step_id = step_id
        self.n = int(n)
        self.names = {s: f"{s}_{self.n}" for s in STATS}
        self._keys = _KeyIndex()
        # per key: the last N values, oldest first (NaN before the first), how many there are,
        # and the time of the latest; `latest()` computes its statistics from them on demand
        self._buf = np.full((0, self.n), np.nan)
        self._count = np.zeros(0, dtype=np.int64)
        self._latest_t = np.zeros(0, dtype=np.int64)
        # which statistics of each field `only` asks for: (only, number of fields, bits by field id)
        self._wanted_cache: tuple[tuple[str, ...] | None, int, np.ndarray] | None = None
        # ids of the derived field names in the runner's field index: (index, fields, ids)
        self._derived_ids: tuple[Any, int, np.ndarray] | None = None

    # ------------------------------------------------------------------ processing

    def process(self, values: pl.DataFrame, only: Iterable[str] | None = None) -> pl.DataFrame:
        """Derived values (see :meth:`process_keyed`)."""
        return self.process_keyed(values, only)[0]

    def process_keyed(
        self, values: pl.DataFrame, only: Iterable[str] | None = None, keys: Keys | None = None
    ) -> tuple[pl.DataFrame, Keys | None]:
        """Derived values, and their :class:`~sensorium.keyindex.Keys` when ``keys`` (those of
        ``values``, from the framing) are given.

        Derived values of a values frame (arrival order); ``arrival`` is kept if present. With
        ``keys``, ``values`` may come without ``series`` and ``field`` (framed without names):
        the derived values then come without them too (their keys name them).

        ``only`` names the derived fields wanted (``"temperature:std_10"``; glob patterns such as
        ``"*:std_10"`` allowed), e.g. :meth:`RuleEngine.wanted_derived()
        <sensorium.rules.engine.RuleEngine.wanted_derived>`; None: every statistic of every field.
        Only wanted values are computed, but every series and field's window is updated, so
        :meth:`latest` and later batches do not depend on ``only``."""
        if values.height == 0:
            return self._empty(values, keys)
        v_all = values.get_column("value").cast(pl.Float64).to_numpy()
        finite = np.isfinite(v_all)
        if not finite.all():
            values = values.filter(pl.Series(finite))
            keys = keys.take(finite) if keys is not None else None
            v_all = v_all[finite]
            if values.height == 0:
                return self._empty(values, keys)
        # group the rows by (series, field), stable: arrival order within a key (groups in any
        # order: every result goes back to its row or its key)
        pg = pair_groups(keys) if keys is not None else None
        if pg is not None:  # by the framing's ids: two compiled passes, ids mapped per pair
            fid, gk = self._keys.pair_keys(pg)
            order, starts = pg.rows(np.arange(len(pg)))
            first = pg.first
        else:
            sid, fid = (
                self._keys.ids(None, None, keys) if keys is not None
                else self._keys.ids(values.get_column("series"), values.get_column("field"))
            )
            code = sid.astype(np.int64) * len(self._keys.field_names) + fid
            order = stable_argsort(code)
            code = code[order]
            gs = np.empty(len(code), dtype=bool)
            gs[0] = True
            np.not_equal(code[1:], code[:-1], out=gs[1:])
            starts = np.flatnonzero(gs)
            first = order[starts]  # each key's first row
            gk = self._keys.keys(sid[first], fid[first], first)
            del sid, code, gs
        n = len(order)
        ends = np.empty_like(starts)
        ends[:-1] = starts[1:] - 1
        ends[-1] = n - 1
        self._grow(len(self._keys))
        bits = self._wanted(None if only is None else tuple(only))[fid[first]]
        out = (
            self._derive(values, fid, order, v_all, gk, starts, ends, bits, keys)
            if bits.any()
            else self._empty(values, keys)
        )
        self._update(gk, v_all, order, starts, ends)
        self._latest_t[gk] = values.get_column("time").to_numpy()[order[ends]]
        return out

    def _wanted(self, only: tuple[str, ...] | None) -> np.ndarray:
        """Per field id, a bit per statistic (bit i: ``STATS[i]``) that ``only`` asks for."""
        names = self._keys.field_names
        cached = self._wanted_cache
        if cached is not None and cached[0] == only and cached[1] == len(names):
            return cached[2]
        bits = np.zeros(len(names), dtype=np.int64)
        for f, name in enumerate(names):
            for i, s in enumerate(STATS):
                derived = f"{name}:{self.names[s]}"
                if only is None or any(
                    fnmatchcase(derived, p) if _is_glob(p) else derived == p for p in only
                ):
                    bits[f] |= 1 << i
        self._wanted_cache = (only, len(names), bits)
        return bits

    def _grow(self, k: int) -> None:
        self._buf = _grow(self._buf, k, np.nan)
        self._count = _grow(self._count, k, 0)
        self._latest_t = _grow(self._latest_t, k, 0)

    def _update(self, gk: np.ndarray, v_all: np.ndarray, order: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Carry the last N values of every key into the next batch (``gk``: the keys of the
        groups ``starts..ends`` of the rows ``order`` sorts by key; values ``v_all`` in row
        order), in place, by a compiled loop. Only each group's last N values are gathered: the
        loop keeps no more, and counts at most N per key."""
        w = self._buf.shape[1]
        take = np.minimum(ends - starts + 1, w)
        tstarts = np.cumsum(take) - take
        pos = np.arange(int(take.sum()), dtype=np.int64) + np.repeat(ends + 1 - take - tstarts, take)
        rolling_update(self._buf, self._count, gk, v_all[order[pos]], tstarts)

    def _derive(
        self,
        values: pl.DataFrame,
        fid: np.ndarray,
        order: np.ndarray,
        v_all: np.ndarray,
        gk: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        bits: np.ndarray,
        keys: Keys | None,
    ) -> tuple[pl.DataFrame, Keys | None]:
        """The wanted derived rows (and their keys). ``order`` sorts the rows (field ids ``fid``,
        values ``v_all``) by key into groups ``starts..ends`` (keys ``gk``); ``bits``: statistics
        wanted per group. Only the wanted groups' values are gathered."""
        n = len(order)
        lengths = ends - starts + 1
        val: dict[int, np.ndarray] = {}  # by statistic, in arrival order (set where wanted)
        has: dict[int, np.ndarray] = {}
        for b in unique(bits[bits != 0]).tolist():
            which = tuple(i for i in range(len(STATS)) if b >> i & 1)
            pick = bits == b
            if pick.all():
                rows, sub_starts = np.arange(n), starts
            else:
                rows = np.flatnonzero(np.repeat(pick, lengths))
                sub_lengths = lengths[pick]
                sub_starts = np.zeros(len(sub_lengths), dtype=np.intp)
                np.cumsum(sub_lengths[:-1], out=sub_starts[1:])
            at = order[rows]
            stats, m = self._compute(gk[pick], v_all[at], sub_starts, which)
            for j, i in enumerate(which):
                if i not in val:
                    val[i] = np.empty(n)
                    has[i] = np.zeros(n, dtype=bool)
                val[i][at] = stats[j]
                has[i][at] = m >= 2 if STATS[i] in ("std", "trend") else True
        return self._frame(values, fid, val, has, keys)

    def _compute(
        self, gk: np.ndarray, v: np.ndarray, starts: np.ndarray, which: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Statistics ``which`` [len(which), rows] of key-sorted rows (the groups from ``starts``
        are every row of the batch of the keys ``gk``) and the number of points in each row's
        window: one compiled pass, each row's window being its key's carried values followed by
        its rows up to it (bit-identical to :func:`_window_stats` over those windows)."""
        return rolling_stats(self._buf, self._count, gk, v, starts, which)

    def _frame(
        self,
        values: pl.DataFrame,
        fid: np.ndarray,
        val: dict[int, np.ndarray],
        has: dict[int, np.ndarray],
        keys: Keys | None,
    ) -> tuple[pl.DataFrame, Keys | None]:
        """One block of rows per statistic (``has``: its rows), each in arrival order. Built column
        by column: numbers by numpy indexing, series keys by a filter of the input's (much
        cheaper than a gather of strings)."""
        stats = sorted(has)
        rows = [np.flatnonzero(has[i]) for i in stats]
        idx = np.concatenate(rows)
        field_names = self._keys.field_names
        names = pl.Series([f"{f}:{self.names[s]}" for s in STATS for f in field_names], dtype=pl.Utf8)
        code = np.repeat(np.array(stats, dtype=np.int64) * len(field_names), [len(r) for r in rows]) + fid[idx]
        cols: dict[str, pl.Series] = {}
        if "series" in values.columns:  # values framed without names (keys given) get none either
            series = values.get_column("series")
            cols["series"] = pl.concat([series.filter(pl.Series(has[i])) for i in stats], rechunk=False)
            cols["field"] = names.gather(pl.Series(code, dtype=pl.UInt32))
        cols["time"] = pl.Series(values.get_column("time").to_numpy()[idx], dtype=pl.Int64)
        cols["value"] = pl.Series(np.concatenate([val[i][r] for i, r in zip(stats, rows, strict=True)]), dtype=pl.Float64)
        if "arrival" in values.columns:
            arrival = values.get_column("arrival")
            cols["arrival"] = (
                pl.Series(arrival.to_numpy()[idx], dtype=pl.Int64)
                if not arrival.null_count()
                else pl.concat([arrival.filter(pl.Series(has[i])) for i in stats], rechunk=False)
            )
        frame = pl.DataFrame([c.alias(k) for k, c in cols.items()])
        if keys is None:
            return frame, None
        gfid = self._derived_field_ids(names, keys)
        sid = np.concatenate([keys.sid[has[i]] for i in stats])
        return frame, Keys(sid, gfid[code], keys.series, keys.fields)

    def _derived_field_ids(self, names: pl.Series, keys: Keys) -> np.ndarray:
        """Ids of the derived field names (by statistic, then field) in the runner's index."""
        cached = self._derived_ids
        if cached is None or cached[0] is not keys.fields or cached[1] != names.len():
            cached = self._derived_ids = (keys.fields, names.len(), keys.fields.ids(names).astype(np.int32, copy=False))
        return cached[2]

    def _empty(self, values: pl.DataFrame, keys: Keys | None = None) -> tuple[pl.DataFrame, Keys | None]:
        out = empty_values() if "series" in values.columns else empty_values().drop("series", "field")
        if "arrival" in values.columns:
            out = out.with_columns(pl.lit(None, dtype=pl.Int64).alias("arrival"))
        return out, None if keys is None else keys.take(np.zeros(0, dtype=np.int64))

    # ------------------------------------------------------------------ queries and state

    def latest(self) -> pl.DataFrame:
        """The latest statistics of every series and field: series, field, avg_N, std_N, min_N,
        max_N, trend_N, time (of the latest point)."""
        k = len(self._keys)
        stats = np.full((len(STATS), k), np.nan)
        if k:
            count = self._count[:k]
            _window_stats(np.ascontiguousarray(self._buf[:k].T), np.maximum(count, 1), stats)
            stats[:, count == 0] = np.nan
        cols: dict[str, Any] = {
            "series": pl.Series(self._keys.series, dtype=pl.Utf8),
            "field": pl.Series(self._keys.fields, dtype=pl.Utf8),
        }
        for i, s in enumerate(STATS):
            cols[self.names[s]] = pl.Series(stats[i], dtype=pl.Float64).fill_nan(None)
        cols["time"] = pl.Series(self._latest_t[:k], dtype=pl.Int64)
        return pl.DataFrame(cols)

    def state(self) -> dict[str, Any]:
        """The state to checkpoint. Its arrays and lists are the stage's own, not copies (the
        checkpoint pickles it at once, under the step lock: at 100 k series the copies were
        ~40 MB of the checkpoint's peak) — pickle it before the stage processes again. The
        series names are the one exception: an Arrow copy of the name column (~5 MB at 100 k
        series, dropped after the pickle; a list of them kept by the index was twice that)."""
        k = len(self._keys)
        return {
            "n": self.n,
            # keys as ids into the name lists (a list of every key's names was 2 x 400 k entries)
            "series_names": self._keys.series_names.column().to_arrow(),  # not .names: a list kept for good
            "key_sid": self._keys.key_sid,
            "field_names": self._keys.field_names,
            "key_fid": self._keys.field_id,
            "buf": self._buf[:k],
            "count": self._count[:k],
            "latest_t": self._latest_t[:k],
        }

    def restore(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n:  # a different window: start afresh
            self.__init__(self.step_id, self.n)  # type: ignore[misc]
            return
        self._keys = _KeyIndex()
        if "key_sid" in state:
            series = _names(state["series_names"]).gather(np.asarray(state["key_sid"]))
            field = pl.Series(state["field_names"], dtype=pl.Utf8).gather(np.asarray(state["key_fid"]))
        else:  # before session 11: the names of every key
            series = pl.Series(list(state["series"]), dtype=pl.Utf8)
            field = pl.Series(list(state["fields"]), dtype=pl.Utf8)
        if series.len():
            self._keys.add(series, field)
        self._buf = state["buf"].copy()
        self._count = state["count"].copy()
        self._latest_t = state["latest_t"].copy()


def _names(names: Any) -> pl.Series:
    """A checkpoint's name column (an Arrow array since session 16, a list before)."""
    if isinstance(names, (pa.Array, pa.ChunkedArray)):
        return pl.Series(pl.from_arrow(names)).cast(pl.Utf8)
    return pl.Series(list(names), dtype=pl.Utf8)
