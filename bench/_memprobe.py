"""Which phase of a run raises resident memory (``bench_stream.py --mode memory --probe``).

A thread reads ``/proc/self/statm`` every millisecond; chosen methods are wrapped so that each
call records the resident memory before it, the highest sample while it ran (nested calls
included) and after it. The report gives, per phase: calls, the highest RSS seen inside it, the
largest rise over its own start, and the summed net change (what it left behind).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[1]) * _PAGE


class PhaseProbe:
    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self._active: dict[int, list[int]] = {}  # [highest sample] of each call in progress, by id
        self.stats: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="memprobe", daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            r = rss_bytes()
            for rec in list(self._active.values()):
                if r > rec[0]:
                    rec[0] = r
            time.sleep(self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def wrap(self, owner: Any, attr: str, label: str | Callable[..., str] | None = None) -> None:
        """Measure every call of ``owner.attr`` (a class's method or a module's function) under
        ``label`` (a name, or a function of the call's arguments)."""
        fn = getattr(owner, attr)
        name = label or f"{getattr(owner, '__name__', owner)}.{attr}"
        probe = self

        @functools.wraps(fn)
        def measured(*args: Any, **kwargs: Any) -> Any:
            key = name(*args, **kwargs) if callable(name) else name
            before = rss_bytes()
            rec = [before]
            probe._active[id(rec)] = rec
            try:
                return fn(*args, **kwargs)
            finally:
                del probe._active[id(rec)]
                after = rss_bytes()
                s = probe.stats.setdefault(
                    key, {"calls": 0, "max_mb": 0.0, "max_at_call": 0, "max_rise_mb": 0.0, "net_mb": 0.0}
                )
                s["calls"] += 1
                top = max(rec[0], after)
                if top / 1e6 > s["max_mb"]:
                    s["max_mb"], s["max_at_call"] = top / 1e6, s["calls"]
                s["max_rise_mb"] = max(s["max_rise_mb"], (top - before) / 1e6)
                s["net_mb"] += (after - before) / 1e6

        setattr(owner, attr, measured)

    def report(self) -> dict[str, dict[str, float]]:
        return {k: {m: round(v, 1) for m, v in s.items()} for k, s in sorted(self.stats.items(), key=lambda kv: -kv[1]["max_mb"])}


def stream_probe() -> PhaseProbe:
    """The phases of the memory bench: the write and its parts (parse, validation, the log
    append, dead letters, device registration), the latest-value cache's folds, every stream
    stage, the rollup output, checkpoints, outbox delivery and flushes."""
    from sensorium import platform as plat
    from sensorium.quality.validate import Validator
    from sensorium.query.latest import LastValueCache
    from sensorium.stream import outputs, runner
    from sensorium.stream.checkpoint import CheckpointStore
    from sensorium.stream.rollup import RollupOperator

    probe = PhaseProbe()
    probe.wrap(plat.Sensorium, "write", "write")
    probe.wrap(plat, "parse_body", "write: parse")
    probe.wrap(Validator, "validate", "write: validate")
    probe.wrap(plat.Sensorium, "_append", "write: log append")
    probe.wrap(plat.Sensorium, "drain_dead_letters", "write: dead letters")
    probe.wrap(plat.Sensorium, "_register_devices", "write: device registration")
    probe.wrap(plat.Sensorium, "flush", "flush")
    probe.wrap(LastValueCache, "_fold", "latest-value cache fold")
    probe.wrap(runner.StreamRunner, "_timed", lambda self, step_id, *a, **k: f"stage {step_id}")
    probe.wrap(runner.StreamRunner, "_rollup_output", "rollup output")
    probe.wrap(runner.StreamRunner, "tick", "tick")
    probe.wrap(CheckpointStore, "save", "checkpoint save")
    probe.wrap(outputs.DerivedTables, "deliver", "outbox delivery")
    probe.wrap(RollupOperator, "_cascade", "rollups: coarser levels")
    probe.start()
    return probe
