"""Parser throughput: field values per second, one process.

Run ``python bench/bench_parse.py [--lines N] [--repeat R]``; prints one JSON object per result:
``{"bench": ..., "lines": ..., "values": ..., "seconds": ..., "values_per_s": ...}`` (best of R).

Cases:
* ``lp_fast`` — typical IoT lines (the brief's example shape), all on the vectorised path;
* ``lp_fast_highcard`` — the same with every series key distinct (worst case for the per-series
  parse);
* ``lp_mixed`` — 10 % of lines carry a plain string field (still vectorised), 1 % a string with
  escapes (exact per-line parser), 1 % a bad value (rejected, via the per-line parser);
* ``lp_fast_5k`` — the ``lp_fast`` lines posted as 5,000-line bodies (HTTP-sized requests);
* ``lp_slow`` — everything forced through the exact per-line parser (the reference);
* ``lp_python_split`` — a minimal pure-Python split loop, for scale;
* ``json_readings`` — NDJSON readings.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable

from sensorium.ingest.jsonreadings import parse_readings
from sensorium.ingest.lineprotocol import _parse, parse_lines

T0 = 1_700_000_000_000_000_000
ROOMS = ["kitchen", "bedroom", "bath", "living", "office", "garage", "hall", "attic"]


def lp_body(n: int, *, devices: int = 2000, mixed: bool = False, seed: int = 1) -> bytes:
    """``n`` climate lines from ``devices`` devices (each with a fixed location and room)."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        d = r.randrange(devices)
        line = (
            f"climate,device_id=dev-{d:05d},location=home-{d // 8},room={ROOMS[d % 8]} "
            f"temperature={r.uniform(10, 30):.2f},humidity={r.uniform(20, 80):.1f},"
            f"battery={r.random():.2f},rssi={-r.randrange(40, 90)}i {T0 + i * 1_000_000_000}"
        )
        if mixed:
            x = r.random()
            if x < 0.10:  # a plain string field: still vectorised
                line = line.replace(" temperature=", ' status="ok, door open",temperature=', 1)
            elif x < 0.11:  # escapes: the per-line parser
                line = line.replace(" temperature=", ' note="say \\"hi\\"",temperature=', 1)
            elif x < 0.12:  # a bad value: rejected
                line = line.replace("humidity=", "humidity=abc", 1)
        out.append(line)
    return ("\n".join(out) + "\n").encode()


def json_body(n: int, seed: int = 1) -> bytes:
    r = random.Random(seed)
    out = []
    for i in range(n):
        d = r.randrange(2000)
        out.append(
            json.dumps(
                {
                    "device_id": f"dev-{d:05d}",
                    "timestamp": T0 // 1_000_000 + i * 1000,
                    "sensor_type": "climate",
                    "measurement_type": "temperature",
                    "value": round(r.uniform(10, 30), 2),
                    "unit": "degC",
                    "location": f"home-{d // 8}",
                    "metadata": {"room": ROOMS[d % 8], "fw": "1.2.3"},
                }
            )
        )
    return ("\n".join(out) + "\n").encode()


def python_split(body: bytes) -> int:
    """The baseline the brief mentions: a plain split loop, no types, no checks."""
    values = 0
    for line in body.decode().split("\n"):
        if not line:
            continue
        _, fields, _ = line.split(" ")
        for kv in fields.split(","):
            k, v = kv.split("=")
            if v.endswith("i"):
                int(v[:-1])
            else:
                float(v)
            values += 1
    return values


def run(name: str, fn: Callable[[], int], lines: int, repeat: int) -> None:
    best = float("inf")
    values = 0
    for _ in range(repeat):
        t = time.perf_counter()
        values = fn()
        best = min(best, time.perf_counter() - t)
    print(
        json.dumps(
            {
                "bench": name,
                "lines": lines,
                "values": values,
                "seconds": round(best, 4),
                "values_per_s": round(values / best),
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=250_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated case names")
    a = ap.parse_args(argv)
    n = a.lines
    only = set(filter(None, a.only.split(",")))
    fast = lp_body(n)
    high = lp_body(n, devices=n * 10)
    mixed = lp_body(n, mixed=True)
    fast_lines = fast.splitlines(keepends=True)
    bodies_5k = [b"".join(fast_lines[i : i + 5000]) for i in range(0, len(fast_lines), 5000)]
    cases: dict[str, Callable[[], int]] = {
        "lp_fast": lambda: parse_lines(fast, now_ns=T0).values,
        "lp_fast_highcard": lambda: parse_lines(high, now_ns=T0).values,
        "lp_mixed": lambda: parse_lines(mixed, now_ns=T0).values,
        "lp_fast_5k": lambda: sum(parse_lines(b, now_ns=T0).values for b in bodies_5k),
        "lp_slow": lambda: _parse(fast, "ns", T0, fast=False).values,
        "lp_python_split": lambda: python_split(fast),
    }
    jb = json_body(n // 4)
    cases["json_readings"] = lambda: parse_readings(jb, now_ns=T0).values
    for name, fn in cases.items():
        if only and name not in only:
            continue
        reps = 1 if name == "lp_slow" else a.repeat
        run(name, fn, n // 4 if name.startswith("json") else n, reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
