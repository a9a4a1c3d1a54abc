"""What the rule engine hands to the alert store and the sinks: alert transitions.

A :class:`Transition` is one change of one alert (firing, a severity change, resolved). Its
``alert_id`` and ``seq`` are a deterministic function of the log (rule, series, event time of the
first firing), so replaying the log after a crash re-derives the same transitions with the same
keys: the alert store applies them idempotently and sinks use ``f"{alert_id}:{seq}"`` as the
idempotency key.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

State = Literal["firing", "resolved"]


def alert_id(rule: str, series: str, fired_at_ns: int) -> str:
    """Deterministic id of the alert of ``rule`` on ``series`` that first fired at ``fired_at_ns``."""
    h = hashlib.blake2b(f"{rule}\x1f{series}\x1f{fired_at_ns}".encode(), digest_size=10)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Transition:
    """One change of one alert. ``seq`` starts at 1 (the firing) and grows by one per change."""

    alert_id: str
    seq: int
    rule: str
    series: str  # opaque series key (see sensorium.stream.frame.series_key)
    measurement: str
    field: str | None  # None for rules not about one field (absence of a device)
    tags: dict[str, str]
    state: State
    severity: str  # level name: "warning", "critical", ... ("" when resolved)
    value: float | None  # the value that caused the change (None for absence)
    event_time_ns: int  # event time of the point that caused it (processing time for absence)
    fired_at_ns: int  # event time of the first firing of this alert
    message: str
    bucket: str = "default"
    flapping: bool = False
    extra: dict[str, Any] = dc_field(default_factory=dict)

    @property
    def key(self) -> str:
        """Idempotency key for sinks (webhook ``Idempotency-Key`` header, MQTT payload)."""
        return f"{self.alert_id}:{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = self.key
        return d
