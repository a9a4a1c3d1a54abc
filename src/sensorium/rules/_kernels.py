"""Vectorised rule evaluation over one batch.

The engine hands every kernel a :class:`Segments` view: the batch's rows of the rule's keys
(series, field), grouped by key (contiguous), each group in arrival order with strictly increasing
event times. Per-key state carried from earlier batches lives in numpy arrays indexed by the key's
*slot* in the rule's selection (``Segments.slots``, one per group: only keys a rule matches have a
slot, so a rule holds no state for the rest); within a batch every sequential recurrence is a segmented forward fill (``np.maximum.accumulate``
over row indices) seeded with the carried value at each group start. The result is the same as a
row-by-row loop, for any cut of the log into batches.

A kernel returns, per row, the alert severity rank it implies (0: no alert), the index of the
level that gives it (-1: none) and the signal it tested (the value, or the rate for rate rules).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sensorium import jit
from sensorium.keyindex import unique
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

    ``si``/``ei`` index each group's first/last row, ``gk`` is each group's key id and ``gl``
    its slot in a rule's selection (set by the engine for the kernels), so kernel state is read
    and written once per group (``state[gl]``, ``state[gl] = x[ei]``). ``prev_t``/``prev_v``, the
    previous accepted point of each row's key, are computed when a kernel first asks (from
    ``carried``: the latest time and value of every key before the batch, by key id).
    """

    __slots__ = ("kid", "t", "v", "row", "si", "ei", "gk", "gl", "carried", "_prev_t", "_prev_v", "_grp")

    def __init__(
        self,
        kid: np.ndarray,
        t: np.ndarray,
        v: np.ndarray,
        row: np.ndarray,
        si: np.ndarray | None = None,
        prev_t: np.ndarray | None = None,
        prev_v: np.ndarray | None = None,
        gl: np.ndarray | None = None,
        carried: tuple[np.ndarray, np.ndarray] | None = None,
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
        self.gl = gl
        self.carried = carried
        self._prev_t = prev_t
        self._prev_v = prev_v
        self._grp: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.kid)

    @property
    def slots(self) -> np.ndarray:
        """Each group's slot in the rule's selection (``gl``, which the engine sets)."""
        assert self.gl is not None, "rows without slots"
        return self.gl

    @property
    def prev_t(self) -> np.ndarray:
        """Time of the previous accepted point of each row's key (NONE: none)."""
        if self._prev_t is None:
            assert self.carried is not None, "rows without their keys' carried points"
            self._prev_t = shift(self.t, self, self.carried[0][self.gk])
        return self._prev_t

    @property
    def prev_v(self) -> np.ndarray:
        """Value of the previous accepted point of each row's key (NaN: none)."""
        if self._prev_v is None:
            assert self.carried is not None, "rows without their keys' carried points"
            self._prev_v = shift(self.v, self, self.carried[1][self.gk])
        return self._prev_v

    @property
    def group(self) -> np.ndarray:
        """Group number of every row."""
        if self._grp is None:
            self._grp = np.repeat(np.arange(len(self.si)), np.diff(self.si, append=len(self.kid)))
        return self._grp

    def groups(self, a: int, b: int, gl: np.ndarray | None = None) -> Segments:
        """Sub-view of the groups ``a:b`` (with slots ``gl``); no copy."""
        lo = int(self.si[a]) if a < len(self.si) else len(self.kid)
        hi = int(self.si[b]) if b < len(self.si) else len(self.kid)
        return Segments(
            self.kid[lo:hi],
            self.t[lo:hi],
            self.v[lo:hi],
            self.row[lo:hi],
            self.si[a:b] - lo,
            None if self._prev_t is None else self._prev_t[lo:hi],
            None if self._prev_v is None else self._prev_v[lo:hi],
            gl,
            self.carried,
        )

    def take(self, idx: np.ndarray, gl: np.ndarray | None = None) -> Segments:
        """Sub-view of whole groups (``idx`` selects every row of the groups it touches, in
        order); their slots are ``gl`` if given, else taken from this view's."""
        out = Segments(
            self.kid[idx],
            self.t[idx],
            self.v[idx],
            self.row[idx],
            None,
            None if self._prev_t is None else self._prev_t[idx],
            None if self._prev_v is None else self._prev_v[idx],
            None,
            self.carried,
        )
        if gl is None and self.gl is not None:
            gl = self.gl[self.group[idx[out.si]]]
        out.gl = gl
        return out


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


