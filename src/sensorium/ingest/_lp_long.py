"""The long form of a request: :class:`_Acc` and :class:`_Records` (shared with the JSON
readings parser)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from sensorium.ingest._lp_base import _K_BOOL, _K_FLOAT, _K_STR, _K_UINT, KINDS


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
