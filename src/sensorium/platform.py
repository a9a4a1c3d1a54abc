"""The running platform: ingest → validate → log → hot buffer → lake, and queries over it all.

:class:`Sensorium` ties the ports together. It is what the API, the CLI and the tests drive::

    with Sensorium(load_settings(data_dir="data")) as s:
        s.write(b"climate,device_id=d1 temperature=21.5")
        s.query("SELECT * FROM climate")

Write path (one request): parse (vectorised) → schema check (type conflicts) → validate (units,
ranges, time, duplicates) → ONE WAL append of the valid batches plus a dead-letter/stats record →
fsync → acknowledge. Records are applied to the hot buffer in log order while the append lock is
held, so they are queryable at once. A background flusher moves hot data into the table store
(``store_backend``: Delta Lake, or PostgreSQL); each commit carries its highest WAL offset, which is
how replay after a crash skips what is stored.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.automations.actions import automation_outbox
from sensorium.automations.engine import AutomationStage
from sensorium.automations.loader import load_file as load_automations
from sensorium.automations.store import AutomationStore
from sensorium.config import Settings, load_settings
from sensorium.errors import (
    BadRequest,
    ConfigError,
    DataDirLocked,
    NotFound,
    PartialWriteError,
    SensoriumError,
    StoreUnavailable,
    WrongNode,
)
from sensorium.log.open import open_log
from sensorium.log.wal import KIND_DATA, KIND_DEAD_LETTERS, WAL, WALRecord, encode_payload
from sensorium.obs.memory import freeze_startup, trim, tune_allocator
from sensorium.obs.metrics import Metrics
from sensorium.quality.deadletters import DeadLetter, DeadLetterStore, StatsRecord
from sensorium.quality.validate import Validator
from sensorium.query.cache import LatestCache, make_cache
from sensorium.query.engine import QueryEngine
from sensorium.rules.alerts import AlertStore
from sensorium.rules.sinks import Dispatcher, build_sinks
from sensorium.rules.types import Transition
from sensorium.scale.partition import split_by_partition
from sensorium.schema import (
    LINE,
    ParseResult,
    Reject,
    SchemaRegistry,
    count_values,
    strip_internal,
    unify,
)
from sensorium.store.hot import HotBuffer
from sensorium.store.lake import NS_PER_DAY, Lake, dedup_sorted
from sensorium.stream.behind import Behind
from sensorium.stream.frame import Batch
from sensorium.stream.outputs import DerivedTables, stream_store
from sensorium.stream.runner import StreamRunner
from sensorium.workers import (
    PARALLEL_PARSE_MIN_BYTES,
    LazyLines,
    parse_and_validate,
    parse_body,
    prefetch,
    warm,
    worker_init,
)

Key = tuple[str, str]
Role = Literal["all", "ingest", "api"]
if TYPE_CHECKING:
    from sensorium.auth.principal import Principal
    from sensorium.log.nats import JetStreamLog
    from sensorium.registry.store import RegistryStore
    from sensorium.store.postgres import PostgresStore

log = logging.getLogger("sensorium")
INT64_MAX = 2**63 - 1
#: How often the background thread stores the writes' dead letters and quality counters (readers
#: drain first, so this is no staleness they see). A drain's cost is one upsert per device it
#: names: at 100 k points/s over 10 k devices, every 2 s instead of every 0.5 s is ~4x fewer.
DL_APPLY_INTERVAL_S = 2.0
#: a step's alert transitions from this many on are stored on the alert writer's thread, behind
#: the stream (fewer: on the stream's thread at once); ~30 ms of store and outbox work
WRITER_MIN_TRANSITIONS = 1000
#: The tag naming a point's device (per-device quality counters, auto-registration).
DEVICE_ID = "device_id"
#: While the stream closes windows the flusher writes a table only at this many times its
#: ``flush_rows`` and ``flush_interval_s`` (see :meth:`Sensorium.flush`).
FLUSH_PATIENCE = 3


@dataclass
class WriteResult:
    """The outcome of one write: what was stored, what was rejected and why."""

    lines: int = 0
    accepted_rows: int = 0
    accepted_values: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    rejected_total: int | None = None  # when ``rejects`` holds only a sample (bulk load)

    @property
    def rejected(self) -> int:
        return len(self.rejects) if self.rejected_total is None else self.rejected_total

    def summary(self, cap: int = 100) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "accepted": self.accepted_rows,
            "accepted_values": self.accepted_values,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "errors": [r.to_dict() for r in sorted(self.rejects, key=lambda r: r.line)[:cap]],
            "errors_truncated": max(0, self.rejected - cap),
        }


def node_name(unique: bool = False) -> str:
    """This process's default name in a deployment: the host name (``unique``: plus the pid)."""
    host = socket.gethostname() or "node"
    return f"{host}-{os.getpid()}" if unique else host


