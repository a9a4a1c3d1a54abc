"""`sensorium up --simulate` runs the built-in rules: the simulator's injected faults show up in
GET /api/v1/alerts within a minute, rollups fill in, and anomaly scores show the faults."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import ServerProcess


def test_up_simulate_raises_alerts_within_a_minute(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", args=["--simulate", "--devices", "20"]).start()
    try:
        deadline = time.monotonic() + 60
        alerts: list[dict] = []
        while time.monotonic() < deadline and not alerts:
            time.sleep(1.0)
            r = httpx.get(srv.url + "/api/v1/alerts", timeout=10)
            assert r.status_code == 200, r.text
            alerts = r.json()["alerts"]
        assert alerts, f"no alert within a minute; server log:\n{srv.log.read_text()[-2000:]}"
        a = alerts[0]
        assert a["rule"] and a["series"] and a["message"] and a["state"] in ("firing", "resolved")
        # the 1-minute rollup answers for the simulated fleet (provisional windows included)
        rows = srv.query("SELECT count(*) AS n FROM climate_1m")["rows"]
        assert rows[0][0] > 0
        # anomaly scores for every watched point; the injected faults score high
        deadline = time.monotonic() + 45
        high = 0
        while time.monotonic() < deadline and not high:
            time.sleep(2.0)
            n, high = srv.query("SELECT count(*), count(*) FILTER (WHERE score >= 0.6) FROM anomaly_scores")["rows"][0]
            assert n > 0
        assert high > 0, "no anomaly score >= 0.6 from the simulator's faults"
        srv.query('SELECT "check", count(*) FROM quality_findings GROUP BY ALL')  # the table exists
    finally:
        srv.stop()
