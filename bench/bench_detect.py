"""Scoring speed of the anomaly detectors, in process (vectorised), points per second.

    python bench/bench_detect.py [--json] [--detectors default,ewma]

Shapes: one long series (1 M points, one batch), and many series (10 000 series × 100 points,
interleaved, one batch, as the stream delivers them), each with a fresh detector; plus the
stream's steady state (the same 10 000 series, next 10 batches of 10 points each). Baseline in
the same run: NAB's Windowed Gaussian reference detector (bench/nab.py) on the long series.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from nab import windowed_gaussian  # noqa: E402

from sensorium.detect import make, score_frame  # noqa: E402


def signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 20 + 3 * np.sin(2 * np.pi * t / 1440) + rng.normal(0, 0.3, n)


def many(series: int, points: int, offset: int = 0) -> pl.DataFrame:
    v = signal(series * (points + offset), 1).reshape(series, -1)[:, offset:]
    keys = np.array([f"climate,device_id=d{i:05d}|temperature" for i in range(series)], dtype=object)
    return pl.DataFrame({
        "series": np.tile(keys, points),  # interleaved: point 0 of every series, then point 1, ...
        "time": np.repeat(np.arange(offset, offset + points, dtype=np.int64) * 10**9, series),
        "value": v.T.ravel(),
    })


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--detectors", default="default,ewma,robust_z,seasonal")
    ap.add_argument("--points", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.points
    long = score_frame("climate,device_id=d0|temperature", np.arange(n, dtype=np.int64) * 10**9, signal(n))
    wide = many(10_000, 100)
    steady = [many(10_000, 10, offset=100 + 10 * k) for k in range(10)]
    out: dict = {"points": n, "results": {}}
    secs = timed(lambda: windowed_gaussian(long.get_column("value").to_numpy()))
    out["baseline_windowed_gaussian_long"] = round(n / secs)
    for name in args.detectors.split(","):
        r = {}
        secs = min(timed(lambda name=name: make(name).score_many(long)) for _ in range(2))
        r["one_series_points_per_s"] = round(n / secs)
        secs = min(timed(lambda name=name: make(name).score_many(wide)) for _ in range(2))
        r["10k_series_x100_points_per_s"] = round(wide.height / secs)
        det = make(name)
        det.score_many(wide)
        secs = sum(timed(lambda b=b, det=det: det.score_many(b)) for b in steady)
        r["steady_10k_series_batches_of_100k_points_per_s"] = round(sum(b.height for b in steady) / secs)
        out["results"][name] = r
    if args.json:
        print(json.dumps(out))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"detector scoring speed (points/s); baseline windowed gaussian: {out['baseline_windowed_gaussian_long']:,}")
    t.add_column("detector")
    for c in ("one series × 1M", "10k series × 100", "steady: 10k series, batches of 100k"):
        t.add_column(c, justify="right")
    for name, r in out["results"].items():
        t.add_row(name, *(f"{v:,}" for v in r.values()))
    Console().print(t)


if __name__ == "__main__":
    main()
