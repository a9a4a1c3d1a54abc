"""Who is asking: a :class:`Principal` — a user (by token, session or password), the configured
admin ``auth_token``, or nobody in particular when authentication is off (:data:`LOCAL`).

Admins are unrestricted (``scope`` None). Users and guests carry the
:class:`~sensorium.registry.scope.AccessScope` of their user — what they OWN or HAS_ACCESS to and
everything inside — and everything they read is limited to it, below the API: the query engine
filters every telemetry view by ``scope.devices``, the registry tables and ORM sessions by
``scope.visible``, latest values, alerts and documents likewise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sensorium.errors import SensoriumError
from sensorium.registry.scope import AccessScope

Role = Literal["admin", "user", "guest"]
ROLES: tuple[Role, ...] = ("admin", "user", "guest")
Via = Literal["local", "auth_token", "token", "session", "password"]


class Forbidden(SensoriumError):
    """Authenticated, but not allowed to do this (the message says why)."""

    status = 403
    code = "forbidden"


@dataclass(frozen=True)
class Principal:
    """The caller. ``id`` names it in the audit log: the user id, ``auth_token`` or ``local``."""

    id: str
    role: Role
    via: Via
    user_id: str | None = None
    token_id: str | None = None
    scope: AccessScope | None = None  # None: unrestricted (an admin)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def restricted(self) -> bool:
        """Limited to an access scope (users and guests)."""
        return self.scope is not None

    @property
    def devices(self) -> frozenset[str] | None:
        """Device ids whose telemetry this principal may read (None: all)."""
        return None if self.scope is None else self.scope.devices

    def allows_device(self, device_id: str | None) -> bool:
        return self.scope is None or (device_id is not None and device_id in self.scope.devices)

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"only admins may {what} (you are {self.id!r}, role {self.role})",
                            role=self.role)

    def require_write(self, what: str = "change anything") -> None:
        if self.role == "guest":
            raise Forbidden(f"guests are read-only: {self.id!r} may not {what}", role=self.role)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "role": self.role, "via": self.via,
                                  "user_id": self.user_id, "token_id": self.token_id,
                                  "restricted": self.restricted}
        if self.scope is not None:
            out["scope"] = {"locations": sorted(self.scope.locations), "rooms": sorted(self.scope.rooms),
                            "devices": sorted(self.scope.devices)}
        return out


#: authentication is off (loopback quick start): every request may do everything
LOCAL = Principal(id="local", role="admin", via="local")
#: the configured ``auth_token``: an admin
ADMIN_TOKEN = Principal(id="auth_token", role="admin", via="auth_token")


__all__ = ["ADMIN_TOKEN", "LOCAL", "ROLES", "Forbidden", "Principal", "Role", "Via"]
