"""The detector interface: per-series state, batch learning and scoring, checkpointable state.

A detector sees a *score frame*: a Polars frame with columns ``series`` (any key naming one
series: the stream uses ``"<series>|<field>"``), ``time`` (Int64, UTC ns) and ``value``
(Float64), rows in arrival order. It keeps state per series and offers, in the spirit of River:

``score_many(frame)``  the anomaly score of every row in [0, 1], *prequential*: each row is scored
                       against the state built from every earlier row (earlier batches and earlier
                       rows of this batch of the same series), then learned. Strictly causal: a
                       score at row t depends only on rows <= t of its series.
``learn_many(frame)``  learn rows without scoring (leaves the same state as ``score_many``).
``score_one`` / ``learn_one``  the same for one record (docs and tests; not for hot paths).
``state()`` / ``restore(state)``  plain, picklable data; a restored detector continues exactly as
                       the original would have.

Contract (tests/detect/test_contract.py runs it over every registered detector): scores in
[0, 1]; causality; determinism under a seed; state round trip; batch = record-by-record results
(any split of the stream into batches gives the same scores); series are independent.

Cold start: every detector scores 0 until it has seen ``min_points`` points of a series (each
documents its own). Non-finite values are scored 0 and not learned.

Vectorisation: :class:`Layout` sorts a batch by series (stable) and lays each series' rows out as
one row of a right-padded matrix ``[series, points]``, so a recursion runs along axis 1 for all
series at once (``scipy.signal.lfilter``, bottleneck moving windows, cumulative sums) and a long
single series is one C loop; :class:`StateTable` maps series keys to dense state rows.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import polars as pl
import pyarrow as pa

from sensorium.keyindex import grow

SCORE_SCHEMA = {"series": pl.Utf8, "time": pl.Int64, "value": pl.Float64}
MAX_ABS = 1e150  # larger magnitudes are treated as non-finite (their squares overflow)


def score_frame(series: Any, time: Any, value: Any) -> pl.DataFrame:
    """A score frame from columns (a scalar ``series`` names one series)."""
    value = np.asarray(value, dtype=np.float64)
    n = len(value)
    if isinstance(series, str):
        series = [series] * n
    return pl.DataFrame(
        {"series": pl.Series(series, dtype=pl.Utf8), "time": np.asarray(time, np.int64), "value": value}
    )


@dataclass
class Layout:
    """A batch's rows grouped by series (stable) and laid out as a padded matrix."""

    order: np.ndarray  # row indices, grouped by series, arrival order kept within a series
    seg: np.ndarray  # segment (series of the batch) of each row in ``order``
    pos: np.ndarray  # position of each row within its segment
    lengths: np.ndarray  # rows per segment
    keys: list[str]  # key of each segment

    @classmethod
    def of(cls, keys: pl.Series) -> Layout:
        codes = keys.cast(pl.Categorical).to_physical().to_numpy() if keys.len() else np.zeros(0, np.int64)
        # dense codes in order of first appearance
        uniq, first, inv = np.unique(codes, return_index=True, return_inverse=True)
        rank = np.empty(len(uniq), np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
        seg_of_row = rank[inv] if len(codes) else np.zeros(0, np.int64)
        order = np.argsort(seg_of_row, kind="stable")
        seg = seg_of_row[order]
        lengths = np.bincount(seg, minlength=len(uniq)).astype(np.int64)
        starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
        pos = np.arange(len(order), dtype=np.int64) - starts[seg]
        key_list = keys.gather(order[starts]).to_list() if len(uniq) else []
        return cls(order, seg, pos, lengths, key_list)

    @property
    def width(self) -> int:
        return int(self.lengths.max()) if len(self.lengths) else 0

    def pad(self, sorted_col: np.ndarray, fill: float = np.nan, lead: np.ndarray | None = None) -> np.ndarray:
        """``[segments, width]`` matrix of a column given in ``order``; ``lead`` ``[segments, L]``
        is placed before each row's values (carried history)."""
        L = 0 if lead is None else lead.shape[1]
        m = np.full((len(self.lengths), L + self.width), fill, dtype=np.float64)
        if lead is not None:
            m[:, :L] = lead
        m[self.seg, L + self.pos] = sorted_col
        return m

    def unpad(self, m: np.ndarray, lead: int = 0) -> np.ndarray:
        """The inverse of :meth:`pad`: values in ``order``."""
        return m[self.seg, lead + self.pos]

    def last(self, m: np.ndarray, lead: int = 0) -> np.ndarray:
        """Each segment's value at its last real column."""
        return m[np.arange(len(self.lengths)), lead + self.lengths - 1]

    def tail(self, m: np.ndarray, k: int, lead: int = 0) -> np.ndarray:
        """The last ``k`` columns before each segment's end (``[segments, k]``), padding kept."""
        end = lead + self.lengths  # exclusive
        cols = end[:, None] - k + np.arange(k)[None, :]
        ok = cols >= 0
        out = np.full((len(self.lengths), k), np.nan)
        rows = np.broadcast_to(np.arange(len(self.lengths))[:, None], cols.shape)
        out[ok] = m[rows[ok], cols[ok]]
        return out

    def length_groups(self, slack: int = 2) -> list[np.ndarray] | None:
        """Segments grouped by length class (powers of two) when padding everything to the
        longest would cost more than ``slack`` x the real cells; None when it would not."""
        n = len(self.lengths)
        if n <= 1 or n * self.width <= slack * max(len(self.order), 1024):
            return None
        cls = np.ceil(np.log2(np.maximum(self.lengths, 1))).astype(np.int64)
        return [np.flatnonzero(cls == c) for c in np.unique(cls)]

    def subset(self, segs: np.ndarray) -> tuple[Layout, np.ndarray]:
        """(layout of these segments only, their rows' positions in this layout's order)."""
        starts = np.r_[0, np.cumsum(self.lengths)[:-1]]
        lens = self.lengths[segs]
        seg = np.repeat(np.arange(len(segs)), lens)
        # row i of segment j: starts[segs[j]] + (i - first row of j in the subset)
        first = np.r_[0, np.cumsum(lens)[:-1]].astype(np.int64)
        rows = np.repeat(starts[segs] - first, lens) + np.arange(int(lens.sum()), dtype=np.int64)
        sub = Layout(self.order[rows], seg, self.pos[rows], lens.copy(), [self.keys[i] for i in segs.tolist()])
        return sub, rows

    def scatter(self, sorted_values: np.ndarray) -> np.ndarray:
        """Values given in ``order`` back in the batch's row order."""
        out = np.empty(len(self.order), dtype=np.asarray(sorted_values).dtype)
        out[self.order] = sorted_values
        return out


class StateTable:
    """Series key → dense row of the detector's state arrays (grown on demand)."""

    def __init__(self, columns: dict[str, tuple[tuple[int, ...], float]]) -> None:
        # name -> (extra shape, initial value)
        self.spec = columns
        self.index: dict[str, int] = {}
        self.arrays: dict[str, np.ndarray] = {
            name: np.full((0, *shape), init, dtype=np.float64) for name, (shape, init) in columns.items()
        }

    def __len__(self) -> int:
        return len(self.index)

    def ids(self, keys: list[str]) -> np.ndarray:
        """Rows of the keys, adding unknown ones with initial state."""
        index = self.index
        ids = np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64, count=len(keys))
        for name, (_shape, init) in self.spec.items():
            self.arrays[name] = grow(self.arrays[name], len(index), init)
        return ids

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def state(self) -> dict[str, Any]:
        n = len(self.index)
        return {"keys": list(self.index), "arrays": {k: v[:n].copy() for k, v in self.arrays.items()}}

    def restore(self, state: dict[str, Any]) -> None:
        self.index = {k: i for i, k in enumerate(state["keys"])}
        self.arrays = {k: np.array(v, dtype=np.float64) for k, v in state["arrays"].items()}
        for name, (shape, init) in self.spec.items():
            if name not in self.arrays:
                self.arrays[name] = np.full((len(self.index), *shape), init, dtype=np.float64)


