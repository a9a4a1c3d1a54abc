"""Alert rules as typed, frozen models: what to watch (selectors) and when to alert (the kind).

Build rules in Python or load them from a file (:mod:`sensorium.rules.loader`); both go through
the same validation::

    from sensorium.rules.model import RuleSet, ThresholdRule, AbsenceRule

    rules = RuleSet(rules=[
        ThresholdRule(name="hot", measurement="climate", field="temperature",
                      above={"warning": 50, "critical": 60}, deadband=1, for_="5m", unit="°C"),
        AbsenceRule(name="silent", measurement="climate", group_by=["device_id"], after="10m"),
    ])

Every rule selects values by ``measurement``, ``field`` (plus ``stat`` for a derived value:
``field="temperature", stat="std_10"`` watches ``"temperature:std_10"``), ``bucket`` and ``tags``
(equality; a value holding ``*``, ``?`` or ``[`` is a glob pattern, as are ``measurement``,
``field`` and ``bucket``). Durations are nanoseconds once parsed; they are written ``"30s"``,
``"5m"``, ``"1h30m"``, ``"500ms"`` or as a number of seconds.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    field_validator,
    model_validator,
)

#: Alert levels, least severe first. A rule's levels are named with these.
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")
SEVERITY_RANK: dict[str, int] = {s: i + 1 for i, s in enumerate(SEVERITIES)}
KINDS: tuple[str, ...] = ("threshold", "rate", "absence", "sequence", "count")

NS_PER_S = 1_000_000_000
_UNITS_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_S,
    "m": 60 * NS_PER_S,
    "h": 3600 * NS_PER_S,
    "d": 86400 * NS_PER_S,
    "w": 7 * 86400 * NS_PER_S,
}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ns|us|µs|ms|s|m|h|d|w)\s*")
_GLOB = re.compile(r"[*?\[]")


def parse_duration(value: Any) -> int:
    """Nanoseconds of ``"90s"``, ``"5m"``, ``"1h30m"``, ``"250ms"``, a number of seconds or a timedelta."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}: use a number and a unit, e.g. 30s, 5m, 1h")
    if isinstance(value, timedelta):
        return round(value.total_seconds() * NS_PER_S)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"bad duration {value!r}: must be a finite number of seconds >= 0")
        return round(value * NS_PER_S)
    if isinstance(value, str):
        text = value.strip()
        pos, total, parts = 0, 0.0, 0
        while pos < len(text):
            m = _DURATION_PART.match(text, pos)
            if m is None:
                break
            total += float(m.group(1)) * _UNITS_NS[m.group(2)]
            pos, parts = m.end(), parts + 1
        if parts and pos == len(text):
            return round(total)
        try:
            return parse_duration(float(text))
        except ValueError:
            pass
    raise ValueError(
        f"bad duration {value!r}: use a number and a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h30m"
    )


def format_duration(ns: int) -> str:
    """Short human form of a duration: ``"5m"``, ``"1h30m"``, ``"1.5s"``, ``"250ms"``."""
    if ns == 0:
        return "0s"
    if ns % NS_PER_S:
        if ns < NS_PER_S:
            return f"{ns / 1e6:g}ms"
        return f"{ns / 1e9:g}s"
    s = ns // NS_PER_S
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


#: A duration: accepts ``"5m"``-style strings, seconds or timedeltas; holds nanoseconds;
#: serialises back to the short string form.
Duration = Annotated[int, BeforeValidator(parse_duration), PlainSerializer(format_duration)]


def _longer_than_zero(v: int, info: ValidationInfo) -> int:
    if v <= 0:
        raise ValueError(f"'{info.field_name}' must be longer than 0s")
    return v


#: a duration that must be longer than 0 (absence ``after``, sequence and count ``within``)
PositiveDuration = Annotated[Duration, AfterValidator(_longer_than_zero)]


