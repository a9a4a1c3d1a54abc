"""InfluxDB 1.6 as a benchmark opponent: a throw-away ``influxd`` on spare ports.

    with InfluxDB() as db:                  # temp dir, free ports, waits for /ping, CREATE DATABASE
        db.write(b"cpu,host=a v=1 1\\n")      # POST /write?db=bench&precision=ns -> (status, body)
        db.query("SELECT count(v) FROM cpu")  # GET /query -> parsed JSON
        db.disk_bytes()                       # waits for full compaction, then tsm + wal bytes
    # stopped with SIGTERM (then SIGKILL), temp dir removed (keep=True keeps it)

The config is written to the temp dir: HTTP on 127.0.0.1:<free>, the RPC (backup) service on
127.0.0.1:<free>, reporting, UDP/Graphite/OpenTSDB/collectd, the internal monitor database,
continuous queries and the HTTP access log off. ``wal-fsync-delay = "0s"`` (InfluxDB's default)
fsyncs the WAL before every write is acknowledged — the same durability as Sensorium's
``wal.fsync=always``. Cold durations are short, so the cache is snapshotted to TSM and the shard
fully compacted a few seconds after writes stop (``disk_bytes`` waits for that).

Run ``python bench/influx.py`` for a self-test (start, write, query, disk size, stop).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import HOST, ManagedServer, dir_blocks_bytes, dir_bytes, free_port, http_request  # noqa: E402

INFLUXD = os.environ.get("INFLUXD", "/usr/bin/influxd")

CONFIG = """\
reporting-enabled = false
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{root}/meta"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  index-version = "{index}"
  wal-fsync-delay = "{fsync_delay}"
  query-log-enabled = false
  cache-max-memory-size = {cache_max}
  cache-snapshot-memory-size = 26214400
  cache-snapshot-write-cold-duration = "{cold_snapshot}"
  compact-full-write-cold-duration = "{cold_full}"
  max-series-per-database = 0
  max-values-per-tag = 0

[coordinator]
  write-timeout = "60s"

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{host}:{http_port}"
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  pprof-enabled = false
  max-body-size = 0
  max-row-limit = 0

[ifql]
  enabled = false
  bind-address = "{host}:{ifql_port}"

[logging]
  level = "warn"
  suppress-logo = true

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false

[continuous_queries]
  enabled = false
