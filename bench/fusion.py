"""Sensor fusion and Kalman smoothing against simulator ground truth.

``sensorium.ingest.sim.truth.colocated_temperatures``: ``--rooms 4`` rooms, a simulated week
(``--days 7``) at one reading per minute, per room ``--sensors 4`` sensors measuring the same true
room temperature (the simulator's climate model) with independent noise of standard deviation
0.1, 0.2, 0.4 and 0.8 degC (seed 1). Two scenarios: ``clean`` (Gaussian noise only) and
``faulty`` (plus a 5-10 degC outlier in 1 % of readings, 5 % of readings missing and a constant
bias per sensor of N(0, 0.05) degC).

Reported, RMSE against the truth over every 1-minute bucket of every room: each single sensor
(and per noise level), the best single sensor, the fused series (inverse-variance weights from
the causal pairwise estimator: the default), the same with the peer-median estimator, with the
true variances given (the oracle the estimator approaches), the plain mean of the sensors, the
Kalman smoother on each raw sensor and on the fused series, and the causal Kalman filter on the
fused series. Also: the calibration of the fused ``std`` (standard deviation of error / std
after the first day; 1 = well calibrated) and seconds per step.

    python bench/fusion.py --json
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

NOISE = (0.1, 0.2, 0.4, 0.8)


def _r(x: float) -> float:
    return round(float(x), 4)


def scenario(args: argparse.Namespace, faulty: bool) -> dict[str, Any]:
    from sensorium.detect.fusion import fuse, kalman_frame, rmse
    from sensorium.ingest.sim.truth import colocated_temperatures

    t0 = time.perf_counter()
    c = colocated_temperatures(
        rooms=args.rooms, sensors=args.sensors, duration_s=args.days * 86400.0, interval_s=60.0,
        noise_std=NOISE, seed=args.seed,
        outlier_rate=0.01 if faulty else 0.0, missing_rate=0.05 if faulty else 0.0,
        bias_std=0.05 if faulty else 0.0,
    )
    truth = c.truth.select("time", "group", pl.col("value").alias("truth"))
    step = c.interval_ns
    raw = c.readings.with_columns(((pl.col("time") // step) * step).alias("time")).join(truth, on=["time", "group"])
    secs: dict[str, float] = {"simulate": time.perf_counter() - t0}

    def err(frame: pl.DataFrame, col: str = "value") -> float:
        j = frame.join(truth, on=["time", "group"]) if "truth" not in frame.columns else frame
        return _r(rmse(j[col].to_numpy(), j["truth"].to_numpy()))

    singles = raw.group_by("sensor").agg(
        ((pl.col("value") - pl.col("truth")) ** 2).mean().sqrt().alias("rmse")
    ).sort("sensor")
    per_sensor = {r["sensor"]: _r(r["rmse"]) for r in singles.iter_rows(named=True)}
    by_level = {
        f"noise {s:g}": _r(np.mean([v for k, v in per_sensor.items() if c.noise_std[k] == s]))
        for s in NOISE
    }
    best = min(per_sensor.values())

    t = time.perf_counter()
    fused = fuse(c.readings, bucket="1m", by="group")
    secs["fuse"] = time.perf_counter() - t
    peer = fuse(c.readings, bucket="1m", by="group", method="peer_median")
    oracle = fuse(c.readings, bucket="1m", by="group", variances={k: v * v for k, v in c.noise_std.items()})
    mean = raw.group_by("time", "group").agg(pl.col("value").mean(), pl.col("truth").first())
    late = fused.join(truth, on=["time", "group"]).filter(
        pl.col("time") >= pl.col("time").min() + 86400 * 1_000_000_000
    )
    z = late.select(((pl.col("value") - pl.col("truth")) / pl.col("std")).std()).item()

    t = time.perf_counter()
    kf_raw = kalman_frame(raw, by=["sensor"])
    secs["kalman raw"] = time.perf_counter() - t
    kf_raw_rmse = kf_raw.group_by("sensor").agg(
        ((pl.col("value_kf") - pl.col("truth")) ** 2).mean().sqrt().alias("e")
    )
    kf_by_level = {
        f"noise {s:g}": _r(np.mean([r["e"] for r in kf_raw_rmse.iter_rows(named=True) if c.noise_std[r["sensor"]] == s]))
        for s in NOISE
    }
    fz = fused.sort("group", "time")
    kf_fused = kalman_frame(fz, by=["group"])
    kf_causal = kalman_frame(fz, by=["group"], smooth=False).rename({"value_kf": "value_f"})
    secs = {k: round(v, 3) for k, v in secs.items()}
    return {
        "readings": c.readings.height,
        "buckets": fused.height,
        "rmse": {
            "single_sensors": per_sensor,
            "single_by_noise_level": by_level,
            "best_single": best,
            "fused": err(fused),
            "fused_peer_median": err(peer),
            "fused_true_variances": err(oracle),
            "plain_mean": err(mean),
            "kalman_smoothed_raw_by_noise_level": kf_by_level,
            "kalman_smoothed_fused": err(kf_fused, "value_kf"),
            "kalman_filtered_fused_causal": err(kf_causal, "value_f"),
        },
        "fused_below_best_single": err(fused) < best,
        "fused_std_calibration": _r(z),
        "fused_sensors_mean": _r(fused["sensors"].mean()),  # type: ignore[arg-type]
        "seconds": secs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rooms", type=int, default=4)
    ap.add_argument("--sensors", type=int, default=4)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="2 days")
    ap.add_argument("--json", action="store_true", help="print one JSON object (else a summary)")
    args = ap.parse_args()
    if args.quick:
        args.days = 2.0
    t0 = time.perf_counter()
    out: dict[str, Any] = {"bench": "fusion", "rooms": args.rooms, "sensors_per_room": args.sensors,
                           "days": args.days, "interval_s": 60, "noise_std": list(NOISE)}
    for name in ("clean", "faulty"):
        log(f"scenario {name}")
        out[name] = scenario(args, faulty=name == "faulty")
    out["seconds_total"] = round(time.perf_counter() - t0, 2)
    out["machine"] = machine_info()
    if args.json:
        sys.stdout.write(json.dumps(out) + "\n")
        return
    for name in ("clean", "faulty"):
        r = out[name]["rmse"]
        print(f"{name}: best single {r['best_single']}, fused {r['fused']} (true variances "
              f"{r['fused_true_variances']}, peer median {r['fused_peer_median']}, plain mean "
              f"{r['plain_mean']}), Kalman on fused {r['kalman_smoothed_fused']}")


if __name__ == "__main__":
    main()
