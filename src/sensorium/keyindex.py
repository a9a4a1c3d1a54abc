"""Dense ids for names and (series, field) keys, looked up a whole column at a time, and the
array helpers the stateful stages share (stream rolling statistics, rules, quality checks).

Below every stage in the import order: it needs only NumPy, Polars and the compiled kernels
(:mod:`sensorium.jit`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from sensorium.jit import counting_applies, counting_argsort, pair_counts, pair_scatter

_SEED = 0x5E751


class HashIndex:
    """64-bit hash → dense id (in order of insertion), looked up a whole array at a time.

    Each hash sits in its home slot (low bits) of a table of numpy arrays at most a quarter
    full, or, when another holds that slot, in a small sorted overflow array; a lookup is a few
    vectorised gathers and compares, plus a binary search for the overflow's rows. ``spread``:
    slots per hash (4: a quarter full; fewer: smaller, more of them in the overflow)."""

    def __init__(self, spread: int = 4) -> None:
        self._spread = spread
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._slot_id = np.full(1024, -1, dtype=np.int32)
        self._slot_h = np.zeros(1024, dtype=np.uint64)
        self._over_h = np.zeros(0, dtype=np.uint64)  # hashes not in their home slot, by hash
        self._over_id = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._hashes)

    def ids_of_hashes(self, h: np.ndarray) -> np.ndarray:
        """Ids of hashes (-1: unknown)."""
        if not len(self._hashes) or not len(h):
            return np.full(len(h), -1, dtype=np.int32)
        h = np.ascontiguousarray(h, dtype=np.uint64)
        slot = h.view(np.int64) & (len(self._slot_id) - 1)
        ids = self._slot_id[slot]
        # same hash in the home slot: that one, or -1 for an empty slot (a slot never empties,
        # so a hash whose home slot is empty is unknown, not in the overflow)
        hit = self._slot_h[slot] == h
        if hit.all():
            return ids
        miss = np.flatnonzero(~hit)
        ids[miss] = -1
        if len(self._over_h):
            hm = h[miss]
            at = np.minimum(np.searchsorted(self._over_h, hm), len(self._over_h) - 1)
            found = self._over_h[at] == hm
            ids[miss[found]] = self._over_id[at[found]]
        return ids

    def add_hashes(self, h: np.ndarray) -> np.ndarray:
        """Add hashes (distinct, none known yet), in order; their ids."""
        start = len(self._hashes)
        self._hashes = np.concatenate([self._hashes, np.asarray(h, dtype=np.uint64)])
        self._build(0 if self._spread * len(self._hashes) > len(self._slot_id) else start)
        return np.arange(start, len(self._hashes), dtype=np.int32)

    def _build(self, start: int) -> None:
        """Insert hashes from ``start`` on (from 0: a fresh table, at most a quarter full)."""
        if start == 0:
            size = 1024
            while size < self._spread * len(self._hashes):
                size *= 2
            self._slot_id = np.full(size, -1, dtype=np.int32)
            self._slot_h = np.zeros(size, dtype=np.uint64)
            self._over_h = np.zeros(0, dtype=np.uint64)
            self._over_id = np.zeros(0, dtype=np.int32)
        hs = self._hashes[start:]
        ids = np.arange(start, len(self._hashes), dtype=np.int32)
        slot = hs.view(np.int64) & (len(self._slot_id) - 1)
        home = np.zeros(len(hs), dtype=bool)  # the first new hash of each free home slot
        home[np.unique(slot, return_index=True)[1]] = True
        home &= self._slot_id[slot] < 0
        self._slot_id[slot[home]] = ids[home]
        self._slot_h[slot[home]] = hs[home]
        if not home.all():
            over_h = np.concatenate([self._over_h, hs[~home]])
            over_id = np.concatenate([self._over_id, ids[~home]])
            by = np.argsort(over_h)
            self._over_h, self._over_id = over_h[by], over_id[by]


class NameIndex(HashIndex):
    """name → dense id (in order of first sight), looked up a whole column at a time.

    Names are hashed to 64 bits (polars' string hash, seeded) and kept in a :class:`HashIndex`
    (no string join, no per-call table build). A 64-bit collision between two names is detected
    when the second is added and resolved by rehashing everything with another seed.
    """

    def __init__(self, seed: int = _SEED) -> None:
        super().__init__()
        self.seed = seed
        self._column = pl.Series("name", [], dtype=pl.Utf8)  # the names by id
        self._list: list[str] | None = None  # the same as a list, made for readers of ``names``

    def __len__(self) -> int:
        return self._column.len()

    @property
    def names(self) -> list[str]:
        """Every name by id, as a list: made on the first read and kept up to date from then
        on (an index read this way holds its names twice; :meth:`column` does not)."""
        if self._list is None:
            self._list = self._column.to_list()
        return self._list

    def hash(self, col: pl.Series) -> np.ndarray:
        return col.hash(seed=self.seed).to_numpy()

    def column(self) -> pl.Series:
        """Every name by id, as a Utf8 column: a gather by ids gives the names of many rows."""
        if self._column.n_chunks() > 16:  # names added a few at a time: joined now and then
            self._column = self._column.rechunk()
        return self._column

    def lookup(self, col: pl.Series) -> np.ndarray:
        """Ids of a column's names (-1: unknown)."""
        return self.ids_of_hashes(self.hash(col))

    def ids(self, col: pl.Series) -> np.ndarray:
        """Ids of a column's names, adding the names not seen yet."""
        h = self.hash(col)
        ids = self.ids_of_hashes(h)
        missing = ids < 0
        if missing.any():
            seed = self.seed
            first = first_unknown(h, ids)
            self.add(col.gather(first).to_list(), h[first])  # hashed once (each a Polars call)
            ids = self.ids_of_hashes(h) if self.seed == seed else self.lookup(col)
        return ids

    def add(self, names: list[str], hashes: np.ndarray | None = None) -> np.ndarray:
        """Add names not yet known (distinct), in order; their ids. ``hashes``: the names'
        hashes with this index's seed, when the caller has them."""
        start = len(self)
        more = pl.Series("name", names, dtype=pl.Utf8)
        new = self.hash(more) if hashes is None else hashes
        clash = not distinct(new) or bool((self.ids_of_hashes(new) >= 0).any())
        self._column = pl.concat([self._column, more], rechunk=False) if start else more
        if self._list is not None:
            self._list += names
        if not clash:
            self.add_hashes(new)
        else:
            while True:  # a 64-bit collision: rehash everything with another seed
                self.seed += 1
                self._hashes = self.hash(self.column())
                if distinct(self._hashes):
                    break
            self._build(0)
        return np.arange(start, len(self), dtype=np.int32)


def unique(a: np.ndarray, presorted: bool = False) -> np.ndarray:
    """``np.unique`` of a 1-D integer array, by sorting: NumPy 2.3+ finds the distinct values of a
    plain ``np.unique`` call by hashing, ~13x slower on 500 k random 64-bit keys here (331 vs 25 ms).
    ``presorted``: ``a`` is non-decreasing already (no sort)."""
    s = a if presorted else np.sort(a)
    if s.size < 2:
        return s
    keep = np.empty(s.size, dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


#: Below this many values :func:`first_occurrences` sorts with NumPy; above, Polars hashes.
FIRST_SORT_MAX = 4096


def first_occurrences(a: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each distinct value of a 1-D array, in order. A few
    values (the names a step usually brings): a NumPy stable sort, since a Polars call's fixed
    cost (~0.1-0.2 ms) is then the whole price; many (a first step, a restore): Polars' hashing
    ``arg_unique``, where a comparison sort of millions would cost ~10x more."""
    if a.size < 2:
        return np.arange(a.size)
    if a.size > FIRST_SORT_MAX:
        return np.sort(pl.Series(a).arg_unique().to_numpy())
    order = np.argsort(a, kind="stable")
    s = a[order]
    first = np.empty(s.size, dtype=bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    return np.sort(order[first])


def distinct(a: np.ndarray) -> bool:
    """Whether the values of a 1-D integer array are all different (see :func:`unique`)."""
    s = np.sort(a)
    return not bool((s[1:] == s[:-1]).any())


def unknown_names(col: pl.Series, h: np.ndarray, ids: np.ndarray, rows: np.ndarray | None = None) -> list[str]:
    """The distinct names without an id (``ids`` -1; ``h``: the names' hashes) in order of first
    sight; ``h`` and ``ids`` are of the rows ``rows`` of ``col`` (default: every row)."""
    first = first_unknown(h, ids)
    return col.gather(first if rows is None else rows[first]).to_list()


def first_unknown(h: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of the first row of each distinct hash without an id (``ids`` -1), in order."""
    unknown = np.flatnonzero(ids < 0)
    return unknown[first_occurrences(h[unknown])]


class Remap:
    """Ids in a *source* :class:`NameIndex` → ids in a stage's own dictionary, cached.

    The stream frames each batch once and names its rows' series and fields by ids in the
    runner's indexes (:class:`Keys`); a stage turns those into its own ids (dense, in its order
    of first sight, checkpointed with it) with one array gather instead of hashing millions of
    strings. Names the cache does not know yet are resolved once, by name, in order of first
    sight, so the stage's ids are exactly those a lookup by name would give. The source only
    grows, so a cached id never changes; another source (a new runner) starts a fresh cache."""

    __slots__ = ("source", "table")

    def __init__(self) -> None:
        self.source: NameIndex | None = None
        self.table = np.zeros(0, dtype=np.int32)

    def bind(self, source: NameIndex) -> None:
        """Map ids of ``source`` from now on: another source than before starts a fresh cache."""
        if self.source is not source:
            self.source, self.table = source, np.zeros(0, dtype=np.int32)

    def ids(
        self, g: np.ndarray, source: NameIndex, resolve: Callable[[pl.Series], np.ndarray],
        seen_at: np.ndarray | None = None,
    ) -> np.ndarray:
        """Own ids of the source ids ``g``; ``resolve(names)`` gives (adding where new) the own
        ids of names not cached yet, distinct, in order of first sight: the order of ``g``, or,
        with ``seen_at`` (one distinct rank per element, e.g. the row where a pair was first
        seen), the order of ``seen_at`` — only the elements not cached are sorted."""
        self.bind(source)
        n = len(source)
        if self.table.size < n:
            self.table = np.concatenate([self.table, np.full(n - self.table.size, -1, dtype=np.int32)])
        out = self.table[g]
        miss = out < 0
        if miss.any():
            at = np.flatnonzero(miss)
            if seen_at is not None:
                at = at[np.argsort(seen_at[at], kind="stable")]
            missing = g[at]
            new = missing[first_occurrences(missing)]
            self.table[new] = resolve(source.column().gather(new))
            out = self.table[g]
        return out


@dataclass(frozen=True, slots=True)
class Keys:
    """The series and field of every row of a values frame, as ids in the runner's indexes
    (``series``, ``fields``): made once per batch by the framing, read by every stage."""

    sid: np.ndarray  # int32, one per row
    fid: np.ndarray  # int32, one per row
    series: NameIndex
    fields: NameIndex

    def __len__(self) -> int:
        return len(self.sid)

    def take(self, rows: np.ndarray) -> Keys:
        """Keys of the rows ``rows`` (indices or a boolean mask)."""
        return Keys(self.sid[rows], self.fid[rows], self.series, self.fields)

    @staticmethod
    def concat(parts: list[Keys]) -> Keys:
        """Keys of frames stacked in this order (all of the same indexes)."""
        first = parts[0]
        if len(parts) == 1:
            return first
        return Keys(
            np.concatenate([p.sid for p in parts]), np.concatenate([p.fid for p in parts]), first.series, first.fields
        )


class PairGroups:
    """The rows of a :class:`Keys` grouped by their (field, series) pair without sorting them: one
    compiled pass counts the rows of every pair (and finds its first row), a stage decides at the
    level of pairs — a few thousand, not millions of rows — which to keep and in what order, and
    one more pass places the rows (each pair's rows in row order). A stage that maps the runner's
    ids to its own does so per pair, not per row.

    :func:`pair_groups` makes one where a step brings many rows per pair (a backlog's steps:
    :data:`PAIR_ROWS` rows or more per possible pair, the span of the field ids present times that
    of the series ids); in a small step each pair has a row or two, and sorting the rows costs
    less than mapping as many pairs plus two table passes."""

    __slots__ = ("code", "count", "f0", "first", "keys", "ns", "s0", "_table")

    def __init__(self, keys: Keys, s0: int, f0: int, ns: int, counts: np.ndarray, first: np.ndarray) -> None:
        self.keys = keys
        self.s0, self.f0, self.ns = s0, f0, ns
        self.code = np.flatnonzero(counts)  # the pairs present: (fid - f0) * ns + sid - s0, ascending
        self.count = counts[self.code]
        self.first = first[self.code]
        self._table: np.ndarray | None = counts  # reused for the offsets of :meth:`rows`

    def __len__(self) -> int:
        return len(self.code)

    @property
    def sid(self) -> np.ndarray:
        """Each pair's series id (the runner's)."""
        return (self.code % self.ns + self.s0).astype(np.int32)

    @property
    def fid(self) -> np.ndarray:
        """Each pair's field id (the runner's)."""
        return (self.code // self.ns + self.f0).astype(np.int32)

    def rows(self, pick: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, starts)``: the rows of the pairs ``pick`` (positions in :attr:`code`, in the
        order wanted; others left out), pair after pair, each pair's rows in row order, and where
        each pair's rows start. Once per instance (it uses up the count table)."""
        table, self._table = self._table, None
        if table is None:
            raise RuntimeError("PairGroups.rows: once per grouping")
        cnt = self.count[pick]
        starts = np.cumsum(cnt) - cnt
        table.fill(-1)
        table[self.code[pick]] = starts
        k = self.keys
        return pair_scatter(k.sid, k.fid, self.s0, self.f0, self.ns, table, int(cnt.sum())), starts


#: :class:`PairGroups` are made for keys with at least this many rows per possible pair (fewer:
#: the stages sort their rows)
PAIR_ROWS: float = 4


def pair_groups(keys: Keys) -> PairGroups | None:
    """:class:`PairGroups` of ``keys``, or None when they have fewer than :data:`PAIR_ROWS` rows
    per possible pair (the caller sorts instead)."""
    if not len(keys):
        return None
    got = pair_counts(keys.sid, keys.fid, int(len(keys) / PAIR_ROWS))
    return None if got is None else PairGroups(keys, *got)


def keys_of(values: pl.DataFrame, series: NameIndex, fields: NameIndex) -> Keys:
    """Keys of a values frame, by name (frames the framing did not make, e.g. detector scores)."""
    return Keys(
        series.ids(values.get_column("series")).astype(np.int32, copy=False),
        fields.ids(values.get_column("field")).astype(np.int32, copy=False),
        series,
        fields,
    )


class KeyIndex:
    """(series, field) → dense key id: series id and field id, then a [series, field] table."""

    def __init__(self) -> None:
        self.series_names = NameIndex(_SEED)
        self.field_names_ = NameIndex(_SEED + 7)
        self.table = np.full((0, 0), -1, dtype=np.int32)
        self.key_sid = np.zeros(0, dtype=np.int32)
        self.field_id = np.zeros(0, dtype=np.int32)  # per key: field id
        self._remap = (Remap(), Remap())

    def __len__(self) -> int:
        return len(self.key_sid)

    @property
    def series(self) -> list[str]:
        return self.series_names.column().gather(self.key_sid).to_list()

    @property
    def fields(self) -> list[str]:
        return self.field_names_.column().gather(self.field_id).to_list()

    @property
    def field_names(self) -> list[str]:
        return self.field_names_.names

    def ids(
        self, series: pl.Series | None, field: pl.Series | None, keys: Keys | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Series ids and field ids of every row (names not seen yet are added); from ``keys``
        (the rows' ids in the runner's indexes) when given, else from the names."""
        if keys is not None:
            rs, rf = self._remap
            return (
                rs.ids(keys.sid, keys.series, self.series_names.ids),
                rf.ids(keys.fid, keys.fields, self.field_names_.ids),
            )
        assert series is not None and field is not None, "names or keys"
        return self.series_names.ids(series), self.field_names_.ids(field)

    def pair_keys(self, pg: PairGroups) -> tuple[np.ndarray, np.ndarray]:
        """``(fid, kid)``: the own field id of every row of ``pg.keys`` and the key id of every
        pair of ``pg`` — what :meth:`ids` and :meth:`keys` give by rows (new names and keys get
        ids in order of first sight), with the series mapped per pair, not per row."""
        rs, rf = self._remap
        fid = rf.ids(pg.keys.fid, pg.keys.fields, self.field_names_.ids)
        sid = rs.ids(pg.sid, pg.keys.series, self.series_names.ids, seen_at=pg.first)
        return fid, self.keys(sid, fid[pg.first], pg.first)

    def keys(self, sid: np.ndarray, fid: np.ndarray, first: np.ndarray | None = None) -> np.ndarray:
        """Key ids of distinct (series id, field id) pairs. New pairs get ids in the order of
        ``first`` (where each pair is first seen), or as given."""
        ns, nf = len(self.series_names), len(self.field_names_)
        if self.table.shape[0] < ns or self.table.shape[1] < nf:
            grown = np.full((max(ns, 2 * self.table.shape[0], 64), max(nf, self.table.shape[1] + 8)), -1, dtype=np.int32)
            grown[: self.table.shape[0], : self.table.shape[1]] = self.table
            self.table = grown
        kid = self.table[sid, fid]
        new = np.flatnonzero(kid < 0)
        if len(new):
            if first is not None:
                new = new[np.argsort(first[new], kind="stable")]  # in order of first sight
            ps, pf = sid[new], fid[new]
            start = len(self.key_sid)
            kid[new] = self.table[ps, pf] = np.arange(start, start + len(new), dtype=np.int32)
            self.key_sid = np.concatenate([self.key_sid, ps])
            self.field_id = np.concatenate([self.field_id, pf])
        return kid

    def add(self, series: list[str] | pl.Series, fields: list[str] | pl.Series) -> None:
        """Add keys in this order (restoring a state)."""
        self.keys(*self.ids(pl.Series(series, dtype=pl.Utf8), pl.Series(fields, dtype=pl.Utf8)))


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integer keys: a compiled counting sort while the key range
    is not much larger than the row count, else LSD radix passes over 16-bit digits (numpy sorts
    16-bit keys with a radix sort); both much faster than a comparison sort."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.intp)
    top = int(keys.max())
    if counting_applies(len(keys), top + 1):
        return counting_argsort(keys, 0, top)
    if top < (1 << 16):
        return np.argsort(keys.astype(np.uint16), kind="stable")
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    shift = 16
    while top >> shift:
        digit = ((keys[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(digit, kind="stable")]
        shift += 16
    return order


def grow(a: np.ndarray, n: int, fill: Any) -> np.ndarray:
    """``a`` with at least ``n`` rows (new rows ``fill``), doubling, so appends are amortised."""
    if a.shape[0] >= n:
        return a
    out = np.full((max(n, 2 * a.shape[0], 64), *a.shape[1:]), fill, dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


#: chunks a frame grown by :func:`append_rows` may have before they are merged
APPEND_CHUNKS = 32


def append_rows(base: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """``base`` with the rows of ``new`` after it (a column one of them lacks: null there), for a
    table that grows a few rows at a time (a new series in a step). ``new`` is cast to ``base``'s
    columns and stacked as a chunk: no copy of ``base`` (a diagonal concatenation aligns both
    frames, ~0.6 ms at 10 k rows, each time); the chunks are merged once there are
    :data:`APPEND_CHUNKS` (each row copied O(1) times amortised, and reads do not slow down
    with the chunk count). A column ``base`` lacks, or holds only nulls of, takes the diagonal
    concatenation (which finds the common type)."""
    if not new.height:
        return base
    widen = any(c not in base.schema or (base.schema[c] == pl.Null and t != pl.Null) for c, t in new.schema.items())
    if widen or not base.width:
        return pl.concat([base, new], how="diagonal_relaxed").rechunk()
    aligned = new.select(
        [pl.col(c).cast(t) if c in new.schema else pl.lit(None, dtype=t).alias(c) for c, t in base.schema.items()]
    )
    out = base.vstack(aligned)
    return out.rechunk() if out.n_chunks() > APPEND_CHUNKS else out
