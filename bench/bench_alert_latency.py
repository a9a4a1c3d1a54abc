"""Ingest -> alert latency over HTTP under a paced write load (Sensorium, built-in rules).

A real server (``sensorium up`` via :class:`SensoriumServer`, built-in rules: ``temperature-range``
fires *critical* at temperature >= 60) takes --rate points/s of normal climate readings
(temperature 18-25 °C, --writers connections, --batch points per request, current timestamps,
--devices distinct series; they trip no rule). Meanwhile:

* a listener thread holds ``GET /api/v1/alerts/stream`` (server-sent events) open and records
  when each ``event: alert`` arrives (``data:`` JSON with ``rule``, ``state``, ``series``, ``tags``);
* a prober, every --probe-interval-ms, writes ONE point for a fresh device
  (``climate,device_id=probe-<run>-<i> temperature=99 <now>``) on its own connection and records the
  time the request was sent and the time of its acknowledgement (204).

Latency = arrival of the ``firing`` event of ``temperature-range`` for that probe's series minus the
time its write was sent (``ack_*`` gives the acknowledgement part, ``after_ack_*`` the rest:
stream pick-up, rules, the alert store, the SSE push). Reported: p50 / p99 / max over >= --probes
probes (the run continues past --duration until enough probes are resolved, at most
--max-duration), probes that never alerted within --probe-timeout, the achieved write rate and
``kept_pace`` (>= 95 % of --rate), and the server's stream status at the end (backlog, error).
Target: p99 <= 500 ms at 100 k points/s.

    python bench/bench_alert_latency.py                # 100 k points/s, >= 200 probes
    python bench/bench_alert_latency.py --quick        # 20 k points/s, 50 probes
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    HOST,
    PacedWriters,
    emit,
    http_request,
    log,
    machine_info,
    make_batches,
    percentile,
    proc_cpu_s,
    proc_rss_kb,
    r3,
)
from sensorium_server import SensoriumServer  # noqa: E402

TARGET_P99_MS = 500.0
PROBE_RULE = "temperature-range"


class SSEListener(threading.Thread):
    """Holds ``GET /api/v1/alerts/stream`` open; records the arrival time of each probe's firing."""

    def __init__(self, port: int, probe_prefix: str) -> None:
        super().__init__(daemon=True, name="sse-listener")
        self.port = port
        self.prefix = probe_prefix
        self.connected = threading.Event()
        self.stop = threading.Event()
        self.arrivals: dict[str, float] = {}  # probe device_id -> perf_counter at arrival
        self.events = 0
        self.other_events = 0
        self.error: str | None = None
        self.conn: http.client.HTTPConnection | None = None

    def run(self) -> None:
        try:
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=None)
            self.conn.request("GET", "/api/v1/alerts/stream", headers={"Accept": "text/event-stream"})
            r = self.conn.getresponse()
            if r.status != 200:
                self.error = f"alerts stream answered {r.status}: {r.read(300)!r}"
                self.connected.set()
                return
            buf = b""
            while not self.stop.is_set():
                chunk = r.read1(65536)
                now = time.perf_counter()
                if not chunk:
                    if not self.stop.is_set():
                        self.error = "alerts stream closed by the server"
                    return
                buf += chunk
                while b"\n\n" in buf:
                    raw, buf = buf.split(b"\n\n", 1)
                    self._event(raw, now)
        except Exception as exc:  # noqa: BLE001
            if not self.stop.is_set():
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.connected.set()

    def _event(self, raw: bytes, now: float) -> None:
        kind = "message"
        data: list[bytes] = []
        for line in raw.split(b"\n"):
            if line.startswith(b":"):
                if line.startswith(b": connected"):
                    self.connected.set()
                continue
            if line.startswith(b"event:"):
                kind = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip())
        if kind != "alert" or not data:
            return
        self.events += 1
        try:
            d = json.loads(b"\n".join(data))
        except ValueError:
            return
        dev = (d.get("tags") or {}).get("device_id") or ""
        if d.get("rule") == PROBE_RULE and d.get("state") == "firing" and dev.startswith(self.prefix):
            self.arrivals.setdefault(dev, now)
        else:
            self.other_events += 1

    def close(self) -> None:
        self.stop.set()
        if self.conn is not None:
            try:
                if self.conn.sock is not None:
                    import socket

                    self.conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.conn.close()


