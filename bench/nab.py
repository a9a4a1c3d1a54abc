"""NAB (Numenta Anomaly Benchmark v1.1) scores of Sensorium's detectors.

    python bench/nab.py            # a table
    python bench/nab.py --json     # one JSON object with every score

First reproduces a published detector (NAB's Windowed Gaussian: standard 39.6, low-FP 20.9,
low-FN 47.4 on the NAB scoreboard) with our scorer (``sensorium.detect.evaluate``), then runs
every registered detector causally over every file of the corpus (one fresh detector per file,
the whole file as one stream) and reports, per profile, the normalised score with its tuned
threshold and the detected windows / false-positive rows / missed windows. Data:
``../shared/data/nab`` (or ``$NAB_DATA``, or ``--data``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import erfc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from sensorium.detect import make, names, score_frame  # noqa: E402
from sensorium.detect.evaluate import PROFILES, find_corpus, load_corpus, score_corpus  # noqa: E402

PUBLISHED = {
    "windowed_gaussian": {"standard": 39.6, "reward_low_FP_rate": 20.9, "reward_low_FN_rate": 47.4},
    "numenta_htm": {"standard": 70.5, "reward_low_FP_rate": 62.6, "reward_low_FN_rate": 75.2},
}
DEFAULT_DATA = find_corpus(REPO) or REPO.parent / "shared" / "data" / "nab"


def windowed_gaussian(v: np.ndarray, window: int = 6400, step: int = 100) -> np.ndarray:
    """NAB's Windowed Gaussian detector (nab/detectors/gaussian), vectorised: the tail
    probability of each value under the mean/std of a window that fills to ``window`` values,
    then slides by ``step``; score = 1 - tail."""
    n = len(v)
    c1 = np.r_[0.0, np.cumsum(v)]
    c2 = np.r_[0.0, np.cumsum(v * v)]
    i = np.arange(n)
    late = i - 1 >= window
    last_update = np.maximum(window - 1 + ((i - 1 - (window - 1)) // step) * step, window - 1)
    hi = np.where(late, last_update + 1, np.minimum(i, window))
    lo = np.where(late, last_update + 1 - window, 0)
    cnt = hi - lo
    c = np.maximum(cnt, 1)
    mean = (c1[hi] - c1[lo]) / c
    std = np.sqrt(np.maximum((c2[hi] - c2[lo]) / c - mean**2, 0.0))
    std = np.where(std == 0, 1e-6, std)
    s = 1.0 - 0.5 * erfc(np.abs(v - mean) / std / np.sqrt(2.0))
    return np.where(cnt == 0, 0.0, s)


def run_detector(name: str, files: list[Any]) -> tuple[list[np.ndarray], float]:
    t0 = time.perf_counter()
    scores = []
    for f in files:
        det = make(name)
        scores.append(det.score_many(score_frame("nab", f.times, f.values)))
    return scores, time.perf_counter() - t0


def result_dict(res: dict[str, Any]) -> dict[str, Any]:
    return {
        p: {"score": round(r.score, 2), "threshold": r.threshold, "tp_windows": r.tp, "fp_rows": r.fp, "fn_windows": r.fn}
        for p, r in res.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB corpus folder (data/, labels/)")
    ap.add_argument("--detectors", default="all", help="comma-separated registry names, or 'all'")
    args = ap.parse_args()
    if not (args.data / "labels" / "combined_windows.json").exists():
        sys.exit(f"NAB corpus not found under {args.data} (expected labels/combined_windows.json)")
    files = load_corpus(args.data)
    rows = int(sum(len(f.values) for f in files))
    wanted = [n for n in names() if n != "likelihood"] if args.detectors == "all" else args.detectors.split(",")
    out: dict[str, Any] = {
        "corpus": {"files": len(files), "rows": rows, "windows": sum(len(f.windows) for f in files)},
        "profiles": PROFILES,
        "published": PUBLISHED,
    }
    t0 = time.perf_counter()
    ref = score_corpus(files, [windowed_gaussian(f.values) for f in files])
    out["reference"] = {
        "windowed_gaussian": {**result_dict(ref), "seconds": round(time.perf_counter() - t0, 2)},
        "difference_to_published": {p: round(ref[p].score - PUBLISHED["windowed_gaussian"][p], 2) for p in ref},
    }
    detectors: dict[str, Any] = {}
    progress = None
    if not args.json:
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task("detectors", total=len(wanted))
    for name in wanted:
        scores, secs = run_detector(name, files)
        res = score_corpus(files, scores)
        detectors[name] = {**result_dict(res), "seconds": round(secs, 2), "points_per_s": round(rows / secs)}
        if progress is not None:
            progress.advance(task)
    if progress is not None:
        progress.stop()
    out["detectors"] = detectors
    out["default"] = "default"
    if args.json:
        print(json.dumps(out))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"NAB v1.1 — {len(files)} files, {rows:,} rows, {out['corpus']['windows']} windows")
    for col in ("detector", "standard", "low FP", "low FN", "threshold (std)", "TP/FP/FN (std)", "points/s"):
        table.add_column(col, justify="right" if col != "detector" else "left")
    wg = out["reference"]["windowed_gaussian"]
    table.add_row("windowed gaussian (NAB ref.)", *(f"{wg[p]['score']:.1f} ({PUBLISHED['windowed_gaussian'][p]})" for p in PROFILES),
                  f"{wg['standard']['threshold']:.4f}", "", "")
    for name, d in detectors.items():
        s = d["standard"]
        table.add_row(name, *(f"{d[p]['score']:.1f}" for p in PROFILES), f"{s['threshold']:.4f}",
                      f"{s['tp_windows']}/{s['fp_rows']}/{s['fn_windows']}", f"{d['points_per_s']:,}")
    Console().print(table)


if __name__ == "__main__":
    main()
