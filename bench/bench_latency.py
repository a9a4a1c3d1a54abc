"""Acknowledgement -> queryable latency under write load (Sensorium; InfluxDB 1.6 for reference).

A paced writer posts --rate points/s (--writers connections, --batch points per request, current
timestamps, --devices distinct series) for --duration seconds. Meanwhile a prober, on its own
connections, repeatedly writes one uniquely tagged point (``probe,id=<unique> v=<n>i <now>``),
waits for the acknowledgement (204), then polls

    SELECT count(*) AS n FROM probe WHERE id = '<unique>'        (InfluxQL: count(v))

until the point is visible. Latency = time of the first response that shows the point minus time
of the acknowledgement (so it includes one query round trip; ``query_rtt_*`` gives that floor).
Reports p50/p99/max over >= --probes probes (the run extends past --duration until enough
probes completed, at most --max-duration), how many were visible on the very first poll, and the
achieved write rate (``kept_pace``: within 5 % of --rate).

    python bench/bench_latency.py                  # Sensorium, 100 k points/s, 20 s, >= 200 probes
    python bench/bench_latency.py --system both    # and InfluxDB 1.6 after it
    python bench/bench_latency.py --quick          # 20 k points/s, 6 s, 50 probes
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HOST,
    PacedWriters,
    emit,
    log,
    machine_info,
    make_batches,
    percentile,
    proc_cpu_s,
    r3,
)
from influx import InfluxDB  # noqa: E402
from sensorium_server import SensoriumServer  # noqa: E402


class Target:
    """What the load generator needs from a system: write path, probe query, visibility test."""

    def __init__(self, kind: str, server: Any) -> None:
        self.kind = kind
        self.server = server
        self.port = server.port
        self.name = server.name
        self.write_path = server.write_path

    def probe_query_path(self, probe_id: str) -> str:
        if self.kind == "sensorium":
            sql = f"SELECT count(*) AS n FROM probe WHERE id = '{probe_id}'"
            return "/api/v1/query?" + urllib.parse.urlencode({"sql": sql, "bucket": self.server.bucket})
        q = f"SELECT count(v) FROM probe WHERE id = '{probe_id}'"
        return "/query?" + urllib.parse.urlencode({"db": self.server.db, "q": q})

    def visible(self, status: int, body: bytes) -> bool:
        if status != 200:
            return False
        try:
            data = json.loads(body)
        except ValueError:
            return False
        if self.kind == "sensorium":
            rows = data.get("rows") or []
            return bool(rows) and (rows[0][0] or 0) >= 1
        for r in data.get("results", []):
            for s in r.get("series", []) or []:
                if s.get("values") and (s["values"][0][1] or 0) >= 1:
                    return True
        return False


def run(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    stop = threading.Event()
    groups = make_batches(args.devices, args.batch)
    writers = PacedWriters(target.port, target.write_path, groups, rate=args.rate, writers=args.writers,
                           batch=args.batch, stop=stop)
    wstats = writers.stats

    lat: list[float] = []
    acks: list[float] = []
    rtts: list[float] = []
    polls: list[int] = []
    pstats = {"write_errors": 0, "timeouts": 0, "first_errors": []}
    run_id = uuid.uuid4().hex[:8]

    def prober() -> None:
        wc = http.client.HTTPConnection(HOST, target.port, timeout=60)
        qc = http.client.HTTPConnection(HOST, target.port, timeout=60)
        spacing = args.duration / args.probes
        i = 0
        time.sleep(min(1.0, args.duration / 10))  # let the writers reach their pace
        while not stop.is_set():
            t_next = time.perf_counter() + spacing
            pid = f"{run_id}-{i}"
            body = f"probe,id={pid} v={i}i {time.time_ns()}\n".encode()
            t0 = time.perf_counter()
            try:
                wc.request("POST", target.write_path, body=body)
                r = wc.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException) as exc:
                pstats["write_errors"] += 1
                pstats["first_errors"].append(repr(exc))
                wc.close()
                wc = http.client.HTTPConnection(HOST, target.port, timeout=60)
                i += 1
                continue
            t_ack = time.perf_counter()
            if r.status not in (200, 204):
                pstats["write_errors"] += 1
                if len(pstats["first_errors"]) < 3:
                    pstats["first_errors"].append(f"{r.status}: {data[:200]!r}")
                i += 1
                continue
            acks.append(t_ack - t0)
            path = target.probe_query_path(pid)
            n = 0
            seen = False
            while time.perf_counter() - t_ack < args.probe_timeout:
                q0 = time.perf_counter()
                try:
                    qc.request("GET", path)
                    qr = qc.getresponse()
                    qb = qr.read()
                    st = qr.status
                except (OSError, http.client.HTTPException):
                    qc.close()
                    qc = http.client.HTTPConnection(HOST, target.port, timeout=60)
                    st, qb = -1, b""
                q1 = time.perf_counter()
                n += 1
                rtts.append(q1 - q0)
                if target.visible(st, qb):
                    lat.append(q1 - t_ack)
                    polls.append(n)
                    seen = True
                    break
                if st not in (200, -1) and len(pstats["first_errors"]) < 3:
                    pstats["first_errors"].append(f"query {st}: {qb[:200]!r}")
                if args.poll_interval_ms:
                    time.sleep(args.poll_interval_ms / 1000)
            if not seen:
                pstats["timeouts"] += 1
            i += 1
            wait = t_next - time.perf_counter()
            if wait > 0:
                stop.wait(wait)
        wc.close()
        qc.close()

    cpu0 = proc_cpu_s(target.server.pid) if target.server.pid else None
    writers.start()
    t_start = writers.t_start
    threads = [threading.Thread(target=prober, daemon=True)]
    for t in threads:
        t.start()
    deadline = t_start + max(args.max_duration, args.duration)
    while True:
        time.sleep(0.2)
        el = time.perf_counter() - t_start
        if el >= args.duration and len(lat) + pstats["timeouts"] >= args.probes:
            break
        if time.perf_counter() >= deadline:
            log(f"{target.name}: stopping at {el:.0f}s with {len(lat)} probes")
            break
    stop.set()
    writers.join(timeout=args.probe_timeout + 60)
    for t in threads:
        t.join(timeout=args.probe_timeout + 60)
    elapsed = time.perf_counter() - t_start
    cpu1 = proc_cpu_s(target.server.pid) if target.server.pid else None

    def ms(x: float | None) -> float | None:
        return r3(x * 1000 if x is not None else None, 2)

    return {
        "bench": "ack_to_query_latency",
        "system": target.name,
        "target_points_per_s": args.rate,
        "achieved_points_per_s": round(wstats["points"] / elapsed),
        "kept_pace": wstats["points"] / elapsed >= 0.95 * args.rate,
        "elapsed_s": r3(elapsed, 1),
        "writers": args.writers,
        "batch_points": args.batch,
        "writer_requests": wstats["requests"],
        "writer_errors": wstats["errors"],
        "writer_max_behind_s": r3(wstats["behind_max_s"], 3),
        "probes": len(lat),
        "probe_timeouts": pstats["timeouts"],
        "probe_write_errors": pstats["write_errors"],
        "p50_ms": ms(percentile(lat, 50)),
        "p99_ms": ms(percentile(lat, 99)),
        "max_ms": ms(max(lat) if lat else None),
        "visible_on_first_poll": round(sum(1 for p in polls if p == 1) / len(polls), 4) if polls else None,
        "polls_max": max(polls) if polls else None,
        "probe_ack_p50_ms": ms(percentile(acks, 50)),
        "probe_ack_p99_ms": ms(percentile(acks, 99)),
        "query_rtt_p50_ms": ms(percentile(rtts, 50)),
        "query_rtt_p99_ms": ms(percentile(rtts, 99)),
        "server_cpu_s": r3(cpu1 - cpu0, 1) if cpu0 is not None and cpu1 is not None else None,
        "first_errors": (wstats["first_errors"] + pstats["first_errors"])[:4],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--system", choices=["sensorium", "influx", "both"], default="sensorium")
    ap.add_argument("--rate", type=float, default=100_000, help="writer points/s (all writers together)")
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000, help="points per write request")
    ap.add_argument("--devices", type=int, default=10_000, help="distinct series the writers cycle over")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds (extended until --probes done)")
    ap.add_argument("--max-duration", type=float, default=120.0, help="hard cap on the run, seconds")
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--probe-timeout", type=float, default=30.0, help="give up on one probe after this long")
    ap.add_argument("--poll-interval-ms", type=float, default=0.0, help="pause between polls (0: back to back)")
    ap.add_argument("--fsync", choices=["always", "interval", "never"], help="Sensorium wal.fsync")
    ap.add_argument("--quick", action="store_true", help="20 k points/s, 6 s, 50 probes")
    ap.add_argument("--tmp-dir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rate, args.duration, args.probes, args.devices, args.max_duration = 20_000, 6.0, 50, 2000, 30.0
    emit({"bench": "latency_setup", "rate": args.rate, "writers": args.writers, "batch": args.batch,
          "duration_s": args.duration, "probes": args.probes, **machine_info()})
    systems = ["sensorium", "influx"] if args.system == "both" else [args.system]
    for s in systems:
        try:
            if s == "sensorium":
                with SensoriumServer(base_dir=args.tmp_dir, keep=args.keep, fsync=args.fsync) as srv:
                    rec = run(Target("sensorium", srv), args)
                    rec["durability"] = f"wal.fsync={args.fsync or 'default (always)'}"
                    emit(rec)
                    srv.stop(timeout=60)
            else:
                with InfluxDB(base_dir=args.tmp_dir, keep=args.keep) as db:
                    rec = run(Target("influx", db), args)
                    rec["durability"] = "wal-fsync-delay=0s"
                    emit(rec)
        except Exception as exc:
            emit({"bench": "ack_to_query_latency", "system": s, "error": str(exc)[:1500]})


if __name__ == "__main__":
    main()