class Detector(ABC):
    """Base class: subclasses implement :meth:`_score_layout` and the state spec."""

    #: registry name
    name: ClassVar[str] = ""
    #: points of a series before it scores anything but 0
    min_points: int = 1
    #: whether a batch may be scored in groups of series of similar length (False for detectors
    #: whose state spans series, such as a device's fields)
    split_by_length: bool = True

    def __init__(self) -> None:
        self.table = StateTable(self.state_spec())

    # -- what subclasses provide ---------------------------------------------------------------
    @abstractmethod
    def state_spec(self) -> dict[str, tuple[tuple[int, ...], float]]:
        """State arrays per series: name → (shape per series, initial value)."""

    @abstractmethod
    def _run(self, lay: Layout, ids: np.ndarray, time: np.ndarray, value: np.ndarray) -> np.ndarray:
        """Score rows (given in layout order, finite values only) and update the state of
        series ``ids`` (one per segment). Returns scores in layout order."""

    def params(self) -> dict[str, Any]:
        """Constructor parameters (for state checks and docs)."""
        return {}

    # -- public API ----------------------------------------------------------------------------
    def score_many(self, frame: pl.DataFrame | pa.Table) -> np.ndarray:
        """Prequential scores of every row (row order of ``frame``: a Polars frame or an Arrow
        table with ``series``, ``time``, ``value``), learning each row."""
        if isinstance(frame, pa.Table):
            frame = pl.from_arrow(frame)  # type: ignore[assignment]
            assert isinstance(frame, pl.DataFrame)
        if frame.height == 0:
            return np.zeros(0)
        value = frame.get_column("value").cast(pl.Float64).to_numpy()
        # beyond 1e150 a squared residual overflows: treated as not a number (scored 0, not learned)
        finite = np.isfinite(value) & (np.abs(value) <= MAX_ABS)
        scores = np.zeros(frame.height)
        if not finite.all():
            idx = np.flatnonzero(finite)
            if not len(idx):
                return scores
            sub = frame[idx]
            scores[idx] = self.score_many(sub)
            return scores
        lay = Layout.of(frame.get_column("series"))
        ids = self.table.ids(lay.keys)
        t = frame.get_column("time").cast(pl.Int64).to_numpy()[lay.order]
        v = value[lay.order]
        groups = lay.length_groups() if self.split_by_length else None
        if groups is None:
            s = self._run(lay, ids, t, v)
        else:
            # series of very different lengths: one padded matrix per length class, so one long
            # backlog among many short series does not pad them all to its length
            s = np.empty(len(v))
            for segs in groups:
                part, rows = lay.subset(segs)
                s[rows] = self._run(part, ids[segs], t[rows], v[rows])
        return np.clip(np.nan_to_num(lay.scatter(s), nan=0.0), 0.0, 1.0)

    def learn_many(self, frame: pl.DataFrame | pa.Table) -> None:
        self.score_many(frame)

    def score_one(self, series: str, time: int, value: float) -> float:
        """Score one record and learn it (docs and tests; batches are the fast path)."""
        return float(self.score_many(score_frame([series], [time], [value]))[0])

    def learn_one(self, series: str, time: int, value: float) -> None:
        self.score_one(series, time, value)

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params(), "table": self.table.state(), "extra": self._extra_state()}

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; a state of another detector or of other parameters is a
        ValueError (the stream then starts that detector fresh)."""
        if state.get("name") != self.name:
            raise ValueError(f"state of detector {state.get('name')!r} given to {self.name!r}")
        if state.get("params") != self.params():
            raise ValueError(f"state of {self.name} with parameters {state.get('params')} given to {self.params()}")
        self.table.restore(state["table"])
        self._restore_extra(state.get("extra") or {})

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _restore_extra(self, extra: dict[str, Any]) -> None:
        return None

    def clone(self) -> Detector:
        """A fresh detector with the same parameters (no state)."""
        return type(self)(**copy.deepcopy(self.params()))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


_REGISTRY: dict[str, Callable[..., Detector]] = {}


def register(name: str) -> Callable[[type[Detector]], type[Detector]]:
    def deco(cls: type[Detector]) -> type[Detector]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def register_factory(name: str, factory: Callable[..., Detector]) -> None:
    _REGISTRY[name] = factory


#: the built-in detectors' modules, imported (and so registered) on the first :func:`make` or
#: :func:`names`: a process that detects nothing (``detect.enabled = false``) never loads them
#: or what they need (SciPy's special functions, ~11 MB resident)
_BUILTINS = ("combine", "forest", "likelihood", "univariate")
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        import importlib

        for m in _BUILTINS:
            importlib.import_module(f"sensorium.detect.{m}")
        _loaded = True


def names() -> list[str]:
    """Registered detector names."""
    _load_builtins()
    return sorted(_REGISTRY)


def make(name: str, **params: Any) -> Detector:
    """A new detector by registry name (``"default"`` is the tuned default)."""
    _load_builtins()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(names())}") from None
    return factory(**params)


def squash(z: np.ndarray, half: float = 3.0) -> np.ndarray:
    """Map a non-negative deviation (sigmas) to [0, 1): ``z / (z + half)`` (0.5 at ``half``).
    Unlike a normal tail probability it never saturates, so a larger deviation always scores
    higher."""
    z = np.maximum(np.nan_to_num(z, nan=0.0, posinf=1e300), 0.0)
    return z / (z + half)
