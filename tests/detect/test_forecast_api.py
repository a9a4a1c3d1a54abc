"""Forecasting through the platform: POST /api/v1/forecast, storing forecasts, comparing them with
actuals, and `sensorium forecast` — bad input is a 4xx / a non-zero exit, never a 500."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sensorium.detect.forecast import compare_forecast, forecast_meta, forecast_series
from sensorium.errors import BadRequest, NotFound
from sensorium.platform import Sensorium
from tests.conftest import T0, FakeClock

Q = 15 * 60 * 10**9
DAYS = 7


def lines(start: int, n: int, *, seed: int = 1, spike_at: int | None = None) -> str:
    """Two climate devices, one reading per 15 minutes from ``start``, daily cycle + noise."""
    rng = np.random.default_rng(seed)
    k = (start - T0) // Q + np.arange(n)  # the phase follows the wall clock
    t = start + np.arange(n) * Q
    out = []
    for dev, base in (("d1", 20.0), ("d2", 15.0)):
        y = base + 2.0 * np.sin(2 * np.pi * k / 96) + rng.normal(0.0, 0.2, n)
        if spike_at is not None:
            y[spike_at] += 8.0
        out += [f"climate,device_id={dev},room=kitchen temperature={v:.3f},rssi=-60i {ts}" for v, ts in zip(y, t, strict=True)]
    return "\n".join(out)


@pytest.fixture
def loaded(client: Any) -> Any:
    r = client.post("/api/v2/write", content=lines(T0 - DAYS * 96 * Q, DAYS * 96))
    assert r.status_code == 204, r.text
    return client


def post(client: Any, **body: Any) -> Any:
    return client.post("/api/v1/forecast", json={"measurement": "climate", "field": "temperature", **body})


def test_forecast_a_stored_series(loaded: Any) -> None:
    r = post(loaded, tags={"device_id": "d1"}, horizon="1d")
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["columns"] == ["time", "forecast", "lower", "upper"] and len(d["rows"]) == 96
    assert d["model"] == "ets" and d["season_length"] == 96 and d["every"] == "15m" and d["level"] == 0.95
    assert d["rows"][0][0] == "2026-01-01T00:00:00Z"  # the slot after the last reading
    assert d["history"]["end"] == "2025-12-31T23:45:00Z" and d["history_points"] == DAYS * 96
    fc = np.array([row[1] for row in d["rows"]])
    truth = 20.0 + 2.0 * np.sin(2 * np.pi * np.arange(96) / 96)
    assert np.mean(np.abs(fc - truth)) < 0.3
    assert all(lo <= f <= hi for _, f, lo, hi in d["rows"])
    r = post(loaded, tags={"device_id": "d2"}, horizon=8, model="naive", history="3d", every="30m")
    assert r.status_code == 200, r.text
    assert r.json()["season_length"] == 48 and len(r.json()["rows"]) == 8


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "arima"}, 400, "model: Input should be 'ets', 'naive' or 'prophet'"),
        ({"horizon": 0}, 400, "horizon must be between 1 and 10000 steps of 15m; got 0"),
        ({"horizon": 10_001}, 400, "horizon must be between 1 and 10000"),
        ({"horizon": "soon"}, 400, "bad horizon 'soon'"),
        ({"history": "1h"}, 400, "too little history: 4 points of 15m"),
        ({"field": "humidity"}, 404, "measurement 'climate' has no field 'humidity' (numeric fields: rssi, temperature)"),
        ({"field": "room"}, 400, "'room' in 'climate' is a tag, not a numeric field"),
        ({"measurement": "nope"}, 404, "no measurement 'nope'"),
        ({"tags": {"floor": "1"}}, 400, "'floor' is not a tag of 'climate'"),
        ({"tags": {"device_id": "d9"}}, 404, "no values of climate.temperature (device_id=d9)"),
        ({"level": 1.5}, 400, "level: Input should be less than 1"),
        ({"store": True, "colour": "red"}, 400, "colour: Extra inputs are not permitted"),
        ({"start": "2025-12-31T00:00:00Z", "history": "3d"}, 400, "give start or history, not both"),
        ({"start": "yesterday"}, 400, "bad time 'yesterday'"),
    ],
)
def test_bad_requests_are_4xx_with_precise_messages(loaded: Any, body: dict[str, Any], status: int, message: str) -> None:
    r = post(loaded, **body)
    assert r.status_code == status, r.text
    assert message in r.json()["message"]


def test_body_must_be_a_json_object(loaded: Any) -> None:
    for raw in (b"not json", b"[1, 2]", b""):
        r = loaded.post("/api/v1/forecast", content=raw)
        assert r.status_code == 400 and "body must be" in r.json()["message"]
    r = loaded.post("/api/v1/forecast", json={"measurement": "climate"})
    assert r.status_code == 400 and r.json()["message"] == "field: Field required"


def test_stored_forecast_is_a_measurement_and_scores_actuals(
    loaded: Any, platform: Sensorium, clock: FakeClock
) -> None:
    r = post(loaded, tags={"device_id": "d1"}, horizon="1d", store=True)
    assert r.status_code == 200, r.text
    assert r.json()["stored"] == 96 and r.json()["stored_as"] == "climate_forecast"
    q = loaded.get("/api/v1/query", params={"sql": "SELECT model, device_id, count(*) AS n, min(time) AS t0 "
                                                   "FROM climate_forecast GROUP BY ALL"})
    assert q.json()["rows"] == [["ets", "d1", 96, "2026-01-01T00:00:00Z"]]
    # the next day happens, with a spike at 06:00
    clock.advance(86400)
    assert loaded.post("/api/v2/write", content=lines(T0, 96, seed=2, spike_at=24)).status_code == 204
    cmp = compare_forecast(platform, "climate", "temperature", tags={"device_id": "d1"}, model="ets")
    assert cmp.num_rows == 96 and cmp.column_names[:4] == ["time", "actual", "forecast", "lower"]
    score = cmp["score"].to_numpy()
    assert int(np.argmax(score)) == 24 and score[24] > 0.999
    assert np.median(score) < 0.8 and np.all((score >= 0) & (score <= 1))
    # the same over HTTP
    r = loaded.get("/api/v1/forecast/compare", params={"measurement": "climate", "field": "temperature",
                                                       "tag": "device_id=d1", "model": "ets"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["rows"]) == 96 and body["columns"][:2] == ["time", "actual"]
    i = body["columns"].index("score")
    assert max(range(96), key=lambda k: body["rows"][k][i]) == 24
    assert loaded.get("/api/v1/forecast/compare", params={"measurement": "climate", "field": "temperature",
                                                          "tag": "device_id"}).status_code == 400
    assert loaded.get("/api/v1/forecast/compare", params={"measurement": "nope", "field": "x"}).status_code == 404


def test_forecast_series_in_process(platform: Sensorium) -> None:
    platform.write(lines(T0 - DAYS * 96 * Q, DAYS * 96))
    t = forecast_series(platform, "climate", "temperature", device_id="d2", horizon=12, model="naive")
    meta = forecast_meta(t)
    assert t.num_rows == 12 and meta["model"] == "naive" and meta["tags"] == {"device_id": "d2"}
    assert t.schema.field("time").type.tz == "UTC"
    with pytest.raises(NotFound, match="no stored forecast"):
        compare_forecast(platform, "climate", "temperature")
    with pytest.raises(BadRequest, match="unknown model"):
        forecast_series(platform, "climate", "temperature", model="lstm")


def test_cli_forecast_and_its_exit_codes(
    platform: Sensorium, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sensorium.cli.main import main

    platform.write(lines(T0 - 3 * 96 * Q, 3 * 96))

    def cli(*args: str) -> int:
        monkeypatch.setattr(sys, "argv", ["sensorium", "forecast", *args, "--data-dir", str(data_dir)])
        with pytest.raises(SystemExit) as exc:
            main()
        return int(exc.value.code or 0)

    assert cli("climate", "temperature", "--device-id", "d1", "--horizon", "6", "--format", "json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "ets" and out["season_length"] == 96 and len(out["forecast"]) == 6
    assert cli("climate", "temperature", "--tag", "device_id=d1", "--horizon", "2h", "--model", "naive") == 0
    assert "forecast" in capsys.readouterr().out
    assert cli("climate", "temperature", "--model", "lstm") == 2
    assert "unknown model 'lstm'" in capsys.readouterr().err
    assert cli("climate", "pressure") == 2
    assert "has no field 'pressure'" in capsys.readouterr().err
    assert cli("climate", "temperature", "--tag", "device_id") == 2
    assert "--tag takes key=value" in capsys.readouterr().err
