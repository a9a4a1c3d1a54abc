"""Scale-out on the real NATS JetStream: 1 ingest node and 3 worker processes; one worker is
SIGKILLed during a sustained load. Every acknowledged point is stored exactly once, every alert
fires once (and its webhook keys arrive, once after de-duplication), and the dead worker's
partitions move to the survivors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import T0, free_port
from tests.log.test_log_contract import NATS_URL, require_nats
from tests.stream.test_stream_crash import Receiver

NS = 1_000_000_000
DEVICES = 24
SECONDS = 600
PER_REQUEST_S = 5
PARTITIONS = 6
SPIKE_EVERY_S = 150
SPIKE_LEN_S = 3

RULES = """
[[rules]]
name = "hot"
kind = "threshold"
measurement = "climate"
field = "temperature"
above = { critical = 60 }
deadband = 1.0
"""


def _temperature(dev: int, s: int) -> float:
    phase = (s + dev * 37) % SPIKE_EVERY_S
    return 75.0 if phase < SPIKE_LEN_S else 20.0 + (dev % 3) * 0.5 + (s % 7) * 0.1


def _episodes() -> set[tuple[str, int]]:
    """(device, first second) of every hot episode."""
    out = set()
    for dev in range(DEVICES):
        prev = False
        for s in range(SECONDS):
            hot = _temperature(dev, s) >= 60
            if hot and not prev:
                out.add((f"d{dev:02d}", s))
            prev = hot
    return out


def _bodies() -> list[str]:
    return [
        "\n".join(
            f"climate,device_id=d{dev:02d} temperature={_temperature(dev, s)},humidity={40 + dev} {T0 + s * NS}"
            for s in range(start, start + PER_REQUEST_S)
            for dev in range(DEVICES)
        )
        for start in range(0, SECONDS, PER_REQUEST_S)
    ]


class Proc:
    def __init__(self, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        with open(log, "ab") as f:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "sensorium.cli.main", *args], stdout=f, stderr=subprocess.STDOUT, env=env
            )

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, timeout: float = 60) -> int:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        return int(self.p.returncode)

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)
        self.p.wait(10)


@pytest.fixture
def stream_name() -> Iterator[str]:
    require_nats()
    from sensorium.log.nats import JetStreamLog

    name = f"so_{uuid.uuid4().hex[:8]}"
    yield name
    log = JetStreamLog(NATS_URL, name, partitions=PARTITIONS)
    try:
        for fn in (log.delete_stream, lambda: log.call(log.js.delete_key_value(f"{name}-cluster"))):
            try:
                fn()
            except Exception:  # cleanup only
                pass
    finally:
        log.close()


def _owners(settings: Any) -> dict[int, str | None]:
    from sensorium.log.nats import JetStreamLog
    from sensorium.scale.membership import Membership

    log = JetStreamLog(NATS_URL, settings.nats_stream, partitions=PARTITIONS)
    try:
        m = Membership(log, "observer", settings.cluster.lease_s)
        return {p: m.owner(p) for p in range(PARTITIONS)}
    finally:
        log.close()


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def test_sigkill_one_of_three_workers_under_load_stores_every_acked_point_once(
    tmp_path: Path, stream_name: str
) -> None:
    from sensorium.config import load_settings
    from sensorium.log.nats import JetStreamLog
    from sensorium.platform import Sensorium
    from sensorium.rules.alerts import AlertStore

    receiver = Receiver()
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    cfg = tmp_path / "sensorium.toml"
    data = tmp_path / "data"
    cfg.write_text(
        f"""
