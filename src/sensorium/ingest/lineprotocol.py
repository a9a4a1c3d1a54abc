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
import re
import time as _time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.errors import BadRequest
from sensorium.schema import (
    LINE,
    RESERVED,
    TIME,
    TIME_TYPE,
    ParseResult,
    Point,
    Reject,
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
TS_MAX = 9_223_372_036_854_775_806  # InfluxDB's range: int64 without its two lowest values
TS_MIN = -TS_MAX
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
U64_MAX = 2**64 - 1

KINDS = ("float", "integer", "unsigned", "boolean", "string")
_K_FLOAT, _K_INT, _K_UINT, _K_BOOL, _K_STR = range(5)
_DTYPES = (np.float64, np.int64, np.uint64, np.bool_, None)
_TRUE = ("t", "T", "true", "True", "TRUE")
_FALSE = ("f", "F", "false", "False", "FALSE")
_BOOLS = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_INT_RE = re.compile(r"-?[0-9]+")
_UINT_RE = re.compile(r"[0-9]+")
_FAST_LINES = 1 << 18  # lines per vectorised chunk: bounds the temporaries


def precision_factor(precision: str) -> int:
    """Nanoseconds per timestamp unit; :class:`BadRequest` for an unknown precision."""
    try:
        return PRECISIONS[precision]
    except (KeyError, TypeError):
        raise BadRequest(
            f"invalid precision {precision!r}: use one of ns, us, ms, s (or n, u)",
            precision=str(precision),
        ) from None


Known = Callable[[str], Mapping[str, str]] | Mapping[str, Mapping[str, str]]
"""Stored columns per measurement, ``{column: "tag" | field kind}`` (as
:meth:`SchemaRegistry.columns <sensorium.schema.SchemaRegistry.columns>` returns them)."""


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


# -- the exact per-line parser ---------------------------------------------------------------


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


# -- the long form of a request ----------------------------------------------------------------


def _as_bits(values: list[object], kind: int) -> np.ndarray:
    """Field values of one kind as int64 bit patterns (the long form's value column)."""
    if kind == _K_FLOAT:
        return np.array(values, dtype=np.float64).view(np.int64)
    if kind == _K_UINT:
        return np.array(values, dtype=np.uint64).view(np.int64)
    if kind == _K_BOOL:
        return np.array(values, dtype=np.bool_).astype(np.int64)
    return np.array(values, dtype=np.int64)


@dataclass
class _Acc:
    """The long form of a request.

    *Rows* are accepted lines (line number, series, time). A *series* is a measurement plus its
    tag set: the fast path makes one per distinct series key, the slow path one per line. *Tag
    entries* are ``(series, key, value)``, the value an index into the concatenated ``pool``;
    *field entries* are ``(row, key, kind, bits)``, ``bits`` holding the value's int64 bit
    pattern (strings: an index into the concatenated ``spool``).
    """

    factor: int
    now: int
    meas: dict[str, int] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)
    n_series: int = 0
    n_rows: int = 0
    s_meas: list[np.ndarray] = field(default_factory=list)
    t_series: list[np.ndarray] = field(default_factory=list)
    t_key: list[np.ndarray] = field(default_factory=list)
    t_val: list[np.ndarray] = field(default_factory=list)
    pool: list[pa.Array] = field(default_factory=list)
    pool_size: int = 0
    r_line: list[np.ndarray] = field(default_factory=list)
    r_series: list[np.ndarray] = field(default_factory=list)
    r_ts: list[np.ndarray] = field(default_factory=list)
    f_row: list[np.ndarray] = field(default_factory=list)
    f_key: list[np.ndarray] = field(default_factory=list)
    f_kind: list[np.ndarray] = field(default_factory=list)
    f_bits: list[np.ndarray] = field(default_factory=list)
    spool: list[pa.Array] = field(default_factory=list)
    spool_size: int = 0
    rejects: dict[int, str] = field(default_factory=dict)
    skipped: int = 0  # blank and comment lines
    mixed: bool = False  # rows are not in line order
    max_line: int = 0

    def codes(self, registry: dict[str, int], encoded: pa.DictionaryArray) -> np.ndarray:
        """Registry codes of a dictionary-encoded string array."""
        lut = np.array(
            [registry.setdefault(x, len(registry)) for x in encoded.dictionary.to_pylist()],
            dtype=np.int32,
        )
        return lut[encoded.indices.to_numpy(zero_copy_only=False)] if len(lut) else lut

    def add(
        self,
        *,
        s_meas: np.ndarray,
        t_series: np.ndarray,
        t_key: np.ndarray,
        t_val: np.ndarray,
        pool: pa.Array,
        r_line: np.ndarray,
        r_series: np.ndarray,
        r_ts: np.ndarray,
        f_row: np.ndarray,
        f_key: np.ndarray,
        f_kind: np.ndarray,
        f_bits: np.ndarray,
    ) -> None:
        """Append series, rows and entries; ids are local (0-based) and shifted here."""
        if len(r_line):
            self.mixed |= bool(r_line[0] < self.max_line)
            self.max_line = max(self.max_line, int(r_line[-1]))
        self.s_meas.append(s_meas)
        self.t_series.append(t_series + self.n_series if self.n_series else t_series)
        self.t_key.append(t_key)
        self.t_val.append(t_val + self.pool_size if self.pool_size else t_val)
        self.pool.append(pool)
        self.pool_size += len(pool)
        self.r_line.append(r_line)
        self.r_series.append(r_series + self.n_series if self.n_series else r_series)
        self.r_ts.append(r_ts)
        self.f_row.append(f_row + self.n_rows if self.n_rows else f_row)
        self.f_key.append(f_key)
        self.f_kind.append(f_kind)
        self.f_bits.append(f_bits)
        self.n_series += len(s_meas)
        self.n_rows += len(r_line)

    def add_strings(self, values: pa.Array) -> np.ndarray:
        """Put string field values in the pool; return their indices."""
        self.spool.append(values)
        self.spool_size += len(values)
        return np.arange(self.spool_size - len(values), self.spool_size, dtype=np.int64)

    def add_slow(self, lines: Iterable[tuple[int, str]]) -> None:
        """Parse ``(line number, text)`` pairs one by one with the exact parser."""
        rec = _Records(self)
        factor = self.factor
        for no, text in lines:
            try:
                p = _parse_line(text, factor)
            except _LineError as e:
                self.rejects[no] = str(e)
                continue
            if p is None:
                self.skipped += 1
                continue
            rec.add(no, p.measurement, p.tags, p.fields, p.time)
        rec.flush()


