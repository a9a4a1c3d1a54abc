"""Line protocol: the vectorised fast path (Arrow string kernels and NumPy)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.ingest._lp_base import (
    _FALSE,
    _FLOAT_RE,
    _K_BOOL,
    _K_FLOAT,
    _K_INT,
    _K_STR,
    _K_UINT,
    _TRUE,
    TS_MAX,
)
from sensorium.ingest._lp_build import _groups
from sensorium.ingest._lp_long import _Acc

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
