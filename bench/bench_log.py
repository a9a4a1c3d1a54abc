"""The durable log: append throughput and replay rate, embedded WAL (fsync always) vs NATS JetStream.

Each record is one encoded batch of --points points (device_id, time, 3 float fields: ~what one
write request of that many points puts in the log). Reports per adapter:

* ``append_serial``: one record per ``append``, one writer (each waits for its fsync / pub ack);
* ``append_threads``: --threads writers appending concurrently (the WAL shares fsyncs between
  them: group commit; JetStream pipelines their publishes on one connection);
* ``replay``: reading every record back (decoded into Arrow tables), from offset 0.

Rates are records/s, points/s and MB/s of encoded payload. JetStream needs a server
(``--nats-url``, default nats://127.0.0.1:4222) and uses a throwaway stream, deleted afterwards.

    python bench/bench_log.py                  # both adapters
    python bench/bench_log.py --json           # one JSON object on stdout
    python bench/bench_log.py --adapter wal
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sensorium.config import WALSettings  # noqa: E402
from sensorium.log.wal import KIND_DATA, WAL, encode_payload  # noqa: E402

T0 = 1_767_225_600_000_000_000


def payloads(n: int, points: int) -> list[bytes]:
    rng = random.Random(1)
    out = []
    for r in range(n):
        table = pa.table(
            {
                "device_id": pa.array([f"dev-{i:05d}" for i in range(points)]).dictionary_encode(),
                "time": pa.array([T0 + r * 10**9] * points, pa.int64()).cast(
                    pa.timestamp("ns", tz="UTC")
                ),
                **{
                    f"f{f}": pa.array([rng.random() * 100 for _ in range(points)], pa.float64())
                    for f in range(3)
                },
            }
        )
        out.append(encode_payload(KIND_DATA, {"bucket": "bench", "measurement": f"m{r % 8}"}, table))
    return out


def rates(n: int, nbytes: int, points: int, seconds: float) -> dict[str, Any]:
    return {
        "records": n,
        "seconds": round(seconds, 3),
        "records_per_s": round(n / seconds, 1),
        "points_per_s": round(n * points / seconds),
        "mb_per_s": round(nbytes / seconds / 1e6, 2),
    }


def run(log_: Any, data: list[bytes], threads: int, points: int) -> dict[str, Any]:
    nbytes = sum(len(p) for p in data)
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    for p in data:
        log_.append([p])
    res["append_serial"] = rates(len(data), nbytes, points, time.perf_counter() - t0)

    chunks = [data[i::threads] for i in range(threads)]

    def writer(chunk: list[bytes]) -> None:
        for p in chunk:
            log_.append([p])

    ths = [threading.Thread(target=writer, args=(c,)) for c in chunks]
    t0 = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    res["append_threads"] = {"threads": threads, **rates(len(data), nbytes, points, time.perf_counter() - t0)}

    t0 = time.perf_counter()
    n = rows = 0
    for rec in log_.replay(0):
        n += 1
        rows += rec.table.num_rows if rec.table is not None else 0
    dt = time.perf_counter() - t0
    assert n == 2 * len(data) and rows == n * points, (n, rows)
    res["replay"] = rates(n, 2 * nbytes, points, dt)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=300, help="records per phase")
    ap.add_argument("--points", type=int, default=1000, help="points per record")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--adapter", choices=["wal", "nats", "both"], default="both")
    ap.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    data = payloads(args.records, args.points)
    out: dict[str, Any] = {
        "bench": "log",
        "records": args.records,
        "points_per_record": args.points,
        "payload_bytes_per_record": sum(len(p) for p in data) // len(data),
        "machine": machine_info(),
    }
    if args.adapter in ("wal", "both"):
        log("WAL (fsync always) ...")
        with tempfile.TemporaryDirectory(dir=Path.cwd()) as d:
            w = WAL(Path(d) / "wal", WALSettings(fsync="always"))
            try:
                out["wal"] = run(w, data, args.threads, args.points)
            finally:
                w.close()
    if args.adapter in ("nats", "both"):
        from sensorium.log.nats import JetStreamLog

        log(f"JetStream at {args.nats_url} ...")
        j = JetStreamLog(args.nats_url, f"bench_{uuid.uuid4().hex[:10]}")
        try:
            out["nats"] = run(j, data, args.threads, args.points)
        finally:
            j.delete_stream()
            j.close()
    if args.json:
        print(json.dumps(out))
    else:
        for name in ("wal", "nats"):
            if name in out:
                for phase, r in out[name].items():
                    print(f"{name:5} {phase:15} {r['records_per_s']:>10} rec/s {r['points_per_s']:>12} pts/s {r['mb_per_s']:>8} MB/s")


if __name__ == "__main__":
    main()
