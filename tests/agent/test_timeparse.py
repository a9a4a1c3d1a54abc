"""Time expressions against a fixed clock (2026-03-10T12:00Z, a Tuesday)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sensorium.agent.timeparse import TimeParser

NS = 1_000_000_000
NOW = int(datetime(2026, 3, 10, 12, tzinfo=UTC).timestamp()) * NS


def at(*a: int) -> int:
    return int(datetime(*a, tzinfo=UTC).timestamp()) * NS  # type: ignore[misc]


@pytest.mark.parametrize(("text", "start", "end"), [
    ("yesterday", at(2026, 3, 9), at(2026, 3, 10)),
    ("today", at(2026, 3, 10), NOW),
    ("the day before yesterday", at(2026, 3, 8), at(2026, 3, 9)),
    ("in the last 24 hours", NOW - 86400 * NS, NOW),
    ("past 3 days", NOW - 3 * 86400 * NS, NOW),
    ("last week", at(2026, 3, 2), at(2026, 3, 9)),
    ("in the last week", NOW - 7 * 86400 * NS, NOW),
    ("this week", at(2026, 3, 9), NOW),
    ("since monday 8 am", at(2026, 3, 9, 8), NOW),
    ("since yesterday at 6 pm", at(2026, 3, 9, 18), NOW),
    ("in march", at(2026, 3, 1), at(2026, 4, 1)),
    ("in april", at(2025, 4, 1), at(2025, 5, 1)),  # the most recent April
    ("in february 2026", at(2026, 2, 1), at(2026, 3, 1)),
    ("on 2026-01-03", at(2026, 1, 3), at(2026, 1, 4)),
    ("on march 5th", at(2026, 3, 5), at(2026, 3, 6)),
    ("on monday", at(2026, 3, 9), at(2026, 3, 10)),
    ("on tuesday", at(2026, 3, 10), at(2026, 3, 11)),
    ("between 2026-03-01 and 2026-03-03", at(2026, 3, 1), at(2026, 3, 4)),
    ("between 8 am and 10 am yesterday", at(2026, 3, 9, 8), at(2026, 3, 9, 10)),
    ("between monday and wednesday", at(2026, 3, 2), at(2026, 3, 5)),
    ("from 2026-03-02 10:00 to 2026-03-02 12:00", at(2026, 3, 2, 10), at(2026, 3, 2, 12)),
    ("last month", at(2026, 2, 1), at(2026, 3, 1)),
    ("this morning", at(2026, 3, 10, 6), at(2026, 3, 10, 12)),
    ("tomorrow", at(2026, 3, 11), at(2026, 3, 12)),
    ("next 6 hours", NOW, NOW + 6 * 3600 * NS),
    ("over the weekend", at(2026, 3, 7), at(2026, 3, 9)),  # the most recent Saturday → Monday
    ("last weekend", at(2026, 3, 7), at(2026, 3, 9)),
    ("next weekend", at(2026, 3, 14), at(2026, 3, 16)),
    ("yesterday at 8 am", at(2026, 3, 9, 8), at(2026, 3, 9, 9)),
    ("at 3 pm on sunday", at(2026, 3, 8, 15), at(2026, 3, 8, 16)),
    ("over the last fortnight", NOW - 14 * 86400 * NS, NOW),
    ("in the past 48h", NOW - 2 * 86400 * NS, NOW),
    ("last 3d", NOW - 3 * 86400 * NS, NOW),
    ("3 hours ago", NOW - 3 * 3600 * NS, NOW - 2 * 3600 * NS),
    ("2 days ago", at(2026, 3, 8), at(2026, 3, 9)),
    ("2 weeks ago", at(2026, 2, 23), at(2026, 3, 2)),
])
def test_time_expressions(text: str, start: int, end: int) -> None:
    tr, rest = TimeParser(NOW).parse(f"average temperature {text} please")
    assert tr is not None, text
    assert (tr.start_ns, tr.end_ns) == (start, end), tr.label
    assert rest == "average temperature please"
    assert tr.label  # says how it was understood


def test_local_time_zone_moves_the_day() -> None:
    tr, _ = TimeParser(NOW, "Europe/Paris").parse("yesterday")
    assert tr is not None and tr.start_ns == at(2026, 3, 8, 23)


def test_numbers_that_are_not_times_stay() -> None:
    tr, rest = TimeParser(NOW).parse("when was it above 25 degrees")
    assert tr is None and rest == "when was it above 25 degrees"


def test_the_weekend_in_progress_and_the_one_before() -> None:
    sunday = at(2026, 3, 8, 15)
    tr, _ = TimeParser(sunday).parse("average temperature this weekend")
    assert tr is not None and (tr.start_ns, tr.end_ns) == (at(2026, 3, 7), sunday)  # so far
    tr, _ = TimeParser(sunday).parse("average temperature last weekend")
    assert tr is not None and (tr.start_ns, tr.end_ns) == (at(2026, 2, 28), at(2026, 3, 2))


@pytest.mark.parametrize("text", ["average temperature this weekend", "average temperature on weekends"])
def test_weekends_it_cannot_tell_are_left_unread(text: str) -> None:
    # on a Tuesday "this weekend" may be the past or the coming one; "weekends" is every one
    tr, rest = TimeParser(NOW).parse(text)
    assert tr is None and rest == text
