"""What to simulate (:class:`SimConfig`), what came out (:class:`SimSummary`), time constants."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from sensorium.errors import ConfigError

DEFAULT_START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
NS = 1_000_000_000
HOUR_NS = 3600 * NS
DAY_NS = 24 * HOUR_NS

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
