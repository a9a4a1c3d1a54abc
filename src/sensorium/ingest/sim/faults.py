"""Fault injection (value faults, dropouts, line faults) and the ground-truth labels."""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.ingest.sim.config import NS, SimConfig
from sensorium.ingest.sim.fleet import ALL_FIELDS, DOMAIN, _Fleet
from sensorium.ingest.sim.vectors import _NONE, _Carry, _pick_field, _stretches

if TYPE_CHECKING:
    from sensorium.ingest.sim.engine import _Run

FAULTS = (
    "spike",
    "stuck",
    "drift",
    "dropout",
    "unit_f",
    "out_of_range",
    "duplicate",
    "out_of_order",
    "late",
)
_F = {f: i for i, f in enumerate(FAULTS)}
# Value-fault codes (priority: a higher code overrides a lower one on the same value).
_C_DRIFT, _C_STUCK, _C_SPIKE, _C_OOR, _C_UNITF = 1, 2, 3, 4, 5
_CODE_FAULT = np.array(
    [-1, _F["drift"], _F["stuck"], _F["spike"], _F["out_of_range"], _F["unit_f"]]
)

_DRIFT_FIELDS = ("temperature", "humidity", "pressure", "voltage")
_STUCK_FIELDS = ("temperature", "humidity", "pressure", "power", "voltage", "battery")
_SPIKE_FIELDS = ("temperature", "humidity", "pressure", "power", "voltage")
_OOR_FIELDS = ("temperature", "humidity", "pressure", "voltage", "battery", "rssi")
_DRIFT_MAX = {
    "temperature": (2.0, 6.0),
    "humidity": (8.0, 20.0),
    "pressure": (8.0, 20.0),
    "voltage": (1.0, 4.0),
}
_DRIFT_CLIP = {
    "temperature": (-45.0, 95.0),
    "humidity": (0.5, 99.5),
    "pressure": (805.0, 1195.0),
    "voltage": (0.5, 49.5),
}
_SPIKE_MIN = {
    "temperature": 30.0,
    "humidity": 40.0,
    "pressure": 200.0,
    "power": 2000.0,
    "voltage": 30.0,
}
# (low range, high range) of out-of-range values; None: only the other side.
_OOR_RANGES: dict[str, tuple[tuple[float, float] | None, tuple[float, float]]] = {
    "temperature": ((-90.0, -55.0), (105.0, 180.0)),
    "humidity": (None, (101.0, 150.0)),
    "pressure": ((400.0, 780.0), (1220.0, 1600.0)),
    "voltage": ((-20.0, -1.0), (55.0, 250.0)),
    "battery": ((-0.5, -0.02), (1.05, 1.6)),
    "rssi": ((-200.0, -125.0), (5.0, 40.0)),
}
_DROPOUT_LEN = (5, 60)
_STUCK_LEN = (5, 60)
_DRIFT_LEN = (20, 120)
_LATE_DELAY_S = (60.0, 600.0)
_OOO_SHIFT = (2, 20)

#: Schema of the ground-truth label table.
LABEL_SCHEMA = pa.schema(
    [
        ("time", pa.int64()),
        ("device_id", pa.string()),
        ("measurement", pa.string()),
        ("field", pa.string()),
        ("fault", pa.string()),
        ("end_time", pa.int64()),
    ]
)


