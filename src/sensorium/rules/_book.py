"""The alert book: one record per (rule, key) turning severity changes into transitions.

This is the small Python step of the engine: it sees only the rows where a rule's severity for a
key changes (and, for flapping alerts, the rows that may end the flapping).

- A change from no alert to a level fires a new alert, ``alert_id(rule, series, t)``, seq 1 —
  unless the key's previous alert resolved at most ``flap_window`` ago: then that alert reopens
  (same id, next seq).
- A change between levels updates the open alert (next seq); a change to no alert resolves it.
- ``flap_max_changes`` changes within ``flap_window`` mark the alert flapping; it stays flapping
  until no change happened for ``flap_window``, which the first point at or after that moment
  reports with a transition of its own (same state, next seq, ``flapping=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from sensorium.rules.model import SEVERITIES
from sensorium.rules.types import Transition, alert_id

_NO_TIME = -(1 << 62)
_SEVERITY = ("", *SEVERITIES)  # by rank
# Book._emit builds transitions by position (a third cheaper than by keyword, on the path every
# alert change takes): the fields it passes, in order.
_FIELDS = (
    "alert_id", "seq", "rule", "series", "measurement", "field", "tags", "state", "severity", "value",
    "event_time_ns", "fired_at_ns", "message", "bucket", "flapping", "extra",
)
if tuple(f.name for f in fields(Transition) if f.init)[: len(_FIELDS)] != _FIELDS:
    raise ImportError("sensorium.rules.types.Transition changed its fields: update Book._emit")


@dataclass(slots=True)
class Record:
    alert_id: str
    fired_at: int
    seq: int = 0
    severity: int = 0  # rank; 0: resolved
    changed_at: int = _NO_TIME  # time of the last change (flapping)
    resolved_at: int = _NO_TIME
    changes: list[int] = field(default_factory=list)  # times of the latest changes
    flapping: bool = False
    value: float | None = None
    event_time: int = _NO_TIME
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_state(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}  # type: ignore[attr-defined]

    @classmethod
    def from_state(cls, st: dict[str, Any]) -> Record:
        return cls(**st)


class Subject(NamedTuple):
    """What an alert is about (for transitions and messages)."""

    rule: str
    series: str
    measurement: str
    field: str | None
    tags: dict[str, str]
    bucket: str


class Book:
    def __init__(self, flap_window_ns: int, flap_max_changes: int) -> None:
        self.window = int(flap_window_ns)
        self.max_changes = max(2, int(flap_max_changes))
        self.records: dict[tuple[int, int], Record] = {}
        self.resolved: set[tuple[int, int]] = set()  # keys whose record is resolved

    def get(self, key: tuple[int, int]) -> Record | None:
        return self.records.get(key)

    def stable_from(self, key: tuple[int, int]) -> int | None:
        """Event time from which a flapping alert counts as stable (None: not flapping)."""
        rec = self.records.get(key)
        if rec is None or not rec.flapping:
            return None
        return rec.changed_at + self.window

    def _emit(self, rec: Record, subj: Subject, message: str | None = None) -> Transition:
        sev = rec.severity
        return Transition(  # by position (see _FIELDS)
            rec.alert_id,
            rec.seq,
            subj.rule,
            subj.series,
            subj.measurement,
            subj.field,
            dict(subj.tags),
            "firing" if sev else "resolved",
            _SEVERITY[sev],
            rec.value,
            rec.event_time,
            rec.fired_at,
            rec.message if message is None else message,
            subj.bucket,
            rec.flapping,
            dict(rec.extra),
        )

    def stabilise(self, key: tuple[int, int], subj: Subject, t: int) -> Transition | None:
        """The transition ending a flapping period at event time ``t`` (if it ends there)."""
        rec = self.records.get(key)
        if rec is None or not rec.flapping or t < rec.changed_at + self.window:
            return None
        rec.flapping = False
        rec.seq += 1
        rec.event_time = t
        rec.extra = {**rec.extra, "stable_since_ns": rec.changed_at}
        return self._emit(rec, subj, f"{rec.message} (no longer flapping)")

    def change(
        self,
        key: tuple[int, int],
        subj: Subject,
        t: int,
        severity: int,
        value: float | None,
        message: str,
        extra: dict[str, Any],
        fired_at: int | None = None,
    ) -> list[Transition]:
        """Apply a change of the desired severity at time ``t``; the resulting transitions."""
        out: list[Transition] = []
        rec = self.records.get(key)
        if rec is not None and rec.flapping and t >= rec.changed_at + self.window:
            tr = self.stabilise(key, subj, t)
            if tr is not None:
                out.append(tr)
        if rec is not None and rec.severity == 0 and t - rec.resolved_at > self.window:
            self._drop(key)  # resolved long enough ago: a new alert
            rec = None
        if rec is None:
            if severity == 0:
                return out
            start = t if fired_at is None else fired_at
            rec = Record(alert_id=alert_id(subj.rule, subj.series, start), fired_at=start)
            self.records[key] = rec
        elif severity == rec.severity:
            return out
        was_unstable = rec.flapping and t - rec.changed_at < self.window
        rec.seq += 1
        rec.severity = severity
        if severity == 0:
            rec.resolved_at = t
            self.resolved.add(key)
        else:
            self.resolved.discard(key)
        rec.changes.append(t)
        del rec.changes[: -self.max_changes]
        burst = len(rec.changes) >= self.max_changes and t - rec.changes[0] < self.window
        rec.flapping = was_unstable or burst
        rec.changed_at = t
        rec.value = value
        rec.event_time = t
        rec.message = message
        rec.extra = extra
        out.append(self._emit(rec, subj))
        return out

    def prune(self, key: tuple[int, int], now: int) -> None:
        """Forget a resolved, settled alert once ``now`` is past its reopening window."""
        rec = self.records.get(key)
        if rec is not None and rec.severity == 0 and not rec.flapping and now - rec.resolved_at > self.window:
            self._drop(key)

    def _drop(self, key: tuple[int, int]) -> None:
        self.records.pop(key, None)
        self.resolved.discard(key)
