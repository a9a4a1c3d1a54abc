"""Bulk load from files, in bounded memory: an iterator of :class:`~sensorium.schema.ParseResult`.

========================  ====================================================================
extension                 read as
========================  ====================================================================
``.lp`` ``.line``         line protocol, in chunks of about ``chunk_bytes`` cut at line ends
``.txt``
``.ndjson`` ``.jsonl``    JSON readings (see :mod:`sensorium.ingest.jsonreadings`), NDJSON
                          chunks cut at line ends
``.json``                 NDJSON, or one JSON array of readings, cut between its elements
``.csv``                  a header row, then rows (see below)
``.parquet``              same rules as CSV, read in batches of about ``chunk_bytes``
``<text format>.gz``      gzip-compressed; ``chunk_bytes`` counts decompressed bytes
========================  ====================================================================

Line numbers continue across chunks (``_line`` and :attr:`Reject.line`, and ``raw(n)`` works with
them). ``progress`` is called after each chunk with the number of bytes of the file consumed so
far (compressed bytes for ``.gz``), so that a progress bar's total is the file size.

**CSV and Parquet.** A ``measurement`` column and a ``time`` column are required. ``time``: ISO-8601
text (no offset: UTC), an epoch number (unit by magnitude, as for JSON readings: below 1e11
seconds, below 1e14 ms, below 1e17 µs, else ns) or a Parquet timestamp (naive: UTC). Columns
named in ``tags`` become tags; without ``tags``, text columns are tags and numeric and boolean
columns fields. In CSV, a column is boolean if its values are ``true``/``false`` (any case),
numeric (``float64``, so that types do not depend on how a number was written) if they all parse
as numbers, else text; the first chunk in which a column has values fixes its type, and a later
value that does not fit rejects its row. Parquet keeps its integer types. An empty cell is a
missing value; a row without any field value is rejected. CSV line numbers assume one line per
row (the header is line 1). Reserved column names other than ``time`` are refused.
"""

from __future__ import annotations

import csv
import gzip
import os
import time as _time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sensorium.errors import BadRequest, ParseError
from sensorium.ingest.jsonreadings import parse_ndjson_chunk, parse_readings, parse_timestamp
from sensorium.ingest.lineprotocol import TS_MAX, TS_MIN, Known, parse_lines, precision_factor
from sensorium.schema import LINE, RESERVED, TIME, TIME_TYPE, ParseResult, Reject, field_kind

__all__ = ["FORMATS", "read_file"]

MEASUREMENT = "measurement"
FORMATS: dict[str, str] = {
    ".lp": "lp",
    ".line": "lp",
    ".txt": "lp",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}
_ALIASES = {
    "lp": "lp",
    "line": "lp",
    "ndjson": "ndjson",
    "jsonl": "ndjson",
    "json": "json",
    "csv": "csv",
    "parquet": "parquet",
}
Progress = Callable[[int], None]


@dataclass(slots=True)
class ChunkResult(ParseResult):
    """A parse result for one chunk of a file: its line numbers are the file's."""

    first_line: int = 1

    def raw(self, line: int) -> str:
        return ParseResult.raw(self, line - self.first_line + 1)


def read_file(
    path: str | os.PathLike[str],
    *,
    precision: str = "ns",
    chunk_bytes: int = 64 << 20,
    format: str | None = None,
    tags: Sequence[str] | None = None,
    progress: Progress | None = None,
    now_ns: int | None = None,
    known: Known | None = None,
) -> Iterator[ParseResult]:
    """Parse a file chunk by chunk; see the module docstring for formats and rules.

    ``format`` (``lp``, ``json``, ``ndjson``, ``csv``, ``parquet``) overrides the extension;
    ``precision`` applies to line protocol; ``now_ns`` (default: when the call is made) is the
    time of lines and readings without one; ``known`` (line protocol and JSON) is passed to the
    parsers (see :func:`~sensorium.ingest.lineprotocol.parse_lines`).
    """
    p = Path(path)
    fmt, gz = _format(p, format)
    precision_factor(precision)  # fail early
    now = _time.time_ns() if now_ns is None else int(now_ns)
    if chunk_bytes < 1:
        raise BadRequest("chunk_bytes must be positive")
    report = progress or (lambda n: None)
    if fmt == "parquet":
        yield from _parquet(p, chunk_bytes, tags, report)
        return
    with open(p, "rb") as raw:
        stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw  # type: ignore[assignment]
        if fmt == "lp":
            yield from _text_chunks(
                stream,
                raw,
                chunk_bytes,
                report,
                lambda b: parse_lines(b, precision=precision, now_ns=now, known=known),
            )
        elif fmt == "csv":
            yield from _csv(stream, raw, chunk_bytes, tags, report)
        else:
            head = _peek(stream)
            if fmt == "json" and head == b"[":
                yield from _json_array(stream, raw, chunk_bytes, report, now, known)
            else:

                def parse(b: bytes) -> ParseResult:
                    if head == b"{":  # maybe one (pretty-printed) reading
                        try:
                            return parse_readings(b, now_ns=now, known=known)
                        except ParseError:
                            pass
                    return parse_ndjson_chunk(b, now_ns=now, known=known)

                yield from _text_chunks(stream, raw, chunk_bytes, report, parse)


