"""The log port: what the platform needs from a durable, ordered log of records.

Two adapters satisfy it: the embedded :class:`~sensorium.log.wal.WAL` (segment files on local
disk, the default) and :class:`~sensorium.log.nats.JetStreamLog` (a NATS JetStream stream,
``log_backend = "nats"``, see docs/nats.md). ``tests/log/test_log_contract.py`` runs the same
contract against both.

The contract:

* :meth:`Log.append` takes encoded payloads (:func:`~sensorium.log.wal.encode_payload`) and
  returns one offset per payload, strictly increasing within the call, only once every payload is
  durable (fsynced / acknowledged by the server). ``under_lock(offsets)`` runs before any later
  append's ``under_lock``, so callers can apply records in offset order.
* :meth:`Log.replay` yields the records with ``offset >= from_offset`` in offset order, across
  closing and reopening the log.
* :meth:`Log.truncate_before` is a retention hint: records below ``offset`` are stored elsewhere
  and MAY be dropped (the WAL drops whole segments only). Returns how many units were removed.
* ``next_offset``: an offset greater than every offset handed out so far.
* :meth:`Log.close` releases files/connections; idempotent.

Offsets are opaque increasing integers: the WAL counts from 0, JetStream uses the stream
sequence (from 1). Stores key their idempotence on them (a batch stored with its highest offset
is skipped on replay), which is what makes at-least-once replay an exactly-once effect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from sensorium.log.wal import WALRecord

__all__ = ["Log", "WALRecord"]


@runtime_checkable
class Log(Protocol):
    """A durable, ordered, replayable log of encoded records."""

    @property
    def next_offset(self) -> int: ...

    def append(
        self,
        payloads: list[bytes],
        *,
        under_lock: Callable[[list[int]], None] | None = None,
    ) -> list[int]: ...

    def replay(self, from_offset: int = 0) -> Iterator[WALRecord]: ...

    def truncate_before(self, offset: int) -> int: ...

    def close(self) -> None: ...
