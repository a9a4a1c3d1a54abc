"""The latest-value cache in Redis (``cache = "redis"``): one cache shared by every process of a
Sensorium instance, surviving their restarts.

Key layout (``{b}``, ``{m}`` are the bucket and measurement, percent-encoded so they hold no ``:``)::

    sensorium:{instance}:lv:{b}:{m}:s:{series}   hash  field -> <time><type><value>   (TTL)
    sensorium:{instance}:lv:{b}:{m}:idx          set   series ids of the table            (TTL)
    sensorium:{instance}:lv:{b}:{m}:seeded       "1" once the table was seeded from storage

``{series}`` is the tag set, ``k=v`` pairs sorted by key and joined by ``,`` (keys and values
percent-encoded). A value is its time as 20 digits (``time + 2**63``: sorts as the signed time),
a type letter (``f`` float, ``i`` int, ``b`` bool, ``s`` string) and the value's text
(``repr`` for floats: exact round trip).

Newer-wins runs in Redis (a Lua script), so concurrent writers and out-of-order batches never
replace a newer value with an older one. A batch is reduced to its newest value per series and
field in Python, then sent as script calls of at most ``CHUNK`` series in one pipeline: one
round trip per batch. Every update refreshes the TTL of the series it touches and of the index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc

from sensorium.errors import CacheUnavailable
from sensorium.schema import RESERVED, TIME, is_tag

try:
    import redis
    from redis.exceptions import NoScriptError, RedisError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "cache = \"redis\" needs the redis client: pip install 'sensorium[redis]'"
    ) from exc

log = logging.getLogger("sensorium.cache")

Key = tuple[str, str]
OFFSET = 2**63
CHUNK = 1000  # series per script call (bounds how long one call holds Redis)
MAX_QUEUED_ROWS = 1_000_000  # rows queued for the writer; past it the oldest are dropped
FLUSH_INTERVAL_S = 0.05  # the writer sends what is queued this often (and at once past FLUSH_ROWS)
FLUSH_ROWS = 50_000
RETRY_AFTER_NS = 1_000_000_000  # after a failed round trip, the writer waits this long

# KEYS[1] = index set, KEYS[2..] = series hashes
# ARGV = ttl_ms, then per series: its id, and its fields and values as one string of
# "<length in bytes>:<text>" items (field_1, value_1, field_2, ...): one argument per series, not
# two per value, since packing arguments is most of the client's cost
_UPDATE = """
local ttl = tonumber(ARGV[1])
local function newer(a, b)  -- a >= b by the 20-digit time prefix (two halves: exact in doubles)
  local ah, bh = tonumber(string.sub(a, 1, 10)), tonumber(string.sub(b, 1, 10))
  if ah ~= bh then return ah > bh end
  return tonumber(string.sub(a, 11, 20)) >= tonumber(string.sub(b, 11, 20))
