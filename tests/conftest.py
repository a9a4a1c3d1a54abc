"""Shared fixtures: a platform on a temporary data directory, an in-process API client, and a
real server process (for clients that need a socket, and for crash tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from sensorium.config import Settings, load_settings
from sensorium.platform import Sensorium

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns


class FakeClock:
    """An injected clock (ns) that tests move by hand."""

    def __init__(self, start: int = T0 + 3_600_000_000_000) -> None:
        self.now = start

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e9)


def make_settings(data_dir: Path, **kw: Any) -> Settings:
    store = {"flush_rows": 1_000_000, "flush_interval_s": 3600.0, "maintenance_interval_s": 3600.0}
    store.update(kw.pop("store", {}))
    return load_settings(None, data_dir=data_dir, store=store, **kw)


#: the Fernet key that encrypts personal data in every test (docs/security.md); tests of a
#: missing key unset SENSORIUM_PII_KEYS themselves
TEST_PII_KEY = "nkUqg2MOFlY3HwYDyh-w1UmMNMJ0eKzrYmazc7s0bQs="


@pytest.fixture(autouse=True, scope="session")
def _pii_key() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:  # session-wide: module-scoped fixtures need it too
        mp.setenv("SENSORIUM_PII_KEYS", TEST_PII_KEY)
        yield


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def platform(data_dir: Path, clock: FakeClock) -> Iterator[Sensorium]:
    p = Sensorium(make_settings(data_dir), clock=clock, background=False)
    yield p
    p.close()


@pytest.fixture
def client(platform: Sensorium) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app

    with TestClient(create_app(platform), raise_server_exceptions=False) as c:
        yield c


MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


def service_missing(reason: str) -> NoReturn:
    """A real service a test needs is absent: skip with the reason locally, fail under CI (where
    every service must run)."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require_mosquitto() -> None:
    """Skip without Mosquitto on 127.0.0.1:1883 -- but fail under CI, where it must run."""
    try:
        socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=2).close()
    except OSError as exc:
        service_missing(f"Mosquitto (MQTT) not reachable at {MQTT_HOST}:{MQTT_PORT}: {exc}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`sensorium up` in a child process on a free port."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None):
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 60.0) -> ServerProcess:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "sensorium.cli.main", "up", "--data-dir", str(self.data_dir),
               "--port", str(self.port), *self.args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def query(self, sql: str, bucket: str | None = None) -> dict[str, Any]:
        r = httpx.get(self.url + "/api/v1/query", params={"sql": sql, **({"bucket": bucket} if bucket else {})}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "srv-data").start()
    yield srv
    srv.stop()
