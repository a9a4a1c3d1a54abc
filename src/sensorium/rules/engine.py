"""The rule engine: values frames in, alert transitions out.

``process(values, series)`` evaluates every event-time rule (threshold, rate, sequence, count)
on a batch in arrival order; ``tick(now_ns)`` evaluates absence rules in processing time. Both
return :class:`~sensorium.rules.types.Transition` lists. ``wanted_derived()`` names the derived
values (rolling statistics) the rules read, so that the rolling stage makes only those.

How a batch is evaluated (all vectorised; Python only touches rows where an alert changes):

1. Series and fields map to dense ids through a 64-bit hash of the column (no string join); a
   (series, field) pair that some rule watches gets a key id. Rules with the same selectors form
   a *selection*, which gives each key it accepts a slot; a rule's state is numpy arrays by slot,
   so it holds nothing for keys it cannot match.
2. One stable sort groups the rows by key (arrival order within a key), watched fields first, by
   field: a selection's rows are the blocks of its fields, minus the series it does not accept.
   A row whose event time is not after the latest one already evaluated for its key is ignored
   and counted (``ignored_rows``): late and duplicate points never flip an alert. The rows only
   absence rules count follow, and give every series its latest arrival per batch.
3. Each rule's kernel (:mod:`sensorium.rules._kernels`) turns its rows into a desired severity per
   row; rows where it differs from the previous row's (or the carried one) are changes.
4. The alert book (:mod:`sensorium.rules._book`) turns changes into transitions: ids, seqs,
   reopening within the flap window, flapping.

Transitions come out ordered by the row that caused them, then by rule, so the same log cut
into different batches yields exactly the same list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import polars as pl

from sensorium.jit import rising_rows
from sensorium.keyindex import (
    Keys,
    NameIndex,
    PairGroups,
    Remap,
    pair_groups,
    stable_argsort,
    unique,
    unknown_names,
)
from sensorium.rules._absence import Absence, arrival_of, per_series
from sensorium.rules._book import Book, Record, Subject
from sensorium.rules._changes import apply_changes
from sensorium.rules._kernels import (
    NEVER,
    NONE,
    Kernel,
    Segments,
    group_starts,
    make_kernel,
    shift,
)
from sensorium.rules._messages import Describe, describer
from sensorium.rules._registry import KeyTable, SeriesTable, grow, series_masks
from sensorium.rules.model import SEVERITIES, AbsenceRule, RuleSet
from sensorium.rules.types import Transition

DEFAULT_FLAP_WINDOW_NS = 300 * 1_000_000_000
DEFAULT_FLAP_MAX_CHANGES = 6
#: rows grouped for the rules: (row, group starts, groups' watched-field keys, series, field ids)
_Grouped = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]
_ORDER = itemgetter(0, 1, 2)  # transitions: by row, then rule, then the order they were made
_STATE_VERSION = 2  # 2: rule state by slot (keys the rule matches), not by key


class _Selection:
    """The keys that rules with the same selectors (bucket, measurement, tags, field) watch.

    Every key the selectors accept gets a *slot*, dense, in key order; the kernels of these rules
    keep their state by slot, so a rule holds state only for the keys it matches. Slots follow
    from the key order alone, so a restore re-derives them.
    """

    def __init__(self, rule: Any) -> None:
        self.rule = rule  # the first rule with these selectors
        self.series_ok = np.zeros(0, dtype=bool)  # by series id
        self.field_ok = np.zeros(0, dtype=bool)  # by watched field id
        self.fields: list[int] = []  # watched field ids it accepts, increasing
        # by accepted field: slot of each key of the field (by its lid), -1: series not accepted
        self.slot_of: dict[int, np.ndarray] = {}
        self.every: dict[int, bool] = {}  # by accepted field: all its keys so far are accepted
        self.key_of_slot = np.zeros(0, dtype=np.int32)
        self.rules: list[_EventRule] = []

    @property
    def n(self) -> int:
        return len(self.key_of_slot)

    @staticmethod
    def selector(rule: Any) -> tuple[Any, ...]:
        return (rule.bucket, rule.measurement, tuple(sorted(rule.tags.items())), rule.target)

    def add_field(self, name: str) -> None:
        ok = self.rule.matches_field(name)
        f = len(self.field_ok)
        self.field_ok = np.append(self.field_ok, ok)
        if ok:
            self.fields.append(f)
            self.slot_of[f] = np.zeros(0, dtype=np.int32)
            self.every[f] = True

    def add_keys(self, keys: np.ndarray, table: KeyTable) -> None:
        """Give slots to the new keys ``keys`` (in key order) that the selectors accept."""
        rf = table.rf[keys]
        mine = self.field_ok[rf]
        if not mine.any():
            return
        keys, rf = keys[mine], rf[mine]
        ok = self.series_ok[table.sid[keys]]
        lid = table.lid[keys]
        slots = np.full(len(keys), -1, dtype=np.int32)
        slots[ok] = np.arange(self.n, self.n + int(np.count_nonzero(ok)), dtype=np.int32)
        for f in np.unique(rf).tolist():
            here = rf == f
            arr = grow(self.slot_of[f], table.per_field[f], -1)
            arr[lid[here]] = slots[here]
            self.slot_of[f] = arr
            if not ok[here].all():
                self.every[f] = False
        self.key_of_slot = np.concatenate([self.key_of_slot, keys[ok]])
        for er in self.rules:
            er.kernel.grow(self.n)

    def select(self, seg: Segments, gbounds: np.ndarray, glid: np.ndarray) -> Segments | None:
        """This selection's rows of a batch: the groups of its fields (``gbounds``: the groups of
        each watched field; ``glid``: each group's lid) whose series it accepts, with slots."""
        blocks: list[tuple[int, int, np.ndarray]] = []
        whole = True
        for f in self.fields:
            a, b = int(gbounds[f]), int(gbounds[f + 1])
            if a == b:
                continue
            blocks.append((a, b, self.slot_of[f][glid[a:b]]))
            whole = whole and self.every[f]
        if not blocks:
            return None
        if len(blocks) == 1 and whole:
            return seg.groups(*blocks[0])
        keep = np.zeros(len(seg.si), dtype=bool)
        gl = np.full(len(seg.si), -1, dtype=np.int32)
        for a, b, slots in blocks:
            gl[a:b] = slots
            keep[a:b] = slots >= 0
        if not keep.any():
            return None
        return seg.take(np.flatnonzero(keep[seg.group]), gl[keep])


