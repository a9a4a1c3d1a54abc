"""Time expressions in questions → a half-open UTC range ``[start, end)``, relative to the
platform clock, in the agent's time zone (``[agent] timezone``, default UTC).

Understood (case-insensitive)::

    today · yesterday · the day before yesterday · tomorrow · this morning/afternoon/evening ·
    (over) the weekend · last/next weekend (Saturday 00:00 → Monday 00:00) ·
    last night · tonight · this week/month/year · last week/month/year (the previous calendar one)
    last|past N minutes/hours/days/weeks/months (rolling) · the last hour/day (rolling) ·
    next N hours/days · since <point> · between <point> and <point> · from <point> to <point> ·
    on Monday · on 2026-01-03 · on March 5 · in March [2026] · <point> = a weekday, a date,
    today/yesterday, optionally with a time of day (8 am, 08:30, noon, midnight) ·
    yesterday at 8 am / at 3 pm on Monday (that hour) · N hours ago (that hour) · N days/weeks/months
    ago (that calendar day, week, month)

Weekdays mean the most recent one (today's, if today is that day). Months without a year mean
the most recent one not in the future. Every range says how it was understood (``label``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

NS = 1_000_000_000
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
_MON_ABBR = {m[:3]: i + 1 for i, m in enumerate(MONTHS)} | {"sept": 9}
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
                "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
                "fifteen": 15, "twenty": 20, "thirty": 30, "fourty": 40, "forty": 40,
                "sixty": 60, "ninety": 90}
_UNIT_S = {"second": 1, "minute": 60, "min": 60, "hour": 3600, "hr": 3600, "h": 3600, "day": 86400, "d": 86400,
           "week": 7 * 86400, "wk": 7 * 86400, "fortnight": 14 * 86400, "month": 30 * 86400, "year": 365 * 86400}

_NUM = r"(?:\d+|" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")"
_UNIT = r"(second|minute|min|hour|hr|h|day|d|week|wk|fortnight|month|year)s?"
_FULL_UNIT = {"min": "minute", "hr": "hour", "h": "hour", "d": "day", "wk": "week"}
_WD = r"(" + "|".join(WEEKDAYS) + r"|mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)"
_MONTH = r"(" + "|".join(MONTHS) + r"|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)\.?"
_TOD = r"(?:at\s+)?(?:(noon|midnight)|(\d{1,2})(?::(\d{2}))?\s*(am|pm|a\.m\.|p\.m\.)|(\d{1,2}):(\d{2}))"
_DATE_ISO = r"(\d{4})-(\d{2})-(\d{2})(?:[t ](\d{2}):(\d{2})(?::(\d{2}))?z?)?"


@dataclass(frozen=True)
class TimeRange:
    start_ns: int | None
    end_ns: int | None
    text: str  # the words it was read from ("" when defaulted)
    label: str  # how it was understood
    span: str | None = None  # "day", "week", "month", "hour" ... (for "the day before")

    def to_dict(self) -> dict[str, object]:
        return {"start": iso(self.start_ns), "end": iso(self.end_ns), "text": self.text,
                "understood": self.label}

    def shifted(self, back_ns: int, text: str) -> TimeRange:
        assert self.start_ns is not None and self.end_ns is not None
        s, e = self.start_ns - back_ns, self.end_ns - back_ns
        return TimeRange(s, e, text, f"{text}: {fmt_range(s, e)}", self.span)


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    dt = datetime.fromtimestamp(ns // NS, UTC).replace(microsecond=(ns % NS) // 1000)
    return dt.isoformat().replace("+00:00", "Z")


def _short(ns: int, tz: ZoneInfo) -> str:
    dt = datetime.fromtimestamp(ns / NS, tz)
    s = dt.strftime("%Y-%m-%d %H:%M")
    return s + ("" if tz.key == "UTC" else f" {dt.strftime('%Z')}")


def fmt_range(start: int | None, end: int | None, tz: ZoneInfo | None = None) -> str:
    tz = tz or ZoneInfo("UTC")
    a = _short(start, tz) if start is not None else "the first reading"
    b = _short(end, tz) if end is not None else "now"
    return f"{a} → {b}" + (" UTC" if tz.key == "UTC" else "")


class TimeParser:
    """Finds and resolves the time expression of a question (at most one; see the module docs)."""

    def __init__(self, now_ns: int, tz: str = "UTC") -> None:
        self.tz = ZoneInfo(tz)
        self.now_ns = now_ns
        self.now = datetime.fromtimestamp(now_ns / NS, self.tz)
        self.today = self.now.date()

    # -- helpers -------------------------------------------------------------------------------
    def _ns(self, dt: datetime) -> int:
        return int(dt.timestamp()) * NS + dt.microsecond * 1000

    def _day_start(self, d: date) -> int:
        return self._ns(datetime.combine(d, dtime(0), self.tz))

    def _range(self, s: int, e: int, text: str, what: str, span: str | None) -> TimeRange:
        return TimeRange(s, e, text, f"{what}: {fmt_range(s, e, self.tz)}", span)

    def _weekday(self, name: str) -> date:
        idx = next(i for i, w in enumerate(WEEKDAYS) if w.startswith(name[:3]))
        back = (self.today.weekday() - idx) % 7
        return self.today - timedelta(days=back)

    def _month(self, name: str, year: str | None) -> tuple[date, date]:
        m = next((i + 1 for i, n in enumerate(MONTHS) if n == name), None) or _MON_ABBR[name[:4] if name.startswith("sept") else name[:3]]
        y = int(year) if year else self.today.year
        if not year and date(y, m, 1) > self.today:
            y -= 1
        end = date(y + (m == 12), m % 12 + 1, 1)
        return date(y, m, 1), end

    @staticmethod
    def _tod(m: re.Match[str], base: int) -> dtime | None:
        """A time of day from a _TOD match whose groups start at ``base``."""
        word, h, mi, ampm, h24, m24 = (m.group(base + i) for i in range(6))
        if word:
            return dtime(12) if word == "noon" else dtime(0)
        if h24 is not None:
            hh, mm = int(h24), int(m24)
        elif h is not None:
            hh, mm = int(h), int(mi or 0)
            if hh > 12:
                return None
            pm = ampm is not None and ampm.startswith("p")
            hh = (hh % 12) + (12 if pm else 0)
        else:
            return None
        if hh > 23 or mm > 59:
            return None
        return dtime(hh, mm)

    # -- points ----------------------------------------------------------------------------------
    _POINT = (
        r"(?:(?:on\s+|last\s+)?" + _WD + r"|(today|yesterday)|" + _DATE_ISO + r"|" + _MONTH
        + r"\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(\d{4}))?|(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH
        + r"(?:,?\s+(\d{4}))?)?(?:\s*" + _TOD + r")?"
    )

    def _point(self, m: re.Match[str], base: int) -> tuple[int, bool] | None:
        """(ns, had a time of day) for a _POINT match whose groups start at ``base``."""
        g = [m.group(base + i) for i in range(20)]
        wd, rel, y, mo, d, hh, mi, ss, mname, mday, myear, dday, dmname, dyear = g[:14]
        tod = self._tod(m, base + 14)
        day: date | None = None
        at: datetime | None = None
        if wd:
            day = self._weekday(wd)
        elif rel:
            day = self.today - timedelta(days=1 if rel == "yesterday" else 0)
        elif y:
            try:
                day = date(int(y), int(mo), int(d))
            except ValueError:
                return None
            if hh is not None:
                at = datetime(day.year, day.month, day.day, int(hh), int(mi), int(ss or 0), tzinfo=self.tz)
        elif mname or dmname:
            try:
                mstart, _ = self._month(mname or dmname, myear or dyear)
                day = mstart.replace(day=int(mday or dday))
            except ValueError:
                return None
        if day is None and tod is None:
            return None
        if at is None:
            day = day or self.today
            at = datetime.combine(day, tod or dtime(0), self.tz)
        return self._ns(at), tod is not None or hh is not None

    # -- the expression ----------------------------------------------------------------------------
    def parse(self, text: str) -> tuple[TimeRange | None, str]:
        """(the range, ``text`` without the words it was read from)."""
        for fn in (self._weekend, self._between, self._since, self._ago, self._rolling, self._day_at, self._named,
                   self._on_day, self._in_month, self._bare_point):
            hit = fn(text)
            if hit is not None:
                tr, (a, b) = hit
                rest = (text[:a] + " " + text[b:]).strip()
                return tr, re.sub(r"\s+", " ", rest)
        return None, text

    Hit = tuple[TimeRange, tuple[int, int]]

    def _between(self, text: str) -> Hit | None:
        p = self._POINT
        for rx in (r"\bbetween\s+" + p + r"\s+and\s+" + p + r"(?=\W|$)",
                   r"\bfrom\s+" + p + r"\s+(?:to|until|till)\s+" + p + r"(?=\W|$)"):
            m = re.search(rx, text)
            if not m:
                continue
            a = self._point(m, 1)
            b = self._point(m, 21)
            if a is None or b is None:
                continue
            # "between 8 am and 10 am yesterday": a trailing day applies to both
            tail = re.match(r"\s*(yesterday|today|on\s+" + _WD + r"|" + _DATE_ISO + r")", text[m.end():])
            s, e = a[0], b[0]
            end_pos = m.end()
            if tail and not any(m.group(i) for i in range(1, 15)) and not any(m.group(i) for i in range(21, 35)):
                dm = re.match(self._POINT, tail.group(1))
                if dm:
                    dp = self._point(dm, 1)
                    if dp is not None:
                        base = dp[0] - self._day_start(self.today)
                        s, e = s + base, e + base
                        end_pos = m.end() + tail.end()
            if not b[1]:  # "between Monday and Wednesday": through the end of Wednesday
                e += 86400 * NS
            if e <= s and m.group(1) and m.group(21):  # weekdays: the earlier one is a week back
                s -= 7 * 86400 * NS
            if e <= s:
                continue
            return self._range(s, e, text[m.start():end_pos], "between", None), (m.start(), end_pos)
        return None

    def _since(self, text: str) -> Hit | None:
        m = re.search(r"\bsince\s+" + self._POINT + r"(?=\W|$)", text)
        if not m:
            return None
        pt = self._point(m, 1)
        if pt is None or pt[0] >= self.now_ns:
            return None
        return self._range(pt[0], self.now_ns, m.group(0), "since", None), m.span()

    def _rolling(self, text: str) -> Hit | None:
        m = re.search(r"\b(?:in\s+|over\s+|during\s+|for\s+)?(?:the\s+)?(last|past|previous|next|coming)\s+(" + _NUM + r")?\s*" + _UNIT + r"\b", text)
        if not m:
            return None
        which, num, unit = m.group(1), m.group(2), _FULL_UNIT.get(m.group(3), m.group(3))
        n = (int(num) if num.isdigit() else NUMBER_WORDS[num]) if num else 1
        secs = _UNIT_S[unit] * n
        if which in ("next", "coming"):
            return self._range(self.now_ns, self.now_ns + secs * NS, m.group(0), m.group(0).strip(), unit), m.span()
        rolling = "the " in m.group(0)  # "in the last week": the last 7 days
        if num is None and which in ("last", "previous") and unit in ("week", "month", "year") and not rolling:
            return self._calendar(unit, -1, m.group(0).strip()), m.span()
        if n <= 0:
            return None
        return self._range(self.now_ns - secs * NS, self.now_ns, m.group(0),
                           f"the last {n} {unit}{'s' if n != 1 else ''}", unit), m.span()

    def _ago(self, text: str) -> Hit | None:
        """"3 hours ago": that hour (from 3 hours back); "2 days ago" / "2 weeks ago" / "a month ago":
        that calendar day, week or month."""
        m = re.search(r"\b(?:about\s+|around\s+)?(" + _NUM + r")\s*" + _UNIT + r"\s+ago\b", text)
        if not m:
            return None
        num, unit = m.group(1), _FULL_UNIT.get(m.group(2), m.group(2))
        n = int(num) if num.isdigit() else NUMBER_WORDS[num]
        if unit == "hour":
            s = self.now_ns - n * 3600 * NS
            return self._range(s, s + 3600 * NS, m.group(0), f"{m.group(0).strip()} (that hour)", "hour"), m.span()
        if unit == "day":
            d = self.today - timedelta(days=n)
            return self._range(self._day_start(d), self._day_start(d + timedelta(days=1)), m.group(0),
                               f"{m.group(0).strip()} ({d:%A %Y-%m-%d})", "day"), m.span()
        if unit in ("week", "month", "year"):
            tr = self._calendar(unit, -n, m.group(0).strip())
            label = f"{m.group(0).strip()} (the calendar {unit}): {fmt_range(tr.start_ns, tr.end_ns, self.tz)}"
            return TimeRange(tr.start_ns, tr.end_ns, m.group(0), label, unit), m.span()
        return None  # minutes or seconds ago: too fine to be a range of readings

    def _calendar(self, unit: str, offset: int, text: str) -> TimeRange:
        t = self.today
        if unit == "week":
            start = t - timedelta(days=t.weekday()) + timedelta(weeks=offset)
            end = start + timedelta(weeks=1)
        elif unit == "month":
            y, mth = t.year, t.month + offset
            while mth < 1:
                y, mth = y - 1, mth + 12
            start = date(y, mth, 1)
            end = date(y + (mth == 12), mth % 12 + 1, 1)
        else:
            start, end = date(t.year + offset, 1, 1), date(t.year + offset + 1, 1, 1)
        s, e = self._day_start(start), min(self._day_start(end), self.now_ns) if offset == 0 else self._day_start(end)
        what = f"{'this' if offset == 0 else 'last'} {unit} (calendar, from {'Monday' if unit == 'week' else 'the 1st'})"
        return self._range(s, e, text, what, unit)

    def _weekend(self, text: str) -> Hit | None:
        """"(over) the weekend", "last weekend": the most recent Saturday 00:00 → Monday 00:00
        (the one in progress on a Saturday or Sunday, clipped at now; "last weekend" then means
        the one before); "next weekend" the coming one. "This weekend" on a weekday may mean
        the past or the coming one: not read (the agent declines rather than guess)."""
        m = re.search(r"\b(?:(?:over|during|on|at|for|in|from)\s+)?(?:the\s+)?(?:(last|past|previous|this|next|coming)\s+)?"
                      r"week\s*end\b", text)
        if not m:
            return None
        which = m.group(1)
        wd = self.today.weekday()  # Monday 0 ... Saturday 5, Sunday 6
        sat = self.today - timedelta(days=(wd - 5) % 7)  # the most recent Saturday (today on a Saturday)
        in_progress = wd >= 5
        if which in ("next", "coming"):
            sat = sat + timedelta(days=7)
            what = "next weekend"
        elif which in ("last", "past", "previous"):
            if in_progress:
                sat = sat - timedelta(days=7)
            what = "last weekend"
        elif which == "this" and not in_progress:
            return None
        else:
            what = "the weekend"
        s = self._day_start(sat)
        e = self._day_start(sat + timedelta(days=2))
        if s < self.now_ns < e:
            e = self.now_ns
        return self._range(s, e, m.group(0), f"{what} (Saturday 00:00 → Monday 00:00)", None), m.span()

    def _day_at(self, text: str) -> Hit | None:
        """"yesterday at 8 am", "at 3 pm on Monday": that hour of that day."""
        day = r"(yesterday|today|(?:on\s+|last\s+)?" + _WD + r")"
        m = re.search(r"\b" + day + r"\s+" + _TOD + r"(?=\W|$)", text)
        if m:
            word, tod = m.group(1), self._tod(m, 3)
        else:
            m = re.search(r"\b" + _TOD + r"\s+(?:on\s+)?" + day + r"(?=\W|$)", text)
            if not m:
                return None
            word, tod = m.group(7), self._tod(m, 1)
        if tod is None:
            return None
        w = re.sub(r"^(?:on|last)\s+", "", word)
        d = self.today - timedelta(days=1) if w == "yesterday" else self.today if w == "today" else self._weekday(w)
        s = self._ns(datetime.combine(d, tod, self.tz))
        return self._range(s, s + 3600 * NS, m.group(0), f"{w} at {tod:%H:%M} (that hour)", "hour"), m.span()

    def _named(self, text: str) -> Hit | None:
        m = re.search(r"\b(the\s+day\s+before\s+yesterday|yesterday|today|tonight|tomorrow|last\s+night|"
                      r"this\s+(?:morning|afternoon|evening|week|month|year)|so\s+far\s+today)\b", text)
        if not m:
            return None
        w = re.sub(r"\s+", " ", m.group(1))
        d0 = self._day_start(self.today)
        day = 86400 * NS
        hour = 3600 * NS
        if w in ("today", "so far today"):
            return self._range(d0, self.now_ns, m.group(0), "today (so far)", "day"), m.span()
        if w == "yesterday":
            return self._range(d0 - day, d0, m.group(0), "yesterday", "day"), m.span()
        if w == "the day before yesterday":
            return self._range(d0 - 2 * day, d0 - day, m.group(0), "the day before yesterday", "day"), m.span()
        if w == "tomorrow":
            return self._range(d0 + day, d0 + 2 * day, m.group(0), "tomorrow", "day"), m.span()
        if w == "last night":
            return self._range(d0 - 6 * hour, d0 + 6 * hour, m.group(0), "last night (18:00 → 06:00)", "day"), m.span()
        if w == "tonight":
            return self._range(d0 + 18 * hour, d0 + 30 * hour, m.group(0), "tonight (18:00 → 06:00)", "day"), m.span()
        part = w.split()[1]
        if part in ("week", "month", "year"):
            return self._calendar(part, 0, m.group(0)), m.span()
        a, b = {"morning": (6, 12), "afternoon": (12, 18), "evening": (18, 24)}[part]
        s, e = d0 + a * hour, min(d0 + b * hour, self.now_ns)
        if e <= s:
            return None
        return self._range(s, e, m.group(0), f"this {part} ({a:02d}:00 → {b:02d}:00)", None), m.span()

    def _on_day(self, text: str) -> Hit | None:
        m = re.search(r"\b(?:on\s+|last\s+)?(?:" + _WD + r"|" + _DATE_ISO + r"|" + _MONTH
                      + r"\s+(\d{1,2})(?:st|nd|rd|th)?(?:,?\s+(\d{4}))?|(\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?"
                      + _MONTH + r"(?:,?\s+(\d{4}))?)(?=\W|$)", text)
        if not m:
            return None
        if m.group(1) and not re.match(r"(on|last)\s", m.group(0)) and m.group(1) in ("mar", "may", "sun", "sat", "wed"):
            return None  # a bare short word ("sun") is not a day
        fake = re.match(self._POINT, m.group(0).removeprefix("on ").strip())
        if fake is None:
            return None
        pt = self._point(fake, 1)
        if pt is None:
            return None
        s = pt[0]
        if m.group(2) and m.group(6) is not None:  # an ISO timestamp: that instant is not a day
            return None
        return self._range(s, s + 86400 * NS, m.group(0), f"on {datetime.fromtimestamp(s / NS, self.tz):%A %Y-%m-%d}", "day"), m.span()

    def _in_month(self, text: str) -> Hit | None:
        m = re.search(r"\b(?:in|during|for|of)\s+" + _MONTH + r"(?:\s+(\d{4}))?(?=\W|$)", text)
        if not m:
            return None
        try:
            s, e = self._month(m.group(1), m.group(2))
        except (KeyError, ValueError):
            return None
        return self._range(self._day_start(s), self._day_start(e), m.group(0), f"{s:%B %Y}", "month"), m.span()

    def _bare_point(self, text: str) -> Hit | None:
        """"at 8 am" / "at 14:00" alone: that hour of today (or yesterday if still ahead)."""
        m = re.search(r"\bat\s+" + _TOD + r"(?=\W|$)", text)
        if not m:
            return None
        tod = self._tod(m, 1)
        if tod is None:
            return None
        at = datetime.combine(self.today, tod, self.tz)
        s = self._ns(at)
        if s > self.now_ns:
            s -= 86400 * NS
        return self._range(s, s + 3600 * NS, m.group(0), "that hour", "hour"), m.span()


SPAN_NS = {"minute": 60 * NS, "hour": 3600 * NS, "day": 86400 * NS, "week": 7 * 86400 * NS}


__all__ = ["TimeParser", "TimeRange", "fmt_range", "iso"]
