"""Store write and read rates: the Delta lake vs PostgreSQL, on the same data.

Climate-shaped batches (the simulator's ``climate`` measurement: tags device_id, location, room;
fields temperature, humidity, pressure, battery (float) and rssi (int) -- 5 values per row), one
reading per device per minute from 2026-01-01T00:00:00Z, --devices devices over ~33 h, so the data
spans two UTC days. Rows are written in --batch-row appends (one per flush, each with a WAL
offset), then one whole day is read back. Reports values/s written, and rows/s and seconds for
the day's read, for each store.

    python bench/bench_store.py                  # 1M rows x 5 fields, both stores
    python bench/bench_store.py --json           # one JSON object on stdout
    python bench/bench_store.py --rows 200000 --store postgres
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from sensorium.schema import TAG_TYPE, TIME_TYPE  # noqa: E402
from sensorium.store.lake import Lake  # noqa: E402

T0 = 1_767_225_600_000_000_000
MIN = 60_000_000_000
DAY = 86_400_000_000_000
FIELDS = 5
ROOMS = ("living_room", "kitchen", "bedroom", "bathroom", "office", "garage", "basement", "hallway")


def make_batches(rows: int, batch_rows: int, seed: int = 1) -> list[pa.Table]:
    """``rows`` climate rows in time order, cut into batches of ``batch_rows``."""
    minutes = 2000  # ~33 h: all of 2026-01-01 and part of the 2nd
    devices = max(1, rows // minutes)
    rng = np.random.default_rng(seed)
    n = devices * minutes
    minute = np.repeat(np.arange(minutes, dtype=np.int64), devices)
    dev = np.tile(np.arange(devices), minutes)
    names = np.array([f"dev-{i:05d}" for i in range(devices)])
    homes = np.array([f"home-{i // 8}" for i in range(devices)])
    rooms = np.array(ROOMS)[np.arange(devices) % len(ROOMS)]
    cols: dict[str, Any] = {
        "time": pa.array(T0 + minute * MIN + dev * 1_000).cast(TIME_TYPE),
        "device_id": pa.DictionaryArray.from_arrays(pa.array(dev.astype(np.int32)), pa.array(names)).cast(TAG_TYPE),
        "location": pa.array(homes[dev]).dictionary_encode().cast(TAG_TYPE),
        "room": pa.array(rooms[dev]).dictionary_encode().cast(TAG_TYPE),
        "temperature": pa.array(np.round(rng.normal(21, 3, n), 2)),
        "humidity": pa.array(np.round(rng.normal(45, 8, n), 1)),
        "pressure": pa.array(np.round(rng.normal(1013, 5, n), 1)),
        "battery": pa.array(np.round(rng.uniform(20, 100, n), 1)),
        "rssi": pa.array(rng.integers(-90, -30, n)),
    }
    table = pa.table(cols)
    return [table.slice(i, batch_rows) for i in range(0, n, batch_rows)]


def run_store(name: str, store: Any, bucket: str, batches: list[pa.Table]) -> dict[str, Any]:
    rows = sum(b.num_rows for b in batches)
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        store.append(bucket, "climate", b, offset=i)
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    day = store.read(bucket, "climate", start_ns=T0, end_ns=T0 + DAY)
    read_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = store.read(bucket, "climate", start_ns=T0 + 3 * 3600 * 10**9, end_ns=T0 + 4 * 3600 * 10**9,
                     columns=["temperature"])
    hour_s = time.perf_counter() - t0
    st = store.stats(bucket, "climate")
    out = {
        "rows": rows,
        "values": rows * FIELDS,
        "batches": len(batches),
        "write_s": round(write_s, 3),
        "write_values_per_s": round(rows * FIELDS / write_s),
        "write_rows_per_s": round(rows / write_s),
        "read_day_rows": day.num_rows,
        "read_day_s": round(read_s, 3),
        "read_day_rows_per_s": round(day.num_rows / read_s),
        "read_hour_one_field_rows": one.num_rows,
        "read_hour_one_field_s": round(hour_s, 3),
        "stored_bytes": st.bytes,
        "stored_files_or_partitions": st.files,
    }
    log(f"{name}: {out}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch-rows", type=int, default=100_000, help="rows per append (one flush)")
    ap.add_argument("--store", choices=["both", "delta", "postgres"], default="both")
    ap.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    batches = make_batches(args.rows, args.batch_rows)
    result: dict[str, Any] = {
        "benchmark": "store",
        "rows": sum(b.num_rows for b in batches),
        "fields_per_row": FIELDS,
        "batch_rows": args.batch_rows,
        "machine": machine_info(),
    }
    bucket = f"bench_{uuid.uuid4().hex[:8]}"
    if args.store in ("both", "delta"):
        with tempfile.TemporaryDirectory() as d:
            result["delta"] = run_store("delta", Lake(Path(d)), bucket, batches)
    if args.store in ("both", "postgres"):
        from sensorium.store.postgres import PostgresStore

        pg = PostgresStore(args.dsn)
        try:
            result["postgres"] = run_store("postgres", pg, bucket, batches)
        finally:
            pg.drop_bucket(bucket)
            pg.close()
    if "delta" in result and "postgres" in result:
        result["postgres_vs_delta_write"] = round(
            result["postgres"]["write_values_per_s"] / result["delta"]["write_values_per_s"], 3
        )
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
