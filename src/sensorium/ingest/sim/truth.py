"""Ground truth for sensor fusion: co-located sensors measuring the same room temperature.

The fleet simulator gives every climate device its own temperature, so no two devices measure the
same quantity. :func:`colocated_temperatures` builds what fusion needs: per room one *true*
temperature from the simulator's climate model (room base level and daily amplitude from
:mod:`.fleet`, the daily cycle ``sin(2 pi (hour - 9) / 24)`` and the AR(1) variation with a
600 s time constant and 0.4 °C standard deviation from :mod:`.signals`), plus ``sensors`` sensors
per room that read ``truth + bias + noise`` with independent Gaussian noise of a different standard
deviation each, optional gross outliers and missing readings. Time stamps are jittered within the
sampling interval (the value is the truth at the nominal time). Deterministic under ``seed``; it
draws from its own random streams, so the simulator's output is unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from sensorium.ingest.sim.config import DEFAULT_START_NS, HOUR_NS, NS
from sensorium.ingest.sim.fleet import _ROOM_AMP, _ROOM_TEMP, ROOMS, _seed
from sensorium.ingest.sim.vectors import _ar1


@dataclass(frozen=True)
class Colocated:
    """``readings``: ``time`` (ns), ``location``, ``room``, ``group`` (``location/room``),
    ``sensor``, ``value``. ``truth``: ``time`` (nominal, ns), ``location``, ``room``, ``group``,
    ``value``. ``noise_std`` and ``bias``: per sensor id."""

    readings: pl.DataFrame
    truth: pl.DataFrame
    noise_std: dict[str, float]
    bias: dict[str, float]
    interval_ns: int


def room_truth(
    rooms: int, n: int, interval_s: float, *, seed: int = 42, start_ns: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(times ``(n,)`` ns, true temperatures ``(rooms, n)``) with the simulator's climate model."""
    start = DEFAULT_START_NS if start_ns is None else int(start_ns)
    step = round(interval_s * NS)
    t = start + np.arange(n, dtype=np.int64) * step
    rng = np.random.default_rng([_seed(seed), 90, 1])
    room = np.arange(rooms) % len(ROOMS)
    base = _ROOM_TEMP[room] + rng.normal(0.0, 0.7, rooms)
    amp = _ROOM_AMP[room] * rng.uniform(0.7, 1.3, rooms)
    hod = (t % (24 * HOUR_NS)).astype(np.float64) / HOUR_NS
    diurnal = np.sin(2 * np.pi * (hod - 9.0) / 24.0)
    phi = math.exp(-interval_s / 600.0)
    eps = rng.normal(0.0, 0.4 * math.sqrt(1 - phi * phi), (rooms, n))
    ar = _ar1(eps, phi, rng.normal(0.0, 0.4, rooms))
    return t, base[:, None] + amp[:, None] * diurnal[None, :] + ar


def colocated_temperatures(
    *,
    rooms: int = 3,
    sensors: int = 4,
    duration_s: float = 7 * 86400.0,
    interval_s: float = 60.0,
    noise_std: Sequence[float] = (0.1, 0.2, 0.4, 0.8),
    bias_std: float = 0.0,
    outlier_rate: float = 0.0,
    outlier_size: float = 5.0,
    missing_rate: float = 0.0,
    jitter: float = 0.5,
    seed: int = 42,
    start_ns: int | None = None,
) -> Colocated:
    """``rooms`` rooms (in ``home-1``), each with ``sensors`` sensors sampling every
    ``interval_s``. Sensor ``j`` of every room has noise ``noise_std[j % len(noise_std)]`` and a
    bias drawn from ``N(0, bias_std)``; with probability ``outlier_rate`` a reading is off by
    ``±outlier_size`` x (1..2) °C, with ``missing_rate`` it is missing. ``jitter`` (fraction of the
    interval) spreads time stamps within their interval."""
    if rooms < 1 or sensors < 1 or not noise_std:
        raise ValueError("rooms, sensors and noise_std must be non-empty")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be within [0, 1)")
    n = max(1, math.ceil(duration_s / interval_s - 1e-9))
    t, truth = room_truth(rooms, n, interval_s, seed=seed, start_ns=start_ns)
    rng = np.random.default_rng([_seed(seed), 90, 2])
    std = np.array([float(noise_std[j % len(noise_std)]) for j in range(sensors)])
    bias = rng.normal(0.0, bias_std, (rooms, sensors)) if bias_std > 0 else np.zeros((rooms, sensors))
    shape = (rooms, sensors, n)
    noise = rng.normal(0.0, 1.0, shape) * std[None, :, None]
    value = truth[:, None, :] + bias[:, :, None] + noise
    if outlier_rate > 0:
        hit = rng.random(shape) < outlier_rate
        size = outlier_size * rng.uniform(1.0, 2.0, shape) * rng.choice([-1.0, 1.0], shape)
        value = np.where(hit, value + size, value)
    step = round(interval_s * NS)
    times = t[None, None, :] + (rng.uniform(0.0, jitter, shape) * step).astype(np.int64)
    keep = rng.random(shape) >= missing_rate if missing_rate > 0 else np.ones(shape, bool)
    room_names = [ROOMS[i % len(ROOMS)] + ("" if i < len(ROOMS) else f"-{i // len(ROOMS) + 1}") for i in range(rooms)]
    groups = [f"home-1/{r}" for r in room_names]
    sensor_ids = [[f"{g}/s{j + 1}" for j in range(sensors)] for g in groups]
    ri, si, ki = np.nonzero(keep)
    s_room = pl.Series("room", room_names, dtype=pl.Utf8)
    s_group = pl.Series("group", groups, dtype=pl.Utf8)
    s_sensor = pl.Series("sensor", [s for row in sensor_ids for s in row], dtype=pl.Utf8)
    readings = pl.DataFrame(
        {
            "time": times[ri, si, ki],
            "location": pl.repeat("home-1", ri.size, dtype=pl.Utf8, eager=True),
            "room": s_room.gather(ri),
            "group": s_group.gather(ri),
            "sensor": s_sensor.gather(ri * sensors + si),
            "value": value[ri, si, ki],
        }
    ).sort(["group", "sensor", "time"])
    rr = np.repeat(np.arange(rooms), n)
    truth_df = pl.DataFrame(
        {
            "time": np.tile(t, rooms),
            "location": pl.repeat("home-1", rr.size, dtype=pl.Utf8, eager=True),
            "room": s_room.gather(rr),
            "group": s_group.gather(rr),
            "value": truth.ravel(),
        }
    )
    return Colocated(
        readings=readings,
        truth=truth_df,
        noise_std={sensor_ids[r][j]: float(std[j]) for r in range(rooms) for j in range(sensors)},
        bias={sensor_ids[r][j]: float(bias[r, j]) for r in range(rooms) for j in range(sensors)},
        interval_ns=step,
    )


__all__ = ["Colocated", "colocated_temperatures", "room_truth"]
