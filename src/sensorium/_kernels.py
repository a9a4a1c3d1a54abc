"""The compiled kernels' source: NumPy-style loops that Numba compiles.

:mod:`sensorium.jit` loads them ahead-of-time compiled (an extension module built once per
machine by :mod:`sensorium._kernels_build`, which needs Numba only while it builds), or, where no
such module can be built, compiles them in-process with Numba's JIT. Only those two import this
module. ``EXPORTS`` gives each exported kernel's name and signature (C-contiguous arrays).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def counting_argsort(keys: np.ndarray, lo: int, span: int) -> np.ndarray:  # pragma: no cover - compiled
    """Stable argsort of integer ``keys`` within ``[lo, lo + span)`` (a counting sort)."""
    cnt = np.zeros(span + 1, np.int64)
    for i in range(keys.size):
        cnt[keys[i] - lo + 1] += 1
    for j in range(1, span + 1):
        cnt[j] += cnt[j - 1]
    out = np.empty(keys.size, np.intp)
    for i in range(keys.size):
        k = keys[i] - lo
        out[cnt[k]] = i
        cnt[k] += 1
    return out


@njit(cache=True, nogil=True)
def group_order(kid: np.ndarray, srank: np.ndarray, ns: int, field_bits: int, max_span: int) -> np.ndarray:  # pragma: no cover - compiled
    """Stable order grouping rows by (``kid``, start rank ``srank``; ``ns`` ranks, 1: ``srank``
    unused): a counting sort of the dense code ``((series - min series) * fields + field) * ns +
    rank``, whose order is that of (kid, rank). Empty when the code would span more than
    ``max_span`` values (sparse keys: the caller sorts another way)."""
    n = kid.size
    mask = (1 << field_bits) - 1
    smin = kid[0] >> field_bits
    smax = smin
    fmax = 0
    for i in range(n):
        s = kid[i] >> field_bits
        f = kid[i] & mask
        if s < smin:
            smin = s
        if s > smax:
            smax = s
        if f > fmax:
            fmax = f
    nf = fmax + 1
    if smax - smin + 1 > max_span // (nf * ns):  # the code's span, (series) * nf * ns, past max_span
        return np.empty(0, np.intp)
    code = np.empty(n, np.int64)
    for i in range(n):
        c = ((kid[i] >> field_bits) - smin) * nf + (kid[i] & mask)
        code[i] = c * ns + srank[i] if ns > 1 else c
    return counting_argsort(code, 0, (smax - smin + 1) * nf * ns)


# --- sums as NumPy computes them ------------------------------------------------------------
# ``np.add.reduceat(a, starts)`` gives ``a[i] + pairwise(a[i + 1 : j])`` per segment, with NumPy's
# pairwise summation (8 accumulators over blocks of up to 128 values). The kernels sum the same
# way, so their results are bit-identical to the NumPy code they replace.


@njit(cache=True, nogil=True)
def _pairwise(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[lo + i]
        return res
    if n <= 128:
        r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
        r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
        i = 8
        stop = n - n % 8
        while i < stop:
            r0 += a[lo + i]
            r1 += a[lo + i + 1]
            r2 += a[lo + i + 2]
            r3 += a[lo + i + 3]
            r4 += a[lo + i + 4]
            r5 += a[lo + i + 5]
            r6 += a[lo + i + 6]
            r7 += a[lo + i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise(a, lo, n2) + _pairwise(a, lo + n2, n - n2)


@njit(cache=True, nogil=True)
def _segment_sum(a: np.ndarray, lo: int, n: int) -> float:  # pragma: no cover - compiled
    """``np.add.reduceat`` of one segment of ``n >= 1`` values."""
    return a[lo] + _pairwise(a, lo + 1, n - 1)


@njit(cache=True, nogil=True)
def segment_sums(a: np.ndarray, starts: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``np.add.reduceat(a, starts)`` for increasing ``starts`` (tests compare the two)."""
    out = np.empty(starts.size, np.float64)
    for g in range(starts.size):
        end = starts[g + 1] if g + 1 < starts.size else a.size
        out[g] = _segment_sum(a, starts[g], end - starts[g])
    return out


# --- watermarks -----------------------------------------------------------------------------
_MIN = np.iinfo(np.int64).min


@njit(cache=True, nogil=True)
def observe_rows(
    sid: np.ndarray, time: np.ndarray, max_time: np.ndarray, wm: np.ndarray, lateness: int,
    seen: np.ndarray, before: np.ndarray,
) -> bool:  # pragma: no cover - compiled
    """One pass in arrival order: ``before[i]`` = the watermark of row i's series just before
    row i (``max(wm, running max event time - lateness)``, saturating at int64 min); updates
    ``max_time`` and marks ``seen``; ``wm`` is read only. Returns whether some row is behind it."""
    late = False
    floor = _MIN + lateness
    for i in range(sid.size):
        s = sid[i]
        m = max_time[s]
        b = m - lateness if m >= floor else _MIN
        if wm[s] > b:
            b = wm[s]
        before[i] = b
        t = time[i]
        if t < b:
            late = True
        if t > m:
            max_time[s] = t
        seen[s] = True
    return late


