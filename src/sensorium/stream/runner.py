"""The stream runner: consumes the log in offset order, in micro-batches, through named stages.

Stages (each with a ``step_id`` that keys its state in the checkpoint):

``rolling``   last-N statistics per series and field (derived values ``<field>:avg_10`` ...)
``rollups``   continuous aggregates ``<measurement>_1m`` / ``_1h`` / ``_1d`` (+ late data)
``detect``    anomaly scores per point (``<field>:anomaly_score`` for rules, ``anomaly_scores`` table)
``quality``   data-quality checks (stuck, spikes, dropouts, drift) → ``quality_findings`` table
``compress``  optional historian compression (swinging door / deadband) → ``historian`` table
``rules``     thresholds, durations, rates, absence, CEP → alert transitions
user stages   :class:`~sensorium.stream.pipeline.Pipeline` objects given to the platform

Exactly once: every ``checkpoint_interval_s`` the runner writes ONE file holding the last log
offset it processed, every stage's state and the outbox of finished rows (rollups, late data),
then commits the outbox to Delta with the checkpoint number as a transaction version. After a
crash it loads the checkpoint, re-delivers the outbox (skipped by tables that already hold that
version) and replays the log from the next offset. Alert transitions are stored at once (not at
checkpoints, for latency); they are a deterministic function of the log, so the replay
re-derives the same ids and sequence numbers and the alert store and the delivery outbox ignore
what they already hold.

Processing time comes from the injected clock and from each record's append time in the log
(``arrival``), never from ``datetime.now()``; ticks (idle watermarks, absence) start only once
the replay has caught up with the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl
import pyarrow as pa

from sensorium import jit
from sensorium.config import Settings
from sensorium.errors import ConfigError
from sensorium.keyindex import Keys, NameIndex, keys_of
from sensorium.obs.memory import lean
from sensorium.obs.memory import trim as trim_heap
from sensorium.rules.types import Transition
from sensorium.stream.behind import Behind
from sensorium.stream.checkpoint import CheckpointStore, Written
from sensorium.stream.detect_stage import SCORES_TABLE, DetectStage, specs_from_settings
from sensorium.stream.frame import (
    Batch,
    SeriesCombos,
    concat_columns,
    empty_values,
    keyed_frames,
    released,
)
from sensorium.stream.frame import named as named_values
from sensorium.stream.outputs import APP_ID as DERIVED_APP_ID
from sensorium.stream.outputs import LATE_TABLE, DerivedTables, stream_store, to_arrow
from sensorium.stream.series import SeriesIndex

if TYPE_CHECKING:
    from sensorium.stream.rollup import RollupPartials

#: Rows of finished rollup windows joined with their series' tags at a time.
OUTPUT_ROWS = 65_536
log = logging.getLogger("sensorium.stream")
NS = 1_000_000_000
ROLLING_TABLE = "rolling_stats"
LATE_SCHEMA = pa.schema(
    [("time", pa.int64()), ("measurement", pa.string()), ("field", pa.string()), ("value", pa.float64()),
     ("watermark", pa.int64()), ("reason", pa.string())]
)
#: built-in pipelines that may run on the side thread (their results feed no other stage)
SIDE_PIPELINES = frozenset({"quality", "compress"})
FINDINGS_TABLE = "quality_findings"
HISTORIAN_TABLE = "historian"
HISTORIAN_SCHEMA = pa.schema(
    [("time", pa.int64()), ("measurement", pa.string()), ("field", pa.string()), ("value", pa.float64())]
)
SHARED_TABLES = frozenset({FINDINGS_TABLE, HISTORIAN_TABLE})  # pipeline outputs spanning measurements
SCORES_SCHEMA = pa.schema(
    [("time", pa.int64()), ("measurement", pa.string()), ("field", pa.string()), ("value", pa.float64()),
     ("score", pa.float64())]
)


class UserStage(Protocol):
    """What :class:`~sensorium.stream.pipeline.Pipeline` provides to the runner. A stage may
    also have ``needs_values() -> bool``: False skips its ``process`` for that step (it would
    ignore the values), so the runner need not name them."""

    step_id: str

    def process(self, values: pl.DataFrame, series: pl.DataFrame) -> dict[str, pl.DataFrame]: ...

    def tick(self, now_ns: int) -> dict[str, pl.DataFrame]: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: dict[str, Any]) -> None: ...


class _Named:
    """A step's values with their ``series`` and ``field`` names, made on first call (from the
    keys) and kept until :meth:`release`: only the stages that read names pay for them."""

    __slots__ = ("frame", "keys", "values")

    def __init__(self, values: pl.DataFrame, keys: Keys) -> None:
        self.values, self.keys = values, keys
        self.frame: pl.DataFrame | None = None

    def __call__(self) -> pl.DataFrame:
        if self.frame is None:
            self.frame = named_values(self.values, self.keys)
        return self.frame

    def release(self) -> None:
        self.frame = None


def _needs_values(stage: Any) -> bool:
    """Whether a user stage would read this step's values (an optional ``needs_values()``;
    without one, always)."""
    needs = getattr(stage, "needs_values", None)
    return needs is None or bool(needs())


class StreamRunner:
    def __init__(
        self,
        root: Path,
        settings: Settings,
        *,
        clock: Callable[[], int] = time.time_ns,
        rules: Any = None,
        pipelines: Sequence[UserStage] = (),
        on_transitions: Callable[[list[Transition]], None] | None = None,
        before_checkpoint: Callable[[], None] | None = None,
        outputs_done: Callable[[], None] | None = None,
        metrics: Any = None,
        derived_root: Path | None = None,
        app_id: str = DERIVED_APP_ID,
    ) -> None:
        """``derived_root``/``app_id``: where stream outputs are committed and under which
        transaction id (default ``root/lake``; a worker's partition runner shares one lake with
        the other partitions, each with its own id). ``on_transitions`` gets each step's alert
        transitions; ``before_checkpoint`` runs before a checkpoint is written (what it covers
        must be stored by then); ``outputs_done`` at the end of every :meth:`drain` (what
        ``on_transitions`` handed to another thread is done)."""
        from sensorium.rules.engine import RuleEngine
        from sensorium.rules.loader import load_rules
        from sensorium.stream.rolling import RollingStats
        from sensorium.stream.rollup import RollupOperator

        jit.prepare()  # loaded (on a fresh machine: built) on a thread while the runner sets up
        st = settings.stream
        self.settings = settings
        self.clock = clock
        self.root = Path(root)
        self.default_bucket = settings.default_bucket
        self.checkpoints = CheckpointStore(self.root)
        self.derived = DerivedTables(
            derived_root or self.root / "lake", settings.store, app_id=app_id, store=stream_store(settings),
            # finished rows wait for their checkpoint in files, not in memory (~80 MB a minute
            # at 100 k series), and go to the lake a file at a time
            spill_dir=self.root / "outbox",
        )
        self.derived.open_rows = self._open_rows
        self.derived.open_names = self._open_names
        # the framing names every row's series and field by an id in these (not checkpointed:
        # each stage keeps its own ids, and maps these to them; see keyindex.Remap)
        self._names = (NameIndex(), NameIndex())
        self.series = SeriesIndex(self._names[0])  # new series found by their framing ids
        self._combos = SeriesCombos()  # a series seen before found by its tags' hash (framing)
        lateness = int(st.lateness_s * NS)
        idle = int(st.idle_timeout_s * NS)
        self.intervals = tuple(st.rollups)
        self.rolling = RollingStats("rolling", n=st.rolling_window)
        self.rollups = (
            RollupOperator(
                "rollups",
                intervals=self.intervals,
                percentiles=tuple(st.rollup_percentiles),
                lateness_ns=lateness,
                idle_timeout_ns=idle,
                # the hour's and the day's running partials (~90 MB each at 100 k series) wait
                # on disk between the folds that change them
                spill_dir=self.root / "spill",
                close_max_rows=st.close_max_rows,
            )
            if self.intervals
            else None
        )
        self.detect = self._detect_stage(settings)
        self.ruleset = rules if rules is not None else load_rules(st.rules_file)
        self.rules = RuleEngine(
            self.ruleset,
            flap_window_ns=int(settings.alerts.flap_window_s * NS),
            flap_max_changes=settings.alerts.flap_max_changes,
        )
        self.pipelines = list(pipelines)
        if settings.detect.quality.enabled:
            self.pipelines.append(self._quality_stage(settings))
        if settings.detect.compression.enabled:
            from sensorium.detect.compression import CompressionStage

            c = settings.detect.compression
            self.pipelines.append(CompressionStage(c.method, c.error, dict(c.errors), c.max_gap_s))
        ids = [p.step_id for p in self.pipelines]
        if len(set(ids)) != len(ids) or {"rolling", "rollups", "rules", "detect"} & set(ids):
            raise ValueError(f"pipeline step ids must be unique and not rolling/rollups/detect/rules: {ids}")
        self.on_transitions = on_transitions
        # called before each checkpoint is saved: whoever stores the transitions without syncing
        # every commit makes them durable here (the checkpoint's offset means "derived and kept")
        self.before_checkpoint = before_checkpoint
        self.outputs_done = outputs_done
        self._inbox: deque[Batch] = deque()
        self._inbox_rows = 0
        self._cond = threading.Condition()
        self._step_lock = threading.Lock()
        self.offset = -1  # last log offset processed
        self.checkpoint_offset = -1  # last log offset covered by the checkpoint on disk
        self.seq = 0  # checkpoint number
        self.caught_up = False
        self.stats: dict[str, float] = {"rows": 0, "values": 0, "steps": 0, "late": 0, "transitions": 0}
        self._last_checkpoint = time.monotonic()
        self._last_tick = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.metrics = metrics
        self._held: list[pl.DataFrame] = []  # values the side pipelines have not seen yet
        self._held_rows = 0
        self._held_since = 0.0
        self._side: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(1, thread_name_prefix="sensorium-stream-side") if st.parallel_stages else None
        )
        self._side_jobs: deque[tuple[Future[None], int]] = deque()  # in order, with their values rows
        self._computed: deque[tuple[str, Any]] = deque()  # side outputs not stored yet, in order
        self._compute_lock = threading.Lock()  # held by the side thread while a job runs
        self.derived.read_guard = self._view_guard
        # commits a checkpoint's outbox to the lake while the stream thread goes on (one at a time)
        self._deliverer = Behind("sensorium-stream-deliver")
        self._restore()

    @staticmethod
    def _detect_stage(settings: Settings) -> DetectStage | None:
        if not settings.detect.enabled:
            return None
        try:
            return DetectStage(specs_from_settings(settings.detect.detectors), settings.detect.exclude_measurements)
        except (KeyError, ValueError, TypeError) as exc:
            msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise ConfigError(f"[detect] detectors: {msg}") from None

    @staticmethod
    def _quality_stage(settings: Settings) -> UserStage:
        from sensorium.detect.quality import QualityStage

        q = settings.detect.quality
        try:
            return QualityStage(**{"peer_tags": tuple(q.peer_tags), **q.params})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[detect.quality] params: {exc}") from None

    # -- state ---------------------------------------------------------------------------------
    def _stages(self) -> dict[str, Any]:
        stages: dict[str, Any] = {"rolling": self.rolling, "rules": self.rules}
        if self.detect is not None:
            stages["detect"] = self.detect
        if self.rollups is not None:
            stages["rollups"] = self.rollups
        for p in self.pipelines:
            stages[p.step_id] = p
        return stages

    def _restore(self) -> None:
        cp = self.checkpoints.load()
        if cp is None:
            return
        self.offset = self.checkpoint_offset = int(cp["offset"])
        self.seq = int(cp["seq"])
        self.series.restore(cp["series"])
        for step_id, stage in self._stages().items():
            if step_id in cp["stages"]:
                stage.restore(cp["stages"][step_id])
            # a stage added since the checkpoint starts empty
        self.derived.restore_outbox(cp["outbox"])
        self.derived.deliver(self.seq)

    def checkpoint(self, wait: bool = True) -> int:
        """Write a checkpoint (state + offset + outbox), then commit the outbox to the lake.
        Returns its seq. ``wait=False`` (the stream thread) commits the outbox on a delivery
        thread while the stream goes on; the next checkpoint waits for it (and raises its error)."""
        self._wait_delivery()
        with self._step_lock, self.derived.lock:
            self._flush_held(self._parallel())
            self._wait_side()  # every side job, the held pipelines' too
            self.seq += 1
            outbox = self.derived.outbox()  # what this checkpoint holds, and later commits
            state = {
                "offset": self.offset,
                "seq": self.seq,
                "series": self.series.state(),
                "outbox": self.derived.checkpoint_form(outbox),
                "written_ns": self.clock(),
            }
            if self.before_checkpoint is not None:
                self.before_checkpoint()
            # each stage's state is taken as it is written (one in memory at a time)
            written = self.checkpoints.write(state, {k: s.state for k, s in self._stages().items()})
            offset, seq = self.offset, self.seq
        if wait:
            self._complete(written, offset, seq, outbox)
        else:
            # the file's fsync (0.1-1 s under a write load) and the lake commit (~0.4 s for a
            # checkpoint's rollup rows) off the stream thread: until they are done the log keeps
            # everything after the previous checkpoint, the outbox stays in memory and queries
            # read it there
            self._deliverer.submit(self._complete, written, offset, seq, outbox)
        del state, outbox
        self._last_checkpoint = time.monotonic()
        trim_heap(force=True)  # the checkpoint's buffers and the state copies it freed
        return seq

    def _complete(self, written: Written, offset: int, seq: int, outbox: Any) -> None:
        """A written checkpoint made durable, then its outbox committed to the lake (in this
        order: a lake commit names its checkpoint, which must survive a crash)."""
        self.checkpoints.commit(written)
        self.checkpoint_offset = offset
        self.derived.deliver(seq, outbox)

    def _wait_delivery(self) -> None:
        """Wait for the outbox commit of the previous checkpoint (and raise its error)."""
        self._deliverer.wait()

    @property
    def retain_from(self) -> int:
        """Lowest log offset the stream may still need after a crash."""
        return self.checkpoint_offset + 1

    # -- input ---------------------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        """Queue a logged batch (called in log order, under the log's append lock)."""
        if batch.offset <= self.offset and batch.offset >= 0:
            return  # already processed (replay of what the checkpoint covers)
        with self._cond:
            self._inbox.append(batch)
            self._inbox_rows += batch.table.num_rows
            self._cond.notify()

    @property
    def backlog(self) -> int:
        return self._inbox_rows

    def _take(self, max_rows: int) -> list[Batch]:
        out: list[Batch] = []
        rows = 0
        with self._cond:
            while self._inbox and (not out or rows + self._inbox[0].table.num_rows <= max_rows):
                b = self._inbox.popleft()
                rows += b.table.num_rows
                out.append(b)
            self._inbox_rows -= rows
        return out

    # -- processing ----------------------------------------------------------------------------
    def step(self, max_rows: int | None = None) -> int:
        """Process one micro-batch from the inbox. Returns log rows processed."""
        batches = self._take(max_rows or self.settings.stream.batch_max_rows)
        if not batches:
            return 0
        # the values come without names (a string per value): the stages read the rows' keys;
        # the stages that read names (user pipelines, detection) get them added once (``named``)
        values, series, keys = self._timed(
            "frame", keyed_frames, batches, self.default_bucket, *self._names, self._combos, False
        )
        named = _Named(values, keys)
        timed = self._timed
        with self._step_lock, self.derived.lock:
            self.series.add(series)
            held = self._hold(named)  # side pipelines' input when due, else {} (held for later)
            # stages whose results nothing else in the step reads run on the side thread, up to
            # a few steps behind this one (see _side_submit); a lean process (see
            # sensorium.obs.memory) runs them here, one after the other: two stages' working sets
            # at once cost more memory than the second core gains time
            side = bool(values.height) and self._parallel()
            if not side:
                self._wait_side()  # e.g. the process just turned lean: the side's jobs come first
            else:
                self._side_room(values.height)
                if self.rollups is not None:
                    self._side_submit("rollups", values.height, self.rollups.process_partials, values, keys)
                for step_id, frame in held.items():
                    p = self._pipeline(step_id)
                    self._side_submit(step_id, frame.height, p.process, frame, self.series.frame)
            derived, derived_keys = (
                timed("rolling", self.rolling.process_keyed, values, self.rules.wanted_derived(), keys)
                if values.height
                else (empty_values(), None)
            )
            outputs: dict[str, Any] = {}
            for p in self.pipelines:
                if p.step_id in SIDE_PIPELINES:
                    if p.step_id in held and not side:
                        outputs[p.step_id] = timed(p.step_id, p.process, held[p.step_id], self.series.frame)
                    continue
                if values.height and not _needs_values(p):
                    continue  # it would ignore them (e.g. no automation on telemetry): no names made
                outputs[p.step_id] = timed(p.step_id, p.process, named(), self.series.frame)
            scores, score_rows = empty_values(), None
            if self.detect is not None and values.height:
                scores, score_rows = timed("detect", self.detect.process, named(), self.series.frame)
            if values.height:
                # alerts go out now, not after the rollups (on the side thread, or next on this
                # one when lean): a minute's close aggregates every value of the minute (~2 s at
                # 100 k points/s), which an alert has no reason to wait for. A crash before the
                # checkpoint replays them; the alert store keeps each once.
                self._emit(self._rules_step(values, keys, derived, derived_keys, scores))
            # the rules' input is not read again: released before the rollups, whose minute
            # close is the step's high-water mark at 100 k series (~40 MB less)
            del derived, derived_keys, scores
            named.release()  # the rollups read keys: the names go before a minute's close
            if self.rollups is not None and values.height and not side:
                # one after the other: each slice of finished partials stored as it comes
                self._rollup_output(timed("rollups", self.rollups.process_partials, values, keys, self._rollup_slice))
            for p in self.pipelines:
                if p.step_id in outputs:
                    self._pipeline_output(p.step_id, outputs[p.step_id])
            if score_rows is not None:
                self._shared_output(SCORES_TABLE, score_rows)
            self._land()  # what the side thread has finished meanwhile
            self.offset = max(self.offset, batches[-1].offset)
        self.stats["rows"] += sum(b.table.num_rows for b in batches)
        self.stats["values"] += values.height
        self.stats["steps"] += 1
        trim_heap()  # at most every few seconds: the step's freed arrays back to the system
        return sum(b.table.num_rows for b in batches)

    def _rules_step(
        self, values: pl.DataFrame, keys: Keys, derived: pl.DataFrame, derived_keys: Keys | None, scores: pl.DataFrame
    ) -> list[Transition]:
        """The rules over a step's values plus its derived values (rolling statistics, anomaly
        scores). They read names from the keys: their input is only time, value and arrival (a
        concatenation of the series and field strings was a copy of every name of the batch)."""
        cols = [c for c in ("time", "value", "arrival") if c in values.columns]
        parts, rule_keys = [values.select(cols)], [keys]
        for extra, extra_keys in ((derived, derived_keys), (scores, None)):
            if extra.height:
                if "arrival" not in extra.columns:
                    extra = extra.with_columns(pl.lit(None, pl.Int64).alias("arrival"))
                parts.append(extra.select(cols).cast(parts[0].schema))
                rule_keys.append(extra_keys if extra_keys is not None else keys_of(extra, *self._names))
        rule_input = concat_columns(parts)
        del parts
        return self._timed("rules", self.rules.process, rule_input, self.series.frame, Keys.concat(rule_keys))

    # -- the side thread ---------------------------------------------------------------------------
    def _parallel(self) -> bool:
        return self._side is not None and not lean()

    def _side_submit(self, kind: str, rows: int, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` (the rollups, or side pipeline ``kind``) on the side thread; its
        output is stored later, in order, by :meth:`_land`. Jobs run in the order submitted, so
        each stage sees its steps in log order; the stream's own thread goes on with the next
        steps (rules, alerts) instead of waiting for a minute's close. Called under the step lock."""
        assert self._side is not None
        self._side_jobs.append((self._side.submit(self._side_run, kind, fn, *args), rows))

    def _side_run(self, kind: str, fn: Callable[..., Any], *args: Any) -> None:
        # under the compute lock: a view waits for a job in progress (the stage's state moves on
        # here) and then stores what it finished before reading (see _view_guard)
        with self._compute_lock:
            self._computed.append((kind, self._timed(kind, fn, *args)))

    def _side_room(self, rows: int) -> None:
        """Wait (oldest first) until the side thread's queued jobs and ``rows`` more values fit in
        ``stream.side_lag_rows``; one job may always be in progress (a backlog's step of more
        values than that runs beside the next step's rules). Raises a failed job's error."""
        self._reap()
        lag = self.settings.stream.side_lag_rows
        while len(self._side_jobs) > 1 and sum(n for _, n in self._side_jobs) + rows > lag:
            self._side_jobs.popleft()[0].result()
            self._reap()

    def _side_busy(self) -> bool:
        """Whether the side thread has work queued or in progress (the stream thread's view)."""
        jobs = self._side_jobs
        try:
            return bool(jobs) and not jobs[-1][0].done()
        except IndexError:  # emptied meanwhile by a checkpoint on another thread
            return False

    def _reap(self) -> None:
        """Forget the side jobs that are done (raising a failed one's error: its stage lost
        state, so the stream stops and a restart replays from the last checkpoint)."""
        while self._side_jobs and self._side_jobs[0][0].done():
            self._side_jobs.popleft()[0].result()

    def _wait_side(self) -> None:
        """Wait for every side job, and store what they finished (under the step lock and the
        outputs' lock): before anything else reads or changes their stages' state."""
        while self._side_jobs:
            self._side_jobs.popleft()[0].result()
        self._land()

    def _land(self) -> None:
        """Store the outputs the side thread has finished, in the order of their jobs (under the
        outputs' lock). Reads no stage state a side job changes: turning finished partials into
        rows reads the names of keys they already had."""
        while self._computed:
            kind, out = self._computed.popleft()
            if kind == "rollups":
                self._rollup_output(out)
            else:
                self._pipeline_output(kind, out)

    @contextmanager
    def _view_guard(self) -> Iterator[None]:
        """Held by a view (under the outputs' lock) while it reads the outbox and the open
        windows: a side job in progress finishes first and what it finished is stored, so a
        window is either open or in the outbox, never in neither."""
        with self._compute_lock:
            self._land()
            yield

    # -- side pipelines on a slower cadence --------------------------------------------------------
    def _pipeline(self, step_id: str) -> UserStage:
        return next(p for p in self.pipelines if p.step_id == step_id)

    def _hold(self, named: _Named) -> dict[str, pl.DataFrame]:
        """Keep a step's values (with names) for the side pipelines (quality, compression); return
        their whole input when due (``stream.side_interval_s`` since the first held row, or
        ``batch_max_rows`` held). They are batch-invariant, so running them on fewer, larger
        batches changes no output."""
        ids = [p.step_id for p in self.pipelines if p.step_id in SIDE_PIPELINES]
        if not ids or not named.values.height:
            return {}
        if not self._held:
            self._held_since = time.monotonic()
        self._held.append(named())
        self._held_rows += named.values.height
        st = self.settings.stream
        if time.monotonic() - self._held_since < st.side_interval_s and self._held_rows < st.batch_max_rows:
            return {}
        frame = self._take_held()
        return {i: frame for i in ids}

    def _take_held(self) -> pl.DataFrame:
        frame = pl.concat(self._held, how="vertical") if len(self._held) > 1 else self._held[0]
        self._held, self._held_rows = [], 0
        return frame

    def _flush_held(self, parallel: bool) -> None:
        """Run the side pipelines on what they hold (before a tick or a checkpoint: their state
        must cover every offset processed), on the side thread when ``parallel`` (else here,
        after every side job). Called under the step lock."""
        if not self._held:
            return
        if not parallel:
            self._wait_side()
        frame = self._take_held()
        for p in self.pipelines:
            if p.step_id in SIDE_PIPELINES:
                if parallel:
                    self._side_submit(p.step_id, frame.height, p.process, frame, self.series.frame)
                else:
                    self._pipeline_output(p.step_id, self._timed(p.step_id, p.process, frame, self.series.frame))

    def _timed(self, step_id: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        out = fn(*args)
        if self.metrics is not None:
            self.metrics.stream_step_seconds.labels(step_id).observe(time.perf_counter() - t0)
        return out

    def tick(self, now_ns: int | None = None) -> int:
        """Processing-time tick: idle watermarks, absence rules. Returns transitions emitted."""
        now = self.clock() if now_ns is None else now_ns
        with self._step_lock, self.derived.lock:
            parallel = self._parallel()  # once: the process may turn lean meanwhile
            if not parallel:
                self._wait_side()  # the side's jobs come first (the process may just have turned lean)
            self._flush_held(parallel)
            if self.rollups is not None:
                if parallel:  # idle series' windows close on the side thread, in turn
                    self._side_submit("rollups", 0, self.rollups.tick_partials, now)
                else:
                    self._rollup_output(self.rollups.tick_partials(now, self._rollup_slice))
            for p in self.pipelines:
                if p.step_id in SIDE_PIPELINES and parallel:  # in turn with its steps
                    self._side_submit(p.step_id, 0, p.tick, now)
                else:
                    self._pipeline_output(p.step_id, p.tick(now))
            transitions = self.rules.tick(now)
            self._land()
        self._last_tick = now
        self._emit(transitions)
        return len(transitions)

    def drain(self) -> int:
        """Process everything queued (synchronously), and close every window a step left due.
        Returns rows processed."""
        total = 0
        while True:
            n = self.step()
            if not n:
                break
            total += n
        while self.settle():
            pass
        if self.outputs_done is not None:  # what ``on_transitions`` handed on is done, too
            self.outputs_done()
        self.caught_up = True
        return total

    @property
    def closing(self) -> bool:
        """Windows are closing in parts over the coming steps (``stream.close_max_rows``: a
        minute of 100 k points/s closes over ~30 steps): the stream's burst of work, which the
        platform's housekeeping (compaction, flushes not yet overdue) waits out."""
        return self.rollups is not None and self.rollups.deferred

    def settle(self, wait: bool = True) -> bool:
        """Close the next part of the rollup windows the steps left due (``stream.close_max_rows``:
        a minute of many series closes over several steps, or, with no more input, over several
        calls of this), here and now, after every side job (their outputs are then all stored).
        Returns whether windows still wait. ``wait=False`` (the stream thread, between steps): with
        the side thread the part closes there, and the answer is False (a next call, after new
        input or a pause, goes on)."""
        if self.rollups is None:
            if wait:
                with self._step_lock, self.derived.lock:
                    self._wait_side()
            return False
        with self._step_lock, self.derived.lock:
            if not wait and self._parallel():
                self._reap()
                if not self._side_jobs and self.rollups.deferred:
                    self._side_submit("rollups", 0, self.rollups.process_partials, empty_values(), None)
                self._land()
                return False
            self._wait_side()
            if not self.rollups.deferred:
                return False
            self._rollup_output(
                self._timed("rollups", self.rollups.process_partials, empty_values(), None, self._rollup_slice)
            )
        return self.rollups.deferred

    def _emit(self, transitions: list[Transition]) -> None:
        if transitions:
            self.stats["transitions"] += len(transitions)
            if self.on_transitions is not None:
                self.on_transitions(transitions)

    def _rollup_output(self, out: RollupPartials) -> None:
        """Store what a rollup step finished (partials taken out of ``out`` as they are stored)."""
        for interval in list(out.partials):
            self._rollup_slice(interval, out.partials.pop(interval))
        self._late_output(out.late)

    def _rollup_slice(self, interval: str, partials: pl.DataFrame) -> None:
        """Store finished rollup partials of ``interval`` (a whole step's, or a slice of them as
        the rollups hand them over). A slice at a time: the rows (names, statistics), their join
        with the series' tags and the split per measurement are copies (when 100 k series'
        minutes close together, ~500 k rows); only the stored form of each slice is kept, and the
        partials are held only as those slices, each dropped once stored."""
        assert self.rollups is not None
        slices = [partials.slice(lo, OUTPUT_ROWS) for lo in range(0, partials.height, OUTPUT_ROWS)]
        del partials
        for part in released(slices):
            rows = self.rollups.rows(interval, part)
            for (bucket, m), (frame, tags) in self.series.attach(rows).items():
                self.derived.add((bucket, f"{m}_{interval}"), to_arrow(frame, [*tags, "field"]))

    def _late_output(self, late: pl.DataFrame) -> None:
        if not late.height:
            return
        self.stats["late"] += late.height
        if self.metrics is not None:
            self.metrics.stream_late.inc(late.height)
        self._shared_output(LATE_TABLE, late)

    def _shared_output(self, table: str, rows: pl.DataFrame) -> None:
        """Rows of a table shared by all measurements of a bucket (late data, anomaly scores,
        quality findings): tags attached, plus a ``measurement`` column."""
        if not rows.height:
            return
        for (bucket, m), (frame, tags) in self.series.attach(rows).items():
            frame = frame.with_columns(pl.lit(m).alias("measurement"))
            self.derived.add((bucket, table), to_arrow(frame, [*tags, "field", "measurement"]))

    def _pipeline_output(self, step_id: str, outputs: dict[str, pl.DataFrame]) -> None:
        for name, rows in outputs.items():
            if name == "late":
                self._late_output(rows)
                continue
            if name in SHARED_TABLES:
                self._shared_output(name, rows)
                continue
            if not rows.height:
                continue
            for (bucket, _m), (frame, tags) in self.series.attach(rows).items():
                self.derived.add((bucket, name), to_arrow(frame, [*tags, "field"]))

    # -- views for queries ---------------------------------------------------------------------
    def _open_names(self, bucket: str) -> list[str]:
        measurements = self.series.measurements(bucket)
        names = [f"{m}_{iv}" for m in measurements for iv in self.intervals]
        if measurements:
            names += [ROLLING_TABLE, LATE_TABLE]
            if self.detect is not None:
                names.append(SCORES_TABLE)
            if any(p.step_id == "quality" for p in self.pipelines):
                names.append(FINDINGS_TABLE)
            if any(p.step_id == "compress" for p in self.pipelines):
                names.append(HISTORIAN_TABLE)
        return names

    def _open_rows(self, bucket: str, table: str) -> pa.Table | None:
        if table == ROLLING_TABLE:
            return self._rolling_rows(bucket)
        if table == LATE_TABLE:
            return LATE_SCHEMA.empty_table()  # late rows are only ever finished rows
        if table == SCORES_TABLE:
            return self._scores_schema_rows()
        if table == HISTORIAN_TABLE:
            return HISTORIAN_SCHEMA.empty_table()
        if table == FINDINGS_TABLE:
            from sensorium.detect.quality import FINDINGS_SCHEMA

            empty = pl.DataFrame(schema=FINDINGS_SCHEMA).drop("series").with_columns(pl.lit(None, pl.Utf8).alias("measurement"))
            return to_arrow(empty.clear(), ["field", "measurement"])
        if self.rollups is None:
            return None
        for iv in self.intervals:
            suffix = f"_{iv}"
            if table.endswith(suffix):
                m = table[: -len(suffix)]
                rows = self.rollups.open_rows(iv)
                if not rows.height:
                    return None
                part = self.series.attach(rows).get((bucket, m))
                return None if part is None else to_arrow(part[0], [*part[1], "field"])
        return None

    def _scores_schema_rows(self) -> pa.Table:
        return SCORES_SCHEMA.empty_table()  # scores are only ever finished rows

    def _rolling_rows(self, bucket: str) -> pa.Table | None:
        rows = self.rolling.latest()
        if not rows.height:
            return None
        parts = []
        tags_all: list[str] = []
        for (b, m), (frame, tags) in self.series.attach(rows).items():
            if b == bucket:
                parts.append(frame.with_columns(pl.lit(m).alias("measurement")))
                tags_all += [t for t in tags if t not in tags_all]
        if not parts:
            return None
        return to_arrow(pl.concat(parts, how="diagonal_relaxed"), [*tags_all, "field", "measurement"])

    # -- background ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sensorium-stream", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        st = self.settings.stream
        tick_every = st.tick_interval_s
        next_tick = time.monotonic() + tick_every
        while not self._stop.is_set():
            try:
                n = self.step()
                if not n and self.settle(wait=False):
                    continue  # windows still due: the next part now, not after a wait
                if not n:
                    self.caught_up = True
                    with self._cond:
                        if not self._inbox:
                            self._cond.wait(timeout=min(0.05, tick_every))
                if self.caught_up and time.monotonic() >= next_tick:
                    self.tick()
                    next_tick = time.monotonic() + tick_every
                since = time.monotonic() - self._last_checkpoint
                # a checkpoint waits for the side thread's queued work: while it is behind (a
                # minute's close), the checkpoint waits it out for at most one more interval
                if since >= st.checkpoint_interval_s and (not self._side_busy() or since >= 2 * st.checkpoint_interval_s):
                    self.checkpoint(wait=False)
            except Exception as exc:
                # A failing stage is a bug or a bad rule, not bad data (bad data never reaches the
                # log). Stop rather than skip: the log and the last checkpoint still hold
                # everything, so a restart after the fix replays it exactly once.
                log.exception("stream stopped: a stage failed")
                self.error = f"{type(exc).__name__}: {exc}"
                return

    def close(self) -> None:
        """Stop the thread, process what is queued, write a final checkpoint."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if self.error is None:
            self.drain()
            self.checkpoint()
        self.release()
        if hasattr(self.derived.lake, "close"):  # a store with a connection (PostgreSQL)
            self.derived.lake.close()

    def release(self) -> None:
        """Stop the side thread and the delivery thread, and drop the files the state waits in
        (the rollup levels' spill files, the outbox's segments): after :meth:`close`, or for a
        runner dropped without it, e.g. a partition whose lease was lost. A delivery in progress
        finishes; the last checkpoint holds its own copy of everything it needs."""
        if self._side is not None:
            self._side.shutdown(wait=True)  # a job in progress finishes; its outputs are dropped
            self._side = None
        self._side_jobs.clear()
        self._computed.clear()
        self._deliverer.close()
        with self._step_lock, self.derived.lock:  # not under a step or a query of open rows
            if self.rollups is not None:
                self.rollups.close()
            self.derived.discard()
