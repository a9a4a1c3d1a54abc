"""Bulk load: ``sensorium load FILE`` (in process, no server) on >= 10 M field values.

Runs ``python -m sensorium.cli.main load FILE --data-dir <fresh tmp> --bucket bench`` under
``/usr/bin/time -v`` and reports values/s and the peak RSS of the loading process (``Maximum
resident set size``; a /proc poll of VmHWM is kept as a cross-check). Values/s is given two ways:
over the whole process wall time (start-up, imports and the final flush included: what a user
waits) and as the CLI prints it (its own timer). Targets: >= 2 M values/s, <= 1.5 GB RSS.

    python bench/bench_load.py            # 10 M values
    python bench/bench_load.py --quick    # 200 k values
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dir_bytes, emit, log, machine_info, proc_rss_kb, r3  # noqa: E402
from _data import dataset  # noqa: E402
from sensorium_server import _child_env  # noqa: E402

TIME_BIN = "/usr/bin/time"
TARGET_VALUES_PER_S = 2_000_000
TARGET_RSS_BYTES = 1.5e9


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=10_000_000)
    ap.add_argument("--quick", action="store_true", help="200 k values")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source", default="auto", choices=["auto", "simulator", "builtin"])
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--tmp-dir")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.values = 200_000

    ds = dataset(args.values, args.seed, args.source)
    root = Path(tempfile.mkdtemp(prefix="sensorium-load-", dir=args.tmp_dir))
    data_dir = root / "data"
    time_out = root / "time.txt"
    cmd = [sys.executable, "-m", "sensorium.cli.main", "load", str(ds.path), "--data-dir", str(data_dir), "--bucket", "bench"]
    use_time = os.access(TIME_BIN, os.X_OK)
    if use_time:
        cmd = [TIME_BIN, "-v", "-o", str(time_out), *cmd]
    log(f"loading {ds.values:,} values from {ds.path.name} ({ds.bytes / 1e6:.0f} MB)")
    rec: dict[str, Any] = {"bench": "load", "system": "sensorium", "values": ds.values, "points": ds.points,
                           "file_mb": round(ds.bytes / 1e6, 1), **machine_info()}
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_child_env(None, None), cwd=root, text=True)
    hwm_poll = 0
    # poll the loader's VmHWM (the python process: the child of /usr/bin/time, or p itself)
    import threading

    out_parts: dict[str, str] = {}

    def reader(name: str, stream: Any) -> None:
        out_parts[name] = stream.read()

    ths = [threading.Thread(target=reader, args=("out", p.stdout)), threading.Thread(target=reader, args=("err", p.stderr))]
    for t in ths:
        t.start()
    deadline = t0 + args.timeout
    while p.poll() is None:
        pids = _children(p.pid) if use_time else [p.pid]
        for pid in pids:
            _, hwm = proc_rss_kb(pid)
            if hwm:
                hwm_poll = max(hwm_poll, hwm)
        if time.perf_counter() > deadline:
            p.kill()
            rec["error"] = f"timed out after {args.timeout:.0f}s"
            break
        time.sleep(0.1)
    p.wait()
    for t in ths:
        t.join()
    wall = time.perf_counter() - t0
    stdout, stderr = out_parts.get("out", ""), out_parts.get("err", "")
    rec["exit_code"] = p.returncode
    rec["wall_s"] = r3(wall, 2)
    rec["values_per_s"] = round(ds.values / wall)
    text = " ".join(stdout.split())
    m = re.search(r"loaded ([\d,]+) points \(([\d,]+) values\) in ([\d.]+)s = ([\d,]+) values/s.*?rejected ([\d,]+).*?duplicates ([\d,]+)", text)
    if m:
        rec.update(
            loaded_points=int(m.group(1).replace(",", "")),
            loaded_values=int(m.group(2).replace(",", "")),
            cli_s=float(m.group(3)),
            values_per_s_cli=int(m.group(4).replace(",", "")),
            rejected=int(m.group(5).replace(",", "")),
            duplicates=int(m.group(6).replace(",", "")),
        )
    rss_kb = None
    if use_time and time_out.exists():
        tm = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_out.read_text())
        if tm:
            rss_kb = int(tm.group(1))
    rec["peak_rss_mb"] = round(rss_kb / 1024, 1) if rss_kb else None
    rec["peak_rss_mb_proc_poll"] = round(hwm_poll / 1024, 1) if hwm_poll else None
    peak = (rss_kb or hwm_poll) * 1024
    rec["data_dir_bytes"] = dir_bytes(data_dir) if data_dir.exists() else None
    rec["target_values_per_s"] = TARGET_VALUES_PER_S
    rec["target_peak_rss_mb"] = round(TARGET_RSS_BYTES / 2**20)
    ok = p.returncode == 0 and "error" not in rec
    rec["meets_values_target"] = ok and rec["values_per_s"] >= TARGET_VALUES_PER_S
    rec["meets_values_target_cli_timer"] = ok and rec.get("values_per_s_cli", 0) >= TARGET_VALUES_PER_S
    rec["meets_rss_target"] = ok and bool(peak) and peak <= TARGET_RSS_BYTES
    if p.returncode != 0:
        rec["stderr_tail"] = (stderr or stdout)[-1500:]
    emit(rec)
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
