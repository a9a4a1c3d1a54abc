"""Are the simulator's injected faults found by the stream's anomaly scores?

    python bench/sim_detect.py [--json] [--devices 20] [--minutes 180] [--fault-rate 0.02]

Runs the platform in process exactly as ``sensorium up --simulate`` does (simulator → HTTP write
path → WAL → stream with the default ``[detect]`` settings), then compares the
``anomaly_scores`` table with the simulator's ground-truth labels:

* a fault *event* is a run of labels of one device, field and fault class (a spike is one point,
  a stuck or drift stretch many); it is **found** when some point of that device and field scores
  at or above the threshold between the event's first point and ``--tolerance-s`` after its
  last — recall per fault class is the share of events found;
* **precision** is the share of flagged points (score ≥ threshold) lying in some fault event
  (± tolerance) of their device and field;
* Fahrenheit mix-ups (``unit_f``) are converted at ingest, so they are listed but not counted;
* values the write path rejected (out of range, Fahrenheit mix-ups it could not normalise) never
  reach the stream: they are counted as ``rejected_at_ingest`` (found by validation), not as
  misses.

Reported at the rules' warning level 0.6 and at the threshold with the best F1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from sensorium.config import load_settings  # noqa: E402
from sensorium.ingest.simulator import SimConfig, Simulator  # noqa: E402
from sensorium.platform import Sensorium  # noqa: E402

NS = 1_000_000_000
VALUE_FAULTS = ("spike", "stuck", "drift", "out_of_range", "unit_f")


def run(devices: int, minutes: float, fault_rate: float, seed: int, data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    duration = minutes * 60.0
    start = time.time_ns() - int(duration * NS) - 60 * NS
    sim = Simulator(SimConfig(devices=devices, rate=1.0, duration_s=duration, seed=seed, fault_rate=fault_rate, start_ns=start))
    settings = load_settings(None, data_dir=data_dir, store={"flush_rows": 5_000_000, "flush_interval_s": 3600.0})
    p = Sensorium(settings, background=False)
    labels = []
    accepted = rejected = 0
    t0 = time.perf_counter()
    try:
        for chunk in sim.chunks(60.0):
            body = chunk.lines
            if body:
                r = p.write(body)
                accepted += r.accepted_rows
                rejected += r.rejected
            labels.append(pl.from_arrow(chunk.labels))
            p.process_stream()
        assert p.stream is not None
        p.stream.checkpoint()
        scores = pl.from_arrow(p.query(
            "SELECT device_id, measurement, field, epoch_ns(time) AS time, value, score FROM anomaly_scores"
        ))
    finally:
        p.close()
    info = {"seconds": round(time.perf_counter() - t0, 1), "points_accepted": accepted, "lines_rejected": rejected}
    lab = pl.concat(labels, how="diagonal_relaxed") if labels else pl.DataFrame()
    assert isinstance(scores, pl.DataFrame)
    return scores, lab, info


def events(labels: pl.DataFrame) -> pl.DataFrame:
    """Runs of labels (device, field, fault) whose points are at most 1.5 s apart."""
    v = labels.filter(pl.col("fault").is_in(VALUE_FAULTS) & pl.col("field").is_not_null()).sort(
        "device_id", "field", "fault", "time"
    )
    v = v.with_columns(
        ((pl.col("time").diff().over("device_id", "field", "fault").fill_null(10**18)) > int(1.5 * NS))
        .cum_sum().over("device_id", "field", "fault").alias("run")
    )
    return v.group_by("device_id", "measurement", "field", "fault", "run").agg(
        pl.col("time").min().alias("start"), pl.col("time").max().alias("end"), pl.len().alias("points")
    )


def evaluate(scores: pl.DataFrame, ev: pl.DataFrame, threshold: float, tol_ns: int) -> dict[str, Any]:
    flagged = scores.filter(pl.col("score") >= threshold).select("device_id", "field", "time")
    # events found: a flagged point of the device/field within [start, end + tol]
    j = ev.join(flagged, on=["device_id", "field"], how="left")
    hit = j.with_columns(
        ((pl.col("time") >= pl.col("start")) & (pl.col("time") <= pl.col("end") + tol_ns)).fill_null(False).alias("hit")
    ).group_by("device_id", "field", "fault", "run").agg(pl.col("hit").any())
    # scored events only (an event whose points were all rejected at ingest never reached the stream)
    seen = scores.select("device_id", "field", "time").join(
        ev.select("device_id", "field", "fault", "run", "start", "end"), on=["device_id", "field"]
    ).filter((pl.col("time") >= pl.col("start")) & (pl.col("time") <= pl.col("end"))).select(
        "device_id", "field", "fault", "run").unique()
    hit = hit.join(seen, on=["device_id", "field", "fault", "run"], how="inner")
    per_class = {}
    for fault in VALUE_FAULTS:
        h = hit.filter(pl.col("fault") == fault)
        total = ev.filter(pl.col("fault") == fault).height
        per_class[fault] = {
            "events": total,
            "scored": h.height,
            "rejected_at_ingest": total - h.height,
            "found": int(h.get_column("hit").sum()) if h.height else 0,
            "recall": round(float(h.get_column("hit").mean()), 3) if h.height else None,
        }
    # precision: flagged points inside some event (± tol) of their device/field
    inside = flagged.join(ev.select("device_id", "field", "start", "end"), on=["device_id", "field"], how="left").with_columns(
        ((pl.col("time") >= pl.col("start") - tol_ns) & (pl.col("time") <= pl.col("end") + tol_ns)).fill_null(False).alias("in")
    ).group_by("device_id", "field", "time").agg(pl.col("in").any())
    tp = int(inside.get_column("in").sum()) if inside.height else 0
    precision = tp / inside.height if inside.height else None
    # unit_f values are converted to °C at ingest (tag unit=degF): correct once stored, so they
    # are reported but not counted as misses
    counted = [c for f, c in per_class.items() if f != "unit_f"]
    scored_events = sum(c["scored"] for c in counted)
    found = sum(c["found"] for c in counted)
    recall = found / scored_events if scored_events else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else 0.0
    return {"threshold": threshold, "flagged_points": inside.height, "precision": None if precision is None else round(precision, 3),
            "recall": None if recall is None else round(recall, 3), "f1": round(f1, 3), "per_class": per_class}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=180.0)
    ap.add_argument("--fault-rate", type=float, default=0.02, help="as `up --simulate` (simulator.fault_rate)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tolerance-s", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scores, labels, info = run(args.devices, args.minutes, args.fault_rate, args.seed, Path(tmp) / "data")
    ev = events(labels)
    tol = int(args.tolerance_s * NS)
    at_warning = evaluate(scores, ev, 0.6, tol)
    best = max((evaluate(scores, ev, float(t), tol) for t in np.round(np.arange(0.3, 0.96, 0.05), 2)), key=lambda r: r["f1"])
    out = {"config": vars(args), **info, "scored_points": scores.height, "events": ev.height,
           "at_warning_0.6": at_warning, "best_f1": best}
    if args.json:
        print(json.dumps(out))
        return
    from rich.console import Console
    from rich.table import Table

    c = Console()
    for title, r in (("threshold 0.6 (warning)", at_warning), (f"best F1 (threshold {best['threshold']})", best)):
        t = Table(title=f"{title}: precision {r['precision']}, recall {r['recall']}, F1 {r['f1']}")
        for col in ("fault", "events", "scored", "rejected at ingest", "found", "recall"):
            t.add_column(col)
        for fault, d in r["per_class"].items():
            t.add_row(fault, *(str(v) for v in d.values()))
        c.print(t)


if __name__ == "__main__":
    main()
