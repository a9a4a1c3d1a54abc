"""Users, passwords (Argon2id), API and session tokens (hashed at rest), roles, per-location
access and the audit log (docs/security.md).

Kept light on purpose: the registry's models import :mod:`sensorium.auth.models` (its tables share
the registry's database), so nothing here imports the registry or the platform at import time.
"""

from __future__ import annotations

from sensorium.auth.principal import LOCAL, ROLES, Forbidden, Principal

__all__ = ["LOCAL", "ROLES", "Forbidden", "Principal"]
