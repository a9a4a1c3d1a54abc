"""The CLI is thin over the library: each command works on a data directory, errors exit non-zero
with one clear line and no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "sensorium.cli.main", *args],
        capture_output=True, text=True, timeout=240, env={**os.environ, **(env or {}), "COLUMNS": "200"}, cwd=cwd,
    )


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    out = d / "sim.lp"
    r = run("simulate", "--devices", "6", "--rate", "1", "--duration", "10m", "--out", str(out), "--seed", "7")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["points"] > 0 and (d / "sim.lp.labels.csv").exists()
    r = run("load", str(out), "--data-dir", str(d / "data"), "--bucket", "sim")
    # the simulator injects faults: their lines are rejected, the rest stored, exit code 1 says so
    assert r.returncode == 1, r.stderr
    assert "dead-letters list" in r.stderr
    assert "loaded" in r.stdout and "values/s" in r.stdout
    return d


def test_query_formats(loaded: Path) -> None:
    dd = str(loaded / "data")
    r = run("query", "SELECT count(DISTINCT device_id) AS n FROM climate", "--bucket", "sim", "--data-dir", dd, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["n"] >= 1
    r = run("query", "SELECT count(*) AS n FROM climate", "--bucket", "sim", "--data-dir", dd, "--format", "csv")
    assert r.stdout.splitlines()[0].strip('"') == "n"
    r = run("query", "SELECT device_id, count(*) FROM climate GROUP BY 1", "--bucket", "sim", "--data-dir", dd)
    assert r.returncode == 0 and "device_id" in r.stdout


def test_bad_sql_exits_2_without_traceback(loaded: Path) -> None:
    r = run("query", "SELEC nonsense", "--bucket", "sim", "--data-dir", str(loaded / "data"))
    assert r.returncode == 2
    assert "syntax error" in r.stderr and "Traceback" not in r.stderr + r.stdout
    r = run("query", "SELECT * FROM read_csv('/etc/passwd')", "--data-dir", str(loaded / "data"))
    assert r.returncode == 2 and "not allowed" in r.stderr


def test_dead_letters_and_quality(loaded: Path) -> None:
    dd = str(loaded / "data")
    r = run("dead-letters", "list", "--data-dir", dd, "--format", "json", "--limit", "5")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["total"] > 0  # the simulator injects out-of-range values and spikes
    assert all(it["reason"] for it in out["items"])
    r = run("quality", "--data-dir", dd, "--format", "json")
    rep = json.loads(r.stdout)
    assert 0.5 < rep["totals"]["valid_rate"] < 1.0
    r = run("quality", "--data-dir", dd)
    assert r.returncode == 0 and "valid" in r.stdout.lower()


def test_storage_reports_bytes_per_value(loaded: Path) -> None:
    r = run("storage", "--data-dir", str(loaded / "data"))
    assert r.returncode == 0, r.stderr
    assert "B/value" in r.stdout


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "s.toml"
    cfg.write_text('auth_token = "hunter2"\nport = 7555\n[wal]\nfsync = "interval"\n')
    r = run("config", "show", "--config", str(cfg), env={"SENSORIUM_STORE__FLUSH_ROWS": "1234"})
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["auth_token"] == "**********" and "hunter2" not in r.stdout
    assert data["port"] == 7555 and data["wal"]["fsync"] == "interval"
    assert data["store"]["flush_rows"] == 1234


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[wal]\nfsync = 'sometimes'\n")
    r = run("config", "show", "--config", str(cfg))
    assert r.returncode == 2 and "wal.fsync" in r.stderr and "Traceback" not in r.stderr
    r = run("config", "show", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "not found" in r.stderr


def test_load_rejects_unknown_extension(tmp_path: Path) -> None:
    f = tmp_path / "x.xyz"
    f.write_text("hello")
    r = run("load", str(f), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_process_settings_set_the_switch_interval(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What `up`, `ingest`, `api` and `worker` apply first: the process's thread switch interval
    from the settings (1 ms by default, Python's own is 5 ms)."""
    from sensorium.cli.common import apply_process_settings
    from sensorium.config import load_settings

    monkeypatch.delenv("SENSORIUM_SWITCH_INTERVAL_MS", raising=False)
    monkeypatch.delenv("SENSORIUM_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no ./sensorium.toml
    saved = sys.getswitchinterval()
    try:
        apply_process_settings(load_settings(None, switch_interval_ms=2.5))
        assert sys.getswitchinterval() == pytest.approx(0.0025)
        apply_process_settings(load_settings(None))
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(saved)
