"""Helpers for parsing beside the request path: parse worker processes (spawned, one per CPU)
and the prefetch thread of bulk loads. Nothing here touches the platform's state."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sensorium.quality.validate import Validator
from sensorium.schema import ParseResult

PARALLEL_PARSE_MIN_BYTES = 64 * 1024


def parse_body(body: bytes | str, fmt: str, precision: str, now: int, known: Any) -> ParseResult:
    """Parse a request body (in this process or a parse worker)."""
    if fmt == "json":
        from sensorium.ingest.jsonreadings import parse_readings

        return parse_readings(body, now_ns=now, known=known)
    from sensorium.ingest.lineprotocol import parse_lines

    parsed = parse_lines(body, precision=precision, now_ns=now, known=known)
    if not callable(known):  # in a worker: the caller re-creates raw lines lazily
        parsed.raw_lines = None
    return parsed


_WORKER_VALIDATORS: dict[str, Validator] = {}


def worker_init(parent: int) -> None:
    """In a parse worker: exit when the server is gone (even after a SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def warm() -> None:
    """Import the parser and validator in a fresh worker."""
    import sensorium.ingest.lineprotocol  # noqa: F401
    import sensorium.quality.units  # noqa: F401


def parse_and_validate(
    body: bytes | str, fmt: str, precision: str, now: int, known: Any, quality: Any
) -> tuple[ParseResult, dict[str, Any]]:
    """In a parse worker: parse, then validate each batch with the request's clock reading (the
    same answer the server would get). The server re-validates a batch only if its schema check
    removed rows."""
    parsed = parse_body(body, fmt, precision, now, known)
    key = quality.model_dump_json()
    v = _WORKER_VALIDATORS.get(key)
    if v is None:
        v = _WORKER_VALIDATORS[key] = Validator(quality, now=time.time_ns)
    v._now = lambda: now
    return parsed, {m: v.validate(m, t) for m, t in parsed.batches.items() if t.num_rows}


class LazyLines:
    """``raw_lines`` for a result parsed in a worker: the body is split only if a line is asked
    for (rejects are rare; shipping every line back would double the transfer)."""

    def __init__(self, body: bytes | str) -> None:
        self._body = body
        self._lines: list[str] | None = None

    def _get(self) -> list[str]:
        if self._lines is None:
            text = self._body if isinstance(self._body, str) else self._body.decode("utf-8", "replace")
            self._lines = [ln.rstrip("\r") for ln in text.split("\n")]
        return self._lines

    def __len__(self) -> int:
        return len(self._get())

    def __getitem__(self, i: int) -> str:
        return self._get()[i]


def prefetch(items: Iterable[ParseResult], depth: int = 1) -> Iterator[ParseResult]:
    """Run the producer (reading + parsing) in a thread, ``depth`` items ahead."""
    import queue

    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for it in items:
                q.put(it)
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    t = threading.Thread(target=produce, daemon=True, name="load-prefetch")
    t.start()
    while True:
        it = q.get()
        if it is done:
            break
        if isinstance(it, BaseException):
            raise it
        yield it
    t.join()
