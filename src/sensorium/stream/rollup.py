"""RollupOperator: continuous aggregates of every field at several intervals (1m, 1h, 1d).

The finest interval is a tumbling :class:`~sensorium.stream.window_op.WindowOperator` over the raw
rows (exact, percentiles too). Each coarser interval is built by *merging the finished partials* of
the next finer one (see :mod:`sensorium.stream.aggregate`): a finished minute is folded into its
hour's running partial at once, so a level keeps one row per (series, field) and open window, not
sixty. Finished finer windows are folded one at a time per coarser window, in time order, so the
float results are bit-identical however the log was cut into batches. A coarser window is
finalized when its series' watermark reaches its end — by then every finer window inside it is
finished too, so it is emitted exactly once and complete. Percentiles are exact at the finest
level and estimated from the merged sketch above it (within 1 % of the value, see
:mod:`~sensorium.stream.aggregate`); with a single interval no sketch is built (``_sketch`` null).

Memory: the coarser levels' running partials can wait on disk between the steps that change them
(``spill_dir``, :mod:`sensorium.stream.level`), and a step advances all levels together one key
range at a time, handing each slice of finished partials to a sink as it goes
(:meth:`RollupOperator._cascade`): at 100 k series x fields the levels and the windows that close
together are never in memory whole.

Rows (long format, one per series, field and window)::

    series, field, time (window start, ns), count, sum, mean, min, max, stddev, first, last,
    p50, p95, p99, rate, integral, _m2, _first_time, _last_time, _sketch

The underscore columns keep rows mergeable later: :func:`merge_rows` merges stored rows over a
longer range (percentiles then come from the merged ``_sketch``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sensorium.keyindex import Keys
from sensorium.stream.aggregate import (
    BASIC,
    PARTIAL,
    derived,
    fold_partials,
    merge_partials,
    partial_schema,
    percentile_name,
    with_percentiles,
)
from sensorium.stream.checkpoint import Parts
from sensorium.stream.frame import released
from sensorium.stream.level import Level, LevelCursor, LevelWriter
from sensorium.stream.window_op import LATE_SCHEMA, WindowOperator
from sensorium.stream.windows import Tumbling, format_duration, parse_duration

STATE_VERSION = 1
#: Rows of finished finer partials folded into a coarser level at a time (see ``RollupOperator._fold``).
FOLD_ROWS = 65_536
_MERGE_COLS = ["kid", "start", *PARTIAL, "_sketch"]
#: where a cascade hands finished partials: (interval, a key-complete slice of them)
Sink = Callable[[str, pl.DataFrame], None]


def row_columns(percentiles: Sequence[float] = (50, 95, 99)) -> list[str]:
    """Column order of rollup rows."""
    stats = [c for c in BASIC if c not in ("rate", "integral")]
    return ["series", "field", "time", *stats, *(percentile_name(q) for q in percentiles),
            "rate", "integral", "_m2", "_first_time", "_last_time", "_sketch"]


def row_schema(percentiles: Sequence[float] = (50, 95, 99)) -> dict[str, pl.DataType]:
    """Column types of rollup rows."""
    ints = {"time", "count", "_first_time", "_last_time"}
    types: dict[str, pl.DataType] = {"series": pl.Utf8(), "field": pl.Utf8(), "_sketch": pl.Binary()}
    return {c: types.get(c, pl.Int64() if c in ints else pl.Float64()) for c in row_columns(percentiles)}


@dataclass(frozen=True, slots=True)
class RollupOutput:
    finalized: dict[str, pl.DataFrame]  # interval -> rows of the windows finished in this step
    late: pl.DataFrame  # series, field, time, value, watermark, reason


@dataclass(frozen=True, slots=True)
class RollupPartials:
    """What a step finished, as mergeable partials per interval (the operator's state already
    moved on): :meth:`RollupOperator.rows` turns any slice of them into rollup rows, so a caller
    can make and hand on the rows of 500 k windows a slice at a time."""

    partials: dict[str, pl.DataFrame]  # interval -> partials (kid, start, ...) of finished windows
    late: pl.DataFrame


def _check_intervals(intervals: Sequence[str | int]) -> list[int]:
    if not intervals:
        raise ValueError("rollup needs at least one interval")
    sizes = [parse_duration(i) for i in intervals]
    for name, size in zip(intervals, sizes, strict=True):
        if size <= 0:
            raise ValueError(f"rollup interval {name!r} must be positive")
    for (fa, a), (fb, b) in zip(zip(intervals, sizes, strict=True), zip(intervals[1:], sizes[1:], strict=True), strict=False):
        if b <= a or b % a:
            raise ValueError(
                f"rollup interval {fb!r} ({format_duration(b)}) must be a whole multiple (>1) of the finer "
                f"interval {fa!r} ({format_duration(a)}): coarser levels are merged from finer ones"
            )
    return sizes


class RollupOperator:
    """Rollups of values frames at ``intervals`` (finest first, each dividing the next)."""

    def __init__(
        self,
        step_id: str,
        intervals: Sequence[str | int] = ("1m", "1h", "1d"),
        percentiles: Sequence[float] = (50, 95, 99),
        lateness_ns: int | str = 0,
        idle_timeout_ns: int | str = 60_000_000_000,
        spill_dir: Path | None = None,
        close_max_rows: int | None = None,
    ) -> None:
        """``spill_dir``: where the coarser levels' running partials are kept between the steps
        that change them (see :mod:`sensorium.stream.level`); in memory without one.
        ``close_max_rows``: the most buffered values one step aggregates for the finest level's
        windows that close; the rest close on the next calls (:attr:`deferred`)."""
        self.step_id = step_id
        self.sizes = _check_intervals(intervals)
        self.intervals = tuple(str(i) for i in intervals)
        self.percentiles = tuple(float(q) for q in percentiles)
        self.columns = row_columns(self.percentiles)
        aggs = [*BASIC, *(percentile_name(q) for q in self.percentiles)]
        self._base = WindowOperator(
            f"{step_id}/{self.intervals[0]}", Tumbling(self.sizes[0]), aggs, lateness_ns, idle_timeout_ns,
            partials=True, sketch=len(self.sizes) > 1, close_max_rows=close_max_rows,
        )
        empty = pl.DataFrame(schema={c: d for c, d in partial_schema((), True).items()})
        self._empty_partials = empty
        # running partials per coarser level
        self._levels = [
            Level(empty, None if spill_dir is None else Path(spill_dir) / f"{_file_name(step_id)}-{iv}")
            for iv in self.intervals[1:]
        ]
        self._open: dict[int, pl.DataFrame] = {}
        self._failed = False  # a step failed part-way: finished partials are lost (see _cascade)
        self._empty = pl.DataFrame(schema=row_schema(self.percentiles))

    # --- public face ---------------------------------------------------------------------------

    def process(self, values: pl.DataFrame, keys: Keys | None = None) -> RollupOutput:
        """Take a values frame (arrival order; ``keys``: its rows' ids from the framing, if
        known); return the rows of every window it finishes."""
        return self._output(self.process_partials(values, keys))

    def tick(self, now_ns: int) -> RollupOutput:
        """Processing-time tick (idle series); return the rows of the windows that finishes."""
        return self._output(self.tick_partials(now_ns))

    def flush(self) -> RollupOutput:
        """End of stream: finish every open window at every level."""
        return self._output(RollupPartials(self._cascade([self._base._flush()]), pl.DataFrame(schema=LATE_SCHEMA)))

    def process_partials(self, values: pl.DataFrame, keys: Keys | None = None, sink: Sink | None = None) -> RollupPartials:
        """:meth:`process`, the finished windows left as partials (see :meth:`rows`); with a
        ``sink``, handed to it slice by slice as they finish instead (see :meth:`_cascade`)."""
        part, late = self._base._process(values, keys)
        held = [part]
        del part  # the cascade owns the finished minutes: released slice by slice as they are stored
        return RollupPartials(self._cascade(held, sink), late)

    def tick_partials(self, now_ns: int, sink: Sink | None = None) -> RollupPartials:
        """:meth:`tick`, the finished windows left as partials (see :meth:`process_partials`)."""
        return RollupPartials(self._cascade([self._base._tick(now_ns)], sink), pl.DataFrame(schema=LATE_SCHEMA))

    def rows(self, interval: str, partials: pl.DataFrame) -> pl.DataFrame:
        """Rollup rows of finished partials at ``interval`` (row by row: any slice will do)."""
        return self._rows(partials, self._level(interval))

    def _output(self, p: RollupPartials) -> RollupOutput:
        return RollupOutput({iv: self.rows(iv, part) for iv, part in p.partials.items()}, p.late)

    def open_rows(self, interval: str) -> pl.DataFrame:
        """Provisional rows of the windows at ``interval`` not finished yet (finished finer partials
        merged with the finer open windows); cached until the next step."""
        return self._rows(self._open_level(self._level(interval)), self._level(interval))

    def watermarks(self) -> pl.DataFrame:
        return self._base.watermarks()

    @property
    def deferred(self) -> bool:
        """Windows due to close wait for the next call (``close_max_rows``): a call with no
        values (:meth:`process_partials` of an empty frame) closes the next part of them."""
        return self._base.deferred

    def close(self) -> None:
        """Drop the coarser levels' running partials (and their spill files): for after the last
        checkpoint, which holds them; :meth:`restore` makes the operator usable again."""
        for level in self._levels:
            level.clear()
        self._open = {}

    # --- levels ---------------------------------------------------------------------------------

    def _level(self, interval: str) -> int:
        try:
            return self.intervals.index(str(interval))
        except ValueError:
            raise ValueError(f"{self.step_id}: no rollup interval {interval!r} (have {', '.join(self.intervals)})") from None

    def _cascade(self, held: list[pl.DataFrame], sink: Sink | None = None) -> dict[str, pl.DataFrame]:
        """Finished partials per interval: the finest level's, then each coarser level's after
        folding in the finer one's.

        The levels are advanced together, one key range at a time (see :class:`_Cascade`): a
        slice of about :data:`FOLD_ROWS` finished finer partials, cut at key boundaries, is folded
        into the next level's running partials of its key range, whose finished windows fold into
        the level above, and so on; each slice of finished partials goes to ``sink(interval,
        partials)`` once the level above has taken it. With a sink (the runner, storing rows as
        they come), the finished partials of 100 k series' hours closing together are never in
        memory whole; without one they are collected and returned (an empty dict with a sink).
        ``held``: a list holding the finest level's finished partials, emptied here (so that
        they are released slice by slice as they are handed on, not at the end).

        The finer level has already moved on when this runs, so a failure anywhere in it loses
        finished partials: the operator is then marked failed (:meth:`state` refuses, open rows
        read the lost levels as empty) until restored from the last checkpoint."""
        self._open = {}
        base = held.pop()
        got: dict[str, list[pl.DataFrame]] = {iv: [] for iv in self.intervals}
        base_empty = base.clear()
        run = _Cascade(self, sink if sink is not None else lambda iv, part: got[iv].append(part))
        try:
            base = _sorted(base, ("kid", "start"))
            kid = base.get_column("kid").to_numpy()
            cuts = np.unique(np.searchsorted(kid, kid[FOLD_ROWS::FOLD_ROWS], side="left"))
            del kid
            bounds = [0, *cuts.tolist(), base.height]
            pieces = [base.slice(lo, hi - lo) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]
            del base
            for piece in released(pieces):
                run.push(0, piece)
                del piece
            run.finish()
        except BaseException:
            run.abort()
            self._failed = True  # for good: only a restore makes the operator whole again
            raise
        if sink is not None:
            return {}
        return {
            iv: (pl.concat(parts, rechunk=False) if len(parts) > 1 else parts[0]) if parts
            else (base_empty if i == 0 else self._empty_partials)
            for i, (iv, parts) in enumerate(got.items())
        }

    def _lift(self, finer: pl.DataFrame, i: int) -> pl.DataFrame:
        size = self.sizes[i]
        return finer.select(_MERGE_COLS).with_columns((pl.col("start") // size * size).alias("start"))

    def _merge(self, held: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
        """Running partials ``held`` (sorted by kid, start) with finished finer partials ``new``
        folded in (sorted by kid, start, _first_time; lifted to the level's windows).
        Within a key, finer partials are folded one at a time per window, in time order: the float
        arithmetic then does not depend on how many finished in one step, so the rows are
        bit-identical however the log was cut into batches (and after a replay)."""
        return fold_partials(held, new)

    def _open_level(self, i: int) -> pl.DataFrame:
        if i in self._open:
            return self._open[i]
        if i == 0:
            part = self._base.open_partials()
        else:
            finer = self._open_level(i - 1)
            both = pl.concat([self._levels[i - 1].frame(), self._lift(finer, i)])
            part = merge_partials(both, percentiles=(), sketch=True)
        self._open[i] = part
        return part

    def _rows(self, part: pl.DataFrame, i: int) -> pl.DataFrame:
        """Partial frame of level ``i`` -> rollup rows."""
        if part.height == 0:
            return self._empty
        if i > 0:
            part = with_percentiles(part, self.percentiles)
        pub = self._base.public(part)
        if "_sketch" not in pub.columns:
            pub = pub.with_columns(pl.lit(None, dtype=pl.Binary).alias("_sketch"))
        return pub.rename({"start": "time"}).select(self.columns)

    # --- checkpoints ----------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {"intervals": self.intervals, "sizes": self.sizes, "percentiles": self.percentiles}

    def state(self) -> dict[str, Any]:
        """Picklable snapshot of the whole rollup (raw buffer, watermarks, running partials)."""
        if self._failed:
            raise RuntimeError(f"{self.step_id}: a step failed part-way; restart from the last checkpoint")
        return {
            "version": STATE_VERSION, "step_id": self.step_id, "config": self._config(),
            # Arrow tables, not Polars frames: a frame pickles as one serialised bytes copy of
            # itself (at 100 k series the open hour's partials made a checkpoint the peak),
            # a table's buffers stream to the checkpoint file as they are
            # each level's rows as Arrow record batches, read one at a time while the checkpoint
            # is written (see sensorium.stream.checkpoint.Parts)
            "base": self._base.state(), "acc": [Parts(level.batches) for level in self._levels],
        }

    def restore(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.step_id}: unsupported rollup state version {state.get('version')!r}")
        if state["step_id"] != self.step_id or state["config"] != self._config():
            raise ValueError(
                f"{self.step_id}: checkpoint is for step {state['step_id']!r} with {state['config']!r}, "
                f"not {self._config()!r}"
            )
        self._base.restore(state["base"])
        for level, rows in zip(self._levels, state["acc"], strict=True):
            level.restore(rows)
        self._open = {}
        self._failed = False


class _Cascade:
    """One pass of finished partials up through the coarser levels (see
    :meth:`RollupOperator._cascade`). Each coarser level opened by the pass hands its running
    partials over as a :class:`~sensorium.stream.level.LevelCursor` and gets the new ones
    through a writer, both in key order: the input of a level comes in key-complete slices in
    ascending key order, so the rows of the level it merges with are the cursor's rows up to the
    slice's last key (rows of keys the slice lacks pass through with it); what is left of a
    level at the end passes through last. A slice's merged rows are split into windows still open
    (written back) and finished ones (pushed to the level above, then to the sink)."""

    def __init__(self, op: RollupOperator, sink: Sink) -> None:
        self.op = op
        self.sink = sink
        self.open: dict[int, tuple[LevelCursor, LevelWriter]] = {}

    def _level(self, i: int) -> tuple[LevelCursor, LevelWriter]:
        if i not in self.open:
            level = self.op._levels[i - 1]
            self.open[i] = (level.cursor(), level.writer())
        return self.open[i]

    def push(self, i: int, done: pl.DataFrame) -> None:
        """``done``: finished partials of level ``i`` (a key-complete slice, after every slice of
        lower keys): fold them into level ``i + 1``, then hand them to the sink."""
        ups: list[pl.DataFrame] = []
        if done.height and i + 1 < len(self.op.sizes):
            new = _sorted(self.op._lift(done, i + 1), ("kid", "start", "_first_time"))
            cursor, _ = self._level(i + 1)
            held = cursor.until(int(new.get_column("kid")[-1]))
            # the held rows of keys below this slice's have nothing to fold in: split as they are
            # (a close cut short by ``close_max_rows`` resumes at a high key, with most of the
            # level below it — merging all of that again was ~300 MB at 100 k series)
            cut = int(np.searchsorted(held.get_column("kid").to_numpy(), int(new.get_column("kid")[0]), side="left"))
            if cut:
                ups.append(self._split(i + 1, held.slice(0, cut)))
            merged = self.op._merge(held.slice(cut), new)
            del held, new
            ups.append(self._split(i + 1, merged))
            del merged
        if done.height:
            self.sink(self.op.intervals[i], done)
        del done
        for up in released(ups):
            if up.height:
                self.push(i + 1, up)
            del up

    def _done(self, i: int, kid: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Which windows of level ``i`` are finished: their series' watermark passed their end."""
        return self.op._base.wm_of(kid) >= start + self.op.sizes[i]

    def _split(self, i: int, rows: pl.DataFrame) -> pl.DataFrame:
        """Write the rows of windows still open back to level ``i``; return the finished ones."""
        _, writer = self._level(i)
        done = self._done(i, rows.get_column("kid").to_numpy(), rows.get_column("start").to_numpy())
        if done.all():  # e.g. the hour of every series closing together: no copies
            return rows
        if not done.any():
            writer.add(rows)
            return rows.clear()
        mask = pl.Series(done)
        writer.add(rows.filter(~mask))
        return rows.filter(mask)

    def finish(self) -> None:
        """Pass what is left of each level through (windows whose series' watermark passed
        them finish too), lowest level first, and commit the levels."""
        for i in range(1, len(self.op.sizes)):
            level = self.op._levels[i - 1]
            if i not in self.open:
                if not level.height or not self._done(i, level.kid, level.start).any():
                    continue  # untouched: nothing came in, nothing finishes
            cursor, writer = self._level(i)
            # a slice at a time: when a close was cut short (``close_max_rows``), what is left of
            # the level is most of it (an hour level at 100 k series: ~440 k rows, ~290 MB in
            # one piece)
            for rest in cursor.rest_slices(FOLD_ROWS):
                if rest.height:
                    self.push(i, self._split(i, rest))
                del rest
            cursor.close()
            writer.commit()
        self.open = {}

    def abort(self) -> None:
        for cursor, writer in self.open.values():
            cursor.close()
            writer.abort()
        self.open = {}


def _file_name(step_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in step_id)


def _sorted(part: pl.DataFrame, cols: tuple[str, ...]) -> pl.DataFrame:
    """``part`` sorted by ``cols`` (stable). Finished partials come sorted by kid and their own
    start, which lifting to a coarser start keeps: then this is a check, not a copy."""
    ok = np.ones(max(part.height - 1, 0), dtype=bool)  # rows 1.. are >= the row before so far
    tie = ok.copy()  # and equal to it in every column so far
    for c in cols:
        d = np.diff(part.get_column(c).to_numpy())
        ok &= ~tie | (d >= 0)
        ok |= tie & (d > 0)
        tie &= d == 0
    return part if ok.all() else part.sort(*cols, maintain_order=True)


def merge_rows(
    rows: pl.DataFrame, every: str | int | None = None, percentiles: Sequence[float] = (50, 95, 99)
) -> pl.DataFrame:
    """Merge stored rollup rows per series and field (and per ``every`` bucket of ``time``)."""
    f = rows
    if every is not None:
        size = parse_duration(every)
        f = f.with_columns((pl.col("time") // size * size).alias("time"))
    else:
        f = f.with_columns(pl.col("time").min().over("series", "field"))
    merged = merge_partials(f, by=("series", "field", "time"), percentiles=percentiles, sketch=True)
    return merged.with_columns(*derived(merged)).select(row_columns(percentiles))

