"""InfluxDB line protocol: a vectorised parser and a serialiser.

Syntax (https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/)::

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

* Escapes: ``\\,`` and ``\\ `` in measurements; ``\\,`` ``\\=`` ``\\ `` in tag keys, tag values and
  field keys; ``\\"`` in string field values; ``\\\\`` is one backslash everywhere. A backslash before
  any other character is a literal backslash.
* Field values: floats (``1``, ``1.5``, ``-1e3``, ``.5``), integers ``12i``, unsigned ``12u``,
  booleans (``t T true True TRUE f F false False FALSE``), double-quoted strings.
* The timestamp is optional (missing: ``now_ns``, read once per call), in ``precision`` units.
* Blank lines and ``#`` comment lines are skipped. Leading whitespace, trailing whitespace and
  ``\\r\\n`` line ends are tolerated, and so are runs of spaces between sections. Newlines cannot
  appear inside any element.

A bad line rejects that line only. Within one request the first line that has a column fixes its
role (tag or field) and field type per measurement; later lines that disagree are rejected.
A repeated field key in a line: the last one wins. Reasons name the problem, not the line (the
line number is :attr:`Reject.line`).

**Speed.** The common line (no ``"`` and no ``\\``) never meets a per-line Python loop: lines,
sections, series keys and ``key=value`` pairs are cut with Arrow string kernels and NumPy over
the string buffers, series keys are parsed once per distinct key, values are classified from
their first and last bytes and converted with Arrow casts, and the long ``(row, key, value)``
form is scattered into per-measurement columns with NumPy. Any line that this path does not
fully understand goes, whole, to an exact per-line parser (:func:`_parse_line`), which also
produces every syntax error message; checks that involve several columns or lines (reserved
names, duplicate tags, type conflicts) run once, on the merged long form, for both paths.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.errors import BadRequest
from sensorium.ingest._lp_base import _BOOLS as _BOOLS
from sensorium.ingest._lp_base import _DTYPES as _DTYPES
from sensorium.ingest._lp_base import _FALSE as _FALSE
from sensorium.ingest._lp_base import _FLOAT_RE as _FLOAT_RE
from sensorium.ingest._lp_base import _INT_RE as _INT_RE
from sensorium.ingest._lp_base import _K_BOOL as _K_BOOL
from sensorium.ingest._lp_base import _K_FLOAT as _K_FLOAT
from sensorium.ingest._lp_base import _K_INT as _K_INT
from sensorium.ingest._lp_base import _K_STR as _K_STR
from sensorium.ingest._lp_base import _K_UINT as _K_UINT
from sensorium.ingest._lp_base import _TRUE as _TRUE
from sensorium.ingest._lp_base import _UINT_RE as _UINT_RE
from sensorium.ingest._lp_base import I64_MAX as I64_MAX
from sensorium.ingest._lp_base import I64_MIN as I64_MIN
from sensorium.ingest._lp_base import KINDS as KINDS
from sensorium.ingest._lp_base import TS_MAX as TS_MAX
from sensorium.ingest._lp_base import TS_MIN as TS_MIN
from sensorium.ingest._lp_base import U64_MAX as U64_MAX
from sensorium.ingest._lp_base import Known as Known
from sensorium.ingest._lp_build import _assemble as _assemble
from sensorium.ingest._lp_build import _pivot as _pivot
from sensorium.ingest._lp_exact import _Line as _Line
from sensorium.ingest._lp_exact import _LineError as _LineError
from sensorium.ingest._lp_exact import _parse_line as _parse_line
from sensorium.ingest._lp_exact import _parse_line_exact as _parse_line_exact
from sensorium.ingest._lp_fast import _fast as _fast
from sensorium.ingest._lp_long import _Acc as _Acc
from sensorium.ingest._lp_long import _as_bits as _as_bits
from sensorium.ingest._lp_long import _Records as _Records
from sensorium.schema import (
    TIME,
    ParseResult,
    Point,
    field_kind,
    field_names,
    is_tag,
    tag_names,
)

__all__ = ["PRECISIONS", "parse_lines", "precision_factor", "serialize_lines", "serialize_points"]

PRECISIONS: dict[str, int] = {
    "ns": 1,
    "n": 1,
    "us": 1_000,
    "u": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
}
_FAST_LINES = 1 << 16  # lines per vectorised chunk: bounds the temporaries


def precision_factor(precision: str) -> int:
    """Nanoseconds per timestamp unit; :class:`BadRequest` for an unknown precision."""
    try:
        return PRECISIONS[precision]
    except (KeyError, TypeError):
        raise BadRequest(
            f"invalid precision {precision!r}: use one of ns, us, ms, s (or n, u)",
            precision=str(precision),
        ) from None


def parse_lines(
    body: bytes | bytearray | memoryview | str,
    *,
    precision: str = "ns",
    now_ns: int | None = None,
    known: Known | None = None,
) -> ParseResult:
    """Parse a body of line protocol into one batch per measurement, plus rejects.

    ``batches[m]`` has ``time``, the tag columns (sorted), the field columns (sorted) and
    ``_line`` (1-based physical line number). ``lines_total`` counts the lines that are neither
    blank nor comments; ``raw_lines[i - 1]`` is the text of physical line ``i``.

    ``known`` (optional) gives the columns already stored per measurement: a line that
    disagrees with them is rejected, and the lines that agree are kept, whatever came first
    in the request. Columns it does not know follow the first-occurrence rule.
    """
    return _parse(body, precision, now_ns, fast=True, known=known)


# -- entry point ---------------------------------------------------------------------------------


def _as_bytes(body: bytes | bytearray | memoryview | str) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    return bytes(body)


def _split_lines(data: bytes) -> tuple[pa.Array, pa.Array, list[int]]:
    """``(lines for parsing, lines for display, numbers of lines that are not UTF-8)``."""
    if not data:
        empty = pa.array([], pa.string())
        return empty, empty, []
    large = len(data) >= (1 << 31) - 1
    btype, stype = (pa.large_binary(), pa.large_string()) if large else (pa.binary(), pa.string())
    offs = np.array([0, len(data)], dtype=np.int64 if large else np.int32)
    one = pa.Array.from_buffers(btype, 1, [None, pa.py_buffer(offs), pa.py_buffer(data)])
    lines = pc.split_pattern(one, b"\n").values
    if data.endswith(b"\n"):
        lines = lines.slice(0, len(lines) - 1)
    try:
        text = lines.cast(stype)
        return text, text, []
    except pa.ArrowInvalid:
        pass
    shown: list[str] = []
    parsed: list[str] = []
    bad: list[int] = []
    for i, b in enumerate(lines.to_pylist()):
        try:
            s = b.decode("utf-8")
            shown.append(s)
            parsed.append(s)
        except UnicodeDecodeError:
            shown.append(b.decode("utf-8", "replace"))
            parsed.append(" ")  # a leading space sends it to the exact parser, which skips it
            bad.append(i + 1)
    return pa.array(parsed, stype), pa.array(shown, stype), bad


def _add_slow(acc: _Acc, lines: Iterable[tuple[int, str]]) -> None:
    """Parse ``(line number, text)`` pairs one by one with the exact parser."""
    rec = _Records(acc)
    factor = acc.factor
    for no, text in lines:
        try:
            p = _parse_line(text, factor)
        except _LineError as e:
            acc.rejects[no] = str(e)
            continue
        if p is None:
            acc.skipped += 1
            continue
        rec.add(no, p.measurement, p.tags, p.fields, p.time)
    rec.flush()


def _parse(
    body: bytes | bytearray | memoryview | str,
    precision: str,
    now_ns: int | None,
    *,
    fast: bool,
    known: Known | None = None,
) -> ParseResult:
    factor = precision_factor(precision)
    now = _time.time_ns() if now_ns is None else int(now_ns)
    data = _as_bytes(body)
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n")
    lines, shown, bad_utf8 = _split_lines(data)
    acc = _Acc(factor, now)
    for no in bad_utf8:
        acc.rejects[no] = "invalid UTF-8"
    n = len(lines)
    if fast:
        special = b'"' in data or b"\\" in data
        slow_parts = []
        for start in range(0, n, _FAST_LINES):
            chunk = lines.slice(start, min(_FAST_LINES, n - start))
            if pa.types.is_large_string(chunk.type):
                chunk = chunk.cast(pa.string())
            slow_parts.append(_fast(acc, chunk, start + 1, special) + start)
        slow = np.concatenate(slow_parts).tolist() if slow_parts else []
    else:
        slow = list(range(n))
    if slow:
        rejected = acc.rejects
        _add_slow(acc, ((i + 1, lines[i].as_py()) for i in slow if i + 1 not in rejected))
    return _assemble(acc, shown, known)


# -- serialisation ----------------------------------------------------------------------------

_MEAS_ESC = str.maketrans({"\\": "\\\\", ",": "\\,", " ": "\\ "})
_KEY_ESC = str.maketrans({"\\": "\\\\", ",": "\\,", "=": "\\=", " ": "\\ "})
_STR_ESC = str.maketrans({"\\": "\\\\", '"': '\\"'})


def _check(text: str, what: str) -> str:
    if not text:
        raise ValueError(f"{what} cannot be empty")
    if "\n" in text:
        raise ValueError(f"{what} cannot contain a newline: {text!r}")
    return text


def _esc_measurement(name: str) -> str:
    _check(name, "measurement")
    if name[0] in "#\t":
        raise ValueError(f"a measurement cannot start with {name[0]!r} in line protocol: {name!r}")
    return name.translate(_MEAS_ESC)


def _esc_key(name: str, what: str) -> str:
    return _check(name, what).translate(_KEY_ESC)


def _format_value(v: object, kind: str | None = None) -> str:
    """One field value in line protocol; ``kind`` forces ``unsigned`` for ints."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        if kind == "unsigned" or (kind is None and v > I64_MAX):
            if not 0 <= v <= U64_MAX:
                raise ValueError(f"unsigned integer out of range: {v}")
            return f"{v}u"
        if not I64_MIN <= v <= I64_MAX:
            raise ValueError(f"integer out of range: {v}")
        return f"{v}i"
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"line protocol cannot carry the float {v!r}")
        return repr(v)
    if isinstance(v, str):
        if "\n" in v:
            raise ValueError(f"a string field cannot contain a newline: {v!r}")
        return '"' + v.translate(_STR_ESC) + '"'
    raise TypeError(f"unsupported field value {v!r}")


