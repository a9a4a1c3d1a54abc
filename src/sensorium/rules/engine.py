"""The rule engine: values frames in, alert transitions out.

``process(values, series)`` evaluates every event-time rule (threshold, rate, sequence, count)
on a batch in arrival order; ``tick(now_ns)`` evaluates absence rules in processing time. Both
return :class:`~sensorium.rules.types.Transition` lists.

How a batch is evaluated (all vectorised; Python only touches rows where an alert changes):

1. Series and fields map to dense ids through a 64-bit hash of the column (no string join); a
   (series, field) pair that some rule watches gets a key id. State is numpy arrays by key id.
2. The rows rules watch are sorted by key (stable: arrival order within a key). A row whose event
   time is not after the latest one already evaluated for its key is ignored and counted
   (``ignored_rows``): late and duplicate points never flip an alert.
3. Each rule's kernel (:mod:`sensorium.rules._kernels`) turns its rows into a desired severity per
   row; rows where it differs from the previous row's (or the carried one) are changes.
4. The alert book (:mod:`sensorium.rules._book`) turns changes into transitions: ids, seqs,
   reopening within the flap window, flapping.

Transitions come out ordered by the row that caused them, then by rule, so the same log cut
into different batches yields exactly the same list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from sensorium.rules._absence import Absence, arrival_of, per_series
from sensorium.rules._book import Book, Record, Subject
from sensorium.rules._changes import apply_changes
from sensorium.rules._kernels import (
    NEVER,
    NONE,
    Kernel,
    LevelKernel,
    Segments,
    make_kernel,
    prev_max,
    shift,
)
from sensorium.rules._registry import KeyTable, SeriesTable, grow, series_mask
from sensorium.rules.model import SEVERITIES, AbsenceRule, RateRule, RuleSet
from sensorium.rules.types import Transition
from sensorium.stream.rolling import NameIndex, stable_argsort

DEFAULT_FLAP_WINDOW_NS = 300 * 1_000_000_000
DEFAULT_FLAP_MAX_CHANGES = 6
_STATE_VERSION = 1


@dataclass
class _EventRule:
    index: int
    rule: Any
    kernel: Kernel
    series_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    field_ok: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # by rfid
    # by rfid: every series with a key of that field passes the series selectors
    all_series: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    flapping: set[int] = field(default_factory=set)  # keys whose alert is flapping
    stable_from: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def selector(self) -> str:
        r = self.rule
        return repr((r.bucket, r.measurement, sorted(r.tags.items()), r.target))


class RuleEngine:
    """Evaluates a :class:`RuleSet` on values frames (see the module docstring)."""

    def __init__(
        self,
        ruleset: RuleSet,
        flap_window_ns: int = DEFAULT_FLAP_WINDOW_NS,
        flap_max_changes: int = DEFAULT_FLAP_MAX_CHANGES,
        step_id: str = "rules",
    ) -> None:
        self.ruleset = ruleset
        self.step_id = step_id
        self.flap_window_ns = int(flap_window_ns)
        self.flap_max_changes = int(flap_max_changes)
        self.rows_seen = 0
        self.ignored_rows = 0  # out of order or duplicate (time <= latest evaluated of the key)
        self._book = Book(self.flap_window_ns, self.flap_max_changes)
        self._series = SeriesTable()
        self._fields = NameIndex(seed=0x5E752)
        self._rfid_of_fid = np.zeros(0, dtype=np.int32)  # watched field id, -1: not watched
        self._rfields: list[str] = []
        self._keys = KeyTable()  # (series id, watched field id) -> key id
        self._last_t = np.zeros(0, dtype=np.int64)
        self._last_v = np.zeros(0, dtype=np.float64)
        self._events: list[_EventRule] = []
        self._absences: list[Absence] = []
        for i, rule in enumerate(ruleset.rules):
            if not rule.enabled:
                continue
            if isinstance(rule, AbsenceRule):
                self._absences.append(Absence(i, rule))
            else:
                self._events.append(_EventRule(i, rule, make_kernel(rule)))
        self._absence_index = {ab.index for ab in self._absences}
        self._prune_at = 1024
        self._rule_names = [r.name for r in ruleset.rules]
        self._seen_frame: pl.DataFrame | None = None
        self._subject_cache: dict[tuple[int, int], Subject] = {}
        self._abs_fid_any = np.zeros(0, dtype=bool)
        self._need_prev = any(isinstance(e.rule, RateRule) for e in self._events)

    # ------------------------------------------------------------------ public face

    def process(self, values: pl.DataFrame, series: pl.DataFrame | None = None) -> list[Transition]:
        """Evaluate one batch (values frame in arrival order, and its series frame)."""
        if series is not None and series.height and series is not self._seen_frame:
            self._on_new_series(self._series.register(series))
            self._seen_frame = series  # the runner passes the same frame until series are added
        n = values.height
        if n == 0:
            return []
        self.rows_seen += n
        out: list[tuple[int, int, int, Transition]] = []
        fid = self._field_ids(values.get_column("field"))
        scol = values.get_column("series")
        rf = self._rfid_of_fid[fid]
        watched = rf >= 0
        if self._absences:
            counted = self._abs_fid_any[fid]
            need = np.flatnonzero(watched | counted)
            sid_full = np.full(n, -1, dtype=np.int32)
            sid_full[need] = self._series_ids(scol, need)
            rel = np.flatnonzero(watched)
            if len(rel):
                self._eval_events(values, rel, sid_full[rel], rf[rel], out)
            self._absence_batch(values, fid, sid_full, np.flatnonzero(counted), out)
        else:
            rel = np.flatnonzero(watched)
            if len(rel):
                self._eval_events(values, rel, self._series_ids(scol, rel), rf[rel], out)
        out.sort(key=lambda x: (x[0], x[1], x[2]))
        return [x[3] for x in out]

    def tick(self, now_ns: int) -> list[Transition]:
        """Processing-time evaluation: absence rules fire for groups silent for their ``after``."""
        out: list[Transition] = []
        for ab in self._absences:
            out += ab.tick(int(now_ns), self._book)
        return out

    def open_alerts(self) -> list[dict[str, Any]]:
        """Alerts firing now, as dicts (sorted by rule, series, field)."""
        names = [r.name for r in self.ruleset.rules]
        rows: list[tuple[tuple[int, str, str], dict[str, Any]]] = []
        for (ri, k), rec in self._book.records.items():
            if not rec.severity:
                continue
            subj = self._subject_of(ri, k)
            d = {
                "alert_id": rec.alert_id,
                "seq": rec.seq,
                "rule": subj.rule,
                "series": subj.series,
                "measurement": subj.measurement,
                "field": subj.field,
                "tags": dict(subj.tags),
                "bucket": subj.bucket,
                "state": "firing",
                "severity": _sev_name(rec.severity),
                "value": rec.value,
                "fired_at_ns": rec.fired_at,
                "event_time_ns": rec.event_time,
                "flapping": rec.flapping,
                "message": rec.message,
            }
            rows.append(((names.index(subj.rule), subj.series, subj.field or ""), d))
        rows.sort(key=lambda x: x[0])
        return [d for _, d in rows]

    # ------------------------------------------------------------------ ids

    def _field_ids(self, col: pl.Series) -> np.ndarray:
        fid = self._fields.lookup(col)
        missing = fid < 0
        if missing.any():
            names = col.filter(pl.Series(missing)).unique(maintain_order=True).to_list()
            self._fields.add(names)
            self._on_new_fields(names)
            fid = self._fields.lookup(col)
        return fid

    def _on_new_fields(self, names: list[str]) -> None:
        add = np.full(len(names), -1, dtype=np.int32)
        for i, name in enumerate(names):
            if any(e.rule.matches_field(name) for e in self._events):
                add[i] = self._rfield(name)
        self._rfid_of_fid = np.concatenate([self._rfid_of_fid, add])
        for ab in self._absences:
            ab.add_fields(names)
        if self._absences:
            self._abs_fid_any = np.logical_or.reduce([ab.fid_ok for ab in self._absences])

    def _rfield(self, name: str) -> int:
        if name in self._rfields:
            return self._rfields.index(name)
        self._rfields.append(name)
        for e in self._events:
            e.field_ok = np.append(e.field_ok, e.rule.matches_field(name))
            e.all_series = np.append(e.all_series, True)
        return len(self._rfields) - 1

    def _series_ids(self, col: pl.Series, rows: np.ndarray | None) -> np.ndarray:
        index = self._series.index
        if rows is not None and len(rows) < len(col) // 2:  # e.g. derived values: hash fewer
            keep = np.zeros(len(col), dtype=bool)
            keep[rows] = True
            col, rows = col.filter(pl.Series(keep)), None
        h = index.hash(col)
        if rows is not None and len(rows) < len(col):
            h = h[rows]
        sid = index.ids_of_hashes(h)
        missing = sid < 0
        if missing.any():
            if rows is not None and len(rows) < len(col):
                col = col.gather(rows)
            names = col.filter(pl.Series(missing)).unique(maintain_order=True).to_list()
            self._on_new_series(self._series.register_keys(names))
            sid = index.lookup(col)
        return sid

    def _on_new_series(self, fresh: pl.DataFrame) -> None:
        if fresh.height == 0:
            return
        for e in self._events:
            e.series_ok = np.concatenate([e.series_ok, series_mask(e.rule, fresh)])
        for ab in self._absences:
            ab.add_series(fresh, self._series)

    def _key_ids(self, sid: np.ndarray, rf: np.ndarray) -> np.ndarray:
        kid, new_sid, new_rf = self._keys.ids(sid, rf, len(self._series), len(self._rfields))
        if len(new_sid):
            self._grow_keys(len(self._keys))
            self._note_keys(new_sid, new_rf)
        return kid

    def _note_keys(self, sids: np.ndarray, rfids: np.ndarray) -> None:
        for e in self._events:
            e.all_series[rfids[~e.series_ok[sids]]] = False

    def _grow_keys(self, n: int) -> None:
        self._last_t = grow(self._last_t, n, NONE)
        self._last_v = grow(self._last_v, n, np.nan)
        for e in self._events:
            e.kernel.grow(n)
            e.stable_from = grow(e.stable_from, n, NEVER)

    # ------------------------------------------------------------------ event-time rules

    def _eval_events(
        self,
        values: pl.DataFrame,
        rel: np.ndarray,
        sid: np.ndarray,
        rf: np.ndarray,
        out: list[tuple[int, int, int, Transition]],
    ) -> None:
        kid = self._key_ids(sid, rf)
        # group by field, then series (stable: arrival order within a key); a rule reads the
        # contiguous block of its field
        order = stable_argsort(rf.astype(np.int64) * (len(self._series) + 1) + sid)
        kid, row, rf = kid[order], rel[order], rf[order]
        t = values.get_column("time").to_numpy()[row]
        v = values.get_column("value").cast(pl.Float64).to_numpy()[row]
        seg = Segments(kid, t, v, row)
        ok = t > shift(t, seg, self._last_t[seg.gk])
        if not ok.all():
            ok = t > prev_max(seg, self._last_t[seg.gk], ok)
            self.ignored_rows += int(len(ok) - np.count_nonzero(ok))
            kid, row, rf, t, v = kid[ok], row[ok], rf[ok], t[ok], v[ok]
            seg = Segments(kid, t, v, row)
        if self._need_prev:
            seg.prev_t = shift(t, seg, self._last_t[seg.gk])
            seg.prev_v = shift(v, seg, self._last_v[seg.gk])
        bounds = np.searchsorted(rf, np.arange(len(self._rfields) + 1))
        cache: dict[str, Segments | None] = {}
        for er in self._events:
            sel = er.selector
            if sel not in cache:
                cache[sel] = self._select(er, seg, bounds)
            sub = cache[sel]
            if sub is not None:
                self._eval_rule(er, sub, out)
        self._last_t[seg.gk] = t[seg.ei]
        self._last_v[seg.gk] = v[seg.ei]
        if len(self._book.resolved) > self._prune_at:
            for key in [k for k in self._book.resolved if k[0] not in self._absence_index]:
                self._book.prune(key, int(self._last_t[key[1]]))
            self._prune_at = max(1024, 2 * len(self._book.resolved))

    def _select(self, er: _EventRule, seg: Segments, bounds: np.ndarray) -> Segments | None:
        """The rows of a rule: the blocks of its fields, filtered by its series selectors."""
        parts: list[np.ndarray] = []
        whole: tuple[int, int] | None = None
        for f in np.flatnonzero(er.field_ok).tolist():
            lo, hi = int(bounds[f]), int(bounds[f + 1])
            if lo == hi:
                continue
            if er.all_series[f]:
                parts.append(np.arange(lo, hi))
                whole = (lo, hi)
            else:
                keep = er.series_ok[self._keys.sid[seg.kid[lo:hi]]]
                parts.append(lo + np.flatnonzero(keep))
                whole = None
        if not parts:
            return None
        if len(parts) == 1 and whole is not None:
            return seg.slice(*whole)
        idx = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return seg.take(idx) if len(idx) else None

    def _eval_rule(self, er: _EventRule, s: Segments, out: list[tuple[int, int, int, Transition]]) -> None:
        """Run a rule's kernel; hand the rows where its severity changes to the alert book."""
        kernel = er.kernel
        sev, lvl, sig = kernel.eval(s)
        carried = kernel.sev[s.gk]
        if sev.any():
            cidx = np.flatnonzero(sev != shift(sev, s, carried))
            kernel.sev[s.gk] = sev[s.ei]
        else:  # no alert anywhere in the batch: only carried alerts can change (resolve)
            open_ = carried != 0
            cidx = s.si[open_]
            kernel.sev[s.gk[open_]] = 0
        # keys flapping at batch start, at rows where they may become stable
        flappy = np.flatnonzero(s.t >= er.stable_from[s.kid]) if er.flapping else cidx[:0]
        if len(cidx) == 0 and len(flappy) == 0:
            return
        levels = kernel.levels if isinstance(kernel, LevelKernel) else None
        touched = apply_changes(
            self._book, er.index, er.rule, levels, s, sev, lvl, sig, cidx, flappy, self._subject_of, out
        )
        for k in touched:
            self._track_flapping(er, (er.index, k))

    def _track_flapping(self, er: _EventRule, key: tuple[int, int]) -> None:
        limit = self._book.stable_from(key)
        if limit is None:
            if key[1] in er.flapping:
                er.flapping.discard(key[1])
                er.stable_from[key[1]] = NEVER
        else:
            er.flapping.add(key[1])
            er.stable_from[key[1]] = limit

    def _absence_batch(
        self, values: pl.DataFrame, fid: np.ndarray, sid: np.ndarray, rows: np.ndarray,
        out: list[tuple[int, int, int, Transition]],
    ) -> None:
        if not len(rows):
            return
        t = values.get_column("time").to_numpy()
        arrival = arrival_of(values)
        cache: dict[bytes, tuple[np.ndarray, ...]] = {}  # rules counting the same fields share
        for ab in self._absences:
            sig = np.packbits(ab.fid_ok).tobytes()
            if sig not in cache:
                r = rows[ab.fid_ok[fid[rows]]]
                cache[sig] = per_series(sid[r], t[r], arrival[r], r, len(self._series))
            ab.batch(cache[sig], arrival, self._book, out)

    # ------------------------------------------------------------------ subjects

    def _subject_of(self, rule_index: int, key: int) -> Subject:
        subj = self._subject_cache.get((rule_index, key))
        if subj is not None:
            return subj
        if rule_index in self._absence_index:
            return next(a for a in self._absences if a.index == rule_index).subject(key)
        sid = int(self._keys.sid[key])
        subj = Subject(
            self._rule_names[rule_index],
            self._series.index.names[sid],
            self._series.measurement[sid],
            self._rfields[int(self._keys.rf[key])],
            self._series.tags[sid],
            self._series.bucket[sid],
        )
        self._subject_cache[(rule_index, key)] = subj
        return subj

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this engine is (picklable)."""
        k = len(self._keys)
        rules: dict[str, Any] = {}
        for e in self._events:
            rules[e.rule.name] = {
                "fingerprint": e.rule.model_dump_json(),
                "kernel": e.kernel.state(k),
                "stable_from": e.stable_from[:k].copy(),
            }
        absences = {ab.rule.name: ab.state() for ab in self._absences}
        names = [r.name for r in self.ruleset.rules]
        alerts = []
        for (ri, key), rec in self._book.records.items():
            alerts.append(
                {
                    "rule": names[ri],
                    "key": key,
                    "record": rec.to_state(),
                    "resolved": (ri, key) in self._book.resolved,
                }
            )
        return {
            "version": _STATE_VERSION,
            "step_id": self.step_id,
            "series": self._series.state(),
            "key_series": self._keys.sid.copy(),
            "key_field": [self._rfields[int(f)] for f in self._keys.rf],
            "last_t": self._last_t[:k].copy(),
            "last_v": self._last_v[:k].copy(),
            "rules": rules,
            "absences": absences,
            "alerts": alerts,
            "rows_seen": self.rows_seen,
            "ignored_rows": self.ignored_rows,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (taken from an engine with the same or an edited rule set:
        the state of a rule whose definition changed is dropped, and its alerts forgotten)."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"unknown rule engine state version {state.get('version')!r}")
        fresh = RuleEngine(self.ruleset, self.flap_window_ns, self.flap_max_changes, self.step_id)
        self.__dict__.update(fresh.__dict__)
        self.rows_seen = int(state["rows_seen"])
        self.ignored_rows = int(state["ignored_rows"])
        self._series = SeriesTable.from_state(state["series"])
        for ab in self._absences:
            st = state["absences"].get(ab.rule.name)
            if st is not None and st["fingerprint"] == ab.rule.model_dump_json():
                ab.restore_groups(st)
        self._on_new_series(self._series.frame())
        # keys, in their old order
        kf = list(state["key_field"])
        for name in dict.fromkeys(kf):
            self._rfield(name)
        field_names = list(dict.fromkeys(kf))
        self._fields.add(field_names)
        self._on_new_fields(field_names)
        ks = np.asarray(state["key_series"], dtype=np.int32)
        kr = np.array([self._rfields.index(f) for f in kf], dtype=np.int32)
        self._keys.ids(ks, kr, len(self._series), len(self._rfields))  # same ids, same order
        k = len(self._keys)
        self._grow_keys(k)
        self._note_keys(ks, kr)
        self._last_t[:k] = state["last_t"]
        self._last_v[:k] = state["last_v"]
        kept: set[str] = set()
        for e in self._events:
            st = state["rules"].get(e.rule.name)
            if st is None or st["fingerprint"] != e.rule.model_dump_json():
                continue
            kept.add(e.rule.name)
            e.kernel.restore(st["kernel"], k)
            e.stable_from[:k] = st["stable_from"]
            e.flapping = set(np.flatnonzero(e.stable_from[:k] != NEVER).tolist())
        for ab in self._absences:
            st = state["absences"].get(ab.rule.name)
            if st is None or st["fingerprint"] != ab.rule.model_dump_json():
                continue
            kept.add(ab.rule.name)
            ab.restore(st)
        index = {r.name: i for i, r in enumerate(self.ruleset.rules)}
        for a in state["alerts"]:
            if a["rule"] not in kept:
                continue
            key = (index[a["rule"]], int(a["key"]))
            self._book.records[key] = Record.from_state(a["record"])
            if a["resolved"]:
                self._book.resolved.add(key)


def _sev_name(rank: int) -> str:
    return SEVERITIES[rank - 1] if rank else ""
