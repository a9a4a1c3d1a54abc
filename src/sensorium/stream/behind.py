"""Work done on a thread of its own, at most one job behind the caller.

The stream hands on what must be done in order but need not hold it up: a checkpoint's outbox
commit (the runner), a step's burst of alert transitions (the platform). :meth:`Behind.submit`
waits for the job before (so jobs run in order and at most one waits) and raises its error;
:meth:`Behind.wait` returns once every job handed on is done, raising a failed one's error once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Behind:
    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._pending: Future[Any] | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the thread, once the job before it is done (its error raised here)."""
        with self._lock:
            self._wait()
            self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        """Return once every job handed on is done; raise a failed job's error (once)."""
        with self._lock:
            self._wait()

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Stop the thread; a job running finishes (its error is not raised: :meth:`wait` first)."""
        self._pool.shutdown(wait=True)
