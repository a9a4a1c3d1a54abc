"""Data-quality rules: built-in domain defaults plus the user's rules from settings.

A :class:`Rule` checks one field (optionally only in one measurement): a value range, a canonical unit
(values in other units are converted first, see :mod:`sensorium.quality.units`), tags the point must
carry, and a set of allowed values. Its ``action`` says what happens to a failing row: ``reject``
(the row goes to the dead letters) or ``flag`` (the row is kept with a lower ``quality``).

Precedence: user rules (``QualitySettings.rules``, keyed by field name) replace the built-in rule of
the same field and scope; for one measurement, a rule scoped to that measurement replaces the generic
(any-measurement) rules of the same field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from sensorium.config import QualitySettings, RuleSettings
from sensorium.errors import ConfigError

Action = Literal["reject", "flag"]
AllowedValue = str | float | int | bool


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule for one field."""

    field: str
    measurement: str | None = None
    min: float | None = None
    max: float | None = None
    unit: str | None = None  # canonical unit, as written into the ``unit`` tag after conversion
    required_tags: tuple[str, ...] = ()
    allowed_values: tuple[AllowedValue, ...] | None = None
    action: Action = "reject"

    def applies_to(self, measurement: str) -> bool:
        return self.measurement is None or self.measurement == measurement

    @classmethod
    def from_settings(cls, field: str, s: RuleSettings) -> Rule:
        return cls(
            field=field,
            measurement=s.measurement,
            min=s.min,
            max=s.max,
            unit=s.unit,
            required_tags=tuple(s.required_tags),
            allowed_values=None if s.allowed_values is None else tuple(s.allowed_values),
            action=s.action,
        )


def _default(field: str, lo: float, hi: float, unit: str) -> Rule:
    return Rule(field=field, min=lo, max=hi, unit=unit)


#: The built-in domain rules (``QualitySettings.use_default_rules``). ``fraction`` is a dimensionless
#: unit defined by :mod:`sensorium.quality.units` (``unit=%`` battery values are divided by 100).
DEFAULT_RULES: tuple[Rule, ...] = (
    _default("temperature", -50.0, 100.0, "degC"),
    _default("humidity", 0.0, 100.0, "percent"),
    _default("pressure", 800.0, 1200.0, "hPa"),
    _default("voltage", 0.0, 50.0, "V"),
    _default("battery", 0.0, 1.0, "fraction"),
    _default("rssi", -120.0, 0.0, "dBm"),
    _default("signal_strength", -120.0, 0.0, "dBm"),
)


def effective_rules(settings: QualitySettings) -> dict[str, list[Rule]]:
    """All rules in force, by field name. A user rule replaces a default of the same field and scope.

    Raises :class:`ConfigError` for a rule whose canonical unit is unknown or whose bounds are crossed.
    """
    from sensorium.quality.units import UnknownUnit, resolve_unit

    out: dict[str, list[Rule]] = {}
    if settings.use_default_rules:
        for r in DEFAULT_RULES:
            out.setdefault(r.field, []).append(r)
    for field, rs in settings.rules.items():
        rule = Rule.from_settings(field, rs)
        if rule.min is not None and rule.max is not None and rule.min > rule.max:
            raise ConfigError(f"quality rule for '{field}': min {rule.min} is above max {rule.max}")
        if rule.unit is not None:
            try:
                resolve_unit(rule.unit)
            except UnknownUnit:
                raise ConfigError(
                    f"quality rule for '{field}': unknown unit '{rule.unit}'"
                ) from None
        kept = [r for r in out.get(field, []) if r.measurement != rule.measurement]
        out[field] = [*kept, rule]
    return out


def rules_for(rules: Mapping[str, list[Rule]], measurement: str) -> dict[str, list[Rule]]:
    """The rules that apply in ``measurement``: per field, the rules scoped to it if any, else the
    generic ones."""
    out: dict[str, list[Rule]] = {}
    for field, rs in rules.items():
        scoped = [r for r in rs if r.measurement == measurement]
        chosen = scoped or [r for r in rs if r.measurement is None]
        if chosen:
            out[field] = chosen
    return out
