"""WindowOperator: event-time windows over values frames (clock + windower + aggregation).

The operator buffers the raw rows of *open* windows (so duplicates and late-but-allowed rows are
exact) and aggregates a window once, when it is finalized: when its series' watermark reaches the
window's end. Every window is emitted exactly once; rows behind the watermark are emitted as
``late`` with a reason. ``open_windows()`` shows the provisional aggregates of windows still open
(upsert semantics: later rows within the allowed lateness change them).

Buffer layout. Aligned windows (tumbling, hopping) keep rows per *pane* (``gcd(size, slide)``) as
numpy chunks (integer key id, time, value), each sorted by series id (arrival order kept within a
series; chunks in arrival order), plus a mask of the series present; finalizing groups the rows of
the windows it closes by key with one stable counting sort (arrival order kept within a key) and
aggregates each group in one compiled pass. Finalizing decides per series (arrays over series ids)
and touches a pane only when the watermark of one of its series passed the pane's first window
end; when only some of a pane's series close (idle series, a close cut into parts), their rows
are found by binary search in each chunk. A batch thus costs O(batch) plus O(rows of the windows
it closes), and each window is aggregated once. Session windows keep
one buffer; sessions are recomputed (sort, gaps) only once some watermark passes the earliest end
a session could have. Memory: 24 bytes per buffered raw row (the open window plus lateness).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from sensorium.jit import COUNTING_SMALL, COUNTING_SPAN, pane_buckets
from sensorium.keyindex import Keys, stable_argsort
from sensorium.stream.aggregate import (
    PARTIAL,
    aggregate_rows,
    derived,
    parse_aggregations,
    partial_schema,
)
from sensorium.stream.checkpoint import Frozen
from sensorium.stream.watermark import FIELD_BITS, MAX, MIN, KeyIndex, Watermarks
from sensorium.stream.windows import (
    Hopping,
    Session,
    Windower,
    format_duration,
    parse_duration,
    windower_from,
)

LATE_SCHEMA: dict[str, pl.DataType] = {
    "series": pl.Utf8(), "field": pl.Utf8(), "time": pl.Int64(), "value": pl.Float64(),
    "watermark": pl.Int64(), "reason": pl.Utf8(),
}
#: 2: pane chunks sorted by series, ``stale`` rows (a version-1 reader would aggregate those)
STATE_VERSION = 2
#: Rows aggregated at a time when windows close (see ``WindowOperator._aggregate``).
AGG_ROWS = 1 << 18
#: Chunks a pane holds before they are joined into one (see ``_Pane.add``).
PANE_CHUNKS = 64
#: Rows of a pane's chunk that is never joined with others again (see ``_Pane.add``).
BLOCK_ROWS = 1 << 18
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # kid, time, value
Part = tuple[np.ndarray, int | np.ndarray, np.ndarray, np.ndarray]  # kid, window start(s), time, value


@dataclass(frozen=True, slots=True)
class WindowOutput:
    finalized: pl.DataFrame  # series, field, start, end, <one column per aggregation>
    late: pl.DataFrame  # series, field, time, value, watermark, reason


def _iso(col: str) -> pl.Expr:
    return pl.from_epoch(pl.col(col), time_unit="ns").dt.to_string("%Y-%m-%dT%H:%M:%S%.fZ")


def _concat(chunks: list[Rows]) -> Rows:
    if len(chunks) == 1:
        return chunks[0]
    k, t, v = zip(*chunks, strict=True)
    return np.concatenate(k), np.concatenate(t), np.concatenate(v)


def _unfrozen(chunk: Any) -> Rows:
    """A chunk of state as restored: arrays (read back from a checkpoint) or, from a state taken
    in this process and never pickled, :class:`Frozen` marks around them."""
    k, t, v = (a.array if isinstance(a, Frozen) else a for a in chunk)
    return k, t, v


def _take(rows: Rows, idx: np.ndarray) -> Rows:
    return rows[0][idx], rows[1][idx], rows[2][idx]


def _empty_rows() -> Rows:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)


def _by_series(rows: Rows) -> Rows:
    """``rows`` stably sorted by series id (arrival order kept within a series)."""
    kid = rows[0]
    if kid.size < 2:
        return rows
    sid = kid >> FIELD_BITS
    if bool((sid[1:] >= sid[:-1]).all()):
        return rows
    return _take(rows, stable_argsort(sid - int(sid.min())))


def _series_slice(kid: np.ndarray, lo: int, hi: int) -> slice:
    """The rows of series ``lo..hi`` (inclusive) in a chunk sorted by series id: two binary
    searches (``kid < s << FIELD_BITS`` holds exactly for the rows of series below ``s``, a
    predicate monotone along a chunk sorted by series, whatever the fields' order within one)."""
    a, b = np.searchsorted(kid, np.array([lo << FIELD_BITS, (hi + 1) << FIELD_BITS], dtype=np.int64))
    return slice(int(a), int(b))


class _Pane:
    """Rows of one pane and which series have rows.

    Chunks are sorted by series id (a stable sort: arrival order kept within a series; chunk order
    is arrival order), so the rows of a range of series are two binary searches away in every
    chunk: a close cut into parts (``close_max_rows``) or of a few idle series reads only their
    rows, not the whole pane. ``by_series`` is False for chunks restored from a checkpoint of an
    earlier format (arrival order: every read masks the whole chunk). ``gone``: how many series
    no longer ``present`` (their windows closed) still have rows in the chunks (``stale``);
    dropped only once they are as many as the series kept: a copy of the rest per early close
    would cost O(pane) each time and replace blocks a checkpoint already wrote."""

    __slots__ = ("chunks", "present", "by_series", "gone")

    def __init__(self, chunks: list[Rows], present: np.ndarray, by_series: bool = True, gone: int = 0) -> None:
        self.chunks = chunks
        self.present = present  # bool per series id
        self.by_series = by_series
        self.gone = gone  # series whose rows are still in the chunks though no longer present

    @property
    def stale(self) -> bool:
        return self.gone > 0

    def live_rows(self, n_present: int) -> float:
        """Rows of the present series, estimated (stale rows spread like the others)."""
        rows = sum(c[0].size for c in self.chunks)
        return rows * n_present / max(n_present + self.gone, 1)

    def mark(self, sid: np.ndarray, n: int) -> None:
        if self.present.size < n:
            self.present = np.concatenate([self.present, np.zeros(n - self.present.size, dtype=bool)])
        self.present[sid] = True

    def series(self, n: int) -> np.ndarray:
        """The presence mask, as long as the watermark arrays."""
        if self.present.size < n:
            self.mark(np.empty(0, dtype=np.int64), n)
        return self.present

    def add(self, rows: Rows) -> None:
        """Append a step's rows (sorted by series id). Chunks are kept as they come (finalizing
        and checkpoints go chunk by chunk, no copy); the small ones at the end are joined into one
        (sorted by series again) once they hold :data:`BLOCK_ROWS` rows or number
        :data:`PANE_CHUNKS`, so a long window fed by many small steps does not cost a Python pass
        per step's chunk. Chunks of :data:`BLOCK_ROWS` rows or more are never joined again: a
        checkpoint writes each such block to a file once (``checkpoint.Frozen``)."""
        self.chunks.append(rows)
        if rows[0].size >= BLOCK_ROWS:
            return
        i, tail = len(self.chunks), 0
        while i > 0 and self.chunks[i - 1][0].size < BLOCK_ROWS:
            i -= 1
            tail += self.chunks[i][0].size
        # the small chunks at the end become one block once they hold a block's rows (joins of
        # ~BLOCK_ROWS rows: a join of every chunk of a minute was a stall of its own)
        if len(self.chunks) - i >= 2 and (tail >= BLOCK_ROWS or len(self.chunks) - i >= PANE_CHUNKS):
            joined = _concat(self.chunks[i:])
            self.chunks[i:] = [_by_series(joined) if self.by_series else joined]

    def rows_of(self, pick: np.ndarray, copy: bool = False) -> list[Rows]:
        """The rows of the series ``pick`` (bool per series id, a subset of ``present``), chunk by
        chunk: whole chunks where nothing else is in them, else masked copies — in a pane sorted
        by series only of the part of each chunk between the first and last series picked (a
        slice: a view, or a copy with ``copy``)."""
        if not self.stale and not (self.present & ~pick).any():
            return list(self.chunks)
        at = np.flatnonzero(pick)
        if not at.size:
            return []
        lo, hi = int(at[0]), int(at[-1])
        whole = not self.stale and not (self.present[lo : hi + 1] & ~pick[lo : hi + 1]).any()
        out: list[Rows] = []
        for chunk in self.chunks:
            kid, t, v = chunk
            if self.by_series:
                sl = _series_slice(kid, lo, hi)
                if sl.stop - sl.start < kid.size:
                    kid, t, v = kid[sl], t[sl], v[sl]
                    if copy and whole:
                        kid, t, v = kid.copy(), t.copy(), v.copy()
                if whole:  # every row of the slice is picked (the chunk itself if it is all)
                    if kid.size:
                        out.append((kid, t, v) if kid.size < chunk[0].size else chunk)
                    continue
            m = pick[kid >> FIELD_BITS]
            out.append((kid[m], t[m], v[m]))
        return out

    def drop(self, keep: np.ndarray) -> None:
        """Only the series ``keep`` stay present; their rows are copied out of the others' once
        those (with the ones left stale before) are as many as the series kept (or at once when
        the pane is not sorted by series)."""
        gone = int(np.count_nonzero(self.present & ~keep))
        if not gone:
            return
        if self.by_series and self.gone + gone < int(np.count_nonzero(keep)):
            self.present, self.gone = keep, self.gone + gone
            return
        self.chunks = [c for c in self.rows_of(keep, copy=True) if c[0].size]
        self.present, self.gone = keep, 0


class WindowOperator:
    """Stateful event-time windowing of values frames. ``step_id`` names it in state and errors."""

    def __init__(
        self,
        step_id: str,
        windower: Windower,
        aggregations: tuple[str, ...] | list[str] = ("count", "mean", "min", "max"),
        lateness_ns: int | str = 0,
        idle_timeout_ns: int | str = 60_000_000_000,
        *,
        partials: bool = False,
        sketch: bool = False,
        close_max_rows: int | None = None,
    ) -> None:
        """``close_max_rows``: the most buffered rows one step aggregates for windows that close
        (tumbling and hopping windows; see :meth:`_budget`); None: no limit."""
        self.step_id = step_id
        self.close_max_rows = close_max_rows
        self.deferred = False  # windows due to close wait for the next call (see _budget)
        self.windower = windower
        self.aggregations, self.percentiles = parse_aggregations(aggregations)
        self.partials = partials  # emit key ids and the mergeable partial columns (rollups)
        self.sketch = sketch
        self.lateness_ns = parse_duration(lateness_ns)
        self.idle_timeout_ns = parse_duration(idle_timeout_ns)
        self._keys = KeyIndex()
        self._clock = Watermarks(self.lateness_ns, self.idle_timeout_ns)
        self._done = np.empty(0, dtype=np.int64)  # per series: watermark up to which windows were emitted
        self._panes: dict[int, _Pane] = {}
        self._session: list[Rows] = []
        self._next_close = MAX  # sessions: no session can end before this
        self._open: pl.DataFrame | None = None

    # --- public face ---------------------------------------------------------------------------

    def process(self, values: pl.DataFrame, keys: Keys | None = None) -> WindowOutput:
        """Take a values frame (arrival order; ``keys``: its rows' ids from the framing, if
        known); return the windows it closes and its late rows."""
        part, late = self._process(values, keys)
        return WindowOutput(self.public(part), late)

    def tick(self, now_ns: int) -> WindowOutput:
        """Processing-time tick: idle series' watermarks advance; return the windows that closes."""
        return WindowOutput(self.public(self._tick(now_ns)), pl.DataFrame(schema=LATE_SCHEMA))

    def flush(self) -> WindowOutput:
        """End of stream: close every open window (watermarks go to +infinity)."""
        return WindowOutput(self.public(self._flush()), pl.DataFrame(schema=LATE_SCHEMA))

    def open_windows(self) -> pl.DataFrame:
        """Provisional aggregates of the windows not finalized yet (same columns as finalized)."""
        return self.public(self.open_partials())

    def watermarks(self) -> pl.DataFrame:
        """series, max_time, watermark, last_arrival."""
        return self._clock.frame(self._keys)

    # --- internal face (rollups) ----------------------------------------------------------------

    def _process(self, values: pl.DataFrame, keys: Keys | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
        self._open = None
        if values.height == 0:
            return self._finalize(), pl.DataFrame(schema=LATE_SCHEMA)
        sid, kid = self._keys.encode(values, keys)
        time = values.get_column("time").cast(pl.Int64).to_numpy()
        value = values.get_column("value").cast(pl.Float64).to_numpy()
        arrival = None
        if "arrival" in values.columns:
            arrival = values.get_column("arrival").cast(pl.Int64).fill_null(MIN).to_numpy()
        before = self._clock.observe(sid, time, arrival)
        late = pl.DataFrame(schema=LATE_SCHEMA)
        if before is not None and (is_late := time < before).any():
            late = self._late(values, is_late, before, kid)
            ok = ~is_late
            sid, kid, time, value = sid[ok], kid[ok], time[ok], value[ok]
        if kid.size:
            self._buffer(sid, (kid, time, value))
        return self._finalize(), late

    def _tick(self, now_ns: int) -> pl.DataFrame:
        self._open = None
        self._clock.tick(now_ns)
        return self._finalize()

    def _flush(self) -> pl.DataFrame:
        self._open = None
        self._clock.close_all()
        return self._finalize(budget=False)

    def wm_of(self, kid: np.ndarray) -> np.ndarray:
        """Watermark of the series of each key id up to which its windows were closed (the
        current watermark, except for series whose windows wait past ``close_max_rows``)."""
        return self._done[kid >> FIELD_BITS]

    def public(self, part: pl.DataFrame) -> pl.DataFrame:
        """Partial frame -> series, field, start, end, aggregations (+ partial columns if asked)."""
        series, field = self._keys.names(part.get_column("kid").to_numpy())
        if isinstance(self.windower, Session):
            end = (pl.col("_last_time") + self.windower.gap_ns).alias("end")
        else:
            end = (pl.col("start") + self.windower.size_ns).alias("end")
        out = part.with_columns(series, field, end, *derived(part))
        extra = ["kid", *PARTIAL, *(["_sketch"] if self.sketch else [])] if self.partials else []
        cols = ["series", "field", "start", "end", *self.aggregations]
        return out.select(cols + [c for c in extra if c not in cols])

    # --- buffering and finalizing ---------------------------------------------------------------

    def _late(self, values: pl.DataFrame, mask: np.ndarray, before: np.ndarray, kid: np.ndarray) -> pl.DataFrame:
        """The late rows (``mask``) with their reason; named from their keys ``kid`` when
        ``values`` comes without names (the runner drops them before the rollups)."""
        lateness = format_duration(self.lateness_ns)
        rows = values.filter(pl.Series(mask))
        if "series" not in rows.columns:
            rows = rows.with_columns(*self._keys.names(kid[mask]))
        return (
            rows
            .select("series", "field", pl.col("time").cast(pl.Int64), pl.col("value").cast(pl.Float64))
            .with_columns(pl.Series("watermark", before[mask], dtype=pl.Int64))
            .with_columns(
                pl.format(
                    "event time {} is behind the watermark {} (allowed lateness {})",
                    _iso("time"), _iso("watermark"), pl.lit(lateness),
                ).alias("reason")
            )
        )

    def _buffer(self, sid: np.ndarray, rows: Rows) -> None:
        # Chunks keep arrival order; finalizing groups rows by key with one stable counting sort
        # (aggregate_rows), so sorting here as well would only repeat it.
        if isinstance(self.windower, Session):
            self._session.append(rows)
            self._next_close = min(self._next_close, int(rows[1].min()) + self.windower.gap_ns)
            return
        n = self._clock.wm.size
        w = self.windower
        p, off = w.pane_ns, w.offset_ns % w.pane_ns
        t = rows[1]
        p0, p1 = w.pane_of(np.array([t.min(), t.max()])).tolist()
        if p0 == p1:
            self._pane(p0, _by_series(rows)).mark(self._clock.last_ids, n)
            return
        # rows by pane, then by series, arrival order kept within a series: two compiled passes
        # (counts per (pane, series), then the rows placed), or a stable sort of the same code
        # where the series ids are too sparse for a table of them per pane
        bucketed = pane_buckets(t, sid, rows[0], rows[2], off, p, max(COUNTING_SMALL, COUNTING_SPAN * t.size))
        if bucketed is None:
            q = (t - off) // p
            s0 = int(sid.min())
            cut = stable_argsort((q - int(q.min())) * (int(sid.max()) - s0 + 1) + (sid - s0))
            q = q[cut]
            bounds = np.flatnonzero(np.diff(q)) + 1
            for qi, idx in zip(q[np.append(0, bounds)].tolist(), np.split(cut, bounds), strict=True):
                self._pane(qi * p + off, _take(rows, idx)).mark(sid[idx], n)
            return
        q0, s0, ns, ends, (bk, bt, bv) = bucketed
        ends = ends.reshape(-1, ns)
        start = 0
        for qi in range(ends.shape[0]):
            end = int(ends[qi, -1])
            if end > start:  # a pane's own copy: a view would keep the other panes' rows alive
                chunk = (bk[start:end].copy(), bt[start:end].copy(), bv[start:end].copy())
                counts = np.diff(ends[qi], prepend=start)
                self._pane((q0 + qi) * p + off, chunk).mark(s0 + np.flatnonzero(counts), n)
            start = end

    def _pane(self, q: int, rows: Rows) -> _Pane:
        pane = self._panes.get(q)
        if pane is None:
            pane = self._panes[q] = _Pane([rows], np.zeros(0, dtype=bool))
        else:
            pane.add(rows)
        return pane

    def _closed_to(self) -> np.ndarray:
        """Per series, the watermark up to which its windows were closed (MIN for series new
        since the last close), as long as the watermark arrays."""
        n = self._clock.wm.size
        if self._done.size < n:
            self._done = np.concatenate([self._done, np.full(n - self._done.size, MIN, np.int64)])
        return self._done

    def _finalize(self, budget: bool = True) -> pl.DataFrame:
        now = self._clock.wm
        done = self._closed_to()
        if isinstance(self.windower, Session):
            out = self._finalize_sessions(now)
        else:
            if budget and self.close_max_rows is not None:
                now, self.deferred = self._budget(self.windower, now, done, self.close_max_rows)
            else:
                self.deferred = False
            # while windows wait (a budgeted close), the closed series' rows stay in their panes:
            # trimming would copy every row left in them once per part
            out = self._finalize_panes(self.windower, now, done, trim=not self.deferred)
        self._done = now.copy()
        return out

    def _budget(self, win: Hopping, now: np.ndarray, done: np.ndarray, limit: int) -> tuple[np.ndarray, bool]:
        """The watermarks to close windows up to in this call: ``now``, unless the windows due
        hold more than ``limit`` rows; then the series after the first ones (by id) that fit keep
        their last watermark (``done``) and close on a later call (True: some wait).

        When a minute's windows close together at 100 k points/s they hold ~12 M values (~2 s of
        aggregation in one step: a stall every rule and alert behind it would wait for); cut into
        ``limit``-row parts, the work is spread over the next steps instead. Nothing else changes:
        a row for a window whose end its series' watermark passed is late whether or not the window
        was aggregated yet, so the results are those of an unlimited close, only some come a few
        steps later. A pane's rows are counted as spread evenly over its series (an estimate)."""
        moved = now > done
        if not moved.any():
            return now, False
        top = int(now[moved].max())
        weight = np.zeros(now.size)
        total = 0.0
        for q in sorted(self._panes):
            if win.first_end(q) > top:
                break
            pane = self._panes[q]
            present = pane.series(now.size)
            due = present & moved & (now >= win.first_end(q)) & (done < win.last_end(q))
            n_due = int(np.count_nonzero(due))
            if not n_due:
                continue
            n_present = int(np.count_nonzero(present))
            per = pane.live_rows(n_present) / max(n_present, 1)
            weight[due] += per
            total += per * n_due
        if total <= limit:
            return now, False
        cum = np.cumsum(weight)
        first = int(np.argmax(weight > 0))
        cut = max(int(np.searchsorted(cum, limit, side="right")), first + 1)
        if cut >= now.size:
            return now, False
        now = now.copy()
        now[cut:] = done[cut:]
        return now, True

    def _aggregate(self, parts: list[Part], by_series: bool = False) -> pl.DataFrame:
        """Partials of rows given as (kid, window start(s), time, value) parts (in arrival order).

        Past :data:`AGG_ROWS` rows the keys are cut into ranges of whole series, each aggregated
        on its own and the results concatenated (still sorted by key): the working memory (the
        grouping order, the gathered rows, sketch keys) is that of a slice, not of every row of
        the windows closing — when the minutes of 100 k series close together, ~2.6 M rows.
        ``by_series``: every part is sorted by series id (a pane's chunks), so a range of series
        is a slice of each part (two binary searches, a view), not a mask over all its rows."""
        total = sum(p[0].size for p in parts)
        if total <= AGG_ROWS:
            return self._aggregate_all(parts)
        lo = min(int(p[0].min()) for p in parts if p[0].size) >> FIELD_BITS
        hi = (max(int(p[0].max()) for p in parts if p[0].size) >> FIELD_BITS) + 1
        cuts = np.unique(np.linspace(lo, hi, -(-total // AGG_ROWS) + 1).astype(np.int64))
        frames = []
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            sub: list[Part] = []
            for k, s, t, v in parts:
                if by_series:
                    sl = _series_slice(k, a, b - 1)
                    if sl.stop > sl.start:
                        sub.append((k[sl], s if isinstance(s, int) else s[sl], t[sl], v[sl]))
                    continue
                m = (k >= a << FIELD_BITS) & (k < b << FIELD_BITS)
                if m.any():
                    sub.append((k[m], s if isinstance(s, int) else s[m], t[m], v[m]))
            if sub:
                frames.append(self._aggregate_all(sub))
        return pl.concat(frames) if len(frames) > 1 else frames[0]

    def _aggregate_all(self, parts: list[Part]) -> pl.DataFrame:
        if not parts:
            return pl.DataFrame(schema=partial_schema(self.percentiles, self.sketch))
        if len(parts) == 1:
            k, s, t, v = parts[0]
        else:
            k, t, v = (np.concatenate([p[i] for p in parts]) for i in (0, 2, 3))  # type: ignore[misc]
            starts = {p[1] for p in parts if isinstance(p[1], int)}
            if len(starts) == 1 and all(isinstance(p[1], int) for p in parts):
                s = starts.pop()
            elif all(isinstance(p[1], int) for p in parts):  # aligned windows: rank the few starts here
                rank = {st: i for i, st in enumerate(sorted(starts))}
                lens = [p[0].size for p in parts]
                s = np.repeat(np.array([p[1] for p in parts], dtype=np.int64), lens)
                srank = np.repeat(np.array([rank[p[1]] for p in parts], dtype=np.int64), lens)  # type: ignore[index]
                return aggregate_rows(
                    k, s, t, v, percentiles=self.percentiles, sketch=self.sketch, start_rank=(len(rank), srank)
                )
            else:
                s = np.concatenate([np.broadcast_to(np.asarray(p[1], np.int64), p[0].shape) for p in parts])
        if isinstance(s, int):
            s = np.full(1, s, dtype=np.int64)
        return aggregate_rows(k, s, t, v, percentiles=self.percentiles, sketch=self.sketch)

    def _finalize_panes(self, win: Hopping, now: np.ndarray, done: np.ndarray, trim: bool = True) -> pl.DataFrame:
        """Emit the windows whose end the watermark of their series passed in this step; drop
        the rows no open window needs. Decisions are per series (arrays over series ids); rows are
        only masked when a pane's series do not all decide alike."""
        parts: list[Part] = []
        moved = now > done
        if not moved.any():
            return self._aggregate(parts)
        sorted_parts = True  # every part a slice of a chunk sorted by series (see _aggregate)
        top = int(now[moved].max())
        for q in sorted(self._panes):
            if win.first_end(q) > top:  # panes come in time order: nothing later can close
                break
            pane = self._panes[q]
            present = pane.series(now.size)
            if not (present & (now >= win.first_end(q)) & (now > done)).any():
                continue
            # chunk by chunk, never concatenated here (see _aggregate); a close of some of the
            # pane's series reads only theirs (see _Pane.rows_of)
            for st in win.window_starts(q):
                e = st + win.size_ns
                emit = present & (done < e) & (e <= now)
                if emit.any():
                    parts.extend((kid, st, t, v) for kid, t, v in pane.rows_of(emit))
                    sorted_parts &= pane.by_series
            keep = present & (now < win.last_end(q))
            if not keep.any():
                del self._panes[q]
            elif trim:
                pane.drop(keep)
        return self._aggregate(parts, sorted_parts)

    def _sessions(self) -> tuple[Rows, np.ndarray, np.ndarray]:
        """Buffered rows sorted by (key, time), deduplicated, with session id and session start."""
        win = self.windower
        assert isinstance(win, Session)
        kid, t, v = _concat(self._session)
        order = np.lexsort((t, kid))  # stable: equal times stay in arrival order
        kid, t, v = kid[order], t[order], v[order]
        keep = np.ones(kid.size, dtype=bool)
        keep[:-1] = (kid[1:] != kid[:-1]) | (t[1:] != t[:-1])  # duplicates: the later arrival wins
        kid, t, v = kid[keep], t[keep], v[keep]
        sess = win.session_ids(kid, t)
        first = np.flatnonzero(np.diff(sess, prepend=-1))
        return (kid, t, v), sess, first

    def _finalize_sessions(self, now: np.ndarray) -> pl.DataFrame:
        win = self.windower
        assert isinstance(win, Session)
        if not self._session or int(now.max()) < self._next_close:
            return self._aggregate([])
        (kid, t, v), sess, first = self._sessions()
        lens = np.diff(np.append(first, sess.size))
        end = t[first + lens - 1] + win.gap_ns
        shut = end <= now[kid[first] >> FIELD_BITS]
        closed = np.repeat(shut, lens)
        self._session = [(kid[~closed], t[~closed], v[~closed])]
        self._next_close = int(end[~shut].min()) if (~shut).any() else MAX
        if not shut.any():
            return self._aggregate([])
        start = np.repeat(t[first], lens)
        return self._aggregate([(kid[closed], start[closed], t[closed], v[closed])], by_series=True)

    def open_partials(self) -> pl.DataFrame:
        """Partial frame of the open windows (cached until the next step)."""
        if self._open is not None:
            return self._open
        parts: list[Part] = []
        by_series = True  # session rows come sorted by key; panes' chunks when sorted by series
        if isinstance(self.windower, Session):
            if self._session:
                (kid, t, v), sess, first = self._sessions()
                start = np.repeat(t[first], np.diff(np.append(first, sess.size)))
                parts.append((kid, start, t, v))
        else:
            # open = not closed yet: by the watermark up to which each series' windows were
            # closed (a close cut short by ``close_max_rows`` leaves windows the watermark passed)
            done = self._closed_to()
            for q, pane in self._panes.items():
                present = pane.series(done.size)
                for st in self.windower.window_starts(q):
                    pending = present & (done < st + self.windower.size_ns)
                    if not pending.any():
                        continue
                    # chunk by chunk: joining them would replace blocks a checkpoint wrote already
                    parts.extend((kid, st, t, v) for kid, t, v in pane.rows_of(pending))
                    by_series &= pane.by_series
        self._open = self._aggregate(parts, by_series)
        return self._open

    # --- checkpoints ----------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "windower": self.windower.describe(), "aggregations": self.aggregations,
            "lateness_ns": self.lateness_ns, "idle_timeout_ns": self.idle_timeout_ns,
            "partials": self.partials, "sketch": self.sketch,
        }

    def state(self) -> dict[str, Any]:
        """Picklable snapshot (numpy arrays, polars frames, primitives)."""
        panes = {}
        for q, pane in self._panes.items():  # chunks as they are (a concatenation is a copy)
            # chunks are never changed once made (new rows, a trim: new arrays), so each large
            # one is written to a file by the first checkpoint only
            panes[q] = {
                "chunks": [tuple(Frozen(a) for a in c) for c in pane.chunks], "present": pane.present.copy(),
                "by_series": pane.by_series, "gone": pane.gone,
            }
        session = _concat(self._session) if self._session else _empty_rows()
        return {
            "version": STATE_VERSION, "step_id": self.step_id, "config": self._config(),
            "keys": self._keys.state(), "clock": self._clock.state(), "done": self._done.copy(),
            "panes": panes, "session": session, "next_close": self._next_close,
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state` (of an operator with the same step id and configuration)."""
        if state.get("version") not in (1, STATE_VERSION):  # 1: chunks in arrival order
            raise ValueError(f"{self.step_id}: unsupported window state version {state.get('version')!r}")
        if state["step_id"] != self.step_id or state["config"] != self._config():
            raise ValueError(
                f"{self.step_id}: checkpoint is for step {state['step_id']!r} with {state['config']!r}, "
                f"not {self._config()!r}"
            )
        self._keys.restore(state["keys"])
        self._clock.restore(state["clock"])
        self._done = np.array(state["done"], dtype=np.int64)
        self._panes = {
            int(q): _Pane(
                [_unfrozen(c) for c in p["chunks"]] if "chunks" in p else [(p["kid"], p["time"], p["value"])],
                p["present"].copy(),
                by_series=bool(p.get("by_series", False)),  # earlier checkpoints: arrival order
                gone=int(p.get("gone", 0)),
            )
            for q, p in state["panes"].items()
        }
        self._session = [state["session"]] if state["session"][0].size else []
        self._next_close = int(state["next_close"])
        self._open = None
        # windows may have been waiting to close (a budgeted close): the next call finds out
        self.deferred = self.close_max_rows is not None and not isinstance(self.windower, Session)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> WindowOperator:
        cfg = state["config"]
        op = cls(
            state["step_id"], windower_from(cfg["windower"]), cfg["aggregations"], cfg["lateness_ns"],
            cfg["idle_timeout_ns"], partials=cfg["partials"], sketch=cfg["sketch"],
        )
        op.restore(state)
        return op
