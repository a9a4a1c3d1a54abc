"""Data-quality detectors against the simulator's ground truth: precision and recall per fault class.

The simulator (faults on) writes ``--devices`` devices at ``--rate`` readings/s for ``--hours``;
each chunk of ``--batch-s`` seconds goes the way a write does before the stream sees it — line
protocol parsed by the vectorised parser, validated with the default quality settings (units to
canonical, out-of-range values and duplicates rejected) and framed into the stream's values frame
— and then through :class:`~sensorium.detect.quality.QualityStage` as one micro-batch (the series
frame is the runner's :class:`~sensorium.stream.series.SeriesIndex`). Peers for the drift check
are the devices of one ``location`` (``--peer-tags``): the simulator puts about one device per
room of a home, so (location, room) would leave no device with peers.

Matching rule. Labels (``LABEL_SCHEMA``) are turned into *events*: a dropout label is one event
(``time`` .. ``end_time``, device only); spike, stuck and drift labels (one per faulty value) are
joined per device, field and class into stretches of consecutive readings (gap at most
``2.5 / rate`` s). A finding of check C (open and closed rows of one finding counted once) matches
an event of class C of the same device — and the same field, except for dropouts — when
``[finding.time - tol, finding.end + tol]`` overlaps ``[event.start, event.end]`` (``--tolerance-s``,
default 2 s; an open finding's end is its start). precision = matched findings / findings;
recall = matched events / events. ``recall_observable`` counts only events with at least one
faulty value that reached the stream (validation rejects e.g. a spike outside the field's domain:
the detectors never see it; dropouts are always observable); for drift also ``recall_with_peers``:
events of devices with at least ``drift_min_peers`` peers in their group. Findings that match no
event of their class but overlap an event of another class of the same device are counted in
``explained_by_other_faults``.

    python bench/sim_quality.py --json                 # 40 devices x 3 h at 1 Hz
    python bench/sim_quality.py --devices 20 --hours 1 --quick
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
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import log, machine_info, r3  # noqa: E402

from sensorium.config import QualitySettings  # noqa: E402
from sensorium.detect.quality import TABLE, QualityConfig, QualityStage  # noqa: E402
from sensorium.ingest.lineprotocol import parse_lines  # noqa: E402
from sensorium.ingest.simulator import SimConfig, Simulator  # noqa: E402
from sensorium.quality.validate import Validator  # noqa: E402
from sensorium.schema import LINE, tag_names  # noqa: E402
from sensorium.stream.frame import concat_frames, frames_of  # noqa: E402
from sensorium.stream.series import SeriesIndex  # noqa: E402

NS = 1_000_000_000
CLASSES = ("spike", "stuck", "dropout", "drift")


def _device_of(series: pl.Expr) -> pl.Expr:
    return series.str.extract(r"(?:^|,)device_id=([^,]+)", 1)


def label_events(labels: pl.DataFrame, rate: float) -> pl.DataFrame:
    """Label rows → events: ``fault, device_id, field, start, end, n`` (see the module docs)."""
    drop = labels.filter(pl.col("fault") == "dropout").select(
        "fault", "device_id", "field", pl.col("time").alias("start"),
        pl.col("end_time").alias("end"), pl.lit(1).alias("n"),
    )
    gap = int(2.5 / rate * NS)
    val = (
        labels.filter(pl.col("fault").is_in(["spike", "stuck", "drift"]))
        .sort(["fault", "device_id", "field", "time"])
        .with_columns(
            (
                (pl.col("time").diff().over(["fault", "device_id", "field"]).fill_null(gap + 1) > gap)
                .cum_sum()
                .over(["fault", "device_id", "field"])
            ).alias("_ev")
        )
        .group_by(["fault", "device_id", "field", "_ev"], maintain_order=True)
        .agg(pl.col("time").min().alias("start"), pl.col("time").max().alias("end"), pl.len().alias("n"))
        .drop("_ev")
        .with_columns(pl.col("n").cast(pl.Int32))
    )
    return pl.concat([drop.with_columns(pl.col("n").cast(pl.Int32)), val], how="vertical")


def findings_once(findings: pl.DataFrame) -> pl.DataFrame:
    """One row per finding: the closed row where there is one, else the open row."""
    return (
        findings.with_columns((pl.col("status") == "closed").alias("_c"))
        .sort(["series", "field", "check", "time", "_c"], nulls_last=True)
        .unique(subset=["series", "field", "check", "time"], keep="last", maintain_order=True)
        .drop("_c")
    )


def match(findings: pl.DataFrame, events: pl.DataFrame, tol_ns: int) -> dict[str, Any]:
    f = findings.with_columns(
        _device_of(pl.col("series")).alias("device_id"),
        (pl.col("time") - tol_ns).alias("f0"),
        (pl.col("end_time").fill_null(pl.col("time")) + tol_ns).alias("f1"),
    ).with_row_index("fid")
    e = events.with_row_index("eid")
    pairs = f.join(e, on="device_id", how="inner", suffix="_e").filter(
        (pl.col("f0") <= pl.col("end")) & (pl.col("start") <= pl.col("f1"))
    )
    same = pairs.filter(
        (pl.col("check") == pl.col("fault"))
        & ((pl.col("fault") == "dropout") | (pl.col("field") == pl.col("field_e")))
    )
    other = pairs.filter(pl.col("check") != pl.col("fault"))
    return {
        "tp_findings": set(same.get_column("fid").to_list()),
        "hit_events": set(same.get_column("eid").to_list()),
        "other": set(other.get_column("fid").to_list()),
        "f": f,
        "e": e,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = SimConfig(
        devices=args.devices, rate=args.rate, duration_s=args.hours * 3600.0, seed=args.seed,
        fault_rate=args.fault_rate,
    )
    min_abs = {k: float(v) for k, _, v in (a.partition("=") for a in args.drift_min_abs)}
    qcfg = QualityConfig(
        peer_tags=tuple(args.peer_tags), drift_fields=tuple(args.drift_fields),
        drift_min_abs_by_field=min_abs,
    )
    stage = QualityStage(qcfg)
    index = SeriesIndex()
    clock = [cfg.start]
    validator = Validator(QualitySettings(), now=lambda: clock[0])
    labels: list[pa.Table] = []
    found: list[pl.DataFrame] = []
    seen: list[pl.DataFrame] = []
    t_sim = t_ingest = t_detect = 0.0
    values_total = 0
    rejected = 0
    batches = 0
    t_all = time.perf_counter()
    chunks = Simulator(cfg).chunks(args.batch_s)
    while True:
        t0 = time.perf_counter()
        ch = next(chunks, None)
        if ch is None:
            break
        body = ch.lines
        labels.append(ch.labels)
        t1 = time.perf_counter()
        t_sim += t1 - t0
        clock[0] = ch.end_ns
        parsed = parse_lines(body, precision="ns", now_ns=ch.end_ns)
        pairs = []
        for m, table in parsed.batches.items():
            res = validator.validate(m, table)
            rejected += len(res.rejects)
            valid = res.valid
            if LINE in valid.column_names:
                valid = valid.drop_columns([LINE])
            arrival = np.full(valid.num_rows, ch.end_ns, dtype=np.int64)
            pairs.append(frames_of("default", m, valid, tag_names(valid), arrival))
        values, series = concat_frames(pairs)
        index.add(series)
        t2 = time.perf_counter()
        t_ingest += t2 - t1
        out = stage.process(values, index.frame)[TABLE]
        t_detect += time.perf_counter() - t2
        values_total += values.height
        batches += 1
        if out.height:
            found.append(out)
        seen.append(values.select("series", "field", "time"))
    wall = time.perf_counter() - t_all
    state_bytes = len(__import__("pickle").dumps(stage.state()))

    lab = pl.from_arrow(pa.concat_tables(labels))
    assert isinstance(lab, pl.DataFrame)
    events = label_events(lab, cfg.rate)
    allf = pl.concat(found, how="vertical") if found else pl.DataFrame()
    once = findings_once(allf) if allf.height else allf
    m = match(once, events, int(args.tolerance_s * NS)) if once.height else None

    # observability: a value-fault event is observable if one of its labelled values reached the stream
    seen_df = pl.concat(seen, how="vertical").select(
        _device_of(pl.col("series")).alias("device_id"), "field", "time"
    )
    lab_vals = lab.filter(pl.col("fault").is_in(["spike", "stuck", "drift"])).select(
        "fault", "device_id", "field", "time"
    )
    obs_rows = lab_vals.join(seen_df, on=["device_id", "field", "time"], how="semi")
    # devices with enough peers (drift): devices of the same kind (measurement) and peer tags
    fleet = pl.from_arrow(Simulator(cfg).devices())
    assert isinstance(fleet, pl.DataFrame)
    peer_cols = [c for c in args.peer_tags if c in fleet.columns]
    fleet = fleet.with_columns((pl.len().over(["kind", *peer_cols]) - 1).alias("peers"))
    with_peers = set(
        fleet.filter(pl.col("peers") >= qcfg.drift_min_peers).get_column("device_id").to_list()
    )

    per_class: dict[str, Any] = {}
    for c in CLASSES:
        ev_c = events.with_row_index("eid").filter(pl.col("fault") == c)
        n_ev = ev_c.height
        if c == "dropout":
            obs_ids = set(ev_c.get_column("eid").to_list())
        else:
            o = obs_rows.filter(pl.col("fault") == c)
            obs = ev_c.join(o, on=["device_id", "field"], how="inner").filter(
                (pl.col("time") >= pl.col("start")) & (pl.col("time") <= pl.col("end"))
            )
            obs_ids = set(obs.get_column("eid").to_list())
        if m is not None:
            fc = m["f"].filter(pl.col("check") == c)
            f_ids = set(fc.get_column("fid").to_list())
            tp = len(f_ids & m["tp_findings"])
            explained = len((f_ids - m["tp_findings"]) & m["other"])
            hits = set(ev_c.get_column("eid").to_list()) & m["hit_events"]
        else:
            f_ids, tp, explained, hits = set(), 0, 0, set()
        row: dict[str, Any] = {
            "events": n_ev,
            "observable_events": len(obs_ids),
            "findings": len(f_ids),
            "matched_findings": tp,
            "matched_events": len(hits),
            "precision": r3(tp / len(f_ids)) if f_ids else None,
            "recall": r3(len(hits) / n_ev) if n_ev else None,
            "recall_observable": r3(len(hits & obs_ids) / len(obs_ids)) if obs_ids else None,
            "explained_by_other_faults": explained,
        }
        if c == "stuck":
            long_ = set(ev_c.filter(pl.col("n") >= 10).get_column("eid").to_list())
            row["events_ge_10_points"] = len(long_)
            row["recall_ge_10_points"] = r3(len(hits & long_) / len(long_)) if long_ else None
        if c == "drift":
            wp = set(ev_c.filter(pl.col("device_id").is_in(list(with_peers))).get_column("eid").to_list())
            wpo = wp & obs_ids
            row["events_with_peers"] = len(wp)
            row["recall_with_peers"] = r3(len(hits & wpo) / len(wpo)) if wpo else None
        per_class[c] = row
    return {
        "bench": "sim_quality",
        "devices": cfg.devices,
        "rate_hz": cfg.rate,
        "hours": args.hours,
        "seed": cfg.seed,
        "fault_rate": cfg.fault_rate,
        "batch_s": args.batch_s,
        "batches": batches,
        "peer_tags": list(args.peer_tags),
        "drift_fields": list(args.drift_fields),
        "drift_min_abs": min_abs,
        "tolerance_s": args.tolerance_s,
        "values": values_total,
        "rejected_lines": rejected,
        "findings": once.height if once.height else 0,
        "per_class": per_class,
        "seconds": {
            "total": r3(wall),
            "simulate": r3(t_sim),
            "parse_validate_frame": r3(t_ingest),
            "detect": r3(t_detect),
        },
        "detect_values_per_s": round(values_total / t_detect) if t_detect else None,
        "state_bytes": state_bytes,
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=40)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=1.0, help="readings per second per device")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--fault-rate", type=float, default=0.005)
    ap.add_argument("--batch-s", type=float, default=60.0, help="simulated seconds per micro-batch")
    ap.add_argument("--peer-tags", nargs="+", default=["location"])
    ap.add_argument(
        "--drift-fields", nargs="+", default=["temperature", "humidity", "pressure", "voltage"],
        help="fields checked for drift against peers (quantities co-located sensors share)",
    )
    ap.add_argument(
        "--drift-min-abs", nargs="*", default=[], metavar="FIELD=VALUE",
        help="smallest drift offset reported per field, e.g. voltage=0.5 (default: none)",
    )
    ap.add_argument("--tolerance-s", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="20 devices x 1 h")
    ap.add_argument("--json", action="store_true", help="print one JSON object (default: a table)")
    args = ap.parse_args(argv)
    if args.quick:
        args.devices, args.hours = 20, 1.0
    log(f"simulating {args.devices} devices x {args.hours:g} h at {args.rate:g} Hz ...")
    res = run(args)
    if args.json:
        print(json.dumps(res, separators=(", ", ": ")))
        return 0
    print(f"{res['values']:,} values in {res['batches']} batches; detect {res['seconds']['detect']} s "
          f"({res['detect_values_per_s']:,} values/s); total {res['seconds']['total']} s")
    print(f"{'check':8} {'events':>7} {'found':>6} {'precision':>9} {'recall':>7} {'recall(obs)':>11}")
    for c, r in res["per_class"].items():
        print(f"{c:8} {r['events']:>7} {r['findings']:>6} {str(r['precision']):>9} "
              f"{str(r['recall']):>7} {str(r['recall_observable']):>11}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
