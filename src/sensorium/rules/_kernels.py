"""Vectorised rule evaluation over one batch.

The engine hands every kernel a :class:`Segments` view: the batch's rows of the rule's keys
(series, field), grouped by key (contiguous), each group in arrival order with strictly increasing
event times. Per-key state carried from earlier batches lives in numpy arrays indexed by key id;
within a batch every sequential recurrence is a segmented forward fill (``np.maximum.accumulate``
over row indices) seeded with the carried value at each group start. The result is the same as a
row-by-row loop, for any cut of the log into batches.

A kernel returns, per row, the alert severity rank it implies (0: no alert), the index of the
level that gives it (-1: none) and the signal it tested (the value, or the rate for rate rules).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sensorium.rules._registry import grow
from sensorium.rules.model import (
    SEVERITY_RANK,
    CountRule,
    RateRule,
    SequenceRule,
    ThresholdRule,
    _LevelRule,
)

#: "No time yet". Far enough below any real time that ``t - NONE`` neither overflows nor passes
#: a window test.
NONE = -(1 << 62)
NEVER = np.iinfo(np.int64).max


class Segments:
    """Rows of a batch grouped by key; see the module docstring.

    ``si``/``ei`` index each group's first/last row and ``gk`` is each group's key id, so state
    is read and written once per group (``state[gk]``, ``state[gk] = x[ei]``).
    """

    __slots__ = ("kid", "t", "v", "row", "si", "ei", "gk", "prev_t", "prev_v", "_grp")

    def __init__(
        self,
        kid: np.ndarray,
        t: np.ndarray,
        v: np.ndarray,
        row: np.ndarray,
        si: np.ndarray | None = None,
        prev_t: np.ndarray | None = None,
        prev_v: np.ndarray | None = None,
    ) -> None:
        self.kid = kid  # int32 key id
        self.t = t  # int64 event time, strictly increasing within a group
        self.v = v  # float64 value
        self.row = row  # int64 row of the values frame (arrival order)
        self.si = group_starts(kid) if si is None else si
        self.ei = np.empty_like(self.si)
        if len(self.si):
            self.ei[:-1] = self.si[1:] - 1
            self.ei[-1] = len(kid) - 1
        self.gk = kid[self.si]
        self.prev_t = prev_t  # previous accepted point of the key (NONE: none)
        self.prev_v = prev_v
        self._grp: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.kid)

    @property
    def group(self) -> np.ndarray:
        """Group number of every row."""
        if self._grp is None:
            flags = np.zeros(len(self.kid), dtype=np.int64)
            flags[self.si] = 1
            self._grp = np.cumsum(flags) - 1
        return self._grp

    def slice(self, lo: int, hi: int) -> Segments:
        """Sub-view of the rows ``lo:hi`` (which start and end at group boundaries); no copy."""
        a, b = np.searchsorted(self.si, [lo, hi])
        return Segments(
            self.kid[lo:hi],
            self.t[lo:hi],
            self.v[lo:hi],
            self.row[lo:hi],
            self.si[a:b] - lo,
            None if self.prev_t is None else self.prev_t[lo:hi],
            None if self.prev_v is None else self.prev_v[lo:hi],
        )

    def take(self, idx: np.ndarray) -> Segments:
        """Sub-view of whole groups (``idx`` selects every row of the groups it touches)."""
        return Segments(
            self.kid[idx],
            self.t[idx],
            self.v[idx],
            self.row[idx],
            None,
            None if self.prev_t is None else self.prev_t[idx],
            None if self.prev_v is None else self.prev_v[idx],
        )


def group_starts(kid: np.ndarray) -> np.ndarray:
    """Indices of the first row of each run of equal keys."""
    if len(kid) == 0:
        return np.zeros(0, dtype=np.intp)
    return np.flatnonzero(np.concatenate([[True], kid[1:] != kid[:-1]]))


def ffill(vals: np.ndarray, known: np.ndarray, s: Segments, carry: np.ndarray) -> np.ndarray:
    """Segmented forward fill: ``vals`` where ``known``, else the last known value of the group,
    else ``carry`` (the value carried into each group, one per group)."""
    base = vals.copy()
    base[s.si] = np.where(known[s.si], vals[s.si], carry)
    mark = known.copy()
    mark[s.si] = True
    idx = np.where(mark, np.arange(len(vals)), 0)
    np.maximum.accumulate(idx, out=idx)
    return base[idx]


def shift(x: np.ndarray, s: Segments, carry: np.ndarray) -> np.ndarray:
    """Previous row's value within the group; ``carry`` (one per group) at group starts."""
    out = np.empty_like(x)
    if len(x):
        out[1:] = x[:-1]
        out[s.si] = carry
    return out


