"""The store port: what the platform needs from a table store.

Two adapters implement it: :class:`sensorium.store.lake.Lake` (embedded Delta Lake, the default)
and :class:`sensorium.store.postgres.PostgresStore` (PostgreSQL, ``store_backend = "postgres"``).
Both pass ``tests/store/test_store_contract.py``.

Batches come in *batch form* (see :mod:`sensorium.schema`: ``time`` ``timestamp[ns, UTC]``, tags
dictionary-encoded strings, typed fields). :meth:`Store.read` returns the *read form*: ``time``
``timestamp[ns, UTC]`` (exact nanoseconds), tags as plain strings, fields typed (``uint64`` stored
as ``int64``), no partition column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

APP_ID = "sensorium-wal"


@runtime_checkable
class Store(Protocol):
    def append(
        self, bucket: str, measurement: str, table: pa.Table, offset: int | None, app_id: str = APP_ID
    ) -> int:
        """Store ``table`` and, atomically with it, ``offset`` of ``app_id`` (when given).
        Returns the table's new version."""
        ...

    def applied_offset(self, bucket: str, measurement: str, app_id: str = APP_ID) -> int:
        """The highest offset of ``app_id`` stored with this table (-1: none)."""
        ...

    def version(self, bucket: str, measurement: str) -> int:
        """A number that grows with every append (-1: no table)."""
        ...

    def tables(self) -> list[tuple[str, str]]:
        """Every (bucket, measurement) stored, sorted."""
        ...

    def schema(self, bucket: str, measurement: str) -> pa.Schema | None:
        """The stored columns (time int64 ns, tags and string fields as strings), or None."""
        ...

    def read(
        self,
        bucket: str,
        measurement: str,
        start_ns: int | None = None,
        end_ns: int | None = None,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Rows with ``start_ns <= time < end_ns`` (either bound optional), in read form."""
        ...

    def drop_before(self, bucket: str, measurement: str, cutoff_ns: int) -> int:
        """Retention: remove every row with ``time < cutoff_ns``. Returns rows removed."""
        ...

    def stats(self, bucket: str, measurement: str) -> Any:
        """A :class:`sensorium.store.lake.TableStats` (files: files or partitions)."""
        ...
