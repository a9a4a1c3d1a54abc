"""`sensorium detect sampling | fuse | compress` on a data directory (in process)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from sensorium.cli.main import app
from sensorium.errors import NotFound
from sensorium.platform import Sensorium
from tests.conftest import make_settings

NS = 1_000_000_000


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("detect-cli") / "data"
    now = time.time_ns()
    rng = np.random.default_rng(2)
    t = np.arange(0, 3600, 5)  # the last hour, every 5 s (the CLI reads the real clock)
    base = now - 3600 * NS
    lines = []
    for j, noise in enumerate((0.05, 0.2, 0.5)):
        v = 21 + np.sin(t / 2000) + rng.normal(0, noise, t.size)
        lines += [f"climate,device_id=d{j},room=kitchen temperature={x:.5f} {base + int(s) * NS}"
                  for s, x in zip(t, v, strict=True)]
    p = Sensorium(make_settings(d), background=False)
    try:
        assert p.write("\n".join(lines)).rejected == 0
    finally:
        p.close()
    return d


def _json(args: list[str]) -> dict:  # type: ignore[type-arg]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, (r.output, r.exception)
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_compress_reports_ratio_and_bound(data_dir: Path) -> None:
    out = _json(["detect", "compress", "climate", "temperature", "--error", "0.5", "--start", "now-2h",
                 "-f", "json", "--data-dir", str(data_dir)])
    tot = out["totals"]
    assert tot["points"] == 3 * 720 and tot["series"] == 3
    assert tot["ratio"] > 1 and tot["max_error"] <= 0.5
    dead = _json(["detect", "compress", "climate", "temperature", "--error", "2%", "--method", "deadband",
                  "--start", "now-2h", "-f", "json", "--data-dir", str(data_dir)])
    assert dead["totals"]["method"] == "deadband" and len(dead["series"]) == 3


def test_fuse_stores_a_fused_measurement(data_dir: Path) -> None:
    out = _json(["detect", "fuse", "climate", "temperature", "--by", "room", "--start", "now-2h",
                 "--store", "-f", "json", "--data-dir", str(data_dir)])
    n = out["summary"]["rows"]
    assert out["summary"]["stored"] == n and n in (60, 61)  # 1-minute buckets over an hour
    (g,) = out["groups"]
    # every bucket has the 3 sensors, except perhaps the first and last (cut by the time range)
    assert g["room"] == "kitchen" and 3 - 2 / n <= g["mean_sensors"] <= 3
    p = Sensorium(make_settings(data_dir), read_only=True, background=False)
    try:
        assert p.query("SELECT count(*) AS n FROM climate_fused").to_pylist() == [{"n": n}]
    finally:
        p.close()


def test_sampling_and_unknown_device(data_dir: Path) -> None:
    out = _json(["detect", "sampling", "d0", "--hours", "2", "-f", "json", "--data-dir", str(data_dir)])
    (row,) = out["fields"]
    assert row["current_interval_s"] == 5.0 and row["advised_interval_s"] >= 5.0
    r = CliRunner().invoke(app, ["detect", "sampling", "nobody", "--data-dir", str(data_dir)])
    assert isinstance(r.exception, NotFound)
