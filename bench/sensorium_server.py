"""Sensorium as a benchmark subject: ``sensorium up`` in a subprocess on a fresh data dir.

    with SensoriumServer() as s:             # temp data dir, free port, waits for GET /health == 200
        s.write(b"cpu,host=a v=1 1\\n")        # POST /write?db=bench&precision=ns -> (status, body)
        s.query("SELECT count(*) FROM cpu")   # GET /api/v1/query -> {"columns", "rows"}
        s.storage()                           # GET /api/v1/storage
    # stopped with SIGINT (the server flushes its hot buffer to the lake), then SIGKILL
    s.compact()                               # after stop: compact + vacuum, returns storage stats

The server runs with the working directory set to the temp dir (so no stray ./sensorium.toml is
picked up) and inherits ``SENSORIUM_*`` variables; ``fsync`` overrides ``SENSORIUM_WAL__FSYNC``
(default ``always``, the server's own default). Output goes to ``<tmp>/server.log``.

Run ``python bench/sensorium_server.py`` for a self-test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, ManagedServer, dir_blocks_bytes, dir_bytes, free_port, http_request  # noqa: E402

COMPACT_SCRIPT = r"""
import json, sys
from sensorium.config import load_settings
from sensorium.platform import Sensorium
with Sensorium(load_settings(None, data_dir=sys.argv[1]), background=False) as p:
    n = p.maintain(vacuum_hours=0, min_files=2)
    st = p.storage_stats()