class Sensorium:
    """One platform instance over one data directory."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        read_only: bool = False,
        clock: Callable[[], int] = time.time_ns,
        background: bool = True,
        rules: Any = None,
        pipelines: Sequence[Any] = (),
        role: Role = "all",
        node_id: str | None = None,
    ) -> None:
        """``rules``: a :class:`~sensorium.rules.model.RuleSet` overriding ``stream.rules_file``;
        ``pipelines``: user stages (:class:`~sensorium.stream.pipeline.Pipeline`) for the stream.

        ``role`` (see docs/deployment.md): ``"all"`` — one process does everything (``sensorium
        up``); ``"ingest"`` — validate and append to the NATS log only, workers store and process
        (``sensorium ingest``); ``"api"`` — queries, alerts and the dashboard over what workers
        stored (``sensorium api``; read-only apart from acknowledging alerts)."""
        tune_allocator()
        self.settings = settings or load_settings()
        if role not in ("all", "ingest", "api"):
            raise ValueError(f"unknown role {role!r}")
        if role == "ingest" and self.settings.log_backend != "nats":
            raise ConfigError(
                "an ingest node hands batches to workers through the NATS log: set "
                'log_backend = "nats" (see docs/deployment.md)'
            )
        self.role: Role = role
        self.node_id = node_id or node_name()
        read_only = read_only or role == "api"
        self.read_only = read_only
        self.clock = clock
        self.metrics = Metrics()
        self.dir = Path(self.settings.data_dir)
        # the ingest node's own files (lock, schema registry): several may share the data dir
        home = self.dir / "nodes" / self.node_id if role == "ingest" else self.dir
        self._lock_fd: int | None = None
        if not read_only:
            home.mkdir(parents=True, exist_ok=True)
            self._take_lock(home)
        try:
            # read-only (CLI queries beside a running server): load, never write, the registry
            self.registry = SchemaRegistry(home / "schema.json", persist=not read_only)
            # the table store (``store_backend``): the embedded Delta lake, or PostgreSQL
            self.lake: Lake | PostgresStore = self._open_store()
            self.hot = HotBuffer()
            # NORMAL: commits survive a process crash; the WAL is the source of truth until a
            # checkpoint (see flush) makes them durable against power loss too.
            self._dl_store = DeadLetterStore(self.dir / "deadletters.sqlite", synchronous="NORMAL")
            # dead-letter/stats records wait here (durable in the WAL) for the background applier
            self._dl_pending: list[WALRecord] = []
            self._dl_apply_lock = threading.Lock()
            self._dl_lock = threading.Lock()
            self.validator = Validator(self.settings.quality, now=self.clock)
            self.stream: StreamRunner | None = None
            # the stream's bursts of alert transitions, stored behind it (see _on_transitions)
            self._alert_writer: Behind | None = None
            self.alerts: AlertStore | None = None
            self.dispatcher: Dispatcher | None = None
            derived: Any = None
            # automations: definitions + notifications (any role that serves or runs them)
            self.automations: AutomationStore | None = None
            self.automation_outbox: Dispatcher | None = None
            self.automation_stage: AutomationStage | None = None
            if self.settings.automations.enabled and role in ("all", "api") and not (
                read_only and role != "api"
            ):
                self.automations = AutomationStore(self.dir / "automations.sqlite", clock=self.clock)
            if self.settings.stream.enabled and not read_only and role == "all":
                if self.automations is not None:
                    if self.settings.automations.file is not None:
                        self.automations.load_file(load_automations(self.settings.automations.file))
                    self.automation_outbox = automation_outbox(
                        self.dir / "automation-deliveries.sqlite", self.settings, self.automations,
                        self.dir, self.clock,
                    )
                    self.automation_stage = AutomationStage(self.automations, self.automation_outbox.enqueue)
                    pipelines = [*pipelines, self.automation_stage]
                # Commits of the stream's alert steps are not synced one by one (NORMAL: they
                # survive a crash of the process, not of the machine); both files are synced
                # before every stream checkpoint, so a power cut loses only what the log replays
                # from that checkpoint. Acknowledgements are synced as they are made.
                self.alerts = AlertStore(self.dir / "alerts.sqlite", clock=self.clock, synchronous="NORMAL")
                self.dispatcher = Dispatcher(
                    self.dir / "alert-deliveries.sqlite", self.settings.alerts, clock=self.clock,
                    sinks=build_sinks(self.settings.alerts, commands=self.settings.commands,
                                      data_dir=self.dir, clock=self.clock),
                    synchronous="NORMAL",
                )
                self._alert_writer = Behind("sensorium-alert-writer")
                self.stream = StreamRunner(
                    self.dir / "stream",
                    self.settings,
                    clock=self.clock,
                    rules=rules,
                    pipelines=pipelines,
                    on_transitions=self._on_transitions,
                    before_checkpoint=self._sync_alerts,
                    outputs_done=self._alert_writer.wait,
                    metrics=self.metrics,
                )
                derived = self.stream.derived
            if role == "api":  # workers store alerts in the shared alert store; acks go there
                self.alerts = AlertStore(self.dir / "alerts.sqlite", clock=self.clock)
                if background:  # the live feed (SSE) relays what the workers store
                    self.alerts.follow()
            if self.stream is None and (
                (self.dir / "stream" / "lake").is_dir() or self.settings.store_backend == "postgres"
                or role == "api"  # workers may create the stream's tables after this node started
            ):
                # read-only or api: what the stream (this data dir's, or workers') has stored
                derived = DerivedTables(
                    self.dir / "stream" / "lake", self.settings.store, follow=True,
                    store=stream_store(self.settings),
                )
            # the device registry (docs/registry.md): served by "all" and "api"; an ingest node
            # only auto-registers the devices it hears from
            self.registry_store: RegistryStore | None = self._open_registry()
            self.engine = QueryEngine(
                self.lake,
                self.hot,
                self.measurements,
                timeout_s=self.settings.query_timeout_s,
                max_rows=self.settings.query_max_rows,
                derived=derived,
                extra=self._registry_tables(),
            )
            self.latest_cache: LatestCache = make_cache(
                self.settings, self._seed_latest, self._tags_of, clock=self.clock
            )
            self._schema_lock = threading.Lock()
            self._direct_seq = 0
            self._stop = threading.Event()
            self._threads: list[threading.Thread] = []
            self.wal: WAL | JetStreamLog = open_log(
                self.settings,
                self.dir,
                on_fsync=self.metrics.wal_fsync.observe,
                read_only=read_only,
            )
            self.replayed = self._replay() if role == "all" else self._register_lake_tables()
            self._pool: Any = None
            if background and not read_only:
                if role == "all":
                    self._start_threads()
                if self.parse_workers > 0:
                    self._pool = self._make_pool(self.parse_workers)
            freeze_startup()  # once per process: full GC passes skip what start-up made
        except BaseException:
            # a failed start (bad configuration, corrupt log) must not keep the data directory locked
            store = getattr(self, "lake", None)
            if store is not None and not isinstance(store, Lake):
                store.close()
            if getattr(self, "registry_store", None) is not None:
                self.registry_store.close()  # type: ignore[union-attr]
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise

    # -- lifecycle -----------------------------------------------------------------------------
    def _open_store(self) -> Lake | PostgresStore:
        if self.settings.store_backend == "postgres":
            from sensorium.store.postgres import PostgresStore

            return PostgresStore(self.settings.postgres_dsn)
        return Lake(self.dir / "lake", self.settings.store)

    def _open_registry(self) -> RegistryStore | None:
        """The registry store for this role: read-write for "all" and "api" (which serves it);
        an "ingest" node opens it only to auto-register; a read-only process (CLI queries beside
        a server) reads it as it is, without migrating or creating it."""
        rs = self.settings.registry
        self._auto_register = rs.auto_register and not self.read_only
        if self.role == "ingest" and not rs.auto_register:
            return None
        from sensorium import pii
        from sensorium.registry import RegistryUnavailable, open_registry

        pii.configure(self.settings.pii.key_file)  # users' names and e-mails are encrypted
        read_only = self.read_only and self.role != "api"
        try:
            store = open_registry(rs, self.dir, clock=self.clock, read_only=read_only)
        except RegistryUnavailable as exc:
            if not read_only:
                raise
            # a CLI query beside an older server: answer without the registry's tables
            log.warning("registry not available to this read-only process: %s", exc.message)
            store = None
        if store is None:
            self._auto_register = False
        elif self.role != "ingest":  # personal data stored and no key to read it: say so now
            from sensorium.pii.store import check_keys

            try:
                check_keys(store)
            except BaseException:
                store.close()
                raise
        return store

    def _registry_tables(self) -> Any:
        """The query engine's provider of the registry's SQL tables (``devices``, ``rooms`` ...)."""
        if self.registry_store is None or self.role == "ingest":
            return None
        from sensorium.registry.sql import RegistryTables

        return RegistryTables(self.registry_store)

    def _register_devices(self, counts: pa.Table) -> None:
        """Auto-registration (``registry.auto_register``): a write's distinct device ids, less the
        ones this process knows (a set difference, no database round trip), are added as
        ``unregistered`` in one transaction. The points are durable already, so a registry that
        cannot be reached does not fail the write: it is logged, and the devices are tried again
        with their next write."""
        from sensorium.registry.errors import RegistryUnavailable

        assert self.registry_store is not None
        try:
            self.registry_store.auto_register(counts[DEVICE_ID].to_pylist())
        except RegistryUnavailable as exc:
            log.warning("auto-registration of devices postponed: %s", exc.message)

    def _take_lock(self, home: Path) -> None:
        path = home / "LOCK"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = path.read_text().strip() or "another process"
            raise DataDirLocked(
                f"data directory {home} is in use by {holder}; stop it, or query it through "
                "its HTTP API (--url)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._lock_fd = fd

    def _replay(self) -> int:
        """Re-apply log records not yet in the lake / dead-letter store. Returns records applied."""
        for b, m in self.lake.tables():
            self.hot.set_lake_version((b, m), self.lake.version(b, m))
        applied: dict[Key, int] = {}
        n = 0
        for rec in self.wal.replay(0):
            if rec.kind == KIND_DATA and rec.table is not None:
                key = (rec.header["bucket"], rec.header["measurement"])
                if key not in applied:
                    applied[key] = self.lake.applied_offset(*key)
                self.registry.register(key[0], key[1], rec.table)
                if rec.offset > applied[key]:
                    self.hot.append(key, rec.offset, rec.table)
                    self.latest_cache.update(key, rec.table)
                    n += 1
                if self.stream is not None and rec.offset > self.stream.offset:
                    self.stream.submit(
                        Batch(rec.offset, key[0], key[1], rec.table, tuple(self._tags_of(key)),
                              int(rec.header.get("received_ns", self.clock())))
                    )
            elif rec.kind == KIND_DEAD_LETTERS and not self.read_only:
                if self._apply_dead_letters(rec):
                    n += 1
        self._register_lake_tables()
        return n

    def _register_lake_tables(self) -> int:
        """Register stored tables the registry does not know yet (written before it existed, or
        by workers). Returns 0 (no log records applied)."""
        for b, m in self.lake.tables():
            if not self.registry.columns(b, m):
                sch = self.lake.schema(b, m)
                if sch is not None:
                    self._register_from_lake(b, m, sch)
        return 0

    def _register_from_lake(self, bucket: str, measurement: str, schema: pa.Schema) -> None:
        cols = {}
        for f in schema:
            if f.name in ("time", "day", "quality", "quality_flags"):
                continue
            cols[f.name] = pa.array([], pa.string()).dictionary_encode() if pa.types.is_string(f.type) else pa.array([], f.type)
        self.registry.register(bucket, measurement, pa.table(cols) if cols else pa.table({}))

    @property
    def parse_workers(self) -> int:
        """Worker processes for parsing (setting, or one per CPU when there are 2 or more)."""
        workers = self.settings.parse_workers
        if workers is None:
            cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
            workers = min(cpus, 8) if cpus >= 2 else 0
        return workers

    @staticmethod
    def _make_pool(workers: int) -> Any:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker_init,
            initargs=(os.getpid(),),
        )
        for _ in range(workers):  # start them now, not on the first request
            pool.submit(warm)
        return pool

    @property
    def deadletters(self) -> DeadLetterStore:
        """The dead-letter store, with every acknowledged record applied."""
        self.drain_dead_letters()
        return self._dl_store

    def drain_dead_letters(self) -> int:
        """Apply pending dead-letter/stats records to the store (idempotent, in log order)."""
        # the store is written outside the lock writes take to queue their records (a write
        # waits for a list swap, not for SQLite); a second drain waits for the first, so a reader
        # that drained sees every record acknowledged before it
        with self._dl_apply_lock:
            with self._dl_lock:
                pending, self._dl_pending = self._dl_pending, []
            try:  # one transaction for all of them (each still once per offset)
                self._dl_store.add_many([stats_record(rec) for rec in pending])
                failed: list[WALRecord] = []
            except Exception:  # one at a time: a record that cannot be stored holds up no other
                log.exception("storing %d writes' dead letters together failed; one at a time", len(pending))
                failed = []
                for rec in pending:
                    try:
                        self._dl_store.add_many([stats_record(rec)])
                    except Exception:
                        failed.append(rec)
            if failed:  # kept, still held in the WAL: the next drain tries them again
                with self._dl_lock:
                    self._dl_pending[:0] = failed
            kept = {id(rec) for rec in failed}
            for rec in pending:
                if id(rec) not in kept:
                    self.hot.unhold(rec.offset)
            if failed:
                raise StoreUnavailable(f"{len(failed)} writes' dead letters could not be stored; kept for a retry")
        return len(pending)

    def _dl_loop(self) -> None:
        # Readers drain first (``deadletters``), so this interval is not a staleness users see:
        # it sets how many writes share one transaction (at 100 k points/s in 5,000-point
        # requests, ~10 a transaction instead of one per write and device).
        while not self._stop.wait(DL_APPLY_INTERVAL_S):
            try:
                self.drain_dead_letters()
            except Exception:
                log.exception("storing dead letters failed; will retry (they are safe in the WAL)")

    def _start_threads(self) -> None:
        for name, target in (
            ("flusher", self._housekeeping(self._flush_loop)),
            ("maintenance", self._housekeeping(self._maintenance_loop)),
            ("dead-letters", self._dl_loop),
        ):
            t = threading.Thread(target=target, name=f"sensorium-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        if self.stream is not None:
            self.stream.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        if self.automation_outbox is not None:
            self.automation_outbox.start()

    def close(self) -> None:
        """Graceful shutdown: stop background work, flush everything, close the log."""
        if self._stop.is_set():
            return
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self.drain_dead_letters()
        if self.stream is not None:
            self.stream.close()  # processes what is queued, final checkpoint
        if self._alert_writer is not None:
            try:
                self._alert_writer.wait()  # stored already, unless the stream had stopped on an error
            except Exception:
                log.exception("storing the stream's last alert transitions failed (the log replays them)")
            self._alert_writer.close()
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.automation_outbox is not None:
            self.automation_outbox.close()
        if self.automations is not None:
            self.automations.close()
        if self.alerts is not None:
            self.alerts.close()
        if not self.read_only and self.role == "all":
            self.flush(force=True)
            if self.hot.min_offset() is None and (
                # the stream processed and checkpointed everything (close() did both)
                self.stream is None or (self.stream.error is None and self.stream.backlog == 0)
            ):
                self._dl_store.checkpoint()
                self.wal.reset()
        self.wal.close()  # read-only: a no-op for the WAL, closes a JetStream connection
        self._dl_store.close()
        self.latest_cache.close()
        if self.registry_store is not None:
            self.registry_store.close()
        if not isinstance(self.lake, Lake):
            self.lake.close()
        derived = self.engine.derived
        if self.stream is None and derived is not None and hasattr(derived.lake, "close"):
            derived.lake.close()  # stream outputs read from PostgreSQL
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Sensorium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- catalogue -----------------------------------------------------------------------------
    def measurements(self, bucket: str) -> list[str]:
        """Measurements of a bucket, from the registry (which holds every lake table: they are
        registered on write, on replay, and from the lake's schemas at start-up; an api node
        beside workers looks for new tables each time)."""
        if self.role == "api":
            self._register_lake_tables()
        return sorted(m for b, m in self.registry.tables() if b == bucket)

    def buckets(self) -> list[str]:
        if self.role == "api":
            self._register_lake_tables()
        return sorted({b for b, _ in self.registry.tables()})

    def _derived_keys(self, key: Key) -> list[str]:
        """Sort columns of a stream output table after its day: a rollup's series tags and
        field; for tables shared by the measurements, measurement, field, then every tag."""
        bucket, table = key
        for iv in self.settings.stream.rollups:
            if table.endswith(f"_{iv}"):
                return [*self._tags_of((bucket, table[: -len(iv) - 1])), "field"]
        tags = dict.fromkeys(t for m in self.measurements(bucket) for t in self._tags_of((bucket, m)))
        return ["measurement", "field", *tags]

    def _tags_of(self, key: Key) -> list[str]:
        return [c for c, role in self.registry.columns(*key).items() if role == "tag"]

    # -- writing -------------------------------------------------------------------------------
    def write(
        self,
        body: bytes | str,
        *,
        fmt: str = "lp",
        bucket: str | None = None,
        precision: str = "ns",
        source: str = "api",
        accept_partial: bool = True,
        principal: Principal | None = None,
    ) -> WriteResult:
        """Parse and store a body of line protocol (``fmt="lp"``) or JSON readings (``"json"``).
        ``principal``: a restricted writer's points of devices outside its scope are rejected
        (rule ``access``)."""
        now = self.clock()
        bucket = bucket or self.settings.default_bucket
        b = bucket

        def known(measurement: str) -> dict[str, str]:  # stored types win over the request's
            return self.registry.columns(b, measurement)

        if self._pool is not None and len(body) >= PARALLEL_PARSE_MIN_BYTES:
            snapshot = {m: known(m) for m in self.measurements(b)}
            parsed, pre = self._pool.submit(
                parse_and_validate, body, fmt, precision, now, snapshot, self.validator.settings
            ).result()
            if fmt != "json":
                parsed.raw_lines = LazyLines(body)
        else:
            parsed, pre = parse_body(body, fmt, precision, now, known), None
        return self.write_parsed(
            parsed,
            bucket=bucket,
            source=f"{source} {fmt}/{precision}",
            accept_partial=accept_partial,
            prevalidated=pre,
            devices=principal.devices if principal is not None else None,
        )

    def write_parsed(
        self,
        parsed: ParseResult,
        *,
        bucket: str | None = None,
        source: str = "api",
        accept_partial: bool = True,
        record_rejects: bool = True,
        direct: bool = False,
        prevalidated: dict[str, Any] | None = None,
        devices: frozenset[str] | None = None,
    ) -> WriteResult:
        """Validate and store parsed batches. ``record_rejects=False`` keeps rejects out of the
        dead-letter store (used when replaying dead letters, which are already there).
        ``direct=True`` writes straight to the lake, bypassing the WAL and hot buffer (bulk load:
        the file is the log; re-running a load is harmless since duplicates merge)."""
        if self.role == "api":
            raise WrongNode(
                "this is an api node (sensorium api): it answers queries; send writes to an ingest "
                "node (sensorium ingest)"
            )
        t0 = time.perf_counter()
        bucket = bucket or self.settings.default_bucket
        res = WriteResult(lines=parsed.lines_total)
        rejects = [
            Reject(r.line, r.reason, r.raw or parsed.raw(r.line), r.measurement, r.rule)
            for r in parsed.rejects
        ]
        reject_devices: list[str | None] = [None] * len(rejects)
        valid: dict[str, pa.Table] = {}
        rule_counts: dict[str, int] = {}
        flagged = 0
        for m, table in parsed.batches.items():
            denied = None
            if devices is not None:  # a restricted writer: only its devices' points
                table, denied = _split_by_devices(table, devices)
                if denied is not None:
                    lines, devs = denied
                    for ln, dev in zip(lines, devs, strict=True):
                        why = (f"device {dev!r} is not in the writer's locations" if dev is not None
                               else "a point without device_id cannot be attributed to the writer's locations")
                        rejects.append(Reject(ln, why, parsed.raw(ln), m, "access"))
                        reject_devices.append(dev)
                    if not table.num_rows:
                        continue
            with self._schema_lock:
                kept, bad, conflicts = self.registry.check(bucket, m, table)
            trimmed = bool(bad.any())  # rows were removed: a worker's validation no longer applies
            if trimmed:
                lines = table[LINE].to_numpy()[bad].tolist()
                reason = "; ".join(msg for _, msg in conflicts)
                for ln, dev in zip(lines, _device_ids(table, bad), strict=True):
                    rejects.append(Reject(ln, reason, parsed.raw(ln), m, "type_conflict"))
                    reject_devices.append(dev)
                rule_counts["type_conflict"] = rule_counts.get("type_conflict", 0) + len(lines)
            kept, big = _split_oversize_unsigned(kept)
            if big is not None:
                trimmed = True
                lines, reasons, devs = big
                for ln, why, dev in zip(lines, reasons, devs, strict=True):
                    rejects.append(Reject(ln, why, parsed.raw(ln), m, "range:unsigned"))
                    reject_devices.append(dev)
                rule_counts["range:unsigned"] = rule_counts.get("range:unsigned", 0) + len(lines)
            if not kept.num_rows:
                continue
            pre = prevalidated.get(m) if prevalidated is not None and not trimmed and denied is None else None
            vr = pre if pre is not None else self.validator.validate(m, kept)
            res.duplicates += vr.duplicates
            for k, v in vr.counts.items():
                rule_counts[k] = rule_counts.get(k, 0) + v
            if vr.rejects:
                devs = (
                    vr.reject_tags["device_id"].to_pylist()
                    if vr.reject_tags is not None and "device_id" in vr.reject_tags.column_names
                    else [None] * len(vr.rejects)
                )
                for r, dev in zip(vr.rejects, devs, strict=True):
                    rejects.append(Reject(r.line, r.reason, parsed.raw(r.line), m, r.rule))
                    reject_devices.append(dev)
            if vr.valid.num_rows:
                flagged += int(pc.sum(pc.is_valid(vr.valid["quality_flags"])).as_py() or 0) if "quality_flags" in vr.valid.column_names else 0
                valid[m] = strip_internal(vr.valid)
        if rejects and not accept_partial:
            raise PartialWriteError(
                f"{len(rejects)} of {parsed.lines_total} lines rejected; nothing was stored "
                "(accept_partial=false)",
                rejected=len(rejects),
                errors=[r.to_dict() for r in sorted(rejects, key=lambda r: r.line)[: self.settings.max_reported_errors]],
            )
        with self._schema_lock:  # registered only once the request is accepted
            for m, t in valid.items():
                self.registry.register(bucket, m, t)
        res.rejects = rejects
        res.accepted_rows = sum(t.num_rows for t in valid.values())
        res.accepted_values = sum(count_values(t) for t in valid.values())
        if not record_rejects:
            rejects_to_log: list[Reject] = []
            reject_devices = []
        elif devices is not None:  # refused points are not bad data: never dead letters to replay
            keep = [i for i, r in enumerate(rejects) if r.rule != "access"]
            rejects_to_log = [rejects[i] for i in keep]
            reject_devices = [reject_devices[i] for i in keep]
        else:
            rejects_to_log = rejects
        if res.accepted_rows or rejects_to_log or res.duplicates:
            header = self._dl_header(bucket, source, rejects_to_log, reject_devices, res, rule_counts, flagged)
            counts = device_counts(valid)
            if direct:
                self._store_direct(bucket, valid, header, counts)
            else:
                self._append(bucket, source, valid, header, counts, res)
            if self._auto_register and counts is not None:
                self._register_devices(counts)
        self.metrics.write_seconds.observe(time.perf_counter() - t0)
        return res

    def _dl_header(
        self,
        bucket: str,
        source: str,
        rejects: list[Reject],
        reject_devices: list[str | None],
        res: WriteResult,
        rule_counts: dict[str, int],
        flagged: int,
    ) -> dict[str, Any]:
        """The dead-letter/stats record of one write: rejects with reasons and quality counters
        (its accepted points per device: :func:`device_counts`, the record's table)."""
        now = self.clock()
        dl_header = {
            "bucket": bucket,
            "source": source,
            "received_ns": now,
            "letters": [
                {
                    "measurement": r.measurement,
                    "line": r.line,
                    "raw": r.raw,
                    "reason": r.reason,
                    "rule": r.rule,
                    "device_id": dev,
                }
                for r, dev in zip(rejects, reject_devices, strict=True)
            ],
            "duplicates": res.duplicates,
            "accepted_rows": res.accepted_rows,
            "rule_counts": rule_counts,
            "flagged_rows": flagged,
        }
        return dl_header

    def _store_direct(
        self, bucket: str, valid: dict[str, pa.Table], header: dict[str, Any], counts: pa.Table | None
    ) -> None:
        for m, t in valid.items():
            self.lake.append(bucket, m, t, offset=None)
            self.latest_cache.update((bucket, m), t)
        self._direct_seq += 1
        # not from the log: a negative key, unique per process and call
        key = -(self.clock() // 1000 * 1000 + self._direct_seq % 1000) - 1
        self._apply_dead_letters(WALRecord(key, KIND_DEAD_LETTERS, header, counts))
        self.metrics.points_accepted.labels(bucket).inc(header["accepted_rows"])

    def _append(
        self,
        bucket: str,
        source: str,
        valid: dict[str, pa.Table],
        dl_header: dict[str, Any],
        counts: pa.Table | None,
        res: WriteResult,
    ) -> None:
        received = self.clock()
        # one record per (measurement, partition): a device's series stay in one partition of
        # the NATS log, so on one worker (a single partition, and the WAL: one per measurement)
        n_parts = self.settings.nats_partitions if self.settings.log_backend == "nats" else 1
        items: list[tuple[str, pa.Table, int, list[str]]] = []
        for m, t in valid.items():
            tags = self._tags_of((bucket, m))
            for q, part in split_by_partition(t, self.settings.cluster.device_tag, n_parts):
                items.append((m, part, q, tags))
        payloads = [
            encode_payload(
                KIND_DATA,
                {"bucket": bucket, "measurement": m, "source": source, "received_ns": received, "tags": tags},
                t,
            )
            for m, t, _, tags in items
        ]
        payloads.append(encode_payload(KIND_DEAD_LETTERS, dl_header, counts))
        ingest_only = self.role == "ingest"

        def apply(offsets: list[int]) -> None:
            for (m, t, _, tags), off in zip(items, offsets, strict=False):
                self.latest_cache.update((bucket, m), t)
                if ingest_only:
                    continue  # workers store and process it
                self.hot.append((bucket, m), off, t)
                if self.stream is not None:
                    self.stream.submit(Batch(off, bucket, m, t, tuple(tags), received))
            if not ingest_only:
                self.hot.hold(offsets[-1])

        if n_parts > 1:  # JetStream: each record to its partition's subject (dead letters: 0)
            offsets = self.wal.append(
                payloads, under_lock=apply, partitions=[q for _, _, q, _ in items] + [0]  # type: ignore[call-arg]
            )
        else:
            offsets = self.wal.append(payloads, under_lock=apply)
        res.offsets = offsets
        self.metrics.wal_bytes.inc(sum(len(p) for p in payloads))
        if not ingest_only:  # an ingest node's dead letters are stored by the worker of partition 0
            with self._dl_lock:
                self._dl_pending.append(WALRecord(offsets[-1], KIND_DEAD_LETTERS, dl_header, counts))
            if not self._threads:  # no background applier (tests, CLI): apply now
                self.drain_dead_letters()
        self.metrics.points_accepted.labels(bucket).inc(res.accepted_rows)
        self.metrics.values_accepted.labels(bucket).inc(res.accepted_values)
        self.metrics.duplicates.inc(res.duplicates)
        for d in dl_header["letters"]:
            self.metrics.points_rejected.labels(bucket, d["rule"]).inc()
        self.metrics.hot_rows.set(self.hot.rows())

    def _apply_dead_letters(self, rec: WALRecord) -> bool:
        return store_dead_letters(self._dl_store, rec)

    def _on_transitions(self, transitions: list[Transition]) -> None:
        """Alert changes from the stream (on its thread): alert triggers of automations now; the
        store and the outbox now as well for a step's few (an alert visible without a thread's
        hop), on the alert writer's thread, behind the stream, for a burst of them (a backlog's
        steps, ~30 µs each: they overlap the next step instead of adding to it)."""
        assert self._alert_writer is not None
        if self.automation_stage is not None:  # alert triggers (keys are deterministic too)
            self.automation_stage.on_transitions(transitions)
        if len(transitions) >= WRITER_MIN_TRANSITIONS:
            self._alert_writer.submit(self._store_transitions, transitions)
        else:
            self._alert_writer.wait()  # in order: what was handed over first is stored first
            self._store_transitions(transitions)

    def _store_transitions(self, transitions: list[Transition]) -> None:
        """Store alert changes (idempotently), then queue them for the sinks and count the new."""
        assert self.alerts is not None and self.dispatcher is not None
        new = self.alerts.apply(transitions)
        # all of them, not only the new: after a crash between the two commits, a replay
        # re-derives transitions the store has but the outbox lacks (the outbox ignores keys
        # it holds, so nothing is sent twice)
        self.dispatcher.enqueue(transitions)
        counts: dict[tuple[str, str], int] = {}
        for t in new:
            counts[t.rule, t.state] = counts.get((t.rule, t.state), 0) + 1
        for (rule, state), n in counts.items():
            self.metrics.alerts.labels(rule, state).inc(n)

    def _sync_alerts(self) -> None:
        """Before a stream checkpoint: every transition so far stored, and made durable with the
        deliveries."""
        if self._alert_writer is not None:
            self._alert_writer.wait()
        if self.alerts is not None:
            self.alerts.sync()
        if self.dispatcher is not None:
            self.dispatcher.sync()

    def automation_runs(self, automation: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Automation runs with their outcome, newest first (this process's outbox and, beside
        scale-out workers, every partition's)."""
        from sensorium.automations.actions import executions

        paths = [self.dir / "automation-deliveries.sqlite",
                 *sorted(self.dir.glob("partitions/*/automation-deliveries.sqlite"))]
        runs = [r for p in paths for r in executions(p, automation=automation, limit=limit)]
        runs.sort(key=lambda r: (r["created_ns"], r["key"]), reverse=True)
        return runs[:limit]

    def process_stream(self, now_ns: int | None = None) -> int:
        """Run the stream over everything queued, then one processing-time tick (what the
        background thread does continuously). For tests and scripts with ``background=False``."""
        if self.stream is None:
            return 0
        n = self.stream.drain()
        self.stream.tick(now_ns)
        while self.stream.settle():  # windows a tick's close left for later
            pass
        if self._alert_writer is not None:
            self._alert_writer.wait()  # the tick's transitions stored, too
        return n

    def process_pending(self) -> None:
        """Without background threads (tests, scripts), bring the stream up to date first."""
        if self.stream is not None and not self._threads:
            self.stream.drain()

    def stream_status(self) -> dict[str, Any]:
        if self.stream is None:
            return {"enabled": False}
        st = self.stream
        return {
            "enabled": True,
            "offset": st.offset,
            "checkpoint_offset": st.checkpoint_offset,
            "checkpoint_seq": st.seq,
            "backlog_rows": st.backlog,
            "caught_up": st.caught_up,
            "series": len(st.series),
            "rules": len(st.ruleset.rules),
            "rollups": list(st.intervals),
            "error": st.error,
            **{k: int(v) for k, v in st.stats.items()},
        }

    def series(
        self,
        measurement: str,
        field: str,
        *,
        start: str,
        end: str | None = None,
        every: str = "1h",
        agg: str = "mean",
        bucket: str | None = None,
        tags: dict[str, str] | None = None,
        by: list[str] | None = None,
        principal: Principal | None = None,
    ) -> tuple[pa.Table, str]:
        """A downsampled series (one value per ``every``), from the coarsest rollup that fits,
        else from raw data. Returns (table, table read). ``principal``: as in :meth:`query`."""
        from sensorium.query.downsample import duration_ns, parse_time, plan

        bucket = bucket or self.settings.default_bucket
        self.process_pending()
        if measurement not in self.measurements(bucket):
            raise NotFound(f"no measurement {measurement!r} in bucket {bucket!r}")
        cols = self.registry.columns(bucket, measurement)
        tags = tags or {}
        for t in [*tags, *(by or [])]:
            if cols.get(t) != "tag":
                raise BadRequest(f"{t!r} is not a tag of {measurement!r}")
        now = self.clock()
        start_ns = parse_time(start, now)
        end_ns = parse_time(end, now) if end else now
        rollups = {}
        if self.stream is not None:
            have = set(self.stream.derived.names(bucket))
            rollups = {iv: duration_ns(iv) for iv in self.stream.intervals if f"{measurement}_{iv}" in have}
        p = plan(
            measurement, field, start_ns=start_ns, end_ns=end_ns, every=every, agg=agg, tags=tags,
            by=by or [], rollups=rollups, raw_columns={c for c, r in cols.items() if r != "tag"},
        )
        return self.query(p.sql, bucket, principal=principal), p.source

    # -- flushing ------------------------------------------------------------------------------
    def _stream_closing(self) -> bool:
        return self.stream is not None and self.stream.closing

    def flush(self, force: bool = False, patient: bool = False) -> int:
        """Move due (or, with ``force``, all) hot data into the lake. Returns rows flushed.
        ``patient``: due only at :data:`FLUSH_PATIENCE` times the rows and age (the flusher's
        call while the stream closes windows: the data waits in memory and in the WAL, and the
        stream's burst gets the CPU a Parquet write would take)."""
        st = self.settings.store
        k = FLUSH_PATIENCE if patient else 1
        keys = self.hot.keys() if force else self.hot.due(st.flush_rows * k, st.flush_interval_s * k)
        total = 0
        for key in keys:
            total += self._flush_key(key)
        # the latest-value cache's folds here, not in a write: the process holds least now
        folded = self.latest_cache.maintain()
        if keys:
            self.drain_dead_letters()
            self._dl_store.checkpoint()
            low = self.hot.min_offset()
            low = low if low is not None else self.wal.next_offset
            if self.stream is not None:
                low = min(low, self.stream.retain_from)
            self.wal.truncate_before(low)
            self.metrics.wal_segments.set(self.wal.segment_count)
            self.metrics.hot_rows.set(self.hot.rows())
        if keys or folded:
            trim(force=True)  # the written batches' (and folds') buffers back to the system
        return total

    def _flush_key(self, key: Key) -> int:
        tables, max_off, n = self.hot.take(key)
        if not tables:
            return 0
        t0 = time.perf_counter()
        data = unify(tables)
        with self.lake.lock(*key):
            version = self.lake.append(key[0], key[1], data, offset=max_off)
            self.hot.release(key, n, version)
        self.metrics.flush_seconds.observe(time.perf_counter() - t0)
        self.metrics.flush_rows.inc(data.num_rows)
        return data.num_rows

    def _housekeeping(self, loop: Callable[[], None]) -> Callable[[], None]:
        """``loop`` at ``store.background_nice`` more niceness (Linux sets a thread's own; threads
        it starts inherit it): a Parquet write or a compaction takes the CPU left over by the
        acknowledgements and the stream, not a share of theirs."""
        nice = self.settings.store.background_nice

        def run() -> None:
            if nice and sys.platform.startswith("linux"):
                try:
                    tid = threading.get_native_id()
                    os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
                except OSError as exc:  # e.g. a sandbox without setpriority: same priority
                    log.warning("cannot lower the priority of %s: %s", threading.current_thread().name, exc)
            loop()

        return run

    def _flush_loop(self) -> None:
        wait = 0.25
        while not self._stop.wait(wait):
            try:
                self.flush(patient=self._stream_closing())
                wait = 0.25
            except Exception:  # the data stays in memory and in the WAL; retry, slower
                log.exception("flush failed; will retry (data is safe in the WAL)")
                self.metrics.flush_errors.inc()
                wait = min(wait * 2, 30.0)

    def maintain(self, *, vacuum_hours: float = 1.0, min_files: int | None = None) -> int:
        """Compact small files (sorted, de-duplicated) and vacuum old versions. Returns partitions
        compacted."""
        done = 0
        failed: Exception | None = None
        for b, m in self.lake.tables():
            try:  # one table's failure (a commit race with another writer, say) spares the others
                with self.lake.lock(b, m):
                    n = self.lake.compact(
                        b, m, self._tags_of((b, m)), min_files=min_files,
                        settled_s=self.settings.store.settle_s,
                    )
                    if n:
                        self.hot.set_lake_version((b, m), self.lake.version(b, m))
                done += n
                self.lake.vacuum(b, m, retention_hours=vacuum_hours)
            except Exception as exc:  # noqa: BLE001 - raised below, after the other tables
                log.warning("maintenance of %s/%s failed: %s", b, m, exc)
                failed = failed or exc
        if self.stream is not None:  # the stream's outputs (rollups, late data, ...)
            done += self.stream.derived.maintain(
                self._derived_keys, min_files=min_files, settled_s=self.settings.store.settle_s,
                vacuum_hours=vacuum_hours,
            )
        self.metrics.compactions.inc(done)
        self._apply_retention()
        if failed is not None:
            raise failed
        return done

    def _apply_retention(self) -> int:
        """PostgreSQL store: drop rows older than ``quality.retention_days`` (whole day partitions,
        then the boundary day's older rows). Returns rows removed. (The Delta lake keeps them; the
        validator already refuses new points older than the retention.)"""
        days = self.settings.quality.retention_days
        if isinstance(self.lake, Lake) or days <= 0 or self.read_only:
            return 0
        cutoff = self.clock() - int(days * NS_PER_DAY)
        removed = 0
        for b, m in self.lake.tables():
            with self.lake.lock(b, m):
                n = self.lake.drop_before(b, m, cutoff)
                self.hot.set_lake_version((b, m), self.lake.version(b, m))
            removed += n
        return removed

    def _maintenance_loop(self) -> None:
        every = self.settings.store.maintenance_interval_s
        while not self._stop.wait(every):
            # compaction is an optimisation: it waits out the stream's window closes (for at
            # most another interval), instead of taking a core from them (alert latency)
            until = time.monotonic() + every
            while self._stream_closing() and time.monotonic() < until:
                if self._stop.wait(min(0.5, every)):
                    return
            try:
                self.maintain()
            except Exception:  # compaction is an optimisation: log, count, go on
                log.exception("maintenance failed; will retry")
                self.metrics.flush_errors.inc()

    # -- reading -------------------------------------------------------------------------------
    def quality_findings(self, bucket: str | None = None) -> pa.Table | None:
        """The stream's data-quality findings (``quality_findings``), or None when there are none."""
        bucket = bucket or self.settings.default_bucket
        derived = self.engine.derived
        if derived is None or "quality_findings" not in derived.names(bucket):
            return None
        try:
            return self.query("SELECT * FROM quality_findings", bucket=bucket)
        except SensoriumError:
            return None

    def query(self, sql: str, bucket: str | None = None, *, principal: Principal | None = None) -> pa.Table:
        """Sandboxed SQL. ``principal``: whom it runs for — a user's or guest's query sees only
        the devices of their locations in every table (the engine filters each view); None or an
        admin: everything (internal callers)."""
        t0 = time.perf_counter()
        scope = principal.scope if principal is not None else None
        try:
            return self.engine.execute(sql, bucket or self.settings.default_bucket, scope)
        finally:
            self.metrics.query_seconds.observe(time.perf_counter() - t0)

    def latest(
        self, bucket: str | None = None, measurement: str | None = None, *,
        principal: Principal | None = None, **tags: str,
    ) -> list[dict[str, Any]]:
        """Latest values per series (``principal``: only its devices' series)."""
        rows = self._latest(bucket, measurement, **tags)
        if principal is not None and principal.restricted:
            rows = [r for r in rows if principal.allows_device((r.get("tags") or {}).get("device_id"))]
        return rows

    def check_series_scope(
        self, principal: Principal | None, measurement: str, tags: dict[str, str], bucket: str | None = None,
    ) -> None:
        """For reads over whole series (forecasts): every device the filter selects must be in
        the principal's scope — counted through the unscoped engine and through the principal's
        views; :class:`~sensorium.auth.principal.Forbidden` when they differ."""
        if principal is None or not principal.restricted:
            return
        from sensorium.auth.principal import Forbidden
        from sensorium.query.sql import ident as q
        from sensorium.query.sql import literal as lit

        where = " AND ".join(f"{q(k)} = {lit(v)}" for k, v in tags.items()) or "true"
        sql = f"SELECT count(DISTINCT device_id) AS n FROM {q(measurement)} WHERE {where}"
        try:
            everyone = self.query(sql, bucket).column("n")[0].as_py()
        except SensoriumError:  # no such table or no device_id tag: nothing of anyone's to read
            return
        if self.query(sql, bucket, principal=principal).column("n")[0].as_py() != everyone:
            raise Forbidden(f"that series includes devices that are not {principal.id!r}'s: filter it to "
                            "your devices (tags such as device_id or room)", role=principal.role)

    # -- alerts as a principal sees them ---------------------------------------------------------
    def list_alerts(
        self, *, principal: Principal | None = None, limit: int = 100, offset: int = 0, **filters: Any,
    ) -> list[dict[str, Any]]:
        """Alerts, newest change first (``AlertStore.list`` filters). A restricted principal sees
        the alerts whose ``device_id`` tag is one of its devices (pages are taken after that)."""
        if self.alerts is None:
            raise NotFound("the stream processor is off (stream.enabled = false): no alerts")
        if principal is None or not principal.restricted:
            return self.alerts.list(limit=limit, offset=offset, **filters)
        return self._visible_alerts(principal, filters)[offset:offset + limit]

    def _visible_alerts(self, principal: Principal, filters: dict[str, Any]) -> list[dict[str, Any]]:
        assert self.alerts is not None
        out: list[dict[str, Any]] = []
        page, start = 1000, 0
        while True:
            chunk = self.alerts.list(limit=page, offset=start, **filters)
            out += [a for a in chunk if principal.allows_device((a.get("tags") or {}).get("device_id"))]
            if len(chunk) < page:
                return out
            start += page

    def alert_counts(self, principal: Principal | None = None) -> dict[str, Any]:
        """``AlertStore.counts()``, over the alerts ``principal`` may see."""
        if self.alerts is None:
            raise NotFound("the stream processor is off (stream.enabled = false): no alerts")
        if principal is None or not principal.restricted:
            return self.alerts.counts()
        seen = self._visible_alerts(principal, {})
        firing = [a for a in seen if a["state"] == "firing"]
        acked = sum(1 for a in firing if a["acknowledged"])
        by_sev: dict[str, int] = {}
        for a in firing:
            by_sev[a["severity"]] = by_sev.get(a["severity"], 0) + 1
        return {"total": len(seen), "firing": len(firing), "resolved": len(seen) - len(firing),
                "acknowledged": acked, "unacknowledged": len(firing) - acked,
                "flapping": sum(1 for a in firing if a["flapping"]), "by_severity": dict(sorted(by_sev.items()))}

    def get_alert(self, alert_id: str, *, principal: Principal | None = None) -> dict[str, Any]:
        """One alert with its events; 404 when it does not exist or ``principal`` may not see it."""
        if self.alerts is None:
            raise NotFound("the stream processor is off (stream.enabled = false): no alerts")
        item = self.alerts.get(alert_id)
        if item is None or (principal is not None and not principal.allows_device(
                (item.get("tags") or {}).get("device_id"))):
            raise NotFound(f"no alert with id {alert_id!r}")
        return item

    def _latest(
        self, bucket: str | None = None, measurement: str | None = None, **tags: str
    ) -> list[dict[str, Any]]:
        bucket = bucket or self.settings.default_bucket
        keys = [(bucket, m) for m in self.measurements(bucket) if measurement in (None, m)]
        wanted = {k: v for k, v in tags.items() if v is not None}
        known_tags = {t for k in keys for t in self._tags_of(k)}
        unknown = sorted(set(wanted) - known_tags)
        if unknown and keys:
            raise BadRequest(
                f"latest values filter by tags only; not a tag here: {', '.join(unknown)} "
                f"(tags: {', '.join(sorted(known_tags)) or 'none'})"
            )
        return self.latest_cache.get(keys, wanted, self._tags_of)

    def _seed_latest(self, key: Key) -> pa.Table | None:
        import polars as pl

        if isinstance(self.lake, Lake):
            ds = self.lake.dataset(*key)
            if ds is None:
                return None
            names = list(ds.schema.names)
            df = pl.scan_pyarrow_dataset(ds).sort("time")
        else:  # PostgreSQL: the stored rows, read once (the cache is seeded once per table)
            if self.lake.version(*key) < 0:
                return None
            stored = self.lake.read(*key)
            names = list(stored.column_names)
            df = pl.from_arrow(stored).lazy().sort("time")  # type: ignore[union-attr]
        tags = [t for t in self._tags_of(key) if t in names]
        fields = [c for c in names if c not in (*tags, "time", "day", "quality", "quality_flags")]
        aggs = [pl.col("time").max()] + [pl.col(f).drop_nulls().last() for f in fields]
        out = (df.group_by(tags).agg(aggs) if tags else df.select(aggs)).collect()
        t = out.to_arrow()
        cols = []
        for f in t.schema:
            c = t[f.name]
            if f.name == "time":
                c = c.cast(pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
            elif f.name in tags:
                c = c.cast(pa.string()).dictionary_encode()
            cols.append(c)
        return pa.Table.from_arrays(cols, names=t.column_names)

    # -- bulk load -----------------------------------------------------------------------------
    def load(
        self,
        chunks: Iterable[ParseResult],
        *,
        bucket: str | None = None,
        source: str = "load",
    ) -> WriteResult:
        """Bulk-load parsed chunks straight into the lake (no WAL: the file is the log).
        Rejects go to dead letters as usual."""
        bucket = bucket or self.settings.default_bucket
        total = WriteResult(rejected_total=0)
        for parsed in prefetch(chunks):  # parse chunk n+1 while chunk n is validated and written
            res = self.write_parsed(parsed, bucket=bucket, source=source, direct=True)
            _accumulate(total, res)
            for m in parsed.batches:
                self.hot.set_lake_version((bucket, m), self.lake.version(bucket, m))
        return total

    def load_file(
        self,
        path: str | Path,
        *,
        bucket: str | None = None,
        precision: str = "ns",
        tags: list[str] | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> WriteResult:
        """Bulk-load a file (any format :func:`~sensorium.ingest.files.read_file` reads).

        Parsing runs in a prefetch thread beside validation and the lake writes. (Parse worker
        processes were measured here too: slower for files — spawning, and shipping 64 MiB
        blocks and their tables between processes, cost more than the second core gave.)"""
        from sensorium.ingest.files import file_format, read_file

        fmt = file_format(path)[0]
        source = f"load:{Path(path).name} {'json' if fmt in ('json', 'ndjson') else 'lp'}/{precision}"
        chunks = read_file(path, precision=precision, tags=tags, progress=progress)
        return self.load(chunks, bucket=bucket, source=source)

    # -- dead letters ---------------------------------------------------------------------------
    def replay_dead_letters(
        self,
        *,
        bucket: str | None = None,
        rule: str | None = None,
        device_id: str | None = None,
        reason_contains: str | None = None,
        limit: int = 100_000,
    ) -> dict[str, int]:
        """Re-run dead letters through the current rules (e.g. after a rule change). Those that
        now pass are stored and marked replayed; the others stay as they are."""
        from sensorium.ingest.jsonreadings import parse_readings
        from sensorium.ingest.lineprotocol import parse_lines

        items = self.deadletters.list(
            bucket=bucket, rule=rule, device_id=device_id, reason_contains=reason_contains, limit=limit
        )
        groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for it in items:
            fmt, precision = _source_format(it.get("source", ""))
            groups.setdefault((it["bucket"], fmt, precision), []).append(it)
        stored = still = 0
        for (b, fmt, precision), group in groups.items():
            # keep one line per letter so line i of the replay is letter i
            raws = [g["raw"].replace("\r", " ").replace("\n", " ") for g in group]
            body = "\n".join(raws)
            parsed = (
                parse_readings(body, now_ns=self.clock())
                if fmt == "json"
                else parse_lines(body, precision=precision, now_ns=self.clock())
            )
            res = self.write_parsed(parsed, bucket=b, source="replay", record_rejects=False)
            failed = {r.line for r in res.rejects}
            ok_ids = [g["id"] for i, g in enumerate(group, start=1) if i not in failed and g["raw"]]
            self._dl_store.mark_replayed(ok_ids, self.clock())
            stored += len(ok_ids)
            still += len(group) - len(ok_ids)
        return {"replayed": len(items), "stored": stored, "still_rejected": still}

    # -- stats ---------------------------------------------------------------------------------
    def storage_stats(self) -> dict[str, Any]:
        tables = []
        total_bytes = 0
        total_values = 0
        for b, m in self.lake.tables():
            st = self.lake.stats(b, m)
            fields = [c for c, r in self.registry.columns(b, m).items() if r != "tag"]
            values = 0
            if fields and not isinstance(self.lake, Lake):
                values = self.lake.count_values(b, m, fields)
            elif fields and isinstance(self.lake, Lake):
                ds = self.lake.dataset(b, m)
                if ds is not None:
                    sel = ", ".join(f'count("{f}")' for f in fields)
                    import duckdb

                    con = duckdb.connect()
                    con.register("t", ds)
                    row = con.execute(f"SELECT {sel} FROM t").fetchone()
                    con.close()
                    values = int(sum(row or ()))
            total_bytes += st.bytes
            total_values += values
            tables.append(
                {"bucket": b, "measurement": m, "files": st.files, "rows": st.rows,
                 "values": values, "bytes": st.bytes,
                 "bytes_per_value": round(st.bytes / values, 3) if values else None}
            )
        return {
            "tables": tables,
            "bytes": total_bytes,
            "values": total_values,
            "bytes_per_value": round(total_bytes / total_values, 3) if total_values else None,
            "wal_bytes": self.wal.disk_bytes(),
            "hot_rows": self.hot.rows(),
        }


def device_counts(valid: dict[str, pa.Table]) -> pa.Table | None:
    """A write's accepted points per device (``device_id``, ``n``) over every measurement: the
    table of its dead-letter/stats record (Arrow in the log, summed by the dead-letter store; no
    Python object per device on the ingest path). None when no point names a device."""
    cols = [t[DEVICE_ID].cast(pa.string()) for t in valid.values() if DEVICE_ID in t.column_names]
    if not cols:
        return None
    vc = pc.value_counts(pa.chunked_array([c for col in cols for c in col.chunks], pa.string()))
    vc = vc.filter(pc.is_valid(vc.field(0)))
    if not len(vc):
        return None
    return pa.table({DEVICE_ID: vc.field(0), "n": vc.field(1)})


def stats_record(rec: WALRecord) -> StatsRecord:
    """A logged dead-letter/stats record as the dead-letter store takes it."""
    h = rec.header
    letters = tuple(
        DeadLetter(
            bucket=h["bucket"],
            measurement=d.get("measurement"),
            line=d["line"],
            raw=d["raw"],
            reason=d["reason"],
            rule=d.get("rule", "parse"),
            source=h.get("source", ""),
            device_id=d.get("device_id"),
            received_ns=h.get("received_ns", 0),
        )
        for d in h.get("letters", [])
    )
    return StatsRecord(
        rec.offset,
        letters,
        duplicates=h.get("duplicates", 0),
        accepted_rows=h.get("accepted_rows", 0),
        accepted_by_device=h.get("accepted_by_device") or {},  # records logged before the counts' table
        device_counts=rec.table,
        rule_counts=h.get("rule_counts") or {},
        flagged_rows=h.get("flagged_rows", 0),
    )


def store_dead_letters(store: DeadLetterStore, rec: WALRecord) -> bool:
    """Apply one logged dead-letter/stats record to the store (once per offset)."""
    return store.add_many([stats_record(rec)]) == 1


def _split_oversize_unsigned(
    table: pa.Table,
) -> tuple[pa.Table, tuple[list[int], list[str], list[str | None]] | None]:
    """Rows with an unsigned value above 2**63 - 1 cannot be stored (Delta Lake has no unsigned
    integers; they are stored as int64): split them off with a reason."""
    bad = None
    reasons: dict[int, str] = {}
    for f in table.schema:
        if pa.types.is_uint64(f.type):
            over = pc.fill_null(pc.greater(table[f.name], pa.scalar(INT64_MAX, pa.uint64())), False)
            m = over.to_numpy(zero_copy_only=False)
            if m.any():
                bad = m if bad is None else (bad | m)
                vals = table[f.name].to_numpy(zero_copy_only=False)
                for i in np.flatnonzero(m):
                    reasons.setdefault(
                        int(i),
                        f"field '{f.name}'={int(vals[i])}u exceeds {INT64_MAX}, the largest "
                        "integer the lake stores",
                    )
    if bad is None:
        return table, None
    rows = np.flatnonzero(bad)
    lines = table[LINE].to_numpy()[rows].tolist() if LINE in table.column_names else (rows + 1).tolist()
    return table.filter(pa.array(~bad)), (lines, [reasons[int(i)] for i in rows], _device_ids(table, bad))


def _split_by_devices(
    table: pa.Table, devices: frozenset[str]
) -> tuple[pa.Table, tuple[list[int], list[str | None]] | None]:
    """(the rows whose ``device_id`` is in ``devices``, (line numbers, device ids) of the others
    or None when there are none)."""
    if "device_id" in table.column_names:
        ids = table["device_id"]
        if pa.types.is_dictionary(ids.type):
            ids = ids.cast(pa.string())
        ok = pc.fill_null(pc.is_in(ids, value_set=pa.array(sorted(devices), pa.string())), False)
    else:
        ok = pa.array(np.zeros(table.num_rows, dtype=bool))
    if bool(pc.all(ok).as_py()) if table.num_rows else True:
        return table, None
    bad = pc.invert(ok)
    denied = table.filter(bad)
    devs = (denied["device_id"].cast(pa.string()).to_pylist() if "device_id" in denied.column_names
            else [None] * denied.num_rows)
    return table.filter(ok), (denied[LINE].to_pylist(), devs)


def _accumulate(total: WriteResult, res: WriteResult) -> None:
    total.lines += res.lines
    total.accepted_rows += res.accepted_rows
    total.accepted_values += res.accepted_values
    total.duplicates += res.duplicates
    total.rejects.extend(res.rejects[: max(0, 1000 - len(total.rejects))])
    total.rejected_total = (total.rejected_total or 0) + res.rejected


def _source_format(source: str) -> tuple[str, str]:
    """``"http-v2 lp/ms"`` → ("lp", "ms"); older or JSON sources → ("json" | "lp", "ns")."""
    parts = source.rsplit(" ", 1)
    if len(parts) == 2 and "/" in parts[1]:
        fmt, _, precision = parts[1].partition("/")
        return fmt, precision or "ns"
    return ("json" if "json" in source else "lp"), "ns"


def _device_ids(table: pa.Table, mask: np.ndarray) -> list[str | None]:
    n = int(mask.sum())
    if "device_id" not in table.column_names:
        return [None] * n
    col = table["device_id"].filter(pa.array(mask))
    if pa.types.is_dictionary(col.type):
        col = col.cast(pa.string())
    return col.to_pylist()


__all__ = ["Sensorium", "WriteResult", "dedup_sorted"]

