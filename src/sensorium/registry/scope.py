"""What one user may see: the seam an access-control layer filters by.

:func:`sensorium.registry.graph.user_scope` computes it from the graph (what a user OWNS or
HAS_ACCESS to, and everything inside that: rooms of a location, devices of a room, sensors of a
device); :meth:`RegistryStore.session` applies it to every ORM query of a session; the SQL
tables (:mod:`sensorium.registry.sql`) filter by it; telemetry is filtered by
:attr:`AccessScope.devices` (the ``device_id`` tag).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AccessScope:
    """Entity ids a user may see, by kind. ``visible`` is all of them (and the user)."""

    user: str
    locations: frozenset[str] = frozenset()
    rooms: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    visible: frozenset[str] = field(default_factory=frozenset)

    def allows(self, entity_id: str) -> bool:
        return entity_id in self.visible


__all__ = ["AccessScope"]
