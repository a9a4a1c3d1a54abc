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

Without faults every value lies in its domain range (:data:`DOMAIN`); only ``out_of_range``
faults leave it (spikes jump far but stay inside, so they pass validation and reach the rules).

Labels (:data:`LABEL_SCHEMA`): one row per faulty value (``field`` set; stuck and drift stretches
give one row per point), per duplicated / out-of-order / late line (``field`` null), and per dropout
run (``time`` = first missing reading, ``end_time`` = last missing reading). A dropout label comes
with the chunk in which the run ends. Out-of-order and late lines are labelled only if they really
follow a later point in the output; late lines are emitted 1-10 minutes after their time and only
injected where that is within the simulated span.
"""

from __future__ import annotations

from sensorium.ingest.sim.config import DEFAULT_START_NS, SimConfig, SimSummary
from sensorium.ingest.sim.engine import SimChunk, Simulator
from sensorium.ingest.sim.faults import FAULTS, LABEL_SCHEMA
from sensorium.ingest.sim.fleet import ALL_FIELDS, DOMAIN, KIND_FIELDS, ROOMS, UNITS
from sensorium.ingest.sim.http import post

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