# --- window partials ------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _before(a: float, b: float) -> bool:  # pragma: no cover - compiled
    """``a`` sorts before ``b`` as ``np.sort`` orders floats: NaN last."""
    return a < b or (b != b and a == a)


@njit(cache=True, nogil=True)
def _select(a: np.ndarray, lo: int, hi: int, k: int) -> None:  # pragma: no cover - compiled
    """Reorder ``a[lo:hi]`` so that ``a[k]`` holds the value a sort would put there, none after
    it sorting before it and none before it after it (quickselect: median-of-three pivots, Hoare
    partitions; short ranges by insertion)."""
    while hi - lo > 16:
        mid = (lo + hi - 1) // 2
        last = hi - 1
        if _before(a[mid], a[lo]):
            a[mid], a[lo] = a[lo], a[mid]
        if _before(a[last], a[mid]):
            a[last], a[mid] = a[mid], a[last]
            if _before(a[mid], a[lo]):
                a[mid], a[lo] = a[lo], a[mid]
        pivot = a[mid]
        i = lo
        j = last
        while i <= j:
            while _before(a[i], pivot):
                i += 1
            while _before(pivot, a[j]):
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return  # a[j + 1 : i] all equal the pivot
    for i in range(lo + 1, hi):
        x = a[i]
        j = i - 1
        while j >= lo and _before(x, a[j]):
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@njit(cache=True, nogil=True)
def window_partials(
    k: np.ndarray, s: np.ndarray, t: np.ndarray, v: np.ndarray, qs: np.ndarray,
    skeys: np.ndarray, no_key: int,
):  # type: ignore[no-untyped-def]  # pragma: no cover - compiled
    """Partials of rows grouped by (``k``, ``s``) (arrival order within a group; ``s`` of length
    1 means one start for all rows). Per group: rows sorted by time (stable), duplicate times keep
    the later arrival, then count, sum, _m2, min, max, first/last (and their times), trapezoid
    integral, exact percentiles ``qs`` (linear interpolation) and, when ``skeys`` (the sketch key
    of every value) is given, the sketch records (group, key, count) sorted by (group, key).

    Arithmetic follows the NumPy implementation step by step (see :func:`_segment_sum`)."""
    n = k.size
    one_start = s.size == 1 and n != 1
    # group boundaries
    gstart = np.empty(n + 1, np.int64)
    ng = 0
    for i in range(n):
        if i == 0 or k[i] != k[i - 1] or (not one_start and s[i] != s[i - 1]):
            gstart[ng] = i
            ng += 1
    gstart[ng] = n
    nq = qs.size
    o_k = np.empty(ng, np.int64)
    o_s = np.empty(ng, np.int64)
    o_cnt = np.empty(ng, np.int64)
    o_sum = np.empty(ng, np.float64)
    o_m2 = np.empty(ng, np.float64)
    o_min = np.empty(ng, np.float64)
    o_max = np.empty(ng, np.float64)
    o_ft = np.empty(ng, np.int64)
    o_first = np.empty(ng, np.float64)
    o_lt = np.empty(ng, np.int64)
    o_last = np.empty(ng, np.float64)
    o_int = np.empty(ng, np.float64)
    o_q = np.empty((ng, nq), np.float64)
    want_sketch = skeys.size > 0
    r_seg = np.empty(n if want_sketch else 0, np.int64)
    r_key = np.empty(n if want_sketch else 0, np.int32)
    r_cnt = np.empty(n if want_sketch else 0, np.int64)
    nrec = 0
    # scratch, as long as the longest group
    longest = 0
    for g in range(ng):
        longest = max(longest, gstart[g + 1] - gstart[g])
    tt = np.empty(longest, np.int64)
    vv = np.empty(longest, np.float64)
    kk = np.empty(longest, np.int32)
    work = np.empty(longest, np.float64)
    srt = np.empty(longest if nq else 0, np.float64)  # partly sorted in place: no array per group
    qorder = np.argsort(qs)  # percentiles by size, so their ranks come in order
    rank = np.empty(2 * nq, np.int64)
    ks = np.empty(longest if want_sketch else 0, np.int32)
    kcnt = np.zeros(min(4 * longest + 64, 1 << 17) if want_sketch else 0, np.int64)  # bucket counts (see below)
    for g in range(ng):
        a = gstart[g]
        m = gstart[g + 1] - a
        ordered = True
        for j in range(1, m):
            if t[a + j] <= t[a + j - 1]:
                ordered = False
                break
        if ordered:
            for j in range(m):
                tt[j] = t[a + j]
                vv[j] = v[a + j]
                if want_sketch:
                    kk[j] = skeys[a + j]
        else:
            o = np.argsort(t[a : a + m], kind="mergesort")
            c = 0
            for j in range(m):
                r = a + o[j]
                if j + 1 < m and t[a + o[j + 1]] == t[r]:
                    continue  # a later arrival has the same time: it wins
                tt[c] = t[r]
                vv[c] = v[r]
                if want_sketch:
                    kk[c] = skeys[r]
                c += 1
            m = c
        total = _segment_sum(vv, 0, m)
        mean = total / m
        mn = vv[0]
        mx = vv[0]
        for j in range(m):
            d = vv[j] - mean
            work[j] = d * d
            x = vv[j]
            if x < mn or x != x:
                mn = x
            if x > mx or x != x:
                mx = x
        o_k[g] = k[a]
        o_s[g] = s[0] if one_start else s[a]
        o_cnt[g] = m
        o_sum[g] = total
        o_m2[g] = _segment_sum(work, 0, m)
        o_min[g] = mn
        o_max[g] = mx
        o_ft[g] = tt[0]
        o_first[g] = vv[0]
        o_lt[g] = tt[m - 1]
        o_last[g] = vv[m - 1]
        for j in range(m - 1):
            work[j] = ((vv[j + 1] + vv[j]) * float(tt[j + 1] - tt[j])) * 0.5e-9
        work[m - 1] = 0.0
        o_int[g] = _segment_sum(work, 0, m)
        if nq:
            # the order statistics the percentiles read, selected in increasing rank (each
            # selection leaves smaller values before it): a few partitions instead of a sort
            srt[:m] = vv[:m]
            for r in range(2 * nq):
                h = qs[qorder[r // 2]] / 100.0 * (m - 1)
                rank[r] = int(np.floor(h)) if r % 2 == 0 else int(np.ceil(h))
            done = -1
            for r in range(2 * nq):
                want = rank[r]
                if want == done + 1:  # the next rank (e.g. the upper one of an interpolation): a minimum
                    b = want
                    for j in range(want + 1, m):
                        if _before(srt[j], srt[b]):
                            b = j
                    srt[want], srt[b] = srt[b], srt[want]
                    done = want
                elif want > done:
                    _select(srt, done + 1, m, want)
                    done = want
            for qi in range(nq):
                h = qs[qi] / 100.0 * (m - 1)
                lo = int(np.floor(h))
                hi = int(np.ceil(h))
                x = srt[lo]
                o_q[g, qi] = x if hi == lo else x + (h - lo) * (srt[hi] - x)
        if want_sketch:
            # a group's keys span few buckets (values within a few % of each other share one):
            # counted in a table over their range, in key order, instead of sorted
            kmin = 2147483647
            kmax = -2147483648
            for j in range(m):
                key = kk[j]
                if key != no_key:
                    if key < kmin:
                        kmin = key
                    if key > kmax:
                        kmax = key
            if kmax >= kmin and kmax - kmin < min(4 * m + 64, kcnt.size):  # a table scan ~ the group's size
                for j in range(m):
                    key = kk[j]
                    if key != no_key:
                        kcnt[key - kmin] += 1
                for x in range(kmax - kmin + 1):
                    c = kcnt[x]
                    if c:
                        r_seg[nrec] = g
                        r_key[nrec] = kmin + x
                        r_cnt[nrec] = c
                        nrec += 1
                        kcnt[x] = 0
                continue
            ks[:m] = kk[:m]
            ks[:m].sort()
            j = 0
            while j < m:
                key = ks[j]
                e = j + 1
                while e < m and ks[e] == key:
                    e += 1
                if key != no_key:
                    r_seg[nrec] = g
                    r_key[nrec] = key
                    r_cnt[nrec] = e - j
                    nrec += 1
                j = e
    return (o_k, o_s, o_cnt, o_sum, o_m2, o_min, o_max, o_ft, o_first, o_lt, o_last, o_int, o_q,
            r_seg[:nrec], r_key[:nrec], r_cnt[:nrec])


# --- rolling statistics over the last N points ----------------------------------------------
# The windows of key-sorted rows: a row's window is the last N of its key's carried values
# (``buf[key]``, the last N values oldest first, ``count[key]`` of them real) followed by the
# key's rows of the batch up to it. Statistics sum the window's present values one by one, in
# window order, exactly as ``sensorium.stream.rolling._window_stats`` does with NumPy (so the
# results are bit-identical to it); ``which`` holds the statistics wanted (0 avg, 1 std, 2 min,
# 3 max, 4 trend), ``out[j]`` receives ``which[j]``.


@njit(cache=True, nogil=True)
def rolling_stats(
    buf: np.ndarray, count: np.ndarray, gk: np.ndarray, v: np.ndarray, starts: np.ndarray,
    which: np.ndarray, out: np.ndarray, m_out: np.ndarray,
) -> int:  # pragma: no cover - compiled
    w = buf.shape[1]
    n = v.size
    ng = starts.size
    win = np.empty(w, np.float64)
    for g in range(ng):
        k = gk[g]
        s = starts[g]
        e = starts[g + 1] if g + 1 < ng else n
        had = count[k]
        for r in range(s, e):
            pos = r - s
            m = pos + 1 + had
            if m > w:
                m = w
            m_out[r] = m
            first = w - m  # window slots before this are absent
            for c in range(first, w):
                j = pos - (w - 1 - c)
                win[c] = v[s + j] if j >= 0 else buf[k, w + j]
            # NumPy's masked sum starts from the absent slots' zeros: 0.0 + x (turns -0.0 to 0.0)
            acc = win[first] if first == 0 else 0.0 + win[first]
            for c in range(first + 1, w):
                acc += win[c]
            mean = acc / m
            for q in range(which.size):
                st = which[q]
                if st == 0:
                    out[q, r] = mean
                elif st == 2:
                    x = win[first]
                    for c in range(first + 1, w):
                        if win[c] < x:
                            x = win[c]
                    out[q, r] = x
                elif st == 3:
                    x = win[first]
                    for c in range(first + 1, w):
                        if win[c] > x:
                            x = win[c]
                    out[q, r] = x
                elif m < 2:
                    out[q, r] = np.nan
                elif st == 1:
                    d = win[first] - mean
                    a2 = d * d
                    for c in range(first + 1, w):
                        d = win[c] - mean
                        a2 += d * d
                    out[q, r] = np.sqrt(a2 / (m - 1))
                else:
                    xbar = (w - 1) - (m - 1) / 2.0
                    a2 = (first - xbar) * (win[first] - mean)
                    for c in range(first + 1, w):
                        a2 += (c - xbar) * (win[c] - mean)
                    out[q, r] = a2 / (m * (m * m - 1) / 12.0)
    return ng


@njit(cache=True, nogil=True)
def rolling_update(
    buf: np.ndarray, count: np.ndarray, gk: np.ndarray, v: np.ndarray, starts: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Carry the last N values of each key (groups of key-sorted ``v`` from ``starts``) in place."""
    w = buf.shape[1]
    n = v.size
    ng = starts.size
    for g in range(ng):
        k = gk[g]
        s = starts[g]
        e = starts[g + 1] if g + 1 < ng else n
        ln = e - s
        if ln >= w:
            for c in range(w):
                buf[k, c] = v[e - w + c]
        else:
            for c in range(w - ln):
                buf[k, c] = buf[k, c + ln]
            for c in range(ln):
                buf[k, w - ln + c] = v[s + c]
        ct = count[k] + ln
        count[k] = w if ct > w else ct
    return ng


@njit(cache=True, nogil=True)
def pair_counts(
    sid: np.ndarray, fid: np.ndarray, s0: int, f0: int, ns: int, counts: np.ndarray, first: np.ndarray
) -> int:  # pragma: no cover - compiled
    """Rows per (field, series) pair: ``counts[(fid - f0) * ns + sid - s0] += 1`` for every row,
    and ``first[code]`` = the first row of each pair (``first`` filled with -1 by the caller;
    both updated in place). Returns the number of distinct pairs."""
    pairs = 0
    for i in range(sid.size):
        c = (fid[i] - f0) * ns + sid[i] - s0
        if counts[c] == 0:
            first[c] = i
            pairs += 1
        counts[c] += 1
    return pairs


@njit(cache=True, nogil=True)
def pair_scatter(
    sid: np.ndarray, fid: np.ndarray, s0: int, f0: int, ns: int, offset: np.ndarray, out: np.ndarray
) -> int:  # pragma: no cover - compiled
    """Rows placed by pair: row ``i`` of pair ``c = (fid - f0) * ns + sid - s0`` goes to
    ``out[offset[c]]``, then ``offset[c]`` moves on (rows of a pair stay in row order); a pair with
    offset -1 is dropped. ``offset`` is updated in place. Returns the number of rows placed (-1:
    an offset past the end of ``out``; -2: a row's ids outside the codes of ``offset``)."""
    placed = 0
    for i in range(sid.size):
        s = sid[i] - s0
        c = (fid[i] - f0) * ns + s
        if s < 0 or s >= ns or c < 0 or c >= offset.size:
            return -2
        o = offset[c]
        if o >= 0:
            if o >= out.size:
                return -1
            out[o] = i
            offset[c] = o + 1
            placed += 1
    return placed


@njit(cache=True, nogil=True)
def rising_rows(t: np.ndarray, si: np.ndarray, carry: np.ndarray, ok: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """``ok[i]``: row ``i`` is after every earlier row of its group (groups from ``si``) and
    after the group's carried time ``carry[g]``; returns the rows kept per group."""
    ng, n = si.size, t.size
    kept = np.zeros(ng, np.int64)
    for g in range(ng):
        hi = si[g + 1] if g + 1 < ng else n
        m = carry[g]
        k = 0
        for i in range(si[g], hi):
            if t[i] > m:
                ok[i] = True
                m = t[i]
                k += 1
            else:
                ok[i] = False
        kept[g] = k
    return kept


_MIX_A = np.uint64(0xBF58476D1CE4E5B9)
_MIX_B = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


@njit(cache=True, nogil=True)
def _splitmix(x: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """splitmix64's finalizer, as :func:`sensorium.stream.frame._mix` (wrapping uint64)."""
    x ^= x >> _S30
    x *= _MIX_A
    x ^= x >> _S27
    x *= _MIX_B
    x ^= x >> _S31
    return x


@njit(cache=True, nogil=True)
def combo_add(
    codes: np.ndarray, ha: np.ndarray, hb: np.ndarray, ka: np.uint64, kb: np.uint64, oa: np.ndarray, ob: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Add one tag's part to every row's two combination hashes: row ``i`` has the tag value
    ``codes[i]`` (-1: null), whose hashes are ``ha``/``hb``; a non-zero hash ``h`` adds
    ``splitmix64(h ^ k)`` (``k``: the tag name's ``ka``/``kb``) to ``oa[i]``/``ob[i]``, wrapping."""
    n = codes.size
    for i in range(n):
        c = codes[i]
        if c < 0:
            continue
        if ha[c] != 0:
            oa[i] += _splitmix(ha[c] ^ ka)
        if hb[c] != 0:
            ob[i] += _splitmix(hb[c] ^ kb)
    return n


@njit(cache=True, nogil=True)
def remap_keys(
    ts: np.ndarray, tf: np.ndarray, sid: np.ndarray, fid: np.ndarray, bits: int, osid: np.ndarray, okid: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Each row's series and field ids mapped through the tables ``ts``/``tf`` (-1: unknown):
    ``osid[i] = ts[sid[i]]``, ``okid[i] = ts[sid[i]] << bits | tf[fid[i]]``; a row with an id
    outside a table or unknown to it gets -1 in both. Returns how many rows did."""
    n = sid.size
    ns, nf = ts.size, tf.size
    missed = 0
    for i in range(n):
        a = sid[i]
        b = fid[i]
        x = ts[a] if 0 <= a < ns else -1
        y = tf[b] if 0 <= b < nf else -1
        if x < 0 or y < 0:
            osid[i] = -1
            okid[i] = -1
            missed += 1
        else:
            osid[i] = x
            okid[i] = (np.int64(x) << bits) | y
    return missed


_NO_TIME = -(1 << 62)  # sensorium.rules._kernels.NONE: no previous point


@njit(cache=True, nogil=True)
def level_rows(
    v: np.ndarray, t: np.ndarray, si: np.ndarray, slots: np.ndarray, carry_t: np.ndarray, carry_v: np.ndarray,
    rate: bool, dirs: np.ndarray, xs: np.ndarray, deadband: float, rank: np.ndarray, hold: int,
    active: np.ndarray, start: np.ndarray, any_active: np.ndarray, sig: np.ndarray, sev: np.ndarray, lvl: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Threshold (``rate`` False) or rate-of-change levels with hysteresis and ``for`` (``hold``
    ns), row by row within each group (groups from ``si``, group ``g`` in slot ``slots[g]``).

    The signal ``sig[i]`` is ``v[i]``, or for a rate ``(v - v_prev) / (t - t_prev) * 1e9`` with the
    group's carried point (``carry_t``/``carry_v``) before its first row, NaN without one. Level
    ``k`` (``dirs[k]`` 1: above ``xs[k]``, -1: below) is reached at ``sig >= x`` (``<= x``), cleared
    at ``sig < x - deadband`` (``> x + deadband``), kept otherwise (NaN); with ``hold``, it counts
    from the row it was reached (``start``) once ``hold`` has passed. Writes each row's severity
    rank (``sev``, zeros on entry) and level (``lvl``, -1 on entry), and the per-slot state
    ``active[k, slot]``, ``start[k, slot]`` (when ``hold``), ``any_active[slot]``."""
    ng, n, nl = si.size, v.size, xs.size
    clear = np.empty(nl, np.float64)  # where each level clears
    qlo, qhi = -np.inf, np.inf  # a row strictly between reaches no level
    for k in range(nl):
        if dirs[k] > 0:
            clear[k] = xs[k] - deadband
            qhi = min(qhi, min(xs[k], clear[k]))
        else:
            clear[k] = xs[k] + deadband
            qlo = max(qlo, max(xs[k], clear[k]))
    aa = np.zeros(nl, np.bool_)  # a group's levels reached, and since when
    ss = np.zeros(nl, np.int64)
    for g in range(ng):
        lo = si[g]
        hi = si[g + 1] if g + 1 < ng else n
        gl = slots[g]
        if rate:
            pt = carry_t[g]
            pv = carry_v[g]
            for i in range(lo, hi):
                if pt == _NO_TIME:
                    sig[i] = np.nan
                else:
                    dt = np.float64(t[i] - pt)
                    d = v[i] - pv
                    if dt != 0.0:
                        sig[i] = d / dt * 1e9
                    elif d != d or d == 0.0:
                        sig[i] = np.nan
                    else:
                        sig[i] = np.inf if d > 0 else -np.inf
                pt = t[i]
                pv = v[i]
        else:
            for i in range(lo, hi):
                sig[i] = v[i]
        n_on = 0
        for k in range(nl):
            aa[k] = active[k, gl]
            ss[k] = start[k, gl] if hold else 0
            if aa[k]:
                n_on += 1
        for i in range(lo, hi):
            y = sig[i]
            if n_on == 0 and qlo < y < qhi:
                continue  # quiet, no level reached: none can be (nor can a `for` start)
            for k in range(nl):
                was = aa[k]
                a = was
                if dirs[k] > 0:
                    if y >= xs[k]:
                        a = True
                    elif y < clear[k]:
                        a = False
                elif y <= xs[k]:
                    a = True
                elif y > clear[k]:
                    a = False
                if a != was:
                    aa[k] = a
                    n_on += 1 if a else -1
                if hold:
                    if a and not was:
                        ss[k] = t[i]
                    eff = a and t[i] - ss[k] >= hold
                else:
                    eff = a
                if eff and rank[k] > sev[i]:
                    sev[i] = rank[k]
                    lvl[i] = k
        for k in range(nl):
            active[k, gl] = aa[k]
            if hold:
                start[k, gl] = ss[k]
        any_active[gl] = n_on > 0
    return ng


@njit(cache=True, nogil=True)
def pane_buckets(
    t: np.ndarray, sid: np.ndarray, kid: np.ndarray, v: np.ndarray, off: int, p: int, q0: int, s0: int, ns: int,
    ends: np.ndarray, okid: np.ndarray, ot: np.ndarray, ov: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """Rows bucketed by (pane, series): the code of row ``i`` is ``((t - off) // p - q0) * ns +
    sid - s0``; the rows (``kid``, ``t``, ``v``) are placed in code order, arrival order kept within
    a code, into ``okid``/``ot``/``ov``; ``ends`` (zeros, one per code, from the caller) ends up
    holding where each code's rows end. The caller makes every code fall in ``ends``."""
    n = t.size
    for i in range(n):
        ends[((t[i] - off) // p - q0) * ns + sid[i] - s0] += 1
    run = 0
    for c in range(ends.size):
        k = ends[c]
        ends[c] = run
        run += k
    for i in range(n):
        c = ((t[i] - off) // p - q0) * ns + sid[i] - s0
        o = ends[c]
        okid[o] = kid[i]
        ot[o] = t[i]
        ov[o] = v[i]
        ends[c] = o + 1
    return n


# --- folding finished partials into a coarser level ----------------------------------------
# The 2-D arrays ``fold_partials`` takes and returns hold one column per row, in the order of
# ``sensorium.jit.FOLD_INTS`` (kid, start, count, _first_time, _last_time) and ``FOLD_FLOATS``
# (sum, _m2, min, max, first, last, integral).


@njit(cache=True, nogil=True)
def _fmin(a: float, b: float) -> float:  # pragma: no cover - compiled
    """``np.minimum``: NaN if either is."""
    return a if a < b or a != a else b


@njit(cache=True, nogil=True)
def _fmax(a: float, b: float) -> float:  # pragma: no cover - compiled
    return a if a > b or a != a else b


@njit(cache=True, nogil=True)
def _fold_row(oi: np.ndarray, of: np.ndarray, g: int, xi: np.ndarray, xf: np.ndarray, r: int) -> None:  # pragma: no cover - compiled
    """Fold partial row ``r`` of (``xi``, ``xf``) into output row ``g`` (which holds a partial):
    the two in ``_first_time`` order, merged as ``merge_partials`` merges a group of two rows."""
    a_first = oi[3, g] <= xi[3, r]
    if a_first:
        ac, aft, alt = oi[2, g], oi[3, g], oi[4, g]
        asum, am2, amin, amax, afirst, alast, aint = of[0, g], of[1, g], of[2, g], of[3, g], of[4, g], of[5, g], of[6, g]
        bc, bft, blt = xi[2, r], xi[3, r], xi[4, r]
        bsum, bm2, bmin, bmax, bfirst, blast, bint = xf[0, r], xf[1, r], xf[2, r], xf[3, r], xf[4, r], xf[5, r], xf[6, r]
    else:
        ac, aft, alt = xi[2, r], xi[3, r], xi[4, r]
        asum, am2, amin, amax, afirst, alast, aint = xf[0, r], xf[1, r], xf[2, r], xf[3, r], xf[4, r], xf[5, r], xf[6, r]
        bc, bft, blt = oi[2, g], oi[3, g], oi[4, g]
        bsum, bm2, bmin, bmax, bfirst, blast, bint = of[0, g], of[1, g], of[2, g], of[3, g], of[4, g], of[5, g], of[6, g]
    n = ac + bc
    total = asum + bsum
    mean = total / float(n)
    da = asum / float(ac) - mean
    db = bsum / float(bc) - mean
    bridge = ((alast + bfirst) * 0.5) * (float(bft - alt) * 1e-9)
    oi[2, g] = n
    oi[3, g] = aft
    oi[4, g] = blt
    of[0, g] = total
    of[1, g] = (am2 + float(ac) * da * da) + (bm2 + float(bc) * db * db)
    of[2, g] = _fmin(amin, bmin)
    of[3, g] = _fmax(amax, bmax)
    of[4, g] = afirst
    of[5, g] = blast
    of[6, g] = (aint + bridge) + (bint + 0.0)


@njit(cache=True, nogil=True)
def fold_partials(
    hi: np.ndarray, hf: np.ndarray, hoff: np.ndarray, hkey: np.ndarray, hcnt: np.ndarray,
    ni: np.ndarray, nf: np.ndarray, noff: np.ndarray, nkey: np.ndarray, ncnt: np.ndarray,
    oi: np.ndarray, of: np.ndarray, ooff: np.ndarray, okey: np.ndarray, ocnt: np.ndarray,
) -> int:  # pragma: no cover - compiled
    """A coarser level's running partials ``h`` (sorted by kid, start) with finished finer
    partials ``n`` folded in (sorted by kid, start, _first_time), one window (kid, start) at a
    time: the held row, then each new row in order, folded pairwise as ``merge_partials``
    merges a group of two (a window of one row alone goes through its identity step:
    ``_m2 + count * 0 * 0``, ``integral + 0``). Rows are ``*i`` (``FOLD_INTS``) and ``*f``
    (``FOLD_FLOATS``) columns; sketches are records (key, count) per row from ``*off``, merged
    by adding the counts of equal keys (sorted by key). Writes the windows in (kid, start) order
    to ``o*`` (as long as both inputs) and returns how many; ``ooff[g]`` is where window ``g``'s
    records start (``ooff[count]`` their total)."""
    nh = hi.shape[1]
    nn = ni.shape[1]
    i = 0
    j = 0
    g = 0
    nrec = 0
    sk = np.empty(0, np.int32)
    sc = np.empty(0, np.int64)
    while i < nh or j < nn:
        if j >= nn or (i < nh and (hi[0, i] < ni[0, j] or (hi[0, i] == ni[0, j] and hi[1, i] <= ni[1, j]))):
            kid, start = hi[0, i], hi[1, i]
        else:
            kid, start = ni[0, j], ni[1, j]
        has_h = i < nh and hi[0, i] == kid and hi[1, i] == start
        j2 = j
        while j2 < nn and ni[0, j2] == kid and ni[1, j2] == start:
            j2 += 1
        # the first source, as the window's partial so far
        if has_h:
            for c in range(5):
                oi[c, g] = hi[c, i]
            for c in range(7):
                of[c, g] = hf[c, i]
            first_new = j
        else:
            for c in range(5):
                oi[c, g] = ni[c, j]
            for c in range(7):
                of[c, g] = nf[c, j]
            first_new = j + 1
        if not has_h or j2 == j:  # a window of one row: its identity step
            d = of[0, g] / float(oi[2, g]) - of[0, g] / float(oi[2, g])
            of[1, g] = of[1, g] + float(oi[2, g]) * d * d
            of[6, g] = of[6, g] + 0.0
        for r in range(first_new, j2):
            _fold_row(oi, of, g, ni, nf, r)
        # sketches: each source's records (sorted by key, unique) merged in turn, equal keys added
        m = (hoff[i + 1] - hoff[i] if has_h else 0) + (noff[j2] - noff[j])
        if m > sk.size:
            sk = np.empty(2 * m, np.int32)
            sc = np.empty(2 * m, np.int64)
        ooff[g] = nrec
        p = 0  # merged so far: sk/sc[:p]; each source merges into okey/ocnt[nrec:], copied back
        for src in range(-1 if has_h else 0, j2 - j):
            if src < 0:
                lo, hi_, keys, cnts = hoff[i], hoff[i + 1], hkey, hcnt
            else:
                lo, hi_, keys, cnts = noff[j + src], noff[j + src + 1], nkey, ncnt
            a = 0
            b = lo
            w = nrec
            while a < p or b < hi_:
                if b >= hi_ or (a < p and sk[a] < keys[b]):
                    okey[w] = sk[a]
                    ocnt[w] = sc[a]
                    a += 1
                elif a >= p or keys[b] < sk[a]:
                    okey[w] = keys[b]
                    ocnt[w] = cnts[b]
                    b += 1
                else:
                    okey[w] = sk[a]
                    ocnt[w] = sc[a] + cnts[b]
                    a += 1
                    b += 1
                w += 1
            p = w - nrec
            for q in range(p):
                sk[q] = okey[nrec + q]
                sc[q] = ocnt[nrec + q]
        nrec += p
        if has_h:
            i += 1
        j = j2
        g += 1
    ooff[g] = nrec
    return g


#: The exported kernels: name -> (function, Numba signature). ``counting_argsort`` twice, for
#: 64- and 32-bit keys; arrays are C-contiguous (the loader's wrappers make them so).
_I8, _I4, _F8, _B = "int64[::1]", "int32[::1]", "float64[::1]", "boolean[::1]"
EXPORTS = {
    "counting_argsort_i8": (counting_argsort, f"int64[::1]({_I8}, int64, int64)"),
    "counting_argsort_i4": (counting_argsort, f"int64[::1]({_I4}, int64, int64)"),
    "group_order": (group_order, f"int64[::1]({_I8}, {_I8}, int64, int64, int64)"),
    "pair_counts": (pair_counts, f"int64({_I4}, {_I4}, int64, int64, int64, {_I8}, {_I8})"),
    "pair_scatter": (pair_scatter, f"int64({_I4}, {_I4}, int64, int64, int64, {_I8}, {_I8})"),
    "rising_rows": (rising_rows, f"int64[::1]({_I8}, {_I8}, {_I8}, {_B})"),
    "combo_add": (combo_add, "int64(int64[::1], uint64[::1], uint64[::1], uint64, uint64, uint64[::1], uint64[::1])"),
    "remap_keys": (remap_keys, f"int64({_I4}, {_I4}, {_I4}, {_I4}, int64, {_I8}, {_I8})"),
    "level_rows": (
        level_rows,
        f"int64({_F8}, {_I8}, {_I8}, {_I4}, {_I8}, {_F8}, boolean, int8[::1], {_F8}, float64, int8[::1], int64, "
        f"boolean[:, ::1], int64[:, ::1], {_B}, {_F8}, int8[::1], int8[::1])",
    ),
    "pane_buckets": (
        pane_buckets, f"int64({_I8}, {_I8}, {_I8}, {_F8}, int64, int64, int64, int64, int64, {_I8}, {_I8}, {_I8}, {_F8})"
    ),
    "segment_sums": (segment_sums, f"float64[::1]({_F8}, {_I8})"),
    "observe_rows": (observe_rows, f"boolean({_I8}, {_I8}, {_I8}, {_I8}, int64, {_B}, {_I8})"),
    "rolling_stats": (
        rolling_stats, f"int64(float64[:, ::1], {_I8}, {_I8}, {_F8}, {_I8}, {_I8}, float64[:, ::1], {_I8})"
    ),
    "rolling_update": (rolling_update, f"int64(float64[:, ::1], {_I8}, {_I8}, {_F8}, {_I8})"),
    "fold_partials": (
        fold_partials,
        f"int64(int64[:, ::1], float64[:, ::1], {_I8}, {_I4}, {_I8}, int64[:, ::1], float64[:, ::1], {_I8}, {_I4}, {_I8}, "
        f"int64[:, ::1], float64[:, ::1], {_I8}, {_I4}, {_I8})",
    ),
    "window_partials": (
        window_partials,
        "Tuple((" + ", ".join(["int64[:]"] * 3 + ["float64[:]"] * 4 + ["int64[:]", "float64[:]", "int64[:]"]
                              + ["float64[:]"] * 2 + ["float64[:, :]", "int64[:]", "int32[:]", "int64[:]"])
        + f"))({_I8}, {_I8}, {_I8}, {_F8}, {_F8}, {_I4}, int64)",
    ),
}