data_dir = "{data}"
log_backend = "nats"
nats_url = "{NATS_URL}"
nats_stream = "{stream_name}"
nats_partitions = {PARTITIONS}
parse_workers = 0
[cluster]
lease_s = 3.0
heartbeat_s = 0.5
flush_interval_s = 0.3
[stream]
rules_file = "{rules}"
checkpoint_interval_s = 0.5
lateness_s = 2
rollups = ["1m"]
[alerts]
flap_window_s = 0
log = false
[[alerts.webhooks]]
url = "{receiver.url}"
backoff_initial_s = 0.05
"""
    )
    env = {**os.environ, "SENSORIUM_CONFIG": str(cfg)}
    settings = load_settings(cfg)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ingest = Proc(["ingest", "--port", str(port), "--node-id", "in1"], tmp_path / "ingest.log", env)
    workers = {n: Proc(["worker", "--node-id", n], tmp_path / f"{n}.log", env) for n in ("w1", "w2", "w3")}
    procs = [ingest, *workers.values()]
    try:
        def ingest_up() -> bool:
            assert ingest.alive(), ingest.log.read_text()[-3000:]
            try:
                return httpx.get(url + "/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(ingest_up, 60, "the ingest node")
        # every partition owned, spread over the three workers
        def spread() -> dict[int, str | None] | None:
            o = _owners(settings)
            return o if all(o.values()) and len(set(o.values())) == 3 else None

        owners = _wait(spread, 60, "three workers sharing the partitions")
        victim_parts = {p for p, o in owners.items() if o == "w2"}
        assert victim_parts

        bodies = _bodies()
        acked: list[int] = []
        failed: list[tuple[int, int, str]] = []

        def writer() -> None:
            with httpx.Client(timeout=30) as c:
                for i, body in enumerate(bodies):
                    r = c.post(url + "/api/v2/write", content=body)
                    if r.status_code == 204:
                        acked.append(i)
                    else:
                        failed.append((i, r.status_code, r.text))
                    time.sleep(0.03)  # a sustained load, spanning the kill and the take-over

        t = threading.Thread(target=writer)
        t.start()
        _wait(lambda: len(acked) >= len(bodies) * 2 // 5, 60, "40% of the load")
        workers["w2"].kill()
        t.join(120)
        assert not failed, failed[:3]
        assert len(acked) == len(bodies)  # the ingest node did not depend on the dead worker

        # the survivors take every partition over and finish the log
        log = JetStreamLog(NATS_URL, stream_name, partitions=PARTITIONS)
        try:
            _wait(
                lambda: all(o in ("w1", "w3") for o in _owners(settings).values())
                and all(log.pending(p) == (0, 0) for p in range(PARTITIONS)),
                90,
                "the survivors to own, store and acknowledge every partition",
            )
        finally:
            log.close()
        assert workers["w1"].alive() and workers["w3"].alive()

        api = Sensorium(settings, role="api")
        try:
            n, distinct = api.query(
                "SELECT count(*), count(DISTINCT (device_id, time)) FROM climate"
            ).to_pylist()[0].values()
            assert (n, distinct) == (DEVICES * SECONDS, DEVICES * SECONDS)
            # closed 1-minute rollups (every minute but the last, still open) equal recomputation
            end = T0 + (SECONDS - 60) * NS
            rolled = api.query(
                "SELECT time, device_id, count, sum FROM climate_1m WHERE field = 'temperature' "
                f"AND time < make_timestamp({end // 1000}) ORDER BY ALL"
            ).to_pylist()
            raw = api.query(
                "SELECT time_bucket(INTERVAL '1 minute', time) AS t, device_id, count(*), sum(temperature) "
                f"FROM climate WHERE time < make_timestamp({end // 1000}) GROUP BY ALL ORDER BY ALL"
            ).to_pylist()
            assert len(rolled) == len(raw) == DEVICES * (SECONDS // 60 - 1)
            for a, b in zip(rolled, raw, strict=True):
                assert list(a.values())[:3] == list(b.values())[:3]
                assert list(a.values())[3] == pytest.approx(list(b.values())[3])
        finally:
            api.close()

        # each alert fired once: one per hot episode, all resolved
        expected = _episodes()
        store = AlertStore(data / "alerts.sqlite", clock=time.time_ns)
        try:
            alerts = store.list(limit=10_000)
        finally:
            store.close()
        assert len(alerts) == len(expected)
        assert {a["state"] for a in alerts} == {"resolved"}
        # webhooks: after de-duplication by key, one firing and one resolution per alert
        _wait(lambda: len({k for k, _ in receiver.requests}) >= 2 * len(expected), 60, "webhook deliveries")
        keys = {k for k, _ in receiver.requests}
        assert len(keys) == 2 * len(expected)
        assert {b["alert_id"] for _, b in receiver.requests if b["state"] == "firing"} == {
            a["alert_id"] for a in alerts
        }
    finally:
        codes = {p.log.name: p.stop() for p in procs if p.alive()}
        receiver.close()
    # a graceful stop hands partitions over and exits cleanly
    assert all(c == 0 for c in codes.values()), (codes, {p.log.name: p.log.read_text()[-2000:] for p in procs})
