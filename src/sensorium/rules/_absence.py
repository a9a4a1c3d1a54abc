"""Absence (heartbeat) rules: no data from a series, or from a group of series, for a while.

Measured in processing time: every batch records, per group, the latest ``arrival`` of its rows
(their event time when a row has none) and the latest event time; :meth:`Absence.tick` fires for
groups silent for the rule's ``after``. An alert's id uses the latest event time seen before the
silence, so a replay derives the same id. The first row of a silent group in a batch resolves it
(at that row's arrival).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from sensorium.keyindex import NameIndex
from sensorium.rules._book import Book, Subject
from sensorium.rules._kernels import NONE
from sensorium.rules._registry import SeriesTable, grow, series_mask
from sensorium.rules.model import SEVERITY_RANK, AbsenceRule, format_duration, is_glob
from sensorium.rules.types import Transition

_MAX = np.iinfo(np.int64).max


class Absence:
    """One absence rule: its groups (ids in order of first sight) and their last data."""

    def __init__(self, index: int, rule: AbsenceRule) -> None:
        self.index = index  # position of the rule in the rule set (alert book key)
        self.rule = rule
        self.gid_of_sid = np.zeros(0, dtype=np.int32)  # -1: series not in any group
        # group names -> ids in order of first sight, as a column (a dict and a list of 100 k
        # names were ~14 MB per rule at 100 k series)
        self.groups = NameIndex(seed=0x5E753)
        self.first_sid = np.zeros(0, dtype=np.int64)  # per group: its first series (-1: none yet)
        self._subjects: dict[int, Subject] = {}  # made on first use
        self._table: SeriesTable | None = None
        self.last_arrival = np.zeros(0, dtype=np.int64)
        self.last_time = np.zeros(0, dtype=np.int64)
        self.firing = np.zeros(0, dtype=bool)
        self.fid_ok = np.zeros(0, dtype=bool)  # by field id: rows of that field count as data

    def subject(self, gid: int) -> Subject:
        """What group ``gid``'s alerts are about: from the first series seen in the group (its
        bucket and measurement; the group's tags, or all the series' tags without ``group_by``)."""
        subj = self._subjects.get(gid)
        if subj is not None:
            return subj
        sid = int(self.first_sid[gid]) if gid < len(self.first_sid) else -1
        assert sid >= 0 and self._table is not None, "absence group without series"
        bucket, measurement, tags = self._table.describe(sid)
        if self.rule.group_by:
            tags = {g: tags[g] for g in self.rule.group_by}
        name = str(self.groups.column()[gid])
        subj = self._subjects[gid] = Subject(self.rule.name, name, measurement, self.rule.target, tags, bucket)
        return subj

    def add_fields(self, names: list[str]) -> None:
        """Without a field selector every plain field counts (derived values repeat them)."""
        rule = self.rule
        ok = [rule.matches_field(n) if rule.target else ":" not in n for n in names]
        self.fid_ok = np.concatenate([self.fid_ok, np.array(ok, dtype=bool)])

    def add_series(self, fresh: pl.DataFrame, table: SeriesTable) -> None:
        """Put new series (series-frame rows with ``sid``) into their groups. Group names are
        built as a column; a group's subject is made when an alert first needs it."""
        rule = self.rule
        self._table = table
        ok = series_mask(rule, fresh)
        if rule.group_by:
            missing = [g for g in rule.group_by if g not in fresh.columns]
            if missing:
                ok[:] = False
            else:
                ok &= fresh.select(pl.all_horizontal(pl.col(t).is_not_null() for t in rule.group_by)).to_series().to_numpy()
                head = f"{rule.measurement}," if rule.measurement is not None and not is_glob(rule.measurement) else ""
                parts: list[pl.Expr] = []
                for i, tag in enumerate(sorted(rule.group_by)):
                    parts += [pl.lit(f"{',' if i else ''}{tag}="), pl.col(tag).cast(pl.Utf8)]
                names_col = fresh.select(pl.concat_str([pl.lit(head), *parts]).alias("n")).to_series()
        else:
            names_col = fresh.get_column("series")
        gids = np.full(fresh.height, -1, dtype=np.int32)
        sids = fresh.get_column("sid").to_numpy()
        rows = np.flatnonzero(ok)
        if rows.size:
            gid = self.groups.ids(names_col.gather(rows)).astype(np.int32, copy=False)  # new ones added
            gids[rows] = gid
            # each group's first series: for new groups, and for groups restored without series
            first_sid = np.full(len(self.groups), -1, dtype=np.int64)
            first_sid[: len(self.first_sid)] = self.first_sid
            ug, first = np.unique(gid, return_index=True)
            need = first_sid[ug] < 0
            first_sid[ug[need]] = sids[rows[first[need]]]
            self.first_sid = first_sid
        full = np.full(len(table), -1, dtype=np.int32)
        full[: len(self.gid_of_sid)] = self.gid_of_sid
        full[sids] = gids
        self.gid_of_sid = full
        g = len(self.groups)
        self.last_arrival = grow(self.last_arrival, g, NONE)
        self.last_time = grow(self.last_time, g, NONE)
        self.firing = grow(self.firing, g, False)

    def batch(
        self,
        per_series: tuple[np.ndarray, ...],
        arrival: np.ndarray,
        book: Book,
        out: list[tuple[int, int, int, Transition]],
    ) -> None:
        """Record a batch (aggregated per series by :func:`per_series`); resolve groups that
        were silent and sent data again."""
        touched, max_arr, max_t, first_row = per_series
        gid = self.gid_of_sid[touched]
        keep = gid >= 0
        if not keep.any():
            return
        gid, max_arr, max_t, first_row = gid[keep], max_arr[keep], max_t[keep], first_row[keep]
        g = len(self.groups)
        g_arr = np.full(g, NONE, dtype=np.int64)
        g_t = np.full(g, NONE, dtype=np.int64)
        g_row = np.full(g, _MAX, dtype=np.int64)
        np.maximum.at(g_arr, gid, max_arr)
        np.maximum.at(g_t, gid, max_t)
        np.minimum.at(g_row, gid, first_row)
        hit = np.flatnonzero(g_row != _MAX)
        for gi in hit[self.firing[hit]].tolist():
            r0 = int(g_row[gi])
            subj = self.subject(gi)
            when = int(arrival[r0])
            gap = when - int(self.last_arrival[gi])
            msg = f"data from {subj.series} is back after {format_duration(max(0, gap))}"
            for tr in book.change((self.index, gi), subj, when, 0, None, msg, {"silent_ns": gap}):
                out.append((r0, self.index, len(out), tr))
            self.firing[gi] = False
        self.last_arrival[hit] = np.maximum(self.last_arrival[hit], g_arr[hit])
        self.last_time[hit] = np.maximum(self.last_time[hit], g_t[hit])

    def tick(self, now: int, book: Book) -> list[Transition]:
        """Fire for groups silent for ``after``; end flapping; forget settled alerts."""
        rule = self.rule
        out: list[Transition] = []
        seen = self.last_arrival != NONE
        silent = np.flatnonzero(seen & ~self.firing & (now - self.last_arrival >= rule.after))
        if silent.size > 1:  # in order of their names
            silent = silent[self.groups.column().gather(silent).arg_sort().to_numpy()]
        for gid in silent.tolist():
            subj = self.subject(gid)
            msg = f"no data from {subj.series} for {format_duration(rule.after)}"
            extra = {"last_arrival_ns": int(self.last_arrival[gid]), "after_ns": rule.after}
            out += book.change(
                (self.index, gid), subj, now, SEVERITY_RANK[rule.severity], None, msg, extra,
                fired_at=int(self.last_time[gid]),
            )
            self.firing[gid] = True
        mine = sorted(k for k, r in book.records.items() if k[0] == self.index and r.flapping)
        for key in mine:
            tr = book.stabilise(key, self.subject(key[1]), now)
            if tr is not None:
                out.append(tr)
        for key in [k for k in book.resolved if k[0] == self.index]:
            book.prune(key, now)
        return out

    def state(self) -> dict[str, Any]:
        g = len(self.groups)
        return {
            "fingerprint": self.rule.model_dump_json(),
            "names": self.groups.column().to_list(),
            "last_arrival": self.last_arrival[:g].copy(),
            "last_time": self.last_time[:g].copy(),
            "firing": self.firing[:g].copy(),
        }

    def restore_groups(self, st: dict[str, Any]) -> None:
        """Step 1 of a restore, before the series are added: the group ids, in their old order."""
        if st["names"]:
            self.groups.add(list(st["names"]))
        self.first_sid = np.full(len(self.groups), -1, dtype=np.int64)

    def restore(self, st: dict[str, Any]) -> None:
        """Step 2 of a restore, after the series are added: the last data of every group."""
        g = len(st["names"])
        self.last_arrival[:g] = st["last_arrival"]
        self.last_time[:g] = st["last_time"]
        self.firing[:g] = st["firing"]


def arrival_of(values: pl.DataFrame) -> np.ndarray:
    """Processing time of every row: ``arrival``, or the event time where it is missing."""
    if "arrival" not in values.columns:
        return values.get_column("time").to_numpy()
    col = values.get_column("arrival")
    if col.null_count():
        col = values.select(pl.col("arrival").fill_null(pl.col("time"))).to_series()
    return col.cast(pl.Int64).to_numpy()


def per_series(
    sid: np.ndarray, t: np.ndarray, arrival: np.ndarray, rows: np.ndarray, n_series: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(series ids with rows, their latest arrival, latest event time, first row)."""
    max_arr = np.full(n_series, NONE, dtype=np.int64)
    max_t = np.full(n_series, NONE, dtype=np.int64)
    first = np.full(n_series, _MAX, dtype=np.int64)
    np.maximum.at(max_arr, sid, arrival)
    np.maximum.at(max_t, sid, t)
    np.minimum.at(first, sid, rows)
    touched = np.flatnonzero(first != _MAX)
    return touched, max_arr[touched], max_t[touched], first[touched]
