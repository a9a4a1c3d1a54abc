"""Benchmark data: line protocol with a known number of field values, cached under bench/out/data.

Source ``auto`` (default) uses the project's simulator (``sensorium.ingest.simulator``, run with
faults off) when it imports, else a built-in generator that writes the same shape of data:

* devices ``dev-00001``..., kinds in the simulator's pattern (climate, energy, climate, motion,
  climate, energy, climate, energy), ``location=home-K`` (one home per ~8 devices), eight rooms;
* ``climate``: temperature, humidity, pressure, battery, rssi (int) — 5 values per point;
  ``energy``: power, voltage, energy, rssi — 4 values; ``motion``: motion (bool), battery, rssi — 3;
* one reading per device per minute, starting 2026-01-01T00:00:00Z; the number of devices scales
  with the requested values so the span is always ~32-36 h (>= 1 day, for the query benchmark).

The built-in generator also lets ~2 % of devices fall silent 30 min before the end (so "devices
silent for 10 min" has an answer); the simulator without faults has no silent devices.

``python bench/_data.py --values 10000000`` prepares (or shows) a cached file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT_DIR, log  # noqa: E402

START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
STEP_S = 60
KIND_PATTERN = ("climate", "energy", "climate", "motion", "climate", "energy", "climate", "energy")
KIND_FIELDS = {
    "climate": ("temperature", "humidity", "pressure", "battery", "rssi"),
    "energy": ("power", "voltage", "energy", "rssi"),
    "motion": ("motion", "battery", "rssi"),
}
ROOMS = ("living_room", "kitchen", "bedroom", "bathroom", "office", "garage", "basement", "hallway")
VALUES_PER_READING = sum(len(KIND_FIELDS[k]) for k in KIND_PATTERN) / len(KIND_PATTERN)  # 4.375
DATA_VERSION = 1  # bump when the generator's output changes


@dataclass
class Dataset:
    path: Path
    source: str  # "simulator" or "builtin"
    seed: int
    devices: int
    lines: int
    points: int
    values: int
    start_ns: int  # earliest timestamp in the file
    end_ns: int  # latest timestamp in the file
    bytes: int
    measurements: dict[str, dict[str, Any]]  # name -> {"points", "values", "fields"}

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def fields_of(self, measurement: str) -> list[str]:
        return list(self.measurements.get(measurement, {}).get("fields", []))

    def measurement_with(self, field: str) -> str | None:
        """The measurement holding ``field`` (the first, by name), or None."""
        for m in sorted(self.measurements):
            if field in self.measurements[m]["fields"]:
                return m
        return None

    def describe(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["span_h"] = round((self.end_ns - self.start_ns) / 3.6e12, 2)
        return d


def plan(values: int) -> tuple[int, int]:
    """(devices, readings per device) for at least ``values`` field values over ~1.5 days."""
    per_day_and_half = VALUES_PER_READING * 2160
    devices = max(8, math.ceil(values / per_day_and_half / 8) * 8)
    readings = math.ceil(values / (devices * VALUES_PER_READING))
    return devices, readings


def simulator_available() -> bool:
    try:
        from sensorium.ingest.simulator import SimConfig, Simulator  # noqa: F401
    except Exception:
        return False
    return True


def dataset(values: int, seed: int = 1, source: str = "auto") -> Dataset:
    """A cached line-protocol file with >= ``values`` field values (generated on first use)."""
    if source == "auto":
        source = "simulator" if simulator_available() else "builtin"
    if source not in ("simulator", "builtin"):
        raise ValueError(f"unknown data source {source!r} (auto, simulator or builtin)")
    data_dir = OUT_DIR / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{source}-v{values}-s{seed}" + (f"-g{DATA_VERSION}" if source == "builtin" else "")
    path = data_dir / f"{stem}.lp"
    meta_path = data_dir / f"{stem}.meta.json"
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("bytes") == path.stat().st_size:
            meta["path"] = path
            return Dataset(**meta)
    devices, readings = plan(values)
    tmp = path.with_name(f"{stem}.tmp{os.getpid()}.lp")
    t0 = time.perf_counter()
    log(f"generating {source} data: {devices} devices x {readings} readings (>= {values:,} values) -> {path}")
    if source == "simulator":
        from sensorium.ingest.simulator import SimConfig, Simulator

        sim = Simulator(
            SimConfig(devices=devices, rate=1.0 / STEP_S, duration_s=readings * STEP_S, seed=seed, faults=False, start_ns=START_NS)
        )
        sim.write(tmp)
        labels = tmp.with_name(tmp.name + ".labels.csv")
        if labels.exists():
            labels.unlink()
    else:
        readings += 31  # make up for the devices that fall silent for the last 30 minutes
        _builtin_write(tmp, devices, readings, seed)
    ds = _scan(tmp, source, seed, devices)
    os.replace(tmp, path)
    ds.path = path
    meta = ds.describe()
    meta.pop("span_h")
    meta_path.write_text(json.dumps(meta, indent=1))
    log(f"data ready in {time.perf_counter() - t0:.1f}s: {ds.lines:,} lines, {ds.values:,} values, {ds.bytes / 1e6:.1f} MB")
    if ds.values < values:
        log(f"warning: only {ds.values:,} values (< {values:,} requested)")
    return ds


def _scan(path: Path, source: str, seed: int, devices: int) -> Dataset:
    """Count lines, points and values per measurement, and the time range (no escapes expected)."""
    ms: dict[str, dict[str, Any]] = {}
    lines = values = 0
    tmin, tmax = 1 << 62, -(1 << 62)
    with open(path, "rb") as fh:
        for raw in fh:
            raw = raw.rstrip(b"\n")
            if not raw or raw.startswith(b"#"):
                continue
            lines += 1
            head, fields, ts = raw.rsplit(b" ", 2)
            m = head.split(b",", 1)[0].decode()
            d = ms.get(m)
            if d is None:
                d = ms[m] = {"points": 0, "values": 0, "fields": []}
            keys = [kv.split(b"=", 1)[0].decode() for kv in fields.split(b",")]
            d["points"] += 1
            d["values"] += len(keys)
            values += len(keys)
            if len(keys) != len(d["fields"]) or keys != d["fields"]:
                for k in keys:
                    if k not in d["fields"]:
                        d["fields"].append(k)
            t = int(ts)
            if t < tmin:
                tmin = t
            if t > tmax:
                tmax = t
    return Dataset(
        path=path,
        source=source,
        seed=seed,
        devices=devices,
        lines=lines,
        points=lines,  # no duplicates without faults
        values=values,
        start_ns=tmin,
        end_ns=tmax,
        bytes=path.stat().st_size,
        measurements=ms,
    )


def _builtin_write(path: Path, devices: int, readings: int, seed: int) -> None:
    """The fallback generator (see the module docstring). Deterministic for a seed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    d = devices
    kinds = [KIND_PATTERN[i % len(KIND_PATTERN)] for i in range(d)]
    room_idx = rng.integers(0, len(ROOMS), d)
    n_loc = max(1, round(d / 8))
    loc = rng.permutation(d) % n_loc
    prefix = [
        f"{k},device_id=dev-{i + 1:05d},location=home-{int(loc[i]) + 1},room={ROOMS[int(room_idx[i])]},sensor_type={k} "
        for i, k in enumerate(kinds)
    ]
    phase_ns = rng.integers(0, STEP_S * 10**9, d)
    order = np.argsort(phase_ns, kind="stable")  # within a minute, devices report in phase order
    is_c = np.array([k == "climate" for k in kinds])
    is_e = np.array([k == "energy" for k in kinds])
    is_m = np.array([k == "motion" for k in kinds])
    base_t = np.array([21.0, 21.5, 19.0, 22.5, 21.0, 11.0, 15.0, 19.5])[room_idx]
    amp_t = np.array([1.5, 2.0, 1.2, 1.5, 1.8, 4.5, 0.8, 1.0])[room_idx]
    base_h = np.array([45.0, 55.0, 45.0, 65.0, 42.0, 60.0, 62.0, 45.0])[room_idx]
    base_p = (1013.0 + rng.normal(0, 4, n_loc))[loc]
    battery = rng.uniform(0.12, 1.0, d)
    drain = rng.uniform(0.5e-5, 4e-5, d)
    volt = np.where(rng.random(d) < 0.5, 12.0, 24.0)
    energy = rng.uniform(0, 2000, d)
    load = rng.uniform(40, 400, d)
    rssi_base = rng.normal(-68, 7, d)
    # ~2 % of devices (at least one) go silent 30 minutes before the end
    silent = np.zeros(d, dtype=bool)
    silent[rng.choice(d, max(1, d // 50), replace=False)] = True
    silent_after = readings - 30
    with open(path, "w", buffering=1 << 22) as fh:
        for k in range(readings):
            t_s = k * STEP_S
            day = 2 * np.pi * (t_s / 86400.0)
            temp = base_t + amp_t * np.sin(day - 1.5) + rng.normal(0, 0.25, d)
            hum = np.clip(base_h - 2 * np.sin(day - 1.5) + rng.normal(0, 1.0, d), 1, 99)
            pres = base_p + 2 * np.sin(day / 3) + rng.normal(0, 0.3, d)
            bat = np.clip(battery - drain * k, 0.02, 1.0)
            pw = np.maximum(0.0, load * (1 + 0.6 * np.sin(day * 2 + phase_ns / 1e10)) + rng.normal(0, 15, d))
            energy += pw * STEP_S / 3.6e6
            vv = volt + rng.normal(0, 0.05, d)
            rs = np.clip(np.round(rssi_base + rng.normal(0, 6, d)), -110, -30).astype(int)
            mo = rng.random(d) < 0.2
            ts = (START_NS + t_s * 10**9 + phase_ns).tolist()
            tl, hl, pl_, bl, rl = temp.tolist(), hum.tolist(), pres.tolist(), bat.tolist(), rs.tolist()
            pwl, vl, el, ml = pw.tolist(), vv.tolist(), energy.tolist(), mo.tolist()
            out = []
            for i in order.tolist():
                if silent[i] and k >= silent_after:
                    continue
                if is_c[i]:
                    f = f"temperature={tl[i]:.2f},humidity={hl[i]:.1f},pressure={pl_[i]:.1f},battery={bl[i]:.3f},rssi={rl[i]}i"
                elif is_e[i]:
                    f = f"power={pwl[i]:.1f},voltage={vl[i]:.2f},energy={el[i]:.4f},rssi={rl[i]}i"
                else:
                    assert is_m[i]
                    f = f"motion={'true' if ml[i] else 'false'},battery={bl[i]:.3f},rssi={rl[i]}i"
                out.append(f"{prefix[i]}{f} {ts[i]}\n")
            fh.write("".join(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--values", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source", default="auto", choices=["auto", "simulator", "builtin"])
    a = ap.parse_args()
    print(json.dumps(dataset(a.values, a.seed, a.source).describe()))


if __name__ == "__main__":
    main()
