"""NAB scoring (Numenta Anomaly Benchmark v1.1), implemented from its published description.

A detector is run causally over each file of the corpus; rows whose score is at or above a
threshold are *detections*. Per file:

* the first 15 % of the rows (at most 750) are a probationary period and are not scored;
* every labelled window starts at ``-fnWeight``; a detection at row ``i`` inside a window whose
  rows are ``[l, r]`` (width ``w = r - l + 1``) sits at ``y = -(r - i + 1) / w`` and earns
  ``scaled_sigmoid(y) / scaled_sigmoid(-1) * tpWeight``; the window keeps its best (earliest)
  detection only;
* a detection outside every window costs ``fpWeight * scaled_sigmoid(d)`` where ``d`` is its
  distance past the preceding window's right edge in units of that window's width − 1 (no
  preceding window: the factor is −1);

with ``scaled_sigmoid(x) = 2 / (1 + exp(5 x)) - 1`` (−1 for ``x > 3``). The threshold is chosen
per profile to maximise the summed score over the whole corpus (an exact sweep over every
distinct score, as NAB's sweeper does), and the result is normalised:
``100 * (S - S_null) / (S_perfect - S_null)``, where the null detector never fires
(``-fnWeight`` per window) and the perfect one fires at every window's first row
(``tpWeight`` per window).

The sweep is vectorised: all scored rows of the corpus sorted by anomaly score, false-positive
costs summed cumulatively, each window's contribution tracked as the change of its running best.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.11},
    "reward_low_FP_rate": {"tpWeight": 1.0, "fnWeight": 1.0, "fpWeight": 0.22},
    "reward_low_FN_rate": {"tpWeight": 1.0, "fnWeight": 2.0, "fpWeight": 0.11},
}
PROBATION_PERCENT = 0.15


def find_corpus(start: Path | str | None = None) -> Path | None:
    """Where the NAB corpus is: ``$NAB_DATA``, else ``shared/data/nab`` beside a parent folder of
    ``start`` (this checkout), else ``/work/shared/data/nab``; None when none holds it."""
    import os

    here = Path(start or __file__).resolve()
    candidates = [Path(os.environ["NAB_DATA"])] if os.environ.get("NAB_DATA") else []
    candidates += [p / "shared" / "data" / "nab" for p in here.parents]
    candidates.append(Path("/work/shared/data/nab"))
    for c in candidates:
        if (c / "labels" / "combined_windows.json").is_file():
            return c
    return None


def probation_rows(n: int) -> int:
    """Rows of a file's probationary period: 15 % of it, at most 750 (NAB's rule)."""
    return int(min(math.floor(PROBATION_PERCENT * n), PROBATION_PERCENT * 5000))


def scaled_sigmoid(x: np.ndarray | float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = 2.0 / (1.0 + np.exp(np.clip(5.0 * x, -700, 700))) - 1.0
    return np.where(x > 3.0, -1.0, out)


@dataclass
class NabFile:
    """One series of the corpus: row times (ns), values, labelled windows as row ranges."""

    name: str
    times: np.ndarray
    values: np.ndarray
    windows: list[tuple[int, int]] = field(default_factory=list)

    @property
    def probation(self) -> int:
        return probation_rows(len(self.values))


def _parse_times(col: pl.Series) -> np.ndarray:
    return (
        col.str.to_datetime(strict=True, time_unit="ns", time_zone="UTC").dt.epoch("ns").to_numpy().astype(np.int64)
    )


def load_corpus(root: Path | str, *, only: str | None = None) -> list[NabFile]:
    """The NAB corpus under ``root`` (``data/<category>/<name>.csv`` + ``labels/combined_windows.json``).

    ``only``: a substring of the relative file names to keep (e.g. ``"realKnownCause"``).
    """
    root = Path(root)
    windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    files = []
    for rel in sorted(windows):
        if only and only not in rel:
            continue
        df = pl.read_csv(root / "data" / rel, schema_overrides={"timestamp": pl.Utf8, "value": pl.Float64})
        times = _parse_times(df.get_column("timestamp"))
        rows = []
        for start, end in windows[rel]:
            s = _parse_times(pl.Series([start, end]))
            left = int(np.searchsorted(times, s[0], side="left"))
            right = int(np.searchsorted(times, s[1], side="right")) - 1
            if right >= left:
                rows.append((left, right))
        files.append(NabFile(rel, times, df.get_column("value").to_numpy().astype(np.float64), rows))
    return files


@dataclass
class _Prepared:
    """Per scored row of the corpus: weighted score if detected, window id (-1: none)."""

    weight_tp: np.ndarray  # tp weight (unit tpWeight) for rows in windows, else 0
    fp_factor: np.ndarray  # unweighted FP factor (negative) for rows outside windows, else 0
    window: np.ndarray  # global window id or -1
    n_windows: int


def _prepare(files: list[NabFile], scores: list[np.ndarray]) -> tuple[_Prepared, np.ndarray]:
    tp_parts, fp_parts, win_parts, score_parts = [], [], [], []
    base = 0
    max_tp = float(scaled_sigmoid(-1.0))
    for f, s in zip(files, scores, strict=True):
        n = len(f.values)
        if len(s) != n:
            raise ValueError(f"{f.name}: {len(s)} scores for {n} rows")
        idx = np.arange(n)
        win = np.full(n, -1, dtype=np.int64)
        tp = np.zeros(n)
        fp = np.full(n, -1.0)
        # position past the preceding window (by row), for FP costs
        prev_right = np.full(n, -1, dtype=np.int64)
        prev_width = np.zeros(n, dtype=np.int64)
        for k, (left, right) in enumerate(sorted(f.windows)):
            width = right - left + 1
            inside = slice(left, right + 1)
            win[inside] = base + k
            tp[inside] = scaled_sigmoid(-(right - idx[inside] + 1) / width) / max_tp
            prev_right[right + 1 :] = right
            prev_width[right + 1 :] = width
        after = (win < 0) & (prev_right >= 0)
        # distance in units of (width - 1), as NAB's own sweeper.py computes it (the published
        # scores come from that code)
        denom = np.maximum(prev_width[after] - 1, 1)
        fp[after] = scaled_sigmoid(np.abs(prev_right[after] - idx[after]) / denom)
        fp[win >= 0] = 0.0
        keep = idx >= f.probation
        tp_parts.append(tp[keep])
        fp_parts.append(fp[keep])
        win_parts.append(win[keep])
        score_parts.append(np.asarray(s, dtype=np.float64)[keep])
        base += len(f.windows)
    prepared = _Prepared(
        np.concatenate(tp_parts), np.concatenate(fp_parts), np.concatenate(win_parts), base
    )
    return prepared, np.concatenate(score_parts)


@dataclass
class ProfileResult:
    profile: str
    score: float  # normalised, 0 = null detector, 100 = perfect
    raw: float
    threshold: float
    tp: int
    fp: int
    fn: int


def _sweep(p: _Prepared, scores: np.ndarray, weights: dict[str, float]) -> ProfileResult:
    tpw, fnw, fpw = weights["tpWeight"], weights["fnWeight"], weights["fpWeight"]
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    win = p.window[order]
    gain = np.where(win >= 0, p.weight_tp[order] * tpw, p.fp_factor[order] * fpw)
    delta = np.where(win >= 0, 0.0, gain)
    in_win = np.flatnonzero(win >= 0)
    if len(in_win):
        df = pl.DataFrame({"w": win[in_win], "g": gain[in_win]})
        best = df.select(pl.col("g").cum_max().over("w")).to_series().to_numpy()
        prev = df.select(pl.col("g").cum_max().shift(1).over("w")).to_series().fill_null(-fnw).to_numpy()
        delta[in_win] = best - np.maximum(prev, -fnw)
    null = -fnw * p.n_windows
    total = null + np.cumsum(delta)
    # a threshold admits every row scoring >= it: only the last row of each tie group counts
    last_of_tie = np.r_[s[1:] != s[:-1], True] if len(s) else np.zeros(0, bool)
    cand = np.flatnonzero(last_of_tie)
    perfect = tpw * p.n_windows
    if len(cand) == 0 or total[cand].max() <= null:
        best_raw, thr, k = null, float(s[0]) + 1e-9 if len(s) else 1.0, -1
    else:
        k = int(cand[np.argmax(total[cand])])
        best_raw, thr = float(total[k]), float(s[k])
    detected = np.zeros(len(s), bool)
    detected[: k + 1] = True
    tp_windows = np.unique(win[detected & (win >= 0)]).size
    fp = int(np.count_nonzero(detected & (win < 0)))
    norm = 100.0 * (best_raw - null) / (perfect - null) if perfect != null else 0.0
    return ProfileResult("", norm, best_raw, thr, int(tp_windows), fp, p.n_windows - int(tp_windows))


def score_corpus(
    files: list[NabFile], scores: list[np.ndarray], profiles: dict[str, dict[str, float]] | None = None
) -> dict[str, ProfileResult]:
    """Best normalised NAB score per profile (threshold tuned per profile over the corpus)."""
    prepared, flat = _prepare(files, scores)
    out = {}
    for name, weights in (profiles or PROFILES).items():
        r = _sweep(prepared, flat, weights)
        r.profile = name
        out[name] = r
    return out


def score_at_threshold(
    files: list[NabFile], scores: list[np.ndarray], threshold: float, profile: str = "standard"
) -> float:
    """Normalised score at a fixed threshold (detections: score >= threshold)."""
    prepared, flat = _prepare(files, scores)
    w = PROFILES[profile]
    det = flat >= threshold
    fp = float((prepared.fp_factor[det & (prepared.window < 0)] * w["fpWeight"]).sum())
    raw = fp
    win = prepared.window
    for k in range(prepared.n_windows):
        hit = det & (win == k)
        raw += float(prepared.weight_tp[hit].max() * w["tpWeight"]) if hit.any() else -w["fnWeight"]
    null = -w["fnWeight"] * prepared.n_windows
    perfect = w["tpWeight"] * prepared.n_windows
    return 100.0 * (raw - null) / (perfect - null)
