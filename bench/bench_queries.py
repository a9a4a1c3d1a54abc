"""Eight typical IoT queries, Sensorium (SQL) vs InfluxDB 1.6 (InfluxQL), on the same data.

Both systems are loaded over HTTP with the same file (default 2 M field values, ~32-36 h of
one-reading-per-minute data, see bench/_data.py), then brought to a steady state: InfluxDB's full
compaction is waited for; Sensorium is stopped (flush), compacted and restarted on the same data
dir (--no-compact: just wait for the background flush instead). Each query runs once to warm up,
then --runs times; the median wall time of the HTTP round trip (request sent -> whole response
read) is reported, both systems on one line per query, with their row counts.

"Now" is the end of the data (its latest timestamp, T_END), since the data is historical:
"over a day" = the 24 h before T_END, "last 6 h" = the 6 h before T_END, "silent for 10 min" =
no point after T_END - 10 min. "Error" = a point with rssi < -80 or battery < 0.2 (battery only
where the measurement has it) on both systems.

    python bench/bench_queries.py               # 2 M values, 5 runs each, both systems
    python bench/bench_queries.py --quick       # 200 k values, 3 runs
    python bench/bench_queries.py --only influx
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HOST, emit, log, machine_info, post_bodies, r3, split_bodies  # noqa: E402
from _data import Dataset, dataset  # noqa: E402
from influx import InfluxDB  # noqa: E402
from sensorium_server import SensoriumServer  # noqa: E402

H = 3600 * 10**9
M = 60 * 10**9


@dataclass
class Query:
    name: str
    description: str
    sql: str | None
    influxql: str | None
    note: str = ""
    # InfluxQL results that need work client-side: rows -> rows (reported in the note)
    influx_post: Callable[[list[list[Any]]], list[Any]] | None = None
    compare_values: bool = True  # compare the numbers in both results (see _numbers)


def _iso(ns: int) -> str:
    """RFC 3339 with nanoseconds, for InfluxQL."""
    s, frac = divmod(ns, 10**9)
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


def _ts(ns: int) -> str:
    """A DuckDB TIMESTAMP_NS literal."""
    s, frac = divmod(ns, 10**9)
    return "TIMESTAMP_NS '" + datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%d %H:%M:%S") + f".{frac:09d}'"


def build_queries(ds: Dataset) -> list[Query]:
    end = ds.end_ns
    day0 = ds.start_ns - ds.start_ns % (24 * H)
    day_end = end - end % (24 * H) + 24 * H
    climate = ds.measurement_with("temperature") or "climate"
    power_m = ds.measurement_with("power") or "energy"
    hum_m = ds.measurement_with("humidity") or "climate"
    all_m = sorted(ds.measurements)
    with_rssi = [m for m in all_m if "rssi" in ds.fields_of(m)]
    cfields = ds.fields_of(climate)
    q: list[Query] = []

    # 1. last value per device
    sel = ", ".join(f'arg_max("{f}", time) AS "{f}"' for f in cfields)
    q.append(Query(
        "last_value_per_device", f"last value of every field per device ({climate})",
        f'SELECT device_id, max(time) AS time, {sel} FROM "{climate}" GROUP BY device_id',
        f'SELECT last(*) FROM "{climate}" GROUP BY "device_id"',
    ))
    # 2. hourly mean temperature per device over a day
    lo, hi = end - 24 * H, end
    q.append(Query(
        "hourly_mean_temperature_per_device_1d", "hourly mean temperature per device, 24 h before T_END",
        f'SELECT device_id, time_bucket(INTERVAL 1 HOUR, time) AS hour, avg(temperature) AS mean '
        f'FROM "{climate}" WHERE time >= {_ts(lo)} AND time <= {_ts(hi)} GROUP BY ALL ORDER BY device_id, hour',
        f"SELECT mean(temperature) FROM \"{climate}\" WHERE time >= '{_iso(lo)}' AND time <= '{_iso(hi)}' "
        f'GROUP BY time(1h), "device_id" fill(none)',
    ))
    # 3. daily min/max temperature per location
    q.append(Query(
        "daily_min_max_temperature_per_location", "daily min and max temperature per location, whole span",
        f'SELECT location, date_trunc(\'day\', time) AS day, min(temperature) AS min, max(temperature) AS max '
        f'FROM "{climate}" GROUP BY ALL ORDER BY location, day',
        f"SELECT min(temperature), max(temperature) FROM \"{climate}\" WHERE time >= '{_iso(day0)}' "
        f"AND time < '{_iso(day_end)}' GROUP BY time(1d), \"location\" fill(none)",
    ))
    # 4. top 10 devices by error count
    parts = []
    for m in with_rssi:
        cond = "rssi < -80" + (" OR battery < 0.2" if "battery" in ds.fields_of(m) else "")
        parts.append(f'SELECT device_id FROM "{m}" WHERE {cond}')
    from_m = ", ".join(f'"{m}"' for m in with_rssi)
    q.append(Query(
        "top10_devices_by_errors", "top 10 devices by count of points with rssi < -80 or battery < 0.2",
        f"SELECT device_id, count(*) AS errors FROM ({' UNION ALL '.join(parts)}) "
        f"GROUP BY device_id ORDER BY errors DESC, device_id LIMIT 10",
        f"SELECT top(errors, device_id, 10) FROM (SELECT count(rssi) AS errors FROM {from_m} "
        f'WHERE rssi < -80 OR battery < 0.2 GROUP BY "device_id")',
        note="InfluxQL: top() over a subquery; a measurement without battery has the field missing "
             "(nil), so only rssi < -80 matches there, as in the SQL",
    ))
    # 5. count of points per sensor_type
    q.append(Query(
        "count_per_sensor_type", "number of points per sensor_type, all measurements",
        "SELECT sensor_type, count(*) AS points FROM ("
        + " UNION ALL ".join(f'SELECT sensor_type FROM "{m}"' for m in all_m)
        + ") GROUP BY sensor_type ORDER BY sensor_type",
        f'SELECT count(rssi) FROM {from_m} GROUP BY "sensor_type"',
        note="InfluxQL counts a field (rssi, present in every point) per measurement and sensor_type; "
             "the per-measurement series of one sensor_type are summed client-side",
        influx_post=_sum_by_tag("sensor_type"),
    ))
    # 6. 15-minute mean power per location over the last 6 h
    lo6 = end - 6 * H
    q.append(Query(
        "power_15m_mean_per_location_6h", "15-minute mean power per location, 6 h before T_END",
        f"SELECT location, time_bucket(INTERVAL 15 MINUTE, time) AS t, avg(power) AS mean FROM \"{power_m}\" "
        f"WHERE time >= {_ts(lo6)} AND time <= {_ts(end)} GROUP BY ALL ORDER BY location, t",
        f"SELECT mean(power) FROM \"{power_m}\" WHERE time >= '{_iso(lo6)}' AND time <= '{_iso(end)}' "
        f'GROUP BY time(15m), "location" fill(none)',
    ))
    # 7. max humidity per room
    q.append(Query(
        "max_humidity_per_room", "maximum humidity per room, whole span",
        f'SELECT room, max(humidity) AS max FROM "{hum_m}" GROUP BY room ORDER BY room',
        f'SELECT max(humidity) FROM "{hum_m}" GROUP BY "room"',
    ))
    # 8. devices silent for the last 10 minutes
    cut = end - 10 * M
    q.append(Query(
        "silent_devices_10m", "devices with no point in the 10 min before T_END",
        "SELECT device_id, max(time) AS last_seen FROM ("
        + " UNION ALL ".join(f'SELECT device_id, time FROM "{m}"' for m in all_m)
        + f") GROUP BY device_id HAVING max(time) < {_ts(cut)} ORDER BY device_id",
        f'SELECT last(rssi) FROM {from_m} GROUP BY "device_id"',
        note="InfluxQL has no HAVING: last point per device is queried, the filter "
             "(last < T_END - 10 min) is applied client-side",
        influx_post=lambda series: [s for s in series if s[1] < cut],
        compare_values=False,
    ))
    return q


def _sum_by_tag(tag: str) -> Callable[[list[Any]], list[Any]]:
    def post(series: list[Any]) -> list[Any]:
        out: dict[str, int] = {}
        for tags, _t, v in series:
            out[tags.get(tag, "")] = out.get(tags.get(tag, ""), 0) + int(v)
        return sorted(out.items())

    return post


def _numbers(rows: list[Any], skip_first: bool) -> list[float]:
    """The numeric cells of a result (InfluxDB: without the time column), sorted — to check that
    both systems computed the same thing, whatever the row order or column names."""
    out: list[float] = []
    for row in rows:
        cells = list(row)[1:] if skip_first else list(row)
        out.extend(float(c) for c in cells if isinstance(c, int | float) and not isinstance(c, bool))
    return sorted(out)


def _same_numbers(a: list[float] | None, b: list[float] | None) -> bool | None:
    if a is None or b is None:
        return None
    return len(a) == len(b) and all(abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y)) for x, y in zip(a, b, strict=True))


# -- running -------------------------------------------------------------------------------------
def _timed_get(conn: http.client.HTTPConnection, path: str) -> tuple[float, int, bytes]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    return time.perf_counter() - t0, r.status, body


def run_influx_queries(db: InfluxDB, queries: list[Query], runs: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    conn = http.client.HTTPConnection(HOST, db.port, timeout=300)
    for q in queries:
        if q.influxql is None:
            out[q.name] = {"error": "no InfluxQL equivalent"}
            continue
        path = "/query?" + urllib.parse.urlencode({"db": db.db, "q": q.influxql, "epoch": "ns"})
        times = []
        try:
            for i in range(runs + 1):
                dt, st, body = _timed_get(conn, path)
                data = json.loads(body)
                err = data.get("error") or next((r.get("error") for r in data.get("results", []) if r.get("error")), None)
                if st != 200 or err:
                    raise RuntimeError(f"{st}: {err or body[:200]!r}")
                if i:
                    times.append(dt)
            series = [s for r in data.get("results", []) for s in (r.get("series") or [])]
            rows = sum(len(s.get("values") or []) for s in series)
            rec = {"median_ms": r3(statistics.median(times) * 1000, 2), "min_ms": r3(min(times) * 1000, 2),
                   "rows": rows, "series": len(series)}
            if q.influx_post is not None:
                flat = [[s.get("tags", {}), *v] for s in series for v in (s.get("values") or [])]
                t0 = time.perf_counter()
                post_rows = q.influx_post(flat)
                rec["client_post_ms"] = r3((time.perf_counter() - t0) * 1000, 2)
                rec["rows_after_client_step"] = len(post_rows)
                rec["rows"] = len(post_rows)
                if q.compare_values:
                    rec["numbers"] = _numbers(post_rows, skip_first=False)
            elif q.compare_values:
                rec["numbers"] = _numbers([v for s in series for v in (s.get("values") or [])], skip_first=True)
            out[q.name] = rec
        except Exception as exc:
            out[q.name] = {"error": str(exc)[:400]}
            conn.close()
            conn = http.client.HTTPConnection(HOST, db.port, timeout=300)
    conn.close()
    return out


def run_sensorium_queries(srv: SensoriumServer, queries: list[Query], runs: int) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    conn = http.client.HTTPConnection(HOST, srv.port, timeout=300)
    extra = [("last_value_per_device_latest_api", "/api/v1/latest?" + urllib.parse.urlencode(
        {"bucket": srv.bucket, "measurement": queries[0].sql.split('FROM "')[1].split('"')[0] if queries[0].sql else "climate"}))]
    items = [(q.name, "/api/v1/query?" + urllib.parse.urlencode({"sql": q.sql, "bucket": srv.bucket})) for q in queries if q.sql]
    compare = {q.name for q in queries if q.compare_values}
    for name, path in items + extra:
        times = []
        try:
            for i in range(runs + 1):
                dt, st, body = _timed_get(conn, path)
                if st != 200:
                    raise RuntimeError(f"{st}: {body[:300]!r}")
                if i:
                    times.append(dt)
            data = json.loads(body)
            rows = len(data["rows"]) if "rows" in data else len(data.get("series", []))
            out[name] = {"median_ms": r3(statistics.median(times) * 1000, 2), "min_ms": r3(min(times) * 1000, 2), "rows": rows}
            if name in compare and "rows" in data:
                out[name]["numbers"] = _numbers(data["rows"], skip_first=False)
        except Exception as exc:
            out[name] = {"error": str(exc)[:400]}
            conn.close()
            conn = http.client.HTTPConnection(HOST, srv.port, timeout=300)
    conn.close()
    return out


def load(port: int, path: str, bodies: list[bytes], name: str) -> dict[str, Any]:
    st = post_bodies(port, path, bodies, connections=4)
    log(f"{name}: loaded in {st.elapsed_s:.1f}s, {st.errors} errors")
    if st.errors:
        raise RuntimeError(f"{name}: {st.errors} write errors: {st.first_errors[:2]}")
    return {"load_s": r3(st.elapsed_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", choices=["sensorium", "influx"])
    ap.add_argument("--quick", action="store_true", help="200 k values, 3 runs")
    ap.add_argument("--no-compact", action="store_true", help="Sensorium: don't stop/compact/restart before querying")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source", default="auto", choices=["auto", "simulator", "builtin"])
    ap.add_argument("--show", action="store_true", help="print the queries and exit")
    ap.add_argument("--tmp-dir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.values, args.runs = 200_000, 3

    ds = dataset(args.values, args.seed, args.source)
    queries = build_queries(ds)
    if args.show:
        for q in queries:
            print(json.dumps({"query": q.name, "sql": q.sql, "influxql": q.influxql, "note": q.note}))
        return
    bodies = split_bodies(ds.read_bytes(), 5000)
    emit({"bench": "query_setup", "values": ds.values, "points": ds.points, "source": ds.source,
          "span_h": ds.describe()["span_h"], "t_end": _iso(ds.end_ns), "runs": args.runs, **machine_info()})

    results: dict[str, dict[str, dict[str, Any]]] = {}
    meta: dict[str, Any] = {}
    if args.only in (None, "influx"):
        try:
            with InfluxDB(base_dir=args.tmp_dir, keep=args.keep) as db:
                meta["influx"] = load(db.port, db.write_path, bodies, "influxdb")
                disk = db.disk_bytes(timeout=300)
                meta["influx"]["compacted"] = disk["compacted"]
                results["influx"] = run_influx_queries(db, queries, args.runs)
        except Exception as exc:
            emit({"bench": "query", "system": "influxdb-1.6", "error": str(exc)[:1000]})
    if args.only in (None, "sensorium"):
        srv = SensoriumServer(base_dir=args.tmp_dir, keep=args.keep)
        try:
            with srv:
                meta["sensorium"] = load(srv.port, srv.write_path, bodies, "sensorium")
                if not args.no_compact:
                    srv.stop()
                    meta["sensorium"]["stopped_cleanly"] = srv.stopped_cleanly()
                    try:
                        comp = srv.compact(timeout=600)
                        meta["sensorium"]["files"] = sum(t.get("files", 0) for t in comp.get("tables", []))
                    except Exception as exc:
                        meta["sensorium"]["compact_error"] = str(exc)[:300]
                    srv.start()
                else:
                    time.sleep(8)  # background flush (flush_interval_s = 5 s)
                results["sensorium"] = run_sensorium_queries(srv, queries, args.runs)
        except Exception as exc:
            emit({"bench": "query", "system": "sensorium", "error": str(exc)[:1000]})

    names = [q.name for q in queries] + ["last_value_per_device_latest_api"]
    notes = {q.name: q.note for q in queries}
    notes["last_value_per_device_latest_api"] = "Sensorium's last-value cache (GET /api/v1/latest); no InfluxDB counterpart"
    for name in names:
        i = results.get("influx", {}).get(name)
        s = results.get("sensorium", {}).get(name)
        if i is None and s is None:
            continue
        rec: dict[str, Any] = {"bench": "query", "query": name, "runs": args.runs}
        if i is not None:
            rec["influx_ms"] = i.get("median_ms")
            rec["influx_rows"] = i.get("rows")
            if "error" in i:
                rec["influx_error"] = i["error"]
        if s is not None:
            rec["sensorium_ms"] = s.get("median_ms")
            rec["sensorium_rows"] = s.get("rows")
            if "error" in s:
                rec["sensorium_error"] = s["error"]
        if rec.get("influx_ms") and rec.get("sensorium_ms"):
            rec["ratio_sensorium_over_influx"] = round(rec["sensorium_ms"] / rec["influx_ms"], 3)
        if i is not None and s is not None and "rows" in i and "rows" in s:
            rec["rows_agree"] = i["rows"] == s["rows"]
            agree = _same_numbers(i.get("numbers"), s.get("numbers"))
            if agree is not None:
                rec["values_agree"] = agree
        if notes.get(name):
            rec["note"] = notes[name]
        emit(rec)
    emit({"bench": "query_load", **{k: v for k, v in meta.items()}})


if __name__ == "__main__":
    main()