"""


class InfluxError(RuntimeError):
    pass


class InfluxDB(ManagedServer):
    """A private ``influxd`` process. Use as a context manager."""

    name = "influxdb-1.6"
    label = "influxd"
    log_name = "influxd.log"
    error_cls = InfluxError

    def __init__(
        self,
        db: str = "bench",
        *,
        base_dir: str | Path | None = None,
        keep: bool = False,
        index: str = "inmem",
        fsync_delay: str = "0s",
        cold_snapshot: str = "2s",
        cold_full: str = "5s",
        start_timeout: float = 60.0,
    ) -> None:
        super().__init__(base_dir=base_dir, keep=keep, start_timeout=start_timeout)
        self.db = db
        self.index = index
        self.fsync_delay = fsync_delay
        self.cold_snapshot = cold_snapshot
        self.cold_full = cold_full

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def version(self) -> str:
        try:
            out = subprocess.run([INFLUXD, "version"], capture_output=True, text=True, timeout=10).stdout
            return out.strip()
        except OSError:
            return "unknown"

    def start(self) -> None:
        if not os.access(INFLUXD, os.X_OK):
            raise InfluxError(f"{INFLUXD} not found (apt-get install influxdb, or set INFLUXD)")
        self.root = Path(tempfile.mkdtemp(prefix="influx-bench-", dir=self.base_dir))
        for d in ("meta", "data", "wal"):
            (self.root / d).mkdir()
        self.port = free_port()
        cfg = self.root / "influxdb.conf"
        cfg.write_text(
            CONFIG.format(
                host=HOST,
                root=self.root,
                rpc_port=free_port(),
                http_port=self.port,
                ifql_port=free_port(),
                index=self.index,
                fsync_delay=self.fsync_delay,
                cold_snapshot=self.cold_snapshot,
                cold_full=self.cold_full,
                cache_max=4 * 1024**3,
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}
        env["GOMAXPROCS"] = env.get("GOMAXPROCS", str(os.cpu_count() or 2))
        self._spawn([INFLUXD, "run", "-config", str(cfg)], env, "wb")
        self._wait_ready("/ping", (204,))
        st, body = http_request(self.port, "POST", "/query", params={"q": f'CREATE DATABASE "{self.db}"'})
        if st != 200 or b'"error"' in body:
            raise InfluxError(f"CREATE DATABASE failed: {st} {body[:300]!r}")

    # -- API -----------------------------------------------------------------------------------
    @property
    def write_path(self) -> str:
        return f"/write?db={self.db}&precision=ns"

    def write(self, lines: bytes | str, precision: str = "ns") -> tuple[int, bytes]:
        """POST one batch of line protocol; returns (status, body). 204 means stored."""
        body = lines.encode() if isinstance(lines, str) else lines
        return http_request(self.port, "POST", "/write", params={"db": self.db, "precision": precision}, body=body)

    def query(self, influxql: str, epoch: str | None = "ns", raise_errors: bool = True) -> dict[str, Any]:
        """Run InfluxQL against the database; returns the parsed JSON (``results``...)."""
        params = {"db": self.db, "q": influxql}
        if epoch:
            params["epoch"] = epoch
        st, body = http_request(self.port, "GET", "/query", params=params)
        data = json.loads(body) if body else {}
        if raise_errors:
            err = data.get("error") or next((r.get("error") for r in data.get("results", []) if r.get("error")), None)
            if st != 200 or err:
                raise InfluxError(f"query failed ({st}): {err or body[:300]!r}: {influxql}")
        return data

    def count_points(self, measurements: dict[str, str]) -> int:
        """Points stored, counting one always-present field per measurement ({measurement: field})."""
        total = 0
        for m, f in measurements.items():
            data = self.query(f'SELECT count("{f}") FROM "{m}"')
            for r in data.get("results", []):
                for s in r.get("series", []) or []:
                    total += int(s["values"][0][1])
        return total

    def debug_vars(self) -> dict[str, Any]:
        st, body = http_request(self.port, "GET", "/debug/vars")
        return json.loads(body) if st == 200 else {}

    # -- disk ----------------------------------------------------------------------------------
    def _shards(self) -> list[Path]:
        assert self.root is not None
        base = self.root / "data" / self.db
        # <db>/<retention policy>/<shard id>; skip <db>/_series (the series file partitions)
        return [p for p in base.glob("*/*") if p.is_dir() and p.name.isdigit() and p.parent.name != "_series"]

    def _disk_state(self) -> dict[str, Any]:
        assert self.root is not None
        shards = self._shards()
        tsm_files = {str(s): sorted(f.name for f in s.glob("*.tsm")) for s in shards}
        tmp = sum(1 for s in shards for _ in s.glob("*.tmp"))
        return {
            "shards": len(shards),
            "tsm_files": sum(len(v) for v in tsm_files.values()),
            "max_tsm_per_shard": max((len(v) for v in tsm_files.values()), default=0),
            "names": tsm_files,
            "tmp_files": tmp,
            "tsm_bytes": dir_bytes(self.root / "data", (".tsm",)),
            "wal_bytes": dir_bytes(self.root / "wal", (".wal",)),
        }

    def wait_compacted(self, timeout: float = 180.0, stable_s: float = 3.0) -> tuple[bool, float]:
        """Wait until every shard is one TSM file, no compaction temp files remain and the WAL is
        (nearly) empty, unchanged for ``stable_s``. Returns (reached, seconds waited)."""
        t0 = time.monotonic()
        last = None
        since = time.monotonic()
        while time.monotonic() - t0 < timeout:
            st = self._disk_state()
            key = (st["names"], st["tmp_files"], st["tsm_bytes"], st["wal_bytes"])
            if key != last:
                last, since = key, time.monotonic()
            done = (
                st["shards"] > 0
                and st["max_tsm_per_shard"] == 1
                and st["tmp_files"] == 0
                and st["wal_bytes"] < 64 * 1024
            )
            if done and time.monotonic() - since >= stable_s:
                return True, time.monotonic() - t0
            time.sleep(0.5)
        return False, time.monotonic() - t0

    def disk_bytes(self, wait: bool = True, timeout: float = 180.0) -> dict[str, Any]:
        """Bytes on disk after compaction: ``bytes`` = TSM files + WAL (apparent sizes); also the
        whole data dir (TSM + series file + index) and data+wal+meta as allocated on disk (``du``:
        the series file is preallocated sparse, 4 MiB x 8 partitions apparent)."""
        assert self.root is not None
        reached, waited = self.wait_compacted(timeout) if wait else (False, 0.0)
        st = self._disk_state()
        return {
            "bytes": st["tsm_bytes"] + st["wal_bytes"],
            "tsm_bytes": st["tsm_bytes"],
            "wal_bytes": st["wal_bytes"],
            "data_dir_du_bytes": dir_blocks_bytes(self.root / "data"),
            "all_du_bytes": sum(dir_blocks_bytes(self.root / d) for d in ("data", "wal", "meta")),
            "shards": st["shards"],
            "tsm_files": st["tsm_files"],
            "compacted": reached,
            "compaction_wait_s": round(waited, 1),
        }


def _selftest() -> None:
    """Start, write a few thousand points, query, measure the disk, stop."""
    from _common import emit

    lines = []
    t0 = 1_767_225_600_000_000_000
    for i in range(5000):
        lines.append(
            f"climate,device_id=dev-{i % 50:05d},location=home-{i % 7},room=kitchen,sensor_type=climate "
            f"temperature={20 + (i % 100) / 10:.2f},humidity=45.1,pressure=1013.2,battery=0.871,rssi=-67i {t0 + i * 10**9}"
        )
    body = ("\n".join(lines) + "\n").encode()
    t_start = time.perf_counter()
    with InfluxDB() as db:
        started = time.perf_counter() - t_start
        st, msg = db.write(body)
        assert st == 204, (st, msg)
        n = db.count_points({"climate": "temperature"})
        q = db.query('SELECT last("temperature") FROM "climate" GROUP BY "device_id"')
        series = q["results"][0]["series"]
        disk = db.disk_bytes(timeout=60)
        emit({"bench": "influx_selftest", "system": db.name, "version": db.version, "start_s": round(started, 2),
              "write_status": st, "points": n, "last_series": len(series), **disk,
              "bytes_per_value": round(disk["bytes"] / (n * 5), 3) if n else None, "root": str(db.root)})
        assert n == 5000, n
        assert len(series) == 50
    print("ok", file=sys.stderr)


if __name__ == "__main__":
    _selftest()
