"""A row-by-row reference of the rule engine's event-time semantics, for property tests.

Deliberately naive: one Python loop over the rows in arrival order, dict state per key. It shares
only the alert book (ids, seqs, reopening, flapping) with the engine; everything the engine does
vectorised (ordering, out-of-order filter, hysteresis, ``for``, rates, sequences, counts, the rows
where flapping ends) is re-derived here one row at a time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import polars as pl

from sensorium.rules._book import Book, Subject
from sensorium.rules.model import (
    SEVERITY_RANK,
    AbsenceRule,
    CountRule,
    RateRule,
    RuleSet,
    SequenceRule,
    ThresholdRule,
)
from sensorium.rules.types import Transition


@dataclass
class _KeyState:
    sev: int = 0
    active: dict[int, bool] = field(default_factory=dict)
    since: dict[int, int] = field(default_factory=dict)
    last_first: int | None = None
    last_match: int | None = None
    cond_times: deque[int] = field(default_factory=deque)


def _series_ok(rule: Any, meta: dict[str, Any]) -> bool:
    def ok(value: str | None, pattern: str | None) -> bool:
        return pattern is None or (value is not None and fnmatchcase(value, pattern))

    if not ok(meta["bucket"], rule.bucket) or not ok(meta["measurement"], rule.measurement):
        return False
    return all(ok(meta["tags"].get(k), p) for k, p in rule.tags.items())


class ReferenceEngine:
    def __init__(self, ruleset: RuleSet, flap_window_ns: int, flap_max_changes: int) -> None:
        self.rules = [(i, r) for i, r in enumerate(ruleset.rules) if r.enabled and not isinstance(r, AbsenceRule)]
        self.book = Book(flap_window_ns, flap_max_changes)
        self.last: dict[tuple[str, str], tuple[int, float]] = {}
        self.state: dict[tuple[int, str, str], _KeyState] = {}
        self.key_ids: dict[tuple[str, str], int] = {}
        self.ignored = 0

    def process(self, values: pl.DataFrame, meta: dict[str, dict[str, Any]]) -> list[Transition]:
        out: list[Transition] = []
        for series, fld, t, v in values.select("series", "field", "time", "value").iter_rows():
            rules = [(i, r) for i, r in self.rules if r.matches_field(fld)]
            if not rules:
                continue
            key = (series, fld)
            prev = self.last.get(key)
            if prev is not None and t <= prev[0]:
                self.ignored += 1
                continue
            self.last[key] = (t, v)
            kid = self.key_ids.setdefault(key, len(self.key_ids))
            m = meta[series]
            for i, rule in rules:
                if not _series_ok(rule, m):
                    continue
                st = self.state.setdefault((i, series, fld), _KeyState())
                sev = self._step(rule, st, t, v, prev)
                subj = Subject(rule.name, series, m["measurement"], fld, m["tags"], m["bucket"])
                bkey = (i, kid)
                if sev != st.sev:
                    out += self.book.change(bkey, subj, t, sev, v, "", {})
                else:
                    limit = self.book.stable_from(bkey)
                    if limit is not None and t >= limit:
                        tr = self.book.stabilise(bkey, subj, t)
                        assert tr is not None
                        out.append(tr)
                st.sev = sev
        return out

    def _step(self, rule: Any, st: _KeyState, t: int, v: float, prev: tuple[int, float] | None) -> int:
        if isinstance(rule, ThresholdRule | RateRule):
            if isinstance(rule, RateRule):
                sig = float("nan") if prev is None else (v - prev[1]) / float(t - prev[0]) * 1e9
            else:
                sig = v
            sev = 0
            for i, (direction, name, x) in enumerate(rule.levels()):
                was = st.active.get(i, False)
                if direction == "above":
                    on, off = sig >= x, sig < x - rule.deadband
                else:
                    on, off = sig <= x, sig > x + rule.deadband
                act = True if on else False if off else was
                if act and not was:
                    st.since[i] = t
                st.active[i] = act
                eff = act and (not rule.for_ or t - st.since[i] >= rule.for_)
                if eff and SEVERITY_RANK[name] > sev:
                    sev = SEVERITY_RANK[name]
            return sev
        if isinstance(rule, SequenceRule):
            match = bool(rule.then.test(_arr(v))[0]) and st.last_first is not None and t - st.last_first <= rule.within
            if rule.first.test(_arr(v))[0]:
                st.last_first = t
            if match:
                st.last_match = t
            active = st.last_match is not None and t - st.last_match < rule.within
            return SEVERITY_RANK[rule.severity] if active else 0
        assert isinstance(rule, CountRule)
        if rule.condition.test(_arr(v))[0]:
            st.cond_times.append(t)
        while st.cond_times and st.cond_times[0] <= t - rule.within:
            st.cond_times.popleft()
        return SEVERITY_RANK[rule.severity] if len(st.cond_times) >= rule.count else 0


def _arr(v: float) -> Any:
    import numpy as np

    return np.array([v])


def comparable(tr: Transition) -> tuple[Any, ...]:
    """The parts of a transition the reference also computes (not messages or extras)."""
    value = "nan" if tr.value is not None and tr.value != tr.value else tr.value
    return (
        tr.alert_id,
        tr.seq,
        tr.rule,
        tr.series,
        tr.field,
        tr.state,
        tr.severity,
        value,
        tr.event_time_ns,
        tr.fired_at_ns,
        tr.flapping,
    )