@dataclass
class _EventRule:
    index: int
    rule: Any
    kernel: Kernel
    sel: _Selection
    describe: Describe
    # slots whose alert is flapping: the event time from which it counts as stable
    flapping: dict[int, int] = field(default_factory=dict)


def _added(series: pl.DataFrame, seen: pl.DataFrame | None) -> pl.DataFrame:
    """The rows of a series frame to register: only those after ``seen`` (the frame registered
    last) when ``series`` extends it — the runner's frame only grows, by appending, and a
    re-registration of every series whenever one is added cost O(series) per step (names hashed
    again) — else all of them (registering a known series again is a no-op). Two rows compared
    stand in for the prefix: a series missed by a wrong guess is still registered from its key
    when its values come (``_series_ids``)."""
    if seen is None or not 0 < seen.height < series.height or "series" not in series.columns:
        return series
    old, new = seen.get_column("series"), series.get_column("series")
    h = seen.height
    if new[0] != old[0] or new[h - 1] != old[h - 1]:
        return series
    return series.slice(h)


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
        self._remap = (Remap(), Remap())  # the framing's series and field ids -> ours
        self._rfid_of_fid = np.zeros(0, dtype=np.int32)  # watched field id, -1: not watched
        self._rfields: list[str] = []
        self._keys = KeyTable()  # (series id, watched field id) -> key id
        self._last_t = np.zeros(0, dtype=np.int64)
        self._last_v = np.zeros(0, dtype=np.float64)
        self._events: list[_EventRule] = []
        self._selections: dict[tuple[Any, ...], _Selection] = {}
        self._absences: list[Absence] = []
        for i, rule in enumerate(ruleset.rules):
            if not rule.enabled:
                continue
            if isinstance(rule, AbsenceRule):
                self._absences.append(Absence(i, rule))
            else:
                sel = self._selections.setdefault(_Selection.selector(rule), _Selection(rule))
                er = _EventRule(i, rule, make_kernel(rule), sel, describer(rule))
                sel.rules.append(er)
                self._events.append(er)
        self._absence_index = {ab.index for ab in self._absences}
        self._prune_at = 1024
        self._rule_names = [r.name for r in ruleset.rules]
        self._seen_frame: pl.DataFrame | None = None
        self._subject_cache: dict[tuple[int, int], Subject] = {}
        self._abs_fid_any = np.zeros(0, dtype=bool)
        self._wanted = tuple(
            dict.fromkeys(
                r.target for r in ruleset.rules if r.enabled and r.target is not None and ":" in r.target
            )
        )

    # ------------------------------------------------------------------ public face

    def process(
        self, values: pl.DataFrame, series: pl.DataFrame | None = None, keys: Keys | None = None
    ) -> list[Transition]:
        """Evaluate one batch (values frame in arrival order, and its series frame; ``keys``: its
        rows' ids from the framing, if known — then no series or field name is hashed, and
        ``values`` needs only ``time``, ``value`` and, if known, ``arrival``)."""
        if series is not None and series.height and series is not self._seen_frame:
            self._on_new_series(self._series.register(_added(series, self._seen_frame)))
            self._seen_frame = series  # the runner passes the same frame until series are added
        n = values.height
        if n == 0:
            return []
        self.rows_seen += n
        pg = pair_groups(keys) if keys is not None else None
        grouped = self._pair_grouped(pg) if pg is not None else self._row_grouped(values, keys)
        if grouped is None:
            return []
        row, si, g_fk, g_sid, g_fid = grouped
        n_rf = len(self._rfields)
        t = values.get_column("time").to_numpy()[row]
        out: list[tuple[int, int, int, Transition]] = []
        n_wg = int(np.searchsorted(g_fk, n_rf))  # groups of watched fields
        if n_wg:
            nw = int(si[n_wg]) if n_wg < len(si) else len(row)
            gk = self._key_ids(g_sid[:n_wg], g_fk[:n_wg], row[si[:n_wg]])
            self._eval_events(values, gk, row[:nw], t[:nw], si[:n_wg], out)
        if g_fid is not None:
            self._absence_batch(values, row, t, si, g_fid, g_sid, out)
        out.sort(key=_ORDER)
        return [x[3] for x in out]

    def _pair_grouped(self, pg: PairGroups) -> _Grouped | None:
        """The rows rules read, grouped (see :meth:`_row_grouped`), from the framing's ids grouped
        by pair: ids are mapped to the engine's own, and rows kept or left out, per (series,
        field) pair; then one compiled pass places the rows."""
        keys = pg.keys
        # new names get ids in order of first sight (the pairs' first rows), as by rows
        fid = self._remap[1].ids(pg.fid, keys.fields, self._field_ids, seen_at=pg.first)
        rf = self._rfid_of_fid[fid]
        keep = rf >= 0
        counted = self._abs_fid_any[fid] if self._absences else None
        if counted is not None:
            keep |= counted
        kept = np.flatnonzero(keep)
        if not len(kept):
            return None
        sid = self._remap[0].ids(
            pg.sid[kept], keys.series, lambda names: self._series_ids(names, None), seen_at=pg.first[kept]
        )
        fk = rf[kept]
        if counted is not None:
            fk = np.where(fk >= 0, fk, len(self._rfields) + fid[kept])
        code = fk.astype(np.int64) * (len(self._series) + 1) + sid  # distinct: one per pair
        # the pairs come in the framing's (field, series) order, most often the engine's too
        o = slice(None) if bool((code[1:] > code[:-1]).all()) else stable_argsort(code)
        row, si = pg.rows(kept[o])
        return row, si, fk[o], sid[o], (fid[kept[o]] if counted is not None else None)

    def _row_grouped(self, values: pl.DataFrame, keys: Keys | None) -> _Grouped | None:
        """``(row, si, g_fk, g_sid, g_fid)``: the rows of watched fields (and of fields only
        absence rules count) grouped by (watched field, series) — arrival order within a group —
        with the groups' starts, watched-field keys (``n_rf + field`` for fields only counted),
        series and (with absence rules) field ids; None when no row concerns a rule."""
        if keys is not None:
            fid = self._remap[1].ids(keys.fid, keys.fields, self._field_ids)
        else:
            fid = self._field_ids(values.get_column("field"))
        rf = self._rfid_of_fid[fid]
        watched = rf >= 0
        counted = self._abs_fid_any[fid] if self._absences else None
        rel = np.flatnonzero(watched if counted is None else watched | counted)
        if not len(rel):
            return None
        if keys is not None:
            sid = self._remap[0].ids(keys.sid[rel], keys.series, lambda names: self._series_ids(names, None))
        else:
            sid = self._series_ids(values.get_column("series"), rel)
        # One stable sort groups the rows by key (arrival order within a key): first the rows of
        # watched fields by field, then series (each selection reads the contiguous block of
        # groups of each of its fields), then the rows only absence rules count, by field.
        n_rf = len(self._rfields)
        fk = rf[rel]
        if counted is not None:
            fk = np.where(fk >= 0, fk, n_rf + fid[rel])
        code = fk.astype(np.int64) * (len(self._series) + 1) + sid
        order = stable_argsort(code)
        si = group_starts(code[order])
        del code
        first = order[si]  # the first row of each group (in rel)
        return rel[order], si, fk[first], sid[first], (fid[rel[first]] if counted is not None else None)

    def wanted_derived(self) -> tuple[str, ...]:
        """The derived values (rolling statistics) some rule reads, as field names or glob
        patterns (``"temperature:std_10"``, ``"*:std_10"``): pass them to
        :meth:`RollingStats.process(values, only=...) <sensorium.stream.rolling.RollingStats.process>`
        so that no other derived rows are made. The rules' series selectors apply here."""
        return self._wanted

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
        h = self._fields.hash(col)
        fid = self._fields.ids_of_hashes(h)
        if fid.min() < 0:
            names = unknown_names(col, h, fid)
            seed = self._fields.seed
            self._fields.add(names)
            self._on_new_fields(names)
            fid = self._fields.ids_of_hashes(h) if self._fields.seed == seed else self._fields.lookup(col)
        return fid

    def _on_new_fields(self, names: list[str]) -> None:
        add = np.full(len(names), -1, dtype=np.int32)
        for i, name in enumerate(names):
            if any(sel.rule.matches_field(name) for sel in self._selections.values()):
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
        for sel in self._selections.values():
            sel.add_field(name)
        return len(self._rfields) - 1

    def _series_ids(self, col: pl.Series, rows: np.ndarray | None) -> np.ndarray:
        index = self._series.index
        if rows is not None and len(rows) < len(col) // 2:  # e.g. derived values: hash fewer
            keep = np.zeros(len(col), dtype=bool)
            keep[rows] = True
            col, rows = col.filter(pl.Series(keep)), None
        if rows is not None and len(rows) == len(col):
            rows = None
        h = index.hash(col)
        if rows is not None:
            h = h[rows]
        sid = index.ids_of_hashes(h)
        if len(sid) and sid.min() < 0:
            seed = index.seed
            self._on_new_series(self._series.register_keys(unknown_names(col, h, sid, rows)))
            if index.seed == seed:
                sid = index.ids_of_hashes(h)
            else:
                sid = index.lookup(col if rows is None else col.gather(rows))
        return sid

    def _on_new_series(self, fresh: pl.DataFrame) -> None:
        if fresh.height == 0:
            return
        sels = list(self._selections.values())
        for sel, ok in zip(sels, series_masks([sel.rule for sel in sels], fresh), strict=True):
            sel.series_ok = np.concatenate([sel.series_ok, ok])
        for ab in self._absences:
            ab.add_series(fresh, self._series)

    def _key_ids(self, sid: np.ndarray, rf: np.ndarray, first: np.ndarray) -> np.ndarray:
        """Key ids of distinct (series, watched field) pairs first seen at rows ``first``."""
        kid, fresh = self._keys.ids(sid, rf, len(self._series), len(self._rfields), first)
        if len(fresh):
            self._new_keys(fresh)
        return kid

    def _new_keys(self, keys: np.ndarray) -> None:
        n = len(self._keys)
        self._last_t = grow(self._last_t, n, NONE)
        self._last_v = grow(self._last_v, n, np.nan)
        for sel in self._selections.values():
            sel.add_keys(keys, self._keys)

    # ------------------------------------------------------------------ event-time rules

    def _eval_events(
        self,
        values: pl.DataFrame,
        gk: np.ndarray,
        row: np.ndarray,
        t: np.ndarray,
        si: np.ndarray,
        out: list[tuple[int, int, int, Transition]],
    ) -> None:
        """Event-time rules on the watched rows ``row`` (frame rows, grouped by key: groups from
        ``si``, keys ``gk``; event times ``t``)."""
        ok, kept = rising_rows(t, si, self._last_t[gk])  # out of order, or a time again: ignored
        n_ok = int(kept.sum())
        if n_ok < len(row):
            self.ignored_rows += len(row) - n_ok
            row, t = row[ok], t[ok]
            live = kept > 0
            if not live.all():
                gk, kept = gk[live], kept[live]
            si = np.cumsum(kept) - kept
        del ok
        v = values.get_column("value").cast(pl.Float64).to_numpy()[row]
        carried = (self._last_t, self._last_v)  # rate kernels read them (updated below)
        seg = Segments(np.repeat(gk, kept), t, v, row, si, carried=carried)
        gbounds = np.searchsorted(self._keys.rf[seg.gk], np.arange(len(self._rfields) + 1))
        glid = self._keys.lid[seg.gk]
        for sel in self._selections.values():
            sub = sel.select(seg, gbounds, glid)
            if sub is not None:
                for er in sel.rules:
                    self._eval_rule(er, sub, out)
        self._last_t[seg.gk] = t[seg.ei]
        self._last_v[seg.gk] = v[seg.ei]
        if len(self._book.resolved) > self._prune_at:
            for key in [k for k in self._book.resolved if k[0] not in self._absence_index]:
                self._book.prune(key, int(self._last_t[key[1]]))
            self._prune_at = max(1024, 2 * len(self._book.resolved))

    def _eval_rule(self, er: _EventRule, s: Segments, out: list[tuple[int, int, int, Transition]]) -> None:
        """Run a rule's kernel; hand the rows where its severity changes to the alert book."""
        kernel = er.kernel
        gl = s.slots
        sev, lvl, sig = kernel.eval(s)
        carried = kernel.sev[gl]
        if sev.any():
            cidx = np.flatnonzero(sev != shift(sev, s, carried))
            kernel.sev[gl] = sev[s.ei]
        else:  # no alert anywhere in the batch: only carried alerts can change (resolve)
            open_ = carried != 0
            cidx = s.si[open_]
            kernel.sev[gl[open_]] = 0
        # keys flapping at batch start, at rows where they may become stable
        flappy = self._flappy_rows(er, s) if er.flapping else cidx[:0]
        if len(cidx) == 0 and len(flappy) == 0:
            return
        self._subjects(er.index, s.kid[cidx], s.kid[flappy])
        touched = apply_changes(
            self._book, er.index, er.describe, s, sev, lvl, sig, cidx, flappy, self._subject_of, out
        )
        for k, slot in touched.items():
            limit = self._book.stable_from((er.index, k))
            if limit is None:
                er.flapping.pop(slot, None)
            else:
                er.flapping[slot] = limit

    @staticmethod
    def _flappy_rows(er: _EventRule, s: Segments) -> np.ndarray:
        """Rows of keys flapping at batch start at or after the time they may become stable."""
        slots = np.array(sorted(er.flapping), dtype=np.int64)
        limits = np.array([er.flapping[k] for k in slots.tolist()], dtype=np.int64)
        at = np.minimum(np.searchsorted(slots, s.slots), len(slots) - 1)
        limit = np.where(slots[at] == s.slots, limits[at], NEVER)
        return np.flatnonzero(s.t >= limit[s.group])

    def _absence_batch(
        self,
        values: pl.DataFrame,
        row: np.ndarray,
        t: np.ndarray,
        si: np.ndarray,
        g_fid: np.ndarray,
        g_sid: np.ndarray,
        out: list[tuple[int, int, int, Transition]],
    ) -> None:
        """Absence rules: the latest data of every series (``row``: the frame rows grouped by
        (field, series), groups from ``si``, of fields ``g_fid`` and series ``g_sid``)."""
        arrival = arrival_of(values)
        g_arr = np.maximum.reduceat(arrival[row], si)
        g_t = np.maximum.reduceat(t, si)
        g_row = row[si]  # rows are in arrival order within a group
        cache: dict[bytes, tuple[np.ndarray, ...]] = {}  # rules counting the same fields share
        for ab in self._absences:
            sig = np.packbits(ab.fid_ok).tobytes()
            if sig not in cache:
                g = np.flatnonzero(ab.fid_ok[g_fid])
                cache[sig] = per_series(g_sid[g], g_t[g], g_arr[g], g_row[g], len(self._series))
            ab.batch(cache[sig], arrival, self._book, out)

    # ------------------------------------------------------------------ subjects

    def _subjects(self, rule_index: int, *keys: np.ndarray) -> None:
        """Cache the subjects of event-rule ``keys`` not cached yet, reading their series in one go."""
        cache = self._subject_cache
        todo = [k for k in unique(np.concatenate(keys)).tolist() if (rule_index, k) not in cache]
        if not todo:
            return
        sids = self._keys.sid[todo].tolist()
        rfs = self._keys.rf[todo].tolist()
        rule = self._rule_names[rule_index]
        for k, sid, rf, (bucket, measurement, tags) in zip(
            todo, sids, rfs, self._series.describe_many(sids), strict=True
        ):
            cache[(rule_index, k)] = Subject(rule, self._series.name(sid), measurement, self._rfields[rf], tags, bucket)

    def _subject_of(self, rule_index: int, key: int) -> Subject:
        subj = self._subject_cache.get((rule_index, key))
        if subj is not None:
            return subj
        if rule_index in self._absence_index:
            return next(a for a in self._absences if a.index == rule_index).subject(key)
        self._subjects(rule_index, np.array([key], dtype=np.int64))
        return self._subject_cache[(rule_index, key)]

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this engine is (picklable). The per-key
        arrays are the engine's own, not copies (the checkpoint pickles the state at once, under
        the step lock) — pickle it before the engine processes again."""
        k = len(self._keys)
        rules: dict[str, Any] = {}
        for e in self._events:
            rules[e.rule.name] = {
                "fingerprint": e.rule.model_dump_json(),
                "slots": e.sel.n,
                "kernel": e.kernel.state(e.sel.n),
                "flapping": dict(e.flapping),
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
            "key_series": self._keys.sid,
            # each key's watched field as an id into these names (not a name per key)
            "rfields": list(self._rfields),
            "key_rf": self._keys.rf,
            "last_t": self._last_t[:k],
            "last_v": self._last_v[:k],
            "rules": rules,
            "absences": absences,
            "alerts": alerts,
            "rows_seen": self.rows_seen,
            "ignored_rows": self.ignored_rows,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (taken from an engine with the same or an edited rule set:
        the state of a rule whose definition changed is dropped, and its alerts forgotten).
        Version 1 states (rule state by key rather than by slot) are converted."""
        version = state.get("version")
        if version not in (1, _STATE_VERSION):
            raise ValueError(f"unknown rule engine state version {version!r}")
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
        if "key_rf" in state:
            names, old_rf = list(state["rfields"]), np.asarray(state["key_rf"], dtype=np.int64)
        else:  # before session 11: the field name of every key
            names = list(dict.fromkeys(state["key_field"]))
            pos = {name: i for i, name in enumerate(names)}
            old_rf = np.array([pos[f] for f in state["key_field"]], dtype=np.int64)
        _, first = np.unique(old_rf, return_index=True)
        field_names = [names[i] for i in old_rf[np.sort(first)].tolist()]  # in order of first key
        for name in field_names:
            self._rfield(name)
        self._fields.add(field_names)
        self._on_new_fields(field_names)
        ks = np.asarray(state["key_series"], dtype=np.int32)
        remap = np.array([self._rfields.index(n) if n in field_names else -1 for n in names], dtype=np.int32)
        kr = remap[old_rf] if len(old_rf) else np.zeros(0, dtype=np.int32)
        self._keys.ids(ks, kr, len(self._series), len(self._rfields))  # same ids, same order
        k = len(self._keys)
        self._new_keys(np.arange(k, dtype=np.int32))  # same slots
        self._last_t[:k] = state["last_t"]
        self._last_v[:k] = state["last_v"]
        kept: set[str] = set()
        for e in self._events:
            st = state["rules"].get(e.rule.name)
            if st is None or st["fingerprint"] != e.rule.model_dump_json():
                continue
            kept.add(e.rule.name)
            if version == 1:
                keys = e.sel.key_of_slot
                e.kernel.restore(_by_slot(st["kernel"], e.kernel, keys), e.sel.n)
                stable_from = np.asarray(st["stable_from"])[keys]
                e.flapping = {i: int(stable_from[i]) for i in np.flatnonzero(stable_from != NEVER).tolist()}
                continue
            if int(st["slots"]) != e.sel.n:
                raise ValueError(f"rule '{e.rule.name}': state of {st['slots']} keys, restored {e.sel.n}")
            e.kernel.restore(st["kernel"], e.sel.n)
            e.flapping = dict(st["flapping"])
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


def _by_slot(st: dict[str, np.ndarray], kernel: Kernel, keys: np.ndarray) -> dict[str, np.ndarray]:
    """A kernel state of version 1 (arrays by key id) by slot (``keys``: the key of each slot)."""
    out = {name: np.asarray(st[name])[keys] for name in kernel.per_key}
    out.update({name: st[name] for name in kernel.other})
    for name in ("active", "start"):  # [level, key]
        if name in st:
            out[name] = np.asarray(st[name])[:, keys]
    return out


def _sev_name(rank: int) -> str:
    return SEVERITIES[rank - 1] if rank else ""