end
local function pairs_of(s)  -- "<bytes>:<text>" items, as _blob writes them
  local out, pos, n = {}, 1, #s
  while pos <= n do
    local c = string.find(s, ":", pos, true)
    local len = tonumber(string.sub(s, pos, c - 1))
    out[#out + 1] = string.sub(s, c + 1, c + len)
    pos = c + len + 1
  end
  return out
end
local sids = {}
for k = 2, #KEYS do
  local key = KEYS[k]
  sids[#sids + 1] = ARGV[2 * k - 2]
  local items = pairs_of(ARGV[2 * k - 1])
  local fs = {}
  for j = 1, #items, 2 do fs[#fs + 1] = items[j] end
  local cur = redis.call('HMGET', key, unpack(fs))
  local upd = {}
  for j = 1, #fs do
    local v = items[2 * j]
    if (not cur[j]) or newer(v, cur[j]) then
      upd[#upd + 1] = fs[j]
      upd[#upd + 1] = v
    end
  end
  if #upd > 0 then redis.call('HSET', key, unpack(upd)) end
  redis.call('PEXPIRE', key, ttl)
end
for lo = 1, #sids, 1000 do
  redis.call('SADD', KEYS[1], unpack(sids, lo, math.min(lo + 999, #sids)))
end
redis.call('PEXPIRE', KEYS[1], ttl)
return #sids
"""


def _q(s: str) -> str:
    return quote(s, safe="")


def series_id(tags: dict[str, str]) -> str:
    return ",".join(f"{_q(k)}={_q(v)}" for k, v in sorted(tags.items()))


def parse_series_id(sid: str) -> dict[str, str]:
    if not sid:
        return {}
    out = {}
    for part in sid.split(","):
        k, _, v = part.partition("=")
        out[unquote(k)] = unquote(v)
    return out


def _encoder(dtype: pa.DataType) -> Callable[[Any], str]:
    if pa.types.is_floating(dtype):
        return lambda v: "f" + repr(float(v))
    if pa.types.is_boolean(dtype):
        return lambda v: "b1" if v else "b0"
    if pa.types.is_integer(dtype):
        return lambda v: "i" + str(int(v))
    return lambda v: "s" + str(v)


def _blob(values: dict[str, str]) -> str:
    parts = []
    for f, v in values.items():
        parts.append(f"{len(f) if f.isascii() else len(f.encode())}:{f}")
        parts.append(f"{len(v) if v.isascii() else len(v.encode())}:{v}")
    return "".join(parts)


def decode_value(raw: bytes) -> tuple[int, Any]:
    s = raw.decode()
    t = int(s[:20]) - OFFSET
    kind, text = s[20], s[21:]
    if kind == "f":
        return t, float(text)
    if kind == "i":
        return t, int(text)
    if kind == "b":
        return t, text == "1"
    return t, text


class RedisLatestCache:
    """:class:`sensorium.query.cache.LatestCache` on Redis (see the module docstring)."""

    def __init__(
        self,
        url: str,
        seed: Callable[[Key], pa.Table | None],
        tags_of: Callable[[Key], list[str]],
        *,
        instance: str = "default",
        ttl_s: float = 86400.0,
        clock: Callable[[], int] = time.time_ns,
        client: Any = None,
    ) -> None:
        self.url = url
        self._seed = seed
        self._tags_of = tags_of
        self._clock = clock
        self.prefix = f"sensorium:{_q(instance)}:lv:"
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._r = client or redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=5.0, health_check_interval=30
        )
        self._sha: str | None = None
        self._lock = threading.Lock()  # guards the queue
        self._flush_lock = threading.Lock()  # one sender at a time; guards _merged, _lost
        # batches not yet folded, then (``_merged``) their newest value per table, series and
        # field, not yet in Redis. Coalesced: a series written 10 times between two flushes is
        # sent once. Re-sending is harmless (newer wins), so a failed send just stays here.
        self._queue: list[tuple[Key, pa.Table]] = []
        self._queued_rows = 0
        self._merged: dict[Key, dict[str, dict[str, str]]] = {}
        self._lost: set[Key] = set()  # tables whose queue overflowed: seeded again on recovery
        self._retry_at = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    # -- keys ---------------------------------------------------------------------------------
    def table_prefix(self, key: Key) -> str:
        return f"{self.prefix}{_q(key[0])}:{_q(key[1])}:"

    def series_key(self, key: Key, sid: str) -> str:
        return f"{self.table_prefix(key)}s:{sid}"

    # -- writing ------------------------------------------------------------------------------
    def _reduce(self, key: Key, batch: pa.Table) -> dict[str, dict[str, str]]:
        """The batch's newest encoded value per series and field (ties: the later row)."""
        known = set(self._tags_of(key))
        names = batch.column_names
        tags = [
            f.name for f in batch.schema
            if f.name not in RESERVED and (is_tag(f.type) or f.name in known)
        ]
        fields = [n for n in names if n not in RESERVED and n not in tags]
        if batch.num_rows == 0 or TIME not in names or not fields:
            return {}
        batch = batch.take(pc.sort_indices(batch[TIME]))  # stable: equal times keep row order
        tcol = batch[TIME]
        if pa.types.is_timestamp(tcol.type):
            tcol = tcol.cast(pa.int64())
        times = [f"{t + OFFSET:020d}" if t is not None else None for t in tcol.to_pylist()]
        qtags = [_q(t) for t in tags]
        tag_vals = [batch[t].cast(pa.string()).to_pylist() for t in tags]
        if tags:
            sids = [
                ",".join(f"{k}={_q(v)}" for k, v in sorted(zip(qtags, row, strict=True)) if v is not None)
                for row in zip(*tag_vals, strict=True)
            ]
        else:
            sids = [""] * batch.num_rows
        out: dict[str, dict[str, str]] = {}
        for f in fields:
            col = batch[f]
            enc = _encoder(col.type)
            for sid, t, v in zip(sids, times, col.to_pylist(), strict=True):
                if v is not None and t is not None:
                    out.setdefault(sid, {})[f] = t + enc(v)
        return out

    def _send(self, items: list[tuple[Key, dict[str, dict[str, str]]]]) -> None:
        """One pipeline (one round trip) of script calls; loads the script once if Redis lost it."""
        calls: list[tuple[list[str], list[Any]]] = []
        for key, reduced in items:
            sids = list(reduced)
            for lo in range(0, len(sids), CHUNK):
                keys = [self.table_prefix(key) + "idx"]
                args: list[Any] = [self.ttl_ms]
                for sid in sids[lo:lo + CHUNK]:
                    keys.append(self.series_key(key, sid))
                    args += [sid, _blob(reduced[sid])]
                calls.append((keys, args))
        if not calls:
            return
        for attempt in range(2):
            sha = self._sha or self._load()
            pipe = self._r.pipeline(transaction=False)
            for keys, args in calls:
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            results = pipe.execute(raise_on_error=False)
            errors = [r for r in results if isinstance(r, Exception)]
            if not errors:
                return
            if attempt == 0 and all(isinstance(e, NoScriptError) for e in errors):
                self._sha = None  # Redis restarted or SCRIPT FLUSH: load and send again
                continue
            raise errors[0]

    def _load(self) -> str:
        sha = str(self._r.script_load(_UPDATE))
        self._sha = sha
        return sha

    def update(self, key: Key, batch: pa.Table) -> None:
        """Queue the batch (cheap: the ingest path never waits for Redis); a writer thread sends
        it within FLUSH_INTERVAL_S, and every read sends what is queued first."""
        if batch.num_rows == 0:
            return
        with self._lock:
            self._queue.append((key, batch))
            self._queued_rows += batch.num_rows
            while self._queued_rows > MAX_QUEUED_ROWS and len(self._queue) > 1:
                old_key, old = self._queue.pop(0)  # Redis far behind or down: drop the oldest,
                self._queued_rows -= old.num_rows  # and seed that table again once it is back
                self._lost.add(old_key)
            if self._writer is None and not self._stop.is_set():
                self._writer = threading.Thread(target=self._write_loop, name="sensorium-cache-redis",
                                                daemon=True)
                self._writer.start()
            if self._queued_rows >= FLUSH_ROWS:
                self._wake.set()

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(FLUSH_INTERVAL_S)
            self._wake.clear()
            if self._clock() < self._retry_at:
                continue
            try:
                self.flush()
            except RedisError as exc:
                self._retry_at = self._clock() + RETRY_AFTER_NS
                log.warning("latest-value cache: Redis at %s unreachable (%s); latest values wait",
                            self.url, exc)
            except Exception:  # never let the writer die silently
                log.exception("latest-value cache: writing to Redis failed")
                self._retry_at = self._clock() + RETRY_AFTER_NS

    def flush(self) -> None:
        """Send everything queued: one pipeline (one round trip). Raises RedisError."""
        with self._flush_lock:
            with self._lock:
                queue, self._queue, self._queued_rows = self._queue, [], 0
            for key, batch in queue:
                into = self._merged.setdefault(key, {})
                for sid, vals in self._reduce(key, batch).items():
                    cur = into.get(sid)
                    if cur is None:
                        into[sid] = vals
                        continue
                    for f, v in vals.items():  # the 20-digit time prefix orders as text
                        if f not in cur or v[:20] >= cur[f][:20]:
                            cur[f] = v
            if self._lost:
                for key in list(self._lost):  # lost latest values: seed those tables again
                    self._r.delete(self.table_prefix(key) + "seeded")
                    self._lost.discard(key)
            if self._merged:
                self._send(list(self._merged.items()))
                self._merged = {}
            self._retry_at = 0

    # -- reading ------------------------------------------------------------------------------
    def _unavailable(self, exc: Exception) -> CacheUnavailable:
        return CacheUnavailable(
            f"latest-value cache unavailable: cannot reach Redis at {self.url} ({exc}); "
            "check that it runs, or set cache = \"memory\"",
            redis_url=self.url,
        )

    def get(
        self,
        keys: list[Key],
        tag_filter: dict[str, str],
        tags_of: Callable[[Key], list[str]] | None = None,
    ) -> list[dict[str, Any]]:
        if not keys:
            return []
        tags_of = tags_of or self._tags_of
        try:
            self.flush()
            pipe = self._r.pipeline(transaction=False)
            for key in keys:
                pipe.exists(self.table_prefix(key) + "seeded")
            seeded = pipe.execute()
            for key, done in zip(keys, seeded, strict=True):
                if not done:
                    self._seed_table(key)
            wanted: list[tuple[Key, str, dict[str, str]]] = []
            scan: list[Key] = []
            for key in keys:
                if tag_filter and set(tag_filter) == set(tags_of(key)):
                    # every tag given: one series at most, read it without the index
                    wanted.append((key, series_id(tag_filter), dict(tag_filter)))
                else:
                    scan.append(key)
            pipe = self._r.pipeline(transaction=False)
            for key in scan:
                pipe.smembers(self.table_prefix(key) + "idx")
            members = pipe.execute() if scan else []
            for key, sids in zip(scan, members, strict=True):
                for raw in sorted(sids):
                    sid = raw.decode()
                    tags = parse_series_id(sid)
                    if all(tags.get(k) == v for k, v in tag_filter.items()):
                        wanted.append((key, sid, tags))
            if not wanted:
                return []
            pipe = self._r.pipeline(transaction=False)
            for key, sid, _ in wanted:
                pipe.hgetall(self.series_key(key, sid))
            hashes = pipe.execute()
            gone: dict[Key, list[str]] = {}
            out: list[dict[str, Any]] = []
            for (key, sid, tags), h in zip(wanted, hashes, strict=True):
                if not h:  # expired: drop it from the index
                    gone.setdefault(key, []).append(sid)
                    continue
                fields: dict[str, Any] = {}
                newest = None
                for f, raw in h.items():
                    t, v = decode_value(raw)
                    fields[f.decode()] = v
                    newest = t if newest is None else max(newest, t)
                out.append({"bucket": key[0], "measurement": key[1], "tags": tags,
                            "time": newest, "fields": fields})
            if gone:
                pipe = self._r.pipeline(transaction=False)
                for key, sids_gone in gone.items():
                    pipe.srem(self.table_prefix(key) + "idx", *sids_gone)
                pipe.execute()
            return out
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    def _seed_table(self, key: Key) -> None:
        table = self._seed(key)
        if table is not None and table.num_rows:
            reduced = self._reduce(key, table)
            if reduced:
                self._send([(key, reduced)])  # newer wins: never hides a fresher update
        self._r.set(self.table_prefix(key) + "seeded", "1")

    # -- housekeeping -------------------------------------------------------------------------
    def maintain(self) -> int:
        """Nothing to fold here: Redis keeps one hash per series (the writer thread sends)."""
        return 0

    def clear(self, key: Key | None = None) -> None:
        try:
            with self._flush_lock, self._lock:
                if key is None:
                    self._queue, self._queued_rows = [], 0
                    self._merged.clear()
                    self._lost.clear()
                else:
                    self._queue = [q for q in self._queue if q[0] != key]
                    self._queued_rows = sum(b.num_rows for _, b in self._queue)
                    self._merged.pop(key, None)
                    self._lost.discard(key)
            pattern = self.prefix + "*" if key is None else self.table_prefix(key) + "*"
            batch: list[bytes] = []
            for k in self._r.scan_iter(match=pattern, count=1000):
                batch.append(k)
                if len(batch) >= 1000:
                    self._r.unlink(*batch)
                    batch.clear()
            if batch:
                self._r.unlink(*batch)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._writer is not None:
            self._writer.join(timeout=10)
        try:
            self.flush()
        except RedisError as exc:
            log.warning("latest-value cache: latest values not written to Redis (%s)", exc)
        self._r.close()
