"""A deterministic IoT fleet simulator, with injected faults and ground-truth labels.

The same :class:`SimConfig` (and the same ``chunk_seconds``) always yields byte-identical output.
Values are generated with NumPy, vectorised over devices and readings, one chunk of simulated time
at a time: state that spans chunks (AR(1) noise, battery level, cumulative energy, appliance cycles,
fault stretches, late lines not yet emitted) is carried over, so memory stays bounded by the chunk.

Fleet
    ``devices`` devices (``dev-00001`` ...), spread over ``home-1..home-K`` (``K = max(1, round(devices/8))``)
    and eight rooms. Kinds repeat the pattern climate, energy, climate, motion, climate, energy,
    climate, energy. The line-protocol measurement is the kind; tags are ``device_id``,
    ``location``, ``room``, ``sensor_type`` (= kind), plus ``unit=degF`` on Fahrenheit mix-ups only.

    ============  ===========================================================================
    ``climate``   temperature (°C), humidity (%), pressure (hPa), battery (0-1), rssi (dBm, int)
    ``energy``    power (W), voltage (V, 12 or 24 V DC), energy (kWh, cumulative), rssi
    ``motion``    motion (bool), battery, rssi
    ============  ===========================================================================

Faults (each with probability ``fault_rate`` per eligible point, or so that about that fraction of
points lie in a stretch): ``spike``, ``stuck``, ``drift``, ``dropout``, ``unit_f``, ``out_of_range``
(value faults, one per value at most) and ``duplicate``, ``out_of_order``, ``late`` (line faults, one
per line at most). Value faults, dropouts and line faults draw from separate random streams, so the
clean signal of a run with ``faults=True`` equals the run with ``faults=False`` wherever no label says
otherwise.

Without faults every value lies in its domain range (:data:`DOMAIN`); only ``out_of_range`` and
``spike`` faults leave it.

Labels (:data:`LABEL_SCHEMA`): one row per faulty value (``field`` set; stuck and drift stretches
give one row per point), per duplicated / out-of-order / late line (``field`` null), and per dropout
run (``time`` = first missing reading, ``end_time`` = last missing reading). A dropout label comes
with the chunk in which the run ends. Out-of-order and late lines are labelled only if they really
follow a later point in the output; late lines are emitted 1-10 minutes after their time and only
injected where that is within the simulated span.
"""

from __future__ import annotations

import io
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from sensorium.errors import ConfigError

__all__ = [
    "ALL_FIELDS",
    "DEFAULT_START_NS",
    "DOMAIN",
    "FAULTS",
    "KIND_FIELDS",
    "LABEL_SCHEMA",
    "ROOMS",
    "UNITS",
    "SimChunk",
    "SimConfig",
    "SimSummary",
    "Simulator",
    "post",
]

DEFAULT_START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
NS = 1_000_000_000
HOUR_NS = 3600 * NS
DAY_NS = 24 * HOUR_NS

ROOMS = (
    "living_room",
    "kitchen",
    "bedroom",
    "bathroom",
    "office",
    "garage",
    "basement",
    "hallway",
)
_ROOM_TEMP = np.array([21.0, 21.5, 19.0, 22.5, 21.0, 11.0, 15.0, 19.5])
_ROOM_AMP = np.array([1.5, 2.0, 1.2, 1.5, 1.8, 4.5, 0.8, 1.0])
_ROOM_HUM = np.array([45.0, 55.0, 45.0, 65.0, 42.0, 60.0, 62.0, 45.0])
_ROOM_OCC = np.array([0.55, 0.45, 0.25, 0.2, 0.4, 0.1, 0.08, 0.35])

KINDS = ("climate", "energy", "motion")
_KIND_PATTERN = (0, 1, 0, 2, 0, 1, 0, 1)
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "climate": ("temperature", "humidity", "pressure", "battery", "rssi"),
    "energy": ("power", "voltage", "energy", "rssi"),
    "motion": ("motion", "battery", "rssi"),
}
#: Every field, in the order fields appear in a line.
ALL_FIELDS = (
    "temperature",
    "humidity",
    "pressure",
    "power",
    "voltage",
    "energy",
    "motion",
    "battery",
    "rssi",
)
_FIELD_INDEX = {f: i for i, f in enumerate(ALL_FIELDS)}
DECIMALS = {
    "temperature": 2,
    "humidity": 1,
    "pressure": 1,
    "power": 1,
    "voltage": 2,
    "energy": 4,
    "battery": 3,
}
#: Units of the clean values (JSON readings carry them; ``unit_f`` temperatures are in degF).
UNITS: dict[str, str | None] = {
    "temperature": "degC",
    "humidity": "%",
    "pressure": "hPa",
    "power": "W",
    "voltage": "V",
    "energy": "kWh",
    "motion": None,
    "battery": None,
    "rssi": "dBm",
}
#: Plausible ranges: clean values always lie inside; only out_of_range and spike faults leave them.
DOMAIN: dict[str, tuple[float, float]] = {
    "temperature": (-50.0, 100.0),
    "humidity": (0.0, 100.0),
    "pressure": (800.0, 1200.0),
    "voltage": (0.0, 50.0),
    "battery": (0.0, 1.0),
    "rssi": (-120.0, 0.0),
}

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
_NONE = -(1 << 62)  # "no stretch" sentinel (reading index or time)
_TARGET_POINTS_PER_CHUNK = 200_000

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

