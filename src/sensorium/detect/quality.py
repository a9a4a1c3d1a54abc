"""Data-quality detectors over the stream's values frame: stuck-at, spikes, dropouts, peer drift.

:class:`QualityStage` is a stream stage (the runner's ``UserStage`` protocol: ``process``,
``tick``, ``state``, ``restore``). It reads the values frame (``series, field, time, value,
arrival``, see :mod:`sensorium.stream.frame`) and the series frame (tags per series), keeps a few
numbers per series and field between micro-batches, and writes *findings* to the table
``quality_findings``: one row per finding (columns in :data:`FINDINGS_SCHEMA`).

Checks (details, parameters and measured precision/recall in ``docs/data-quality-detectors.md``):

``stuck``
    A run of identical values (within ``stuck_eps`` + ``stuck_eps_rel``·|x|) too long to be chance
    for *this* series: its own history (runs finished before this one) gives the chance that a
    value repeats (``p``) and that a repeat goes on (``q``), each at an upper confidence bound;
    a run is flagged once it has ``max(stuck_min_points, 2 + ln(stuck_alpha / p) / ln(q))``
    points and lasts ``stuck_min_duration_s``. Not checked: series with fewer than
    ``stuck_min_history`` pairs of points, series whose repeats nearly always go on (``q`` above
    ``stuck_max_repeat``), 0/1 fields (``exclude_binary``) and fields that never went down
    (counters, ``exclude_counters``). One finding per run: an ``open`` row when the run becomes
    long enough, a ``closed`` row (with its end and length) when it ends.
``spike``
    At most ``spike_max_points`` points in a row whose distance from the median of the
    ``spike_window`` points before each exceeds ``spike_k`` robust sigmas (1.4826 x the median of
    that distance over the ``spike_window`` points before: the scaled MAD of the prediction
    errors, right for noisy and for wandering levels alike) and ``spike_min_jump``, entered and
    left by a step of at least ``spike_sharpness`` x its height, then a normal point (a level
    shift or a slow excursion is not a spike). A neighbourhood without variation (MAD 0) gives no
    call. Causal: reported (``closed``) at the point that is back to normal.
``dropout``
    Per series (any field): a gap between consecutive points longer than ``dropout_k`` x the
    median of the previous ``dropout_window`` intervals (``dropout_min_gap_s`` at least), for
    series that report regularly (interval IQR at most ``dropout_max_jitter`` x the median);
    reported (``closed``) when data resumes. :meth:`QualityStage.tick` (processing time) reports
    (``open``) a series silent for longer than that and ``dropout_tick_min_silence_s``, once.
``drift``
    Per field and peer group (same bucket, measurement and value of every ``peer_tags`` tag; a
    series missing one has no peers), over ``drift_fields``: each device's median in
    ``drift_bucket_s`` buckets, less its usual offset, puts the members on a common level; a
    device's reference is the median of its peers' levels (leave-one-out, at least
    ``drift_min_peers``; the member farthest from the group is also left out of the others'
    references, so one drifting sensor does not make its peers drift). Its offset from the
    reference, less its usual offset (EWMA, time constant ``drift_baseline_s``), averaged over
    ``drift_smooth`` buckets, is scored in units of the usual spread of that difference
    (1.2533 x its EWMA mean absolute value): ``drift_sustain`` buckets in a row at or above
    ``drift_threshold`` (and ``drift_min_abs``) open a finding, a bucket below ``drift_clear``
    closes it. Scored after ``drift_min_buckets`` buckets of warm-up and once the series has
    gone down at least once (not a counter).

Determinism: points are taken per series and field in arrival (log) order; a point no newer than
the last one kept for its series and field is ignored (duplicates, out-of-order and late points).
Every decision about a point depends only on the points kept before it (the state carries the
last points of each key and its run/count statistics), so the findings do not depend on how the
log is cut into micro-batches. Drift buckets close on a per-group event-time watermark
(``drift_lateness_s``); a point for a closed bucket is ignored by the drift check. Only
:meth:`QualityStage.tick` (processing time) is not a function of the log.

Everything is vectorised over the batch with NumPy/Polars; the only Python loop runs over the
drift buckets a batch closes (a handful per batch), each step vectorised over devices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view

from sensorium.keyindex import KeyIndex as _KeyIndex
from sensorium.keyindex import NameIndex, stable_argsort
from sensorium.keyindex import grow as _grow

NS = 1_000_000_000
CHECKS: tuple[str, ...] = ("stuck", "spike", "dropout", "drift")
TABLE = "quality_findings"
STEP_ID = "quality"
_STATE_VERSION = 1
_CHUNK = 131_072  # rows per window matrix
_RUN_CAP = 500  # a run adds at most this many points to the repeat statistics
_NONE = np.iinfo(np.int64).min

#: Columns of a findings frame (``series`` is replaced by the series' tags in the stored table).
FINDINGS_SCHEMA: dict[str, pl.DataType] = {
    "series": pl.Utf8(),
    "field": pl.Utf8(),  # null for dropouts (the whole series is silent)
    "time": pl.Int64(),  # start of the finding (UTC ns)
    "end_time": pl.Int64(),  # end (UTC ns); null while a finding is open
    "check": pl.Utf8(),  # stuck | spike | dropout | drift
    "status": pl.Utf8(),  # open | closed
    "value": pl.Float64(),  # stuck: the value; spike: the extreme value; dropout: gap seconds;
    # drift: offset from the usual offset to the peers
    "score": pl.Float64(),  # severity 0..1: 1 - 0.5 ** (statistic / threshold)
    "points": pl.Int64(),  # points in the run / spike, missing points, buckets drifting
    "reason": pl.Utf8(),
}


def empty_findings() -> pl.DataFrame:
    return pl.DataFrame(schema=FINDINGS_SCHEMA)


@dataclass(frozen=True)
class QualityConfig:
    """Parameters of the four checks (see the module docstring and the docs page)."""

    checks: tuple[str, ...] = CHECKS
    fields: tuple[str, ...] = ("*",)  # glob patterns of the fields checked (dropouts: any field)
    exclude_fields: tuple[str, ...] = ()
    exclude_binary: bool = True  # fields that only ever held 0/1 are not checked for stuck/spike
    exclude_counters: bool = True  # fields that never went down are not checked for stuck

    stuck_min_points: int = 5
    stuck_min_duration_s: float = 2.0
    stuck_alpha: float = 1e-6  # chance of a natural run at least this long, per run
    stuck_min_history: int = 60  # pairs of consecutive points seen before a series is checked
    stuck_max_repeat: float = 0.98  # series whose repeats go on more often than this: not checked
    stuck_eps: float = 0.0
    stuck_eps_rel: float = 1e-9

    spike_window: int = 31  # previous points in the neighbourhood (odd)
    spike_k: float = 8.0
    spike_min_jump: float = 0.0
    spike_min_jump_by_field: Mapping[str, float] = field(default_factory=dict)
    spike_max_points: int = 3
    spike_sharpness: float = 0.5  # steps into and out of a spike: at least this x its height

    dropout_k: float = 4.5
    dropout_window: int = 15  # previous intervals whose median is the typical interval (odd)
    dropout_min_gap_s: float = 0.0
    dropout_max_jitter: float = 0.5  # only series whose interval IQR is at most this x the median
    dropout_tick_min_silence_s: float = 60.0

    peer_tags: tuple[str, ...] = ("location_id", "room")
    drift_fields: tuple[str, ...] = ("*",)
    drift_bucket_s: float = 10.0
    drift_lateness_s: float = 5.0
    drift_min_peers: int = 2
    drift_smooth: int = 2  # buckets averaged
    drift_threshold: float = 4.0
    drift_clear: float = 2.0
    drift_sustain: int = 2
    drift_baseline_s: float = 900.0  # time constant of the usual offset and spread
    drift_min_buckets: int = 90  # buckets learnt before a device is scored (the first 10: fast)
    drift_min_abs: float = 0.0
    drift_min_abs_by_field: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = set(self.checks) - set(CHECKS)
        if bad:
            raise ValueError(f"unknown quality checks {sorted(bad)}; use {list(CHECKS)}")
        if self.spike_window < 3 or self.spike_window % 2 == 0:
            raise ValueError("spike_window must be odd and >= 3")
        if self.dropout_window < 1 or self.dropout_window % 2 == 0:
            raise ValueError("dropout_window must be odd and >= 1")
        if self.stuck_min_points < 2 or self.spike_max_points < 1 or self.drift_smooth < 1:
            raise ValueError("stuck_min_points >= 2, spike_max_points >= 1, drift_smooth >= 1")
        if not 0 < self.stuck_alpha < 1 or not 0 < self.stuck_max_repeat < 1:
            raise ValueError("stuck_alpha and stuck_max_repeat must lie in (0, 1)")
        if self.drift_bucket_s <= 0 or self.drift_min_peers < 1:
            raise ValueError("drift_bucket_s > 0 and drift_min_peers >= 1")

    @property
    def tail(self) -> int:
        """Points carried per series and field: two spike windows (the medians, then the scale of
        the points' distances from them) plus a spike plus the point before it."""
        return 2 * self.spike_window + self.spike_max_points + 1


def _score(ratio: np.ndarray) -> np.ndarray:
    """Severity 0..1 of a statistic ``ratio`` times its threshold: 0.5 at it, 0.75 at twice it."""
    return 1.0 - np.power(0.5, np.clip(ratio, 0.0, 60.0))


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) for p in patterns)