class _Records:
    """Builds the long form record by record (one series per record): for the per-line
    parsers (exact line protocol, JSON readings)."""

    def __init__(self, acc: _Acc) -> None:
        self.acc = acc
        self.s_meas: list[int] = []
        self.t_series: list[int] = []
        self.t_key: list[int] = []
        self.t_val: list[str] = []
        self.r_line: list[int] = []
        self.r_ts: list[int] = []
        self.f_row: list[int] = []
        self.f_key: list[int] = []
        self.f_kind: list[int] = []
        self.f_vals: list[object] = []

    def add(
        self,
        no: int,
        measurement: str,
        tags: Iterable[tuple[str, str]],
        fields: Iterable[tuple[str, int, object]],
        ts: int | None,
    ) -> None:
        """One record: ``fields`` as ``(key, kind, value)``, kinds as in :data:`KINDS`."""
        meas, keys = self.acc.meas, self.acc.keys
        row = len(self.r_line)
        self.s_meas.append(meas.setdefault(measurement, len(meas)))
        for k, tv in tags:
            self.t_series.append(row)
            self.t_key.append(keys.setdefault(k, len(keys)))
            self.t_val.append(tv)
        self.r_line.append(no)
        self.r_ts.append(self.acc.now if ts is None else ts)
        for k, kind, fv in fields:
            self.f_row.append(row)
            self.f_key.append(keys.setdefault(k, len(keys)))
            self.f_kind.append(kind)
            self.f_vals.append(fv)

    def flush(self) -> None:
        """Hand the records to the accumulator."""
        if not self.r_line:
            return
        kinds = np.array(self.f_kind, dtype=np.int8)
        bits = np.zeros(len(self.f_vals), dtype=np.int64)
        for kind in range(len(KINDS)):
            sel = np.flatnonzero(kinds == kind)
            if not len(sel):
                continue
            vals = [self.f_vals[i] for i in sel.tolist()]
            if kind == _K_STR:
                bits[sel] = self.acc.add_strings(pa.array(vals, pa.string()))
            else:
                bits[sel] = _as_bits(vals, kind)
        self.acc.add(
            s_meas=np.array(self.s_meas, np.int32),
            t_series=np.array(self.t_series, np.int64),
            t_key=np.array(self.t_key, np.int32),
            t_val=np.arange(len(self.t_val), dtype=np.int64),
            pool=pa.array(self.t_val, pa.string()),
            r_line=np.array(self.r_line, np.int64),
            r_series=np.arange(len(self.r_line), dtype=np.int64),
            r_ts=np.array(self.r_ts, np.int64),
            f_row=np.array(self.f_row, np.int64),
            f_key=np.array(self.f_key, np.int32),
            f_kind=kinds,
            f_bits=bits,
        )
        self.__init__(self.acc)  # type: ignore[misc]


# -- the vectorised path ---------------------------------------------------------------------


_FLOAT_RE2 = "^" + _FLOAT_RE.pattern + "$"
_TRUE_ARR = pa.array(_TRUE)
_FALSE_ARR = pa.array(_FALSE)


def _offsets(arr: pa.Array) -> np.ndarray:
    """The offsets (n + 1, int64) of a string or binary array, in its data buffer."""
    large = pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type)
    dt = np.dtype(np.int64 if large else np.int32)
    o = np.frombuffer(
        arr.buffers()[1], dtype=dt, count=len(arr) + 1, offset=arr.offset * dt.itemsize
    )
    return o.astype(np.int64)


def _data(arr: pa.Array) -> np.ndarray:
    buf = arr.buffers()[2]
    return np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)


def _pieces(arr: pa.Array, bounds: np.ndarray) -> pa.Array:
    """Zero-copy string array whose element i is ``data(arr)[bounds[i]:bounds[i + 1]]``."""
    buf = arr.buffers()[2] or pa.py_buffer(b"")
    offs = pa.py_buffer(bounds.astype(np.int32))
    return pa.Array.from_buffers(pa.string(), len(bounds) - 1, [None, offs, buf])


def _list_offsets(lst: pa.ListArray) -> np.ndarray:
    return lst.offsets.to_numpy().astype(np.int64)