def suggest(word: str, choices: Any) -> str:
    """``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def is_glob(pattern: str) -> bool:
    return bool(_GLOB.search(pattern))


def fmt_num(x: float) -> str:
    """A number as people write it: 60, 61.2, -0.35, 1013.25 (6 significant digits)."""
    return f"{x:.6g}"


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True
    )


class Condition(_Model):
    """A test of one value: any of ``gt``, ``ge``, ``lt``, ``le`` (all that are given must hold)."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        if self.gt is None and self.ge is None and self.lt is None and self.le is None:
            raise ValueError("a condition needs at least one of gt, ge, lt, le (e.g. { gt = 100 })")
        return self

    def test(self, v: np.ndarray) -> np.ndarray:
        """Vectorised: which values meet the condition (NaN never does)."""
        out = np.ones(v.shape, dtype=bool)
        if self.gt is not None:
            out &= v > self.gt
        if self.ge is not None:
            out &= v >= self.ge
        if self.lt is not None:
            out &= v < self.lt
        if self.le is not None:
            out &= v <= self.le
        return out

    def describe(self) -> str:
        parts = []
        for op, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            x = getattr(self, op)
            if x is not None:
                parts.append(f"{sym} {fmt_num(x)}")
        return " and ".join(parts)


def _check_severity(value: str) -> str:
    if value not in SEVERITY_RANK:
        raise ValueError(
            f"unknown severity '{value}'{suggest(value, SEVERITIES)}; use one of {', '.join(SEVERITIES)}"
        )
    return value


Severity = Annotated[str, BeforeValidator(_check_severity)]


