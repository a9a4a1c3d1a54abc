"""NATS JetStream as the durable log (``log_backend = "nats"``, see docs/nats.md).

Layout: one stream (``nats_stream``, file storage) over the subjects ``<prefix>.<partition>``
(``<prefix>`` is ``<stream>.log``: ``sensorium.log.0`` ... for the default stream). A record goes
to partition ``crc32(key) % partitions`` where ``key`` is the record header's ``measurement``
(override with ``partition_key``), so one measurement stays in one partition, in order.

* **Offsets** are JetStream stream sequences (from 1): one order over all partitions.
* **Durability**: :meth:`JetStreamLog.append` returns only once the server acknowledged every
  publish (stored in the stream's file storage).
* **Deduplication**: every publish carries ``Nats-Msg-Id = <writer_id>-<n>`` (``n`` counts this
  writer's records). A retried publish (lost ack, timeout) reuses its id, so JetStream stores it
  once within the stream's duplicate window and answers with the original sequence.
* **Workers**: :meth:`JetStreamLog.consumer` is a durable pull consumer; ``fetch`` records,
  checkpoint the effect (idempotently, keyed by offset), then ``ack``. Unacked records come back
  after ``ack_wait`` (at-least-once); consumers binding one durable share its records.

The platform is synchronous; the asyncio client runs on its own event loop thread and each call
is submitted to it (:class:`_Bridge`), closed cleanly by :meth:`JetStreamLog.close`.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
import zlib
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

import orjson

from sensorium.errors import LogUnavailable
from sensorium.log.wal import KIND, WALRecord, decode_payload

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client as NATS
    from nats.aio.msg import Msg
    from nats.js import api
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "log_backend = \"nats\" needs the NATS client: pip install 'sensorium[nats]'"
    ) from exc

T = TypeVar("T")

MSG_ID = "Nats-Msg-Id"
REPLAY_BATCH = 1024

_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    OSError,
    asyncio.TimeoutError,
    TimeoutError,
)


def _timed_out(exc: LogUnavailable) -> bool:
    """A fetch that found nothing in time (the client's or asyncio's timeout), not a failure."""
    return isinstance(exc.__cause__, (nats.errors.TimeoutError, asyncio.TimeoutError))


def measurement_key(payload: bytes) -> str:
    """The default partition key: the record header's ``measurement`` ("" when it has none)."""
    _, hlen = KIND.unpack_from(payload, 0)
    header = orjson.loads(payload[KIND.size : KIND.size + hlen])
    m = header.get("measurement") if isinstance(header, dict) else None
    return m if isinstance(m, str) else ""


