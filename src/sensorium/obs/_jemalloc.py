"""Polars' allocator: hand freed pages back at once (set before Polars is first imported).

Polars bundles jemalloc, which keeps freed pages resident for reuse and hands them back
gradually (Polars sets ``dirty_decay_ms:500,muzzy_decay_ms:1000``). The stream frees and
reallocates its per-step frames every second or two, so the pages of one step's frames were
still held when the next step's peak came: at 100 k series ~50 MB of the process's peak resident
memory (``bench/bench_stream.py --mode memory``: 1,009–1,014 MB peak with Polars' setting, 983 MB
with ``dirty_decay_ms:1000,muzzy_decay_ms:0``, 961 MB with no decay; throughput unchanged within
noise, docs/benchmarks.md session 11).

jemalloc reads its options once, when Polars loads, from ``_RJEM_MALLOC_CONF`` (the variable of
its prefixed build; Polars appends it to its own, and the later option wins); importing
:mod:`sensorium` sets it unless it is set already or ``SENSORIUM_MALLOC_TUNE=0``. A process that
imported Polars before Sensorium keeps Polars' setting. Child processes (parse workers) inherit
the variable. The deltalake wheel bundles a jemalloc of the same build that reads the same
variable, so the lake's delta-rs paths (merging writes, compaction) run without decay too; the
memory bench above includes them.
"""

from __future__ import annotations

import os
import sys

CONF_VAR = "_RJEM_MALLOC_CONF"
CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"


def configure_polars_allocator() -> bool:
    """Set Polars' jemalloc options if it is not loaded yet and nobody chose; True when set."""
    if "polars" in sys.modules or CONF_VAR in os.environ:
        return False
    if os.environ.get("SENSORIUM_MALLOC_TUNE", "").strip().lower() in ("0", "off", "false", "no"):
        return False
    os.environ[CONF_VAR] = CONF
    return True
