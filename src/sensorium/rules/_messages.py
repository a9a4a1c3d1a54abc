"""Alert messages: one human sentence per change, e.g.
``"temperature 61.2 °C on climate,device_id=d7 is above critical 60 (for 5m)"``."""

from __future__ import annotations

from typing import Any

from sensorium.rules._book import Subject
from sensorium.rules.model import CountRule, RateRule, SequenceRule, fmt_num, format_duration


def _val(x: float, unit: str) -> str:
    return f"{fmt_num(x)} {unit}" if unit else fmt_num(x)


def describe(
    rule: Any, subj: Subject, sev: int, level: tuple[str, str, float] | None, value: float, signal: float
) -> tuple[str, dict[str, Any]]:
    """(message, extra) of a change of an event-time rule to severity rank ``sev`` (0: resolved)
    at a point with ``value``; ``level`` is (direction, name, threshold) of the level reached,
    ``signal`` what the rule tested (the rate for rate rules)."""
    u = rule.unit
    on = f"{subj.field} {_val(value, u)} on {subj.series}"
    if isinstance(rule, SequenceRule):
        within = format_duration(rule.within)
        first, then = rule.first.describe(), rule.then.describe()
        if sev == 0:
            return f"{subj.field} on {subj.series}: no {first} then {then} for {within}", {}
        return f"{on}: {then} within {within} after {first}", {}
    if isinstance(rule, CountRule):
        within = format_duration(rule.within)
        cond = rule.condition.describe()
        if sev == 0:
            return f"{subj.field} on {subj.series}: fewer than {rule.count} readings {cond} within {within}", {}
        return f"{on}: {rule.count} readings {cond} within {within}", {"count": rule.count}
    extra: dict[str, Any] = {}
    head, per = f"{on} is", ""
    if isinstance(rule, RateRule):
        extra["rate_per_s"] = signal
        head, per = f"{subj.field} on {subj.series} changes by {_val(signal, u)}/s,", "/s"
    if sev == 0 or level is None:
        return f"{head} back within limits", extra
    direction, name, x = level
    extra.update(direction=direction, level=name, threshold=x)
    text = f"{head} {direction} {name} {fmt_num(x)}{per}"
    if rule.for_:
        text += f" (for {format_duration(rule.for_)})"
    return text, extra
