"""JSON readings: a JSON array of reading objects, or NDJSON (one object per line).

A reading::

    {"device_id": "dev-00042", "timestamp": "2026-01-01T00:00:00Z", "sensor_type": "climate",
     "measurement_type": "temperature", "value": 21.5, "unit": "degC", "location": "home-3",
     "metadata": {"room": "kitchen", "fw": "1.2.3"}}

Mapping rule (one reading → one row with one field):

* **measurement** = ``sensor_type``; if absent ``measurement_type``; if absent ``"reading"``.
* **field name** = ``measurement_type``; if absent ``"value"``.
* **field value** = ``value``: JSON numbers become ``float64`` — integers too, so that a field's
  type does not depend on how a number happened to be written (integers beyond 2**53 lose
  precision); ``true``/``false`` become ``bool``; strings stay strings. ``null``, a missing
  ``value``, an array or an object is a bad reading.
* **tags**: ``device_id`` (required, a non-empty string), ``location`` and ``unit`` when present,
  and every ``metadata`` key whose value is a scalar (string, number, boolean; others are ignored),
  as text (``true``/``false`` for booleans, numbers as JSON writes them). A metadata key that is
  reserved (``time``, ``_line``, ``quality``... see :data:`sensorium.schema.RESERVED`), empty,
  or equal to ``device_id``, ``location``, ``unit`` or the field name is prefixed with ``meta_``.
  Empty tag values are left out, as in line protocol.
* **time** = ``timestamp``: an ISO-8601 string (``Z`` or an offset; none means UTC; up to
  nanosecond fractions) or an epoch number whose unit follows from its size: below 1e11
  seconds, below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds. Missing or
  ``null``: the time of the request (``now_ns``). Other top-level keys are ignored.
* Readings are not merged: readings of one device, tag set and time with different
  ``measurement_type`` become separate rows.
* ``_line`` is the 1-based index of the reading in an array, or its physical line in NDJSON.

A bad reading is rejected alone (``raw`` is its JSON text). A body that is not JSON at all (an
array that does not parse, or NDJSON none of whose lines parse) raises
:class:`~sensorium.errors.ParseError` with the decoder's message and position. The checks shared
with line protocol apply too: within a request the first reading fixes a field's type per
measurement (a later ``"value": true`` for a float field is rejected), and so on.
"""

from __future__ import annotations

import math
import re
import time as _time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from sensorium.errors import ParseError
from sensorium.ingest.lineprotocol import (
    _K_BOOL,
    _K_FLOAT,
    _K_STR,
    TS_MAX,
    TS_MIN,
    Known,
    _Acc,
    _assemble,
    _Records,
)
from sensorium.schema import RESERVED, ParseResult

__all__ = ["parse_readings", "parse_timestamp"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_ISO_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:[.,]([0-9]+))?)?)?"
    r" ?(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)?"
)


class _Bad(ValueError):
    """A bad reading (the message is the reject reason)."""


def parse_readings(
    body: bytes | bytearray | memoryview | str,
    *,
    now_ns: int | None = None,
    known: Known | None = None,
) -> ParseResult:
    """Parse JSON readings (an array, or NDJSON) into batches; see the module docstring.

    ``known``: the stored columns per measurement, as for
    :func:`~sensorium.ingest.lineprotocol.parse_lines`.
    """
    now = _time.time_ns() if now_ns is None else int(now_ns)
    data = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else bytes(body)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    acc = _Acc(1, now)
    head = data.lstrip()[:1]
    if head == b"[":
        try:
            items = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            lenient = _lenient(data)  # NaN / Infinity / 1e400, as Python's json writes them
            if lenient is None:
                try:  # NDJSON whose first line is an array?
                    return _ndjson(_Acc(1, now), data, known)
                except ParseError:
                    raise _parse_error(e) from None
            items = lenient
            import json

            raw = [json.dumps(x) for x in items]  # keeps NaN visible in dead letters
        else:
            raw = [orjson.dumps(x).decode() for x in items]
        _add(acc, enumerate(items, start=1))
        return _assemble(acc, raw, known)
    if head == b"{":
        try:
            one = orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # NDJSON
        else:
            raw = [data.decode().strip()]
            _add(acc, [(1, one)])
            return _assemble(acc, raw, known)
    return _ndjson(acc, data, known)