_FORMATS = {
    ".lp": "lp",
    ".txt": "lp",
    ".line": "lp",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SimConfig:
    """What to simulate.

    ``rate`` is readings per second per device; ``duration_s`` may be ``math.inf`` for an endless
    stream (``chunks`` and ``post`` only). ``start_ns`` defaults to 2026-01-01T00:00:00Z.
    ``fault_rate`` is the probability of each fault class per eligible point (at most 0.2).
    """

    devices: int = 20
    rate: float = 1.0
    duration_s: float = 60.0
    seed: int = 42
    start_ns: int | None = None
    faults: bool = True
    fault_rate: float = 0.005

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ConfigError("simulator: devices must be >= 1", devices=self.devices)
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ConfigError("simulator: rate must be a positive number", rate=self.rate)
        if not self.duration_s >= 0:
            raise ConfigError("simulator: duration_s must be >= 0", duration_s=self.duration_s)
        if not 0.0 <= self.fault_rate <= 0.2:
            raise ConfigError(
                "simulator: fault_rate must be within 0..0.2", fault_rate=self.fault_rate
            )

    @property
    def start(self) -> int:
        """The first nominal reading time (UTC ns)."""
        return DEFAULT_START_NS if self.start_ns is None else int(self.start_ns)

    @property
    def readings(self) -> int | None:
        """Readings per device (``None``: endless)."""
        if math.isinf(self.duration_s):
            return None
        return max(0, math.ceil(self.duration_s * self.rate - 1e-9))

    @property
    def end_ns(self) -> int | None:
        """Nominal end of the simulated span (UTC ns; ``None``: endless)."""
        if math.isinf(self.duration_s):
            return None
        return self.start + round(self.duration_s * NS)


@dataclass
class SimSummary:
    """What a :meth:`Simulator.write` or :func:`post` produced.

    ``points``: distinct points emitted (a duplicate copy is not a new point); ``values``: their field
    values; ``lines``: records written (line-protocol lines, JSON readings or CSV/Parquet rows,
    duplicates included); ``faults``: label rows per fault class. For :func:`post`, ``accepted`` and
    ``rejected`` count lines as the server reported them, ``requests`` the POSTs made.
    """

    points: int
    values: int
    lines: int
    faults: dict[str, int]
    path: Path | None = None
    labels_path: Path | None = None
    accepted: int = 0
    rejected: int = 0
    requests: int = 0
    seconds: float = 0.0


# --------------------------------------------------------------------------- fleet


class _Fleet:
    """Static description of the devices, and per-device string tables for formatting."""

    def __init__(self, cfg: SimConfig) -> None:
        rng = np.random.default_rng([_seed(cfg.seed), 0])
        d = cfg.devices
        self.n = d
        self.kind = np.array(
            [_KIND_PATTERN[i % len(_KIND_PATTERN)] for i in range(d)], dtype=np.int64
        )
        self.room = rng.integers(0, len(ROOMS), d)
        n_loc = max(1, round(d / 8))
        self.n_loc = n_loc
        self.loc = rng.permutation(d) % n_loc
        self.loc_pressure = 1013.0 + rng.normal(0.0, 4.0, n_loc)
        self.phase = rng.uniform(0.0, 0.9, d)
        self.device_ids = [f"dev-{i + 1:05d}" for i in range(d)]
        self.locations = [f"home-{int(x) + 1}" for x in self.loc]
        self.rooms = [ROOMS[int(x)] for x in self.room]
        self.kinds = [KINDS[int(x)] for x in self.kind]
        self.n_fields = np.array([len(KIND_FIELDS[k]) for k in self.kinds], dtype=np.int64)
        s = pl.Series
        self.s_device = s("device_id", self.device_ids, pl.Utf8)
        self.s_location = s("location", self.locations, pl.Utf8)
        self.s_room = s("room", self.rooms, pl.Utf8)
        self.s_kind = s("sensor_type", self.kinds, pl.Utf8)
        self.s_prefix = s(
            "p",
            [
                f"{k},device_id={i},location={loc},room={r},sensor_type={k}"
                for i, loc, r, k in zip(
                    self.device_ids, self.locations, self.rooms, self.kinds, strict=True
                )
            ],
            pl.Utf8,
        )
        self.s_json_head = s(
            "h", [f'{{"device_id":"{i}","timestamp":"' for i in self.device_ids], pl.Utf8
        )
        self.s_json_mid = s(
            "m", [f'","sensor_type":"{k}","measurement_type":"' for k in self.kinds], pl.Utf8
        )
        self.s_json_tail = s(
            "t",
            [
                f',"location":"{loc}","metadata":{{"room":"{r}"}}}}'
                for loc, r in zip(self.locations, self.rooms, strict=True)
            ],
            pl.Utf8,
        )
        self.a_device = pa.array(self.device_ids, pa.string())
        self.a_kind = pa.array(self.kinds, pa.string())


def _seed(seed: int) -> int:
    return int(seed) & ((1 << 63) - 1)


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


class _Group:
    """All devices of one kind: parameters, carried state, and one chunk's generation."""

    def __init__(self, kind: str, fleet: _Fleet, cfg: SimConfig) -> None:
        self.kind = kind
        self.cfg = cfg
        self.fields = KIND_FIELDS[kind]
        self.dev = np.flatnonzero(fleet.kind == KINDS.index(kind))
        d = self.d = len(self.dev)
        rng = np.random.default_rng([_seed(cfg.seed), 0, 1 + KINDS.index(kind)])
        self.phase = fleet.phase[self.dev]
        room = fleet.room[self.dev]
        self.dt = 1.0 / cfg.rate
        self.rssi_mean = rng.uniform(-78.0, -45.0, d)
        if kind in ("climate", "motion"):
            self.level = rng.uniform(0.35, 1.0, d)
            self.drain = rng.uniform(0.005, 0.03, d) / 86400.0  # 0.5..3 % a day
        if kind == "climate":
            self.t_base = _ROOM_TEMP[room] + rng.normal(0.0, 0.7, d)
            self.t_amp = _ROOM_AMP[room] * rng.uniform(0.7, 1.3, d)
            self.h_base = _ROOM_HUM[room] + rng.normal(0.0, 4.0, d)
            self.p_base = fleet.loc_pressure[fleet.loc[self.dev]] + rng.normal(0.0, 0.8, d)
            self.ar_t = rng.normal(0.0, 0.4, d)
            self.ar_h = rng.normal(0.0, 2.5, d)
            self.ar_p = rng.normal(0.0, 5.0, d)
        elif kind == "energy":
            self.base_w = rng.uniform(40.0, 250.0, d)
            self.fridge_period = rng.uniform(1800.0, 3600.0, d)
            self.fridge_duty = rng.uniform(0.3, 0.5, d)
            self.fridge_phase = rng.uniform(0.0, 1.0, d)
            self.fridge_w = rng.uniform(90.0, 160.0, d)
            self.kettle_w = rng.uniform(1800.0, 2400.0, d)
            self.kettle_every_s = rng.uniform(3.0, 8.0, d) * 3600.0
            self.supply_v = np.where(rng.random(d) < 0.5, 12.0, 24.0)
            self.energy = rng.uniform(100.0, 5000.0, d)
            self.kettle = _Carry(d)
        elif kind == "motion":
            self.occ = _ROOM_OCC[room] * rng.uniform(0.7, 1.3, d)
        # fault stretches
        self.c_drop = _Carry(d)
        self.c_drift = _Carry(d)
        self.c_stuck = _Carry(d)
        self.drop_t0 = np.full(d, _NONE, np.int64)  # first missing time of a dropout still running
        self.stuck_fields = [f for f in _STUCK_FIELDS if f in self.fields]
        self.drift_fields = [f for f in _DRIFT_FIELDS if f in self.fields]
        self.spike_fields = [f for f in _SPIKE_FIELDS if f in self.fields]
        self.oor_fields = [f for f in _OOR_FIELDS if f in self.fields]

    # ---- clean signal

    def _clean(
        self, rng: np.random.Generator, k: np.ndarray
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        cfg = self.cfg
        d, n = self.d, len(k)
        jitter = rng.uniform(-0.04, 0.04, (d, n))
        t = cfg.start + np.rint(
            (k[None, :] + 0.04 + self.phase[:, None] + jitter) * (NS / cfg.rate)
        ).astype(np.int64)
        hod = (t % DAY_NS).astype(np.float64) / HOUR_NS
        dt = self.dt
        v: dict[str, np.ndarray] = {}
        if self.kind in ("climate", "motion"):
            steps = np.arange(1, n + 1, dtype=np.float64) * dt
            level = self.level[:, None] - self.drain[:, None] * steps[None, :]
            self.level = level[:, -1].copy()
            v["battery"] = np.clip(
                np.maximum(level, 0.0) + rng.normal(0.0, 0.002, (d, n)), 0.0, 1.0
            )
        if self.kind == "climate":
            phi = math.exp(-dt / 600.0)
            ar_t = _ar1(rng.normal(0.0, 0.4 * math.sqrt(1 - phi * phi), (d, n)), phi, self.ar_t)
            self.ar_t = ar_t[:, -1].copy()
            diurnal = np.sin(2 * np.pi * (hod - 9.0) / 24.0)
            temp = self.t_base[:, None] + self.t_amp[:, None] * diurnal + ar_t
            phi_h = math.exp(-dt / 900.0)
            ar_h = _ar1(
                rng.normal(0.0, 2.5 * math.sqrt(1 - phi_h * phi_h), (d, n)), phi_h, self.ar_h
            )
            self.ar_h = ar_h[:, -1].copy()
            hum = self.h_base[:, None] - 2.0 * (temp - self.t_base[:, None]) + ar_h
            phi_p = math.exp(-dt / 21600.0)
            ar_p = _ar1(
                rng.normal(0.0, 5.0 * math.sqrt(1 - phi_p * phi_p), (d, n)), phi_p, self.ar_p
            )
            self.ar_p = ar_p[:, -1].copy()
            pres = self.p_base[:, None] + ar_p + rng.normal(0.0, 0.08, (d, n))
            v["temperature"] = np.clip(temp, -40.0, 60.0)
            v["humidity"] = np.clip(hum, 5.0, 98.0)
            v["pressure"] = np.clip(pres, 960.0, 1060.0)
        elif self.kind == "energy":
            secs = (t - self.cfg.start).astype(np.float64) / NS
            fridge = (
                (secs / self.fridge_period[:, None] + self.fridge_phase[:, None]) % 1.0
            ) < self.fridge_duty[:, None]
            kettle_len = (max(1, round(120 * cfg.rate)), max(1, round(300 * cfg.rate)))
            kettle = _stretches(
                rng,
                self.kettle,
                k,
                (d, n),
                np.minimum(1.0, dt / self.kettle_every_s)[:, None],
                kettle_len,
            ).active
            evening = 1.0 + 0.25 * np.sin(2 * np.pi * (hod - 13.0) / 24.0)
            power = (
                self.base_w[:, None] * evening
                + fridge * self.fridge_w[:, None]
                + kettle * self.kettle_w[:, None]
                + rng.normal(0.0, 2.0, (d, n))
            )
            power = np.maximum(power, 0.5)
            energy = self.energy[:, None] + np.cumsum(power * (dt / 3.6e6), axis=1)
            self.energy = energy[:, -1].copy()
            volt = self.supply_v[:, None] - 0.12 * power / 1000.0 + rng.normal(0.0, 0.03, (d, n))
            v["power"] = power
            v["voltage"] = np.clip(volt, 0.5, 49.5)
            v["energy"] = energy
        elif self.kind == "motion":
            act = np.clip(np.sin(2 * np.pi * (hod - 6.0) / 24.0), 0.0, None)
            p = self.occ[:, None] * (0.15 + 0.85 * act)
            v["motion"] = rng.random((d, n)) < p
        v["rssi"] = np.clip(
            np.rint(self.rssi_mean[:, None] + rng.normal(0.0, 2.5, (d, n))), -110.0, -25.0
        )
        return t, v

    # ---- one chunk

    def step(
        self,
        rng_v: np.random.Generator,
        rng_f: np.random.Generator,
        k: np.ndarray,
        final: bool,
        labels: _LabelParts,
    ) -> pl.DataFrame | None:
        """Generate readings ``k`` of every device of this kind; returns emitted rows (unsorted)."""
        if self.d == 0 or len(k) == 0:
            return None
        d, n = self.d, len(k)
        shape = (d, n)
        t, v = self._clean(rng_v, k)
        r = self.cfg.fault_rate if self.cfg.faults else 0.0
        codes: dict[str, np.ndarray] = {}
        unit_f = np.zeros(shape, bool)
        emitted = np.ones(shape, bool)
        if r > 0:
            emitted = ~self._dropouts(rng_f, k, shape, r, t, final, labels)
            codes = self._value_faults(rng_f, k, shape, r, v)
            if self.kind == "climate":
                unit_f = (rng_f.random(shape) < r) & (codes["temperature"] == 0)
                codes["temperature"][unit_f] = _C_UNITF
                v["temperature"] = np.where(unit_f, v["temperature"] * 1.8 + 32.0, v["temperature"])
        sel = np.nonzero(emitted)
        cols: dict[str, Any] = {
            "time": t[sel],
            "dev": self.dev[sel[0]].astype(np.int32),
            "unit_f": unit_f[sel],
        }
        for f in self.fields:
            a = v[f][sel]
            if f in DECIMALS:
                cols[f] = np.round(a, DECIMALS[f])
            elif f == "rssi":
                cols[f] = a.astype(np.int64)
            else:
                cols[f] = a
        for f, c in codes.items():
            m = (c > 0) & emitted
            nz = np.nonzero(m)
            labels.add(t[nz], self.dev[nz[0]], _FIELD_INDEX[f], _CODE_FAULT[c[nz]])
        return pl.DataFrame(cols)

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
        # spike: x3..x10, or a large jump where that would be too small
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


@dataclass(frozen=True)
class SimChunk:
    """One chunk of simulated time, in emission order.

    ``frame`` holds the emitted rows (``time`` ns, ``dev`` index, ``unit_f``, field columns);
    ``lines`` renders them as line protocol (``"\\n"``-joined, with a trailing newline; ``""`` when
    the chunk is empty). ``points``/``values`` count distinct points and their values (duplicate
    copies excluded); ``n_lines`` counts rows including duplicates. ``labels`` follows
    :data:`LABEL_SCHEMA`. ``seconds_done``/``seconds_total`` give the simulated time covered so
    far and in all (``inf`` for an endless stream).
    """

    index: int
    start_ns: int
    end_ns: int
    frame: pl.DataFrame = dc_field(repr=False)
    labels: pa.Table = dc_field(repr=False)
    points: int
    values: int
    seconds_done: float
    seconds_total: float
    _fleet: _Fleet = dc_field(repr=False, compare=False)

    @property
    def n_lines(self) -> int:
        """Rows (line-protocol lines) in the chunk, duplicates included."""
        return self.frame.height

    @cached_property
    def line_list(self) -> list[str]:
        """The lines, without newlines."""
        return _lp_series(self.frame, self._fleet).to_list() if self.frame.height else []

    @cached_property
    def lines(self) -> str:
        """Line protocol, ``"\\n"``-joined with a trailing newline."""
        if not self.frame.height:
            return ""
        joined = _lp_series(self.frame, self._fleet).str.join("\n").item()
        return str(joined) + "\n"

    @property
    def max_time(self) -> int | None:
        """Latest point time in the chunk."""
        if not self.frame.height:
            return None
        return int(self.frame["time"].max())  # type: ignore[arg-type]


class _Run:
    """State of one pass over the simulation (a fresh one per :meth:`Simulator.chunks` call)."""

    def __init__(self, sim: Simulator) -> None:
        cfg = sim.config
        fleet = sim.fleet
        self.fleet = fleet
        self.cfg = cfg
        self.groups = [_Group(kind, fleet, cfg) for kind in KINDS]
        self.pending: pl.DataFrame | None = None  # late rows not emitted yet (+ emit_at)
        self.max_emitted = np.iinfo(np.int64).min


def _empty_frame() -> pl.DataFrame:
    schema: dict[str, Any] = {"time": pl.Int64, "dev": pl.Int32, "unit_f": pl.Boolean}
    for f in ALL_FIELDS:
        schema[f] = pl.Int64 if f == "rssi" else pl.Boolean if f == "motion" else pl.Float64
    return pl.DataFrame(schema=schema)


_CANON = ["time", "dev", "unit_f", *ALL_FIELDS]


class Simulator:
    """Deterministic generator of a simulated fleet's telemetry. See the module docs."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.fleet = _Fleet(self.config)

    @property
    def default_chunk_seconds(self) -> float:
        """Chunk length used by :meth:`write`: about 200k points per chunk."""
        cfg = self.config
        return max(1.0 / cfg.rate, _TARGET_POINTS_PER_CHUNK / (cfg.devices * cfg.rate))

    @property
    def device_ids(self) -> list[str]:
        return list(self.fleet.device_ids)

    def devices(self) -> pa.Table:
        """The fleet: ``device_id``, ``kind``, ``location``, ``room``."""
        f = self.fleet
        return pa.table(
            {"device_id": f.device_ids, "kind": f.kinds, "location": f.locations, "room": f.rooms}
        )

    def chunks(self, chunk_seconds: float = 60.0) -> Iterator[SimChunk]:
        """Stream the simulation, ``chunk_seconds`` of simulated time at a time (lazily).

        Output is deterministic for a given config and ``chunk_seconds``. Chunks may be empty
        (e.g. when every device is in a dropout).
        """
        if not chunk_seconds > 0:
            raise ConfigError("chunk_seconds must be > 0", chunk_seconds=chunk_seconds)
        cfg = self.config
        run = _Run(self)
        per = max(1, round(chunk_seconds * cfg.rate))
        total = cfg.readings
        seed = _seed(cfg.seed)
        c = 0
        while True:
            k0 = c * per
            k1 = k0 + per if total is None else min(total, k0 + per)
            final = total is not None and k1 >= total
            yield self._chunk(run, c, np.arange(k0, k1, dtype=np.int64), final, seed)
            if final:
                return
            c += 1

    def _chunk(self, run: _Run, c: int, k: np.ndarray, final: bool, seed: int) -> SimChunk:
        cfg = self.config
        fleet = run.fleet
        rng_v = np.random.default_rng([seed, 1, c])
        rng_f = np.random.default_rng([seed, 2, c])
        rng_l = np.random.default_rng([seed, 3, c])
        labels = _LabelParts()
        stepped = [g.step(rng_v, rng_f, k, final, labels) for g in run.groups]
        frames = [f for f in stepped if f is not None and f.height]
        df = pl.concat(frames, how="diagonal") if frames else _empty_frame()
        if df.height:
            df = df[np.lexsort((df["dev"].to_numpy(), df["time"].to_numpy()))]
        out, points, values = self._line_faults(run, df, rng_l, final, labels)
        schema = _empty_frame().schema
        missing = [pl.lit(None, schema[c]).alias(c) for c in _CANON if c not in out.columns]
        if missing:
            out = out.with_columns(missing)
        out = out.select(_CANON)
        start = cfg.start + round(int(k[0]) * NS / cfg.rate) if len(k) else cfg.start
        end = cfg.start + round((int(k[-1]) + 1) * NS / cfg.rate) if len(k) else cfg.start
        return SimChunk(
            index=c,
            start_ns=start,
            end_ns=end,
            frame=out,
            labels=labels.table(fleet),
            points=points,
            values=values,
            seconds_done=min(cfg.duration_s, (int(k[-1]) + 1) / cfg.rate) if len(k) else 0.0,
            seconds_total=cfg.duration_s,
            _fleet=fleet,
        )

    def _line_faults(
        self,
        run: _Run,
        df: pl.DataFrame,
        rng: np.random.Generator,
        final: bool,
        labels: _LabelParts,
    ) -> tuple[pl.DataFrame, int, int]:
        """Duplicates, out-of-order and late lines: ``(rows in emission order, points, values)``."""
        cfg = self.config
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
            new_late = base.filter(pl.Series(late)).with_columns(
                pl.Series("_emit_at", emit_at[late])
            )
            run.pending = (
                new_late
                if run.pending is None
                else pl.concat([run.pending, new_late], how="diagonal")
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

    # ---- output

    def write(
        self,
        out: Path | str,
        fmt: str | None = None,
        progress: Callable[[float, float], None] | None = None,
        chunk_seconds: float | None = None,
    ) -> SimSummary:
        """Write the whole simulation to ``out`` and its labels to ``<out>.labels.csv``.

        ``fmt`` (default: from the extension): ``lp`` (.lp/.txt), ``jsonl`` (.jsonl/.ndjson: one
        reading per field value), ``csv`` or ``parquet`` (wide: time, measurement, tags, fields).
        ``progress(simulated_seconds_done, simulated_seconds_total)`` is called after every chunk.
        """
        out = Path(out)
        if self.config.readings is None:
            raise ConfigError("cannot write an endless simulation (duration_s=inf) to a file")
        fmt = _format_for(out, fmt)
        labels_path = out.with_name(out.name + ".labels.csv")
        cs = chunk_seconds or self.default_chunk_seconds
        counts = dict.fromkeys(FAULTS, 0)
        points = values = lines = 0
        t0 = time.perf_counter()
        pq_writer = None
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as fh, open(labels_path, "wb") as lfh:
            lfh.write(b"time,device_id,measurement,field,fault,end_time\n")
            first = True
            for ch in self.chunks(cs):
                points += ch.points
                values += ch.values
                if fmt == "lp":
                    if ch.frame.height:
                        _write_raw(fh, _lp_series(ch.frame, self.fleet))
                    lines += ch.n_lines
                elif fmt == "jsonl":
                    lines += _write_jsonl(fh, ch.frame, self.fleet)
                elif fmt == "csv":
                    wide = _wide(ch.frame, self.fleet, iso=True)
                    wide.write_csv(fh, include_header=first)
                    lines += wide.height
                else:
                    tbl = _wide_arrow(ch.frame, self.fleet)
                    if pq_writer is None:
                        import pyarrow.parquet as pq

                        pq_writer = pq.ParquetWriter(fh, tbl.schema, compression="zstd")
                    if tbl.num_rows:
                        pq_writer.write_table(tbl)
                    lines += tbl.num_rows
                first = False
                _write_labels(lfh, ch.labels)
                _count_faults(counts, ch.labels)
                if progress is not None:
                    progress(ch.seconds_done, ch.seconds_total)
            if pq_writer is not None:
                pq_writer.close()
        return SimSummary(
            points=points,
            values=values,
            lines=lines,
            faults=counts,
            path=out,
            labels_path=labels_path,
            seconds=time.perf_counter() - t0,
        )


def _count_faults(counts: dict[str, int], labels: pa.Table) -> None:
    if not labels.num_rows:
        return
    for row in pc.value_counts(labels["fault"]).to_pylist():
        counts[row["values"]] = counts.get(row["values"], 0) + int(row["counts"])


def _format_for(out: Path, fmt: str | None) -> str:
    if fmt is not None:
        f = fmt.lower().lstrip(".")
        f = {"ndjson": "jsonl", "json": "jsonl", "txt": "lp", "line": "lp", "pq": "parquet"}.get(
            f, f
        )
        if f not in ("lp", "jsonl", "csv", "parquet"):
            raise ConfigError(f"unknown output format {fmt!r}: use lp, jsonl, csv or parquet")
        return f
    ext = out.suffix.lower()
    if ext not in _FORMATS:
        raise ConfigError(
            f"cannot tell the format of {out.name!r}: use .lp/.txt, .jsonl/.ndjson, .csv or .parquet"
        )
    return _FORMATS[ext]


# --------------------------------------------------------------------------- formatting


def _value_str(f: str) -> pl.Expr:
    c = pl.col(f)
    if f == "rssi":
        return c.cast(pl.Utf8) + pl.lit("i")
    return c.cast(pl.Utf8)


def _by_kind(
    frame: pl.DataFrame, fleet: _Fleet, build: Callable[[str, pl.DataFrame], pl.Series]
) -> pl.Series:
    """``build(kind, rows of that kind)`` for each kind, put back in the order of ``frame``."""
    kinds = fleet.kind[frame["dev"].to_numpy()]
    perms: list[np.ndarray] = []
    outs: list[pl.Series] = []
    for ki, kind in enumerate(KINDS):
        idx = np.flatnonzero(kinds == ki)
        if idx.size:
            perms.append(idx)
            outs.append(build(kind, frame[idx] if idx.size < frame.height else frame))
    if len(outs) == 1:
        return outs[0]
    perm = np.concatenate(perms)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return pl.concat(outs).gather(inv)


def _lp_series(frame: pl.DataFrame, fleet: _Fleet) -> pl.Series:
    """Line protocol for every row of ``frame``."""

    def build(kind: str, sub: pl.DataFrame) -> pl.Series:
        pieces: list[Any] = [fleet.s_prefix.gather(sub["dev"].cast(pl.UInt32)).alias("p")]
        if kind == "climate":
            pieces.append(
                pl.when(pl.col("unit_f")).then(pl.lit(",unit=degF")).otherwise(pl.lit(""))
            )
        for i, f in enumerate(KIND_FIELDS[kind]):
            pieces += [pl.lit((" " if i == 0 else ",") + f + "="), _value_str(f)]
        pieces += [pl.lit(" "), pl.col("time").cast(pl.Utf8)]
        return sub.select(pl.concat_str(pieces).alias("line")).to_series()

    return _by_kind(frame, fleet, build)


def _iso(col: str = "time") -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ns", "UTC")).dt.strftime("%Y-%m-%dT%H:%M:%S%.9fZ")


def _write_jsonl(fh: BinaryIO, frame: pl.DataFrame, fleet: _Fleet) -> int:
    """One JSON reading per field value, in row order then field order; returns readings."""
    if not frame.height:
        return 0

    def build(kind: str, sub: pl.DataFrame) -> pl.Series:
        dev = sub["dev"].cast(pl.UInt32)
        df = sub.with_columns(
            fleet.s_json_head.gather(dev).alias("_h"),
            fleet.s_json_mid.gather(dev).alias("_m"),
            fleet.s_json_tail.gather(dev).alias("_t"),
            _iso().alias("_ts"),
        )
        parts = []
        for f in KIND_FIELDS[kind]:
            unit = UNITS[f]
            if f == "temperature":
                u = pl.when(pl.col("unit_f")).then(pl.lit('"degF"')).otherwise(pl.lit('"degC"'))
            else:
                u = pl.lit("null" if unit is None else f'"{unit}"')
            parts.append(
                pl.concat_str(
                    [
                        pl.col("_h"),
                        pl.col("_ts"),
                        pl.col("_m"),
                        pl.lit(f + '","value":'),
                        pl.col(f).cast(pl.Utf8),
                        pl.lit(',"unit":'),
                        u,
                        pl.col("_t"),
                    ]
                )
            )
        return df.select(pl.concat_str(parts, separator="\n").alias("j")).to_series()

    _write_raw(fh, _by_kind(frame, fleet, build))
    return int(fleet.n_fields[frame["dev"].to_numpy()].sum())


def _write_raw(fh: BinaryIO, text: pl.Series) -> None:
    """Write each string of ``text`` followed by a newline, unquoted."""
    text.to_frame().write_csv(fh, include_header=False, quote_style="never")


def _wide(frame: pl.DataFrame, fleet: _Fleet, iso: bool) -> pl.DataFrame:
    """Rows as ``time, measurement, device_id, location, room, sensor_type, unit, <fields>``."""
    dev = frame["dev"].cast(pl.UInt32)
    kind = fleet.s_kind.gather(dev)
    cols: list[Any] = [
        _iso().alias("time") if iso else pl.col("time"),
        kind.alias("measurement"),
        fleet.s_device.gather(dev).alias("device_id"),
        fleet.s_location.gather(dev).alias("location"),
        fleet.s_room.gather(dev).alias("room"),
        kind.alias("sensor_type"),
        pl.when(pl.col("unit_f"))
        .then(pl.lit("degF"))
        .otherwise(pl.lit(None, pl.Utf8))
        .alias("unit"),
        *[pl.col(f) for f in ALL_FIELDS],
    ]
    return frame.select(cols)


_WIDE_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("ns", tz="UTC")),
        ("measurement", pa.string()),
        ("device_id", pa.string()),
        ("location", pa.string()),
        ("room", pa.string()),
        ("sensor_type", pa.string()),
        ("unit", pa.string()),
        *[
            (f, pa.int64() if f == "rssi" else pa.bool_() if f == "motion" else pa.float64())
            for f in ALL_FIELDS
        ],
    ]
)


def _wide_arrow(frame: pl.DataFrame, fleet: _Fleet) -> pa.Table:
    tbl = _wide(frame, fleet, iso=False).to_arrow()
    arrays = []
    for f in _WIDE_SCHEMA:
        col = tbl[f.name]
        if f.name == "time":
            col = col.cast(pa.int64()).cast(f.type)
        arrays.append(col.cast(f.type))
    return pa.Table.from_arrays(arrays, schema=_WIDE_SCHEMA)


def _write_labels(fh: BinaryIO, labels: pa.Table) -> None:
    if not labels.num_rows:
        return
    df = pl.from_arrow(labels)
    assert isinstance(df, pl.DataFrame)
    buf = io.BytesIO()
    df.write_csv(buf, include_header=False)
    fh.write(buf.getvalue())


# --------------------------------------------------------------------------- HTTP


def _count_rejected(resp: Any, n: int) -> int:
    """Rejected lines of a 400 (partial write) answer to a batch of ``n`` lines (best effort)."""
    body: Any = None
    try:
        body = resp.json()
    except Exception:
        body = None
    msg = ""
    if isinstance(body, dict):
        for key in ("rejected", "rejected_lines", "lines_rejected", "dropped"):
            if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
                return max(0, min(n, int(body[key])))
        for key in ("accepted", "written", "lines_accepted"):
            if isinstance(body.get(key), int) and not isinstance(body.get(key), bool):
                return max(0, n - int(body[key]))
        msg = str(body.get("message") or body.get("error") or "")
        for key in ("errors", "rejects"):
            if isinstance(body.get(key), list) and body[key] and not msg:
                return min(n, len(body[key]))
    else:
        msg = resp.text or ""
    m = re.search(r"dropped=(\d+)", msg) or re.search(
        r"(\d+)\s+(?:lines?|points?)\s+(?:rejected|dropped)", msg
    )
    if m:
        return max(0, min(n, int(m.group(1))))
    m = re.search(r"\((\d+) written\)", msg) or re.search(
        r"(\d+)\s+(?:lines?|points?)?\s*(?:written|accepted)", msg
    )
    if m:
        return max(0, n - int(m.group(1)))
    if isinstance(body, dict):
        for key in ("errors", "rejects"):
            if isinstance(body.get(key), list) and body[key]:
                return min(n, len(body[key]))
    return n


def post(
    sim: Simulator,
    url: str,
    *,
    bucket: str = "default",
    batch_lines: int = 5000,
    realtime: bool = False,
    token: str | None = None,
    progress: Callable[[float, float], None] | None = None,
    stop_event: threading.Event | None = None,
    timeout_s: float = 30.0,
    client: Any = None,
) -> SimSummary:
    """POST the simulation as line protocol to ``{url}/api/v2/write?bucket=...&precision=ns``.

    ``realtime=True`` replays at wall-clock pace with ``start_ns = now``: each second of simulated
    time is sent once it has passed (so no point lies in the future); with ``duration_s=inf`` it
    runs until ``stop_event`` is set. A 400 answer is taken as a partial write (faulty lines
    rejected) and counted; any other error status raises :class:`httpx.HTTPStatusError`.
    ``progress(simulated_seconds_done, simulated_seconds_total)`` is called after every request.
    """
    import httpx

    if batch_lines < 1:
        raise ConfigError("batch_lines must be >= 1", batch_lines=batch_lines)
    if realtime:
        sim = Simulator(replace(sim.config, start_ns=time.time_ns()))
        chunk_s = 1.0
    else:
        if sim.config.readings is None:
            raise ConfigError("an endless simulation can only be posted with realtime=True")
        chunk_s = sim.default_chunk_seconds
    endpoint = url.rstrip("/") + "/api/v2/write"
    params = {"bucket": bucket, "precision": "ns"}
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    if token:
        headers["Authorization"] = f"Token {token}"
    summary = SimSummary(points=0, values=0, lines=0, faults=dict.fromkeys(FAULTS, 0))
    own = client is None
    http = client if client is not None else httpx.Client(timeout=timeout_s)
    t0 = time.perf_counter()
    done = (0.0, 0.0)

    def send(batch: list[str]) -> None:
        if not batch:
            return
        body = ("\n".join(batch) + "\n").encode()
        resp = http.post(endpoint, params=params, content=body, headers=headers)
        summary.requests += 1
        if resp.status_code == 400:
            rej = _count_rejected(resp, len(batch))
        else:
            resp.raise_for_status()
            rej = 0
        summary.rejected += rej
        summary.accepted += len(batch) - rej
        if progress is not None:
            progress(*done)

    def stopped() -> bool:
        return stop_event is not None and stop_event.is_set()

    try:
        buf: list[str] = []
        for ch in sim.chunks(chunk_s):
            if stopped():
                break
            if realtime and ch.n_lines:
                wait_ns = (ch.max_time or 0) - time.time_ns()
                if wait_ns > 0:
                    if stop_event is not None:
                        if stop_event.wait(wait_ns / NS):
                            break
                    else:
                        time.sleep(wait_ns / NS)
            summary.points += ch.points
            summary.values += ch.values
            summary.lines += ch.n_lines
            _count_faults(summary.faults, ch.labels)
            done = (ch.seconds_done, ch.seconds_total)
            buf.extend(ch.line_list)
            while len(buf) >= batch_lines:
                send(buf[:batch_lines])
                del buf[:batch_lines]
                if stopped():
                    break
            if realtime:
                send(buf)
                buf = []
        if not stopped():
            send(buf)
    finally:
        if own:
            http.close()
    summary.seconds = time.perf_counter() - t0
    return summary