def _format_line(
    measurement: str,
    tags: Iterable[tuple[str, str | None]],
    fields: Iterable[tuple[str, object, str | None]],
    ts: int | None,
) -> str | None:
    head = [measurement]
    for k, v in sorted(tags):
        if v is None or v == "":
            continue  # line protocol has no empty tag values: leave the tag out
        head.append(f"{_esc_key(k, 'tag key')}={_esc_key(v, 'tag value')}")
    fs = [
        f"{_esc_key(k, 'field key')}={_format_value(v, kind)}"
        for k, v, kind in fields
        if v is not None
    ]
    if not fs:
        return None
    line = ",".join(head) + " " + ",".join(fs)
    return line if ts is None else f"{line} {ts}"


def serialize_points(points: Iterable[Point], precision: str = "ns") -> str:
    """Points as line protocol, one line each, ``\\n``-terminated; tags sorted, escapes applied.

    Empty or ``None`` tag values are left out, ``None`` field values skipped, and a point with no
    field left is dropped. Python ints above the int64 range are written as unsigned. Times are
    divided by the precision (floor). Raises :class:`ValueError` for what line protocol cannot
    carry: newlines, empty names, non-finite floats, a measurement starting with ``#`` or a tab.
    """
    factor = precision_factor(precision)
    out = []
    for p in points:
        ts = None if p.time is None else p.time // factor
        line = _format_line(
            _esc_measurement(p.measurement),
            p.tags.items(),
            ((k, v, None) for k, v in p.fields.items()),
            ts,
        )
        if line is not None:
            out.append(line)
    return "".join(x + "\n" for x in out)