def _format(p: Path, format: str | None) -> tuple[str, bool]:
    suffixes = [s.lower() for s in p.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    if format is not None:
        fmt = _ALIASES.get(format.lower())
        if fmt is None:
            raise BadRequest(f"unknown format {format!r}: use one of {', '.join(sorted(_ALIASES))}")
        return fmt, gz and fmt != "parquet"
    ext = suffixes[-2] if gz and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    fmt = FORMATS.get(ext)
    if fmt is None or (gz and fmt == "parquet"):
        supported = sorted(FORMATS) + [
            f"{e}.gz" for e in sorted(FORMATS) if FORMATS[e] != "parquet"
        ]
        raise BadRequest(
            f"unsupported file type {p.name!r}: supported are {', '.join(supported)}", path=str(p)
        )
    return fmt, gz


def file_format(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """``(format, gzipped)`` of a file by its name: lp, json, ndjson, csv or parquet."""
    return _format(Path(path), None)


def _peek(stream: IO[bytes]) -> bytes:
    """The first non-blank byte of a stream, which stays readable from its start."""
    if isinstance(stream, gzip.GzipFile):
        head = stream.peek(4096)
    else:
        pos = stream.tell()
        head = stream.read(4096)
        stream.seek(pos)
    head = head.lstrip()
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:].lstrip()
    return head[:1]


def shift_lines(r: ParseResult, offset: int) -> ChunkResult:
    """Renumber a chunk's lines by ``offset``."""
    batches = r.batches
    if offset:
        batches = {}
        for m, t in r.batches.items():
            i = t.schema.get_field_index(LINE)
            batches[m] = t.set_column(i, LINE, pc.add(t[LINE], pa.scalar(offset, pa.int32())))
    rejects = [Reject(x.line + offset, x.reason, x.raw, x.measurement, x.rule) for x in r.rejects]
    return ChunkResult(batches, rejects, r.lines_total, r.raw_lines, offset + 1)


def _text_chunks(
    stream: IO[bytes],
    raw: IO[bytes],
    chunk_bytes: int,
    report: Progress,
    parse: Callable[[bytes], ParseResult],
) -> Iterator[ParseResult]:
    """Line-based formats: chunks cut after their last newline (the last chunk: at the end)."""
    for body, offset in _line_blocks(stream, raw, chunk_bytes, report):
        yield shift_lines(parse(body), offset)


def _line_blocks(
    stream: IO[bytes], raw: IO[bytes], chunk_bytes: int, report: Progress
) -> Iterator[tuple[bytes, int]]:
    """``(body, lines before it)`` blocks of whole lines, about ``chunk_bytes`` each."""
    offset = 0
    rest = b""
    first = True
    while True:
        block = stream.read(chunk_bytes)
        at_end = len(block) < chunk_bytes  # a short read only happens at the end
        if first and block.startswith(b"\xef\xbb\xbf"):
            block = block[3:]
        first = False
        data = rest + block if rest else block
        cut = len(data) - 1 if at_end else data.rfind(b"\n")
        if cut < 0:
            if at_end:
                break
            rest = data
            continue
        rest = data[cut + 1 :]
        body = data[: cut + 1]
        yield body, offset
        offset += body.count(b"\n")
        report(raw.tell())
        if at_end:
            break
    report(raw.tell())


# -- JSON arrays, cut between elements ---------------------------------------------------------


class _JsonCutter:
    """Finds the top-level element boundaries of one JSON array fed in pieces (vectorised).

    A quote is escaped when an odd run of backslashes precedes it; unescaped quotes open and
    close strings; brackets and commas outside strings give the depth, and the commas at depth
    1 separate the array's elements.
    """

    def __init__(self) -> None:
        self.in_string = False
        self.backslashes = 0  # length of the run of backslashes that ended the previous piece
        self.depth = 0

    def cuts(self, data: bytes) -> np.ndarray:
        """Positions (in ``data``) of the commas that separate top-level array elements."""
        b = np.frombuffer(data, dtype=np.uint8)
        n = len(b)
        if not n:
            return np.zeros(0, dtype=np.int64)
        bs = np.flatnonzero(b == 92)
        quotes = np.flatnonzero(b == 34)
        if len(quotes):  # drop the escaped quotes
            run = np.zeros(len(quotes), dtype=np.int64)
            from_start = quotes == 0
            if len(bs):
                new_run = np.r_[True, np.diff(bs) != 1]
                run_start = bs[new_run][np.cumsum(new_run) - 1]  # start of each backslash's run
                at = np.searchsorted(bs, quotes) - 1
                atc = np.maximum(at, 0)
                adjacent = (at >= 0) & (bs[atc] == quotes - 1)
                run = np.where(adjacent, quotes - run_start[atc], 0)
                from_start |= adjacent & (run_start[atc] == 0)
            run += np.where(from_start, self.backslashes, 0)
            quotes = quotes[run % 2 == 0]
        start = 1 if self.in_string else 0
        # structure outside strings
        st = np.flatnonzero((b == 44) | (b == 91) | (b == 93) | (b == 123) | (b == 125))
        inside = (np.searchsorted(quotes, st) + start) % 2 == 1
        st = st[~inside]
        c = b[st]
        step = np.where((c == 91) | (c == 123), 1, np.where((c == 93) | (c == 125), -1, 0))
        depth = self.depth + np.cumsum(step)
        commas = st[(c == 44) & (depth == 1)]
        # carry the state
        self.in_string = (len(quotes) + start) % 2 == 1
        self.depth = int(depth[-1]) if len(depth) else self.depth
        tail = n - 1
        while tail >= 0 and b[tail] == 92:
            tail -= 1
        run_end = n - 1 - tail
        self.backslashes = run_end + (self.backslashes if tail < 0 else 0)
        return commas.astype(np.int64)


def _json_array(
    stream: IO[bytes],
    raw: IO[bytes],
    chunk_bytes: int,
    report: Progress,
    now: int,
    known: Known | None = None,
) -> Iterator[ParseResult]:
    """A JSON array of readings, parsed a group of elements at a time."""
    cutter = _JsonCutter()
    offset = 0  # elements before this chunk
    pending = b""  # bytes after the last cut
    first = True
    while True:
        block = stream.read(chunk_bytes)
        if not block:
            break
        commas = cutter.cuts(block) + len(pending)
        data = pending + block
        if not len(commas):
            pending = data
            continue
        cut = int(commas[-1])
        body = data[:cut]
        pending = data[cut + 1 :]
        text = body + b"]" if first else b"[" + body + b"]"
        first = False
        yield shift_lines(parse_readings(text, now_ns=now, known=known), offset)
        offset += len(commas)
        report(raw.tell())
    if pending or first:
        text = pending if first else b"[" + pending
        yield shift_lines(parse_readings(text, now_ns=now, known=known), offset)
    report(raw.tell())


# -- CSV and Parquet ---------------------------------------------------------------------------


_BOOL_TEXT = {"true": True, "false": False}


def _csv(
    stream: IO[bytes],
    raw: IO[bytes],
    chunk_bytes: int,
    tags: Sequence[str] | None,
    report: Progress,
) -> Iterator[ParseResult]:
    header = stream.readline()
    if not header.strip():
        return
    cols = next(csv.reader([header.decode("utf-8-sig").rstrip("\r\n")]))
    _check_columns(cols)
    reader = pacsv.open_csv(
        stream,
        read_options=pacsv.ReadOptions(
            column_names=cols, block_size=min(max(chunk_bytes, 1 << 10), 1 << 30)
        ),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in cols},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    kinds: dict[str, str] = {}
    first_line = 2
    for batch in reader:
        table = pa.Table.from_batches([batch])
        conv: dict[str, pa.Array] = {}
        for c in cols:
            if c in (TIME, MEASUREMENT):
                continue
            col = table[c].combine_chunks()
            if c not in kinds and col.null_count < len(col):
                kinds[c] = (
                    "tag" if tags is not None and c in tags else _infer_kind(col, tags is not None)
                )
            if c in kinds:
                conv[c] = col
        raws = pc.binary_join_element_wise(*[pc.fill_null(table[c], "") for c in cols], ",")
        yield _rows_to_result(table, conv, kinds, first_line, raws.combine_chunks(), text=True)
        first_line += table.num_rows
        report(raw.tell())
    report(raw.tell())


def _check_columns(cols: Sequence[str]) -> None:
    for need in (MEASUREMENT, TIME):
        if need not in cols:
            raise BadRequest(f"a '{need}' column is required (columns: {', '.join(cols)})")
    bad = sorted(c for c in cols if c in RESERVED and c != TIME)
    if bad:
        raise BadRequest(f"reserved column names: {', '.join(bad)}")
    if len(set(cols)) != len(cols):
        raise BadRequest("duplicate column names")


def _infer_kind(col: pa.Array, fields_for_text: bool) -> str:
    """``boolean``, ``float``, or (text) ``tag`` / ``string`` of a CSV column's first values."""
    values = col.drop_null()
    low = pc.utf8_lower(values)
    if pc.all(pc.is_in(low, value_set=pa.array(list(_BOOL_TEXT)))).as_py():
        return "boolean"
    parsed = pl.Series(values).cast(pl.Float64, strict=False)
    if parsed.null_count() == 0:
        return "float"
    return "string" if fields_for_text else "tag"


def _convert(col: pa.Array, kind: str) -> tuple[pa.Array, np.ndarray]:
    """A CSV text column as ``kind``; the mask of values that do not convert."""
    if kind in ("tag", "string"):
        return col, np.zeros(len(col), dtype=bool)
    if kind == "boolean":
        low = pc.utf8_lower(col)
        out = pc.equal(low, "true")
        bad = pc.and_(
            pc.is_valid(col), pc.invert(pc.is_in(low, value_set=pa.array(list(_BOOL_TEXT))))
        )
        return out, bad.to_numpy(zero_copy_only=False)
    parsed = pl.Series(col).cast(pl.Float64, strict=False).to_arrow()
    bad = pc.and_(pc.is_valid(col), pc.is_null(parsed))
    return parsed.cast(pa.float64()), bad.to_numpy(zero_copy_only=False)


def _epoch_ns(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Epoch numbers → ns, the unit chosen by magnitude per value; and the out-of-range mask."""
    a = np.abs(x.astype(np.float64))
    unit = np.where(a < 1e11, 10**9, np.where(a < 1e14, 10**6, np.where(a < 1e17, 10**3, 1)))
    approx = x.astype(np.float64) * unit
    bad = ~np.isfinite(approx) | (np.abs(approx) > 9.2e18)
    if np.issubdtype(x.dtype, np.integer):
        ns = np.where(bad, 0, x).astype(np.int64) * unit
    else:
        whole = np.floor(np.where(bad, 0, x))
        ns = whole.astype(np.int64) * unit + np.round((np.where(bad, 0, x) - whole) * unit).astype(
            np.int64
        )
    bad |= (ns < TS_MIN) | (ns > TS_MAX)
    return ns, bad


def _times(col: pa.Array) -> tuple[np.ndarray, list[str | None]]:
    """Epoch ns of a time column, and a reason (or ``None``) per value."""
    n = len(col)
    why: list[str | None] = [None] * n
    t = col.type
    nulls = pc.is_null(col).to_numpy(zero_copy_only=False)
    ns: np.ndarray | None = None
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if pa.types.is_date(t):
            col = col.cast(pa.timestamp("s"))
        if col.type.tz is None:
            col = pc.assume_timezone(col, "UTC")
        ns = col.cast(TIME_TYPE).cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        ns, bad = _epoch_ns(col.fill_null(0).to_numpy(zero_copy_only=False))
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        for target in (TIME_TYPE, pa.timestamp("ns"), pa.int64(), pa.float64()):
            try:
                v = col.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            if pa.types.is_timestamp(target):
                ns = v.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            else:
                ns, bad = _epoch_ns(v.fill_null(0).to_numpy(zero_copy_only=False))
            break
    if ns is None:  # mixed forms: one value at a time
        ns = np.zeros(n, dtype=np.int64)
        for i, v in enumerate(col.to_pylist()):
            if v is None:
                continue
            if isinstance(v, str):
                s = v.strip()
                v = int(s) if s.lstrip("-").isdigit() else s
            try:
                ns[i] = parse_timestamp(v)
            except ValueError as e:
                why[i] = str(e)
    for i in np.flatnonzero(bad & ~nulls).tolist():
        why[i] = "timestamp out of range"
    for i in np.flatnonzero(nulls).tolist():
        why[i] = "missing time"
    return ns.astype(np.int64), why


def _rows_to_result(
    table: pa.Table,
    cols: dict[str, pa.Array],
    kinds: dict[str, str],
    first_line: int,
    raws: pa.Array,
    *,
    text: bool,
) -> ParseResult:
    """Rows of a CSV or Parquet chunk → one batch per measurement."""
    n = table.num_rows
    reasons: list[str | None] = [None] * n
    meas = table[MEASUREMENT].combine_chunks()
    if not (pa.types.is_string(meas.type) or pa.types.is_large_string(meas.type)):
        meas = meas.cast(pa.string())
    missing = pc.or_kleene(pc.is_null(meas), pc.equal(meas, "")).to_numpy(zero_copy_only=False)
    ts, why = _times(table[TIME].combine_chunks())
    converted: dict[str, pa.Array] = {}
    has_field = np.zeros(n, dtype=bool)
    for c, col in cols.items():
        kind = kinds[c]
        if text:
            col, bad = _convert(col, kind)
            for i in np.flatnonzero(bad).tolist():
                if reasons[i] is None:
                    reasons[i] = f"invalid {kind} value for column '{c}'"
        converted[c] = col
        if kind != "tag":
            has_field |= pc.is_valid(col).to_numpy(zero_copy_only=False)
    for i in range(n):
        if reasons[i] is None:
            if missing[i]:
                reasons[i] = "missing measurement"
            elif why[i] is not None:
                reasons[i] = why[i]
            elif not has_field[i]:
                reasons[i] = "no field values"
    rejects = [
        Reject(first_line + i, r, raws[i].as_py() or "")
        for i, r in enumerate(reasons)
        if r is not None
    ]
    good = np.array([r is None for r in reasons], dtype=bool)
    batches: dict[str, pa.Table] = {}
    if good.any():
        enc = pc.dictionary_encode(meas.filter(pa.array(good)))
        rows_all = np.flatnonzero(good)
        codes = enc.indices.to_numpy(zero_copy_only=False)
        for m_code, name in enumerate(enc.dictionary.to_pylist()):
            rows = rows_all[codes == m_code]
            idx = pa.array(rows)
            out: dict[str, pa.Array] = {TIME: pa.array(ts[rows], pa.int64()).cast(TIME_TYPE)}
            tag_cols = {}
            field_cols = {}
            for c, col in converted.items():
                sub = col.take(idx)
                if sub.null_count == len(sub):
                    continue
                if kinds[c] == "tag":
                    if not (pa.types.is_string(sub.type) or pa.types.is_large_string(sub.type)):
                        sub = sub.cast(pa.string())
                    tag_cols[c] = pc.dictionary_encode(sub.cast(pa.string()))
                else:
                    field_cols[c] = sub
            out.update(sorted(tag_cols.items()))
            out.update(sorted(field_cols.items()))
            out[LINE] = pa.array((rows + first_line).astype(np.int32), pa.int32())
            batches[name] = pa.Table.from_arrays(list(out.values()), names=list(out))
    return ChunkResult(batches, rejects, n, raws, first_line)


_PARQUET_FIELDS = {
    "float": pa.float64(),
    "integer": pa.int64(),
    "unsigned": pa.uint64(),
    "boolean": pa.bool_(),
    "string": pa.string(),
}


def _parquet_kind(name: str, t: pa.DataType, tags: Sequence[str] | None) -> str:
    if tags is not None and name in tags:
        return "tag"
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string" if tags is not None else "tag"
    if pa.types.is_decimal(t):
        return "float"
    try:
        return field_kind(t)
    except TypeError:
        raise BadRequest(f"column '{name}' has unsupported type {t}") from None


def _parquet(
    p: Path, chunk_bytes: int, tags: Sequence[str] | None, report: Progress
) -> Iterator[ParseResult]:
    pf = pq.ParquetFile(p)
    cols = pf.schema_arrow.names
    _check_columns(cols)
    kinds = {
        c: _parquet_kind(c, pf.schema_arrow.field(c).type, tags)
        for c in cols
        if c not in (TIME, MEASUREMENT)
    }
    meta = pf.metadata
    total_rows = max(meta.num_rows, 1)
    raw_bytes = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    batch_rows = max(1024, int(chunk_bytes / max(raw_bytes / total_rows, 1)))
    size = p.stat().st_size
    first_line = 1
    for batch in pf.iter_batches(batch_size=batch_rows):
        table = pa.Table.from_batches([batch])
        conv: dict[str, pa.Array] = {}
        for c, kind in kinds.items():
            col = table[c].combine_chunks()
            if pa.types.is_dictionary(col.type):
                col = col.cast(col.type.value_type)
            conv[c] = col.cast(pa.string()) if kind == "tag" else col.cast(_PARQUET_FIELDS[kind])
        raws = pa.array([None] * table.num_rows, pa.string())
        yield _rows_to_result(table, conv, kinds, first_line, raws, text=False)
        first_line += table.num_rows
        report(min(size, int(size * (first_line - 1) / total_rows)))
    report(size)
