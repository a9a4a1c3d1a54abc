"""A stream worker (``sensorium worker``): stores and processes the log partitions it owns.

Several workers share one NATS JetStream log and one store (docs/deployment.md). Each owns some
partitions (:mod:`sensorium.scale.membership`); for each one it runs a :class:`PartitionTask`:

1. fetch records from the partition's durable consumer (in offset order, from its ack floor);
2. apply them: data to a hot buffer (skipped when the store already holds that offset for this
   partition), to the partition's :class:`~sensorium.stream.runner.StreamRunner`; dead letters
   to the shared dead-letter store (once per offset);
3. every ``cluster.flush_interval_s``: store the hot data (Delta/PostgreSQL commit carrying the
   highest offset under the partition's own transaction id ``sensorium-p<N>``), run the stream,
   checkpoint it when due, then **acknowledge** every record below the lowest offset still only in
   memory, and purge the partition's log below it.

A worker that dies leaves its records unacknowledged; the next owner starts from the ack floor,
skips what the store and the stream checkpoint already hold (by offset) and re-derives the rest:
every acknowledged point is stored once, and every alert (deterministic ids) fires once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from sensorium.automations.actions import automation_outbox
from sensorium.automations.engine import AutomationStage
from sensorium.automations.loader import load_file as load_automations
from sensorium.automations.store import AutomationStore
from sensorium.config import Settings
from sensorium.errors import LogUnavailable
from sensorium.log.nats import DeliveryGap, JetStreamConsumer, JetStreamLog
from sensorium.log.open import nats_layout
from sensorium.log.wal import KIND_DATA, KIND_DEAD_LETTERS, WALRecord
from sensorium.obs.memory import freeze_startup, tune_allocator
from sensorium.obs.metrics import Metrics
from sensorium.platform import node_name, store_dead_letters
from sensorium.quality.deadletters import DeadLetter, DeadLetterStore
from sensorium.rules.alerts import AlertStore
from sensorium.rules.sinks import Dispatcher, build_sinks
from sensorium.rules.types import Transition
from sensorium.scale.membership import Membership, assignment
from sensorium.schema import field_kind, unify
from sensorium.store.hot import HotBuffer
from sensorium.store.lake import Lake
from sensorium.stream.frame import Batch
from sensorium.stream.runner import StreamRunner

log = logging.getLogger("sensorium.worker")
Key = tuple[str, str]


def _tags(rec: WALRecord) -> tuple[str, ...]:
    tags = rec.header.get("tags")
    if isinstance(tags, list):
        return tuple(str(t) for t in tags)
    assert rec.table is not None  # records from before tags were logged: tags are dictionaries
    return tuple(f.name for f in rec.table.schema if pa.types.is_dictionary(f.type))


class LeaseLost(Exception):
    """This worker no longer holds the partition's lease: it must store nothing more for it."""


_INTERNAL = frozenset({"time", "day", "quality", "quality_flags"})