def in_order(s: Segments, carry: np.ndarray) -> np.ndarray:
    """Which rows are after every earlier row of their group and the carried time (one per
    group): the others are out of order or duplicates. The NumPy reference of the compiled
    :func:`sensorium.jit.rising_rows`, which the engine runs."""
    t = s.t
    ok = t > shift(t, s, carry)
    if ok.all():
        return ok
    # only groups with a row not after its predecessor need the running maximum
    late = np.flatnonzero(~ok)
    bad = unique(np.searchsorted(s.si, late, side="right") - 1, presorted=True)
    lo = s.si[bad]
    n = s.ei[bad] - lo + 1
    sub_si = np.zeros(len(bad), dtype=np.intp)
    np.cumsum(n[:-1], out=sub_si[1:])
    group = np.repeat(np.arange(len(bad)), n)
    rows = np.arange(int(n.sum())) + (lo - sub_si)[group]
    st = t[rows]
    cm = _running_max(st, sub_si, group)
    carried = carry[bad]
    prev = np.empty_like(st)  # the largest earlier time of the group, or the carried one
    prev[1:] = cm[:-1]
    prev = np.maximum(prev, carried[group])
    prev[sub_si] = carried
    ok[rows] = st > prev
    return ok


def _running_max(t: np.ndarray, si: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Running maximum of ``t`` within each group (groups from ``si``; ``group``: of each row)."""
    lo = np.minimum.reduceat(t, si)
    span = np.maximum.reduceat(t, si) - lo + 1
    if float(span.astype(np.float64).sum()) < 2.0**62:
        # one running max over all rows: each group's times are moved into a range of their own,
        # above the previous group's (exact: the sum of the ranges fits in int64)
        base = np.zeros(len(span), dtype=np.int64)
        np.cumsum(span[:-1], out=base[1:])
        g_lo, g_base = lo[group], base[group]
        u = t - g_lo
        u += g_base
        u = np.maximum.accumulate(u)
        u -= g_base
        u += g_lo
        return u
    cm = t.copy()  # Hillis-Steele running max within groups
    pos = np.arange(len(t)) - si[group]
    step, longest = 1, int(pos.max()) + 1
    while step < longest:
        nxt = cm.copy()
        later = pos[step:] >= step
        nxt[step:] = np.where(later, np.maximum(cm[step:], cm[:-step]), cm[step:])
        cm = nxt
        step *= 2
    return cm


class Kernel:
    """Base: capacity management and the carried severity per key.

    ``per_key`` names the arrays indexed by slot (grown with the rule's selection, saved up to its
    number of slots); ``other`` names further state arrays saved whole.
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
        """Load :meth:`state` into a kernel already grown to ``n_keys`` slots."""
        for name in self.per_key:
            if len(st[name]) != n_keys:
                raise ValueError(f"rule state holds {len(st[name])} keys, the selection {n_keys}")
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
        # per level (rows), per key (columns): level reached; time it was reached (kept for
        # rules with `for` only)
        self.hold = rule.for_ or 0
        self.active = np.zeros((n, 0), dtype=bool)
        self.start = np.zeros((n if self.hold else 0, 0), dtype=np.int64)
        self.any_active = np.zeros(0, dtype=bool)  # per key: some level reached
        db = rule.deadband
        ups = [x - db for d, _, x in self.levels if d == "above"]
        downs = [x + db for d, _, x in self.levels if d == "below"]
        self.clear_above = min(ups) if ups else None
        self.clear_below = max(downs) if downs else None
        # per level, for the compiled pass: 1 above / -1 below, and the threshold
        self._dirs = np.array([1 if d == "above" else -1 for d, _, _ in self.levels], dtype=np.int8)
        self._xs = np.array([float(x) for _, _, x in self.levels], dtype=np.float64)

    def grow(self, n: int) -> None:
        super().grow(n)
        self.any_active = grow(self.any_active, n, False)
        self.active = grow(self.active.T, n, False).T.copy()
        self.start = grow(self.start.T, n, NONE).T.copy()

    def state(self, n_keys: int) -> dict[str, np.ndarray]:
        out = {**super().state(n_keys), "active": self.active[:, :n_keys].copy()}
        if self.hold:
            out["start"] = self.start[:, :n_keys].copy()
        return out

    def restore(self, st: dict[str, np.ndarray], n_keys: int) -> None:
        super().restore(st, n_keys)
        self.active[:, :n_keys] = st["active"]
        if self.hold:
            self.start[:, :n_keys] = st["start"]

    def signal(self, s: Segments) -> np.ndarray:
        return s.v

    def _carry(self, s: Segments) -> tuple[np.ndarray, np.ndarray] | None:
        """The point carried into each group, for a signal that reads the previous one."""
        return None

    def eval(self, s: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every row's severity rank, level and signal, the state carried on: one compiled pass
        (:func:`sensorium.jit.level_rows`) over the rows, which :meth:`eval_numpy` does with
        NumPy passes (a dozen per level: masks, forward fills, shifts)."""
        if not len(s):
            return self.eval_numpy(s)
        carry = self._carry(s)
        if carry is None and self._quiet(s.v) and not self.any_active[s.slots].any():
            # no level reached before nor now (usually every row): two reductions tell
            return np.zeros(len(s), dtype=np.int8), np.full(len(s), -1, dtype=np.int8), s.v
        return jit.level_rows(
            s.v, s.t, s.si, s.slots, carry, self._dirs, self._xs, float(self.rule.deadband),
            self.rank, int(self.hold), self.active, self.start, self.any_active,
        )

    def _quiet(self, sig: np.ndarray) -> bool:
        """Every value of ``sig`` below each `above` level's clearing point and above each
        `below` level's (NaN is not quiet)."""
        above, below = self.clear_above, self.clear_below
        return (above is None or bool(sig.max() < above)) and (below is None or bool(sig.min() > below))

    def eval_numpy(self, s: Segments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`eval` in NumPy passes (the reference the compiled kernel is tested against)."""
        sig = self.signal(s)
        n = len(s)
        sev = np.zeros(n, dtype=np.int8)
        lvl = np.full(n, -1, dtype=np.int8)
        # Quiet rows leave every level off whatever came before (below each `above` level's
        # clearing point, above each `below` level's); a group of quiet rows with no level
        # carried active needs no evaluation. Usually that is almost every group (and every
        # row: then two reductions tell, NaN fails both).
        above, below = self.clear_above, self.clear_below
        busy = self.any_active[s.slots]
        if n and not self._quiet(sig):
            quiet = np.ones(n, dtype=bool)
            if above is not None:
                quiet &= sig < above
            if below is not None:
                quiet &= sig > below
            loud = np.flatnonzero(~quiet)
            busy[np.searchsorted(s.si, loud, side="right") - 1] = True
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
        hold = self.hold
        gl = s.slots
        any_active = np.zeros(len(s.si), dtype=bool)
        for i, (direction, _name, x) in enumerate(self.levels):
            if direction == "above":
                on = sig >= x
                off = sig < x - db
            else:
                on = sig <= x
                off = sig > x + db
            carry = self.active[i][gl]
            known = on | off
            act = on if known.all() else ffill(on, known, s, carry)
            if hold:
                rise = act & ~shift(act, s, carry)
                since = ffill(s.t, rise, s, self.start[i][gl])
                eff = act & (s.t - since >= hold)
                self.start[i][gl] = since[s.ei]
            else:
                eff = act
            last = act[s.ei]
            self.active[i][gl] = last
            any_active |= last
            better = eff & (self.rank[i] > sev)
            sev[better] = self.rank[i]
            lvl[better] = i
        self.any_active[gl] = any_active


class ThresholdKernel(LevelKernel):
    rule: ThresholdRule


class RateKernel(LevelKernel):
    """Levels on (v - v_prev) / (t - t_prev) per second; NaN (hold) at a key's first point."""

    rule: RateRule

    def _carry(self, s: Segments) -> tuple[np.ndarray, np.ndarray] | None:
        assert s.carried is not None, "rows without their keys' carried points"
        return s.carried[0][s.gk], s.carried[1][s.gk]

    def signal(self, s: Segments) -> np.ndarray:
        prev_t = s.prev_t
        dt = (s.t - prev_t).astype(np.float64)
        rate = s.v - s.prev_v
        with np.errstate(invalid="ignore", divide="ignore"):
            rate /= dt
        rate *= 1e9
        if len(rate) and prev_t.min() == NONE:
            rate[prev_t == NONE] = np.nan
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
        carry_a = self.last_first[s.slots]
        if not b.any():  # no match possible: only `first` times and carried matches matter
            if a.any():
                self.last_first[s.slots] = ffill(s.t, a, s, carry_a)[s.ei]
            carry_m = self.last_match[s.slots]
            if (carry_m == NONE).all():
                return np.zeros(len(s), dtype=np.int8), np.full(len(s), -1, dtype=np.int8), s.v
            active = s.t - carry_m[s.group] < within
            return np.where(active, self.rank, 0).astype(np.int8), np.where(active, 0, -1).astype(np.int8), s.v
        last_a = ffill(s.t, a, s, carry_a)
        before = shift(last_a, s, carry_a)  # the latest `first` strictly before each row
        match = b & (s.t - before <= within)
        last_m = ffill(s.t, match, s, self.last_match[s.slots])
        active = s.t - last_m < within
        self.last_first[s.slots] = last_a[s.ei]
        self.last_match[s.slots] = last_m[s.ei]
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
            slots = self.slot[s.slots]
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
        nth[old] = self.recent[self.slot[s.slots[s.group[old]]], c[old]]
        active = s.t - nth < within
        # carry: the latest `count` match times of every key that matched in this batch
        matched = c[s.ei] > 0
        ends = s.ei[matched]
        if len(ends):
            keys = s.slots[matched]
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