def _lenient(data: bytes) -> list[Any] | None:
    """A JSON array that only orjson refuses because of non-finite numbers (``NaN``,
    ``Infinity``, ``1e400``): parse it with the standard library, so the readings around such a
    value are kept and the value itself is judged by the quality rules (``non_finite``)."""
    import json

    try:
        out = json.loads(data)
    except ValueError:
        return None
    return out if isinstance(out, list) else None


def _parse_error(e: orjson.JSONDecodeError) -> ParseError:
    return ParseError(
        f"invalid JSON: {e.msg} at line {e.lineno}, column {e.colno} (char {e.pos})",
        line=e.lineno,
        column=e.colno,
        position=e.pos,
    )


def _ndjson(acc: _Acc, data: bytes, known: Known | None, *, strict: bool = True) -> ParseResult:
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    raw: list[str] = []
    items: list[tuple[int, Any]] = []
    first_error: orjson.JSONDecodeError | None = None
    error_line = 0
    for no, line in enumerate(lines, start=1):
        if line.endswith(b"\r"):
            line = line[:-1]
        text = line.decode("utf-8", "replace")
        raw.append(text)
        if not line.strip():
            acc.skipped += 1
            continue
        try:
            items.append((no, orjson.loads(line)))
        except orjson.JSONDecodeError as e:
            acc.rejects[no] = f"invalid JSON: {e.msg} at column {e.colno}"
            if first_error is None:
                first_error, error_line = e, no
    if strict and first_error is not None and not items:
        raise ParseError(
            f"invalid JSON: {first_error.msg} at line {error_line}, column {first_error.colno}",
            line=error_line,
            column=first_error.colno,
        )
    _add(acc, items)
    return _assemble(acc, raw, known)


def parse_ndjson_chunk(
    body: bytes, *, now_ns: int | None = None, known: Known | None = None
) -> ParseResult:
    """NDJSON lines, every line on its own: a chunk of bad lines gives rejects, never
    :class:`ParseError` (for files, where a chunk is not the whole body)."""
    now = _time.time_ns() if now_ns is None else int(now_ns)
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    return _ndjson(_Acc(1, now), body, known, strict=False)


def _add(acc: _Acc, items: Any) -> None:
    """Readings → records; one reading at a time, with the hot path kept flat."""
    rec = _Records(acc)
    meas_codes, key_codes = acc.meas, acc.keys
    s_meas, t_series, t_key, t_val = rec.s_meas, rec.t_series, rec.t_key, rec.t_val
    r_line, r_ts, f_row, f_key, f_kind, f_vals = (
        rec.r_line,
        rec.r_ts,
        rec.f_row,
        rec.f_key,
        rec.f_kind,
        rec.f_vals,
    )
    rejects, now = acc.rejects, acc.now
    for no, obj in items:
        try:
            measurement, field, kind, value, ts, tags = _reading(obj)
        except _Bad as e:
            rejects[no] = str(e)
            continue
        row = len(r_line)
        s_meas.append(meas_codes.setdefault(measurement, len(meas_codes)))
        for k, v in tags:
            t_series.append(row)
            t_key.append(key_codes.setdefault(k, len(key_codes)))
            t_val.append(v)
        r_line.append(no)
        r_ts.append(now if ts is None else ts)
        f_row.append(row)
        f_key.append(key_codes.setdefault(field, len(key_codes)))
        f_kind.append(kind)
        f_vals.append(value)
    rec.flush()


def _text(v: Any) -> str | None:
    """A scalar as tag text; ``None`` for null, empty strings and non-scalars."""
    t = type(v)
    if t is str:
        return v or None
    if t is bool:
        return "true" if v else "false"
    if t is int or t is float:
        return orjson.dumps(v).decode()
    return None


