"""Registry errors (each with its HTTP status; the API's one handler turns them into JSON)."""

from __future__ import annotations

from sensorium.errors import SensoriumError


class Conflict(SensoriumError):
    """The id (or relation) exists already, or a delete would orphan dependants."""

    status = 409
    code = "conflict"


class RegistryUnavailable(SensoriumError):
    """The registry's database (PostgreSQL) cannot be reached."""

    status = 503
    code = "registry_unavailable"


__all__ = ["Conflict", "RegistryUnavailable"]
