"""The registry: users, locations, rooms, devices, sensors, actuators, AI models and services,
their relations, the graph over them, and their tables in SQL (docs/registry.md).

    store = open_registry(settings.registry, data_dir)
    store.create("device", {"id": "dev-1", "room_id": "kitchen"})
    store.relate({"src": "alice", "rel": "OWNS", "dst": "home"})
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sensorium.registry.errors import Conflict, RegistryUnavailable
from sensorium.registry.rules import KINDS, PLURAL, RELATION_TYPES, RELATIONS
from sensorium.registry.scope import AccessScope

if TYPE_CHECKING:
    from sensorium.config import RegistrySettings
    from sensorium.registry.store import RegistryStore


def open_registry(
    settings: RegistrySettings,
    data_dir: Path,
    *,
    clock: Callable[[], int] = time.time_ns,
    read_only: bool = False,
) -> RegistryStore | None:
    """The registry store of a data directory (``[registry] url``, else
    ``data_dir/registry.sqlite``), migrated to head. ``read_only``: never migrate or create;
    None when there is no registry there yet."""
    from sensorium.registry.db import resolve_url
    from sensorium.registry.store import RegistryStore

    url = resolve_url(settings.url, data_dir)
    if read_only and not settings.url and not (Path(data_dir) / "registry.sqlite").exists():
        return None
    return RegistryStore(url, pg_schema=settings.pg_schema, clock=clock, migrate_on_open=not read_only)


__all__ = [
    "KINDS",
    "PLURAL",
    "RELATIONS",
    "RELATION_TYPES",
    "AccessScope",
    "Conflict",
    "RegistryUnavailable",
    "open_registry",
]
