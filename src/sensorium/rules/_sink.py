"""What every alert sink shares: the port (:class:`Sink`), its failure (:class:`DeliveryError`) and
the retry schedule (:func:`backoff_s`), and the simplest sink (:class:`LogSink`)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from sensorium.errors import SensoriumError

log = logging.getLogger("sensorium.alerts")


class DeliveryError(SensoriumError):
    """One delivery attempt failed. ``permanent``: retrying cannot help (the delivery goes dead at
    once); ``retry_after_s``: the receiver asked for at least this long a wait."""

    code = "delivery_failed"

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, permanent=permanent, retry_after_s=retry_after_s)
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class Sink(Protocol):
    """Delivers one alert change. ``send`` returns when the receiver has it and raises
    :class:`DeliveryError` (or anything else: a failed attempt too) when not. ``name`` is stable
    across restarts: it keys the outbox rows."""

    name: str
    target: str  # where it delivers, for people (no secrets)
    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float

    def send(self, payload: Mapping[str, Any], body: bytes) -> None: ...

    def close(self) -> None: ...


def backoff_s(
    attempts: int, initial_s: float, max_s: float, *, jitter: float = 0.0, key: str = ""
) -> float:
    """Delay before the next attempt after ``attempts`` failed ones: ``initial_s`` doubled per
    further attempt, capped at ``max_s``, then shortened by up to ``jitter`` (a fraction) by an
    amount derived from ``key`` and ``attempts`` -- spread between deliveries, yet reproducible."""
    delay = min(max_s, initial_s * 2.0 ** max(0, attempts - 1))
    if jitter > 0:
        h = hashlib.blake2b(f"{key}\x1f{attempts}".encode(), digest_size=8).digest()
        delay *= 1.0 - min(1.0, jitter) * (int.from_bytes(h, "big") / 2.0**64)
    return delay


class LogSink:
    """One line per alert change on logger ``sensorium.alerts``: WARNING firing, INFO resolved."""

    name = "log"
    target = "logger sensorium.alerts"
    max_attempts = 1
    backoff_initial_s = 1.0
    backoff_max_s = 1.0

    def send(self, payload: Mapping[str, Any], body: bytes) -> None:
        firing = payload.get("state") == "firing"
        log.log(
            logging.WARNING if firing else logging.INFO,
            "alert %s rule=%s severity=%s series=%s value=%s message=%s key=%s",
            payload.get("state"),
            payload.get("rule"),
            payload.get("severity") or "-",
            payload.get("series"),
            payload.get("value"),
            payload.get("message"),
            payload.get("key"),
        )

    def close(self) -> None:
        pass
