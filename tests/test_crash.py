"""SIGKILL during a sustained write load loses no acknowledged point and duplicates none."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from tests.conftest import T0, ServerProcess


def test_sigkill_under_load_keeps_every_acknowledged_point_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # flush often so the kill lands across WAL, hot buffer and lake commits
    env = {"SENSORIUM_STORE__FLUSH_ROWS": "3000", "SENSORIUM_STORE__FLUSH_INTERVAL_S": "0.3"}
    srv = ServerProcess(data, env=env).start()
    acked: list[list[int]] = [[] for _ in range(4)]
    stop = threading.Event()

    def writer(w: int) -> None:
        seq = 0
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                ids = list(range(w * 10_000_000 + seq, w * 10_000_000 + seq + 500))
                body = "\n".join(
                    f"load,writer=w{w},device_id=d{i % 50} v={i}i,x={i * 0.5} {T0 + i * 1000}" for i in ids
                )
                try:
                    r = c.post(srv.url + "/api/v2/write", params={"bucket": "crash"}, content=body)
                except httpx.HTTPError:
                    return  # server died mid-request: not acknowledged
                if r.status_code == 204:
                    acked[w].extend(ids)
                seq += 500

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(4.0)
    srv.kill()  # SIGKILL, mid-load
    stop.set()
    for t in threads:
        t.join()
    total = sum(len(a) for a in acked)
    assert total > 5_000, "the load did not get going"

    srv2 = ServerProcess(data, env=env).start()
    try:
        res = srv2.query("SELECT count(*) AS n, count(DISTINCT v) AS d FROM load", bucket="crash")
        n, d = res["rows"][0]
        ids = {v for a in acked for v in a}
        got = srv2.query("SELECT v FROM load", bucket="crash")
        stored = [r[0] for r in got["rows"]]
        assert len(stored) == len(set(stored)), "a replay duplicated points"
        missing = ids - set(stored)
        assert not missing, f"{len(missing)} acknowledged points lost"
        assert n == d
    finally:
        srv2.stop()


def test_sigterm_flushes_to_the_lake_and_empties_the_log(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = ServerProcess(data).start()
    body = "\n".join(f"m,device_id=d{i % 5} v={i}i {T0 + i}" for i in range(1000))
    assert httpx.post(srv.url + "/api/v2/write", content=body).status_code == 204
    srv.stop()  # SIGTERM
    assert srv.proc is not None and srv.proc.returncode == 0, srv.log.read_text()[-2000:]
    wal = list((data / "wal").glob("*.wal"))
    assert len(wal) == 1 and wal[0].stat().st_size == 0  # everything is in the lake
    from sensorium.config import load_settings
    from sensorium.platform import Sensorium

    with Sensorium(load_settings(None, data_dir=data), read_only=True, background=False) as p:
        assert p.hot.rows() == 0
        assert p.query("SELECT count(*), sum(v) FROM m").to_pylist()[0] == {
            "count_star()": 1000, "sum(v)": sum(range(1000))
        }


def test_sigint_stops_promptly_with_a_live_alert_stream_open(tmp_path: Path) -> None:
    """A dashboard keeps ``/api/v1/alerts/stream`` open forever: Ctrl-C still stops the server
    within the shutdown grace (plus the final flush), and cleanly."""
    import signal

    from sensorium.cli.common import SHUTDOWN_GRACE_S

    srv = ServerProcess(tmp_path / "data").start()
    opened = threading.Event()

    def listen() -> None:
        try:
            with httpx.stream("GET", srv.url + "/api/v1/alerts/stream", timeout=60) as r:
                for _ in r.iter_lines():
                    opened.set()
        except httpx.HTTPError:
            pass  # the server closed it

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert opened.wait(10), "the alert stream did not open"
    assert srv.proc is not None
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGINT)
    code = srv.proc.wait(30)
    took = time.monotonic() - t0
    # 0, or the conventional 130 of a Ctrl-C (uvicorn re-raises the signal after its shutdown)
    assert code in (0, 130, -signal.SIGINT), (code, srv.log.read_text()[-2000:])
    assert "stopped cleanly" in srv.log.read_text() and "Traceback" not in srv.log.read_text()
    assert took < SHUTDOWN_GRACE_S + 8, f"took {took:.1f} s to stop"
