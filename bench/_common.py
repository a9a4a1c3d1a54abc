"""Shared helpers for the benchmarks: ports, JSON-line output, HTTP, a fast concurrent poster.

Only the standard library (plus numpy for splitting files), so the harness runs in the project's
virtualenv without extra packages. Everything targets 127.0.0.1.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"


# -- output ------------------------------------------------------------------------------------
def emit(record: dict[str, Any]) -> None:
    """Print one result as one JSON line on stdout (the machine-readable output)."""
    sys.stdout.write(json.dumps(record, default=str, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def log(msg: str) -> None:
    """Progress for humans: stderr, so stdout stays one JSON line per result."""
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def machine_info() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_1m": round(load[0], 2) if load else None,
    }


def percentile(xs: Sequence[float], p: float) -> float | None:
    """Nearest-rank-with-interpolation percentile (p in 0..100)."""
    if not xs:
        return None
    s = sorted(xs)
    if len(s) == 1:
        return s[0]
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def r3(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


# -- ports / processes -------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def dir_bytes(path: Path, suffixes: tuple[str, ...] | None = None) -> int:
    """Apparent size of the regular files under ``path`` (optionally only those with a suffix)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            if suffixes is not None and not f.endswith(suffixes):
                continue
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:  # compaction removed it meanwhile
                pass
    return total


def dir_blocks_bytes(path: Path) -> int:
    """Bytes actually allocated on disk (``du``-like; counts holes and block rounding)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


class ManagedServer:
    """The process lifecycle shared by the benchmark servers: a child started in a temp dir with
    its output in ``<root>/<log_name>``, stopped with ``stop_signal`` (then SIGKILL), the temp dir
    removed unless ``keep``. Subclasses set the class attributes and write ``start``."""

    name = "server"
    label = "server"  # the process, in messages
    log_name = "server.log"
    error_cls: type[Exception] = RuntimeError
    stop_signal: int = signal.SIGTERM

    def __init__(self, *, base_dir: str | Path | None, keep: bool, start_timeout: float) -> None:
        self.base_dir = base_dir
        self.keep = keep
        self.start_timeout = start_timeout
        self.root: Path | None = None
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_fh: Any = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()

    def start(self) -> None:
        raise NotImplementedError

    def _spawn(self, cmd: list[str], env: dict[str, str], log_mode: str = "wb") -> None:
        """Run ``cmd`` in ``root`` (its own session), stdout and stderr to the log file."""
        assert self.root is not None
        self._log_fh = open(self.root / self.log_name, log_mode)
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.root,
            start_new_session=True,
        )

    def _wait_ready(self, path: str, ok: tuple[int, ...]) -> None:
        """Wait until ``path`` answers one of ``ok``; otherwise stop and raise with the log tail."""
        if not wait_http(self.port, path, ok, self.start_timeout, self.proc):
            tail = self.log_tail()
            self.stop()
            raise self.error_cls(f"{self.label} did not answer {path} on port {self.port}:\n{tail}")

    def stop(self, timeout: float = 60.0) -> int | None:
        """``stop_signal``, wait, then SIGKILL. Returns the exit code."""
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(self.stop_signal)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.label} did not stop in {timeout:.0f}s: SIGKILL")
                p.kill()
                p.wait(10)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        self.proc = None
        return p.returncode

    def cleanup(self) -> None:
        if self.root is not None and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 3000) -> str:
        if self.root is None:
            return ""
        try:
            return (self.root / self.log_name).read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


def proc_rss_kb(pid: int) -> tuple[int | None, int | None]:
    """(VmRSS, VmHWM) of a live process in KiB, from /proc; (None, None) when gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            rss = hwm = None
            for line in fh:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
            return rss, hwm
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None, None


def proc_stat(path: str) -> tuple[float, float, int] | None:
    """(user CPU s, system CPU s, minor page faults) so far of the process or thread whose
    ``stat`` file is ``path`` (``/proc/<pid>/stat``, ``/proc/self/task/<tid>/stat``); None once
    it is gone."""
    try:
        with open(path) as fh:
            parts = fh.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        return int(parts[11]) / tck, int(parts[12]) / tck, int(parts[7])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def proc_cpu_s(pid: int) -> float | None:
    """User+system CPU seconds used so far by a live process (from /proc/<pid>/stat)."""
    st = proc_stat(f"/proc/{pid}/stat")
    return None if st is None else st[0] + st[1]


