"""Line protocol: the exact per-line parser and its error."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from sensorium.ingest._lp_base import (
    _BOOLS,
    _FLOAT_RE,
    _INT_RE,
    _K_BOOL,
    _K_FLOAT,
    _K_INT,
    _K_STR,
    _K_UINT,
    _UINT_RE,
    I64_MAX,
    I64_MIN,
    TS_MAX,
    TS_MIN,
    U64_MAX,
)


class _LineError(Exception):
    pass


@dataclass(slots=True)
class _Line:
    measurement: str
    tags: list[tuple[str, str]]
    fields: list[tuple[str, int, object]]
    time: int | None


def _scan(s: str, i: int, n: int, stops: str, escapable: str) -> tuple[str, int]:
    """Read an unquoted element from ``s[i:]`` up to an unescaped character of ``stops``."""
    out: list[str] = []
    start = i
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in escapable:
            out.append(s[start:i])
            out.append(s[i + 1])
            i += 2
            start = i
        elif c in stops:
            break
        else:
            i += 1
    out.append(s[start:i])
    return "".join(out), i


def _field_value(raw: str, key: str) -> tuple[int, object]:
    if raw in _BOOLS:
        return _K_BOOL, _BOOLS[raw]
    last = raw[-1]
    if last == "i" and _INT_RE.fullmatch(raw, 0, len(raw) - 1):
        v = int(raw[:-1])
        if not I64_MIN <= v <= I64_MAX:
            raise _LineError(f"integer out of range for field '{key}': {raw}")
        return _K_INT, v
    if last == "u" and _UINT_RE.fullmatch(raw, 0, len(raw) - 1):
        v = int(raw[:-1])
        if v > U64_MAX:
            raise _LineError(f"unsigned integer out of range for field '{key}': {raw}")
        return _K_UINT, v
    if _FLOAT_RE.fullmatch(raw):
        f = float(raw)
        if math.isinf(f):
            raise _LineError(f"float out of range for field '{key}': {raw}")
        return _K_FLOAT, f
    raise _LineError(f"invalid field value {raw!r} for field '{key}'")


# non-empty runs of plain characters and backslash pairs, written unrolled for speed
_KEY = r"(?=[^,= ])[^,=\\ ]*(?:\\.[^,=\\ ]*)*"
_VALUE = r'(?:"[^"\\]*(?:\\.[^"\\]*)*"|[^," ]+)'
_MEAS = r"(?=[^, ])[^,\\ ]*(?:\\.[^,\\ ]*)*"
_LINE_RE = re.compile(
    rf"({_MEAS})((?:,{_KEY}={_KEY})*) +({_KEY}={_VALUE}(?:,{_KEY}={_VALUE})*)(?: +(-?[0-9]+))?",
    re.S,
)
_TAG_RE = re.compile(rf",({_KEY})=({_KEY})", re.S)
_FIELD_RE = re.compile(rf"({_KEY})=({_VALUE}),?", re.S)
_UNESC_MEAS = re.compile(r"\\([, \\])")
_UNESC_KEY = re.compile(r"\\([,= \\])")
_UNESC_STR = re.compile(r'\\(["\\])')


def _unesc(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(r"\1", text) if "\\" in text else text


def _from_match(m: re.Match[str], factor: int) -> _Line:
    """A line that matched :data:`_LINE_RE` (its structure is valid; values may not be)."""
    meas, tag_text, field_text, raw_ts = m.groups()
    fields: list[tuple[str, int, object]] = []
    if "\\" in m.string:
        tags = [
            (_unesc(_UNESC_KEY, k), _unesc(_UNESC_KEY, v)) for k, v in _TAG_RE.findall(tag_text)
        ]
        meas = _unesc(_UNESC_MEAS, meas)
        for k, raw in _FIELD_RE.findall(field_text):
            key = _unesc(_UNESC_KEY, k)
            if raw[0] == '"':
                fields.append((key, _K_STR, _unesc(_UNESC_STR, raw[1:-1])))
            else:
                fields.append((key, *_field_value(raw, key)))
    else:
        tags = _TAG_RE.findall(tag_text)
        for key, raw in _FIELD_RE.findall(field_text):
            if raw[0] == '"':
                fields.append((key, _K_STR, raw[1:-1]))
            else:
                fields.append((key, *_field_value(raw, key)))
    ts = None
    if raw_ts is not None:
        ts = int(raw_ts) * factor
        if not TS_MIN <= ts <= TS_MAX:
            raise _LineError(f"timestamp out of range: {raw_ts}")
    return _Line(meas, tags, fields, ts)


def _parse_line(s: str, factor: int) -> _Line | None:
    """Parse one line; ``None`` for a blank or comment line; :class:`_LineError` if bad.

    A regular expression takes the usual line in one go; anything it does not take goes to
    :func:`_parse_line_exact`, the reference, which also words every error.
    """
    s = s.lstrip(" \t")
    if not s or s[0] == "#":
        return None
    s = s.rstrip(" \t\r")
    if not s:
        return None
    m = _LINE_RE.fullmatch(s)
    if m is not None:  # the structure is right: a value error is the same either way
        return _from_match(m, factor)
    return _parse_line_exact(s, factor)


def _parse_line_exact(s: str, factor: int) -> _Line | None:
    """The reference parser: one character at a time, exact error messages."""
    s = s.lstrip(" \t")
    if not s or s[0] == "#":
        return None
    s = s.rstrip(" \t\r")
    if not s:
        return None
    n = len(s)
    meas, i = _scan(s, 0, n, ", ", ", \\")
    if not meas:
        raise _LineError("missing measurement")
    tags: list[tuple[str, str]] = []
    while i < n and s[i] == ",":
        key, i = _scan(s, i + 1, n, ",= ", ",= \\")
        if i >= n or s[i] != "=":
            raise _LineError(f"invalid tag {key!r}: missing '='" if key else "missing tag key")
        if not key:
            raise _LineError("missing tag key")
        val, i = _scan(s, i + 1, n, ",= ", ",= \\")
        if i < n and s[i] == "=":
            raise _LineError(f"invalid tag value for tag '{key}': unescaped '='")
        if not val:
            raise _LineError(f"missing tag value for tag '{key}'")
        tags.append((key, val))
    while i < n and s[i] == " ":
        i += 1
    if i >= n:
        raise _LineError("missing fields")
    fields: list[tuple[str, int, object]] = []
    while True:
        key, i = _scan(s, i, n, ",= ", ",= \\")
        if i >= n or s[i] != "=":
            raise _LineError(f"invalid field {key!r}: missing '='" if key else "missing field key")
        if not key:
            raise _LineError("missing field key")
        i += 1
        if i < n and s[i] == '"':
            i += 1
            parts: list[str] = []
            start = i
            while i < n and s[i] != '"':
                if s[i] == "\\" and i + 1 < n and s[i + 1] in '"\\':
                    parts.append(s[start:i])
                    start = i + 1
                    i += 2
                else:
                    i += 1
            if i >= n:
                raise _LineError(f"unterminated string for field '{key}'")
            parts.append(s[start:i])
            i += 1
            if i < n and s[i] not in ", ":
                raise _LineError(f"invalid field value for field '{key}': text after the string")
            fields.append((key, _K_STR, "".join(parts)))
        else:
            j = i
            while j < n and s[j] not in ", ":
                j += 1
            if j == i:
                raise _LineError(f"missing field value for field '{key}'")
            kind, value = _field_value(s[i:j], key)
            fields.append((key, kind, value))
            i = j
        if i < n and s[i] == ",":
            i += 1
            continue
        break
    ts: int | None = None
    while i < n and s[i] == " ":
        i += 1
    if i < n:
        raw = s[i:]
        if not _INT_RE.fullmatch(raw):
            raise _LineError(f"invalid timestamp {raw!r}")
        ts = int(raw) * factor
        if not TS_MIN <= ts <= TS_MAX:
            raise _LineError(f"timestamp out of range: {raw}")
    return _Line(meas, tags, fields, ts)
