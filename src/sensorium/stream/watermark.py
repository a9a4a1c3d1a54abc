"""The clock of the windowed operators: per-series event-time watermarks, vectorised.

``watermark(series) = max event time seen - lateness``. A series silent for ``idle_timeout`` of
processing time (its last arrival, or the first tick that saw it when rows carry no ``arrival``)
has its watermark advanced by :meth:`Watermarks.tick`:
``max event time - lateness + (now - last arrival)``. Watermarks never go back.

Determinism: a row is *late* iff its event time is below the watermark of its series *as it stood
just before that row* — a cumulative maximum over the earlier rows of the series in arrival (log)
order, on top of the state left by earlier batches and ticks. The result does not depend on how
the log is cut into micro-batches, so a replay after a crash with other batch boundaries finds
the same late rows and closes the same windows with the same contents.

:class:`KeyIndex` gives series and fields dense integer ids (in order of first appearance, so they
too are independent of batch boundaries) through a persistent vectorised hash table; operators keep
their state keyed by those ids (``kid = sid << FIELD_BITS | fid``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from sensorium import jit
from sensorium.jit import observe_rows
from sensorium.keyindex import Keys, Remap, distinct

MIN = int(np.iinfo(np.int64).min)
MAX = int(np.iinfo(np.int64).max)
FIELD_BITS = 20  # key id = series id << FIELD_BITS | field id
_FEW = 8
_SLOT = np.dtype([("k", "<u8"), ("i", "<i8")])


def sub_sat(x: np.ndarray, d: int) -> np.ndarray:
    """x - d for d >= 0, saturating at the smallest int64 (the "nothing seen" sentinel)."""
    return np.maximum(x, MIN + d) - d


def add_sat(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """x + d for d >= 0, saturating at the largest int64."""
    return np.where(x > MAX - d, MAX, x + d)


class _Dictionary:
    """Strings -> dense ids in order of first appearance, looked up vectorised.

    Polars' 64-bit string hash indexes a numpy open-addressing table (linear probing, load <= 1/4)
    that lives across batches: a join would rebuild a hash table of every known string for every
    batch, which costs more than the batch itself at 100 k series. A second, independent 64-bit
    hash confirms every hit; should the first hash ever collide, the dictionary falls back to exact
    joins for good (correct, slower)."""

    def __init__(self, name: str, names: pl.Series | None = None) -> None:
        self.name = name
        self.names = pl.Series(name, [], pl.Utf8) if names is None else names.alias(name)
        self._exact = False
        self._h1, self._h2 = self._hash(self.names)
        self._rebuild()

    def __len__(self) -> int:
        return self.names.len()

    @staticmethod
    def _hash(col: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        return col.hash(0x51A7).to_numpy(), col.hash(0x2B0E_C0DE).to_numpy()

    def _rebuild(self) -> None:
        cap = 16
        while cap < 4 * len(self._h1):
            cap *= 2
        self._table = np.zeros(cap, dtype=_SLOT)  # (first hash, id); id -1: a free slot
        self._table["i"] = -1
        if not distinct(self._h1):
            self._exact = True
        self._place(np.arange(len(self._h1)))

    def _place(self, ids: np.ndarray) -> None:
        mask = self._table.size - 1
        slot = (self._h1[ids] & np.uint64(mask)).astype(np.int64)
        while ids.size:
            free = self._table["i"][slot] < 0
            taken, first = np.unique(slot[free], return_index=True)
            win = np.flatnonzero(free)[first]
            self._table["k"][taken] = self._h1[ids[win]]
            self._table["i"][taken] = ids[win]
            rest = np.ones(ids.size, dtype=bool)
            rest[win] = False
            ids, slot = ids[rest], (slot[rest] + 1) & mask

    def _lookup(self, h: np.ndarray) -> np.ndarray:
        mask = self._table.size - 1
        slot = (h & np.uint64(mask)).astype(np.int64)
        found = np.take(self._table, slot)  # one random access per row: key and id side by side
        out = found["i"]
        hit = found["k"] == h
        todo = np.flatnonzero(~hit & (out >= 0))  # the slot holds another string: probe on
        out[~hit] = -1
        while todo.size:
            slot[todo] = (slot[todo] + 1) & mask
            found = np.take(self._table, slot[todo])
            hit = (found["k"] == h[todo]) & (found["i"] >= 0)
            out[todo[hit]] = found["i"][hit]
            todo = todo[~hit & (found["i"] >= 0)]
        return out

    def _join(self, col: pl.Series) -> np.ndarray:
        table = self.names.to_frame().with_row_index("id")
        ids = col.to_frame(self.name).join(table, on=self.name, how="left", maintain_order="left")["id"]
        if ids.null_count():
            self._append(col.filter(ids.is_null()).unique(maintain_order=True))
            return self._join(col)
        return ids.cast(pl.Int64).to_numpy()

    def _append(self, new: pl.Series) -> None:
        n = len(self)
        self.names = pl.concat([self.names, new.alias(self.name)], rechunk=True)
        h1, h2 = self._hash(new)
        self._h1, self._h2 = np.concatenate([self._h1, h1]), np.concatenate([self._h2, h2])
        if self._exact:
            return
        if 4 * len(self._h1) > self._table.size or not distinct(h1):
            self._rebuild()
        else:
            self._place(np.arange(n, len(self._h1)))

    def ids(self, col: pl.Series) -> np.ndarray:
        """Id of every string of ``col``; unseen strings get the next ids."""
        if col.dtype != pl.Utf8:
            col = col.cast(pl.Utf8)
        if 0 < len(self) <= _FEW:  # a few names (fields): string comparisons beat hashing
            expr = pl.lit(-1, dtype=pl.Int64)
            for i, name in enumerate(self.names):
                expr = pl.when(pl.col(self.name) == name).then(pl.lit(i, dtype=pl.Int64)).otherwise(expr)
            few = col.to_frame(self.name).select(expr).to_series().to_numpy()
            if (few >= 0).all():
                return few
        if self._exact:
            return self._join(col)
        h1, h2 = self._hash(col)
        ids = self._lookup(h1)
        miss = ids < 0
        if miss.any():
            self._append(col.filter(pl.Series(miss)).unique(maintain_order=True))
            if self._exact:
                return self._join(col)
            ids[miss] = self._lookup(h1[miss])
        if not (np.take(self._h2, ids) == h2).all():  # a collision of the first hash
            self._exact = True
            return self._join(col)
        return ids


class KeyIndex:
    """Dense ids: ``sid`` per series, ``fid`` per field, ``kid = sid << FIELD_BITS | fid``."""

    def __init__(self) -> None:
        self.series = _Dictionary("series")
        self.fields = _Dictionary("field")
        self._remap = (Remap(), Remap())

    def __len__(self) -> int:
        return len(self.series)

    def encode(self, values: pl.DataFrame, keys: Keys | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(sid, kid) of every row; unseen series and fields get the next ids. ``keys``: the
        rows' ids in the runner's indexes (no strings hashed then)."""
        if keys is not None:
            rs, rf = self._remap
            rs.bind(keys.series)  # (another source: an empty cache, every row misses)
            rf.bind(keys.fields)
            # one compiled pass through the cached ids; names new to them are resolved from the
            # rows that missed (in order of first sight, as over all rows), then a second pass
            sid, kid, missed = jit.remap_keys(rs.table, rf.table, keys.sid, keys.fid, FIELD_BITS)
            if missed:
                rows = np.flatnonzero(kid < 0)
                rs.ids(keys.sid[rows], keys.series, self.series.ids)
                rf.ids(keys.fid[rows], keys.fields, self.fields.ids)
                if len(self.fields) > 1 << FIELD_BITS:
                    raise ValueError(f"more than {1 << FIELD_BITS} distinct field names in one stream step")
                sid, kid, missed = jit.remap_keys(rs.table, rf.table, keys.sid, keys.fid, FIELD_BITS)
                assert not missed, "a name the cache resolved is missing from it"
            return sid, kid
        else:
            sid = self.series.ids(values.get_column("series"))
            fid = self.fields.ids(values.get_column("field"))
        if len(self.fields) > 1 << FIELD_BITS:
            raise ValueError(f"more than {1 << FIELD_BITS} distinct field names in one stream step")
        return sid, (sid << FIELD_BITS) | fid

    def names(self, kid: np.ndarray) -> tuple[pl.Series, pl.Series]:
        """(series, field) names of key ids."""
        s = self.series.names.gather(kid >> FIELD_BITS)
        f = self.fields.names.gather(kid & ((1 << FIELD_BITS) - 1))
        return s.alias("series"), f.alias("field")

    def state(self) -> dict[str, Any]:
        return {"series": self.series.names, "fields": self.fields.names}

    def restore(self, state: dict[str, Any]) -> None:
        self.series = _Dictionary("series", state["series"])
        self.fields = _Dictionary("field", state["fields"])
        self._remap = (Remap(), Remap())


