"""Historian compression on simulator data: deadband and swinging door, ratio per field.

A simulated day (``--hours 24``) of ``--devices 20`` devices at ``--rate 1`` reading/s, faults off
(``sensorium.ingest.simulator``, seed 1). Every numeric field of the climate and energy devices
(temperature, humidity, pressure, power, voltage, energy) is compressed per series
(device x field) with a guaranteed maximum reconstruction error of 0.1 %, 0.5 % and 1 % of that
series' range over the day (``--bounds``), by both methods, all series of all fields in one
lock-step call per bound and method. Reported per field: points, kept points, ratio
(points / kept); overall ratio, the largest reconstruction error relative to its bound (always
<= 1), the float64 fix-ups (points added by the exact check; 0 expected) and the seconds each
call took. Target: the whole run < 60 s.

    python bench/compression.py --json            # one JSON object on stdout
    python bench/compression.py --quick           # 2 simulated hours
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_info  # noqa: E402

FIELDS = ("temperature", "humidity", "pressure", "power", "voltage", "energy")


def simulate(devices: int, hours: float, rate: float, seed: int) -> pl.DataFrame:
    """Long frame: series (device x field), field, time (ns), value."""
    from sensorium.ingest.simulator import SimConfig, Simulator

    sim = Simulator(SimConfig(devices=devices, rate=rate, duration_s=hours * 3600, seed=seed, faults=False))
    frames = [ch.frame for ch in sim.chunks(3600.0) if ch.frame.height]
    wide = pl.concat(frames)
    long = wide.unpivot(index=["time", "dev"], on=list(FIELDS), variable_name="field", value_name="value")
    return long.filter(pl.col("value").is_not_null()).with_columns(pl.col("value").cast(pl.Float64))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sensorium.detect.compression import compress_frame

    t0 = time.perf_counter()
    df = simulate(args.devices, args.hours, args.rate, args.seed)
    sim_s = time.perf_counter() - t0
    log(f"simulated {df.height:,} values in {sim_s:.1f}s")
    df = df.with_columns((pl.col("value").max() - pl.col("value").min()).over("dev", "field").alias("_range"))
    bounds = [float(b) for b in args.bounds.split(",")]
    fields: dict[str, Any] = {}
    per_field_points = df.group_by("field").agg(pl.len().alias("n"), pl.col("dev").n_unique().alias("series"))
    for r in per_field_points.iter_rows(named=True):
        fields[r["field"]] = {"points": r["n"], "series": r["series"], "sdt": {}, "deadband": {}}
    overall: dict[str, Any] = {"sdt": {}, "deadband": {}}
    seconds: dict[str, float] = {}
    worst = 0.0
    fixups = 0
    for method in ("sdt", "deadband"):
        for b in bounds:
            key = f"{b:g}%"
            d = df.with_columns((pl.col("_range") * (b / 100.0)).alias("_err"))
            t1 = time.perf_counter()
            frame, res = compress_frame(d, method=method, by=["field", "dev"], error_col="_err")  # type: ignore[arg-type]
            took = time.perf_counter() - t1
            seconds[f"{method} {key}"] = round(took, 2)
            fixups += res.fixups
            kept = frame.group_by("field").agg(pl.len().alias("n"), pl.col("kept").sum().alias("k"))
            for r in kept.iter_rows(named=True):
                fields[r["field"]][method][key] = round(r["n"] / r["k"], 2)
            overall[method][key] = round(res.ratio, 2)
            # the bound, checked: largest error relative to each series' own bound
            rel = _max_relative_error(frame, method)
            worst = max(worst, rel)
            log(f"{method:8s} {key:5s} ratio {res.ratio:7.2f}  {took:5.2f}s  max error / bound {rel:.4f}")
    return {
        "bench": "compression",
        "devices": args.devices,
        "hours": args.hours,
        "rate_hz": args.rate,
        "values": df.height,
        "series": int(df.select(pl.struct("dev", "field").n_unique()).item()),
        "bounds": "percent of each series' range (max - min) over the run",
        "ratio": overall,
        "fields": fields,
        "max_error_over_bound": round(worst, 6),
        "fixups": fixups,
        "seconds": {"simulate": round(sim_s, 2), **seconds, "total": round(time.perf_counter() - t0, 2)},
        "machine": machine_info(),
    }


def _max_relative_error(frame: pl.DataFrame, method: str) -> float:
    from sensorium.detect.compression import _reconstruct_flat

    t = frame["time"].to_numpy()
    x = frame["value"].to_numpy()
    rec = _reconstruct_flat(t, x, frame["kept"].to_numpy(), method)
    e = frame["_err"].to_numpy()
    err = np.abs(x - rec)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(e > 0, err / e, np.where(err > 0, np.inf, 0.0))
    return float(rel.max()) if rel.size else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--rate", type=float, default=1.0, help="readings per second per device")
    ap.add_argument("--bounds", default="0.1,0.5,1", help="error bounds, percent of each series' range")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 simulated hours")
    ap.add_argument("--json", action="store_true", help="print one JSON object (else a summary)")
    args = ap.parse_args()
    if args.quick:
        args.hours = 2.0
    out = run(args)
    if args.json:
        sys.stdout.write(json.dumps(out) + "\n")
        return
    for method in ("sdt", "deadband"):
        print(f"{method}: overall ratio {out['ratio'][method]}")
        for f, v in out["fields"].items():
            print(f"  {f:12s} {v[method]}")
    print(f"max error / bound: {out['max_error_over_bound']}, seconds: {out['seconds']}")


if __name__ == "__main__":
    main()
