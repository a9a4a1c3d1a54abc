"""Lake compaction of one day partition: peak memory and time, bounded groups vs the whole day.

A day partition of ``--files`` flush files (``--rows`` rows each; ``--series`` devices, 4 float
fields and 2 tags, consecutive in time as flushes are, neighbours overlapping by a few seconds of
jitter) is written with ``Lake.append``, then compacted in a fresh process (peak RSS is that
process's ``ru_maxrss`` minus its RSS before compacting; each process imports the same modules):

* ``bounded``: ``Lake.compact`` as shipped (``store.compact_max_rows``, or ``--max-rows``): small
  files packed into groups of at most that many rows, one commit each;
* ``whole_day`` (the baseline, what compaction did before): the same code with a bound larger
  than the day, so the day is one group: every file read, merged and rewritten at once.

Both leave the same rows (checked: count and a sum of every field). Reported per run: seconds,
peak and rise of RSS, files after, bytes per field value after.

    python bench/bench_compact.py                        # 100 k series, 30 x 100 k rows
    python bench/bench_compact.py --files 60             # a day twice as large
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit, log, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

T0 = 1_767_225_600_000_000_000
S = 1_000_000_000
FIELDS = ("temperature", "humidity", "pressure", "battery")


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def make(root: Path, series: int, files: int, rows: int, seed: int) -> None:
    from sensorium.schema import TAG_TYPE, TIME_TYPE
    from sensorium.store.lake import Lake

    rng = np.random.default_rng(seed)
    lake = Lake(root)
    names = pa.array([f"dev-{i:06d}" for i in range(series)])
    rooms = pa.array([f"room-{i % 40}" for i in range(series)])
    period = rows / series * 10 * S  # each device every 10 s: a file covers rows / series periods
    for k in range(files):
        dev = rng.integers(0, series, rows)
        t = (T0 + k * period + rng.uniform(0, period, rows) + rng.normal(0, 2 * S, rows)).astype(np.int64)
        cols: dict[str, Any] = {
            "time": pa.array(t, pa.int64()).cast(TIME_TYPE),
            "device_id": pa.DictionaryArray.from_arrays(pa.array(dev, pa.int32()), names).cast(TAG_TYPE),
            "room": pa.DictionaryArray.from_arrays(pa.array(dev, pa.int32()), rooms).cast(TAG_TYPE),
        }
        for j, f in enumerate(FIELDS):
            cols[f] = pa.array(np.round(20 + j * 10 + rng.normal(0, 1, rows), 2))
        lake.append("b", "climate", pa.table(cols), offset=k)
        log(f"  wrote file {k + 1}/{files}")


def child(root: Path, max_rows: int) -> dict[str, Any]:
    import pyarrow.compute as pc

    from sensorium.obs.memory import tune_allocator
    from sensorium.store.lake import Lake

    tune_allocator()  # as a platform or worker process does when it starts
    lake = Lake(root)
    lake.stats("b", "climate")  # the table loaded: what a running platform has already
    base = _rss_mb()
    t0 = time.perf_counter()
    n = lake.compact("b", "climate", ["device_id", "room"], min_files=2, max_rows=max_rows)
    el = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    st = lake.stats("b", "climate")
    t = lake.read("b", "climate", columns=list(FIELDS))
    sums = {f: round(float(pc.sum(t[f]).as_py()), 2) for f in FIELDS}
    return {"partitions": n, "compact_s": round(el, 2), "rss_mb_before": round(base, 1), "peak_rss_mb": round(peak, 1),
            "rise_mb": round(peak - base, 1), "files_after": st.files, "rows_after": st.rows,
            "bytes_per_value": round(st.bytes / (st.rows * len(FIELDS)), 3), "field_sums": sums}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=30)
    ap.add_argument("--rows", type=int, default=100_000, help="rows per flush file")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--max-rows", type=int, help="the bounded run's compact_max_rows (default: the setting's)")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child), args.max_rows)))
        return
    from sensorium.config import StoreSettings

    bounded = args.max_rows or StoreSettings().compact_max_rows
    tmp = Path(tempfile.mkdtemp(prefix="bench-compact-"))
    try:
        src = tmp / "src"
        log(f"writing {args.files} files x {args.rows:,} rows ({args.series:,} series) ...")
        make(src, args.series, args.files, args.rows, args.seed)
        out: dict[str, Any] = {}
        for name, max_rows in (("whole_day", 4 * args.files * args.rows), ("bounded", bounded)):
            work = tmp / name
            shutil.copytree(src, work)
            log(f"{name}: compacting (max_rows {max_rows:,}) ...")
            r = subprocess.run([sys.executable, __file__, "--child", str(work), "--max-rows", str(max_rows)],
                               capture_output=True, text=True, check=True)
            out[name] = json.loads(r.stdout.strip().splitlines()[-1])
            shutil.rmtree(work)
        same = out["bounded"]["rows_after"] == out["whole_day"]["rows_after"] and \
            out["bounded"]["field_sums"] == out["whole_day"]["field_sums"]
        emit({"bench": "lake_compaction", "series": args.series, "files": args.files,
              "rows_per_file": args.rows, "day_rows": args.files * args.rows, "compact_max_rows": bounded,
              **out, "same_rows": same, "machine": machine_info()})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