def run(srv: SensoriumServer, args: argparse.Namespace) -> dict[str, Any]:
    port = srv.port
    write_path = srv.write_path
    run_id = uuid.uuid4().hex[:8]
    prefix = f"probe-{run_id}-"
    listener = SSEListener(port, prefix)
    listener.start()
    if not listener.connected.wait(15) or listener.error:
        raise RuntimeError(f"could not subscribe to /api/v1/alerts/stream: {listener.error or 'no answer in 15 s'}")

    stop = threading.Event()
    groups = make_batches(args.devices, args.batch, "alat")
    writers = PacedWriters(port, write_path, groups, rate=args.rate, writers=args.writers,
                           batch=args.batch, stop=stop)
    wstats = writers.stats

    sent: dict[str, float] = {}
    acked: dict[str, float] = {}
    pstats: dict[str, Any] = {"write_errors": 0, "first_errors": []}
    probes_stop = threading.Event()

    def prober() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=60)
        spacing = args.probe_interval_ms / 1000
        # let the writers reach their pace and the server its steady state (the first pass over
        # --devices registers every device and creates every series)
        probes_stop.wait(args.warmup if args.warmup is not None else min(1.0, args.duration / 10))
        i = 0
        next_at = time.perf_counter()
        while not probes_stop.is_set():
            dev = f"{prefix}{i}"
            body = f"climate,device_id={dev} temperature=99 {time.time_ns()}\n".encode()
            t0 = time.perf_counter()
            try:
                conn.request("POST", write_path, body=body)
                r = conn.getresponse()
                data = r.read()
                t1 = time.perf_counter()
                if r.status in (200, 204):
                    sent[dev] = t0
                    acked[dev] = t1
                else:
                    pstats["write_errors"] += 1
                    if len(pstats["first_errors"]) < 3:
                        pstats["first_errors"].append(f"{r.status}: {data[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                pstats["write_errors"] += 1
                if len(pstats["first_errors"]) < 3:
                    pstats["first_errors"].append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=60)
            i += 1
            next_at += spacing
            wait = next_at - time.perf_counter()
            if wait > 0:
                probes_stop.wait(wait)
            else:
                next_at = time.perf_counter()  # fell behind (slow acks): no burst to catch up
        conn.close()

    def settled(now: float) -> tuple[int, int]:
        """(probes alerted, probes given up on) so far."""
        done = timed_out = 0
        for dev, t0 in list(sent.items()):
            if dev in listener.arrivals:
                done += 1
            elif now - t0 > args.probe_timeout:
                timed_out += 1
        return done, timed_out

    cpu0 = proc_cpu_s(srv.pid) if srv.pid else None
    writers.start()
    t_start = writers.t_start
    pthread = threading.Thread(target=prober, daemon=True)
    pthread.start()
    deadline = t_start + (args.warmup or 0) + max(args.max_duration, args.duration)
    while True:
        time.sleep(0.2)
        now = time.perf_counter()
        done, timed_out = settled(now)
        if now - t_start >= args.duration + (args.warmup or 0) and len(sent) >= args.probes:
            break
        if now >= deadline:
            log(f"stopping at {now - t_start:.0f}s with {done} probes alerted")
            break
        if listener.error:
            log(f"alert stream failed: {listener.error}")
            break
    probes_stop.set()
    pthread.join(timeout=65)
    # keep the load on while the last probes' alerts arrive (at most --probe-timeout)
    wait_until = time.perf_counter() + args.probe_timeout
    while time.perf_counter() < wait_until and not listener.error:
        done, timed_out = settled(time.perf_counter())
        if done + timed_out >= len(sent):
            break
        time.sleep(0.05)
    stop.set()
    writers.join(timeout=65)
    elapsed = time.perf_counter() - t_start
    cpu1 = proc_cpu_s(srv.pid) if srv.pid else None
    _rss, hwm = proc_rss_kb(srv.pid) if srv.pid else (None, None)
    stream_status: Any = None
    try:
        st, body = http_request(port, "GET", "/api/v1/stream")
        stream_status = json.loads(body) if st == 200 else {"status": st}
    except Exception as exc:  # noqa: BLE001
        stream_status = {"error": repr(exc)}
    time.sleep(0.5)  # alerts still on their way are counted as late arrivals, not lost
    listener.close()

    lat, ack, after = [], [], []
    missed = []
    for dev, t0 in sent.items():
        ta = listener.arrivals.get(dev)
        if ta is None:
            missed.append(dev)
            continue
        lat.append(ta - t0)
        ack.append(acked[dev] - t0)
        after.append(ta - acked[dev])

    def ms(x: float | None) -> float | None:
        return r3(x * 1000 if x is not None else None, 2)

    if args.dump:  # one line per probe: when it was sent (s since the writers started, and as epoch seconds), latencies
        with open(args.dump, "w") as fh:
            for dev, t0 in sorted(sent.items(), key=lambda kv: kv[1]):
                ta = listener.arrivals.get(dev)
                fh.write(json.dumps({"sent_s": r3(t0 - t_start, 3), "sent_epoch": r3(time.time() - (time.perf_counter() - t0), 3),
                                     "ack_ms": ms(acked[dev] - t0),
                                     "alert_ms": ms(ta - t0) if ta is not None else None}) + "\n")
    p99 = percentile(lat, 99)
    return {
        "bench": "ingest_to_alert_latency",
        "system": "sensorium",
        "rule": f"{PROBE_RULE} (built-in: temperature >= 60 -> critical)",
        "target_points_per_s": args.rate,
        "achieved_points_per_s": round(wstats["points"] / elapsed),
        "kept_pace": wstats["points"] / elapsed >= 0.95 * args.rate,
        "elapsed_s": r3(elapsed, 1),
        "writers": args.writers,
        "batch_points": args.batch,
        "devices": args.devices,
        "writer_requests": wstats["requests"],
        "writer_errors": wstats["errors"],
        "writer_max_behind_s": r3(wstats["behind_max_s"], 3),
        "probes_sent": len(sent),
        "probes": len(lat),
        "probes_without_alert": len(missed),
        "probe_write_errors": pstats["write_errors"],
        "probe_interval_ms": args.probe_interval_ms,
        "warmup_s": args.warmup,
        "p50_ms": ms(percentile(lat, 50)),
        "p99_ms": ms(p99),
        "max_ms": ms(max(lat) if lat else None),
        "ack_p50_ms": ms(percentile(ack, 50)),
        "ack_p99_ms": ms(percentile(ack, 99)),
        "after_ack_p50_ms": ms(percentile(after, 50)),
        "after_ack_p99_ms": ms(percentile(after, 99)),
        "meets_p99_target": (p99 * 1000 <= TARGET_P99_MS) if p99 is not None and not missed else False,
        "target_p99_ms": TARGET_P99_MS,
        "sse_alert_events": listener.events,
        "sse_other_alert_events": listener.other_events,
        "sse_error": listener.error,
        "server_cpu_s": r3(cpu1 - cpu0, 1) if cpu0 is not None and cpu1 is not None else None,
        "server_peak_rss_mb": r3(hwm / 1024, 1) if hwm else None,
        "stream_status_at_end": {k: stream_status.get(k) for k in
                                 ("backlog_rows", "caught_up", "error", "rows", "steps", "transitions", "series")}
        if isinstance(stream_status, dict) else stream_status,
        "first_errors": (wstats["first_errors"] + pstats["first_errors"])[:4],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100_000, help="writer points/s (all writers together)")
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1000, help="points per write request")
    ap.add_argument("--devices", type=int, default=10_000, help="distinct series the writers cycle over")
    ap.add_argument("--duration", type=float, default=25.0, help="seconds (extended until --probes sent)")
    ap.add_argument("--max-duration", type=float, default=120.0, help="hard cap on the probing, seconds")
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of paced load before the first probe (default: 1 s, or duration/10 if less)")
    ap.add_argument("--dump", help="write one JSON line per probe (sent_s, sent_epoch, ack_ms, alert_ms) to this file")
    ap.add_argument("--probe-interval-ms", type=float, default=100.0)
    ap.add_argument("--probe-timeout", type=float, default=30.0, help="a probe with no alert after this long is missed")
    ap.add_argument("--fsync", choices=["always", "interval", "never"], help="Sensorium wal.fsync (default: always)")
    ap.add_argument("--quick", action="store_true", help="20 k points/s, 50 probes")
    ap.add_argument("--tmp-dir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rate, args.duration, args.probes, args.devices, args.max_duration = 20_000, 6.0, 50, 2000, 40.0
        args.probe_timeout = min(args.probe_timeout, 15.0)
    emit({"bench": "alert_latency_setup", "rate": args.rate, "writers": args.writers, "batch": args.batch,
          "duration_s": args.duration, "probes": args.probes, "probe_interval_ms": args.probe_interval_ms,
          **machine_info()})
    try:
        with SensoriumServer(base_dir=args.tmp_dir, keep=args.keep, fsync=args.fsync) as srv:
            rec = run(srv, args)
            rec["durability"] = f"wal.fsync={args.fsync or 'default (always)'}"
            emit(rec)
            srv.stop(timeout=120)
    except Exception as exc:  # noqa: BLE001
        emit({"bench": "ingest_to_alert_latency", "system": "sensorium", "error": f"{type(exc).__name__}: {exc}"[:1500]})


if __name__ == "__main__":
    main()
