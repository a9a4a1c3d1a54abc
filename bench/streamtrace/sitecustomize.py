"""Stream tracer for any Python process that imports Sensorium (a server under load, a bench).

Put this directory first on ``PYTHONPATH`` and set ``SENSORIUM_TRACE_DIR``; each process then writes
``trace-<pid>.json`` there every 5 s (and at exit) with:

* ``STEP``: steps, wall seconds, the stream thread's CPU seconds, log rows — of ``StreamRunner.step``;
* one entry per stage (``frame``, ``rolling``, ``rules``, ``rollups``, ...): calls, wall, CPU of
  ``StreamRunner._timed`` (CPU of the calling thread only: work on Polars' pool is wall time);
* ``GILWAIT``: a histogram of how late a 1 ms ``time.sleep`` of a probe thread returns — the time it
  waited to take the interpreter lock back (bucket edges in ``GIL_EDGES_S``).

A stream thread whose wall time is much more than its CPU time is waiting (for the GIL, mostly:
docs/benchmarks.md, stream, session 18). ``python bench/stream_trace_report.py DIR`` summarises.

    SENSORIUM_TRACE_DIR=/tmp/tr PYTHONPATH=bench/streamtrace python bench/bench_alert_latency.py ...
"""

from __future__ import annotations

import atexit
import bisect
import importlib.abc
import importlib.util
import json
import os
import sys
import threading
import time
from typing import Any

GIL_EDGES_S = [0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 1.0]
_DIR = os.environ.get("SENSORIUM_TRACE_DIR")
_acc: dict[str, Any] = {}


def _dump() -> None:
    assert _DIR is not None
    tmp = os.path.join(_DIR, f".trace-{os.getpid()}.json")
    with open(tmp, "w") as f:
        json.dump({"pid": os.getpid(), "argv": sys.argv, "gil_edges_s": GIL_EDGES_S, **_acc}, f)
    os.replace(tmp, os.path.join(_DIR, f"trace-{os.getpid()}.json"))


def _add(key: str, wall: float, cpu: float, rows: int = 0) -> None:
    a = _acc.setdefault(key, [0, 0.0, 0.0, 0])
    a[0] += 1
    a[1] += wall
    a[2] += cpu
    a[3] += rows


def _patch() -> None:
    from sensorium.stream import runner

    timed, step = runner.StreamRunner._timed, runner.StreamRunner.step

    def traced_timed(self: Any, step_id: str, fn: Any, *args: Any) -> Any:
        w, c = time.perf_counter(), time.thread_time()
        try:
            return timed(self, step_id, fn, *args)
        finally:
            _add(step_id, time.perf_counter() - w, time.thread_time() - c)

    def traced_step(self: Any, max_rows: int | None = None) -> int:
        w, c = time.perf_counter(), time.thread_time()
        n = step(self, max_rows)
        if n:
            _add("STEP", time.perf_counter() - w, time.thread_time() - c, n)
        return n

    runner.StreamRunner._timed = traced_timed  # type: ignore[method-assign]
    runner.StreamRunner.step = traced_step  # type: ignore[method-assign]


class _OnImport(importlib.abc.MetaPathFinder):
    """Patches the stream runner once ``sensorium.stream.runner`` has been imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "sensorium.stream.runner":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.loader is not None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _patch()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _gil_probe() -> None:
    hist = _acc["GILWAIT"] = [0] * (len(GIL_EDGES_S) + 1)
    while True:
        t = time.perf_counter()
        time.sleep(0.001)
        hist[bisect.bisect(GIL_EDGES_S, time.perf_counter() - t - 0.001)] += 1


def _writer() -> None:
    while True:
        time.sleep(5)
        _dump()


if _DIR:
    os.makedirs(_DIR, exist_ok=True)
    sys.meta_path.insert(0, _OnImport())
    threading.Thread(target=_gil_probe, name="trace-gil-probe", daemon=True).start()
    threading.Thread(target=_writer, name="trace-writer", daemon=True).start()
    atexit.register(_dump)
