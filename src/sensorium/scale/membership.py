"""Worker group membership and partition leases in a NATS JetStream key-value bucket.

Bucket ``<nats_stream>-cluster`` (history 1, entries expire ``lease_s`` after their last write):

``member.<node>``   written every heartbeat by each live worker; a worker that stops writing
                    (SIGKILL, lost network) drops out after ``lease_s``.
``lease.<p>``       the owner of partition ``p``: created only if absent (compare-and-set on the
                    key's revision), renewed every heartbeat with the revision it holds, deleted
                    on hand-over. A renewal that fails means the lease was lost: the worker drops
                    the partition without committing anything more for it.

Assignment is a pure function of the live members (:func:`assignment`: balanced shares, rendezvous
hashing within them, so a join or a departure moves few partitions). Every worker computes it; a worker that is assigned a partition
another worker still holds waits until that worker hands it over (a join) or its lease expires (a
death). Each owner re-reads its partition's state from the shared stores (stream checkpoint,
per-partition applied offsets) and the log from the consumer's acknowledgement floor, so the
hand-over loses nothing and applies nothing twice.
"""

from __future__ import annotations

import logging
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors

from sensorium.errors import LogUnavailable
from sensorium.log.nats import JetStreamLog

log = logging.getLogger("sensorium.scale")


def assignment(members: list[str], partitions: int) -> dict[int, str]:
    """Partition → owning member: balanced (every member owns ⌊P/n⌋ or ⌈P/n⌉ partitions, the
    larger shares going to the first members by name) and stable (each partition goes to the
    member ranking highest for it by rendezvous hash, ``crc32("<member>/<partition>")``, among
    those with room left), so a member joining or leaving moves few partitions."""
    ms = sorted(set(members))
    if not ms:
        return {}
    base, extra = divmod(partitions, len(ms))
    room = {m: base + (1 if i < extra else 0) for i, m in enumerate(ms)}
    out: dict[int, str] = {}
    for p in range(partitions):
        for m in sorted(ms, key=lambda m: (-zlib.crc32(f"{m}/{p}".encode()), m)):
            if room[m]:
                out[p] = m
                room[m] -= 1
                break
    return out


@dataclass
class Membership:
    log: JetStreamLog
    node: str
    lease_s: float = 10.0
    _kv: Any = None
    _revisions: dict[int, int] = field(default_factory=dict)
    _renewed: dict[int, float] = field(default_factory=dict)  # partition -> monotonic time of the last write

    def __post_init__(self) -> None:
        self._kv = self.log.key_value(f"{self.log.stream}-cluster", self.lease_s)

    # -- members -------------------------------------------------------------------------------
    def heartbeat(self) -> None:
        self.log.call(self._kv.put(f"member.{self.node}", b"1"))

    def members(self) -> list[str]:
        async def _keys() -> list[str]:
            try:
                keys = await self._kv.keys()
            except nats.js.errors.NoKeysError:
                return []
            return [k[len("member.") :] for k in keys if k.startswith("member.")]

        return sorted(self.log.call(_keys()))

    def leave(self) -> None:
        try:
            self.log.call(self._kv.delete(f"member.{self.node}"))
        except LogUnavailable:
            pass

    # -- leases --------------------------------------------------------------------------------
    def owner(self, partition: int) -> str | None:
        async def _get() -> str | None:
            try:
                e = await self._kv.get(f"lease.{partition}")
            except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
                return None
            return e.value.decode() if e.value else None

        return self.log.call(_get())

    def acquire(self, partition: int) -> bool:
        """Take a free partition (atomic: only one of several contenders gets it)."""

        async def _create() -> int | None:
            try:
                return int(await self._kv.create(f"lease.{partition}", self.node.encode()))
            except (
                nats.js.errors.KeyWrongLastSequenceError,
                nats.js.errors.BadRequestError,
                nats.js.errors.KeyNotFoundError,  # the holder's entry expired mid-create: try again later
            ):
                return None
            except nats.js.errors.APIError as exc:  # "wrong last sequence" on older servers
                if "wrong last sequence" in str(exc).lower():
                    return None
                raise

        t = time.monotonic()
        rev = self.log.call(_create())
        if rev is None:
            return False
        self._revisions[partition] = rev
        self._renewed[partition] = t
        return True

    def renew(self, partition: int) -> bool:
        """Extend a held lease. False: it was lost (expired and taken, or deleted)."""
        rev = self._revisions.get(partition)
        if rev is None:
            return False

        async def _update() -> int | None:
            try:
                return int(await self._kv.update(f"lease.{partition}", self.node.encode(), last=rev))
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                return None
            except nats.js.errors.APIError as exc:
                if "wrong last sequence" in str(exc).lower():
                    return None
                raise

        t = time.monotonic()
        new = self.log.call(_update())
        if new is None:
            self._revisions.pop(partition, None)
            self._renewed.pop(partition, None)
            return False
        self._revisions[partition] = new
        self._renewed[partition] = t
        return True

    def ensure(self, partition: int) -> bool:
        """Whether the lease is certainly still ours for a while: renewed less than half a lease
        ago (nobody else can take it before it expires), else renewed now. Call it before every
        durable effect for the partition (store commit, stream checkpoint, acknowledgement)."""
        t = self._renewed.get(partition)
        if t is not None and time.monotonic() - t < self.lease_s / 2:
            return True
        return self.renew(partition)

    def release(self, partition: int) -> None:
        self._renewed.pop(partition, None)
        rev = self._revisions.pop(partition, None)
        if rev is None:
            return

        async def _delete() -> None:
            try:
                await self._kv.delete(f"lease.{partition}", last=rev)
            except nats.js.errors.Error:
                pass  # lost meanwhile: nothing of ours to delete

        try:
            self.log.call(_delete())
        except LogUnavailable:
            pass

    def held(self) -> list[int]:
        return sorted(self._revisions)
