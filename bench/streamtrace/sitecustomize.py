"""Stream tracer for any Python process that imports Sensorium (a server under load, a bench).

Put this directory first on ``PYTHONPATH`` and set ``SENSORIUM_TRACE_DIR``; each process then writes
``trace-<pid>.json`` there every 5 s (and at exit) with:

* ``STEP``: steps, wall seconds, the stream thread's CPU seconds, log rows — of ``StreamRunner.step``;
* one entry per stage (``frame``, ``rolling``, ``rules``, ``rollups``, ...): calls, wall, CPU of
  ``StreamRunner._timed`` (CPU of the calling thread only: work on Polars' pool is wall time);
* ``GILWAIT``: a histogram of how late a 1 ms ``time.sleep`` of a probe thread returns — the time it
  waited to take the interpreter lock back (bucket edges in ``GIL_EDGES_S``);
* ``SLOW``: the stream's slow moments, in time order (at most ``SLOW_MAX``): every step, checkpoint,
  tick and settle that took ``SLOW_S`` or more, as ``[start (epoch s), what, wall s, rows, {stage:
  wall s}]`` — to line up with a latency bench's probes (``bench_alert_latency.py --dump``).

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
SLOW_S = float(os.environ.get("SENSORIUM_TRACE_SLOW_S", "0.1"))
SLOW_MAX = 5000
_DIR = os.environ.get("SENSORIUM_TRACE_DIR")
_acc: dict[str, Any] = {}
_stages = threading.local()  # the stages timed in the current step (per thread)


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


def _note(what: str, start: float, wall: float, rows: int, detail: dict[str, float]) -> None:
    """Keep a slow moment (``SLOW``)."""
    slow = _acc.setdefault("SLOW", [])
    if wall >= SLOW_S and len(slow) < SLOW_MAX:
        slow.append([round(start, 3), what, round(wall, 3), rows, detail])


def _wrap_slow(cls: Any, name: str, before: Any, detail: Any) -> None:
    """Time ``cls.name``: ``before()`` first, then a slow call is kept with ``detail(its CPU s)``."""
    fn = getattr(cls, name)

    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        before()
        start, w, c = time.time(), time.perf_counter(), time.thread_time()
        try:
            return fn(self, *args, **kwargs)
        finally:
            _note(name, start, time.perf_counter() - w, 0, detail(time.thread_time() - c))

    setattr(cls, name, traced)


def _patch() -> None:
    from sensorium.stream import runner

    timed, step = runner.StreamRunner._timed, runner.StreamRunner.step
    stages_of_step: dict[str, float] = {}  # the stream thread's step in progress (side stages too)

    def stages(_cpu: float) -> dict[str, float]:
        return {k: round(v, 3) for k, v in stages_of_step.items()}

    def traced_timed(self: Any, step_id: str, fn: Any, *args: Any) -> Any:
        w, c = time.perf_counter(), time.thread_time()
        try:
            return timed(self, step_id, fn, *args)
        finally:
            wall = time.perf_counter() - w
            _add(step_id, wall, time.thread_time() - c)
            stages_of_step[step_id] = stages_of_step.get(step_id, 0.0) + wall

    def traced_step(self: Any, max_rows: int | None = None) -> int:
        stages_of_step.clear()
        start, w, c = time.time(), time.perf_counter(), time.thread_time()
        n = step(self, max_rows)
        wall, cpu = time.perf_counter() - w, time.thread_time() - c
        if n:
            _add("STEP", wall, cpu, n)
            _note("step", start, wall, n, stages(cpu))
        return n

    runner.StreamRunner._timed = traced_timed  # type: ignore[method-assign]
    runner.StreamRunner.step = traced_step  # type: ignore[method-assign]
    for name in ("checkpoint", "tick", "settle"):
        _wrap_slow(runner.StreamRunner, name, stages_of_step.clear, stages)


def _patch_platform() -> None:
    from sensorium import platform

    for name in ("maintain", "_flush_key"):  # housekeeping beside the stream (other threads)
        _wrap_slow(platform.Sensorium, name, lambda: None, lambda cpu: {"cpu": round(cpu, 3)})


class _OnImport(importlib.abc.MetaPathFinder):
    """Patches the stream runner and the platform once each has been imported."""

    patches = {"sensorium.stream.runner": _patch, "sensorium.platform": _patch_platform}

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        patch = self.patches.pop(name, None)
        if patch is None:
            return None
        sys.meta_path.remove(self)  # find the module's own spec (without this finder)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            if self.patches:
                sys.meta_path.insert(0, self)
        assert spec is not None and spec.loader is not None
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            patch()

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
