"""The simulated fleet: devices, locations, rooms, kinds, their fields, units and domains."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from sensorium.ingest.sim.config import SimConfig

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