def prev_max(s: Segments, carry: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Per row, the largest of the carried time (one per group) and the earlier times of its
    group. Exact for the groups holding a row that is not after its predecessor (``~ok``); the
    other groups are in order, so there the previous row's time is the largest."""
    out = shift(s.t, s, carry)
    bad = np.zeros(len(s.si), dtype=bool)
    bad[s.group[~ok]] = True
    rows = np.flatnonzero(bad[s.group])  # every row of those groups, contiguous per group
    sub = Segments(s.kid[rows], s.t[rows], s.v[rows], s.row[rows])
    cm = sub.t.copy()
    cm[sub.si] = np.maximum(cm[sub.si], carry[bad])
    pos = np.arange(len(rows)) - sub.si[sub.group]
    step, longest = 1, int(pos.max()) + 1
    while step < longest:  # Hillis-Steele running max within groups
        nxt = cm.copy()
        later = pos[step:] >= step
        nxt[step:] = np.where(later, np.maximum(cm[step:], cm[:-step]), cm[step:])
        cm = nxt
        step *= 2
    out[rows] = shift(cm, sub, carry[bad])
    return out


class Kernel:
    """Base: capacity management and the carried severity per key.

    ``per_key`` names the arrays indexed by key id (grown with the keys, saved up to the number of
    keys); ``other`` names further state arrays saved whole.
    """

    per_key: tuple[str, ...] = ("sev",)
    other: tuple[str, ...] = ()

    def __init__(self, rule: Any) -> None:
        self.rule = rule
        self.sev = np.zeros(0, dtype=np.int8)

    def grow(self, n: int) -> None:
        self.sev = grow(self.sev, n, 0)

    def eval(self, s: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def state(self, n_keys: int) -> dict[str, np.ndarray]:
        out = {name: getattr(self, name)[:n_keys].copy() for name in self.per_key}
        out.update({name: getattr(self, name).copy() for name in self.other})
        return out

    def restore(self, st: dict[str, np.ndarray], n_keys: int) -> None:
        """Load :meth:`state` into a kernel already grown to ``n_keys``."""
        for name in self.per_key:
            getattr(self, name)[:n_keys] = st[name]
        for name in self.other:
            setattr(self, name, st[name].copy())


class LevelKernel(Kernel):
    """Threshold (and, with ``signal`` overridden, rate) levels with hysteresis and ``for``."""

    rule: _LevelRule
    per_key = ("sev", "any_active")

    def __init__(self, rule: _LevelRule) -> None:
        super().__init__(rule)
        self.levels = rule.levels()
        n = len(self.levels)
        self.rank = np.array([SEVERITY_RANK[name] for _, name, _ in self.levels], dtype=np.int8)
        # per level (rows), per key (columns): level reached; time it was reached (for `for`)
        self.active = np.zeros((n, 0), dtype=bool)
        self.start = np.zeros((n, 0), dtype=np.int64)
        self.any_active = np.zeros(0, dtype=bool)  # per key: some level reached
        db = rule.deadband
        ups = [x - db for d, _, x in self.levels if d == "above"]
        downs = [x + db for d, _, x in self.levels if d == "below"]
        self.clear_above = min(ups) if ups else None
        self.clear_below = max(downs) if downs else None

    def grow(self, n: int) -> None:
        super().grow(n)
        self.any_active = grow(self.any_active, n, False)
        self.active = grow(self.active.T, n, False).T.copy()
        self.start = grow(self.start.T, n, NONE).T.copy()

    def state(self, n_keys: int) -> dict[str, np.ndarray]:
        return {
            **super().state(n_keys),
            "active": self.active[:, :n_keys].copy(),
            "start": self.start[:, :n_keys].copy(),
        }

    def restore(self, st: dict[str, np.ndarray], n_keys: int) -> None:
        super().restore(st, n_keys)
        self.active[:, :n_keys] = st["active"]
        self.start[:, :n_keys] = st["start"]

    def signal(self, s: Segments) -> np.ndarray:
        return s.v

    def eval(self, s: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sig = self.signal(s)
        n = len(s)
        sev = np.zeros(n, dtype=np.int8)
        lvl = np.full(n, -1, dtype=np.int8)
        # Quiet rows leave every level off whatever came before (below each `above` level's
        # clearing point, above each `below` level's); a group of quiet rows with no level
        # carried active needs no evaluation. Usually that is almost every group.
        quiet = np.ones(n, dtype=bool)
        if self.clear_above is not None:
            quiet &= sig < self.clear_above
        if self.clear_below is not None:
            quiet &= sig > self.clear_below
        busy = self.any_active[s.gk]
        if not quiet.all():
            busy[s.group[~quiet]] = True
        if not busy.any():
            return sev, lvl, sig
        if busy.all():
            self._eval(s, sig, sev, lvl)
            return sev, lvl, sig
        rows = np.flatnonzero(busy[s.group])
        sub_sev = np.zeros(len(rows), dtype=np.int8)
        sub_lvl = np.full(len(rows), -1, dtype=np.int8)
        self._eval(s.take(rows), sig[rows], sub_sev, sub_lvl)
        sev[rows] = sub_sev
        lvl[rows] = sub_lvl
        return sev, lvl, sig

    def _eval(self, s: Segments, sig: np.ndarray, sev: np.ndarray, lvl: np.ndarray) -> None:
        db = self.rule.deadband
        hold = self.rule.for_
        any_active = np.zeros(len(s.si), dtype=bool)
        for i, (direction, _name, x) in enumerate(self.levels):
            if direction == "above":
                on = sig >= x
                off = sig < x - db
            else:
                on = sig <= x
                off = sig > x + db
            carry = self.active[i][s.gk]
            known = on | off
            act = on if known.all() else ffill(on, known, s, carry)
            if hold:
                rise = act & ~shift(act, s, carry)
                since = ffill(s.t, rise, s, self.start[i][s.gk])
                eff = act & (s.t - since >= hold)
                self.start[i][s.gk] = since[s.ei]
            else:
                eff = act
            last = act[s.ei]
            self.active[i][s.gk] = last
            any_active |= last
            better = eff & (self.rank[i] > sev)
            sev[better] = self.rank[i]
            lvl[better] = i
        self.any_active[s.gk] = any_active


class ThresholdKernel(LevelKernel):
    rule: ThresholdRule


class RateKernel(LevelKernel):
    """Levels on (v - v_prev) / (t - t_prev) per second; NaN (hold) at a key's first point."""

    rule: RateRule

    def signal(self, s: Segments) -> np.ndarray:
        assert s.prev_t is not None and s.prev_v is not None
        dt = (s.t - s.prev_t).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = (s.v - s.prev_v) / dt * 1e9
        rate[s.prev_t == NONE] = np.nan
        return rate


class SequenceKernel(Kernel):
    """``first`` then ``then`` within ``within``; active while a match is younger than ``within``."""

    rule: SequenceRule
    per_key = ("sev", "last_first", "last_match")

    def __init__(self, rule: SequenceRule) -> None:
        super().__init__(rule)
        self.rank = SEVERITY_RANK[rule.severity]
        self.last_first = np.zeros(0, dtype=np.int64)
        self.last_match = np.zeros(0, dtype=np.int64)

    def grow(self, n: int) -> None:
        super().grow(n)
        self.last_first = grow(self.last_first, n, NONE)
        self.last_match = grow(self.last_match, n, NONE)

    def eval(self, s: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        within = self.rule.within
        a = self.rule.first.test(s.v)
        b = self.rule.then.test(s.v)
        carry_a = self.last_first[s.gk]
        if not b.any():  # no match possible: only `first` times and carried matches matter
            if a.any():
                self.last_first[s.gk] = ffill(s.t, a, s, carry_a)[s.ei]
            carry_m = self.last_match[s.gk]
            if (carry_m == NONE).all():
                return np.zeros(len(s), dtype=np.int8), np.full(len(s), -1, dtype=np.int8), s.v
            active = s.t - carry_m[s.group] < within
            return np.where(active, self.rank, 0).astype(np.int8), np.where(active, 0, -1).astype(np.int8), s.v
        last_a = ffill(s.t, a, s, carry_a)
        before = shift(last_a, s, carry_a)  # the latest `first` strictly before each row
        match = b & (s.t - before <= within)
        last_m = ffill(s.t, match, s, self.last_match[s.gk])
        active = s.t - last_m < within
        self.last_first[s.gk] = last_a[s.ei]
        self.last_match[s.gk] = last_m[s.ei]
        sev = np.where(active, self.rank, 0).astype(np.int8)
        return sev, np.where(active, 0, -1).astype(np.int8), s.v


class CountKernel(Kernel):
    """``count`` points meeting ``condition`` in the sliding window ``(t - within, t]``.

    Carried per key: the times of its last ``count`` matching points (oldest first), stored only
    for keys that ever matched (``slot``), so a large count costs memory only where it is used.
    """

    rule: CountRule
    per_key = ("sev", "slot")
    other = ("recent",)

    def __init__(self, rule: CountRule) -> None:
        super().__init__(rule)
        self.rank = SEVERITY_RANK[rule.severity]
        self.n = rule.count
        self.slot = np.zeros(0, dtype=np.int32)
        self.recent = np.full((1, self.n), NONE, dtype=np.int64)  # slot 0: never matched

    def grow(self, n: int) -> None:
        super().grow(n)
        self.slot = grow(self.slot, n, 0)

    def eval(self, s: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_need, within = self.n, self.rule.within
        cond = self.rule.condition.test(s.v)
        if not cond.any():  # only matches carried from earlier batches can keep an alert
            slots = self.slot[s.gk]
            if not slots.any():
                return np.zeros(len(s), dtype=np.int8), np.full(len(s), -1, dtype=np.int8), s.v
            active = s.t - self.recent[slots, 0][s.group] < within
            return np.where(active, self.rank, 0).astype(np.int8), np.where(active, 0, -1).astype(np.int8), s.v
        total = np.cumsum(cond, dtype=np.int64)
        c = total - (total - cond)[s.si][s.group]  # matches so far in the group, this row included
        times = s.t[cond]
        nth = np.empty(len(s), dtype=np.int64)  # time of the count-th latest match at the row
        in_batch = c >= n_need
        nth[in_batch] = times[total[in_batch] - n_need]
        old = ~in_batch
        nth[old] = self.recent[self.slot[s.kid[old]], c[old]]
        active = s.t - nth < within
        # carry: the latest `count` match times of every key that matched in this batch
        ends = s.ei[c[s.ei] > 0]
        if len(ends):
            keys = s.kid[ends]
            fresh = keys[self.slot[keys] == 0]
            if len(fresh):
                first = self.recent.shape[0]
                self.slot[fresh] = np.arange(first, first + len(fresh), dtype=np.int32)
                self.recent = np.concatenate(
                    [self.recent, np.full((len(fresh), n_need), NONE, dtype=np.int64)]
                )
            slots = self.slot[keys]
            j = np.arange(n_need)[None, :]
            back = n_need - j  # the back-th latest match goes to column j
            ce = c[ends][:, None]
            from_batch = ce >= back
            idx_b = np.clip(total[ends][:, None] - back, 0, None)
            idx_old = np.clip(ce + j, 0, n_need - 1)
            self.recent[slots] = np.where(
                from_batch, times[idx_b], self.recent[slots[:, None], idx_old]
            )
        sev = np.where(active, self.rank, 0).astype(np.int8)
        return sev, np.where(active, 0, -1).astype(np.int8), s.v



def make_kernel(rule: Any) -> Kernel:
    if isinstance(rule, ThresholdRule):
        return ThresholdKernel(rule)
    if isinstance(rule, RateRule):
        return RateKernel(rule)
    if isinstance(rule, SequenceRule):
        return SequenceKernel(rule)
    if isinstance(rule, CountRule):
        return CountKernel(rule)
    raise TypeError(f"no kernel for {type(rule).__name__}")
