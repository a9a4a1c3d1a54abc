"""The stream's detect stage: anomaly scores per point (queryable), rules on scores, scores and
models surviving a restart, configuration errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sensorium.errors import ConfigError
from sensorium.platform import Sensorium
from sensorium.rules.loader import parse_rules
from tests.conftest import T0, FakeClock, make_settings

NS = 1_000_000_000
RULES = """
[[rules]]
name = "temperature-anomaly"
kind = "threshold"
measurement = "climate"
field = "temperature"
stat = "anomaly_score"
above = { warning = 0.9 }
deadband = 0.3
"""
DETECT = {"detectors": [{"measurement": "climate", "field": "temperature", "detector": "default",
                         "params": {"warm": 50, "learn": 100}}]}


def _signal(n: int, spike_at: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    v = 21.0 + rng.normal(0, 0.2, n)
    v[spike_at] = 35.0
    return v


def _write(p: Sensorium, values: np.ndarray, start: int = 0, device: str = "a") -> None:
    lines = [f"climate,device_id={device} temperature={v:.4f},humidity=40 {T0 + (start + i) * NS}"
             for i, v in enumerate(values)]
    for i in range(0, len(lines), 50):
        p.write("\n".join(lines[i : i + 50]))
        p.process_stream()


def test_scores_are_queryable_and_rules_fire_on_them(data_dir: Path) -> None:
    clock = FakeClock(T0 + 3600 * NS)
    p = Sensorium(make_settings(data_dir, detect=DETECT), clock=clock, background=False, rules=parse_rules(RULES))
    try:
        values = _signal(400, 300)
        _write(p, values)
        assert p.stream is not None
        p.stream.checkpoint()
        t = p.query("SELECT device_id, measurement, field, time, value, score FROM anomaly_scores ORDER BY time")
        rows = t.to_pylist()
        assert len(rows) == 400  # one score per temperature point, humidity is not watched
        assert {r["field"] for r in rows} == {"temperature"} and {r["device_id"] for r in rows} == {"a"}
        scores = np.array([r["score"] for r in rows])
        assert scores[300] > 0.9 and scores[300] == scores.max()
        assert np.quantile(scores[60:300], 0.99) < 0.9
        assert abs(rows[300]["value"] - 35.0) < 1e-9
        alerts = [a for a in p.alerts.list() if a["rule"] == "temperature-anomaly"] if p.alerts else []
        assert len(alerts) == 1 and alerts[0]["severity"] == "warning"
    finally:
        p.close()


def test_detector_state_survives_a_restart(data_dir: Path) -> None:
    settings = make_settings(data_dir, detect=DETECT)
    values = _signal(400, 300)
    # uninterrupted run
    ref_dir = data_dir.parent / "ref"
    p = Sensorium(make_settings(ref_dir, detect=DETECT), clock=FakeClock(T0 + 3600 * NS), background=False)
    _write(p, values)
    p.stream.checkpoint()  # type: ignore[union-attr]
    want = np.array(p.query("SELECT score FROM anomaly_scores ORDER BY time").column("score").to_pylist())
    p.close()
    # the same data with a restart in the middle
    p = Sensorium(settings, clock=FakeClock(T0 + 3600 * NS), background=False)
    _write(p, values[:200])
    p.close()
    p = Sensorium(settings, clock=FakeClock(T0 + 3600 * NS), background=False)
    assert p.stream is not None and p.stream.detect is not None
    assert p.stream.detect.detectors[0].table["n"].sum() == 200  # the model came back
    _write(p, values[200:], start=200)
    p.stream.checkpoint()
    got = np.array(p.query("SELECT score FROM anomaly_scores ORDER BY time").column("score").to_pylist())
    p.close()
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_unknown_detector_is_a_configuration_error(data_dir: Path) -> None:
    bad = {"detectors": [{"detector": "magic"}]}
    with pytest.raises(ConfigError, match="unknown detector 'magic'"):
        Sensorium(make_settings(data_dir, detect=bad), clock=FakeClock(T0 + 3600 * NS), background=False)
    bad_params = {"detectors": [{"detector": "ewma", "params": {"nope": 1}}]}
    with pytest.raises(ConfigError, match="nope"):
        Sensorium(make_settings(data_dir, detect=bad_params), clock=FakeClock(T0 + 3600 * NS), background=False)


def test_forecast_measurements_are_not_scored(data_dir: Path) -> None:
    p = Sensorium(make_settings(data_dir), clock=FakeClock(T0 + 3600 * NS), background=False)
    try:
        lines = [f"climate_forecast,device_id=a temperature={20 + i % 7} {T0 + i * NS}" for i in range(60)]
        lines += [f"climate,device_id=a temperature={20 + i % 7} {T0 + i * NS}" for i in range(60)]
        p.write("\n".join(lines))
        p.process_stream()
        p.stream.checkpoint()  # type: ignore[union-attr]
        got = p.query("SELECT DISTINCT measurement FROM anomaly_scores").column(0).to_pylist()
        assert got == ["climate"]
    finally:
        p.close()


def test_detect_off(data_dir: Path) -> None:
    p = Sensorium(make_settings(data_dir, detect={"enabled": False}), clock=FakeClock(T0 + 3600 * NS), background=False)
    try:
        assert p.stream is not None and p.stream.detect is None
        _write(p, _signal(20, 5))
        assert "anomaly_scores" not in p.stream.derived.names("default")
    finally:
        p.close()


def test_quality_stage_is_on_by_default_and_feeds_the_report(data_dir: Path) -> None:
    p = Sensorium(make_settings(data_dir), clock=FakeClock(T0 + 3600 * NS), background=False)
    try:
        assert p.stream is not None
        assert "quality" in [s.step_id for s in p.stream.pipelines]
        # a stuck sensor: varying values, then the same value for a long run
        rng = np.random.default_rng(3)
        values = np.r_[21 + rng.normal(0, 0.3, 300), np.full(120, 21.5), 21 + rng.normal(0, 0.3, 20)]
        _write(p, values)
        p.stream.checkpoint()
        found = p.quality_findings()
        assert found is not None
        kinds = {(r["device_id"], r["field"], r["check"]) for r in found.to_pylist()}
        assert ("a", "temperature", "stuck") in kinds
        from sensorium.quality.report import quality_report

        rep = quality_report(p.deadletters, findings=found)
        assert rep["findings"]["by_check"]["stuck"]["count"] >= 1
    finally:
        p.close()


def test_bad_quality_params_are_a_configuration_error(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[detect.quality\]"):
        Sensorium(make_settings(data_dir, detect={"quality": {"params": {"nope": 1}}}), clock=FakeClock(T0),
                  background=False)


def test_changed_detector_settings_start_that_detector_fresh(data_dir: Path) -> None:
    p = Sensorium(make_settings(data_dir, detect=DETECT), clock=FakeClock(T0 + 3600 * NS), background=False)
    _write(p, _signal(200, 150))
    p.close()
    changed = {"detectors": [{"measurement": "climate", "field": "temperature", "detector": "default",
                              "params": {"warm": 50, "learn": 100, "avg": 5}}]}
    p = Sensorium(make_settings(data_dir, detect=changed), clock=FakeClock(T0 + 3600 * NS), background=False)
    try:
        assert p.stream is not None and p.stream.detect is not None
        assert p.stream.detect.detectors[0].table["n"].sum() == 0  # fresh, not a mismatched state
        _write(p, _signal(100, 50), start=200)
        assert p.stream.error is None
    finally:
        p.close()


def test_cli_quality_reports_stored_findings_without_the_server(data_dir: Path) -> None:
    import json

    from typer.testing import CliRunner

    from sensorium.cli.main import app

    p = Sensorium(make_settings(data_dir), clock=FakeClock(T0 + 3600 * NS), background=False)
    rng = np.random.default_rng(3)
    _write(p, np.r_[21 + rng.normal(0, 0.3, 300), np.full(120, 21.5), 21 + rng.normal(0, 0.3, 20)])
    p.close()  # final checkpoint: the findings are in the stream's lake
    r = CliRunner().invoke(app, ["quality", "-f", "json", "--data-dir", str(data_dir)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["findings"]["by_check"]["stuck"]["count"] == 1
