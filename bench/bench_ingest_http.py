"""HTTP line-protocol ingest, Sensorium vs InfluxDB 1.6, side by side in one run.

Same data for both (>= --values field values, see bench/_data.py), each system on a fresh data dir,
one after the other: --connections keep-alive connections posting --batch-lines-line bodies from a
shared queue (bodies are prepared bytes in memory; the client does no per-line work). Then, per
system:

* ``http_ingest``: values/s (field values), points/s, elapsed, errors, request latency, the server's
  CPU seconds and peak RSS;
* ``ack_to_queryable``: right after the last acknowledgement, are all points queryable? (count)
* ``storage``: bytes on disk per field value after compaction (InfluxDB: TSM + WAL after its full
  compaction; Sensorium: lake (Parquet) bytes after stop + ``maintain(vacuum_hours=0,
  min_files=2)``); ``all_bytes_per_value`` counts everything in the data dir(s) as allocated on
  disk (InfluxDB: data + wal + meta incl. the series file; Sensorium: lake + WAL + dead letters...);

and a final ``http_ingest_comparison`` line with the sensorium/influx ratios.

    python bench/bench_ingest_http.py                 # 10 M values, both systems
    python bench/bench_ingest_http.py --quick         # 200 k values smoke run
    python bench/bench_ingest_http.py --only influx   # one system
    python bench/bench_ingest_http.py --client-check  # also: the client against a do-nothing server

Durability is equal by default: InfluxDB fsyncs its WAL before acknowledging
(``wal-fsync-delay = 0s``) and Sensorium runs with ``wal.fsync = always``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    client_ceiling,
    emit,
    log,
    machine_info,
    post_bodies,
    proc_cpu_s,
    proc_rss_kb,
    r3,
    split_bodies,
)
from _data import Dataset, dataset  # noqa: E402
from influx import InfluxDB  # noqa: E402
from sensorium_server import SensoriumServer  # noqa: E402


def ingest_record(system: str, ds: Dataset, bodies: list[bytes], args: argparse.Namespace, st: Any,
                  pid: int | None, cpu0: float | None) -> dict[str, Any]:
    cpu1 = proc_cpu_s(pid) if pid else None
    _, hwm = proc_rss_kb(pid) if pid else (None, None)
    el = st.elapsed_s
    return {
        "bench": "http_ingest",
        "system": system,
        "values": ds.values,
        "points": ds.points,
        "batches": len(bodies),
        "batch_lines": args.batch_lines,
        "connections": args.connections,
        "elapsed_s": r3(el),
        "values_per_s": round(ds.values / el) if el else None,
        "points_per_s": round(ds.points / el) if el else None,
        "mb_per_s": round(st.bytes_sent / el / 1e6, 1) if el else None,
        "server_cpu_s": r3(cpu1 - cpu0, 1) if cpu0 is not None and cpu1 is not None else None,
        "values_per_server_cpu_s": round(ds.values / (cpu1 - cpu0)) if cpu0 is not None and cpu1 and cpu1 > cpu0 else None,
        "server_peak_rss_mb": round(hwm / 1024, 1) if hwm else None,
        "valid": st.errors == 0,
        **st.summary(),
    }


def run_influx(ds: Dataset, bodies: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {}
    with InfluxDB(base_dir=args.tmp_dir, keep=args.keep) as db:
        log(f"influxdb: posting {len(bodies)} bodies on {args.connections} connections (port {db.port})")
        cpu0 = proc_cpu_s(db.pid) if db.pid else None
        st = post_bodies(db.port, db.write_path, bodies, connections=args.connections)
        rec = ingest_record(db.name, ds, bodies, args, st, db.pid, cpu0)
        rec.update(version=db.version, durability="wal-fsync-delay=0s (fsync per write)", index=db.index)
        emit(rec)
        res["ingest"] = rec
        # acknowledged -> queryable (counted right after the last 204)
        t0 = time.perf_counter()
        try:
            counts = {m: d["fields"][-1] for m, d in ds.measurements.items()}  # rssi: in every point
            n = db.count_points(counts)
            rec2 = {"bench": "ack_to_queryable", "system": db.name, "expected_points": ds.points,
                    "queryable_points": n, "ok": n == ds.points, "count_query_s": r3(time.perf_counter() - t0)}
        except Exception as exc:  # reported, the run goes on
            rec2 = {"bench": "ack_to_queryable", "system": db.name, "error": str(exc)[:500]}
        emit(rec2)
        res["check"] = rec2
        log("influxdb: waiting for full compaction")
        disk = db.disk_bytes(timeout=args.compact_timeout)
        rec3 = {"bench": "storage", "system": db.name, "values": ds.values,
                "bytes_per_value": round(disk["bytes"] / ds.values, 3),
                "all_bytes_per_value": round(disk["all_du_bytes"] / ds.values, 3), **disk}
        emit(rec3)
        res["storage"] = rec3
    return res


def run_sensorium(ds: Dataset, bodies: list[bytes], args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {}
    srv = SensoriumServer(base_dir=args.tmp_dir, keep=args.keep, fsync=args.fsync)
    with srv:
        log(f"sensorium: posting {len(bodies)} bodies on {args.connections} connections (port {srv.port})")
        cpu0 = proc_cpu_s(srv.pid) if srv.pid else None
        st = post_bodies(srv.port, srv.write_path, bodies, connections=args.connections)
        rec = ingest_record(srv.name, ds, bodies, args, st, srv.pid, cpu0)
        rec.update(durability=f"wal.fsync={args.fsync or 'default (always)'}")
        emit(rec)
        res["ingest"] = rec
        t0 = time.perf_counter()
        try:
            n = srv.count_points(sorted(ds.measurements))
            rec2 = {"bench": "ack_to_queryable", "system": srv.name, "expected_points": ds.points,
                    "queryable_points": n, "ok": n == ds.points, "count_query_s": r3(time.perf_counter() - t0)}
        except Exception as exc:
            rec2 = {"bench": "ack_to_queryable", "system": srv.name, "error": str(exc)[:500]}
        emit(rec2)
        res["check"] = rec2
        try:
            live = srv.storage()
        except Exception as exc:
            live = {"error": str(exc)[:300]}
        log("sensorium: stopping (flush) and compacting")
        t0 = time.perf_counter()
        srv.stop(timeout=args.stop_timeout)
        stop_s = time.perf_counter() - t0
        rec3: dict[str, Any] = {"bench": "storage", "system": srv.name, "values": ds.values,
                                "stop_s": r3(stop_s, 1), "stopped_cleanly": srv.stopped_cleanly(),
                                "exit_code": srv.last_exit,
                                "live_before_stop": {k: live.get(k) for k in ("bytes", "values", "wal_bytes", "hot_rows", "error") if k in live}}
        try:
            comp = srv.compact(timeout=args.compact_timeout)
            stored_values = comp.get("values") or 0
            rec3.update(
                bytes=comp.get("bytes"),
                bytes_per_value=round(comp["bytes"] / ds.values, 3) if comp.get("bytes") else None,
                stored_values=stored_values,
                bytes_per_stored_value=comp.get("bytes_per_value"),
                data_dir_bytes=comp.get("data_dir_bytes"),
                wal_bytes=comp.get("wal_bytes"),
                all_bytes_per_value=round(comp["data_dir_du_bytes"] / ds.values, 3) if comp.get("data_dir_du_bytes") else None,
                data_dir_du_bytes=comp.get("data_dir_du_bytes"),
                files=sum(t.get("files", 0) for t in comp.get("tables", [])),
                compact_s=comp.get("compact_s"),
                method=comp.get("method"),
            )
        except Exception as exc:
            rec3["error"] = str(exc)[:600]
        if not rec3["stopped_cleanly"]:
            rec3["server_log_tail"] = srv.log_tail(800)
        emit(rec3)
        res["storage"] = rec3
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=10_000_000, help="field values to send (default 10 M)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--batch-lines", type=int, default=5000)
    ap.add_argument("--only", choices=["sensorium", "influx"], help="run one system only")
    ap.add_argument("--order", choices=["influx-first", "sensorium-first"], default="influx-first")
    ap.add_argument("--quick", action="store_true", help="smoke run: 200 k values")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source", default="auto", choices=["auto", "simulator", "builtin"], help="data generator")
    ap.add_argument("--fsync", choices=["always", "interval", "never"], help="Sensorium wal.fsync (default: its own, always)")
    ap.add_argument("--client-check", action="store_true", help="first measure the client against a do-nothing server")
    ap.add_argument("--compact-timeout", type=float, default=900.0)
    ap.add_argument("--stop-timeout", type=float, default=300.0)
    ap.add_argument("--tmp-dir", help="where the data dirs go (default: system temp)")
    ap.add_argument("--keep", action="store_true", help="keep the data dirs")
    args = ap.parse_args()
    if args.quick:
        args.values = 200_000
        args.compact_timeout = min(args.compact_timeout, 120)

    ds = dataset(args.values, args.seed, args.source)
    data = ds.read_bytes()
    bodies = split_bodies(data, args.batch_lines)
    del data
    emit({"bench": "dataset", **ds.describe(), "batches": len(bodies), **machine_info()})
    if args.client_check:
        cc = client_ceiling(bodies, args.connections)
        emit({"bench": "client_ceiling", "values_per_s": round(ds.values / cc["elapsed_s"]), **cc})

    systems = ["influx", "sensorium"] if args.order == "influx-first" else ["sensorium", "influx"]
    if args.only:
        systems = [args.only]
    results: dict[str, dict[str, Any]] = {}
    for s in systems:
        try:
            results[s] = run_influx(ds, bodies, args) if s == "influx" else run_sensorium(ds, bodies, args)
        except Exception as exc:
            emit({"bench": "http_ingest", "system": "influxdb-1.6" if s == "influx" else "sensorium", "error": str(exc)[:1500]})
            results[s] = {}

    if len(systems) == 2:
        i, s = results.get("influx", {}), results.get("sensorium", {})

        def ratio(a: Any, b: Any) -> float | None:
            return round(a / b, 3) if isinstance(a, int | float) and isinstance(b, int | float) and b else None

        iv, sv = i.get("ingest", {}).get("values_per_s"), s.get("ingest", {}).get("values_per_s")
        ib, sb = i.get("storage", {}).get("bytes_per_value"), s.get("storage", {}).get("bytes_per_value")
        emit({
            "bench": "http_ingest_comparison",
            "values": ds.values,
            "connections": args.connections,
            "batch_lines": args.batch_lines,
            "influx_values_per_s": iv,
            "sensorium_values_per_s": sv,
            "ratio_values_per_s": ratio(sv, iv),
            "influx_bytes_per_value": ib,
            "sensorium_bytes_per_value": sb,
            "ratio_bytes_per_value": ratio(sb, ib),
            "influx_all_bytes_per_value": i.get("storage", {}).get("all_bytes_per_value"),
            "sensorium_all_bytes_per_value": s.get("storage", {}).get("all_bytes_per_value"),
            "influx_errors": i.get("ingest", {}).get("errors"),
            "sensorium_errors": s.get("ingest", {}).get("errors"),
            "influx_ack_queryable_ok": i.get("check", {}).get("ok"),
            "sensorium_ack_queryable_ok": s.get("check", {}).get("ok"),
        })


if __name__ == "__main__":
    main()