class _Bridge:
    """An asyncio event loop on its own thread; ``call`` runs a coroutine there and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        async def _cancel_rest() -> None:
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(_cancel_rest(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


class JetStreamLog:
    """The :class:`~sensorium.log.base.Log` port on a NATS JetStream stream."""

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        stream: str = "sensorium",
        *,
        partitions: int = 1,
        replicas: int = 1,
        layout: dict[str, Any] | None = None,
        subject_prefix: str | None = None,
        writer_id: str | None = None,
        partition_key: Callable[[bytes], str] | None = None,
        duplicate_window_s: float = 120.0,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 2.0,
        retries: int = 3,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.url = url
        self.stream = stream
        self.partitions = partitions
        self.replicas = replicas
        # how records are spread (partition count, device tag): recorded in the stream's
        # description when it is created, and every later process must agree with it
        self.layout = layout
        self.subject_prefix = subject_prefix or f"{stream}.log"
        # a fresh writer id per instance: message ids never collide with an earlier run's
        self.writer_id = writer_id or uuid.uuid4().hex
        self._key = partition_key or measurement_key
        self.duplicate_window_s = duplicate_window_s
        self.timeout_s = timeout_s
        self.retries = retries
        self._seq = 0  # records this writer has numbered (message ids)
        self._id_lock = threading.Lock()
        self._order_lock = threading.Lock()  # appends with under_lock: apply in offset order
        self._closed = False
        self._consumers: list[JetStreamConsumer] = []
        self._bridge = _Bridge(f"nats-log-{stream}")
        self.nc = NATS()
        try:
            self._call(self._connect(connect_timeout_s), connect_timeout_s * 3 + timeout_s)
        except BaseException:
            self._shutdown()
            raise
        self.js = self.nc.jetstream()

    # -- plumbing ------------------------------------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        try:
            return self._bridge.call(coro, self.timeout_s * 2 if timeout is None else timeout)
        except _ERRORS as exc:
            raise LogUnavailable(
                f"NATS JetStream log unavailable at {self.url} (stream {self.stream}): "
                f"{type(exc).__name__}: {exc}",
                url=self.url,
                stream=self.stream,
            ) from exc

    async def _connect(self, connect_timeout_s: float) -> None:
        async def _quiet(_exc: Exception) -> None:  # errors surface as LogUnavailable instead
            return None

        await self.nc.connect(
            self.url,
            connect_timeout=max(1, round(connect_timeout_s)),
            max_reconnect_attempts=-1,  # a NATS restart must not break the process for good
            reconnect_time_wait=1,
            error_cb=_quiet,
            name=f"sensorium-log-{self.writer_id[:8]}",
        )
        js = self.nc.jetstream()
        try:
            info = await js.stream_info(self.stream)
            self._check_layout(info.config.description)
        except nats.js.errors.NotFoundError:
            await js.add_stream(
                api.StreamConfig(
                    name=self.stream,
                    subjects=[f"{self.subject_prefix}.*"],
                    storage=api.StorageType.FILE,
                    retention=api.RetentionPolicy.LIMITS,
                    duplicate_window=self.duplicate_window_s,
                    num_replicas=self.replicas,
                    description=orjson.dumps({"sensorium_layout": self.layout}).decode()
                    if self.layout else None,
                )
            )

    def _check_layout(self, description: str | None) -> None:
        if not self.layout or not description:
            return
        try:
            have = orjson.loads(description).get("sensorium_layout")
        except (orjson.JSONDecodeError, AttributeError):
            return  # a description someone else wrote: nothing to compare
        if isinstance(have, dict) and have != self.layout:
            from sensorium.errors import ConfigError

            raise ConfigError(
                f"NATS stream {self.stream} was created with {have}, this process is configured "
                f"with {self.layout}: every ingest node and worker must use the same "
                "nats_partitions and cluster.device_tag (changing them needs a new stream: drain the "
                "old one first, see docs/deployment.md)",
                stream=self.stream, have=have, want=self.layout,
            )

    def subject(self, payload: bytes) -> str:
        p = 0 if self.partitions == 1 else zlib.crc32(self._key(payload).encode()) % self.partitions
        return f"{self.subject_prefix}.{p}"

    def message_ids(self, n: int) -> list[str]:
        """The next ``n`` message ids of this writer (deterministic: writer id + counter)."""
        with self._id_lock:
            first = self._seq
            self._seq += n
        return [f"{self.writer_id}-{i}" for i in range(first, first + n)]

    # -- the log port --------------------------------------------------------------------------
    def append(
        self,
        payloads: list[bytes],
        *,
        under_lock: Callable[[list[int]], None] | None = None,
        msg_ids: list[str] | None = None,
        partitions: list[int] | None = None,
    ) -> list[int]:
        """Publish payloads (in order), return their stream sequences once the server acked all.

        ``msg_ids`` overrides the generated message ids (a caller retrying its own batch);
        ``partitions`` names each payload's partition (default: by ``partition_key``)."""
        if self._closed:
            raise LogUnavailable("the NATS JetStream log is closed", stream=self.stream)
        if msg_ids is not None and len(msg_ids) != len(payloads):
            raise ValueError("one message id per payload")
        if partitions is not None:
            if len(partitions) != len(payloads):
                raise ValueError("one partition per payload")
            if any(not 0 <= q < self.partitions for q in partitions):
                raise ValueError(f"partitions must be in [0, {self.partitions})")
            subjects = [f"{self.subject_prefix}.{q}" for q in partitions]
        else:
            subjects = [self.subject(p) for p in payloads]
        if under_lock is None:
            ids = msg_ids or self.message_ids(len(payloads))
            return self._call(self._publish(subjects, payloads, ids))
        with self._order_lock:
            ids = msg_ids or self.message_ids(len(payloads))
            offsets = self._call(self._publish(subjects, payloads, ids))
            under_lock(offsets)
            return offsets

    async def _publish(self, subjects: list[str], payloads: list[bytes], ids: list[str]) -> list[int]:
        futs: list[asyncio.Future[api.PubAck]] = []
        for subj, p, mid in zip(subjects, payloads, ids, strict=True):
            futs.append(await self.js.publish_async(subj, p, headers={MSG_ID: mid}))
        if futs:
            await asyncio.wait(futs, timeout=self.timeout_s)
        offsets: list[int] = []
        for i, fut in enumerate(futs):
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                offsets.append(fut.result().seq)
                continue
            if not fut.done():
                fut.cancel()
            elif not fut.cancelled() and isinstance(fut.exception(), nats.js.errors.APIError):
                raise fut.exception()  # type: ignore[misc]  # the server refused: no retry
            offsets.append(await self._retry(subjects[i], payloads[i], ids[i]))
        return offsets

    async def _retry(self, subject: str, payload: bytes, mid: str) -> int:
        """Publish again with the same message id: stored once whatever happened before."""
        last: BaseException | None = None
        for _ in range(max(1, self.retries)):
            try:
                ack = await self.js.publish(
                    subject, payload, timeout=self.timeout_s, headers={MSG_ID: mid}
                )
                return ack.seq
            except (nats.errors.TimeoutError, nats.js.errors.NoStreamResponseError) as exc:
                last = exc
                await asyncio.sleep(0.1)
        assert last is not None
        raise last

    @property
    def next_offset(self) -> int:
        return self._info().state.last_seq + 1

    @property
    def first_offset(self) -> int:
        return self._info().state.first_seq

    def _info(self) -> api.StreamInfo:
        return self._call(self.js.stream_info(self.stream))

    def replay(self, from_offset: int = 0) -> Iterator[WALRecord]:
        """Records with ``offset >= from_offset`` in stream order (an ephemeral, unacked consumer
        reading up to the last sequence at the start of the call)."""
        last = self._info().state.last_seq
        start = max(from_offset, 1)
        if last < start:
            return
        cfg = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=api.AckPolicy.NONE,
            inactive_threshold=60.0,
            mem_storage=True,
        )
        sub = self._call(
            self.js.pull_subscribe(f"{self.subject_prefix}.*", stream=self.stream, config=cfg)
        )
        try:
            while True:
                try:
                    msgs = self._call(sub.fetch(REPLAY_BATCH, timeout=self.timeout_s / 4))
                except LogUnavailable as exc:
                    if _timed_out(exc):
                        return  # nothing more (records below ``last`` were purged meanwhile)
                    raise
                for m in msgs:
                    if m.headers and m.headers.get("Status"):
                        continue
                    meta = m.metadata
                    yield decode_payload(meta.sequence.stream, m.data)
                    if meta.sequence.stream >= last or meta.num_pending == 0:
                        return
        finally:
            if not self._closed:
                self._drop_ephemeral(sub)

    def _drop_ephemeral(self, sub: Any) -> None:
        async def _drop() -> None:
            info = await sub.consumer_info()
            await sub.unsubscribe()
            try:
                await self.js.delete_consumer(self.stream, info.name)
            except nats.js.errors.NotFoundError:
                pass

        try:
            self._call(_drop())
        except LogUnavailable:  # the server drops it after inactive_threshold anyway
            pass

    def truncate_before(self, offset: int) -> int:
        """Purge records with sequences ``< offset`` (they are stored elsewhere). Returns how
        many were purged."""
        if offset <= 1:
            return 0

        async def _purge() -> int:
            before = (await self.js.stream_info(self.stream)).state.messages
            await self.js.purge_stream(self.stream, seq=offset)
            after = (await self.js.stream_info(self.stream)).state.messages
            return before - after

        return self._call(_purge())

    def reset(self) -> None:
        """Purge everything logged so far (clean shutdown: it is all stored elsewhere). Sequences
        keep counting."""
        self.truncate_before(self.next_offset)

    def disk_bytes(self) -> int:
        """Bytes the stream holds on the server."""
        return int(self._info().state.bytes)

    @property
    def connected(self) -> bool:
        """Whether the client is connected to a server right now (health checks)."""
        return bool(self.nc.is_connected)

    @property
    def segment_count(self) -> int:
        """No segment files on this host (the ``sensorium_wal_segments`` gauge reads 0)."""
        return 0

    # -- workers -------------------------------------------------------------------------------
    def consumer(
        self,
        durable: str,
        *,
        ack_wait_s: float = 30.0,
        partition: int | None = None,
        max_ack_pending: int = 10_000,
    ) -> JetStreamConsumer:
        """A durable pull consumer (created if missing, bound if it exists). Several consumers
        binding one durable share its records; each record goes to one of them."""
        subject = f"{self.subject_prefix}.{'*' if partition is None else partition}"
        return self._bind(durable, subject, ack_wait_s, max_ack_pending)

    def _bind(
        self,
        durable: str,
        subject: str,
        ack_wait_s: float,
        max_ack_pending: int,
        after: int = 0,
        exclusive: bool = False,
    ) -> JetStreamConsumer:
        """Create (or bind) a durable explicit-ack pull consumer on ``subject``, delivering from
        the record after sequence ``after`` (0: from the start). ``exclusive``: a consumer just
        created for this handle alone, whose deliveries it checks for gaps."""
        cfg = api.ConsumerConfig(
            durable_name=durable,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE if after else api.DeliverPolicy.ALL,
            opt_start_seq=after + 1 if after else None,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            max_ack_pending=max_ack_pending,
            filter_subject=subject,
        )
        sub = self._call(
            self.js.pull_subscribe(subject, durable=durable, stream=self.stream, config=cfg)
        )
        c = JetStreamConsumer(self, durable, sub, exclusive=exclusive)
        self._consumers.append(c)
        return c

    def partition_consumer(
        self, partition: int, *, ack_wait_s: float = 60.0, max_ack_pending: int = 100_000
    ) -> JetStreamConsumer:
        """The durable consumer of one partition (``<stream>-p<partition>``), taken over by a new
        owner: re-created to deliver, in order, every record after its acknowledgement floor.

        Redeliveries of a consumer whose previous owner died come after ``ack_wait`` and behind
        newer records; a worker needs the unacknowledged tail first and in order (its stores
        skip by offset), so the new owner starts a fresh consumer at the floor instead.

        The handle checks that it sees every delivery of the consumer (:class:`DeliveryGap`
        otherwise): a delivery it never saw — taken by a stalled former owner still fetching
        under the same durable name, or dropped by a cancelled fetch — would come back only
        after ``ack_wait``, behind records already applied, and must not be skipped."""
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition must be in [0, {self.partitions})")
        durable = f"{self.stream}-p{partition}"
        subject = f"{self.subject_prefix}.{partition}"

        async def _floor() -> int:
            try:
                info = await self.js.consumer_info(self.stream, durable)
            except nats.js.errors.NotFoundError:
                return 0
            floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
            await self.js.delete_consumer(self.stream, durable)
            return floor

        after = self._call(_floor())
        return self._bind(durable, subject, ack_wait_s, max_ack_pending, after=after, exclusive=True)

    def pending(self, partition: int) -> tuple[int, int]:
        """(records not yet delivered, delivered but unacknowledged) of a partition's consumer;
        (records in the partition, 0) when it has none yet."""
        durable = f"{self.stream}-p{partition}"

        async def _pending() -> tuple[int, int]:
            try:
                info = await self.js.consumer_info(self.stream, durable)
                return int(info.num_pending or 0), int(info.num_ack_pending or 0)
            except nats.js.errors.NotFoundError:
                subject = f"{self.subject_prefix}.{partition}"
                si = await self.js.stream_info(self.stream, subjects_filter=subject)
                return int((si.state.subjects or {}).get(subject, 0)), 0

        return self._call(_pending())

    def purge_partition(self, partition: int, before: int) -> None:
        """Retention for one partition: drop its records with sequences ``< before``."""
        if before > 1:
            subject = f"{self.subject_prefix}.{partition}"
            self._call(self.js.purge_stream(self.stream, seq=before, subject=subject))

    def key_value(self, bucket: str, ttl_s: float) -> Any:
        """A JetStream key-value bucket (created if missing; entries expire ``ttl_s`` after their
        last write) — the worker group's membership and partition leases."""

        async def _kv() -> Any:
            try:
                return await self.js.key_value(bucket)
            except (nats.js.errors.BucketNotFoundError, nats.js.errors.NotFoundError):
                return await self.js.create_key_value(
                    api.KeyValueConfig(
                        bucket=bucket, history=1, ttl=ttl_s, storage=api.StorageType.FILE,
                        replicas=self.replicas,
                    )
                )

        return self._call(_kv())

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run a client coroutine (e.g. on a :meth:`key_value` bucket) on the log's event loop;
        errors become :class:`~sensorium.errors.LogUnavailable`."""
        return self._call(coro, timeout)

    def delete_consumer(self, durable: str) -> None:
        self._call(self.js.delete_consumer(self.stream, durable))

    def delete_stream(self) -> None:
        """Delete the stream and everything in it (tests, benchmarks)."""
        self._call(self.js.delete_stream(self.stream))

    # -- closing -------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for c in list(self._consumers):
            c.close()
        self._shutdown()

    def _shutdown(self) -> None:
        try:
            if self.nc.is_connected or self.nc.is_reconnecting or self.nc.is_connecting:
                self._bridge.call(self.nc.close(), 10)
        except Exception:  # closing: nothing left to protect
            pass
        finally:
            self._bridge.stop()


class DeliveryGap(Exception):
    """An exclusive consumer's deliveries skipped some (see :meth:`JetStreamLog.partition_consumer`):
    the records in between went elsewhere. Start over from the acknowledgement floor."""


class JetStreamConsumer:
    """A worker's handle on a durable pull consumer: ``fetch`` → checkpoint → ``ack``."""

    def __init__(self, log: JetStreamLog, durable: str, sub: Any, *, exclusive: bool = False) -> None:
        self.log = log
        self.durable = durable
        self._sub = sub
        self._pending: dict[int, Msg] = {}
        self._closed = False
        # the consumer's delivery sequence counts every delivery (redeliveries too) from 1: an
        # exclusive handle must see each one
        self._exclusive = exclusive
        self._delivered = 0

    def fetch(self, batch: int = 100, timeout: float = 1.0) -> list[WALRecord]:
        """Up to ``batch`` records, waiting at most ``timeout`` s (``[]`` when none came)."""
        try:
            msgs = self.log._call(self._sub.fetch(batch, timeout=timeout), timeout + self.log.timeout_s)
        except LogUnavailable as exc:
            if _timed_out(exc):
                return []
            raise
        out = []
        for m in msgs:
            meta = m.metadata
            if self._exclusive:
                dseq = int(meta.sequence.consumer)
                if dseq != self._delivered + 1:
                    raise DeliveryGap(
                        f"consumer {self.durable}: delivery {dseq} after {self._delivered} "
                        f"(deliveries {self._delivered + 1}..{dseq - 1} went elsewhere)"
                    )
                self._delivered = dseq
            seq = meta.sequence.stream
            self._pending[seq] = m
            out.append(decode_payload(seq, m.data))
        return out

    def ack(self, records: Iterable[WALRecord]) -> None:
        """Acknowledge records (after their effect is checkpointed): not delivered again."""
        msgs = [self._pending.pop(r.offset) for r in records if r.offset in self._pending]
        if msgs:
            self.log._call(self._ack_all(msgs))

    def nak(self, records: Iterable[WALRecord]) -> None:
        """Hand records back for redelivery now (instead of after ``ack_wait``)."""
        msgs = [self._pending.pop(r.offset) for r in records if r.offset in self._pending]
        if msgs:
            self.log._call(self._nak_all(msgs))

    async def _ack_all(self, msgs: list[Msg]) -> None:
        for m in msgs:
            await m.ack()
        await self.log.nc.flush(max(1, round(self.log.timeout_s)))

    @staticmethod
    async def _nak_all(msgs: list[Msg]) -> None:
        for m in msgs:
            await m.nak()

    def close(self) -> None:
        """Stop fetching (the durable consumer and its unacked records stay on the server)."""
        if self._closed:
            return
        self._closed = True
        if self in self.log._consumers:
            self.log._consumers.remove(self)
        if not self.log.nc.is_closed:
            try:
                self.log._call(self._sub.unsubscribe())
            except LogUnavailable:
                pass