_STANDARD = frozenset({"device_id", "location", "unit"})


def _reading(obj: Any) -> tuple[str, str, int, object, int | None, list[tuple[str, str]]]:
    """``(measurement, field, kind, value, time, tags)`` of one reading, or :class:`_Bad`."""
    if type(obj) is not dict:
        raise _Bad("reading is not a JSON object")
    get = obj.get
    device = get("device_id")
    if type(device) is not str or not device:
        raise _Bad(
            "missing device_id" if device is None else "device_id must be a non-empty string"
        )
    sensor, mtype = get("sensor_type"), get("measurement_type")
    for key, v in (("sensor_type", sensor), ("measurement_type", mtype)):
        if v is not None and (type(v) is not str or not v):
            raise _Bad(f"{key} must be a non-empty string")
    field = mtype or "value"
    value = get("value")
    t = type(value)
    if t is float or t is int:
        kind, value = _K_FLOAT, float(value)  # type: ignore[arg-type]
    elif t is bool:
        kind = _K_BOOL
    elif t is str:
        kind = _K_STR
    elif value is None:
        raise _Bad("missing value")
    else:
        raise _Bad("value must be a number, boolean or string")
    ts = get("timestamp")
    if ts is not None:
        ts = parse_timestamp(ts)
    tags = [("device_id", device)]
    for key in ("location", "unit"):
        v = get(key)
        if v is not None:
            if type(v) is list or type(v) is dict:
                raise _Bad(f"{key} must be a string")
            text = _text(v)
            if text is not None:
                tags.append((key, text))
    meta = get("metadata")
    if meta is not None:
        if type(meta) is not dict:
            raise _Bad("metadata must be an object")
        for k, v in meta.items():
            text = _text(v)
            if text is not None:
                if not k or k in RESERVED or k in _STANDARD or k == field:
                    k = f"meta_{k}"
                tags.append((k, text))
    return sensor or mtype or "reading", field, kind, value, ts, tags


def parse_timestamp(ts: Any) -> int:
    """UTC nanoseconds from an ISO-8601 string or an epoch number (unit by magnitude).

    Raises :class:`ValueError` (with a reason) for anything else.
    """
    t = type(ts)
    if t is str:
        ns = _iso_ns(ts)
    elif t is not int and t is not float:
        raise _Bad("timestamp must be an ISO-8601 string or an epoch number")
    else:
        a = abs(ts)
        unit = 1_000_000_000 if a < 1e11 else 1_000_000 if a < 1e14 else 1_000 if a < 1e17 else 1
        if t is int:
            ns = ts * unit
        elif not math.isfinite(ts):
            raise _Bad(f"invalid timestamp {ts!r}")
        else:
            whole = math.floor(ts)
            ns = whole * unit + round((ts - whole) * unit)
    if not TS_MIN <= ns <= TS_MAX:
        raise _Bad(f"timestamp out of range: {ts!r}")
    return ns


def _iso_ns(text: str) -> int:
    m = _ISO_RE.fullmatch(text.strip())
    if m is None:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise _Bad(f"invalid timestamp {text!r}") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return (dt - _EPOCH) // timedelta(microseconds=1) * 1000
    y, mo, d, h, mi, s, frac, _z, sign, oh, om = m.groups()
    try:
        days = date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        raise _Bad(f"invalid timestamp {text!r}") from None
    hh, mm, ss = int(h or 0), int(mi or 0), int(s or 0)
    if hh > 23 or mm > 59 or ss > 59 or (oh is not None and (int(oh) > 23 or int(om or 0) > 59)):
        raise _Bad(f"invalid timestamp {text!r}")
    secs = ((days * 24 + hh) * 60 + mm) * 60 + ss
    if sign is not None:
        offset = (int(oh) * 60 + int(om or 0)) * 60
        secs -= offset if sign == "+" else -offset
    return secs * 1_000_000_000 + (int(frac[:9].ljust(9, "0")) if frac else 0)
