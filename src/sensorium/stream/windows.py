"""Windowers: which event-time windows a point belongs to (the middle of clock / windower / aggregation).

* :class:`Tumbling` — fixed, non-overlapping windows ``[start, start + size)`` aligned to ``offset``.
* :class:`Hopping` — windows of ``size`` starting every ``slide``; a point belongs to several.
* :class:`Session` — per series and field, points closer than ``gap`` to a neighbour share a
  session ``[first, last + gap)``; sessions merge when a (late but allowed) point bridges a gap.

Aligned windowers (tumbling, hopping) cut time into *panes* of ``gcd(size, slide)``: every window is
a whole number of panes, so the operator buffers raw points once per pane (not once per window)
and explodes them into windows only when it aggregates. ``assign`` is the exploded form, vectorised.

Durations are nanoseconds (``int``) or strings such as ``"10s"``, ``"1m"``, ``"1h"``, ``"1d"``
(:func:`parse_duration`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
NS["m"] = 60 * NS["s"]
NS["h"] = 60 * NS["m"]
NS["d"] = 24 * NS["h"]
NS["w"] = 7 * NS["d"]
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_UNITS = "ns, us, ms, s, m, h, d, w"


def parse_duration(text: str | int) -> int:
    """Nanoseconds in a duration such as ``"10s"``, ``"1m"``, ``"1h30m"``, ``"1.5d"`` (or an int, as is).

    Raises :class:`ValueError` naming the text and the accepted units.
    """
    if isinstance(text, bool):
        raise ValueError(f"invalid duration {text!r}: expected a number with a unit ({_UNITS})")
    if isinstance(text, int):
        return text
    s = str(text).strip().lower()
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * NS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(
            f"invalid duration {text!r}: expected a number with a unit ({_UNITS}), e.g. '10s', '1m', '1h30m'"
        )
    return int(round(total))


def positive_duration(value: str | int, what: str) -> int:
    ns = parse_duration(value)
    if ns <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return ns


def format_duration(ns: int) -> str:
    """The shortest exact spelling of ``ns``: ``10s``, ``1m``, ``1h30m``, ``250ms``, ``0s``."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    parts = []
    for unit in ("d", "h", "m", "s", "ms", "us", "ns"):
        q, ns = divmod(ns, NS[unit])
        if q:
            parts.append(f"{q}{unit}")
    return sign + "".join(parts)


@dataclass(frozen=True)
class Hopping:
    """Windows ``[s, s + size)`` for every ``s = offset + k * slide``."""

    size_ns: int
    slide_ns: int
    offset_ns: int = 0

    def __init__(self, size_ns: str | int, slide_ns: str | int, offset_ns: str | int = 0) -> None:
        size = positive_duration(size_ns, "window size")
        slide = positive_duration(slide_ns, "window slide")
        if slide > size:
            raise ValueError(f"window slide {format_duration(slide)} is longer than its size {format_duration(size)}")
        object.__setattr__(self, "size_ns", size)
        object.__setattr__(self, "slide_ns", slide)
        object.__setattr__(self, "offset_ns", parse_duration(offset_ns) % slide)

    kind = "aligned"

    @property
    def pane_ns(self) -> int:
        return math.gcd(self.size_ns, self.slide_ns)

    def pane_of(self, time: np.ndarray) -> np.ndarray:
        """Start of the pane holding each time."""
        p = self.pane_ns
        off = self.offset_ns % p
        return ((time - off) // p) * p + off

    def _k_range(self, pane: int) -> tuple[int, int]:
        lo = -((self.offset_ns - (pane + self.pane_ns - self.size_ns)) // self.slide_ns)  # ceil
        hi = (pane - self.offset_ns) // self.slide_ns
        return lo, hi

    def window_starts(self, pane: int) -> list[int]:
        """Starts of the windows that contain the whole pane starting at ``pane``."""
        lo, hi = self._k_range(pane)
        return [self.offset_ns + k * self.slide_ns for k in range(lo, hi + 1)]

    def first_end(self, pane: int) -> int:
        """End of the earliest window containing the pane."""
        return self.offset_ns + self._k_range(pane)[0] * self.slide_ns + self.size_ns

    def last_end(self, pane: int) -> int:
        """End of the latest window containing the pane: its points can go once this is closed."""
        return self.offset_ns + self._k_range(pane)[1] * self.slide_ns + self.size_ns

    def assign(self, time: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exploded assignment: (row index, window start) for every window of every row."""
        time = np.asarray(time, dtype=np.int64)
        last = ((time - self.offset_ns) // self.slide_ns) * self.slide_ns + self.offset_ns
        per = -(-self.size_ns // self.slide_ns)  # most windows a point can be in
        rows = np.repeat(np.arange(time.size), per)
        starts = np.repeat(last, per) - np.tile(np.arange(per, dtype=np.int64), time.size) * self.slide_ns
        keep = starts + self.size_ns > np.repeat(time, per)
        return rows[keep], starts[keep]

    def describe(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "size_ns": self.size_ns, "slide_ns": self.slide_ns, "offset_ns": self.offset_ns}


class Tumbling(Hopping):
    """Non-overlapping windows ``[offset + k * size, offset + (k + 1) * size)``."""

    def __init__(self, size_ns: str | int, offset_ns: str | int = 0) -> None:
        size = positive_duration(size_ns, "window size")
        super().__init__(size, size, offset_ns)

    def describe(self) -> dict[str, Any]:
        return {"kind": "Tumbling", "size_ns": self.size_ns, "offset_ns": self.offset_ns}


@dataclass(frozen=True)
class Session:
    """Per series and field: consecutive points less than ``gap`` apart share a session.

    A session's window is ``[first, last + gap)``; it closes when the series' watermark reaches its
    end (no point that is not late can join it after that).
    """

    gap_ns: int

    def __init__(self, gap_ns: str | int) -> None:
        object.__setattr__(self, "gap_ns", positive_duration(gap_ns, "session gap"))

    kind = "session"

    def session_ids(self, key: np.ndarray, time: np.ndarray) -> np.ndarray:
        """Session number (0, 1, ... over the whole input) of rows sorted by (key, time)."""
        new = np.ones(key.size, dtype=bool)
        if key.size > 1:
            new[1:] = (key[1:] != key[:-1]) | (time[1:] - time[:-1] >= self.gap_ns)
        return np.cumsum(new) - 1

    def describe(self) -> dict[str, Any]:
        return {"kind": "Session", "gap_ns": self.gap_ns}


Windower = Hopping | Session


def windower_from(desc: dict[str, Any]) -> Windower:
    """Rebuild a windower from :meth:`describe` (checkpoints)."""
    kind = desc.get("kind")
    if kind == "Tumbling":
        return Tumbling(int(desc["size_ns"]), int(desc["offset_ns"]))
    if kind == "Hopping":
        return Hopping(int(desc["size_ns"]), int(desc["slide_ns"]), int(desc["offset_ns"]))
    if kind == "Session":
        return Session(int(desc["gap_ns"]))
    raise ValueError(f"unknown windower {desc!r}")
