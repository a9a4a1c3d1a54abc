"""Background threads at a lower CPU priority than the request path and the stream.

Housekeeping (flushes to the lake, compaction, dead-letter storage, the checkpoint's commit) is
work that may wait: on a loaded machine it should take the cores the ingest and the stream leave
idle, not share them evenly. Linux keeps a scheduling priority (a nice value) per thread, so the
thread doing such work lowers its own (``setpriority`` on its thread id); the interpreter's other
threads keep theirs. Elsewhere (or without permission) this is a no-op.

Raising a nice value needs no privilege; lowering it back does, so a thread that lowers its
priority does it for good: only threads made for background work call :func:`lower_priority`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def lower_priority(nice: int) -> bool:
    """Make the calling thread ``nice`` steps less favoured by the scheduler (Linux: per thread).
    Returns whether it took effect (``nice <= 0``, another OS or a refusal: False)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except (OSError, AttributeError) as exc:  # a container's seccomp policy, say: run as is
        log.debug("could not lower the priority of thread %s: %s", threading.current_thread().name, exc)
        return False
    return True


def background(target: Callable[[], Any], nice: int) -> Callable[[], Any]:
    """``target`` run at a lower priority (for ``threading.Thread(target=...)``)."""

    def run() -> Any:
        lower_priority(nice)
        return target()

    return run
