"""The latest-value cache contract (``sensorium.query.cache.LatestCache``), run against every
adapter: in memory, and Redis on 127.0.0.1:6379 (skipped when it is not running -- failing under
``CI=true``, where it must run)."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pytest

from sensorium.query.cache import Key, LatestCache
from sensorium.query.latest import LastValueCache
from tests.conftest import service_missing

REDIS_URL = os.environ.get("SENSORIUM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
S = 1_000_000_000
K: Key = ("home", "climate")


def require_redis() -> Any:
    """A client on the test Redis; skips without one -- but fails under CI, where it must run."""
    try:
        import redis
    except ImportError as exc:  # pragma: no cover
        reason = f"the redis client is not installed ({exc}): pip install 'sensorium[redis]'"
    else:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        try:
            client.ping()
            return client
        except redis.RedisError as exc:
            client.close()
            reason = f"Redis not reachable at {REDIS_URL}: {exc}"
    service_missing(reason)


def batch(rows: list[dict[str, Any]], tags: tuple[str, ...] = ("device_id",)) -> pa.Table:
    """A stored batch as the platform passes it: tags dictionary-encoded, time in ns (UTC)."""
    names: list[str] = []
    for r in rows:
        names += [n for n in r if n not in names]
    cols = {}
    for n in names:
        vals = [r.get(n) for r in rows]
        if n == "time":
            cols[n] = pa.array(vals, pa.int64()).cast(pa.timestamp("ns", tz="UTC"))
        elif n in tags:
            cols[n] = pa.array(vals, pa.string()).dictionary_encode()
        else:
            cols[n] = pa.array(vals)
    return pa.table(cols)


class Storage:
    """Stands in for the lake: what ``seed`` returns per table."""

    def __init__(self) -> None:
        self.tables: dict[Key, pa.Table] = {}
        self.calls = 0

    def seed(self, key: Key) -> pa.Table | None:
        self.calls += 1
        return self.tables.get(key)


def tags_of(key: Key) -> list[str]:
    return ["device_id", "room"]


Factory = Callable[..., LatestCache]


@pytest.fixture(params=["memory", "redis"])
def make(request: pytest.FixtureRequest) -> Iterator[Factory]:
    made: list[LatestCache] = []
    client = require_redis() if request.param == "redis" else None

    def factory(storage: Storage | None = None, *, ttl_s: float = 3600.0, instance: str | None = None) -> LatestCache:
        seed = (storage or Storage()).seed
        cache: LatestCache
        if request.param == "memory":
            cache = LastValueCache(seed, tags_of, ttl_s=ttl_s, clock=time.time_ns)
        else:
            from sensorium.query.cache_redis import RedisLatestCache

            cache = RedisLatestCache(REDIS_URL, seed, tags_of, ttl_s=ttl_s,
                                     instance=instance or f"test-{uuid.uuid4().hex[:10]}")
        made.append(cache)
        return cache

    yield factory
    for c in made:
        c.clear()
        c.close()
    if client is not None:
        client.close()


def latest(cache: LatestCache, keys: list[Key] | None = None, **tags: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = cache.get(keys or [K], tags, tags_of)
    out = {}
    for r in rows:
        ident = (r["bucket"], r["measurement"], tuple(sorted(r["tags"].items())))
        assert ident not in out, f"series twice: {ident}"
        out[ident] = {"time": r["time"], **r["fields"]}
    return out


def sid(device: str, **more: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    return ("home", "climate", tuple(sorted({"device_id": device, **more}.items())))


def test_latest_value_per_series_and_field(make: Factory) -> None:
    c = make()
    c.update(K, batch([
        {"time": T0 + i * S, "device_id": d, "temperature": 20.0 + i, "humidity": 40.0 + i}
        for i in range(5) for d in ("a", "b")
    ] + [{"time": T0 + 9 * S, "device_id": "b", "temperature": 99.0}]))
    got = latest(c)
    assert got == {
        sid("a"): {"time": T0 + 4 * S, "temperature": 24.0, "humidity": 44.0},
        # humidity's newest non-null value is older than the series' newest time
        sid("b"): {"time": T0 + 9 * S, "temperature": 99.0, "humidity": 44.0},
    }


def test_newer_wins_over_an_out_of_order_older_batch(make: Factory) -> None:
    c = make()
    c.update(K, batch([{"time": T0 + 10 * S, "device_id": "a", "temperature": 30.0}]))
    c.update(K, batch([{"time": T0 + 5 * S, "device_id": "a", "temperature": 5.0}]))
    assert latest(c) == {sid("a"): {"time": T0 + 10 * S, "temperature": 30.0}}
    latest(c)  # and after a read folded the first one in
    c.update(K, batch([{"time": T0 + 7 * S, "device_id": "a", "temperature": 7.0}]))
    assert latest(c)[sid("a")]["temperature"] == 30.0
    # equal time: the later update wins (a rewrite of the same point)
    c.update(K, batch([{"time": T0 + 10 * S, "device_id": "a", "temperature": 31.0}]))
    assert latest(c)[sid("a")] == {"time": T0 + 10 * S, "temperature": 31.0}
    # nanosecond precision (times near 2**60 are not exact as doubles)
    c.update(K, batch([{"time": T0 + 10 * S + 2, "device_id": "a", "temperature": 32.0}]))
    c.update(K, batch([{"time": T0 + 10 * S + 1, "device_id": "a", "temperature": 1.0}]))
    assert latest(c)[sid("a")] == {"time": T0 + 10 * S + 2, "temperature": 32.0}


def test_fields_of_one_series_from_different_batches_merge(make: Factory) -> None:
    c = make()
    c.update(K, batch([{"time": T0 + 2 * S, "device_id": "a", "temperature": 21.0}]))
    c.update(K, batch([{"time": T0 + 1 * S, "device_id": "a", "humidity": 50.0}]))
    c.update(K, batch([{"time": T0 + 3 * S, "device_id": "a", "co2": 400}]))
    assert latest(c) == {sid("a"): {"time": T0 + 3 * S, "temperature": 21.0, "humidity": 50.0, "co2": 400}}


def test_tags_filter(make: Factory) -> None:
    c = make()
    c.update(K, batch([
        {"time": T0, "device_id": "a", "room": "kitchen", "t": 1.0},
        {"time": T0, "device_id": "b", "room": "kitchen", "t": 2.0},
        {"time": T0, "device_id": "c", "room": "hall", "t": 3.0},
    ], tags=("device_id", "room")))
    assert set(latest(c, room="kitchen")) == {sid("a", room="kitchen"), sid("b", room="kitchen")}
    assert set(latest(c, room="kitchen", device_id="b")) == {sid("b", room="kitchen")}
    assert latest(c, room="attic") == {}
    assert latest(c, colour="red") == {}  # a tag the series lack matches none
    assert len(latest(c)) == 3


def test_typed_values_round_trip(make: Factory) -> None:
    c = make()
    values = {
        "f": 0.1, "tiny": 5e-324, "big": -1.7976931348623157e308, "whole": 21.0,
        "i": -(2**62) + 7, "zero": 0, "on": True, "off": False,
        "s": "a,b=c:d é 🌡", "empty": "",
    }
    c.update(K, batch([{"time": T0, "device_id": "dev:1,x=y", **values}]))
    got = latest(c)[sid("dev:1,x=y")]
    assert got.pop("time") == T0
    assert got == values
    assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in values.items()}


def test_ttl_expiry_and_refresh(make: Factory) -> None:
    c = make(ttl_s=1.0)
    c.update(K, batch([{"time": T0, "device_id": d, "t": 1.0} for d in ("a", "b")]))
    assert set(latest(c)) == {sid("a"), sid("b")}
    time.sleep(0.6)
    c.update(K, batch([{"time": T0 - S, "device_id": "a", "t": 0.0}]))  # even an older point refreshes
    time.sleep(0.6)
    assert latest(c) == {sid("a"): {"time": T0, "t": 1.0}}  # b silent for 1.2 s > 1 s: gone
    c.update(K, batch([{"time": T0 + S, "device_id": "b", "t": 2.0}]))  # back with its next update
    assert latest(c)[sid("b")] == {"time": T0 + S, "t": 2.0}


def test_seeded_from_storage_on_a_miss(make: Factory) -> None:
    storage = Storage()
    storage.tables[K] = batch([
        {"time": T0 + 5 * S, "device_id": "a", "t": 5.0, "h": 50.0},
        {"time": T0 + 5 * S, "device_id": "b", "t": 6.0},
    ])
    c = make(storage)
    # an update that arrived before the first read, newer for a.t: seeding never hides it
    c.update(K, batch([{"time": T0 + 9 * S, "device_id": "a", "t": 9.0}]))
    # and an older one for b (replayed from the log): the stored value stays
    c.update(K, batch([{"time": T0 + 1 * S, "device_id": "b", "t": 1.0}]))
    assert latest(c) == {
        sid("a"): {"time": T0 + 9 * S, "t": 9.0, "h": 50.0},
        sid("b"): {"time": T0 + 5 * S, "t": 6.0},
    }
    calls = storage.calls
    latest(c)
    assert storage.calls == calls  # seeded once, not per read
    # a restart: a new, empty cache answers from the stored data
    fresh = make(storage)
    assert latest(fresh) == {
        sid("a"): {"time": T0 + 5 * S, "t": 5.0, "h": 50.0},
        sid("b"): {"time": T0 + 5 * S, "t": 6.0},
    }


def test_clear_forgets_and_seeds_again(make: Factory) -> None:
    storage = Storage()
    storage.tables[K] = batch([{"time": T0, "device_id": "a", "t": 1.0}])
    c = make(storage)
    c.update(K, batch([{"time": T0 + S, "device_id": "z", "t": 2.0}]))
    assert set(latest(c)) == {sid("a"), sid("z")}
    c.clear(K)
    assert set(latest(c)) == {sid("a")}
    c.update(K, batch([{"time": T0 + S, "device_id": "z", "t": 2.0}]))
    c.clear()
    assert set(latest(c)) == {sid("a")}


def test_buckets_and_measurements_are_isolated(make: Factory) -> None:
    c = make()
    k2: Key = ("work", "climate")
    k3: Key = ("home", "power")
    c.update(K, batch([{"time": T0, "device_id": "a", "t": 1.0}]))
    c.update(k2, batch([{"time": T0 + S, "device_id": "a", "t": 2.0}]))
    c.update(k3, batch([{"time": T0 + 2 * S, "device_id": "a", "w": 3}]))
    assert latest(c) == {sid("a"): {"time": T0, "t": 1.0}}
    assert latest(c, [k2]) == {("work", "climate", (("device_id", "a"),)): {"time": T0 + S, "t": 2.0}}
    assert len(latest(c, [K, k2, k3])) == 3
    c.clear(k2)
    assert len(latest(c, [K, k2, k3])) == 2


def test_concurrent_writers_keep_the_newest(make: Factory) -> None:
    c = make()
    n = 150
    times = list(range(2 * n))
    random.Random(7).shuffle(times)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(mine: list[int]) -> None:
        try:
            for t in mine:
                c.update(K, batch([{"time": T0 + t * S, "device_id": "a", "t": float(t), "n": t}]))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            while not stop.is_set():
                latest(c)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(times[i::2],)) for i in range(2)]
    r = threading.Thread(target=reader)
    r.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    r.join()
    assert not errors
    top = 2 * n - 1
    assert latest(c) == {sid("a"): {"time": T0 + top * S, "t": float(top), "n": top}}


@pytest.mark.parametrize("maintained", [False, True])
def test_in_memory_cache_stays_bounded_without_reads(maintained: bool) -> None:
    """Nobody reads (a pure ingest node): pending batches are folded once they outgrow the
    state, so memory follows the number of series, not the rows written — by ``maintain`` (the
    platform's flush) at the due size, or, when nothing calls it, by the write itself at
    HARD_FACTOR times that."""
    from sensorium.query.latest import FOLD_ROWS, HARD_FACTOR

    store = Storage()
    cache = LastValueCache(store.seed, tags_of)
    series = 500
    bound = FOLD_ROWS if maintained else HARD_FACTOR * FOLD_ROWS
    highest = 0
    for i in range(800):  # 800 x 500 rows = 400 k rows (> 6 x FOLD_ROWS) for 500 series
        cache.update(K, batch([{"time": T0 + i * S, "device_id": f"d{d}", "temperature": float(i * 1000 + d)}
                               for d in range(series)]))
        pending = sum(t.num_rows for _, t in cache._pending.get(K, []))
        assert pending < bound + series, pending
        if maintained:
            folded = cache.maintain()
            assert folded == (1 if pending >= FOLD_ROWS else 0)
            assert sum(t.num_rows for _, t in cache._pending.get(K, [])) < FOLD_ROWS
        highest = max(highest, pending)
    assert highest >= bound - series  # the folds happened at the bound, not before
    assert store.calls == 1  # seeded once, at the first fold
    rows = {r["tags"]["device_id"]: r["fields"]["temperature"] for r in cache.get([K], {})}
    assert len(rows) == series and rows["d7"] == 799_007.0 and rows["d499"] == 799_499.0