class _RuleBase(_Model):
    name: str = Field(min_length=1, description="Unique name; part of every alert id.")
    description: str = ""
    enabled: bool = True
    bucket: str | None = Field(None, description="Only series of this bucket (glob allowed).")
    measurement: str | None = Field(None, description="Only series of this measurement (glob allowed).")
    field: str | None = Field(None, description="The field watched (glob allowed).")
    stat: str | None = Field(
        None, description="Watch a derived value: field 'temperature', stat 'std_10' is 'temperature:std_10'."
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Tag equality (glob allowed in values).")
    unit: str = Field("", description="Unit shown in messages, e.g. '°C'.")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v != v.strip() or any(c in v for c in "\x1f\n\r\t"):
            raise ValueError(f"bad rule name {v!r}: no surrounding spaces or control characters")
        return v

    @property
    def target(self) -> str | None:
        """The field name the rule reads (``"temperature:std_10"`` for a stat), or None (any)."""
        if self.field is None:
            return None if self.stat is None else f"*:{self.stat}"
        return self.field if self.stat is None else f"{self.field}:{self.stat}"

    def matches_field(self, name: str) -> bool:
        """Whether a field name of the values frame is watched by this rule."""
        target = self.target
        if target is None:
            return True
        if ":" in name and ":" not in target:
            return False  # a plain field pattern never matches derived values
        return fnmatchcase(name, target) if is_glob(target) else name == target


def _check_levels(levels: dict[str, float] | None, direction: str) -> dict[str, float] | None:
    if levels is None:
        return None
    if not levels:
        raise ValueError(f"'{direction}' names no level; e.g. {direction} = {{ warning = 50, critical = 60 }}")
    for name, x in levels.items():
        if name not in SEVERITY_RANK:
            raise ValueError(
                f"unknown level '{name}' in '{direction}'{suggest(name, SEVERITIES)}; "
                f"levels are {', '.join(SEVERITIES)}"
            )
        if not math.isfinite(x):
            raise ValueError(f"level '{name}' in '{direction}' must be a finite number")
    ordered = sorted(levels.items(), key=lambda kv: SEVERITY_RANK[kv[0]])
    for (lo_name, lo), (hi_name, hi) in zip(ordered, ordered[1:], strict=False):
        if direction == "above" and not hi > lo:
            raise ValueError(
                f"levels out of order in 'above': {hi_name} ({fmt_num(hi)}) must be higher than "
                f"{lo_name} ({fmt_num(lo)})"
            )
        if direction == "below" and not hi < lo:
            raise ValueError(
                f"levels out of order in 'below': {hi_name} ({fmt_num(hi)}) must be lower than "
                f"{lo_name} ({fmt_num(lo)})"
            )
    return dict(ordered)


class _LevelRule(_RuleBase):
    field: str = Field(description="The field watched (glob allowed).")  # type: ignore[assignment]
    above: dict[str, float] | None = Field(
        None, description="Levels reached at or above a value, e.g. {warning = 50, critical = 60}."
    )
    below: dict[str, float] | None = Field(
        None, description="Levels reached at or below a value, e.g. {warning = -10, critical = -20}."
    )
    deadband: float = Field(
        0.0, ge=0, description="A level clears only once the value is back inside by this much."
    )
    for_: Duration | None = Field(
        None, alias="for", description="The condition must hold this long (event time) before it fires."
    )

    @field_validator("above")
    @classmethod
    def _above(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return _check_levels(v, "above")

    @field_validator("below")
    @classmethod
    def _below(cls, v: dict[str, float] | None, info: ValidationInfo) -> dict[str, float] | None:
        v = _check_levels(v, "below")
        above = info.data.get("above")
        if v and above:
            hi_below = max(v.items(), key=lambda kv: kv[1])
            lo_above = min(above.items(), key=lambda kv: kv[1])
            if hi_below[1] >= lo_above[1]:
                raise ValueError(
                    f"'below' {hi_below[0]} ({fmt_num(hi_below[1])}) is not under 'above' "
                    f"{lo_above[0]} ({fmt_num(lo_above[1])}): a value could be both"
                )
        return v

    @model_validator(mode="after")
    def _some_level(self) -> _LevelRule:
        if not self.above and not self.below:
            raise ValueError(f"rule '{self.name}' needs 'above' and/or 'below' levels")
        return self

    def levels(self) -> list[tuple[str, str, float]]:
        """(direction, level name, threshold) of every level, least severe first per direction."""
        out = [("above", n, x) for n, x in (self.above or {}).items()]
        out += [("below", n, x) for n, x in (self.below or {}).items()]
        return out


class ThresholdRule(_LevelRule):
    """Levels with hysteresis: a level is reached at ``value >= above.<level>`` (or ``<= below.<level>``)
    and clears once the value is back inside by ``deadband``; with ``for`` it must hold that long
    (event time) first. The alert's severity is the highest level reached."""

    kind: Literal["threshold"] = "threshold"


class RateRule(_LevelRule):
    """Levels on the rate of change per second between consecutive points of a series (same
    hysteresis, deadband and ``for`` as a threshold rule)."""

    kind: Literal["rate"] = "rate"


class _EventRule(_RuleBase):
    severity: Severity = Field("warning", description="Level of the alert when the rule matches.")


class AbsenceRule(_EventRule):
    """No data from a series (or from a group of series, ``group_by`` tag names) for ``after``,
    in processing time (the engine's ``tick``); resolves when data returns. ``field`` (optional)
    limits what counts as data."""

    kind: Literal["absence"] = "absence"
    after: PositiveDuration = Field(description="Silence (processing time) before the alert fires.")
    group_by: tuple[str, ...] = Field(
        (), description="Tag names: one alert per group of series (e.g. device_id); empty: per series."
    )


class SequenceRule(_EventRule):
    """``first`` followed by ``then`` within ``within`` (event time) on the same series and field.
    The alert fires at the ``then`` point and resolves once no match happened for ``within``."""

    kind: Literal["sequence"] = "sequence"
    field: str = Field(description="The field watched (glob allowed).")  # type: ignore[assignment]
    first: Condition
    then: Condition
    within: PositiveDuration


class CountRule(_EventRule):
    """``count`` points meeting ``condition`` within a sliding ``within`` (event time). Fires at the
    point that completes the count; resolves once fewer than ``count`` lie in the window."""

    kind: Literal["count"] = "count"
    field: str = Field(description="The field watched (glob allowed).")  # type: ignore[assignment]
    condition: Condition
    count: int = Field(ge=1, le=10_000)
    within: PositiveDuration


Rule = Annotated[
    ThresholdRule | RateRule | AbsenceRule | SequenceRule | CountRule, Field(discriminator="kind")
]
RULE_TYPES: dict[str, type[_RuleBase]] = {
    "threshold": ThresholdRule,
    "rate": RateRule,
    "absence": AbsenceRule,
    "sequence": SequenceRule,
    "count": CountRule,
}


class RuleSet(_Model):
    """An ordered set of rules with unique names."""

    rules: tuple[Rule, ...] = ()

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: tuple[Any, ...]) -> tuple[Any, ...]:
        seen: set[str] = set()
        for r in rules:
            if r.name in seen:
                raise ValueError(f"duplicate rule name '{r.name}'")
            seen.add(r.name)
        return rules

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def get(self, name: str) -> Any:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(name)

    @classmethod
    def from_dicts(cls, rules: list[Mapping[str, Any]]) -> RuleSet:
        return cls.model_validate({"rules": list(rules)})