class Watermarks:
    """Per-series watermark state, indexed by series id."""

    def __init__(self, lateness_ns: int, idle_timeout_ns: int) -> None:
        if lateness_ns < 0:
            raise ValueError(f"allowed lateness must be >= 0, got {lateness_ns}")
        if idle_timeout_ns <= 0:
            raise ValueError(f"idle timeout must be > 0, got {idle_timeout_ns}")
        self.lateness_ns = int(lateness_ns)
        self.idle_timeout_ns = int(idle_timeout_ns)
        self.max_time = np.empty(0, dtype=np.int64)
        self.wm = np.empty(0, dtype=np.int64)
        self.last_arrival = np.empty(0, dtype=np.int64)
        self.now: int | None = None
        self.last_ids = np.empty(0, dtype=np.int64)  # sorted series ids of the last observe()

    def grow(self, n: int) -> None:
        """Make room for series ids below ``n``."""
        extra = n - self.wm.size
        if extra > 0:
            fill = np.full(extra, MIN, dtype=np.int64)
            self.max_time = np.concatenate([self.max_time, fill])
            self.wm = np.concatenate([self.wm, fill])
            self.last_arrival = np.concatenate([self.last_arrival, fill])

    def observe(self, sid: np.ndarray, time: np.ndarray, arrival: np.ndarray | None) -> np.ndarray | None:
        """Take a batch (arrival order) and update the state. Returns the watermark of each row's
        series just before that row, or None when no row is behind it (the common case)."""
        n = sid.size
        if n == 0:
            self.last_ids = np.empty(0, dtype=np.int64)
            return None
        self.grow(int(sid.max()) + 1)
        sid = np.ascontiguousarray(sid, dtype=np.int64)
        time = np.ascontiguousarray(time, dtype=np.int64)
        seen = np.zeros(self.wm.size, dtype=bool)
        before = np.empty(n, dtype=np.int64)
        # one compiled pass in arrival order: each row's watermark just before it, running maxima
        late = observe_rows(sid, time, self.max_time, self.wm, self.lateness_ns, seen, before)
        ids = self.last_ids = np.flatnonzero(seen)
        self.wm[ids] = np.maximum(self.wm[ids], sub_sat(self.max_time[ids], self.lateness_ns))
        if arrival is not None:
            last = np.full(self.wm.size, MIN, dtype=np.int64)
            np.maximum.at(last, sid, arrival)
            self.last_arrival[ids] = np.maximum(self.last_arrival[ids], last[ids])
        elif self.now is not None:
            self.last_arrival[ids] = np.maximum(self.last_arrival[ids], self.now)
        return before if late else None

    def tick(self, now_ns: int) -> None:
        """Advance the watermarks of series silent for ``idle_timeout`` of processing time."""
        now = int(now_ns) if self.now is None else max(self.now, int(now_ns))
        self.now = now
        seen = self.max_time != MIN
        unknown = seen & (self.last_arrival == MIN)
        self.last_arrival[unknown] = now  # no arrival times: the idle clock starts at the first tick
        last = np.where(seen, np.minimum(self.last_arrival, now), now)
        silent = now - last
        idle = seen & (silent >= self.idle_timeout_ns)
        if idle.any():
            advanced = add_sat(sub_sat(self.max_time[idle], self.lateness_ns), silent[idle])
            self.wm[idle] = np.maximum(self.wm[idle], advanced)

    def close_all(self) -> None:
        """End of stream: every watermark to +infinity (every open window closes)."""
        self.wm[self.max_time != MIN] = MAX

    def frame(self, keys: KeyIndex) -> pl.DataFrame:
        """series, max_time, watermark, last_arrival (null where unknown)."""
        n = self.wm.size

        def col(a: np.ndarray, name: str) -> pl.Series:
            return pl.Series(name, a[:n]).replace(MIN, None)

        return pl.DataFrame(
            [keys.series.names.head(n), col(self.max_time, "max_time"),
             col(self.wm, "watermark"), col(self.last_arrival, "last_arrival")]
        )

    def state(self) -> dict[str, Any]:
        return {
            "max_time": self.max_time.copy(),
            "wm": self.wm.copy(),
            "last_arrival": self.last_arrival.copy(),
            "now": self.now,
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.max_time = np.array(state["max_time"], dtype=np.int64)
        self.wm = np.array(state["wm"], dtype=np.int64)
        self.last_arrival = np.array(state["last_arrival"], dtype=np.int64)
        self.now = state["now"]