st["partitions_compacted"] = n
print("@@STATS@@" + json.dumps(st, default=str))
"""


class SensoriumError(RuntimeError):
    pass


def _child_env(fsync: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if fsync:
        env["SENSORIUM_WAL__FSYNC"] = fsync
    env.setdefault("COLUMNS", "200")
    env["TERM"] = "dumb"
    env["PYTHONUNBUFFERED"] = "1"
    env["NO_COLOR"] = "1"
    env.update(extra or {})
    return env


class SensoriumServer(ManagedServer):
    """A private Sensorium server process. Use as a context manager."""

    name = "sensorium"
    label = "sensorium"
    log_name = "server.log"
    error_cls = SensoriumError

    def __init__(
        self,
        bucket: str = "bench",
        *,
        data_dir: str | Path | None = None,
        base_dir: str | Path | None = None,
        keep: bool = False,
        fsync: str | None = None,
        env: dict[str, str] | None = None,
        start_timeout: float = 90.0,
        python: str = sys.executable,
        stop_signal: int = signal.SIGINT,
    ) -> None:
        super().__init__(base_dir=base_dir, keep=keep, start_timeout=start_timeout)
        self.bucket = bucket
        self.fsync = fsync
        self.extra_env = env
        self.python = python
        self.stop_signal = stop_signal
        self.data_dir: Path | None = Path(data_dir) if data_dir else None
        self.last_exit: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or restart, on the same data dir) the server and wait for /health."""
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="sensorium-bench-", dir=self.base_dir))
        if self.data_dir is None:
            self.data_dir = self.root / "data"
        self.port = free_port()
        cmd = [self.python, "-m", "sensorium.cli.main", "up", "--data-dir", str(self.data_dir), "--port", str(self.port)]
        self._spawn(cmd, _child_env(self.fsync, self.extra_env), "ab")  # append: a restart keeps the log
        self._wait_ready("/health", (200,))

    def stopped_cleanly(self) -> bool:
        """The server printed its clean-shutdown line (hot buffer flushed) and exited 0 (or 130,
        the CLI's code for an interrupt)."""
        return self.last_exit in (0, 130) and "stopped cleanly" in self.log_tail(20000)

    def stop(self, timeout: float = 300.0) -> int | None:
        """``stop_signal`` (uvicorn exits, the platform flushes hot data to the lake), then SIGKILL.

        The default is SIGINT (Ctrl-C), not SIGTERM: uvicorn >= 0.29 re-raises a captured SIGTERM
        after its own shutdown, which kills ``sensorium up`` before its ``finally: platform.close()``
        flushes (exit -15, data left in the WAL for replay); a re-raised SIGINT becomes
        KeyboardInterrupt, so the flush runs. Pass ``stop_signal=signal.SIGTERM`` to check that."""
        if self.proc is None:
            return None
        self.last_exit = super().stop(timeout)
        return self.last_exit

    # -- API -----------------------------------------------------------------------------------
    @property
    def write_path(self) -> str:
        return f"/write?db={self.bucket}&precision=ns"

    def write(self, lines: bytes | str, precision: str = "ns", v2: bool = False) -> tuple[int, bytes]:
        body = lines.encode() if isinstance(lines, str) else lines
        if v2:
            return http_request(self.port, "POST", "/api/v2/write", params={"bucket": self.bucket, "precision": precision}, body=body)
        return http_request(self.port, "POST", "/write", params={"db": self.bucket, "precision": precision}, body=body)

    def query(self, sql: str, raise_errors: bool = True) -> dict[str, Any]:
        """SQL over the bucket; returns ``{"columns": [...], "rows": [[...]]}``."""
        st, body = http_request(self.port, "GET", "/api/v1/query", params={"sql": sql, "bucket": self.bucket})
        try:
            data = json.loads(body) if body else {}
        except ValueError:
            data = {"message": body[:300].decode("utf-8", "replace")}
        if st != 200:
            if raise_errors:
                raise SensoriumError(f"query failed ({st}): {data.get('message', data)}: {sql}")
            data.setdefault("status", st)
        return data

    def count_points(self, measurements: list[str]) -> int:
        total = 0
        for m in measurements:
            total += int(self.query(f'SELECT count(*) FROM "{m}"')["rows"][0][0])
        return total

    def storage(self) -> dict[str, Any]:
        st, body = http_request(self.port, "GET", "/api/v1/storage")
        if st != 200:
            raise SensoriumError(f"/api/v1/storage answered {st}: {body[:300]!r}")
        return json.loads(body)

    # -- offline maintenance ---------------------------------------------------------------------
    def compact(self, timeout: float = 1800.0) -> dict[str, Any]:
        """After :meth:`stop`: compact + vacuum the lake, return its storage stats (``bytes``,
        ``values``, ``bytes_per_value`` ...) plus the data dir's total size on disk.

        Uses the Python API in a child process; falls back to ``sensorium storage --compact``
        and parses its summary line."""
        if self.proc is not None:
            raise SensoriumError("stop the server before compacting (the data dir is locked)")
        assert self.data_dir is not None
        env = _child_env(self.fsync, self.extra_env)
        t0 = time.perf_counter()
        try:
            r = subprocess.run([self.python, "-c", COMPACT_SCRIPT, str(self.data_dir)], capture_output=True,
                               text=True, env=env, cwd=self.root, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise SensoriumError(f"compaction did not finish in {timeout:.0f}s (killed): "
                                 f"{(exc.stderr or b'')[-500:]!r}") from None
        out: dict[str, Any] | None = None
        m = re.search(r"@@STATS@@(.*)", r.stdout)
        if r.returncode == 0 and m:
            out = json.loads(m.group(1))
            out["method"] = "python-api"
        else:
            api_err = (r.stderr or r.stdout)[-800:]
            try:
                r2 = subprocess.run(
                    [self.python, "-m", "sensorium.cli.main", "storage", "--compact", "--data-dir", str(self.data_dir)],
                    capture_output=True, text=True, env=env, cwd=self.root, timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise SensoriumError(f"compaction (CLI) did not finish in {timeout:.0f}s; API: {api_err}") from None
            m2 = re.search(r"total ([\d,]+) bytes for ([\d,]+) values = ([\d.]+|None) B/value", r2.stdout.replace("\n", " "))
            if r2.returncode != 0 or not m2:
                raise SensoriumError(f"compaction failed:\nAPI: {api_err}\nCLI: {(r2.stderr or r2.stdout)[-800:]}")
            b, v = int(m2.group(1).replace(",", "")), int(m2.group(2).replace(",", ""))
            out = {"bytes": b, "values": v, "bytes_per_value": round(b / v, 3) if v else None, "method": "cli"}
        out["compact_s"] = round(time.perf_counter() - t0, 2)
        out["data_dir_bytes"] = dir_bytes(self.data_dir)
        out["data_dir_du_bytes"] = dir_blocks_bytes(self.data_dir)
        out["lake_dir_bytes"] = dir_bytes(self.data_dir / "lake") if (self.data_dir / "lake").exists() else None
        return out


def _selftest() -> None:
    from _common import emit

    t0 = 1_767_225_600_000_000_000
    lines = [
        f"climate,device_id=dev-{i % 50:05d},location=home-{i % 7},room=kitchen,sensor_type=climate "
        f"temperature={20 + (i % 100) / 10:.2f},humidity=45.1,pressure=1013.2,battery=0.871,rssi=-67i {t0 + i * 10**9}"
        for i in range(5000)
    ]
    body = ("\n".join(lines) + "\n").encode()
    srv = SensoriumServer()
    t = time.perf_counter()
    with srv:
        started = time.perf_counter() - t
        st, msg = srv.write(body)
        if st != 204:
            raise SensoriumError(f"write answered {st}: {msg[:500]!r}")
        n = srv.count_points(["climate"])
        last = srv.query("SELECT device_id, arg_max(temperature, time) FROM climate GROUP BY device_id")
        storage = srv.storage()
        srv.stop()
        clean = srv.stopped_cleanly()
        try:
            comp: dict[str, Any] = srv.compact(timeout=120)
        except SensoriumError as exc:
            comp = {"error": str(exc)[:500]}
        emit({"bench": "sensorium_selftest", "system": srv.name, "start_s": round(started, 2), "write_status": st,
              "points": n, "last_rows": len(last["rows"]), "storage_live": storage, "compacted": comp,
              "exit_code": srv.last_exit, "stopped_cleanly": clean,
              "log_tail": None if clean else srv.log_tail(1500)})
    assert n == 5000, n
    assert len(last["rows"]) == 50
    print("ok", file=sys.stderr)


if __name__ == "__main__":
    _selftest()
