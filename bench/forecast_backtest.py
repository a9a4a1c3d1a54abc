"""Forecast backtest: seasonal naive vs ETS on daily-seasonal series (rolling origin, MASE, sMAPE).

Run ``python bench/forecast_backtest.py [--json] [--quick]``. ``--json`` prints ONE JSON object
(per series: the models' mean MASE / sMAPE / interval coverage / fit seconds, and per device
for the simulator); otherwise a table for humans. Progress goes to stderr.

Series (each on its own regular grid, day-ahead forecasts, 95 % intervals):

* ``sim_temperature`` — the simulator's climate devices (48-device fleet, seed 42, faults off),
  21 days, one reading every 5 minutes, mean per device per 15 minutes (96 per day); diurnal
  cycle + AR(1) noise. 4 devices (``--devices``), 7 daily origins (the last 7 days).
* ``sim_power`` — the energy devices, the same way (evening-peaked base load, fridge cycles,
  kettle bursts; the daily season is weak per device); ``sim_power_daily`` — the same with the
  daily season given instead of detected; ``sim_power_fleet`` — the fleet's total power.
* ``nyc_taxi`` — NAB ``realKnownCause/nyc_taxi.csv``: NYC taxi passengers per 30 minutes,
  2014-07 .. 2015-01 (daily and weekly seasons; holidays and a blizzard inside); 40 origins 3
  days apart, 6 weeks of history each (``NAB_DIR`` points elsewhere; skipped if missing).

Models: ``naive`` (seasonal naive, the season detected on the data before the first origin),
``ets`` (sensorium's default: additive Holt-Winters, parameters by multi-step in-sample absolute
error, damped trend and Box-Cox on/off by the same criterion) and ``ets_mle`` (the textbook fit:
one-step likelihood, configuration by AICc) for reference. Every model gets the same season
length; MASE is scaled by the in-sample seasonal naive MAE of each training window. Simulated
devices run in ``--jobs`` processes. Results: docs/forecasting.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from sensorium.detect.backtest import backtest_series
from sensorium.detect.forecast import MINUTE_NS, regularize
from sensorium.ingest.simulator import SimConfig, Simulator

REPO = Path(__file__).resolve().parent.parent
NAB = Path(os.environ.get("NAB_DIR", REPO.parent / "shared" / "data" / "nab")) / "data"
TAXI = NAB / "realKnownCause" / "nyc_taxi.csv"

MODELS: list[Any] = [
    "naive",
    "ets",
    ("ets_mle", "ets", {"estimation": "mle"}),
]


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def sim_series(days: float, seed: int, devices: int = 48) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """``sim_temperature`` / ``sim_power``: per device → [(device_id, times, values)], each a
    15-minute mean of 5-minute readings; ``sim_power_fleet``: the fleet's total power (the sum of
    the energy devices' 15-minute means)."""
    sim = Simulator(SimConfig(devices=devices, rate=1 / 300, duration_s=days * 86400, faults=False, seed=seed))
    df = pl.concat([c.frame for c in sim.chunks(86400.0)])
    slot = 15 * MINUTE_NS
    out: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for kind, fld in (("climate", "temperature"), ("energy", "power")):
        devs = [i for i, k in enumerate(sim.fleet.kinds) if k == kind]
        g = (
            df.filter(pl.col("dev").is_in(devs) & pl.col(fld).is_not_null())
            .with_columns((pl.col("time") // slot * slot).alias("slot"))
            .group_by("dev", "slot").agg(pl.col(fld).mean())
            .sort("dev", "slot")
        )
        out[f"sim_{fld}"] = [
            (sim.fleet.device_ids[int(d)], part["slot"].to_numpy(), part[fld].to_numpy())
            for (d,), part in g.group_by("dev", maintain_order=True)
        ]
        if kind == "energy":
            total = g.group_by("slot").agg(pl.col(fld).sum()).sort("slot")
            out["sim_power_fleet"] = [("fleet", total["slot"].to_numpy(), total[fld].to_numpy())]
    return out


def taxi_series() -> tuple[np.ndarray, np.ndarray]:
    df = pl.read_csv(TAXI, try_parse_dates=True)
    t = df["timestamp"].dt.replace_time_zone("UTC").dt.epoch("ns").to_numpy()
    return t, df["value"].cast(pl.Float64).to_numpy()


POOL: ProcessPoolExecutor | None = None


def _one(dev: tuple[str, np.ndarray, np.ndarray], **kw: Any) -> dict[str, Any]:
    name, t, v = dev
    return {"series": name, **backtest_series(regularize(t, v), MODELS, **kw).to_dict()}


def run_series(name: str, devs: list[tuple[str, np.ndarray, np.ndarray]], *, horizon: int, origins: int,
               step: int, max_history: int | None = None, season_length: int | None = None) -> dict[str, Any]:
    """Backtest each series of a group; the group's numbers are means over its series."""
    t0 = time.perf_counter()
    job = partial(_one, horizon=horizon, origins=origins, step=step, max_history=max_history,
                  season_length=season_length)
    if POOL is not None and len(devs) > 1:
        rows = list(POOL.map(job, devs))
    else:
        rows = [job(d) for d in devs]
    interval = rows[0]["interval_s"]
    seasons = sorted({r["season_length"] for r in rows})
    out: dict[str, Any] = {
        "grid": f"{interval / 60:g}m", "horizon_steps": horizon, "origins": origins, "step": step,
        "series": len(rows), "season_length": seasons[0] if len(seasons) == 1 else seasons,
        "season": "given" if season_length else "detected",
        "models": {
            m: {k: float(np.mean([r["models"][m][k] for r in rows]))
                for k in ("mase", "smape", "coverage", "fit_seconds")}
            for m in rows[0]["models"]
        },
    }
    if len(rows) > 1:
        out["per_series"] = rows
    log(f"{name}: {len(rows)} series, {origins} origins, {time.perf_counter() - t0:.1f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--quick", action="store_true", help="fewer devices and origins: a smoke run, not the benchmark's numbers")
    ap.add_argument("--days", type=float, default=21.0, help="simulated days (default 21)")
    ap.add_argument("--devices", type=int, default=4, help="simulated devices per kind backtested (default 4)")
    ap.add_argument("--origins", type=int, default=7, help="forecast origins (one a day) per simulated series")
    ap.add_argument("--taxi-origins", type=int, default=40, help="forecast origins for nyc_taxi")
    ap.add_argument("--taxi-step-days", type=float, default=3.0, help="days between nyc_taxi origins (not a multiple of 7: every weekday gets forecast)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--jobs", type=int, default=2, help="processes for the simulated devices (default 2)")
    args = ap.parse_args()
    global POOL
    if args.jobs > 1:
        POOL = ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn"))
    t_start = time.perf_counter()
    day = 96  # 15-minute slots
    origins = 3 if args.quick else args.origins
    ndev = 2 if args.quick else args.devices
    sims = sim_series(args.days, args.seed)
    series: dict[str, Any] = {}
    series["sim_temperature"] = run_series("sim_temperature", sims["sim_temperature"][:ndev],
                                           horizon=day, origins=origins, step=day)
    series["sim_power"] = run_series("sim_power", sims["sim_power"][:ndev], horizon=day, origins=origins, step=day)
    series["sim_power_daily"] = run_series("sim_power_daily", sims["sim_power"][:ndev], horizon=day,
                                           origins=origins, step=day, season_length=day)
    series["sim_power_fleet"] = run_series("sim_power_fleet", sims["sim_power_fleet"], horizon=day,
                                           origins=origins, step=day)
    if TAXI.exists():
        t, v = taxi_series()
        k = 4 if args.quick else args.taxi_origins
        series["nyc_taxi"] = run_series("nyc_taxi", [("nyc_taxi", t, v)], horizon=48, origins=k,
                                        step=int(round(args.taxi_step_days * 48)), max_history=6 * 7 * 48)
        series["nyc_taxi"]["history"] = "6 weeks"
    else:
        log(f"skipping nyc_taxi: {TAXI} not found (set NAB_DIR)")
    out: dict[str, Any] = {
        "bench": "forecast_backtest", "horizon": "1 day", "level": 0.95, "series": series,
        "ets_beats_naive": {s: d["models"]["ets"]["mase"] < d["models"]["naive"]["mase"] for s, d in series.items()},
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    if args.json:
        sys.stdout.write(json.dumps(out, default=float) + "\n")
        return
    print(f"{'series':16s} {'grid':>5s} {'season':>8s} {'model':8s} {'MASE':>7s} {'sMAPE %':>8s} {'cover':>6s} {'fit s':>6s}")
    for s_name, d in series.items():
        for mdl, r in d["models"].items():
            print(f"{s_name:16s} {d['grid']:>5s} {str(d['season_length']):>8s} {mdl:8s} {r['mase']:7.3f} "
                  f"{r['smape']:8.2f} {r['coverage']:6.2f} {r['fit_seconds']:6.2f}")
    print(f"ETS beats seasonal naive (MASE): {out['ets_beats_naive']} · {out['seconds']} s")


if __name__ == "__main__":
    main()
