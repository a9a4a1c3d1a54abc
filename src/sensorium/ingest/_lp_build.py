"""Checks across columns and lines, and the pivot of the long form into per-measurement
batches."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.ingest._lp_base import _DTYPES, _K_BOOL, _K_STR, KINDS, Known
from sensorium.ingest._lp_long import _Acc
from sensorium.schema import (
    LINE,
    RESERVED,
    TIME,
    TIME_TYPE,
    ParseResult,
    Reject,
)


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
