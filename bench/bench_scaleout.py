"""Scale-out on NATS JetStream: 1 ingest node + 1, 2, 3 workers, against the embedded WAL path.

Every mode gets the same line-protocol bodies (``--bodies`` × ``--points`` points, 50 devices,
unique timestamps), posted by ``--clients`` concurrent HTTP clients to one node:

* ``wal``: ``sensorium up`` (one process: WAL fsync=always, hot buffer, stream, lake);
* ``nats-N``: ``sensorium ingest`` + N ``sensorium worker`` processes on a fresh JetStream stream
  with ``--partitions`` partitions (default 6), sharing one data dir.

Reported per mode: ``ack_points_s`` = points / (first post → last 204), the ingest rate clients
see; ``stored_points_s`` = points / (first post → everything stored and processed: for ``wal``
the stream caught up and the SQL count complete, for ``nats-N`` every partition's consumer with
nothing pending or unacknowledged, which workers reach only after the store commit and the stream
checkpoint); ``ratio_to_wal`` of both. The stored count is checked by SQL (``lost`` must be 0).

    python bench/bench_scaleout.py --json            # 60 bodies x 5,000 points, all modes
    python bench/bench_scaleout.py --quick --json

On a machine with fewer cores than processes the workers compete with the ingest node, NATS and
the clients for CPU: the curve then shows the cost of coordination rather than added capacity.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, log, machine_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

T0 = 1_767_225_600_000_000_000
NS = 1_000_000_000
DEVICES = 50
NATS_URL = os.environ.get("SENSORIUM_TEST_NATS", "nats://127.0.0.1:4222")


def bodies(n: int, points: int) -> list[bytes]:
    out = []
    per_dev = points // DEVICES
    for b in range(n):
        base = b * per_dev
        out.append("\n".join(
            f"climate,device_id=d{d:03d},room=r{d % 10} temperature={20 + (s % 50) / 10},humidity={40 + d % 30} "
            f"{T0 + (base + s) * NS}"
            for s in range(per_dev) for d in range(DEVICES)
        ).encode())
    return out


def post_all(url: str, data: list[bytes], clients: int) -> float:
    """Post every body (``clients`` threads); returns seconds to the last acknowledgement."""
    nxt = iter(range(len(data)))
    lock = threading.Lock()
    errors: list[str] = []

    def run() -> None:
        with httpx.Client(timeout=120) as c:
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                r = c.post(url + "/api/v2/write", content=data[i])
                if r.status_code != 204:
                    errors.append(f"{r.status_code} {r.text[:200]}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} writes failed: {errors[:3]}")
    return time.perf_counter() - t0


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], logf: Path) -> None:
        with open(logf, "ab") as f:
            self.p = subprocess.Popen([sys.executable, "-m", "sensorium.cli.main", *args],
                                      stdout=f, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(120)
            except subprocess.TimeoutExpired:
                self.p.kill()


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def count(settings: Any) -> int:
    from sensorium.platform import Sensorium

    api = Sensorium(settings, role="api")
    try:
        return int(api.query("SELECT count(*) AS n FROM climate").to_pylist()[0]["n"])
    finally:
        api.close()


def run_wal(tmp: Path, data: list[bytes], clients: int, expect: int) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SENSORIUM_DATA_DIR": str(tmp / "data")}
    env.pop("SENSORIUM_CONFIG", None)
    p = Proc(["up", "--port", str(port)], env, tmp / "up.log")
    try:
        wait_http(url)
        t0 = time.perf_counter()
        t_ack = post_all(url, data, clients)
        while True:
            st = httpx.get(url + "/api/v1/stream", timeout=30).json()
            if st["backlog_rows"] == 0 and st["caught_up"]:
                n = httpx.get(url + "/api/v1/query", params={"sql": "SELECT count(*) FROM climate"},
                              timeout=60).json()["rows"][0][0]
                if n >= expect:
                    break
            time.sleep(0.1)
        t_stored = time.perf_counter() - t0
    finally:
        p.stop()
    return {"mode": "wal", "workers": 0, "ack_s": t_ack, "stored_s": t_stored, "stored_rows": int(n)}


def run_nats(tmp: Path, data: list[bytes], clients: int, expect: int, workers: int, partitions: int) -> dict[str, Any]:
    from sensorium.config import load_settings
    from sensorium.log.nats import JetStreamLog

    stream = f"bench_{uuid.uuid4().hex[:8]}"
    cfg = tmp / "sensorium.toml"
    cfg.write_text(
        f'data_dir = "{tmp / "data"}"\nlog_backend = "nats"\nnats_url = "{NATS_URL}"\n'
        f'nats_stream = "{stream}"\nnats_partitions = {partitions}\n'
        "[cluster]\nheartbeat_s = 0.5\nlease_s = 5\n"
    )
    settings = load_settings(cfg)
    env = {**os.environ, "SENSORIUM_CONFIG": str(cfg)}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = [Proc(["ingest", "--port", str(port), "--node-id", "in1"], env, tmp / "ingest.log")]
    procs += [Proc(["worker", "--node-id", f"w{i}"], env, tmp / f"w{i}.log") for i in range(workers)]
    log_ = JetStreamLog(NATS_URL, stream, partitions=partitions)
    try:
        wait_http(url)
        from sensorium.scale.membership import Membership

        m = Membership(log_, "bench-observer", 5)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            owners = {m.owner(q) for q in range(partitions)}
            if None not in owners and len(owners) == workers:
                break
            time.sleep(0.2)
        else:
            raise RuntimeError("workers did not share the partitions")
        t0 = time.perf_counter()
        t_ack = post_all(url, data, clients)
        while not all(log_.pending(q) == (0, 0) for q in range(partitions)):
            time.sleep(0.05)
        t_stored = time.perf_counter() - t0
        n = count(settings)
    finally:
        for p in procs:
            p.stop()
        try:
            log_.delete_stream()
            log_.call(log_.js.delete_key_value(f"{stream}-cluster"))
        finally:
            log_.close()
    return {"mode": f"nats-{workers}", "workers": workers, "ack_s": t_ack, "stored_s": t_stored, "stored_rows": n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bodies", type=int, default=60)
    ap.add_argument("--points", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--quick", action="store_true", help="20 bodies x 2,000 points")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.bodies, a.points = 20, 2000
    data = bodies(a.bodies, a.points)
    expect = (a.points // DEVICES) * DEVICES * a.bodies
    results = []
    modes: list[tuple[str, int]] = [("wal", 0)] + [("nats", int(w)) for w in a.workers.split(",")]
    for mode, w in modes:
        tmp = Path(tempfile.mkdtemp(prefix="bench-scaleout-"))
        r: dict[str, Any] | None = None
        try:
            log(f"{mode} {w or ''}: {expect:,} points …")
            r = run_wal(tmp, data, a.clients, expect) if mode == "wal" else run_nats(
                tmp, data, a.clients, expect, w, a.partitions)
        finally:
            if os.environ.get("BENCH_KEEP") or (r is not None and r.get("stored_rows", expect) != expect):
                log(f"  kept {tmp}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        r.update(points=expect, ack_points_s=expect / r["ack_s"], stored_points_s=expect / r["stored_s"],
                 lost=expect - r["stored_rows"])
        if r["lost"]:  # never expected: keep the evidence
            log(f"  LOST {r['lost']} points: data dir kept in {tmp}")
        results.append(r)
        log(f"  ack {r['ack_points_s']:,.0f} pts/s · stored {r['stored_points_s']:,.0f} pts/s · lost {r['lost']}")
    wal = results[0]
    for r in results:
        r["ack_ratio_to_wal"] = r["ack_points_s"] / wal["ack_points_s"]
        r["stored_ratio_to_wal"] = r["stored_points_s"] / wal["stored_points_s"]
    out = {"benchmark": "scaleout", "machine": machine_info(), "bodies": a.bodies, "points_per_body": a.points,
           "clients": a.clients, "partitions": a.partitions, "results": results}
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        for r in results:
            print(f"{r['mode']:8} ack {r['ack_points_s']:>10,.0f} pts/s ({r['ack_ratio_to_wal']:.2f}x) · "
                  f"stored {r['stored_points_s']:>10,.0f} pts/s ({r['stored_ratio_to_wal']:.2f}x) · lost {r['lost']}")


if __name__ == "__main__":
    main()
