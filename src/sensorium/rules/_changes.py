"""The Python step of the engine: the rows where a rule's severity changes (and, for flapping
alerts, the rows where they may become stable) go through the alert book in order.

Rows are grouped by key, each group in event-time order, so one pass over the change rows visits
each key's changes in order; between two changes of a flapping alert, the first row past its
flap window (a binary search in that key's times) ends the flapping.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sensorium.rules._book import Book, Subject
from sensorium.rules._kernels import Segments
from sensorium.rules._messages import Describe
from sensorium.rules.types import Transition


def apply_changes(
    book: Book,
    ri: int,
    describe: Describe,
    s: Segments,
    sev: np.ndarray,
    lvl: np.ndarray,
    sig: np.ndarray,
    cidx: np.ndarray,
    flappy: np.ndarray,
    subject_of: Callable[[int, int], Subject],
    out: list[tuple[int, int, int, Transition]],
) -> dict[int, int]:
    """Turn the change rows ``cidx`` of rule ``ri`` into transitions (appended to ``out`` as
    ``(row, rule, order, transition)``); ``flappy`` are rows of keys flapping at batch start.
    Returns the keys it touched, with their slots."""
    window = book.window
    records = book.records
    change = book.change
    append = out.append
    group = s.group
    c_pos = cidx.tolist()
    c_kid = s.kid[cidx].tolist()
    c_t = s.t[cidx].tolist()
    c_row = s.row[cidx].tolist()
    c_sev = sev[cidx].tolist()
    c_lvl = lvl[cidx].tolist()
    c_v = s.v[cidx].tolist()
    c_sig = sig[cidx].tolist()
    c_slot = s.slots[group[cidx]].tolist()
    starts = s.si

    def group_of(p: int) -> tuple[int, int]:
        g = int(group[p])
        return int(starts[g]), int(starts[g + 1]) if g + 1 < len(starts) else len(s)

    def settle(key: tuple[int, int], subj: Subject, lo: int, hi: int) -> None:
        """A flapping alert becomes stable at the first row in [lo, hi) past its window."""
        rec = records.get(key)
        if rec is None or not rec.flapping or lo >= hi:
            return
        j = lo + int(np.searchsorted(s.t[lo:hi], rec.changed_at + window, side="left"))
        if j < hi:
            tr = book.stabilise(key, subj, int(s.t[j]))
            if tr is not None:
                append((int(s.row[j]), ri, len(out), tr))

    handled: dict[int, int] = {}
    i, n = 0, len(c_pos)
    while i < n:  # one run of changes per key
        k = c_kid[i]
        j = i + 1
        while j < n and c_kid[j] == k:
            j += 1
        key = (ri, k)
        subj = subject_of(ri, k)
        rec = records.get(key)
        flapping = rec is not None and rec.flapping
        pos = group_of(c_pos[i])[0] if flapping else c_pos[i]
        for q in range(i, j):
            if flapping:
                settle(key, subj, pos, c_pos[q])
            msg, extra = describe(subj, c_sev[q], c_lvl[q], c_v[q], c_sig[q])
            for tr in change(key, subj, c_t[q], c_sev[q], c_v[q], msg, extra):
                append((c_row[q], ri, len(out), tr))
            pos = c_pos[q] + 1
            rec = records.get(key)
            flapping = rec is not None and rec.flapping
        if flapping:
            settle(key, subj, pos, group_of(pos - 1)[1])
        handled[k] = c_slot[i]
        i = j
    if len(flappy):
        f_kid = s.kid[flappy].tolist()
        f_slot = s.slots[group[flappy]].tolist()
        for p, k, slot in zip(flappy.tolist(), f_kid, f_slot, strict=True):  # flapping keys without changes
            if k not in handled:
                handled[k] = slot
                settle((ri, k), subject_of(ri, k), p, p + 1)
    return handled
