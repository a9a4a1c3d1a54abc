"""The fixed evaluation dataset: the seeded simulator (16 devices in 2 homes, one reading per device
every 10 minutes, 14.5 days from 2026-02-24) written through the platform with a fixed clock
(2026-03-10T12:00Z, a Tuesday), the stream run over it (rollups, anomaly scores, alerts)."""

from __future__ import annotations

from pathlib import Path

from sensorium.ingest.simulator import SimConfig, Simulator
from sensorium.platform import Sensorium
from tests.conftest import FakeClock, make_settings

START_NS = 1_771_891_200_000_000_000  # 2026-02-24T00:00:00Z
DAYS = 14.5
NOW_NS = START_NS + int(DAYS * 86400) * 1_000_000_000  # 2026-03-10T12:00:00Z
SIM = SimConfig(devices=16, rate=1 / 600, duration_s=DAYS * 86400, seed=7, start_ns=START_NS)


def build(data_dir: Path, **settings: object) -> Sensorium:
    """A platform over the dataset (``background=False``, the clock fixed at :data:`NOW_NS`)."""
    kw: dict[str, object] = {"parse_workers": 0, "detect": {"quality": {"enabled": False}}}
    kw.update(settings)
    p = Sensorium(make_settings(data_dir, **kw), clock=FakeClock(NOW_NS), background=False)
    for ch in Simulator(SIM).chunks(86400):
        if ch.lines:
            p.write(ch.lines, source="sim")
    p.process_stream()
    p.flush(force=True)
    return p
