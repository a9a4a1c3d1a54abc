"""Rolling statistics per series and field over the last N points, in arrival order.

For every input row the stage emits derived values (same values-frame schema) named
``"<field>:avg_N"``, ``"<field>:min_N"``, ``"<field>:max_N"`` (from the first point of a
series/field on) and ``"<field>:std_N"`` (sample standard deviation), ``"<field>:trend_N"``
(least-squares slope of the value against the point index: change per point), from the second
point on. The window holds the last N points *in arrival order*, out-of-order points included;
non-finite values are skipped (no window slot, no output).

State: the last N-1 values of every series/field (a numpy matrix by key id), so a batch needs
no history; the result does not depend on how the log is cut into batches.

Vectorised: rows are sorted by key (stable), and the windows of all rows are one matrix
``[N, rows]`` gathered from the batch and the carried values by index arithmetic; every statistic
is a few numpy reductions over that matrix.

The derived frame holds one block per statistic (avg, std, min, max, trend), each block in the
input's arrival order, so every derived series/field is in arrival order.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from sensorium.stream.frame import VALUES_SCHEMA, empty_values

STATS: tuple[str, ...] = ("avg", "std", "min", "max", "trend")
_CHUNK = 8192  # rows per window matrix (N x 8192 floats stay in cache)
_SEED = 0x5E751


class NameIndex:
    """name → dense id (in order of first sight), looked up a whole column at a time.

    Names are hashed to 64 bits (polars' string hash, seeded) and kept in an open-addressing
    table of numpy arrays; a lookup is a few vectorised gathers and compares (no string join,
    no per-call table build). A 64-bit collision between two names is detected when the second
    is added and resolved by rehashing everything with another seed.
    """

    def __init__(self, seed: int = _SEED) -> None:
        self.names: list[str] = []
        self.seed = seed
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._slot_id = np.full(1024, -1, dtype=np.int32)
        self._slot_h = np.zeros(1024, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.names)

    def hash(self, col: pl.Series) -> np.ndarray:
        return col.hash(seed=self.seed).to_numpy()

    def ids_of_hashes(self, h: np.ndarray) -> np.ndarray:
        """Ids of hashed names (-1: unknown)."""
        out = np.full(len(h), -1, dtype=np.int32)
        if not self.names or not len(h):
            return out
        mask = len(self._slot_id) - 1
        slot = (h & np.uint64(mask)).astype(np.intp)
        sid = self._slot_id[slot]
        hit = (sid >= 0) & (self._slot_h[slot] == h)
        np.copyto(out, sid, where=hit)
        todo = np.flatnonzero((sid >= 0) & ~hit)  # slot taken by another name: probe on
        slot = slot[todo]
        while len(todo):
            slot = (slot + 1) & mask
            sid = self._slot_id[slot]
            hit = (sid >= 0) & (self._slot_h[slot] == h[todo])
            out[todo[hit]] = sid[hit]
            more = (sid >= 0) & ~hit
            todo, slot = todo[more], slot[more]
        return out

    def lookup(self, col: pl.Series) -> np.ndarray:
        """Ids of a column's names (-1: unknown)."""
        return self.ids_of_hashes(self.hash(col))

    def ids(self, col: pl.Series) -> np.ndarray:
        """Ids of a column's names, adding the names not seen yet."""
        h = self.hash(col)
        ids = self.ids_of_hashes(h)
        missing = ids < 0
        if missing.any():
            self.add(col.filter(pl.Series(missing)).unique(maintain_order=True).to_list())
            ids = self.lookup(col)
        return ids

    def add(self, names: list[str]) -> np.ndarray:
        """Add names not yet known (distinct), in order; their ids."""
        start = len(self.names)
        self.names += names
        new = self.hash(pl.Series(names, dtype=pl.Utf8))
        self._hashes = np.concatenate([self._hashes, new])
        if np.unique(self._hashes).size != self._hashes.size:
            while True:  # a 64-bit collision: rehash everything with another seed
                self.seed += 1
                self._hashes = self.hash(pl.Series(self.names, dtype=pl.Utf8))
                if np.unique(self._hashes).size == self._hashes.size:
                    break
            self._build(0)
        elif 2 * len(self.names) > len(self._slot_id):
            self._build(0)
        else:
            self._build(start)
        return np.arange(start, len(self.names), dtype=np.int32)

    def _build(self, start: int) -> None:
        """Insert names from ``start`` on (from 0: a fresh table, at most half full)."""
        if start == 0:
            size = 1024
            while size < 2 * len(self.names):
                size *= 2
            self._slot_id = np.full(size, -1, dtype=np.int32)
            self._slot_h = np.zeros(size, dtype=np.uint64)
        mask = len(self._slot_id) - 1
        slot_id, slot_h = self._slot_id, self._slot_h
        for i, h in enumerate(self._hashes[start:].tolist(), start):
            j = h & mask
            while slot_id[j] >= 0:
                j = (j + 1) & mask
            slot_id[j] = i
            slot_h[j] = h


class _KeyIndex:
    """(series, field) → dense key id: series id and field id, then a [series, field] table."""

    def __init__(self) -> None:
        self.series_names = NameIndex(_SEED)
        self.field_names_ = NameIndex(_SEED + 7)
        self.table = np.full((0, 0), -1, dtype=np.int32)
        self.key_sid = np.zeros(0, dtype=np.int32)
        self.field_id = np.zeros(0, dtype=np.int32)  # per key: field id

    def __len__(self) -> int:
        return len(self.key_sid)

    @property
    def series(self) -> list[str]:
        names = self.series_names.names
        return [names[i] for i in self.key_sid]

    @property
    def fields(self) -> list[str]:
        names = self.field_names_.names
        return [names[i] for i in self.field_id]

    @property
    def field_names(self) -> list[str]:
        return self.field_names_.names

    def lookup(self, series: pl.Series, field: pl.Series) -> np.ndarray:
        sid = self.series_names.ids(series)
        fid = self.field_names_.ids(field)
        ns, nf = len(self.series_names.names), len(self.field_names_.names)
        if self.table.shape[0] < ns or self.table.shape[1] < nf:
            grown = np.full((max(ns, 2 * self.table.shape[0], 64), max(nf, self.table.shape[1] + 8)), -1, dtype=np.int32)
            grown[: self.table.shape[0], : self.table.shape[1]] = self.table
            self.table = grown
        kid = self.table[sid, fid]
        new = np.flatnonzero(kid < 0)
        if len(new):
            pair = sid[new].astype(np.int64) * nf + fid[new]
            _, first = np.unique(pair, return_index=True)
            first = np.sort(first)  # new keys in order of first sight
            ps, pf = sid[new[first]], fid[new[first]]
            start = len(self.key_sid)
            self.table[ps, pf] = np.arange(start, start + len(first), dtype=np.int32)
            self.key_sid = np.concatenate([self.key_sid, ps])
            self.field_id = np.concatenate([self.field_id, pf])
            kid = self.table[sid, fid]
        return kid

    def add(self, series: list[str], fields: list[str]) -> None:
        """Add keys in this order (restoring a state)."""
        self.lookup(pl.Series(series, dtype=pl.Utf8), pl.Series(fields, dtype=pl.Utf8))


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integer keys: LSD radix passes over 16-bit digits (numpy
    sorts 16-bit keys with a radix sort), much faster than a comparison sort."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.intp)
    top = int(keys.max())
    if top < (1 << 16):
        return np.argsort(keys.astype(np.uint16), kind="stable")
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    shift = 16
    while top >> shift:
        digit = ((keys[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


def _grow(a: np.ndarray, n: int, fill: Any) -> np.ndarray:
    if a.shape[0] >= n:
        return a
    out = np.full((max(n, 2 * a.shape[0], 64), *a.shape[1:]), fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def _seqsum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in a fixed order (row by row). ``ndarray.sum(axis=0)`` switches to
    pairwise, 8-way unrolled summation when the reduced axis is contiguous (e.g. one column),
    which rounds differently: results would depend on how many rows a batch has."""
    acc = a[0].copy()
    for i in range(1, a.shape[0]):
        acc += a[i]
    return acc


def _window_stats(win: np.ndarray, m: np.ndarray, out: np.ndarray) -> None:
    """avg, std, min, max, trend of windows ``win`` [N, rows] (the last ``m`` rows present).

    Every reduction runs over axis 0 one window row at a time, so each result is bit-for-bit the
    same whatever the other columns (how the log was cut into batches) — no einsum or BLAS."""
    w = win.shape[0]
    x = np.arange(w, dtype=np.float64)[:, None]
    if (m == w).all():  # steady state: every window full, no masks
        mean = _seqsum(win) / w
        dev = win - mean
        out[0] = mean
        out[1] = np.sqrt(_seqsum(dev * dev) / (w - 1))
        out[2] = win.min(axis=0)
        out[3] = win.max(axis=0)
        out[4] = _seqsum((x - (w - 1) / 2.0) * dev) / (w * (w * w - 1) / 12.0)
        return
    present = (w - 1 - x) < m[None, :]
    mean = _seqsum(np.where(present, win, 0.0)) / m
    dev = np.where(present, win - mean, 0.0)
    two = m >= 2
    out[0] = mean
    out[1] = np.where(two, np.sqrt(_seqsum(dev * dev) / np.where(two, m - 1, 1)), np.nan)
    out[2] = np.where(present, win, np.inf).min(axis=0)
    out[3] = np.where(present, win, -np.inf).max(axis=0)
    xbar = (w - 1) - (m - 1) / 2.0
    sxx = np.where(two, m * (m * m - 1) / 12.0, 1.0)
    out[4] = np.where(two, _seqsum((x - xbar) * dev) / sxx, np.nan)


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

    # ------------------------------------------------------------------ processing

    def process(self, values: pl.DataFrame) -> pl.DataFrame:
        """Derived values of a values frame (arrival order); ``arrival`` is kept if present."""
        if values.height == 0:
            return self._empty(values)
        v_all = values.get_column("value").cast(pl.Float64).to_numpy()
        finite = np.isfinite(v_all)
        if not finite.all():
            values = values.filter(pl.Series(finite))
            v_all = v_all[finite]
            if values.height == 0:
                return self._empty(values)
        kid = self._key_ids(values)
        order = stable_argsort(kid)
        stats_sorted, two_sorted, ends = self._compute(kid[order], v_all[order])
        inv = np.empty_like(order)  # back to arrival order
        inv[order] = np.arange(len(order))
        stats = np.take(stats_sorted, inv, axis=1)
        two = two_sorted[inv]
        end_rows = order[ends]
        k_end = kid[end_rows]
        self._latest_t[k_end] = values.get_column("time").to_numpy()[end_rows]
        return self._frame(values, kid, stats, two)

    def _key_ids(self, values: pl.DataFrame) -> np.ndarray:
        kid = self._keys.lookup(values.get_column("series"), values.get_column("field"))
        self._grow(len(self._keys))
        return kid

    def _grow(self, k: int) -> None:
        self._buf = _grow(self._buf, k, np.nan)
        self._count = _grow(self._count, k, 0)
        self._latest_t = _grow(self._latest_t, k, 0)

    def _compute(self, kid: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stats [5, rows] of key-sorted rows, whether std/trend exist, and each key's last row.

        The rows of each key are laid out after its N-1 carried values in one array ``ext`` (a
        slot never filled holds NaN); the window of a row is ``ext[p - N + 1 .. p]``, gathered
        as an ``[N, rows]`` matrix in cache-sized chunks (reductions run over axis 0)."""
        n, w = len(kid), self.n
        gs = np.ones(n, dtype=bool)
        gs[1:] = kid[1:] != kid[:-1]
        ge = np.ones(n, dtype=bool)
        ge[:-1] = gs[1:]
        starts = np.flatnonzero(gs)
        group = np.cumsum(gs) - 1
        p = np.arange(n) + (group + 1) * (w - 1)  # position of each row in ext
        ext = np.empty(n + len(starts) * (w - 1))
        ext[p] = v
        slots = (starts + np.arange(len(starts)) * (w - 1))[:, None] + np.arange(w - 1)[None, :]
        ext[slots] = self._buf[kid[starts], 1:]
        pos = np.arange(n) - starts[group]
        m = np.minimum(w, pos + 1 + self._count[kid])  # points in each row's window
        back = np.arange(w)[::-1, None]  # row c of a window is back[c] points back
        stats = np.empty((len(STATS), n))
        end = np.flatnonzero(ge)
        tails = np.empty((len(end), w))
        for lo in range(0, n, _CHUNK):
            hi = min(n, lo + _CHUNK)
            win = ext[p[None, lo:hi] - back]
            _window_stats(win, m[lo:hi], stats[:, lo:hi])
            e0, e1 = np.searchsorted(end, [lo, hi])
            tails[e0:e1] = win[:, end[e0:e1] - lo].T
        self._buf[kid[end]] = tails
        self._count[kid[end]] = m[end]
        return stats, m >= 2, end

    def _frame(
        self, values: pl.DataFrame, kid: np.ndarray, stats: np.ndarray, two: np.ndarray
    ) -> pl.DataFrame:
        """One block of rows per statistic (avg, std, min, max, trend), each in arrival order."""
        extra = ["arrival"] if "arrival" in values.columns else []
        base = values.select("series", "time", *extra)
        fid = pl.Series(self._keys.field_id[kid], dtype=pl.UInt32)
        keep = pl.Series(two)
        parts = []
        for i, s in enumerate(STATS):
            names = pl.Series([f"{f}:{self.names[s]}" for f in self._keys.field_names], dtype=pl.Utf8)
            part = base.with_columns(
                names.gather(fid).alias("field"), pl.Series("value", stats[i], dtype=pl.Float64)
            )
            if s in ("std", "trend"):
                part = part.filter(keep)
            parts.append(part.select([*VALUES_SCHEMA, *extra]))
        return pl.concat(parts, how="vertical", rechunk=False)

    def _empty(self, values: pl.DataFrame) -> pl.DataFrame:
        out = empty_values()
        if "arrival" in values.columns:
            out = out.with_columns(pl.lit(None, dtype=pl.Int64).alias("arrival"))
        return out

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
        k = len(self._keys)
        return {
            "n": self.n,
            "series": list(self._keys.series),
            "fields": list(self._keys.fields),
            "buf": self._buf[:k].copy(),
            "count": self._count[:k].copy(),
            "latest_t": self._latest_t[:k].copy(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        if int(state["n"]) != self.n:  # a different window: start afresh
            self.__init__(self.step_id, self.n)  # type: ignore[misc]
            return
        self._keys = _KeyIndex()
        if state["series"]:
            self._keys.add(list(state["series"]), list(state["fields"]))
        self._buf = state["buf"].copy()
        self._count = state["count"].copy()
        self._latest_t = state["latest_t"].copy()
