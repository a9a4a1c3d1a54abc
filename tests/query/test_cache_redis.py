"""What only the Redis adapter promises: its key layout and TTLs, one round trip per batch, a
clear error when Redis is down, and no lost update when it comes back."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sensorium.errors import CacheUnavailable
from tests.query.test_cache_contract import (
    REDIS_URL,
    T0,
    K,
    S,
    Storage,
    batch,
    require_redis,
    tags_of,
)

redis = pytest.importorskip("redis")

from sensorium.query.cache_redis import RedisLatestCache  # noqa: E402


@pytest.fixture
def client() -> Iterator[Any]:
    c = require_redis()
    yield c
    c.close()


@pytest.fixture
def cache(client: Any) -> Iterator[RedisLatestCache]:
    c = RedisLatestCache(REDIS_URL, Storage().seed, tags_of, instance=f"test-{uuid.uuid4().hex[:10]}", ttl_s=60)
    yield c
    c.clear()
    c.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_key_layout_values_and_ttls(cache: RedisLatestCache, client: Any) -> None:
    cache.update(K, batch([{"time": T0, "device_id": "d 1", "room": "k", "t": 21.5, "on": True}],
                          tags=("device_id", "room")))
    cache.flush()
    prefix = cache.prefix + "home:climate:"
    assert cache.prefix.startswith("sensorium:test-")
    key = prefix + "s:device_id=d%201,room=k"
    assert client.hgetall(key) == {b"t": f"{T0 + 2**63:020d}f21.5".encode(),
                                   b"on": f"{T0 + 2**63:020d}b1".encode()}
    assert client.smembers(prefix + "idx") == {b"device_id=d%201,room=k"}
    assert 0 < client.pttl(key) <= 60_000 and 0 < client.pttl(prefix + "idx") <= 60_000
    cache.get([K], {})
    assert client.get(prefix + "seeded") == b"1"


def test_a_batch_is_one_round_trip(cache: RedisLatestCache, monkeypatch: pytest.MonkeyPatch) -> None:
    cache.update(K, batch([{"time": T0, "device_id": "warm", "t": 0.0}]))
    cache.flush()  # loads the script
    sent: list[int] = []
    real_execute = redis.client.Pipeline.execute
    real_command = redis.Redis.execute_command

    def execute(self: Any, *a: Any, **kw: Any) -> Any:
        sent.append(len(self.command_stack))
        return real_execute(self, *a, **kw)

    def command(self: Any, *a: Any, **kw: Any) -> Any:  # a command outside a pipeline
        sent.append(-1)
        return real_command(self, *a, **kw)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    monkeypatch.setattr(redis.Redis, "execute_command", command)
    rows = [{"time": T0 + i * S, "device_id": f"d{d}", "t": float(i), "h": 1.0, "c": i}
            for d in range(2500) for i in range(4)]
    cache.update(K, batch(rows))  # queued: the ingest path does not wait for Redis
    cache.flush()  # (or the writer thread, whichever comes first)
    assert sent == [3]  # 2,500 series x 3 fields x 4 points: 3 script calls, one pipeline
    monkeypatch.undo()
    got = cache.get([K], {"device_id": "d2499"})
    assert got[0]["fields"] == {"t": 3.0, "h": 1.0, "c": 3} and got[0]["time"] == T0 + 3 * S


def test_batches_between_flushes_are_coalesced(cache: RedisLatestCache, monkeypatch: pytest.MonkeyPatch) -> None:
    cache._stop.set()  # no writer thread: only the read below sends
    sent: list[int] = []
    real_send = RedisLatestCache._send

    def send(self: Any, items: Any) -> None:
        sent.append(sum(len(r) for _, r in items))
        real_send(self, items)

    monkeypatch.setattr(RedisLatestCache, "_send", send)
    for i in range(10):  # 10 batches of the same 100 series, out of order
        t = T0 + ((i * 7) % 10) * S
        cache.update(K, batch([{"time": t, "device_id": f"d{d}", "t": float(t)} for d in range(100)]))
    rows = cache.get([K], {})
    assert sent == [100]  # each series sent once, with its newest value
    assert {r["fields"]["t"] for r in rows} == {float(T0 + 9 * S)}


def test_redis_down_is_a_clear_error_and_nothing_is_lost(client: Any) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    c = RedisLatestCache(url, Storage().seed, tags_of, instance=f"test-{uuid.uuid4().hex[:10]}")
    try:
        c.update(K, batch([{"time": T0, "device_id": "a", "t": 1.0}]))  # never raises on ingest
        with pytest.raises(CacheUnavailable, match="cannot reach Redis at redis://127.0.0.1") as ei:
            c.get([K], {})
        assert ei.value.status == 503
        c.update(K, batch([{"time": T0 - S, "device_id": "a", "t": 0.5}]))  # waits (backoff)
        # Redis is back: what waited is written before the next read
        c._r.close()
        c._r = redis.Redis.from_url(REDIS_URL)
        c._retry_at = 0
        assert c.get([K], {})[0]["fields"] == {"t": 1.0}
    finally:
        c.clear()
        c.close()


def test_instances_sharing_a_redis_are_isolated(client: Any) -> None:
    a = RedisLatestCache(REDIS_URL, Storage().seed, tags_of, instance=f"test-a-{uuid.uuid4().hex[:8]}")
    b = RedisLatestCache(REDIS_URL, Storage().seed, tags_of, instance=f"test-b-{uuid.uuid4().hex[:8]}")
    try:
        a.update(K, batch([{"time": T0, "device_id": "x", "t": 1.0}]))
        assert b.get([K], {}) == []
        b.clear()
        assert len(a.get([K], {})) == 1
        # a second process of instance a sees a's values without seeding
        storage = Storage()
        a2 = RedisLatestCache(REDIS_URL, storage.seed, tags_of, instance=a.prefix.split(":")[1])
        assert a2.get([K], {})[0]["fields"] == {"t": 1.0} and storage.calls == 0
        a2.close()
    finally:
        a.clear()
        a.close()
        b.close()


def test_missing_client_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "redis", None)
    monkeypatch.delitem(sys.modules, "sensorium.query.cache_redis")
    with pytest.raises(ImportError, match=r"pip install 'sensorium\[redis\]'"):
        importlib.import_module("sensorium.query.cache_redis")
