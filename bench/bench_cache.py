"""Latest-value cache: update throughput and lookup latency, in memory vs Redis.

--series series (tag device_id) x --fields float fields; --rounds rounds, each one point per
series sent in batches of --batch points (as writes arrive). Reports:

* ``update_points_per_s``: points through ``update`` (both only queue: memory folds on read,
  Redis sends from a writer thread), and ``update_and_fold_points_per_s`` (until the next read
  has everything folded in / written to Redis: the real cost; Redis coalesces a series written
  several times between two sends);
* ``write_through_points_per_s`` (Redis): every batch sent on its own (one round trip each, no
  coalescing) -- the rate for series that each change once per send;
* ``get_one_ms``: ``latest`` of one series (every tag given), p50/p99 over --lookups;
* ``get_all_ms``: ``latest`` of the whole table (all series), p50 over 5.

    python bench/bench_cache.py                 # 10k series x 5 fields, 5 rounds, both adapters
    python bench/bench_cache.py --json          # one JSON object on stdout
    python bench/bench_cache.py --adapter memory
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_info, percentile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sensorium.query.cache import LatestCache  # noqa: E402
from sensorium.query.latest import LastValueCache  # noqa: E402

T0 = 1_767_225_600_000_000_000
KEY = ("bench", "climate")


def tags_of(key: tuple[str, str]) -> list[str]:
    return ["device_id"]


def batches(series: int, fields: int, rounds: int, size: int) -> list[pa.Table]:
    ids = [f"dev-{i:06d}" for i in range(series)]
    rng = random.Random(1)
    out = []
    for r in range(rounds):
        for lo in range(0, series, size):
            n = min(size, series - lo)
            cols: dict[str, Any] = {
                "device_id": pa.array(ids[lo:lo + n]).dictionary_encode(),
                "time": pa.array([T0 + r * 10**9] * n, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            }
            for f in range(fields):
                cols[f"f{f}"] = pa.array([rng.random() * 100 for _ in range(n)], pa.float64())
            out.append(pa.table(cols))
    return out


def make(adapter: str, url: str) -> LatestCache:
    if adapter == "memory":
        return LastValueCache(lambda k: None, tags_of, ttl_s=86400)
    from sensorium.query.cache_redis import RedisLatestCache

    return RedisLatestCache(url, lambda k: None, tags_of, instance=f"bench-{uuid.uuid4().hex[:8]}", ttl_s=600)


def run(adapter: str, args: argparse.Namespace, data: list[pa.Table]) -> dict[str, Any]:
    cache = make(adapter, args.redis_url)
    try:
        points = sum(t.num_rows for t in data)
        t0 = time.perf_counter()
        for t in data:
            cache.update(KEY, t)
        t_update = time.perf_counter() - t0
        cache.get([KEY], {"device_id": "dev-000000"})  # folds everything queued (memory)
        t_fold = time.perf_counter() - t0
        rng = random.Random(2)
        one = []
        for _ in range(args.lookups):
            dev = f"dev-{rng.randrange(args.series):06d}"
            s = time.perf_counter()
            rows = cache.get([KEY], {"device_id": dev})
            one.append((time.perf_counter() - s) * 1000)
            assert len(rows) == 1 and len(rows[0]["fields"]) == args.fields
        full = []
        for _ in range(5):
            s = time.perf_counter()
            rows = cache.get([KEY], {})
            full.append((time.perf_counter() - s) * 1000)
        assert len(rows) == args.series
        extra: dict[str, Any] = {}
        flush = getattr(cache, "flush", None)
        if flush is not None:  # Redis without coalescing: every batch sent on its own
            cache.clear()
            t0 = time.perf_counter()
            for t in data:
                cache.update(KEY, t)
                flush()
            extra["write_through_points_per_s"] = round(points / (time.perf_counter() - t0))
        return {
            "points": points,
            "values": points * args.fields,
            "update_points_per_s": round(points / t_update),
            "update_and_fold_points_per_s": round(points / t_fold),
            "get_one_ms": {"p50": round(percentile(one, 50) or 0, 3), "p99": round(percentile(one, 99) or 0, 3)},
            "get_all_ms": {"p50": round(percentile(full, 50) or 0, 1)},
            **extra,
        }
    finally:
        cache.clear()
        cache.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--series", type=int, default=10_000)
    ap.add_argument("--fields", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=1000, help="points per update call")
    ap.add_argument("--lookups", type=int, default=500)
    ap.add_argument("--adapter", choices=["memory", "redis", "both"], default="both")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    data = batches(args.series, args.fields, args.rounds, args.batch)
    out: dict[str, Any] = {
        "bench": "cache",
        "series": args.series, "fields": args.fields, "rounds": args.rounds, "batch": args.batch,
        "machine": machine_info(),
    }
    for adapter in (["memory", "redis"] if args.adapter == "both" else [args.adapter]):
        log(f"{adapter}: {len(data)} batches")
        out[adapter] = run(adapter, args, data)
        log(f"{adapter}: {out[adapter]}")
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
