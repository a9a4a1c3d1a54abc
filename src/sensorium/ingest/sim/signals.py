"""The per-kind clean signal generators (climate, energy, motion) and their carried state."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from sensorium.ingest.sim.config import DAY_NS, HOUR_NS, NS, SimConfig
from sensorium.ingest.sim.faults import (
    _C_UNITF,
    _CODE_FAULT,
    _DRIFT_FIELDS,
    _OOR_FIELDS,
    _SPIKE_FIELDS,
    _STUCK_FIELDS,
    _GroupFaults,
    _LabelParts,
)
from sensorium.ingest.sim.fleet import (
    _FIELD_INDEX,
    _ROOM_AMP,
    _ROOM_HUM,
    _ROOM_OCC,
    _ROOM_TEMP,
    DECIMALS,
    KIND_FIELDS,
    KINDS,
    _Fleet,
    _seed,
)
from sensorium.ingest.sim.vectors import _NONE, _ar1, _Carry, _stretches


class _Group(_GroupFaults):
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