def _floats(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """float64 values and a mask of the valid (finite, well-formed) ones."""
    n = len(arr)
    try:
        v = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
        good = np.ones(n, dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        good = pc.match_substring_regex(arr, _FLOAT_RE2).to_numpy(zero_copy_only=False)
        v = np.zeros(n, dtype=np.float64)
        try:
            v[good] = arr.filter(pa.array(good)).cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            good[:] = False
    return v, good & np.isfinite(v)


def _integers(arr: pa.Array, *, suffix: bool, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integers (``-?[0-9]+``, or ``[0-9]+`` unsigned, with an optional one-letter suffix)."""
    n = len(arr)
    body = pc.utf8_slice_codeunits(arr, 0, -1) if suffix else arr
    digits = body
    if signed:
        neg = pc.starts_with(body, "-")
        if pc.any(neg).as_py():
            digits = pc.if_else(neg, pc.utf8_slice_codeunits(body, 1), body)
    good = pc.ascii_is_decimal(digits).to_numpy(zero_copy_only=False)
    out_type = pa.int64() if signed else pa.uint64()
    vals = np.zeros(n, dtype=np.int64 if signed else np.uint64)
    sub = body if good.all() else body.filter(pa.array(good))
    try:
        vals[good] = sub.cast(out_type).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:  # out of range: the slow path words the error
        good &= pc.binary_length(body).to_numpy(zero_copy_only=False) <= 18
        vals[good] = body.filter(pa.array(good)).cast(out_type).to_numpy(zero_copy_only=False)
    return vals, good


def _values(
    src: pa.Array, at: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Classify and convert unquoted field values: ``(kind, bits, ok)``.

    Value ``i`` is ``src[at[i]]``, the bytes ``lo[i]:hi[i]`` of ``src``'s data.
    """
    n = len(at)
    kind = np.full(n, -1, dtype=np.int8)
    bits = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    if not n:
        return kind, bits, ok
    vd = _data(src)
    lens = hi - lo
    has = lens > 0
    if not len(vd):
        return kind, bits, ok
    if has.all():
        first, last = vd[lo], vd[hi - 1]
    else:
        first = np.where(has, vd[np.minimum(lo, len(vd) - 1)], 0)
        last = np.where(has, vd[np.maximum(hi - 1, 0)], 0)
    # floats: first byte in -.0-9, last in .0-9 (so no inf, nan or +1); the cast checks the rest
    isf = ((np.subtract(last, 48, dtype=np.uint8) < 10) | (last == 46)) & (
        (np.subtract(first, 48, dtype=np.uint8) < 10) | (first == 45) | (first == 46)
    )
    long = lens >= 2
    isi = (last == 105) & long
    isu = (last == 117) & long
    isb = (first == 116) | (first == 84) | (first == 102) | (first == 70)
    for k, mask in ((_K_FLOAT, isf), (_K_INT, isi), (_K_UINT, isu), (_K_BOOL, isb)):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        if k == _K_FLOAT:
            v, good = _floats(src.take(at[idx]))
            b = v.view(np.int64)
        elif k == _K_BOOL:
            sub = src.take(at[idx])
            t = pc.is_in(sub, value_set=_TRUE_ARR).to_numpy(zero_copy_only=False)
            good = t | pc.is_in(sub, value_set=_FALSE_ARR).to_numpy(zero_copy_only=False)
            b = t.astype(np.int64)
        else:  # the digits without the suffix, cut from the data: no slicing kernel
            cut = np.empty(2 * len(idx) + 1, dtype=np.int64)
            cut[0:-1:2] = lo[idx]
            cut[1:-1:2] = hi[idx] - 1
            cut[-1] = hi[idx[-1]]
            body = _pieces(src, cut).take(np.arange(0, 2 * len(idx), 2))
            iv, good = _integers(body, suffix=False, signed=k == _K_INT)
            b = iv.view(np.int64)
        if good.all():
            kind[idx] = k
            bits[idx] = b
        else:
            sel = idx[good]
            kind[sel] = k
            bits[sel] = b[good]
    ok[:] = kind >= 0  # the kinds that convert are disjoint: at most one wrote each value
    return kind, bits, ok


def _series(
    acc: _Acc, keys: pa.Array
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, pa.Array]:
    """Parse series keys ``measurement[,tag=value...]`` (no quotes, no backslashes).

    The separators of each key must alternate ``,`` ``=``; the pieces between them come out of
    one zero-copy array. Returns ``(valid, measurement codes, tag entry series, tag entry key
    codes, tag entry value indices, value pool)``.
    """
    n = len(keys)
    ko = _offsets(keys)
    kd = _data(keys)
    seg = kd[ko[0] : ko[-1]]
    sep = np.flatnonzero((seg == 44) | (seg == 61)) + ko[0]
    nsep = len(sep)
    before = np.searchsorted(sep, ko[:-1])  # separators before each key
    count = np.diff(np.r_[before, nsep])
    kid = np.repeat(np.arange(n), count)  # the key of each separator
    rank = np.arange(nsep) - before[kid]
    comma = rank % 2 == 0
    bad = kd[sep] != np.where(comma, 44, 61)
    valid = count % 2 == 0
    if bad.any():
        valid &= np.bincount(kid[bad], minlength=n) == 0
    # pieces: measurement | sep | key | sep | value | sep | key ...
    at_start = np.arange(n) + 2 * before
    at_sep = kid + 1 + 2 * np.arange(nsep)
    bounds = np.empty(n + 2 * nsep + 1, dtype=np.int64)
    bounds[at_start] = ko[:-1]
    bounds[at_sep] = sep
    bounds[at_sep + 1] = sep + 1
    bounds[-1] = ko[-1]
    pieces = _pieces(keys, bounds)
    plen = np.diff(bounds)
    valid &= plen[at_start] > 0
    empty = plen[at_sep + 1] == 0
    if empty.any():
        valid &= np.bincount(kid[empty], minlength=n) == 0
    keep = valid[kid]
    kp, vp = at_sep[comma & keep] + 1, at_sep[~comma & keep] + 1
    mcodes = acc.codes(acc.meas, pc.dictionary_encode(pieces.take(at_start)))
    kenc = pc.dictionary_encode(pieces.take(kp))
    kcodes = acc.codes(acc.keys, kenc)
    values = pieces.take(vp)
    if len(values) < 1 << 16:
        venc = pc.dictionary_encode(values)
        vcodes = venc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        return valid, mcodes, kid[comma & keep], kcodes, vcodes, venc.dictionary
    # many values: one small hash table per tag key is cheaper than one big one
    vcodes = np.empty(len(values), dtype=np.int64)
    dicts = []
    base = 0
    for idx in _groups(kenc.indices.to_numpy(zero_copy_only=False), len(kenc.dictionary)).values():
        venc = pc.dictionary_encode(values.take(idx))
        vcodes[idx] = venc.indices.to_numpy(zero_copy_only=False) + base
        dicts.append(venc.dictionary)
        base += len(venc.dictionary)
    return valid, mcodes, kid[comma & keep], kcodes, vcodes, pa.concat_arrays(dicts)


def _mask_strings(
    lines: pa.Array, q: np.ndarray, qline: np.ndarray
) -> tuple[pa.Array, np.ndarray, np.ndarray, np.ndarray]:
    """Hide the separators inside double quotes so that the string fields of lines without
    backslashes can be cut like the rest.

    ``q`` are the positions of the quotes in ``lines``' data, ``qline`` their lines. Quotes
    pair up in order within each line (lines with an odd count keep theirs unpaired). Returns
    ``(lines with ' ', ',' and '=' inside pairs replaced by 0x01, quotes per line, pair starts,
    pair ends)``; :func:`_strings` checks that every pair is a whole string field value and
    takes the text from ``lines``.
    """
    off = _offsets(lines)
    data = _data(lines)
    base = off[0]
    qcount = np.bincount(qline, minlength=len(lines))
    odd = qcount % 2 == 1
    if odd.any():
        q = q[~odd[qline]]
    opens, closes = q[0::2], q[1::2]
    inner = closes - opens - 1
    total = int(inner.sum())
    mod = data[base : off[-1]].copy()
    if total:
        starts = np.repeat(opens + 1 - np.cumsum(np.r_[0, inner[:-1]]), inner)
        at = starts + np.arange(total) - base
        sep = (mod[at] == 32) | (mod[at] == 44) | (mod[at] == 61)
        mod[at[sep]] = 1
    offs = pa.py_buffer((off - base).astype(np.int32))
    masked = pa.Array.from_buffers(pa.string(), len(lines), [None, offs, pa.py_buffer(mod)])
    return masked, qcount, opens, closes


def _strings(
    acc: _Acc,
    values: pa.Array,
    tok_line: np.ndarray,
    text: pa.Array,
    qcount: np.ndarray,
    opens: np.ndarray,
    closes: np.ndarray,
    kind: np.ndarray,
    bits: np.ndarray,
    ok: np.ndarray,
) -> np.ndarray:
    """Take the string field values (``"..."`` tokens) of lines whose quotes are all such
    tokens; fill ``kind``/``bits``/``ok`` for them and return the mask of such lines."""
    nlines = len(qcount)
    vo = _offsets(values)
    vd = _data(values)
    lens = np.diff(vo)
    if not len(vd):
        return qcount == 0
    first = vd[np.minimum(vo[:-1], len(vd) - 1)]
    last = vd[np.maximum(vo[1:] - 1, 0)]
    sidx = np.flatnonzero((lens >= 2) & (first == 34) & (last == 34))
    if len(sidx):
        two = pc.count_substring(values.take(sidx), '"').to_numpy(zero_copy_only=False) == 2
        sidx = sidx[two]
    good = qcount == 2 * np.bincount(tok_line[sidx], minlength=nlines)
    pair_line = np.searchsorted(_offsets(text), opens, side="right") - 1
    pairs = np.flatnonzero(good[pair_line])
    sidx = sidx[good[tok_line[sidx]]]
    if not len(sidx):
        return good
    o, c = opens[pairs], closes[pairs]
    bounds = np.empty(2 * len(o), dtype=np.int64)
    bounds[0::2] = o + 1
    bounds[1::2] = c
    contents = _pieces(text, bounds).take(np.arange(0, 2 * len(o) - 1, 2))
    kind[sidx] = _K_STR
    bits[sidx] = acc.add_strings(contents)
    ok[sidx] = True
    return good


def _sections(lines: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Cut lines at their spaces: ``(pieces, spaces per line)``, zero-copy.

    Piece ``5 * i`` is the series key of line ``i``, ``5 * i + 2`` its fields and ``5 * i + 4``
    its timestamp (empty if none), where the line has one or two spaces; other lines (which
    the fast path does not take) get empty pieces there.
    """
    off = _offsets(lines)
    data = _data(lines)
    nc = len(lines)
    sp = np.flatnonzero(data[off[0] : off[-1]] == 32) + off[0]
    before = np.searchsorted(sp, off)
    nsp = np.diff(before)
    start, end = off[:-1], off[1:]
    one, two = nsp == 1, nsp == 2
    some = one | two
    s1 = np.where(some, sp[np.minimum(before[:-1], len(sp) - 1)] if len(sp) else start, start)
    s2 = np.where(two, sp[np.minimum(before[:-1] + 1, len(sp) - 1)] if len(sp) else start, end)
    bounds = np.empty(5 * nc + 1, dtype=np.int64)
    bounds[0:-1:5] = start
    bounds[1:-1:5] = s1
    bounds[2:-1:5] = np.where(some, s1 + 1, start)
    bounds[3:-1:5] = np.where(some, s2, start)
    bounds[4:-1:5] = np.where(two, s2 + 1, np.where(one, end, start))
    bounds[-1] = off[-1]
    return _pieces(lines, bounds), nsp


def _fast(acc: _Acc, lines: pa.Array, first_no: int, special: bool) -> np.ndarray:
    """Parse a chunk of lines (``lines[i]`` is line ``first_no + i``); return the positions of
    the lines that need the exact parser.

    Every line goes through the same kernels; a line that breaks any expectation (blank,
    comment, leading whitespace, a backslash, odd quotes, a bad value...) is just left out of
    ``ok`` — blank and comment lines are counted as skipped, the others handed back.
    """
    nc = len(lines)
    off = _offsets(lines)
    data = _data(lines)
    if not len(data):
        acc.skipped += nc
        return np.zeros(0, dtype=np.int64)
    lens = np.diff(off)
    first = np.where(lens > 0, data[np.minimum(off[:-1], len(data) - 1)], 0)
    skip = (lens == 0) | (first == 35)
    ok = ~skip & (first != 32) & (first != 9)
    quoted = np.zeros(nc, dtype=bool)
    lc = lines
    if special:
        seg = data[off[0] : off[-1]]
        at = np.flatnonzero((seg == 34) | (seg == 92)) + off[0]
        byte = data[at]
        line_of = np.searchsorted(off, at, side="right") - 1
        ok[line_of[byte == 92]] = False
        quoted[line_of[byte == 34]] = True
        quoted &= ok
        if quoted.any():
            lc, qcount, opens, closes = _mask_strings(lines, at[byte == 34], line_of[byte == 34])
    acc.skipped += int(np.count_nonzero(skip))

    # sections: series key, fields, timestamp
    flat, nsp = _sections(lc)
    flen = np.diff(_offsets(flat))
    p0 = np.arange(0, 5 * nc, 5)
    p1 = p0 + 2
    p2 = p0 + 4
    has_ts = nsp == 2
    ok &= ((nsp == 1) | has_ts) & (flen[p0] > 0) & (flen[p1] > 0) & (~has_ts | (flen[p2] > 0))

    # series keys, parsed once per distinct key (unless a sample says they are mostly distinct)
    sec0 = flat.take(p0)
    if nc > 4096 and 2 * pc.count_distinct(sec0.slice(0, 1 << 14)).as_py() > min(nc, 1 << 14):
        sidx = np.arange(nc, dtype=np.int64)
        s_valid, s_meas, t_series, t_key, t_val, pool = _series(acc, sec0)
    else:
        enc = pc.dictionary_encode(sec0)
        sidx = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        s_valid, s_meas, t_series, t_key, t_val, pool = _series(acc, enc.dictionary)
    ok &= s_valid[sidx]

    # fields: split at ',' then at the one '=' of each pair
    kvl = pc.split_pattern(flat.take(p1), ",")
    nf = np.diff(_list_offsets(kvl))
    toks = kvl.values
    to = _offsets(toks)
    td = _data(toks)
    lo, hi = to[:-1], to[1:]
    ntok = len(toks)
    eq = np.flatnonzero(td[to[0] : to[-1]] == 61) + to[0] if len(td) else np.zeros(0, np.int64)
    if len(eq) == ntok and bool((eq >= lo).all()) and bool((eq < hi).all()):
        pos = eq
        tok_ok = (eq > lo) & (eq + 1 < hi)
    else:
        a = np.searchsorted(eq, lo)
        tok_ok = (np.searchsorted(eq, hi) - a) == 1
        pos = eq[np.minimum(a, len(eq) - 1)] if len(eq) else lo
        tok_ok &= (pos > lo) & (pos + 1 < hi)
    pos = np.where(tok_ok, pos, lo)
    tok_line = np.repeat(np.arange(nc, dtype=np.int64), nf)
    bounds = np.empty(3 * ntok + 1, dtype=np.int64)
    bounds[0:-1:3] = lo
    bounds[1:-1:3] = pos
    bounds[2:-1:3] = np.where(tok_ok, pos + 1, lo)
    bounds[-1] = to[-1]
    pieces = _pieces(toks, bounds)
    fkey = acc.codes(acc.keys, pc.dictionary_encode(pieces.take(np.arange(0, 3 * ntok, 3))))
    vat = np.arange(2, 3 * ntok, 3)
    kind, bits, vok = _values(pieces, vat, bounds[2:-1:3], hi)
    if quoted.any():
        values = pieces.take(vat)
        ok &= (
            _strings(acc, values, tok_line, lines, qcount, opens, closes, kind, bits, vok) | ~quoted
        )
    tok_ok &= vok
    if not tok_ok.all():
        ok &= np.bincount(tok_line[~tok_ok], minlength=nc) == 0

    # timestamps
    ts = np.full(nc, acc.now, dtype=np.int64)
    ti = np.flatnonzero(has_ts & ok)
    if len(ti):
        tv, good = _integers(flat.take(p2[ti]), suffix=False, signed=True)
        lim = TS_MAX // acc.factor
        good &= (tv >= -lim) & (tv <= lim)
        ts[ti[good]] = tv[good] * acc.factor
        ok[ti[~good]] = False

    rows = np.flatnonzero(ok)
    ents = np.flatnonzero(ok[tok_line])
    rank = np.cumsum(ok) - 1
    acc.add(
        s_meas=s_meas,
        t_series=t_series,
        t_key=t_key,
        t_val=t_val,
        pool=pool,
        r_line=(rows + first_no).astype(np.int64),
        r_series=sidx[rows],
        r_ts=ts[rows],
        f_row=rank[tok_line[ents]],
        f_key=fkey[ents],
        f_kind=kind[ents],
        f_bits=bits[ents],
    )
    return np.flatnonzero(~ok & ~skip)


# -- checks across columns and lines, and the pivot to batches -----------------------------------


def _groups(codes: np.ndarray, ncodes: int) -> dict[int, np.ndarray]:
    """``{code: positions}`` (ascending positions) for the codes present in ``codes``."""
    if not len(codes):
        return {}
    if ncodes <= 1 << 22:
        counts = np.bincount(codes, minlength=ncodes)
        present = np.flatnonzero(counts)
        if len(present) <= 4:
            return {int(c): np.flatnonzero(codes == c) for c in present}
        if ncodes <= 1 << 16:  # a stable sort of 16-bit keys is a radix sort: linear
            order = np.argsort(codes.astype(np.uint16), kind="stable")
            ends = np.cumsum(counts[present])
            parts = np.split(order, ends[:-1])
            return {int(c): g for c, g in zip(present.tolist(), parts, strict=True)}
    order = np.argsort(codes, kind="stable")
    sc = codes[order]
    cuts = np.flatnonzero(sc[1:] != sc[:-1]) + 1
    return {int(sc[s]): g for s, g in zip(np.r_[0, cuts], np.split(order, cuts), strict=True)}


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


class _Rejecter:
    """Reasons for rejected rows; the first reason given for a row wins."""

    def __init__(self) -> None:
        self.reasons: dict[int, str] = {}

    def reject(self, rows: np.ndarray, why: str | list[str]) -> None:
        for i, r in enumerate(rows.tolist()):
            if r not in self.reasons:
                self.reasons[r] = why if isinstance(why, str) else why[i]


def _assemble(acc: _Acc, raw: pa.Array | list[str], known: Known | None = None) -> ParseResult:
    """Run the checks that span columns and lines, and pivot the long form into batches."""
    nlines = len(raw)
    lines_total = nlines - acc.skipped
    result = ParseResult(lines_total=lines_total, raw_lines=raw)
    rejects = [Reject(no, why, _raw(raw, no)) for no, why in acc.rejects.items()]
    if acc.n_rows:
        batches, more = _pivot(acc, known)
        result.batches = batches
        rejects += [Reject(no, why, _raw(raw, no), m) for no, why, m in more]
    rejects.sort(key=lambda r: r.line)
    result.rejects = rejects
    return result


def _raw(raw: pa.Array | list[str], no: int) -> str:
    if not 0 < no <= len(raw):
        return ""
    v = raw[no - 1]
    return (v if isinstance(v, str) else v.as_py()) or ""


def _pivot(
    acc: _Acc, known: Known | None
) -> tuple[dict[str, pa.Table], list[tuple[int, str, str]]]:
    r_line = _concat(acc.r_line, np.int64)
    r_series = _concat(acc.r_series, np.int64)
    r_ts = _concat(acc.r_ts, np.int64)
    s_meas = _concat(acc.s_meas, np.int64)
    t_series = _concat(acc.t_series, np.int64)
    t_key = _concat(acc.t_key, np.int64)
    t_val = _concat(acc.t_val, np.int64)
    pool = pa.concat_arrays(acc.pool) if acc.pool else pa.array([], pa.string())
    spool = pa.concat_arrays(acc.spool) if acc.spool else pa.array([], pa.string())
    if len(acc.pool) > 1:  # the pool's parts may share values: make it one dictionary
        enc = pc.dictionary_encode(pool)
        t_val = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)[t_val]
        pool = enc.dictionary
    f_row = _concat(acc.f_row, np.int64)
    f_key = _concat(acc.f_key, np.int64)
    f_kind = _concat(acc.f_kind, np.int8)
    f_bits = _concat(acc.f_bits, np.int64)
    if acc.mixed:  # put rows in line order
        order = np.argsort(r_line, kind="stable")
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        r_line, r_series, r_ts = r_line[order], r_series[order], r_ts[order]
        f_row = inv[f_row]
    nrows, nser = len(r_line), acc.n_series
    names = list(acc.keys)
    mnames = list(acc.meas)
    nkeys = max(len(names), 1)
    r_meas = s_meas[r_series]
    rej = _Rejecter()
    by_name = sorted(range(len(names)), key=names.__getitem__)

    # per series: reserved tag keys, duplicate tag keys
    s_bad: dict[int, str] = {}
    t_groups = _groups(t_key, len(names))
    for k in by_name:
        idx = t_groups.get(k)
        if idx is None:
            continue
        ser = t_series[idx]
        if names[k] in RESERVED:
            bad = ser
            reason = f"tag key '{names[k]}' is reserved"
        else:
            bad = ser[1:][ser[1:] == ser[:-1]]
            reason = f"duplicate tag key '{names[k]}'"
        for x in bad.tolist():
            s_bad.setdefault(x, reason)
    if s_bad:
        bad_series = np.zeros(nser, dtype=bool)
        bad_series[list(s_bad)] = True
        srows = np.flatnonzero(bad_series[r_series])
        rej.reject(srows, [s_bad[x] for x in r_series[srows].tolist()])

    # per row: reserved field keys, a key that is a tag and a field, repeated fields (last wins)
    fgroups = _field_groups(f_row, f_key, r_meas, nkeys, len(mnames))
    group_order = sorted(fgroups, key=lambda c: (c // nkeys, names[c % nkeys]))
    keep = np.ones(len(f_row), dtype=bool)
    has_tag: dict[int, np.ndarray] = {}
    field_keys = {c % nkeys for c in fgroups}
    for k in sorted(t_groups):
        if k in field_keys:
            h = np.zeros(nser, dtype=bool)
            h[t_series[t_groups[k]]] = True
            has_tag[k] = h
    frows: dict[int, np.ndarray] = {}  # the rows of each group's entries
    for code in group_order:
        k = code % nkeys
        idx = fgroups[code]
        rows = frows[code] = f_row[idx]
        if names[k] in RESERVED:
            rej.reject(rows, f"field key '{names[k]}' is reserved")
            continue
        if k in has_tag:
            rej.reject(
                rows[has_tag[k][r_series[rows]]], f"column '{names[k]}' is both a tag and a field"
            )
        dup = rows[1:] == rows[:-1]
        if dup.any():
            keep[idx[:-1][dup]] = False
    alive = np.ones(nrows, dtype=bool)
    alive[list(rej.reasons)] = False
    dropped = bool(rej.reasons) or not keep.all()

    def live(idx: np.ndarray) -> np.ndarray:
        return idx[keep[idx] & alive[f_row[idx]]] if dropped else idx

    # across lines, per measurement: the stored schema, else the first line with a column, fixes
    # its role and type
    late = _Rejecter()
    stored = {} if known is None else _stored(known, mnames, np.unique(r_meas[alive]).tolist())
    tag_keys = sorted(t_groups, key=names.__getitem__)
    for m, stored_cols in stored.items():
        for k in tag_keys:
            have = stored_cols.get(names[k])
            if have is None or have == "tag":
                continue
            h = np.zeros(nser, dtype=bool)
            h[t_series[t_groups[k]]] = True
            bad = np.flatnonzero(h[r_series] & alive & (r_meas == m))
            a = "an" if have[0] in "aeiou" else "a"
            late.reject(
                bad, f"column '{names[k]}' of measurement '{mnames[m]}' is {a} {have}, not a tag"
            )
    for code in group_order:
        m, k = divmod(code, nkeys)
        idx = live(fgroups[code])
        if not len(idx):
            continue
        rows = f_row[idx] if dropped else frows[code]
        kinds = f_kind[idx]
        have = stored.get(m, {}).get(names[k])
        if have == "tag":
            late.reject(
                rows, f"column '{names[k]}' of measurement '{mnames[m]}' is a tag, not a field"
            )
            continue
        if have in KINDS:
            sel = kinds != KINDS.index(have)
            why = [
                f"field type conflict: field '{names[k]}' of measurement '{mnames[m]}' is "
                f"{KINDS[kk]}, already stored as {have}"
                for kk in kinds[sel].tolist()
            ]
            late.reject(rows[sel], why)
            continue
        if k in has_tag:
            trows = np.flatnonzero(has_tag[k][r_series] & alive & (r_meas == m))
            if len(trows):
                if trows[0] < rows.min():
                    first, other, bad = "tag", "field", rows
                else:
                    first, other, bad = "field", "tag", trows
                why = [
                    f"column '{names[k]}' is a {other} in line {ln}, a {first} earlier in this request"
                    for ln in r_line[bad].tolist()
                ]
                late.reject(bad, why)
        if kinds.min() != kinds.max():
            k0 = int(kinds[np.argmin(rows)])
            sel = kinds != k0
            why = [
                f"field type conflict: field '{names[k]}' is {KINDS[kk]} in line {ln}, "
                f"{KINDS[k0]} earlier in this request"
                for kk, ln in zip(kinds[sel].tolist(), r_line[rows[sel]].tolist(), strict=True)
            ]
            late.reject(rows[sel], why)
    for r, v in late.reasons.items():
        rej.reasons.setdefault(r, v)
    if late.reasons:
        alive[list(late.reasons)] = False
        dropped = True
    more = [(int(r_line[r]), why, mnames[int(r_meas[r])]) for r, why in rej.reasons.items()]

    # pivot: one table per measurement
    tables: dict[str, pa.Table] = {}
    if dropped:
        live_series = np.zeros(nser, dtype=bool)
        live_series[r_series[alive]] = True
        te = np.flatnonzero(live_series[t_series])
    else:
        te = np.arange(len(t_series))
    tgroups = _groups(s_meas[t_series[te]] * nkeys + t_key[te], len(mnames) * nkeys)
    alive_rows = np.flatnonzero(alive) if dropped else np.arange(nrows)
    m_rows = _groups(r_meas[alive_rows], len(mnames))
    tkeys: dict[int, list[int]] = {}
    fkeys: dict[int, list[int]] = {}
    for groups, by_m in ((tgroups, tkeys), (fgroups, fkeys)):
        for code in groups:
            by_m.setdefault(code // nkeys, []).append(code % nkeys)
    pos = np.full(nrows, -1, dtype=np.int64)
    scratch = np.full(nser, -1, dtype=np.int64)
    for m, sel in m_rows.items():
        rows = alive_rows[sel]
        nm = len(rows)
        pos[rows] = np.arange(nm)
        cols: dict[str, pa.Array] = {TIME: pa.array(r_ts[rows], type=pa.int64()).cast(TIME_TYPE)}
        tag_cols: dict[str, pa.Array] = {}
        field_cols: dict[str, pa.Array] = {}
        for k in tkeys.get(m, ()):
            col = _tag_column(
                te[tgroups[m * nkeys + k]], t_series, t_val, pool, r_series[rows], scratch
            )
            if col is not None:
                tag_cols[names[k]] = col
        for k in fkeys.get(m, ()):
            code = m * nkeys + k
            idx = live(fgroups[code])
            if len(idx):
                kind = int(f_kind[idx[0]])
                at = pos[f_row[idx] if dropped else frows[code]]
                field_cols[names[k]] = _field_column(f_bits[idx], kind, at, nm, spool)
        cols.update(sorted(tag_cols.items()))
        cols.update(sorted(field_cols.items()))
        cols[LINE] = pa.array(r_line[rows].astype(np.int32), type=pa.int32())
        tables[mnames[m]] = pa.Table.from_arrays(list(cols.values()), names=list(cols))
    return tables, more


def _field_groups(
    f_row: np.ndarray, f_key: np.ndarray, r_meas: np.ndarray, nkeys: int, nmeas: int
) -> dict[int, np.ndarray]:
    """Field entries grouped by ``measurement * nkeys + key``.

    The common layout (one measurement, every row with the same keys in the same order) is
    recognised and needs no search.
    """
    n, nrows = len(f_key), len(r_meas)
    if nrows and n and n % nrows == 0 and r_meas.min() == r_meas.max():
        width = n // nrows
        head = f_key[:width]
        if len(np.unique(head)) == width and bool((f_key.reshape(nrows, width) == head).all()):
            base = int(r_meas[0]) * nkeys
            return {base + int(k): np.arange(j, n, width) for j, k in enumerate(head.tolist())}
    return _groups(r_meas[f_row] * nkeys + f_key, nmeas * nkeys)


def _tag_column(
    idx: np.ndarray,
    t_series: np.ndarray,
    t_val: np.ndarray,
    pool: pa.Array,
    row_series: np.ndarray,
    scratch: np.ndarray,
) -> pa.Array | None:
    """A tag column: tag entries ``idx`` (one per series) spread over rows by their series.

    ``scratch`` is an all ``-1`` array over the series, and is left so.
    """
    ser = t_series[idx]
    scratch[ser] = t_val[idx]
    ci = scratch[row_series]
    scratch[ser] = -1
    return _dict_column(ci, pool)


def _stored(
    known: Known | None, mnames: list[str], present: list[int]
) -> dict[int, Mapping[str, str]]:
    """The stored columns of the measurements present (by code), where there are any."""
    if known is None:
        return {}
    get = known if callable(known) else (lambda m: known.get(m) or {})  # type: ignore[union-attr]
    out = {}
    for m in present:
        cols = get(mnames[m])
        if cols:
            out[m] = cols
    return out


def _dict_column(ci: np.ndarray, dictionary: pa.Array) -> pa.Array | None:
    """A tag column from per-row dictionary indices (-1: no tag); unused entries dropped."""
    present = ci >= 0
    if not present.any():
        return None
    full = bool(present.all())
    codes = ci if full else ci[present]
    if len(dictionary) <= 4 * len(codes):  # a dense pass over the dictionary is cheap enough
        used = np.bincount(codes, minlength=len(dictionary)) > 0
        if not used.all():
            remap = np.cumsum(used, dtype=np.int32) - 1
            ci = remap[ci] if full else np.where(present, remap[np.maximum(ci, 0)], -1)
            dictionary = dictionary.filter(pa.array(used))
    else:  # a few rows out of a large pool
        uniq, inverse = np.unique(codes, return_inverse=True)
        ci = np.full(len(ci), -1, dtype=np.int64)
        ci[present] = inverse
        dictionary = dictionary.take(pa.array(uniq))
    ci = ci.astype(np.int32, copy=False)
    mask = None if full else ~present
    indices = pa.array(ci, type=pa.int32(), mask=mask)
    return pa.DictionaryArray.from_arrays(indices, dictionary)


def _field_column(
    bits: np.ndarray, kind: int, pos: np.ndarray, n: int, spool: pa.Array
) -> pa.Array:
    """A field column of ``n`` rows from the values ``bits`` of rows ``pos``."""
    if kind == _K_STR:
        at = np.full(n, -1, dtype=np.int64)
        at[pos] = bits
        missing = at < 0
        return spool.take(pa.array(at, mask=missing if missing.any() else None))
    dtype = _DTYPES[kind]
    assert dtype is not None
    vals = bits.astype(bool) if kind == _K_BOOL else bits.view(dtype)
    if len(pos) == n and (
        n == 0 or (pos[0] == 0 and pos[-1] == n - 1 and bool((np.diff(pos) == 1).all()))
    ):
        return pa.array(vals)
    full = np.zeros(n, dtype=dtype)
    full[pos] = vals
    valid = np.zeros(n, dtype=bool)
    valid[pos] = True
    return pa.array(full, mask=~valid)


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
        acc.add_slow((i + 1, lines[i].as_py()) for i in slow if i + 1 not in rejected)
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