# -- HTTP --------------------------------------------------------------------------------------
def http_request(
    port: int,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 120.0,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    """One request; returns (status, body). Uses ``conn`` (keep-alive) when given."""
    url = path + ("?" + urllib.parse.urlencode(params) if params else "")
    own = conn is None
    c = conn or http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request(method, url, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        if own:
            c.close()


def wait_http(port: int, path: str, ok: Iterable[int], timeout: float, proc: Any = None) -> bool:
    """Poll ``path`` until it answers one of ``ok``; False on timeout or when ``proc`` exits."""
    ok = set(ok)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            status, _ = http_request(port, "GET", path, timeout=2.0)
            if status in ok:
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.1)
    return False


# -- bodies ------------------------------------------------------------------------------------
def split_bodies(data: bytes, lines_per_body: int) -> list[bytes]:
    """Cut line protocol into bodies of ``lines_per_body`` lines each (bytes, in memory)."""
    import numpy as np

    if not data:
        return []
    arr = np.frombuffer(data, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    if not len(nl) or nl[-1] != len(data) - 1:
        nl = np.append(nl, len(data) - 1)  # last line without newline
    ends = nl[lines_per_body - 1 :: lines_per_body].tolist()
    if not ends or ends[-1] != int(nl[-1]):
        ends.append(int(nl[-1]))
    out = []
    start = 0
    for e in ends:
        out.append(data[start : e + 1])
        start = e + 1
    return out


# -- the concurrent poster ---------------------------------------------------------------------
@dataclass
class PostStats:
    requests: int = 0
    ok: int = 0
    errors: int = 0
    bytes_sent: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    first_errors: list[str] = field(default_factory=list)
    status_counts: dict[int, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_s
        return {
            "requests": self.requests,
            "ok_requests": self.ok,
            "errors": self.errors,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "request_p50_ms": r3(percentile(lat, 50) * 1000 if lat else None, 1),
            "request_p99_ms": r3(percentile(lat, 99) * 1000 if lat else None, 1),
            "request_max_ms": r3(max(lat) * 1000 if lat else None, 1),
            "first_errors": self.first_errors[:3],
        }


def post_bodies(
    port: int,
    path: str,
    bodies: Sequence[bytes],
    connections: int = 4,
    headers: dict[str, str] | None = None,
    timeout: float = 300.0,
    ok_status: tuple[int, ...] = (204, 200),
) -> PostStats:
    """POST every body once, ``connections`` keep-alive connections pulling from a shared index.

    The client does no per-line work: bodies are prepared bytes, each thread only sends and reads
    the (tiny) answer. A failed request is counted and not retried (so errors are visible).
    """
    hdrs = {"Content-Type": "text/plain; charset=utf-8", **(headers or {})}
    counter = itertools.count()  # next() is atomic under the GIL
    stats = PostStats()
    lock = threading.Lock()
    start_evt = threading.Event()

    def worker() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        lat: list[float] = []
        ok = err = sent = 0
        codes: dict[int, int] = {}
        errs: list[str] = []
        start_evt.wait()
        while True:
            i = next(counter)
            if i >= len(bodies):
                break
            body = bodies[i]
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=hdrs)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                status, data = -1, repr(exc).encode()
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
            lat.append(time.perf_counter() - t0)
            sent += len(body)
            codes[status] = codes.get(status, 0) + 1
            if status in ok_status:
                ok += 1
            else:
                err += 1
                if len(errs) < 3:
                    errs.append(f"{status}: {data[:300].decode('utf-8', 'replace')}")
        conn.close()
        with lock:
            stats.ok += ok
            stats.errors += err
            stats.bytes_sent += sent
            stats.latencies_s.extend(lat)
            stats.first_errors.extend(errs)
            for k, v in codes.items():
                stats.status_counts[k] = stats.status_counts.get(k, 0) + v

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    start_evt.set()
    for t in threads:
        t.join()
    stats.elapsed_s = time.perf_counter() - t0
    stats.requests = stats.ok + stats.errors
    return stats


# -- a trivial server, to measure the client's own ceiling -------------------------------------
TRIVIAL_SERVER = r"""
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(64)
def handle(c):
    f = c.makefile("rb", buffering=1 << 20)
    try:
        while True:
            n = 0
            line = f.readline()
            if not line:
                return
            while line not in (b"\r\n", b"\n", b""):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
                line = f.readline()
            left = n
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    return
                left -= len(chunk)
            c.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
    finally:
        c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"""


def client_ceiling(bodies: Sequence[bytes], connections: int) -> dict[str, Any]:
    """Post ``bodies`` to a do-nothing server: how fast can the client go on this machine?"""
    port = free_port()
    p = subprocess.Popen([sys.executable, "-c", TRIVIAL_SERVER, str(port)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        st = post_bodies(port, "/write", bodies, connections=connections)
        return {"elapsed_s": round(st.elapsed_s, 3), "requests": st.requests, "errors": st.errors,
                "mb_per_s": round(st.bytes_sent / st.elapsed_s / 1e6, 1)}
    finally:
        p.terminate()
        p.wait(5)


# -- paced line-protocol writers (latency benchmarks) -----------------------------------------
def make_batches(devices: int, batch: int, device_prefix: str = "lat") -> list[list[bytes]]:
    """Line prefixes (everything but the timestamp), ``batch`` per request, cycling over devices.
    Values stay inside every built-in alert rule's limits (and constant per device)."""
    prefixes = [
        f"climate,device_id={device_prefix}-{i:05d},location=home-{i % 97},room=kitchen,sensor_type=climate "
        f"temperature={18 + (i % 70) / 10:.1f},humidity={40 + i % 20}.5,pressure=1013.2,battery=0.{500 + i % 400},"
        f"rssi=-{50 + i % 40}i ".encode()
        for i in range(devices)
    ]
    groups = max(1, devices // batch)
    return [prefixes[g * batch : (g + 1) * batch] for g in range(groups)]


class PacedWriters:
    """``writers`` connections that together post ``rate`` points/s to ``path``, ``batch`` points
    per request; each point's timestamp is its slot in the schedule (~ now). ``stats`` is filled
    when the writers stop (``stop`` set, then :meth:`join`)."""

    def __init__(self, port: int, path: str, groups: list[list[bytes]], *, rate: float, writers: int,
                 batch: int, stop: threading.Event) -> None:
        self.port, self.path, self.groups = port, path, groups
        self.rate, self.writers, self.batch, self.stop = rate, writers, batch, stop
        self.stats: dict[str, Any] = {"points": 0, "requests": 0, "errors": 0, "behind_max_s": 0.0, "first_errors": []}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.t_start = 0.0
        self.ts0 = 0

    def start(self) -> None:
        self.t_start = time.perf_counter()
        self.ts0 = time.time_ns()
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(self.writers)]
        for t in self._threads:
            t.start()

    def join(self, timeout: float) -> None:
        for t in self._threads:
            t.join(timeout=timeout)

    def _run(self, w: int) -> None:
        interval = self.batch * self.writers / self.rate  # seconds between one writer's posts
        conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
        k = pts = reqs = errs = 0
        behind = 0.0
        errors: list[str] = []
        while not self.stop.is_set():
            due = self.t_start + k * interval
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            else:
                behind = max(behind, now - due)
            seq = k * self.writers + w
            prefixes = self.groups[seq % len(self.groups)]
            ts = b"%d\n" % (self.ts0 + int(seq * self.batch / self.rate * 1e9))
            body = ts.join(prefixes) + ts
            try:
                conn.request("POST", self.path, body=body)
                r = conn.getresponse()
                data = r.read()
                if r.status in (200, 204):
                    pts += len(prefixes)
                else:
                    errs += 1
                    if len(errors) < 3:
                        errors.append(f"{r.status}: {data[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                errs += 1
                if len(errors) < 3:
                    errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(HOST, self.port, timeout=60)
            reqs += 1
            k += 1
        conn.close()
        with self._lock:
            self.stats["points"] += pts
            self.stats["requests"] += reqs
            self.stats["errors"] += errs
            self.stats["behind_max_s"] = max(self.stats["behind_max_s"], behind)
            self.stats["first_errors"].extend(errors)
