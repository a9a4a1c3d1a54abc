"""Background threads lower their own CPU priority, and only their own."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from sensorium import Sensorium
from sensorium.config import load_settings
from sensorium.threads import background, lower_priority

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def _in_thread(fn):  # type: ignore[no-untyped-def]
    out: dict[str, object] = {}

    def run() -> None:
        out["before"] = _nice(threading.get_native_id())
        out["result"] = fn()
        out["after"] = _nice(threading.get_native_id())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out


@linux
def test_lowers_the_calling_thread_only() -> None:
    main = _nice(threading.get_native_id())
    out = _in_thread(lambda: lower_priority(5))
    assert out["result"] is True
    assert out["after"] == min(19, int(out["before"]) + 5)  # type: ignore[call-overload]
    assert _nice(threading.get_native_id()) == main  # the process's other threads keep theirs


@linux
def test_capped_at_19_and_zero_is_a_no_op() -> None:
    out = _in_thread(lambda: (lower_priority(30), lower_priority(0)))
    assert out["after"] == 19
    assert out["result"] == (True, False)


@linux
def test_platform_housekeeping_threads_run_lower(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = Sensorium(load_settings(None, data_dir=tmp_path, background_nice=7))
    try:
        deadline = time.monotonic() + 5
        names = {"sensorium-flusher", "sensorium-maintenance", "sensorium-dead-letters"}
        seen: dict[str, int] = {}
        while time.monotonic() < deadline and set(seen) != names:
            seen = {t.name: _nice(t.native_id) for t in threading.enumerate() if t.name in names and t.native_id}
            time.sleep(0.05)
        main = _nice(threading.get_native_id())
        assert seen == {n: min(19, main + 7) for n in names}
        stream = next(t for t in threading.enumerate() if t.name == "sensorium-stream")
        assert stream.native_id is not None and _nice(stream.native_id) == main  # the stream keeps its priority
    finally:
        p.close()


def test_background_wraps_the_target() -> None:
    got: list[int] = []
    t = threading.Thread(target=background(lambda: got.append(1), 0))
    t.start()
    t.join()
    assert got == [1]
