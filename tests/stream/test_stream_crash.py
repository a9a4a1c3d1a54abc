"""SIGKILL the server mid-stream under load, restart it: rollups equal recomputation from raw
data, each alert fired once, and the webhook receiver sees every idempotency key (once after
de-duplication) and no alert twice under different ids."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import T0, ServerProcess

NS = 1_000_000_000
DEVICES = 8
SECONDS = 3600
PER_REQUEST_S = 20
SPIKE_EVERY_S = 300
SPIKE_LEN_S = 4

RULES = """
[[rules]]
name = "hot"
kind = "threshold"
measurement = "climate"
field = "temperature"
above = { critical = 60 }
deadband = 1.0
"""


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with lock:
                    outer.requests.append((self.headers.get("idempotency-key", ""), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _temperature(dev: int, s: int) -> float:
    phase = (s + dev * 37) % SPIKE_EVERY_S
    return 75.0 if phase < SPIKE_LEN_S else 20.0 + (dev % 3) * 0.5 + (s % 7) * 0.1


def _episodes() -> int:
    n = 0
    for dev in range(DEVICES):
        prev = False
        for s in range(SECONDS):
            hot = _temperature(dev, s) >= 60
            n += hot and not prev
            prev = hot
    return n


def _bodies() -> list[str]:
    out = []
    for start in range(0, SECONDS, PER_REQUEST_S):
        lines = [
            f"climate,device_id=d{dev} temperature={_temperature(dev, s)},humidity={40 + dev} {T0 + s * NS}"
            for s in range(start, start + PER_REQUEST_S)
            for dev in range(DEVICES)
        ]
        out.append("\n".join(lines))
    return out


def _post_all(srv: ServerProcess, bodies: list[str], start: int, acked: list[int], stop_at: int | None) -> int:
    """Post bodies[start:] in order; returns the index of the first one not acknowledged."""
    with httpx.Client(timeout=30) as c:
        for i in range(start, len(bodies)):
            if stop_at is not None and i >= stop_at:
                return i
            try:
                r = c.post(srv.url + "/api/v2/write", content=bodies[i])
            except httpx.HTTPError:
                return i
            assert r.status_code == 204, r.text
            acked.append(i)
    return len(bodies)


def _wait_caught_up(srv: ServerProcess, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        st = httpx.get(srv.url + "/api/v1/stream", timeout=10).json()
        if st["backlog_rows"] == 0 and st["caught_up"] and last is not None and st["offset"] == last["offset"]:
            return st
        last = st
        time.sleep(0.3)
    raise AssertionError(f"stream did not catch up: {last}")


def test_sigkill_mid_stream_rollups_and_alerts_exactly_once(tmp_path: Path) -> None:
    receiver = Receiver()
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    cfg = tmp_path / "sensorium.toml"
    cfg.write_text(
        f"""
[stream]
rules_file = "{rules}"
checkpoint_interval_s = 0.3
lateness_s = 2
rollups = ["1m", "1h"]
[alerts]
flap_window_s = 0
log = false
[[alerts.webhooks]]
url = "{receiver.url}"
backoff_initial_s = 0.05
"""
    )
    env = {"SENSORIUM_CONFIG": str(cfg), "SENSORIUM_PARSE_WORKERS": "0"}
    bodies = _bodies()
    data = tmp_path / "data"
    srv = ServerProcess(data, env=env).start()
    acked: list[int] = []
    result: dict[str, int] = {}

    def writer() -> None:
        result["next"] = _post_all(srv, bodies, 0, acked, None)

    t = threading.Thread(target=writer)
    t.start()
    deadline = time.monotonic() + 60
    while len(acked) < len(bodies) * 2 // 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    srv.kill()  # mid-stream, with requests in flight
    t.join(30)
    assert 0 < result["next"] < len(bodies), "the kill should land mid-stream"
    try:
        srv = ServerProcess(data, env=env).start()
        # resend from the first unacknowledged request (it may or may not have been stored)
        assert _post_all(srv, bodies, result["next"], acked, None) == len(bodies)
        _wait_caught_up(srv)

        # rollups (stored + provisional) equal recomputation from the raw data
        rolled = srv.query(
            "SELECT time, device_id, field, count, sum, min, max FROM climate_1m ORDER BY ALL"
        )["rows"]
        raw = srv.query(
            "SELECT time_bucket(INTERVAL '1 minute', time) AS t, device_id, 'temperature' AS field, "
            "count(temperature), sum(temperature), min(temperature), max(temperature) FROM climate GROUP BY ALL "
            "UNION ALL SELECT time_bucket(INTERVAL '1 minute', time), device_id, 'humidity', count(humidity), "
            "sum(humidity), min(humidity), max(humidity) FROM climate GROUP BY ALL ORDER BY ALL"
        )["rows"]
        assert len(rolled) == len(raw) == DEVICES * 2 * (SECONDS // 60)
        for a, b in zip(rolled, raw, strict=True):
            assert a[:4] == b[:4]
            assert a[4:] == pytest.approx(b[4:])

        # each alert once: one per hot episode, all resolved
        expected = _episodes()
        alerts = httpx.get(srv.url + "/api/v1/alerts", params={"limit": 10_000}, timeout=10).json()["alerts"]
        assert len(alerts) == expected
        assert {a["state"] for a in alerts} == {"resolved"}

        # the receiver: after de-duplication by key, one firing and one resolution per alert
        deadline = time.monotonic() + 30
        while len({k for k, _ in receiver.requests}) < 2 * expected and time.monotonic() < deadline:
            time.sleep(0.1)
        keys = {k for k, _ in receiver.requests}
        assert len(keys) == 2 * expected
        firing_ids = {b["alert_id"] for _, b in receiver.requests if b["state"] == "firing"}
        assert firing_ids == {a["alert_id"] for a in alerts}
    finally:
        srv.stop()
        receiver.close()
