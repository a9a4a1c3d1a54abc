"""NAB scoring: the scorer on hand-made cases, and `bench/nab.py --json` on the full corpus
(reproduces the published Windowed Gaussian; the default detector holds its target)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sensorium.detect.evaluate import (
    NabFile,
    find_corpus,
    probation_rows,
    score_at_threshold,
    score_corpus,
)

ROOT = Path(__file__).resolve().parents[2]
NAB = find_corpus(ROOT)


def _file(n: int = 2000, windows: list[tuple[int, int]] | None = None) -> NabFile:
    return NabFile("f.csv", np.arange(n, dtype=np.int64), np.zeros(n), windows or [(1000, 1099), (1500, 1599)])


def test_probation_is_15_percent_at_most_750_rows() -> None:
    assert probation_rows(1000) == 150 and probation_rows(10_000) == 750


def test_null_perfect_and_early_late_detections() -> None:
    f = _file()
    null = np.zeros(2000)
    assert score_corpus([f], [null])["standard"].score == pytest.approx(0.0)
    perfect = np.zeros(2000)
    perfect[[1000, 1500]] = 1.0
    r = score_corpus([f], [perfect])["standard"]
    assert r.score == pytest.approx(100.0) and r.tp == 2 and r.fp == 0 and r.fn == 0
    # a detection at a window's last row earns (almost) nothing; early beats late
    late = np.zeros(2000)
    late[[1099, 1599]] = 1.0
    mid = np.zeros(2000)
    mid[[1050, 1550]] = 1.0
    assert score_at_threshold([f], [late], 0.5) < score_at_threshold([f], [mid], 0.5) < 100.0
    # a false positive far from windows costs fpWeight; just after a window it costs less
    far = perfect.copy()
    far[300] = 1.0
    near = perfect.copy()
    near[1105] = 1.0
    s_far, s_near = score_at_threshold([f], [far], 0.5), score_at_threshold([f], [near], 0.5)
    assert s_far == pytest.approx(100.0 * (2 - 0.11 + 2) / 4)
    assert s_far < s_near < 100.0
    # detections in the probationary period are not scored
    prob = perfect.copy()
    prob[10] = 1.0
    assert score_at_threshold([f], [prob], 0.5) == pytest.approx(100.0)


def test_threshold_sweep_picks_the_best_threshold() -> None:
    f = _file()
    s = np.zeros(2000)
    s[[1000, 1500]] = 0.9  # true detections
    s[[400, 600, 800]] = 0.95  # higher-scoring false positives: the sweep must go below them
    r = score_corpus([f], [s])["standard"]
    assert r.threshold == pytest.approx(0.9) and r.tp == 2 and r.fp == 3
    assert r.score == pytest.approx(score_at_threshold([f], [s], 0.9))


@pytest.mark.slow
def test_bench_nab_reproduces_the_reference_and_the_default_meets_its_target() -> None:
    if NAB is None:
        pytest.fail("NAB corpus not found (../shared/data/nab, /work/shared/data/nab or $NAB_DATA)")
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "nab.py"), "--json", "--detectors", "default,ewma"],
        capture_output=True, text=True, timeout=600, check=True,
    )
    d = json.loads(out.stdout)
    assert d["corpus"] == {"files": 58, "rows": 365_558, "windows": 116}
    for profile, diff in d["reference"]["difference_to_published"].items():
        assert abs(diff) < 3.5, (profile, diff)
    assert d["detectors"]["default"]["standard"]["score"] >= 65.0
    assert d["detectors"]["default"]["standard"]["score"] > d["detectors"]["ewma"]["standard"]["score"]