def _family(t: pa.DataType) -> str:
    """A column's kind as line protocol sees it (``float``, ``integer``, ``string`` ...)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    try:
        return field_kind(t)
    except TypeError:  # not a field type (a timestamp, binary): compare by name
        return str(t)


def type_conflicts(schema: pa.Schema, known: dict[str, str]) -> list[str]:
    """Columns of ``schema`` whose kind clashes with ``known`` (column -> kind; integer and
    unsigned columns take integers, a float column integers too)."""
    out = []
    for f in schema:
        if f.name in _INTERNAL:
            continue  # time, day partition, quality: stored in their own forms
        have = known.get(f.name)
        new = _family(f.type)
        ints = ("integer", "unsigned")
        if have is None or have == new or (have in ("float", *ints) and new in ints):
            continue
        out.append(f"{f.name}: {new} values, but the stored column holds {have}")
    return out


class PartitionTask:
    """One owned partition: its consumer, hot buffer, stream runner and alert delivery."""

    def __init__(self, worker: Worker, partition: int) -> None:
        self.worker = worker
        self.partition = partition
        self.app_id = f"sensorium-p{partition}"
        s = worker.settings
        root = worker.dir / "partitions" / str(partition)
        root.mkdir(parents=True, exist_ok=True)
        self.hot = HotBuffer()
        self.applied: dict[Key, int] = {}
        # column -> type family per table: stored, plus what waits in the hot buffer (ingest nodes
        # check types against their own registries; the store is the arbiter across nodes)
        self.types: dict[Key, dict[str, str]] = {}
        self.stored = 0  # rows this task stored
        self.seen = -1  # highest offset applied in memory
        self.unacked: deque[WALRecord] = deque()
        self._unacked_offsets: set[int] = set()
        self.acked = -1  # highest offset acknowledged by this task
        self.caught_up = False
        self._dl_dirty = False  # dead letters committed but not yet checkpointed (fsynced)
        self.rows = 0
        self._next_tick = 0.0
        self._last_checkpoint = time.monotonic()
        self.runner: StreamRunner | None = None
        self.dispatcher: Dispatcher | None = None
        self.automation_outbox: Any = None
        self.automation_stage: AutomationStage | None = None
        pipelines: list[Any] = []
        if s.stream.enabled and worker.automations is not None:
            self.automation_outbox = automation_outbox(
                root / "automation-deliveries.sqlite", s, worker.automations, worker.dir, worker.clock
            )
            # schedules run once in the deployment: in the task of partition 0
            self.automation_stage = AutomationStage(
                worker.automations, self.automation_outbox.enqueue, schedules=partition == 0
            )
            pipelines.append(self.automation_stage)
        if s.stream.enabled:
            self.dispatcher = Dispatcher(
                root / "alert-deliveries.sqlite",
                s.alerts,
                clock=worker.clock,
                sinks=build_sinks(s.alerts, commands=s.commands, data_dir=worker.dir, clock=worker.clock),
            )
            self.runner = StreamRunner(
                root / "stream",
                s,
                clock=worker.clock,
                rules=worker.rules,
                pipelines=pipelines,
                on_transitions=self._on_transitions,
                metrics=worker.metrics,
                derived_root=worker.dir / "stream" / "lake",
                app_id=f"sensorium-stream-p{partition}",
            )
            self.runner.caught_up = False
            self.dispatcher.start()
            if self.automation_outbox is not None:
                self.automation_outbox.start()
        # last: from here on records of this partition come to us, from the ack floor
        self.consumer: JetStreamConsumer = worker.log.partition_consumer(
            partition, ack_wait_s=s.cluster.ack_wait_s
        )

    # -- input ---------------------------------------------------------------------------------
    def poll(self, timeout: float) -> int:
        if not self.worker.membership.ensure(self.partition):
            # fetch nothing more: a fetch under the shared durable name after the lease moved
            # would take records from the new owner's consumer
            raise LeaseLost(self.partition)
        recs = self.consumer.fetch(self.worker.settings.cluster.fetch_batch, timeout=timeout)
        if not recs:
            self.caught_up = True
            if self.runner is not None:
                self.runner.caught_up = True
            if self.unacked:  # idle: store, checkpoint and acknowledge now, not at the interval
                self.commit(force=True)
            return 0
        self.apply(recs)
        return len(recs)

    def apply(self, recs: list[WALRecord]) -> None:
        for rec in sorted(recs, key=lambda r: r.offset):
            if rec.offset <= self.seen:
                if rec.offset > self.acked and rec.offset not in self._unacked_offsets:
                    # never applied here and not yet acknowledged: applying it now would be out
                    # of order, skipping it would lose it (a later purge drops it)
                    raise DeliveryGap(f"partition {self.partition}: record {rec.offset} came after {self.seen}")
                continue  # redelivered after ack_wait: applied already, acknowledged with the rest
            self.seen = rec.offset
            self.unacked.append(rec)
            self._unacked_offsets.add(rec.offset)
            if rec.kind == KIND_DATA and rec.table is not None:
                key = (rec.header["bucket"], rec.header["measurement"])
                if key not in self.applied:
                    self.applied[key] = self.worker.store.applied_offset(*key, app_id=self.app_id)
                    schema = self.worker.store.schema(*key)
                    self.types[key] = {f.name: _family(f.type) for f in schema or []}
                clash = type_conflicts(rec.table.schema, self.types[key])
                if clash:
                    self._dead_letter_conflict(rec, key, clash)
                    continue
                self.types[key].update({f.name: _family(f.type) for f in rec.table.schema
                                        if f.name not in self.types[key]})
                if rec.offset > self.applied[key]:
                    self.hot.append(key, rec.offset, rec.table)
                    self.rows += rec.table.num_rows
                if self.runner is not None:  # skips what its checkpoint covers
                    self.runner.submit(
                        Batch(rec.offset, key[0], key[1], rec.table, _tags(rec),
                              int(rec.header.get("received_ns", self.worker.clock())))
                    )
            elif rec.kind == KIND_DEAD_LETTERS:
                store_dead_letters(self.worker.dl_store, rec)
                self._dl_dirty = True

    def _dead_letter_conflict(self, rec: WALRecord, key: Key, clash: list[str]) -> None:
        """A batch whose types clash with the store (two ingest nodes disagreeing on a new
        field): its rows become dead letters with the reason, the partition goes on."""
        assert rec.table is not None
        reason = f"type conflict with the stored table {key[1]!r}: " + "; ".join(clash)
        rows = rec.table.to_pylist()  # an error path, bounded by one batch
        letters = [
            DeadLetter(
                bucket=key[0], measurement=key[1], line=i + 1,
                raw=orjson.dumps(r, default=str).decode(), reason=reason, rule="type_conflict",
                source=str(rec.header.get("source", "")), device_id=r.get(self.worker.settings.cluster.device_tag),
                received_ns=int(rec.header.get("received_ns", 0)),
            )
            for i, r in enumerate(rows)
        ]
        self.worker.dl_store.add(rec.offset, letters, rule_counts={"type_conflict": len(letters)})
        self._dl_dirty = True
        log.warning("partition %d: %d rows of %s to dead letters: %s", self.partition, len(rows), key, reason)

    def _on_transitions(self, transitions: list[Transition]) -> None:
        self.worker.alerts.apply(transitions)  # ids are deterministic: a replay adds nothing
        if self.automation_stage is not None:
            self.automation_stage.on_transitions(transitions)
        if self.dispatcher is not None:
            self.dispatcher.enqueue(transitions)

    # -- output --------------------------------------------------------------------------------
    def commit(self, force: bool = False) -> int:
        """Store what is due, run the stream, checkpoint when due, acknowledge what is safe.
        Returns rows stored."""
        s = self.worker.settings
        keys = self.hot.keys() if force else self.hot.due(s.store.flush_rows, s.cluster.flush_interval_s)
        if not self.worker.membership.ensure(self.partition):
            # moved on while we were stalled: store, checkpoint and acknowledge nothing more (an
            # ack would reach the new owner's consumer, which has the same durable name)
            raise LeaseLost(self.partition)
        stored = 0
        for key in keys:
            tables, max_off, n = self.hot.take(key)
            if not tables:
                continue
            data = unify(tables)
            with self.worker.store.lock(*key):
                version = self.worker.store.append(key[0], key[1], data, offset=max_off, app_id=self.app_id)
            self.hot.release(key, n, version)
            self.applied[key] = max(self.applied.get(key, -1), max_off)
            stored += data.num_rows
        self.stored += stored
        now = time.monotonic()
        if self.runner is not None:
            self.runner.drain()
            if self.caught_up and now >= self._next_tick:
                self.runner.tick()
                self._next_tick = now + s.stream.tick_interval_s
            due = now - self._last_checkpoint >= s.stream.checkpoint_interval_s
            if due or (force and self.runner.offset > self.runner.checkpoint_offset):
                self.runner.checkpoint()
                self._last_checkpoint = now
        self._ack()
        return stored

    def low(self) -> int:
        """Lowest offset of this partition still needed after a crash."""
        low = self.hot.min_offset()
        low = self.seen + 1 if low is None else low
        r = self.runner
        if r is not None and (r.backlog or r.offset > r.checkpoint_offset):
            low = min(low, r.retain_from)  # records the stream has not checkpointed yet
        return low

    def _ack(self) -> None:
        low = self.low()
        done: list[WALRecord] = []
        while self.unacked and self.unacked[0].offset < low:
            done.append(self.unacked.popleft())
            self._unacked_offsets.discard(done[-1].offset)
        if done:
            if self._dl_dirty:  # durable against power loss before the log lets them go
                self.worker.dl_store.checkpoint()
                self._dl_dirty = False
            self.consumer.ack(done)
            self.acked = done[-1].offset
            self.worker.log.purge_partition(self.partition, done[-1].offset + 1)

    def close(self) -> None:
        """Hand over cleanly: everything stored, checkpointed and acknowledged."""
        self.commit(force=True)
        self._stop()

    def abandon(self) -> None:
        """The lease was lost: stop without storing or acknowledging anything more (the new
        owner re-delivers from the ack floor)."""
        self._stop()

    def _stop(self) -> None:
        self.consumer.close()
        if self.dispatcher is not None:
            self.dispatcher.close()
        if self.automation_outbox is not None:
            self.automation_outbox.close()
        if self.runner is not None:
            self.runner.release()
            if hasattr(self.runner.derived.lake, "close"):
                self.runner.derived.lake.close()  # its PostgreSQL connection


class Worker:
    """One ``sensorium worker`` process."""

    def __init__(
        self,
        settings: Settings,
        *,
        node_id: str | None = None,
        clock: Any = time.time_ns,
        rules: Any = None,
    ) -> None:
        if settings.log_backend != "nats":
            from sensorium.errors import ConfigError

            raise ConfigError(
                'workers share the NATS log: set log_backend = "nats" (see docs/deployment.md)'
            )
        tune_allocator()
        self.settings = settings
        self.node = node_id or node_name(unique=True)
        self.clock = clock
        self.rules = rules
        self.dir = Path(settings.data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.log = JetStreamLog(
            settings.nats_url, settings.nats_stream, partitions=settings.nats_partitions,
            replicas=settings.nats_replicas,
            layout=nats_layout(settings),
        )
        try:
            self.store: Any = self._open_store()
            self.dl_store = DeadLetterStore(self.dir / "deadletters.sqlite", synchronous="NORMAL")
            self.alerts = AlertStore(self.dir / "alerts.sqlite", clock=clock)
            self.automations: AutomationStore | None = None
            if settings.automations.enabled and settings.stream.enabled:
                self.automations = AutomationStore(self.dir / "automations.sqlite", clock=clock)
                if settings.automations.file is not None and self.automations is not None:
                    self.automations.load_file(load_automations(settings.automations.file))
            self.membership = Membership(self.log, self.node, settings.cluster.lease_s)
        except BaseException:
            self.log.close()
            raise
        self.tasks: dict[int, PartitionTask] = {}
        self._stored_before = 0  # rows stored by tasks since handed over
        self.stats = {"records": 0, "rows_stored": 0, "handovers": 0, "lost": 0, "rewinds": 0}
        self._stop = threading.Event()

    def _open_store(self) -> Any:
        if self.settings.store_backend == "postgres":
            from sensorium.store.postgres import PostgresStore

            return PostgresStore(self.settings.postgres_dsn)
        return Lake(self.dir / "lake", self.settings.store)

    # -- membership ----------------------------------------------------------------------------
    def rebalance(self) -> None:
        """Heartbeat, renew leases, hand over what is no longer ours, take what is."""
        self.membership.heartbeat()
        members = self.membership.members()
        if self.node not in members:
            members.append(self.node)
        want = {p for p, o in assignment(members, self.settings.nats_partitions).items() if o == self.node}
        for p in sorted(self.tasks):
            if not self.membership.renew(p):
                log.warning("lost the lease of partition %d: dropping it", p)
                self._drop(self.tasks[p], "lost")
            elif p not in want:
                log.info("handing partition %d over", p)
                gone = self.tasks.pop(p)
                gone.close()
                self._stored_before += gone.stored
                self.membership.release(p)
                self.stats["handovers"] += 1
        for p in sorted(want - set(self.tasks)):
            if self.membership.acquire(p):
                log.info("took partition %d", p)
                try:
                    self.tasks[p] = PartitionTask(self, p)
                except BaseException:
                    self.membership.release(p)
                    raise

    def _drop(self, task: PartitionTask, stat: str) -> None:
        """Stop a partition without storing or acknowledging anything more (counted in ``stat``)."""
        self.tasks.pop(task.partition, None)
        self._stored_before += task.stored
        task.abandon()
        self.stats[stat] += 1

    # -- the loop ------------------------------------------------------------------------------
    def run_once(self, timeout: float = 0.2) -> int:
        """Poll every owned partition once and commit what is due. Returns records fetched."""
        n = 0
        tasks = list(self.tasks.values())
        for task in tasks:
            try:
                n += task.poll(timeout / max(1, len(tasks)))
                task.commit()
            except LeaseLost:
                log.warning("lost the lease of partition %d: dropping it", task.partition)
                self._drop(task, "lost")
            except DeliveryGap as exc:
                # records went elsewhere (a stalled former owner's fetch, a cancelled fetch):
                # start the partition over from its acknowledgement floor, as a new owner would
                log.warning("%s: restarting partition %d from its acknowledgement floor", exc, task.partition)
                self._drop(task, "rewinds")
                try:
                    self.tasks[task.partition] = PartitionTask(self, task.partition)
                except Exception:  # NATS away: let the partition go, a rebalance takes it again
                    log.exception("cannot restart partition %d; releasing it", task.partition)
                    self.membership.release(task.partition)
        self.stats["records"] += n
        return n

    # -- maintenance --------------------------------------------------------------------------
    def maintain(self) -> int:
        """Compact and vacuum the store's tables (and, on PostgreSQL, drop partitions past the
        retention) — done by the owner of partition 0 only, so by one worker at a time.
        Returns day partitions compacted (0 when this worker does not own partition 0)."""
        if 0 not in self.tasks:
            return 0
        done = 0
        for b, m in self.store.tables():
            schema = self.store.schema(b, m)
            tags = [
                f.name for f in schema or []
                if (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                    or pa.types.is_dictionary(f.type))
                and f.name not in ("time", "day", "quality_flags")
            ]
            with self.store.lock(b, m):
                done += self.store.compact(b, m, tags, settled_s=self.settings.store.settle_s)
                days = self.settings.quality.retention_days
                if not isinstance(self.store, Lake) and days > 0:
                    self.store.drop_before(b, m, self.clock() - int(days * 86_400 * 1e9))
            self.store.vacuum(b, m, retention_hours=1.0)
        return done

    def _maintenance_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.store.maintenance_interval_s) and not self._stop.is_set():
            try:
                self.maintain()
            except Exception:  # an optimisation (a commit race with a writer, say): next time
                log.exception("maintenance failed; will retry")

    def run(self, stop: threading.Event | None = None) -> None:
        """Until ``stop`` is set (or :meth:`stop`): rebalance every ``heartbeat_s``, process;
        store maintenance on a thread beside (owner of partition 0)."""
        stop = stop or self._stop
        freeze_startup()  # once per process: full GC passes skip what start-up made
        threading.Thread(
            target=self._maintenance_loop, args=(stop,), name="sensorium-maintenance", daemon=True
        ).start()
        every = self.settings.cluster.heartbeat_s
        next_beat = 0.0
        while not stop.is_set() and not self._stop.is_set():
            if time.monotonic() >= next_beat:
                try:
                    self.rebalance()
                except LogUnavailable:
                    log.exception("cannot reach NATS; retrying")
                    stop.wait(min(every, 1.0))
                    continue
                next_beat = time.monotonic() + every
            if not self.tasks:
                stop.wait(min(every, 0.2))
                continue
            self.run_once()

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        """Graceful: store, checkpoint and acknowledge every owned partition, release them."""
        self._stop.set()
        try:
            for p in sorted(self.tasks):
                task = self.tasks.pop(p)
                try:
                    task.close()
                except LeaseLost:  # moved on meanwhile: the new owner has it
                    task.abandon()
                    continue
                self.membership.release(p)
            self.membership.leave()
        finally:
            self.alerts.close()
            if self.automations is not None:
                self.automations.close()
            self.dl_store.close()
            if not isinstance(self.store, Lake):
                self.store.close()
            self.log.close()

    def status(self) -> dict[str, Any]:
        self.stats["rows_stored"] = self._stored_before + sum(t.stored for t in self.tasks.values())
        return {
            "node": self.node,
            "partitions": sorted(self.tasks),
            "rows_in_memory": sum(t.hot.rows() for t in self.tasks.values()),
            **self.stats,
        }
