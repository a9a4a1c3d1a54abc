"""The latest-value cache port: what the platform needs from a last-value cache.

Two adapters implement it and pass the same contract suite (``tests/query/test_cache_contract.py``):

* :class:`sensorium.query.latest.LastValueCache` -- in process memory (``cache = "memory"``);
* :class:`sensorium.query.cache_redis.RedisLatestCache` -- in Redis (``cache = "redis"``), shared
  by every process of one instance.

The contract (see ``docs/cache.md``):

* ``update(key, batch)`` takes a stored batch of one table (``key = (bucket, measurement)``; tag
  columns dictionary-encoded, ``time`` in ns, the other non-reserved columns fields). Per series
  (the tag values) and field the value with the newest ``time`` wins, whatever the order batches
  arrive in; at equal times the later update wins (as a later write overwrites in InfluxDB).
  Null values never replace a value.
* ``get(keys, tag_filter, tags_of)`` answers one row per series of the given tables whose tags
  match every ``tag_filter`` item: ``{"bucket", "measurement", "tags", "time", "fields"}`` where
  ``time`` (int ns) is the newest time of any of its fields.
* A table read for the first time (a miss) is seeded from storage (the ``seed`` callable given to
  the adapter), merged with newer-wins, so a restarted cache answers from the stored data.
* A series not updated for ``ttl_s`` (processing time: the platform clock for memory, the Redis
  server's clock for Redis) is forgotten; it comes back with its next update.
* ``clear(key=None)`` forgets one table (or all); the next read seeds it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa

if TYPE_CHECKING:
    from sensorium.config import Settings

Key = tuple[str, str]
Seed = Callable[[Key], pa.Table | None]
TagsOf = Callable[[Key], list[str]]


@runtime_checkable
class LatestCache(Protocol):
    """The port. Implementations are thread-safe."""

    def update(self, key: Key, batch: pa.Table) -> None:
        """Fold a stored batch of table ``key`` in (newer time wins per series and field)."""

    def get(
        self, keys: list[Key], tag_filter: dict[str, str], tags_of: TagsOf | None = None
    ) -> list[dict[str, Any]]:
        """Latest values of every series of ``keys`` matching ``tag_filter``."""
        ...

    def clear(self, key: Key | None = None) -> None:
        """Forget table ``key`` (all tables if None); the next read seeds it from storage."""

    def maintain(self) -> int:
        """Housekeeping off the write path (the platform calls it after each flush): fold what
        writes left pending. Returns tables folded."""
        ...

    def close(self) -> None:
        """Release connections."""


def make_cache(
    settings: Settings, seed: Seed, tags_of: TagsOf, clock: Callable[[], int] = time.time_ns
) -> LatestCache:
    """The adapter ``settings.cache`` names."""
    if settings.cache == "redis":
        import hashlib
        from pathlib import Path

        from sensorium.query.cache_redis import RedisLatestCache

        instance = settings.cache_instance or hashlib.sha1(
            str(Path(settings.data_dir).resolve()).encode()
        ).hexdigest()[:12]
        return RedisLatestCache(
            settings.redis_url, seed, tags_of, instance=instance, ttl_s=settings.cache_ttl_s,
            clock=clock,
        )
    from sensorium.query.latest import LastValueCache

    return LastValueCache(seed, tags_of, ttl_s=settings.cache_ttl_s, clock=clock)