def _group_bounds(code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of the runs of equal values of a sorted code array (non-empty)."""
    n = len(code)
    gs = np.empty(n, dtype=bool)
    gs[0] = True
    np.not_equal(code[1:], code[:-1], out=gs[1:])
    starts = np.flatnonzero(gs)
    return starts, np.diff(np.append(starts, n))


def _seg_cummax(x: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Running maximum of ``x`` within each segment (``seg`` sorted)."""
    same = seg[1:] == seg[:-1]
    if not np.any(same & (x[1:] < x[:-1])):
        return x  # increasing within every segment: the running maximum is x itself
    df = pl.DataFrame({"s": seg, "x": x})
    return df.select(pl.col("x").cum_max().over("s")).to_series().to_numpy()


def _median_before(v: np.ndarray, w: int) -> np.ndarray:
    """``out[i]`` = median of ``v[i-w:i]`` (``w`` odd; meaningful for ``i >= w`` only)."""
    out = np.empty(len(v))
    out[0] = np.nan
    if len(v) > 1:
        out[1:] = pl.Series(v[:-1]).rolling_median(w).to_numpy()
    return out


def _null_if_none(col: str) -> pl.Expr:
    return pl.when(pl.col(col) == _NONE).then(None).otherwise(pl.col(col)).alias(col)


def _fmt(col: str, digits: int = 4) -> pl.Expr:
    """A float column as short text (``digits`` significant digits)."""
    return pl.col(col).round_sig_figs(digits).cast(pl.Utf8)


@dataclass
class _Tails:
    """Keys of a batch with their carried last points, then their new points (sorted by key)."""

    gk: np.ndarray  # key of each group
    tl: np.ndarray  # carried points of each group
    seg: np.ndarray  # group of each row
    pos: np.ndarray  # position within the group
    new: np.ndarray  # row is from this batch
    t: np.ndarray
    v: np.ndarray
    row: np.ndarray  # index into the batch's sorted rows (-1 for carried points)


def _with_tails(
    gk: np.ndarray,
    lens: np.ndarray,
    tail_len: np.ndarray,
    tail_t: np.ndarray,
    tail_v: np.ndarray | None,
    new_t: np.ndarray,
    new_v: np.ndarray | None,
) -> _Tails:
    """Each group's carried tail (right-aligned in ``tail_t``) followed by its new rows."""
    c = tail_t.shape[1]
    tl = tail_len[gk]
    blk = tl + lens
    total = int(blk.sum())
    bstart = np.zeros(len(gk), dtype=np.int64)
    np.cumsum(blk[:-1], out=bstart[1:])
    seg = np.repeat(np.arange(len(gk)), blk)
    pos = np.arange(total, dtype=np.int64) - bstart[seg]
    new = pos >= tl[seg]
    old = ~new
    k_old = gk[seg[old]]
    col = c - tl[seg[old]] + pos[old]
    t = np.empty(total, dtype=np.int64)
    t[old] = tail_t[k_old, col]
    t[new] = new_t
    v = np.zeros(total)
    if tail_v is not None and new_v is not None:
        v[old] = tail_v[k_old, col]
        v[new] = new_v
    row = np.full(total, -1, dtype=np.int64)
    row[new] = np.arange(len(new_t), dtype=np.int64)
    return _Tails(gk, tl, seg, pos, new, t, v, row)


def _keep_increasing(tw: _Tails) -> _Tails:
    """Drop new rows no newer than an earlier row of their group (carried rows always stay)."""
    n = len(tw.t)
    if n == 0:
        return tw
    cm = _seg_cummax(tw.t, tw.seg)
    later = np.zeros(n, dtype=bool)
    later[1:] = (tw.seg[1:] == tw.seg[:-1]) & (tw.t[1:] <= cm[:-1])
    keep = ~(tw.new & later)
    if keep.all():
        return tw
    seg = tw.seg[keep]
    starts, lens = _group_bounds(seg) if len(seg) else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    first = np.repeat(starts, lens)
    return _Tails(
        tw.gk, tw.tl, seg, np.arange(len(seg), dtype=np.int64) - first, tw.new[keep],
        tw.t[keep], tw.v[keep], tw.row[keep],
    )


def _store_tails(
    tw: _Tails, tail_len: np.ndarray, tail_t: np.ndarray, tail_v: np.ndarray | None
) -> np.ndarray:
    """Carry the last points of every group; returns the groups' kept lengths."""
    c = tail_t.shape[1]
    starts, lens = _group_bounds(tw.seg)
    ends = starts + lens - 1
    back = np.arange(c - 1, -1, -1)
    idx = ends[:, None] - back[None, :]
    mine = idx >= starts[:, None]
    safe = np.maximum(idx, 0)
    tail_t[tw.gk] = np.where(mine, tw.t[safe], 0)
    if tail_v is not None:
        tail_v[tw.gk] = np.where(mine, tw.v[safe], 0.0)
    tail_len[tw.gk] = np.minimum(lens, c)
    return lens


class QualityStage:
    """Stream stage running the data-quality checks; output table ``quality_findings``."""

    def __init__(self, config: QualityConfig | None = None, *, step_id: str = STEP_ID, **kw: Any) -> None:
        self.step_id = step_id
        self.config = config if config is not None else QualityConfig(**kw)
        if config is not None and kw:
            self.config = QualityConfig(**{**asdict(config), **kw})
        self._reset()

    # ------------------------------------------------------------------ state

    def _reset(self) -> None:
        cfg = self.config
        c = cfg.tail
        m = cfg.dropout_window + 1
        s = cfg.drift_smooth
        self._keys = _KeyIndex()
        self._groups = NameIndex()
        # per field id: checked at all / drift checked / spike minimum jump / drift minimum offset
        self._field_cache: tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        # per series id: peer group id (-1 none, -2 not looked up yet)
        self.group_of = np.zeros(0, dtype=np.int64)
        # per key (series, field)
        self.n_kept = np.zeros(0, dtype=np.int64)
        self.tail_len = np.zeros(0, dtype=np.int64)
        self.tail_t = np.zeros((0, c), dtype=np.int64)
        self.tail_v = np.zeros((0, c))
        self.nonbin = np.zeros(0, dtype=bool)  # held a value other than 0/1
        self.has_dec = np.zeros(0, dtype=bool)  # went down at least once (not a counter)
        self.run_len = np.zeros(0, dtype=np.int64)
        self.run_start = np.zeros(0, dtype=np.int64)
        self.run_emit = np.zeros(0, dtype=bool)
        self.first_run = np.zeros(0, dtype=bool)
        self.cnt = np.zeros((0, 3), dtype=np.int64)  # pairs, repeats, repeats that went on
        # per series (dropouts)
        self.s_n = np.zeros(0, dtype=np.int64)
        self.s_tail_len = np.zeros(0, dtype=np.int64)
        self.s_tail_t = np.zeros((0, m), dtype=np.int64)
        self.s_arrival = np.zeros(0, dtype=np.int64)
        self.s_reported = np.zeros(0, dtype=np.int64)
        # per key: drift
        self.d_nb = np.zeros(0, dtype=np.int64)
        self.d_base = np.zeros(0)
        self.d_spread = np.zeros(0)
        self.d_buf = np.zeros((0, s))
        self.d_streak = np.zeros(0, dtype=np.int64)
        self.d_streak_start = np.zeros(0, dtype=np.int64)
        self.d_open = np.zeros(0, dtype=bool)
        self.d_open_start = np.zeros(0, dtype=np.int64)
        self.d_zmax = np.zeros(0)
        self.d_devmax = np.zeros(0)
        self.d_npeers = np.zeros(0, dtype=np.int64)
        self.d_last_high = np.zeros(0, dtype=np.int64)
        self.d_last_mean = np.full(0, np.nan)
        self.d_dec = np.zeros(0, dtype=bool)
        # per peer group: event-time watermark (latest point time)
        self.g_wm = np.zeros(0, dtype=np.int64)
        # the points of open drift buckets: key, bucket index, value
        self.p_key = np.zeros(0, dtype=np.int64)
        self.p_bucket = np.zeros(0, dtype=np.int64)
        self.p_val = np.zeros(0)

    _KEY_ARRAYS = (
        "n_kept", "tail_len", "tail_t", "tail_v", "nonbin", "has_dec", "run_len", "run_start", "run_emit",
        "first_run", "cnt", "d_nb", "d_base", "d_spread", "d_buf", "d_streak", "d_streak_start",
        "d_open", "d_open_start", "d_zmax", "d_devmax", "d_npeers", "d_last_high", "d_last_mean",
        "d_dec",
    )
    _SERIES_ARRAYS = ("s_n", "s_tail_len", "s_tail_t", "s_arrival", "s_reported", "group_of")
    _OTHER_ARRAYS = ("g_wm", "p_key", "p_bucket", "p_val")
    _FILL: dict[str, Any] = {"group_of": -2, "s_arrival": _NONE, "s_reported": _NONE, "d_last_mean": np.nan}

    def _grow_keys(self) -> None:
        k = len(self._keys)
        for name in self._KEY_ARRAYS:
            setattr(self, name, _grow(getattr(self, name), k, self._FILL.get(name, 0)))
        ns = len(self._keys.series_names)
        for name in self._SERIES_ARRAYS:
            setattr(self, name, _grow(getattr(self, name), ns, self._FILL.get(name, 0)))

    def state(self) -> dict[str, Any]:
        k, ns = len(self._keys), len(self._keys.series_names)
        out: dict[str, Any] = {
            "version": _STATE_VERSION,
            "config": asdict(self.config),
            "series_names": list(self._keys.series_names.names),
            "field_names": list(self._keys.field_names),
            "key_series": list(self._keys.series),
            "key_fields": list(self._keys.fields),
            "groups": list(self._groups.names),
        }
        for name in self._KEY_ARRAYS:
            out[name] = getattr(self, name)[:k].copy()
        for name in self._SERIES_ARRAYS:
            out[name] = getattr(self, name)[:ns].copy()
        for name in self._OTHER_ARRAYS:
            out[name] = getattr(self, name).copy()
        out["g_wm"] = out["g_wm"][: len(self._groups)]
        return out

    def restore(self, state: dict[str, Any]) -> None:
        self._reset()
        if int(state.get("version", 0)) != _STATE_VERSION:
            return  # an older state: start afresh
        saved = dict(state["config"])
        mine = asdict(self.config)
        shape_keys = ("spike_window", "spike_max_points", "dropout_window", "drift_smooth", "drift_bucket_s")
        if any(saved.get(key) != mine[key] for key in shape_keys):
            return  # windows of another size: start afresh
        if state["series_names"]:
            self._keys.series_names.add(list(state["series_names"]))
        if state["field_names"]:
            self._keys.field_names_.add(list(state["field_names"]))
        if state["key_series"]:
            self._keys.add(list(state["key_series"]), list(state["key_fields"]))
        if state["groups"]:
            self._groups.add(list(state["groups"]))
        for name in (*self._KEY_ARRAYS, *self._SERIES_ARRAYS, *self._OTHER_ARRAYS):
            setattr(self, name, np.array(state[name], copy=True))

    # ------------------------------------------------------------------ fields

    def _fields(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        names = self._keys.field_names
        cached = self._field_cache
        if cached is not None and cached[0] == len(names):
            return cached[1], cached[2], cached[3], cached[4]
        cfg = self.config
        ok = np.array(
            [_matches(f, cfg.fields) and not _matches(f, cfg.exclude_fields) for f in names], dtype=bool
        )
        drift = ok & np.array([_matches(f, cfg.drift_fields) for f in names], dtype=bool)
        jump = np.array([cfg.spike_min_jump_by_field.get(f, cfg.spike_min_jump) for f in names])
        dmin = np.array([cfg.drift_min_abs_by_field.get(f, cfg.drift_min_abs) for f in names])
        self._field_cache = (len(names), ok, drift, jump, dmin)
        return ok, drift, jump, dmin

    # ------------------------------------------------------------------ processing

    def process(self, values: pl.DataFrame, series: pl.DataFrame) -> dict[str, pl.DataFrame]:
        """Findings of one micro-batch (arrival order): ``{"quality_findings": frame}``."""
        if values.height == 0:
            return {TABLE: empty_findings()}
        cfg = self.config
        sid, fid = self._keys.ids(values.get_column("series"), values.get_column("field"))
        t_all = values.get_column("time").to_numpy()
        v_all = values.get_column("value").cast(pl.Float64).to_numpy()
        if "arrival" in values.columns:
            arr_all = values.get_column("arrival").fill_null(_NONE).to_numpy()
        else:
            arr_all = np.full(values.height, _NONE, dtype=np.int64)
        self._grow_keys()
        ok, drift_ok, jump, dmin = self._fields()
        parts: list[pl.DataFrame] = []
        if "dropout" in cfg.checks:
            parts.append(self._dropouts(values, sid, t_all, arr_all))
        sel = np.isfinite(v_all) & ok[fid]
        if sel.any():
            rows = np.flatnonzero(sel)
            code = sid[rows].astype(np.int64) * max(1, len(self._keys.field_names)) + fid[rows]
            by = stable_argsort(code)
            order = rows[by]
            starts, lens = _group_bounds(code[by])
            first = order[starts]
            gk = self._keys.keys(sid[first], fid[first], first).astype(np.int64)
            self._grow_keys()
            tw = _with_tails(gk, lens, self.tail_len, self.tail_t, self.tail_v, t_all[order], v_all[order])
            n_before = self.n_kept[gk].copy()
            tw = _keep_increasing(tw)
            nb = self._ever(tw, ~np.isin(tw.v, (0.0, 1.0)), self.nonbin)
            down = np.zeros(len(tw.v), dtype=bool)
            down[1:] = (tw.seg[1:] == tw.seg[:-1]) & (tw.v[1:] < tw.v[:-1])
            moved_down = self._ever(tw, down, self.has_dec)
            if "spike" in cfg.checks:
                parts.append(self._spikes(values, order, tw, nb, jump))
            if "stuck" in cfg.checks:
                elig = nb if cfg.exclude_binary else np.ones(len(nb), dtype=bool)
                if cfg.exclude_counters:
                    elig = elig & moved_down
                parts.append(self._stuck(values, order, tw, elig))
            if "drift" in cfg.checks:
                parts.append(self._drift(series, order, tw, nb, drift_ok, dmin))
            kept_lens = _store_tails(tw, self.tail_len, self.tail_t, self.tail_v)
            self.n_kept[gk] = n_before + kept_lens - tw.tl
            last = np.append(np.flatnonzero(tw.seg[1:] != tw.seg[:-1]), len(tw.seg) - 1)
            self.nonbin[gk] = nb[last]
            self.has_dec[gk] = moved_down[last]
        parts = [p for p in parts if p.height]
        if not parts:
            return {TABLE: empty_findings()}
        out = pl.concat(parts, how="vertical").sort(["time", "check", "series", "field"], nulls_last=True)
        return {TABLE: out}

    def tick(self, now_ns: int) -> dict[str, pl.DataFrame]:
        """Processing-time check: series silent for longer than their dropout limit (``open``)."""
        cfg = self.config
        ns = len(self._keys.series_names)
        if "dropout" not in cfg.checks or ns == 0:
            return {TABLE: empty_findings()}
        m = cfg.dropout_window
        n = self.s_n[:ns]
        ready = n >= m + 1
        if not ready.any():
            return {TABLE: empty_findings()}
        idx = np.flatnonzero(ready)
        tt = self.s_tail_t[idx]
        typ, regular = self._typical(np.diff(tt, axis=1))
        last = tt[:, -1]
        ref = np.where(self.s_arrival[idx] != _NONE, self.s_arrival[idx], last)
        silence = now_ns - ref
        limit = np.maximum(cfg.dropout_k * typ, cfg.dropout_tick_min_silence_s * NS)
        hit = (silence > limit) & (self.s_reported[idx] != last) & regular
        if not hit.any():
            return {TABLE: empty_findings()}
        idx, typ, last, silence, limit = idx[hit], typ[hit], last[hit], silence[hit], limit[hit]
        self.s_reported[idx] = last
        names = self._keys.series_names.names
        df = pl.DataFrame(
            {
                "series": pl.Series([names[i] for i in idx], dtype=pl.Utf8),
                "time": last,
                "silence": silence / NS,
                "typ": typ / NS,
                "points": np.floor((now_ns - last) / typ).astype(np.int64),
                "score": _score(silence / limit),
            }
        )
        out = df.select(
            "series",
            pl.lit(None, pl.Utf8).alias("field"),
            "time",
            pl.lit(None, pl.Int64).alias("end_time"),
            pl.lit("dropout").alias("check"),
            pl.lit("open").alias("status"),
            pl.col("silence").alias("value"),
            "score",
            "points",
            pl.format(
                "no data for {} s (processing time), usually a point every {} s; about {} points missing so far",
                _fmt("silence"), _fmt("typ"), pl.col("points"),
            ).alias("reason"),
        )
        return {TABLE: out}

    # ------------------------------------------------------------------ helpers

    def _typical(self, intervals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Median of each row of intervals, and whether the series is regular enough to expect
        its next point: a positive median and an interquartile range of at most
        ``dropout_max_jitter`` x the median."""
        m = intervals.shape[1]
        q1, h, q3 = m // 4, m // 2, m - 1 - m // 4
        part = np.partition(intervals, sorted({q1, h, q3}), axis=1)
        med = part[:, h]
        iqr = part[:, q3] - part[:, q1]
        return med, (med > 0) & (iqr <= self.config.dropout_max_jitter * med)

    @staticmethod
    def _ever(tw: _Tails, cond: np.ndarray, carried: np.ndarray) -> np.ndarray:
        """Per kept row: ``cond`` held for a new row of its key up to it, or before (``carried``)."""
        flag = (cond & tw.new).astype(np.int64)
        cs = np.cumsum(flag)
        starts, lens = _group_bounds(tw.seg)
        before = np.repeat(cs[starts] - flag[starts], lens)
        return (cs - before > 0) | carried[tw.gk[tw.seg]]

    # ------------------------------------------------------------------ spikes

    def _spikes(
        self, values: pl.DataFrame, order: np.ndarray, tw: _Tails, nb: np.ndarray, jump: np.ndarray
    ) -> pl.DataFrame:
        cfg = self.config
        w, s = cfg.spike_window, cfg.spike_max_points
        n = len(tw.t)
        tl = tw.tl[tw.seg]
        # each point's distance from the median of the w points before it ...
        med_all = _median_before(tw.v, w)
        e = np.where(tw.pos >= w, np.abs(tw.v - med_all), 0.0)
        # ... scored against the usual such distance over the w points before (the scaled MAD of
        # the prediction errors: right for noisy levels and for smoothly wandering ones alike);
        # 0 where most of them are 0 (e.g. after a stuck stretch): no scale
        ev = (tw.pos >= 2 * w) & (tw.pos >= tl - (s + 1))
        if cfg.exclude_binary:
            ev &= nb
        rows = np.flatnonzero(ev)
        if not len(rows):
            return empty_findings()
        scale = 1.4826 * _median_before(e, w)[rows]
        med = med_all[rows]
        fid = self._keys.field_id[tw.gk[tw.seg[rows]]]
        thr = np.maximum(cfg.spike_k * scale, jump[fid])
        known = thr > 0  # a window without any variation gives no scale: no call either way
        rows, thr, med, scale = rows[known], thr[known], med[known], scale[known]
        dev = e[rows]
        deviant = np.zeros(n, dtype=bool)
        normal = np.zeros(n, dtype=bool)
        deviant[rows] = dev > thr
        normal[rows] = ~deviant[rows]
        ratio = np.zeros(n)
        ratio[rows] = dev / thr
        at_med = np.zeros(n)
        at_med[rows] = med
        at_scale = np.zeros(n)
        at_scale[rows] = scale
        ret = np.flatnonzero(normal & tw.new)
        found: list[tuple[np.ndarray, int]] = []
        sharp = cfg.spike_sharpness
        for ln in range(1, s + 1):
            r = ret[tw.pos[ret] >= ln + 1]
            good = normal[r - ln - 1].copy()
            height = np.zeros(len(r))
            for j in range(1, ln + 1):
                good &= deviant[r - j]
                height = np.maximum(height, e[r - j])
            # sharp: the step into the spike and the step back out each cover `sharp` of its height
            into = np.abs(tw.v[r - ln] - tw.v[r - ln - 1])
            out = np.abs(tw.v[r] - tw.v[r - 1])
            good &= (into >= sharp * height) & (out >= sharp * height)
            if good.any():
                found.append((r[good], ln))
        if not found:
            return empty_findings()
        ret_rows = np.concatenate([f[0] for f in found])
        lns = np.concatenate([np.full(len(f[0]), f[1]) for f in found])
        offs = np.arange(1, s + 1)
        back = ret_rows[:, None] - offs[None, :]  # the spike's rows, latest first
        inside = offs[None, :] <= lns[:, None]
        rat = np.where(inside, ratio[np.maximum(back, 0)], -1.0)
        worst = back[np.arange(len(back)), np.argmax(rat, axis=1)]
        start = ret_rows - lns
        names = values.get_column("series")
        brow = order[tw.row[ret_rows]]  # the batch row of the return point (same key)
        df = pl.DataFrame(
            {
                "series": names.gather(brow),
                "field": values.get_column("field").gather(brow),
                "time": tw.t[start],
                "end_time": tw.t[ret_rows - 1],
                "value": tw.v[worst],
                "med": at_med[worst],
                "sigma": at_scale[worst],
                "ratio": ratio[worst],
                "points": lns.astype(np.int64),
                "back": tw.v[ret_rows],
            }
        )
        return df.select(
            "series",
            "field",
            "time",
            "end_time",
            pl.lit("spike").alias("check"),
            pl.lit("closed").alias("status"),
            "value",
            pl.Series("score", _score(df.get_column("ratio").to_numpy())),
            "points",
            pl.format(
                "value {} is {} from the median {} of the previous {} points, where {} is usual "
                "(robust sigma); back to normal ({}) after {} point(s)",
                _fmt("value"),
                (pl.col("value") - pl.col("med")).abs().round_sig_figs(4).cast(pl.Utf8),
                _fmt("med"),
                pl.lit(w),
                _fmt("sigma", 3),
                _fmt("back"),
                pl.col("points"),
            ).alias("reason"),
        )

    # ------------------------------------------------------------------ stuck

    def _stuck(self, values: pl.DataFrame, order: np.ndarray, tw: _Tails, ok: np.ndarray) -> pl.DataFrame:
        cfg = self.config
        tl = tw.tl[tw.seg]
        sub = np.flatnonzero(tw.pos >= tl - 1)  # the last carried point (anchor) + new points
        if not len(sub):
            return empty_findings()
        sv, st, sseg = tw.v[sub], tw.t[sub], tw.seg[sub]
        snew = tw.new[sub]
        n = len(sub)
        sfirst = np.ones(n, dtype=bool)
        sfirst[1:] = sseg[1:] != sseg[:-1]
        anchor = sfirst & ~snew
        eq = np.zeros(n, dtype=bool)
        prev = sv[:-1]
        eq[1:] = ~sfirst[1:] & (np.abs(sv[1:] - prev) <= cfg.stuck_eps + cfg.stuck_eps_rel * np.abs(prev))
        rs = ~eq
        r_start = np.flatnonzero(rs)
        r_len = np.diff(np.append(r_start, n))
        r_end = r_start + r_len - 1
        r_seg = sseg[r_start]
        k = tw.gk[r_seg]
        r_cont = anchor[r_start]
        r_last = np.ones(len(r_start), dtype=bool)
        r_last[:-1] = r_seg[1:] != r_seg[:-1]
        r_base = np.where(r_cont, self.run_len[k] - 1, 0)
        r_t0 = np.where(r_cont, self.run_start[k], st[r_start])
        r_emit0 = np.where(r_cont, self.run_emit[k], False)
        r_firstrun = np.where(r_cont, self.first_run[k], sfirst[r_start])
        r_total = r_base + r_len
        lc = np.minimum(r_total, _RUN_CAP)
        contrib = np.stack([lc - r_firstrun, lc - 1, np.maximum(lc - 2, 0)], axis=1)
        contrib[r_last] = 0
        cs = np.cumsum(contrib, axis=0)
        excl = cs - contrib
        r_first_of_seg = np.ones(len(r_start), dtype=bool)
        r_first_of_seg[1:] = r_seg[1:] != r_seg[:-1]
        fidx = np.flatnonzero(r_first_of_seg)
        seg_runs = np.diff(np.append(fidx, len(r_start)))
        counts = self.cnt[k] + excl - np.repeat(excl[fidx], seg_runs, axis=0)
        pairs, reps, goes = counts[:, 0], counts[:, 1], counts[:, 2]
        # chance that a value repeats (p) and that a repeat goes on (q, shrunk towards p), each
        # taken at an upper confidence bound: a short history makes the check more cautious
        p = (reps + 1.0) / (pairs + 2.0)
        q = (goes + 4.0 * p) / (reps + 4.0)
        p = np.minimum(p + 2.0 * np.sqrt(p * (1 - p) / (pairs + 2.0)) + 1.0 / (pairs + 2.0), 1.0)
        q = np.minimum(q + 2.0 * np.sqrt(q * (1 - q) / (reps + 4.0)) + 1.0 / (reps + 4.0), 1.0)
        with np.errstate(divide="ignore"):
            need = 2.0 + np.log(cfg.stuck_alpha / p) / np.log(np.minimum(q, 1.0 - 1e-12))
        elig = (pairs >= cfg.stuck_min_history) & (q <= cfg.stuck_max_repeat) & ok[sub[r_start]]
        l_req = np.maximum(cfg.stuck_min_points, np.ceil(np.where(elig, need, 0.0))).astype(np.int64)
        run_of = np.repeat(np.arange(len(r_start)), r_len)
        length = r_base[run_of] + (np.arange(n) - r_start[run_of] + 1)
        cond = elig[run_of] & (length >= l_req[run_of]) & (st - r_t0[run_of] >= cfg.stuck_min_duration_s * NS)
        prev_cond = np.zeros(n, dtype=bool)
        prev_cond[1:] = cond[:-1]
        opened = cond & snew & ~r_emit0[run_of] & (rs | ~prev_cond)
        r_emit = r_emit0 | np.logical_or.reduceat(cond, r_start)
        closing = np.flatnonzero(~r_last & r_emit)  # runs ended in this batch, flagged
        # carry the last run of each group
        lr = np.flatnonzero(r_last)
        kk = k[lr]
        self.run_len[kk] = r_total[lr]
        self.run_start[kk] = r_t0[lr]
        self.run_emit[kk] = r_emit[lr]
        self.first_run[kk] = r_firstrun[lr]
        self.cnt[kk] = counts[lr]
        if not opened.any() and not len(closing):
            return empty_findings()
        o = np.flatnonzero(opened)
        # a closed run's finding is written at the first point of the next run (a new point)
        at = np.concatenate([o, r_start[closing + 1]])
        run = np.concatenate([run_of[o], closing])
        is_open = np.concatenate([np.ones(len(o), dtype=bool), np.zeros(len(closing), dtype=bool)])
        last_t = np.concatenate([st[o], st[r_end[closing]]])
        brow = order[tw.row[sub[at]]]
        df = pl.DataFrame(
            {
                "series": values.get_column("series").gather(brow),
                "field": values.get_column("field").gather(brow),
                "time": r_t0[run],
                "end_time": np.where(is_open, _NONE, last_t),
                "status": np.where(is_open, "open", "closed"),
                "value": sv[r_start[run]],
                "points": np.concatenate([length[o], r_total[closing]]).astype(np.int64),
                "need": l_req[run],
                "secs": (last_t - r_t0[run]) / NS,
                "rate": q[run],
            }
        ).with_columns(_null_if_none("end_time"))
        return df.select(
            "series",
            "field",
            "time",
            "end_time",
            pl.lit("stuck").alias("check"),
            "status",
            "value",
            pl.Series("score", _score(df.get_column("points").to_numpy() / df.get_column("need").to_numpy())),
            "points",
            pl.format(
                "value {} repeated {} times over {} s{}; in this series a repeated value repeats "
                "again with probability <= {}, so a run this long by chance: < {}",
                _fmt("value", 6),
                pl.col("points"),
                _fmt("secs"),
                pl.when(pl.col("status") == "open").then(pl.lit(" so far")).otherwise(pl.lit("")),
                _fmt("rate", 2),
                pl.lit(f"{cfg.stuck_alpha:g}"),
            ).alias("reason"),
        )

    # ------------------------------------------------------------------ dropouts

    def _dropouts(
        self, values: pl.DataFrame, sid: np.ndarray, t_all: np.ndarray, arr_all: np.ndarray
    ) -> pl.DataFrame:
        cfg = self.config
        m = cfg.dropout_window
        order = stable_argsort(sid.astype(np.int64))
        s_sorted = sid[order].astype(np.int64)
        starts, lens = _group_bounds(s_sorted)
        gs = s_sorted[starts]
        arr = arr_all[order]
        self.s_arrival[gs] = np.maximum(self.s_arrival[gs], np.maximum.reduceat(arr, starts))
        tw = _keep_increasing(_with_tails(gs, lens, self.s_tail_len, self.s_tail_t, None, t_all[order], None))
        n_before = self.s_n[gs].copy()
        tl = tw.tl[tw.seg]
        gpos = n_before[tw.seg] - tl + tw.pos
        ev = tw.new & (tw.pos >= m + 1) & (gpos >= m + 1)
        out = empty_findings()
        rows = np.flatnonzero(ev)
        if len(rows):
            gp = np.zeros(len(tw.t), dtype=np.int64)
            gp[1:] = np.diff(tw.t)  # gp[i] = t[i] - t[i - 1]
            typ, regular = self._typical(sliding_window_view(gp, m)[rows - m])
            d = gp[rows]
            limit = np.maximum(cfg.dropout_k * typ, cfg.dropout_min_gap_s * NS)
            hit = (d > limit) & regular
            if hit.any():
                r, typ, d, limit = rows[hit], typ[hit], d[hit], limit[hit]
                brow = order[tw.row[r]]
                df = pl.DataFrame(
                    {
                        "series": values.get_column("series").gather(brow),
                        "time": tw.t[r - 1],
                        "end_time": tw.t[r],
                        "value": d / NS,
                        "typ": typ / NS,
                        "points": np.maximum(np.rint(d / typ).astype(np.int64) - 1, 0),
                        "score": _score(d / limit),
                    }
                )
                out = df.select(
                    "series",
                    pl.lit(None, pl.Utf8).alias("field"),
                    "time",
                    "end_time",
                    pl.lit("dropout").alias("check"),
                    pl.lit("closed").alias("status"),
                    "value",
                    "score",
                    "points",
                    pl.format(
                        "no data for {} s, usually a point every {} s: about {} points missing",
                        _fmt("value"), _fmt("typ"), pl.col("points"),
                    ).alias("reason"),
                )
        lens_kept = _store_tails(tw, self.s_tail_len, self.s_tail_t, None)
        self.s_n[gs] = n_before + lens_kept - tw.tl
        return out

    # ------------------------------------------------------------------ drift

    def _peer_groups(self, series: pl.DataFrame, sids: np.ndarray) -> None:
        """Look up the peer group of series not looked up yet (``group_of`` -2)."""
        todo = sids[self.group_of[sids] == -2]
        if not len(todo):
            return
        cfg = self.config
        names = self._keys.series_names.names
        tags = [t for t in cfg.peer_tags]
        have = [t for t in tags if t in series.columns]
        look = pl.DataFrame({"series": [names[i] for i in todo], "_sid": todo})
        if len(have) < len(tags) or not tags:
            # a peer tag the series frame has no column for: these series lack it (a series key
            # holds all its tags), so they have no peers, now or later
            known = look.join(series.select("series"), on="series", how="semi")
            self.group_of[known.get_column("_sid").to_numpy()] = -1
            return
        cols = ["series", "bucket", "measurement", *have]
        j = look.join(series.select(cols), on="series", how="inner")
        if not j.height:
            return
        complete = pl.all_horizontal([pl.col(t).is_not_null() for t in have])
        key = pl.concat_str(
            [pl.col("bucket"), pl.col("measurement"), *[pl.col(t).cast(pl.Utf8) for t in have]],
            separator="\x1f",
        )
        j = j.with_columns(pl.when(complete).then(key).otherwise(None).alias("_g"))
        has = j.filter(pl.col("_g").is_not_null())
        no = j.filter(pl.col("_g").is_null())
        self.group_of[no.get_column("_sid").to_numpy()] = -1
        if has.height:
            gid = self._groups.ids(has.get_column("_g")).astype(np.int64)
            self.group_of[has.get_column("_sid").to_numpy()] = gid
            self.g_wm = _grow(self.g_wm, len(self._groups), _NONE)

    def _drift(
        self,
        series: pl.DataFrame,
        order: np.ndarray,
        tw: _Tails,
        nb: np.ndarray,
        drift_ok: np.ndarray,
        dmin: np.ndarray,
    ) -> pl.DataFrame:
        cfg = self.config
        bucket_ns = int(round(cfg.drift_bucket_s * NS))
        late_ns = int(round(cfg.drift_lateness_s * NS))
        key_sid = self._keys.key_sid.astype(np.int64)
        self._peer_groups(series, np.unique(key_sid[tw.gk]))
        new = np.flatnonzero(tw.new)
        if not len(new):
            return empty_findings()
        key = tw.gk[tw.seg[new]]
        grp = self.group_of[key_sid[key]]
        has = grp >= 0
        new, key, grp = new[has], key[has], grp[has]
        if not len(new):
            return self._finalize(cfg, bucket_ns, late_ns, dmin)
        # arrival order, to give each point the group's watermark as it stood before it
        ar = np.argsort(order[tw.row[new]], kind="stable")
        new, key, grp = new[ar], key[ar], grp[ar]
        t = tw.t[new]
        df = pl.DataFrame({"g": grp, "t": t})
        prev = df.select(pl.col("t").cum_max().shift(1).over("g")).to_series().fill_null(_NONE).to_numpy()
        wm = np.maximum(prev, self.g_wm[grp])
        b = np.floor_divide(t, bucket_ns)
        fresh = (b + 1) * bucket_ns > wm - late_ns
        np.maximum.at(self.g_wm, grp, t)
        use = fresh & drift_ok[self._keys.field_id[key]] & nb[new]
        if use.any():
            self.p_key = np.concatenate([self.p_key, key[use]])
            self.p_bucket = np.concatenate([self.p_bucket, b[use]])
            self.p_val = np.concatenate([self.p_val, tw.v[new][use]])
        return self._finalize(cfg, bucket_ns, late_ns, dmin)

    def _drift_z(
        self, k: np.ndarray, r: np.ndarray, x: np.ndarray, floor: np.ndarray
    ) -> tuple[np.ndarray, ...]:
        """Score offsets ``r`` of keys ``k`` (bucket medians ``x``) without changing the state:
        ``base, dev, buf, smooth, z, high``."""
        cfg = self.config
        s = cfg.drift_smooth
        nbk = self.d_nb[k]
        base = np.where(nbk > 0, self.d_base[k], r)
        dev = r - base
        buf = np.roll(self.d_buf[k], -1, axis=1)
        buf[:, -1] = dev
        filled = np.minimum(nbk + 1, s)
        cols = np.arange(s)[None, :] >= (s - filled)[:, None]
        smooth = np.where(cols, buf, 0.0).sum(axis=1) / filled
        sigma = np.maximum(1.2533 * self.d_spread[k], 1e-9 * (1.0 + np.abs(x)))
        z = np.abs(smooth) / sigma
        ready = (nbk >= cfg.drift_min_buckets) & self.d_dec[k]
        high = ready & (z >= cfg.drift_threshold) & (np.abs(smooth) >= floor)
        return base, dev, buf, smooth, z, high

    def _finalize(self, cfg: QualityConfig, bucket_ns: int, late_ns: int, dmin: np.ndarray) -> pl.DataFrame:
        """Close the drift buckets behind their group's watermark and score them, bucket by bucket."""
        if not len(self.p_key):
            return empty_findings()
        key_sid = self._keys.key_sid.astype(np.int64)
        grp = self.group_of[key_sid[self.p_key]]
        done = (self.p_bucket + 1) * bucket_ns <= self.g_wm[grp] - late_ns
        if not done.any():
            return empty_findings()
        fk, fb, fv = self.p_key[done], self.p_bucket[done], self.p_val[done]
        self.p_key, self.p_bucket, self.p_val = self.p_key[~done], self.p_bucket[~done], self.p_val[~done]
        # the median of each key's points in each bucket (robust to a spike in the bucket)
        o = np.lexsort((fv, fb, fk))
        fk, fb, fv = fk[o], fb[o], fv[o]
        brk = np.ones(len(fk), dtype=bool)
        brk[1:] = (fk[1:] != fk[:-1]) | (fb[1:] != fb[:-1])
        st = np.flatnonzero(brk)
        ln = np.diff(np.append(st, len(fk)))
        x = 0.5 * (fv[st + (ln - 1) // 2] + fv[st + ln // 2])
        fk, fb = fk[st], fb[st]
        fg = self.group_of[key_sid[fk]]
        fid = self._keys.field_id[fk].astype(np.int64)
        o = np.lexsort((fid, fg, fb))  # by bucket
        fk, fb, fg, fid, x = fk[o], fb[o], fg[o], fid[o], x[o]
        bst, bn = _group_bounds(fb)
        events: list[dict[str, np.ndarray]] = []
        for a, n in zip(bst.tolist(), bn.tolist(), strict=True):
            events += self._drift_bucket(
                cfg, int(fb[a]), bucket_ns, fk[a : a + n], fg[a : a + n], fid[a : a + n], x[a : a + n], dmin
            )
        if not events:
            return empty_findings()
        ev = {c: np.concatenate([e[c] for e in events]) for c in events[0]}
        sk = ev.pop("key")
        sn, fn = self._keys.series_names.names, self._keys.field_names
        df = pl.DataFrame(
            {
                "series": pl.Series([sn[i] for i in self._keys.key_sid[sk]], dtype=pl.Utf8),
                "field": pl.Series([fn[i] for i in self._keys.field_id[sk]], dtype=pl.Utf8),
                **ev,
            }
        ).with_columns(_null_if_none("end_time"))
        return df.select(
            "series",
            "field",
            "time",
            "end_time",
            pl.lit("drift").alias("check"),
            "status",
            "value",
            pl.Series("score", _score(df.get_column("z").to_numpy() / cfg.drift_threshold)),
            "points",
            pl.format(
                "{} {} from its usual offset to the median of its {} co-located peers "
                "(usual offset {}, usual spread {}; {} times the spread) for {} buckets of {} s",
                pl.when(pl.col("value") >= 0).then(pl.lit("up")).otherwise(pl.lit("down")),
                pl.col("value").abs().round_sig_figs(4).cast(pl.Utf8),
                pl.col("peers"),
                _fmt("base"),
                _fmt("sigma", 3),
                _fmt("z", 3),
                pl.col("points"),
                pl.lit(f"{cfg.drift_bucket_s:g}"),
            ).alias("reason"),
        )

    def _drift_bucket(
        self,
        cfg: QualityConfig,
        bk: int,
        bucket_ns: int,
        k: np.ndarray,
        g: np.ndarray,
        f: np.ndarray,
        x: np.ndarray,
        dmin: np.ndarray,
    ) -> list[dict[str, np.ndarray]]:
        """One closed bucket of every peer group: offsets from the peers, state update, events.

        Each member's bucket median less its usual offset (``y``) puts the members on a common
        level; a member's reference is the median of its peers' ``y``, so a peer missing from a
        bucket does not move it (members of very different levels, e.g. 12 V and 24 V supplies)."""
        n = len(k)
        y = x - np.where(self.d_nb[k] > 0, self.d_base[k], 0.0)
        o = np.lexsort((y, f, g))
        k, g, f, x, y = k[o], g[o], f[o], x[o], y[o]
        brk = np.ones(n, dtype=bool)
        brk[1:] = (g[1:] != g[:-1]) | (f[1:] != f[:-1])
        gst = np.flatnonzero(brk)
        gn = np.diff(np.append(gst, n))
        start = np.repeat(gst, gn)
        size = np.repeat(gn, gn)
        rank = np.arange(n) - start
        last = n - 1

        def median_without(ex_a: np.ndarray, ex_b: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
            """Median of each row's group without the ranks ``ex_a`` (and ``ex_b``); the count."""
            if ex_b is None:
                lo, hi, drop = ex_a, ex_a, 1
            else:
                lo, hi, drop = np.minimum(ex_a, ex_b), np.maximum(ex_a, ex_b), 2
            m = size - drop
            mm = np.maximum(m, 1)

            def at(j: np.ndarray) -> np.ndarray:
                orig = j + (j >= lo) + ((j + (j >= lo)) >= hi) * (drop - 1)
                return y[np.minimum(start + orig, last)]

            return 0.5 * (at((mm - 1) // 2) + at(mm // 2)), m

        floor = dmin[f]
        med1, peers1 = median_without(rank, None)
        ok1 = peers1 >= cfg.drift_min_peers
        high1 = self._drift_z(k, x - med1, x, floor)[5]
        # the member farthest from its group's common level (median of all members' y, in units of
        # its own spread), if that is beyond the threshold, is left out of its peers' references:
        # one drifting sensor must not make its peers look drifting
        mid = 0.5 * (y[start + (size - 1) // 2] + y[start + size // 2])
        sigma = np.maximum(1.2533 * self.d_spread[k], 1e-9 * (1.0 + np.abs(x)))
        far = np.abs(y - mid) / sigma
        zz = np.where(high1 & ok1 & (far >= cfg.drift_threshold), far, -1.0)
        zmax = np.repeat(np.maximum.reduceat(zz, gst), gn)
        cand = (zz >= 0) & (zz == zmax)
        cs = np.cumsum(cand)
        before = np.repeat(cs[gst] - cand[gst], gn)
        suspect = cand & (cs - before == 1)
        sus_rank = np.full(len(gst), -1, dtype=np.int64)
        sus_rank[np.searchsorted(gst, np.flatnonzero(suspect), side="right") - 1] = rank[suspect]
        sr = np.repeat(sus_rank, gn)
        other = (sr >= 0) & ~suspect
        med2, peers2 = median_without(rank, np.where(other, sr, rank))
        med = np.where(other, med2, med1)
        peers = np.where(other, peers2, peers1)
        use = peers >= cfg.drift_min_peers
        k, x, med, peers, floor = k[use], x[use], med[use], peers[use], floor[use]
        if not len(k):
            return []
        r = x - med
        base, dev, buf, smooth, z, high = self._drift_z(k, r, x, floor)
        self.d_buf[k] = buf
        streak = np.where(high, self.d_streak[k] + 1, 0)
        self.d_streak_start[k] = np.where(high & (self.d_streak[k] == 0), bk, self.d_streak_start[k])
        self.d_streak[k] = streak
        was_open = self.d_open[k]
        opening = ~was_open & (streak >= cfg.drift_sustain)
        now_open = was_open | opening
        self.d_open_start[k] = np.where(opening, self.d_streak_start[k], self.d_open_start[k])
        better = now_open & (~was_open | (z > self.d_zmax[k]))
        self.d_zmax[k] = np.where(better, z, self.d_zmax[k])
        self.d_devmax[k] = np.where(better, smooth, self.d_devmax[k])
        self.d_npeers[k] = np.where(better, peers, self.d_npeers[k])
        self.d_last_high[k] = np.where(now_open & high, bk, self.d_last_high[k])
        closing = now_open & ~high & (z < cfg.drift_clear)
        events: list[dict[str, np.ndarray]] = []
        for mask, status in ((opening, "open"), (closing, "closed")):
            if mask.any():
                kk = k[mask]
                events.append(
                    {
                        "key": kk,
                        "time": self.d_open_start[kk] * bucket_ns,
                        "end_time": np.full(len(kk), _NONE)
                        if status == "open"
                        else (self.d_last_high[kk] + 1) * bucket_ns,
                        "status": np.full(len(kk), status),
                        "value": self.d_devmax[kk],
                        "z": self.d_zmax[kk],
                        "points": self.d_last_high[kk] - self.d_open_start[kk] + 1,
                        "peers": self.d_npeers[kk],
                        "base": self.d_base[kk],
                        "sigma": 1.2533 * self.d_spread[kk],
                    }
                )
        self.d_open[k] = now_open & ~closing
        # the usual offset and spread follow every bucket (time constant drift_baseline_s: a
        # drift much slower than that is absorbed). Warm-up: in the first buckets the offsets
        # settle fast (half-way to each bucket's offset, so the members reach a common level),
        # then the spread is the plain mean over the rest of the warm-up.
        nbk = self.d_nb[k]
        alpha = 1.0 - math.exp(-cfg.drift_bucket_s / cfg.drift_baseline_s)
        fast = min(10, cfg.drift_min_buckets // 2)
        rate_b = np.where(nbk < fast, np.maximum(0.5, 1.0 / (nbk + 1.0)), alpha)
        rate_s = np.where(
            nbk < fast, 0.0, np.where(nbk < cfg.drift_min_buckets, 1.0 / np.maximum(nbk - fast + 1.0, 1.0), alpha)
        )
        spread = self.d_spread[k]
        self.d_base[k] = base + rate_b * (r - base)
        self.d_spread[k] = spread + rate_s * (np.abs(dev) - spread)
        self.d_dec[k] |= x < self.d_last_mean[k]
        self.d_last_mean[k] = x
        self.d_nb[k] = nbk + 1
        return events
