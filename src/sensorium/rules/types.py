"""What the rule engine hands to the alert store and the sinks: alert transitions.

A :class:`Transition` is one change of one alert (firing, a severity change, resolved). Its
``alert_id`` and ``seq`` are a deterministic function of the log (rule, series, event time of the
first firing), so replaying the log after a crash re-derives the same transitions with the same
keys: the alert store applies them idempotently and sinks use ``f"{alert_id}:{seq}"`` as the
idempotency key.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

import orjson

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
    # what to_json() computed: a transition is built once, then only read, and serialised for the
    # alert history, the outbox and the live feed alike
    _json: str | None = dc_field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> str:
        """Idempotency key for sinks (webhook ``Idempotency-Key`` header, MQTT payload)."""
        return f"{self.alert_id}:{self.seq}"

    def to_dict(self) -> dict[str, Any]:
        """The fields (``tags`` and ``extra`` copied) and ``key``: what sinks, the live feed and
        the alert history carry. Same content and key order as ``dataclasses.asdict`` gave."""
        d = self._fields()
        d["tags"] = dict(self.tags)
        d["extra"] = {
            k: copy.deepcopy(v) if isinstance(v, dict | list | tuple | set) else v
            for k, v in self.extra.items()
        }
        return d

    def to_json(self) -> str:
        """``to_dict()`` as JSON (orjson), computed once per transition and then reused: the
        alert history, the outbox payload and the live feed's SSE all carry these bytes."""
        j = getattr(self, "_json", None)  # unset in a transition unpickled from before it existed
        if j is None:
            j = orjson.dumps(self._fields(), option=orjson.OPT_NON_STR_KEYS, default=str).decode()
            object.__setattr__(self, "_json", j)
        return j

    def _fields(self) -> dict[str, Any]:
        return {
            "alert_id": self.alert_id,
            "seq": self.seq,
            "rule": self.rule,
            "series": self.series,
            "measurement": self.measurement,
            "field": self.field,
            "tags": self.tags,
            "state": self.state,
            "severity": self.severity,
            "value": self.value,
            "event_time_ns": self.event_time_ns,
            "fired_at_ns": self.fired_at_ns,
            "message": self.message,
            "bucket": self.bucket,
            "flapping": self.flapping,
            "extra": self.extra,
            "key": f"{self.alert_id}:{self.seq}",
        }
