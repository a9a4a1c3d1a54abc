"""Alert messages: one human sentence per change, e.g.
``"temperature 61.2 °C on climate,device_id=d7 is above critical 60 (for 5m)"``.

:func:`describer` does the work that does not depend on the change (levels, units, durations,
conditions) once per rule; the returned function only formats the value and the subject.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sensorium.rules._book import Subject
from sensorium.rules.model import CountRule, RateRule, SequenceRule, fmt_num, format_duration

#: (subject, severity rank (0: resolved), level index (-1: none), value, signal) → (message, extra)
Describe = Callable[[Subject, int, int, float, float], tuple[str, dict[str, Any]]]


def _val(x: float, unit: str) -> str:
    return f"{fmt_num(x)} {unit}" if unit else fmt_num(x)


def describer(rule: Any) -> Describe:
    """The message function of an event-time rule: ``(subject, sev, level, value, signal)`` →
    ``(message, extra)`` for a change to severity rank ``sev`` (0: resolved) at a point with
    ``value``; ``level`` indexes ``rule.levels()`` (the level reached, -1: none) and ``signal``
    is what the rule tested (the rate for rate rules)."""
    u = rule.unit
    if isinstance(rule, SequenceRule):
        within = format_duration(rule.within)
        first, then = rule.first.describe(), rule.then.describe()

        def sequence(subj: Subject, sev: int, level: int, value: float, signal: float) -> tuple[str, dict[str, Any]]:
            if sev == 0:
                return f"{subj.field} on {subj.series}: no {first} then {then} for {within}", {}
            return f"{subj.field} {_val(value, u)} on {subj.series}: {then} within {within} after {first}", {}

        return sequence
    if isinstance(rule, CountRule):
        within = format_duration(rule.within)
        cond = rule.condition.describe()
        n = rule.count

        def count(subj: Subject, sev: int, level: int, value: float, signal: float) -> tuple[str, dict[str, Any]]:
            if sev == 0:
                return f"{subj.field} on {subj.series}: fewer than {n} readings {cond} within {within}", {}
            return f"{subj.field} {_val(value, u)} on {subj.series}: {n} readings {cond} within {within}", {"count": n}

        return count
    per = "/s" if isinstance(rule, RateRule) else ""
    hold = f" (for {format_duration(rule.for_)})" if rule.for_ else ""
    levels = rule.levels()
    tails = [f" {direction} {name} {fmt_num(x)}{per}{hold}" for direction, name, x in levels]
    extras = [{"direction": direction, "level": name, "threshold": x} for direction, name, x in levels]
    if per:

        def rate(subj: Subject, sev: int, level: int, value: float, signal: float) -> tuple[str, dict[str, Any]]:
            head = f"{subj.field} on {subj.series} changes by {_val(signal, u)}/s,"
            if sev == 0 or level < 0:
                return f"{head} back within limits", {"rate_per_s": signal}
            return head + tails[level], {"rate_per_s": signal, **extras[level]}

        return rate

    def threshold(subj: Subject, sev: int, level: int, value: float, signal: float) -> tuple[str, dict[str, Any]]:
        head = f"{subj.field} {_val(value, u)} on {subj.series} is"
        if sev == 0 or level < 0:
            return f"{head} back within limits", {}
        return head + tails[level], dict(extras[level])

    return threshold
