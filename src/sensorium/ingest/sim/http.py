"""Sending a simulation to a server as line protocol over HTTP (:func:`post`)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sensorium.errors import ConfigError
from sensorium.ingest.sim.config import NS, SimSummary
from sensorium.ingest.sim.engine import Simulator
from sensorium.ingest.sim.faults import FAULTS
from sensorium.ingest.sim.output import _count_faults

# --------------------------------------------------------------------------- HTTP


def _count_rejected(resp: Any, n: int) -> int:
    """Rejected lines of a 400 (partial write) answer to a batch of ``n`` lines (best effort)."""
    body: Any = None
    try:
        body = resp.json()
    except Exception:
        body = None
    msg = ""
    if isinstance(body, dict):
        for key in ("rejected", "rejected_lines", "lines_rejected", "dropped"):
            if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
                return max(0, min(n, int(body[key])))
        for key in ("accepted", "written", "lines_accepted"):
            if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
                return max(0, n - int(body[key]))
        msg = str(body.get("message") or body.get("error") or "")
        for key in ("errors", "rejects"):
            if isinstance(body.get(key), list) and body[key] and not msg:
                return min(n, len(body[key]))
    else:
        msg = resp.text or ""
    m = re.search(r"dropped=(\d+)", msg) or re.search(
        r"(\d+)\s+(?:lines?|points?)\s+(?:rejected|dropped)", msg
    )
    if m:
        return max(0, min(n, int(m.group(1))))
    m = re.search(r"\((\d+) written\)", msg) or re.search(
        r"(\d+)\s+(?:lines?|points?)?\s*(?:written|accepted)", msg
    )
    if m:
        return max(0, n - int(m.group(1)))
    if isinstance(body, dict):
        for key in ("errors", "rejects"):
            if isinstance(body.get(key), list) and body[key]:
                return min(n, len(body[key]))
    return n


def post(
    sim: Simulator,
    url: str,
    *,
    bucket: str = "default",
    batch_lines: int = 5000,
    realtime: bool = False,
    token: str | None = None,
    progress: Callable[[float, float], None] | None = None,
    stop_event: threading.Event | None = None,
    timeout_s: float = 30.0,
    client: Any = None,
) -> SimSummary:
    """POST the simulation as line protocol to ``{url}/api/v2/write?bucket=...&precision=ns``.

    ``realtime=True`` replays at wall-clock pace with ``start_ns = now``: each second of simulated
    time is sent once it has passed (so no point lies in the future); with ``duration_s=inf`` it
    runs until ``stop_event`` is set. A 400 answer is taken as a partial write (faulty lines
    rejected) and counted; any other error status raises :class:`httpx.HTTPStatusError`.
    ``progress(simulated_seconds_done, simulated_seconds_total)`` is called after every request.
    """
    import httpx

    if batch_lines < 1:
        raise ConfigError("batch_lines must be >= 1", batch_lines=batch_lines)
    if realtime:
        sim = Simulator(replace(sim.config, start_ns=time.time_ns()))
        chunk_s = 1.0
    else:
        if sim.config.readings is None:
            raise ConfigError("an endless simulation can only be posted with realtime=True")
        chunk_s = sim.default_chunk_seconds
    endpoint = url.rstrip("/") + "/api/v2/write"
    params = {"bucket": bucket, "precision": "ns"}
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if token:
        headers["Authorization"] = f"Token {token}"
    summary = SimSummary(points=0, values=0, lines=0, faults=dict.fromkeys(FAULTS, 0))
    own = client is None
    http = client if client is not None else httpx.Client(timeout=timeout_s)
    t0 = time.perf_counter()
    done = (0.0, 0.0)

    def send(batch: list[str]) -> None:
        if not batch:
            return
        body = ("\n".join(batch) + "\n").encode()
        resp = http.post(endpoint, params=params, content=body, headers=headers)
        summary.requests += 1
        if resp.status_code == 400:
            rej = _count_rejected(resp, len(batch))
        else:
            resp.raise_for_status()
            rej = 0
        summary.rejected += rej
        summary.accepted += len(batch) - rej
        if progress is not None:
            progress(*done)

    def stopped() -> bool:
        return stop_event is not None and stop_event.is_set()

    try:
        buf: list[str] = []
        for ch in sim.chunks(chunk_s):
            if stopped():
                break
            if realtime and ch.n_lines:
                wait_ns = (ch.max_time or 0) - time.time_ns()
                if wait_ns > 0:
                    if stop_event is not None:
                        if stop_event.wait(wait_ns / NS):
                            break
                    else:
                        time.sleep(wait_ns / NS)
            summary.points += ch.points
            summary.values += ch.values
            summary.lines += ch.n_lines
            _count_faults(summary.faults, ch.labels)
            done = (ch.seconds_done, ch.seconds_total)
            buf.extend(ch.line_list)
            while len(buf) >= batch_lines:
                send(buf[:batch_lines])
                del buf[:batch_lines]
                if stopped():
                    break
            if realtime:
                send(buf)
                buf = []
        if not stopped():
            send(buf)
    finally:
        if own:
            http.close()
    summary.seconds = time.perf_counter() - t0
    return summary
