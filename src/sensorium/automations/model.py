"""Automation definitions: a trigger, optional conditions, actions (docs/automations.md).

::

    [[automations]]
    name = "hallway-light-on-motion"
    description = "Turn the hallway light on when motion is detected after 10 pm"
    cooldown = "5m"
    trigger = { kind = "telemetry", measurement = "motion", field = "detected", tags = { room = "hallway" }, above = 0.5 }
    conditions = [{ kind = "time", after = "22:00", before = "06:00" }]
    actions = [{ kind = "command", device_id = "light-hallway", command = "turn_on", params = { level = 80 } }]

Triggers: ``telemetry`` (a value crosses into a condition: rising edge per series), ``state`` (a
value changes, optionally ``from``/``to``), ``alert`` (an alert of a rule fires or resolves),
``schedule`` (cron, in the automation's time zone). Conditions: ``time`` windows with days of
the week, judged at the trigger's time. Actions: ``command`` (device command over MQTT),
``notify`` (a notification row for a user), ``webhook`` (an HTTP POST). Text in actions may use
``{device_id}``, ``{room}`` (any tag), ``{value}``, ``{field}``, ``{measurement}``, ``{time}``,
``{automation}``, and for alert triggers ``{rule}``, ``{state}``, ``{severity}``, ``{message}``.
"""

from __future__ import annotations

import re
from datetime import datetime, time
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from sensorium.stream.windows import parse_duration

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
NS = 1_000_000_000


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Paris')") from None
    return name


class TelemetryTrigger(_M):
    kind: Literal["telemetry"]
    measurement: str = Field(description="Measurement name or glob.")
    field: str = Field(description="Field name or glob.")
    tags: dict[str, str] = Field(default_factory=dict, description="Tag equality or glob filters.")
    above: float | None = None
    below: float | None = None
    equals: float | None = None

    @model_validator(mode="after")
    def _one_test(self) -> TelemetryTrigger:
        if sum(x is not None for x in (self.above, self.below, self.equals)) != 1:
            raise ValueError("a telemetry trigger needs exactly one of above, below, equals")
        return self


class StateTrigger(_M):
    kind: Literal["state"]
    measurement: str
    field: str
    tags: dict[str, str] = Field(default_factory=dict)
    from_: float | bool | None = Field(None, alias="from")
    to: float | bool | None = None


class AlertTrigger(_M):
    kind: Literal["alert"]
    rule: str = Field("*", description="Rule name or glob.")
    state: Literal["firing", "resolved"] = "firing"
    severity: Literal["info", "warning", "critical"] | None = Field(
        None, description="Only alerts at least this severe (firing)."
    )


class ScheduleTrigger(_M):
    kind: Literal["schedule"]
    cron: str = Field(description="Five-field cron expression, e.g. '0 22 * * mon-fri'.")

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(f"invalid cron expression {v!r} (five fields: minute hour day month weekday)")
        return v


Trigger = Annotated[
    TelemetryTrigger | StateTrigger | AlertTrigger | ScheduleTrigger, Field(discriminator="kind")
]


class TimeCondition(_M):
    kind: Literal["time"] = "time"
    after: time | None = Field(None, description="Local time of day from which it holds ('22:00').")
    before: time | None = Field(None, description="Local time of day until which it holds ('06:00'); wraps midnight.")
    days: tuple[str, ...] = Field(DAYS, description="Days of the week it holds on (mon..sun).")

    @field_validator("days")
    @classmethod
    def _days(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [d for d in v if d.lower()[:3] not in DAYS]
        if bad or not v:
            raise ValueError(f"days must be among {', '.join(DAYS)} (got {bad or 'none'})")
        return tuple(d.lower()[:3] for d in v)

    def holds(self, local: datetime) -> bool:
        if DAYS[local.weekday()] not in self.days:
            return False
        t = local.time().replace(tzinfo=None)
        a, b = self.after, self.before
        if a is None and b is None:
            return True
        if a is not None and b is not None and a > b:  # wraps midnight: 22:00 .. 06:00
            return t >= a or t < b
        return (a is None or t >= a) and (b is None or t < b)


class CommandAction(_M):
    kind: Literal["command"]
    device_id: str = Field("{device_id}", description="Device to command (template).")
    command: str
    params: dict[str, Any] = Field(default_factory=dict)


class NotifyAction(_M):
    kind: Literal["notify"]
    user: str = Field("*", description="Recipient user id ('*': everyone).")
    title: str = "{automation}"
    message: str = "{automation} ran at {time}"


class WebhookAction(_M):
    kind: Literal["webhook"]
    url: str
    timeout_s: float = Field(5.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("webhook url must start with http:// or https://")
        return v


Action = Annotated[CommandAction | NotifyAction | WebhookAction, Field(discriminator="kind")]


class Automation(_M):
    name: str
    description: str = ""
    enabled: bool = True
    timezone: str = Field("UTC", description="IANA time zone of schedules and time conditions.")
    cooldown: str = Field("0s", description="Minimum time between two runs for one series ('5m').")
    trigger: Trigger
    conditions: tuple[TimeCondition, ...] = ()
    actions: tuple[Action, ...] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("name: 1-128 letters, digits, '_', '-', '.', starting with a letter or digit")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return _zone(v)

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, v: str) -> str:
        try:
            if parse_duration(v) < 0:
                raise ValueError
        except ValueError:
            raise ValueError(f"cooldown {v!r}: a duration such as '30s', '5m', '1h'") from None
        return v

    @property
    def cooldown_ns(self) -> int:
        return int(parse_duration(self.cooldown))

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def conditions_hold(self, t_ns: int) -> bool:
        local = datetime.fromtimestamp(t_ns / NS, self.zone)
        return all(c.holds(local) for c in self.conditions)

    def definition(self) -> dict[str, Any]:
        """The JSON form (what the store and the API keep)."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=False)
