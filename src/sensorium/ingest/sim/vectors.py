"""Vectorised helpers: AR(1) noise and stretches (runs of readings) carried over chunks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_NONE = -(1 << 62)  # "no stretch" sentinel (reading index or time)

# --------------------------------------------------------------------------- vector helpers


def _ar1(eps: np.ndarray, phi: float, x0: np.ndarray) -> np.ndarray:
    """AR(1) along axis 1: ``x[:, j] = phi * x[:, j-1] + eps[:, j]``, with ``x[:, -1] = x0``.

    Vectorised by segments: within a segment ``x_j = phi^j (x0 + cumsum(eps_i / phi^i))``; segments
    are short enough that ``phi^-j`` stays far from overflow.
    """
    d, n = eps.shape
    out = np.empty_like(eps)
    if n == 0:
        return out
    if phi <= 1e-12:
        out[:] = eps
        return out
    seg = n if phi >= 1.0 else max(1, min(n, int(200.0 / -math.log(phi))))
    prev = x0.astype(np.float64)
    for s in range(0, n, seg):
        e = eps[:, s : s + seg]
        m = e.shape[1]
        pw = phi ** np.arange(1, m + 1, dtype=np.float64)
        out[:, s : s + m] = pw * (prev[:, None] + np.cumsum(e / pw, axis=1))
        prev = out[:, s + m - 1]
    return out


class _Carry:
    """A stretch (fault or appliance cycle) still running at the end of a chunk, per device."""

    __slots__ = ("field", "length", "param", "start")

    def __init__(self, d: int) -> None:
        self.start = np.full(d, _NONE, np.int64)
        self.length = np.zeros(d, np.int64)
        self.field = np.zeros(d, np.int64)
        self.param = np.zeros(d, np.float64)


@dataclass
class _Stretch:
    active: np.ndarray  # (D, n) bool
    elapsed: np.ndarray  # (D, n) readings since the stretch began
    length: np.ndarray  # (D, n) stretch length in readings
    field: np.ndarray  # (D, n) parameter: field choice
    new: np.ndarray  # (D, n) bool: the stretch began in this chunk (else: carried over)
    last: np.ndarray  # (D, n) column where it began (valid where ``new``)
    cont: np.ndarray  # (D,) bool: still running after the chunk


def _stretches(
    rng: np.random.Generator,
    carry: _Carry,
    k: np.ndarray,
    shape: tuple[int, int],
    p: float | np.ndarray,
    lengths: tuple[int, int],
    n_fields: int = 1,
) -> _Stretch:
    """Stretches that begin with probability ``p`` per reading (a scalar, or ``(D, 1)`` per device)
    and last ``lengths`` readings.

    A stretch beginning inside another replaces it (the runs merge). State carries over chunks.
    """
    d, n = shape
    starts = rng.random(shape) < p if np.any(np.asarray(p) > 0) else np.zeros(shape, bool)
    idx = np.flatnonzero(starts)
    length = np.zeros(shape, np.int64)
    length.flat[idx] = rng.integers(lengths[0], lengths[1] + 1, idx.size)
    fld = np.zeros(shape, np.int64)
    if n_fields > 1:
        fld.flat[idx] = rng.integers(0, n_fields, idx.size)
    col = np.where(starts, np.arange(n, dtype=np.int64), -1)
    last = np.maximum.accumulate(col, axis=1)
    new = last >= 0
    lj = np.where(new, last, 0)
    start = np.where(new, k[lj], carry.start[:, None])
    length = np.where(new, np.take_along_axis(length, lj, 1), carry.length[:, None])
    fld = np.where(new, np.take_along_axis(fld, lj, 1), carry.field[:, None])
    elapsed = k[None, :] - start
    active = (elapsed >= 0) & (elapsed < length)
    cont = active[:, -1] & (elapsed[:, -1] + 1 < length[:, -1])
    carry.start = np.where(cont, start[:, -1], _NONE)
    carry.length = np.where(cont, length[:, -1], 0)
    carry.field = np.where(cont, fld[:, -1], 0)
    return _Stretch(active, elapsed, length, fld, new, lj, cont)


def _pick_field(
    rng: np.random.Generator, mask: np.ndarray, candidates: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """For the points in ``mask``: flat indices and a random choice among ``candidates``."""
    idx = np.flatnonzero(mask)
    which = rng.integers(0, len(candidates), idx.size) if candidates else np.zeros(0, np.int64)
    return idx, which


# --------------------------------------------------------------------------- per-kind generation