@dataclass
class _LabelParts:
    """Label rows under construction (numpy columns; field/end_time use -1 for null)."""

    time: list[np.ndarray] = dc_field(default_factory=list)
    dev: list[np.ndarray] = dc_field(default_factory=list)
    fields: list[np.ndarray] = dc_field(default_factory=list)
    fault: list[np.ndarray] = dc_field(default_factory=list)
    end: list[np.ndarray] = dc_field(default_factory=list)

    def add(
        self,
        time_: np.ndarray,
        dev: np.ndarray,
        field_: np.ndarray | int,
        fault: np.ndarray | int,
        end: np.ndarray | None = None,
    ) -> None:
        n = len(time_)
        if n == 0:
            return
        self.time.append(np.asarray(time_, np.int64))
        self.dev.append(np.asarray(dev, np.int64))
        self.fields.append(np.broadcast_to(np.asarray(field_, np.int64), (n,)))
        self.fault.append(np.broadcast_to(np.asarray(fault, np.int64), (n,)))
        self.end.append(np.full(n, -1, np.int64) if end is None else np.asarray(end, np.int64))

    def table(self, fleet: _Fleet) -> pa.Table:
        if not self.time:
            return LABEL_SCHEMA.empty_table()
        t = np.concatenate(self.time)
        dev = np.concatenate(self.dev)
        fld = np.concatenate(self.fields)
        flt = np.concatenate(self.fault)
        end = np.concatenate(self.end)
        order = np.lexsort((flt, fld, dev, t))
        t, dev, fld, flt, end = t[order], dev[order], fld[order], flt[order], end[order]
        dev_a = pa.array(dev)
        return pa.table(
            {
                "time": pa.array(t, pa.int64()),
                "device_id": pc.take(fleet.a_device, dev_a),
                "measurement": pc.take(fleet.a_kind, pc.take(pa.array(fleet.kind), dev_a)),
                "field": pc.take(
                    pa.array(list(ALL_FIELDS), pa.string()),
                    pa.array(np.maximum(fld, 0), mask=fld < 0),
                ),
                "fault": pc.take(pa.array(list(FAULTS), pa.string()), pa.array(flt)),
                "end_time": pa.array(end, pa.int64(), mask=end < 0),
            },
            schema=LABEL_SCHEMA,
        )