def serialize_lines(measurement: str, table: pa.Table, precision: str = "ns") -> str:
    """A batch (see :mod:`sensorium.schema`) as line protocol, one line per row.

    Tag columns are the dictionary columns; fields are the other columns except reserved ones
    (``time``, ``_line``, ``quality``...). Null tags and fields are left out; rows without any
    field are dropped. Unsigned columns get ``u``, integer columns ``i``.
    """
    factor = precision_factor(precision)
    meas = _esc_measurement(measurement)
    n = table.num_rows
    times: Sequence[int | None]
    if TIME in table.column_names:
        col = table[TIME]
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64())
        times = [None if t is None else t // factor for t in col.to_pylist()]
    else:
        times = [None] * n
    tags = {t: table[t].cast(pa.string()).to_pylist() for t in tag_names(table)}
    fields = {
        f: (table[f].to_pylist(), field_kind(table[f].type))
        for f in field_names(table)
        if not is_tag(table[f].type)
    }
    tag_items = sorted(tags.items())
    field_items = sorted(fields.items())
    out = []
    for i in range(n):
        line = _format_line(
            meas,
            [(k, v[i]) for k, v in tag_items],
            [(k, v[i], kind) for k, (v, kind) in field_items],
            times[i],
        )
        if line is not None:
            out.append(line)
    return "".join(x + "\n" for x in out)