class _GroupFaults:
    """Value faults and dropouts of one kind's devices (mixed into :class:`~.signals._Group`)."""

    d: int
    dev: np.ndarray
    fields: tuple[str, ...]
    c_drop: _Carry
    c_drift: _Carry
    c_stuck: _Carry
    drop_t0: np.ndarray
    stuck_fields: list[str]
    drift_fields: list[str]
    spike_fields: list[str]
    oor_fields: list[str]

    def _dropouts(
        self,
        rng: np.random.Generator,
        k: np.ndarray,
        shape: tuple[int, int],
        r: float,
        t: np.ndarray,
        final: bool,
        labels: _LabelParts,
    ) -> np.ndarray:
        """Mask of readings lost in dropouts; adds a label for every dropout run that ends."""
        mean_len = (_DROPOUT_LEN[0] + _DROPOUT_LEN[1]) / 2.0
        st = _stretches(rng, self.c_drop, k, shape, r / mean_len, _DROPOUT_LEN)
        a = st.active
        carry_in = self.drop_t0 != _NONE
        cont = st.cont & (not final)
        if final:
            self.c_drop = _Carry(self.d)
        prev = np.concatenate([carry_in[:, None], a[:, :-1]], axis=1)
        nxt = np.concatenate([a[:, 1:], cont[:, None]], axis=1)
        run_start = a & ~prev
        run_end = a & ~nxt
        sd, sj = np.nonzero(run_start)
        ed, ej = np.nonzero(run_end)
        # virtual start for runs carried in, virtual end for runs carried out, then pair them up
        cin = np.flatnonzero(carry_in & a[:, 0])
        cout = np.flatnonzero(cont)
        s_dev = np.concatenate([sd, cin])
        s_col = np.concatenate([sj, np.full(cin.size, -1)])
        s_time = np.concatenate([t[sd, sj], self.drop_t0[cin]])
        e_dev = np.concatenate([ed, cout])
        e_col = np.concatenate([ej, np.full(cout.size, shape[1])])
        so = np.lexsort((s_col, s_dev))
        eo = np.lexsort((e_col, e_dev))
        s_dev, s_time = s_dev[so], s_time[so]
        e_dev, e_col = e_dev[eo], e_col[eo]
        real = e_col < shape[1]
        if real.any():
            ends = t[e_dev[real], e_col[real]]
            labels.add(s_time[real], self.dev[s_dev[real]], -1, _F["dropout"], ends)
        self.drop_t0 = np.full(self.d, _NONE, np.int64)
        self.drop_t0[e_dev[~real]] = s_time[~real]
        return a

    def _value_faults(
        self,
        rng: np.random.Generator,
        k: np.ndarray,
        shape: tuple[int, int],
        r: float,
        v: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Apply drift, stuck, spike and out-of-range faults to ``v`` in place; returns fault codes."""
        d, n = shape
        codes = {f: np.zeros(shape, np.int8) for f in self.fields if f != "motion"}
        rows = np.arange(d)[:, None]
        # drift: an offset growing linearly to a maximum over the stretch
        if self.drift_fields:
            mean_len = (_DRIFT_LEN[0] + _DRIFT_LEN[1]) / 2.0
            st = _stretches(
                rng, self.c_drift, k, shape, r / mean_len, _DRIFT_LEN, len(self.drift_fields)
            )
            idx = np.flatnonzero(st.new & (st.last == np.arange(n)[None, :]))
            mx = np.zeros(shape)
            fnames = self.drift_fields
            which = st.field.flat[idx]
            lo = np.array([_DRIFT_MAX[f][0] for f in fnames])[which]
            hi = np.array([_DRIFT_MAX[f][1] for f in fnames])[which]
            mx.flat[idx] = rng.uniform(lo, hi) * np.where(rng.random(idx.size) < 0.5, -1.0, 1.0)
            mx = np.where(st.new, np.take_along_axis(mx, st.last, 1), self.c_drift.param[:, None])
            self.c_drift.param = np.where(st.cont, mx[:, -1], 0.0)
            offset = (st.elapsed + 1) / np.maximum(st.length, 1) * mx
            for i, f in enumerate(fnames):
                m = st.active & (st.field == i)
                lo_c, hi_c = _DRIFT_CLIP[f]
                v[f] = np.where(m, np.clip(v[f] + offset, lo_c, hi_c), v[f])
                codes[f][m] = _C_DRIFT
        # stuck: the value at the start of the stretch, repeated
        if self.stuck_fields:
            mean_len = (_STUCK_LEN[0] + _STUCK_LEN[1]) / 2.0
            fnames = self.stuck_fields
            st = _stretches(rng, self.c_stuck, k, shape, r / mean_len, _STUCK_LEN, len(fnames))
            stack = np.stack([v[f] for f in fnames])
            at_start = stack[st.field, rows, st.last]
            val = np.where(st.new, at_start, self.c_stuck.param[:, None])
            self.c_stuck.param = np.where(st.cont, val[:, -1], 0.0)
            for i, f in enumerate(fnames):
                m = st.active & (st.field == i)
                v[f] = np.where(m, val, v[f])
                codes[f][m] = _C_STUCK
        # spike: x3..x10, or a large jump where that would be too small; kept inside the field's
        # domain (a plausible-looking wrong reading that passes validation and reaches the rules;
        # impossible values are the out_of_range fault's), 1 % of the span from its edges
        if self.spike_fields:
            idx, which = _pick_field(rng, rng.random(shape) < r, self.spike_fields)
            mult = rng.uniform(3.0, 10.0, idx.size)
            jump = rng.uniform(1.0, 3.0, idx.size) * np.where(rng.random(idx.size) < 0.5, -1.0, 1.0)
            for i, f in enumerate(self.spike_fields):
                j = idx[which == i]
                x = v[f].flat[j]
                y = x * mult[which == i]
                small = np.abs(y - x) < _SPIKE_MIN[f]
                y = np.where(small, x + jump[which == i] * _SPIKE_MIN[f], y)
                if f in DOMAIN:
                    lo, hi = DOMAIN[f]
                    y = np.clip(y, lo + 0.01 * (hi - lo), hi - 0.01 * (hi - lo))
                v[f].flat[j] = y
                codes[f].flat[j] = _C_SPIKE
        # out of range: a value outside the domain
        if self.oor_fields:
            idx, which = _pick_field(rng, rng.random(shape) < r, self.oor_fields)
            u = rng.random(idx.size)
            side = rng.random(idx.size)
            for i, f in enumerate(self.oor_fields):
                sel = which == i
                j = idx[sel]
                low, high = _OOR_RANGES[f]
                y = high[0] + u[sel] * (high[1] - high[0])
                if low is not None:
                    y = np.where(side[sel] < 0.5, low[0] + u[sel] * (low[1] - low[0]), y)
                if f == "rssi":
                    y = np.rint(y)
                v[f].flat[j] = y
                codes[f].flat[j] = _C_OOR
        return codes


# --------------------------------------------------------------------------- chunks


def _line_faults(
    cfg: SimConfig,
    run: _Run,
    df: pl.DataFrame,
    rng: np.random.Generator,
    final: bool,
    labels: _LabelParts,
) -> tuple[pl.DataFrame, int, int]:
    """Duplicates, out-of-order and late lines: ``(rows in emission order, points, values)``."""
    fleet = run.fleet
    n = df.height
    r = cfg.fault_rate if cfg.faults else 0.0
    times = df["time"].to_numpy()
    pos = np.arange(n, dtype=np.float64)
    lf = np.zeros(n, np.int8)  # 0 clean, 2 out of order, 3 late
    late = np.zeros(n, bool)
    dup = np.zeros(n, bool)
    emit_at = np.zeros(n, np.int64)
    if r > 0 and n:
        u = rng.random(n)
        shift = rng.integers(_OOO_SHIFT[0], _OOO_SHIFT[1] + 1, n)
        delay = np.rint(rng.uniform(*_LATE_DELAY_S, n) * NS).astype(np.int64)
        dup = u < r
        ooo = (u >= r) & (u < 2 * r) & (np.arange(n) + shift < n)
        emit_at = times + delay
        end_ns = cfg.end_ns
        late = (u >= 2 * r) & (u < 3 * r)
        if end_ns is not None:
            late &= emit_at <= end_ns
        pos = np.where(ooo, pos + shift + 0.5, pos)
        lf[ooo] = 2
        lf[late] = 3
    base = df.with_columns(pl.Series("_key", pos), pl.Series("_lf", lf))
    parts = [base.filter(pl.Series(~late))]
    if dup.any():
        parts.append(
            base.filter(pl.Series(dup)).with_columns(
                (pl.col("_key") + 0.25).alias("_key"), pl.lit(1, pl.Int8).alias("_lf")
            )
        )
    # late rows: join the pending queue; emit those whose time has come
    if late.any():
        new_late = base.filter(pl.Series(late)).with_columns(pl.Series("_emit_at", emit_at[late]))
        run.pending = (
            new_late if run.pending is None else pl.concat([run.pending, new_late], how="diagonal")
        )
    if run.pending is not None and run.pending.height:
        limit = times.max() if n else None
        pend = run.pending.sort(["_emit_at", "time", "dev"])
        if final or limit is None:
            due_mask = np.ones(pend.height, bool) if final else np.zeros(pend.height, bool)
        else:
            due_mask = pend["_emit_at"].to_numpy() <= limit
        due = pend.filter(pl.Series(due_mask))
        run.pending = pend.filter(pl.Series(~due_mask))
        if due.height:
            keys = np.searchsorted(times, due["_emit_at"].to_numpy(), side="right") - 0.5
            parts.append(due.drop("_emit_at").with_columns(pl.Series("_key", keys)))
    out = pl.concat(parts, how="diagonal")
    if out.height:
        out = out[np.argsort(out["_key"].to_numpy(), kind="stable")]
    # labels for line faults; an out-of-order/late line counts only if emitted after a later one
    t_out = out["time"].to_numpy()
    lf_out = out["_lf"].to_numpy()
    dev_out = out["dev"].to_numpy()
    if out.height:
        prev = np.concatenate([[run.max_emitted], np.maximum.accumulate(t_out)[:-1]])
        after_later = prev > t_out
        run.max_emitted = max(run.max_emitted, int(t_out.max()))
        for code, name, need in (
            (1, "duplicate", False),
            (2, "out_of_order", True),
            (3, "late", True),
        ):
            m = lf_out == code
            if need:
                m &= after_later
            if m.any():
                labels.add(t_out[m], dev_out[m], -1, _F[name])
    unique = lf_out != 1
    points = int(unique.sum())
    values = int(fleet.n_fields[dev_out[unique]].sum()) if out.height else 0
    return out.drop(["_key", "_lf"]), points, values
