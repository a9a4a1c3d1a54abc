"""Everything the agent reads or does goes through one :class:`AgentContext`: the seam of access.

It is made for the asking :class:`~sensorium.auth.principal.Principal` (None: unrestricted — the
CLI on this machine, authentication off) and every agent path — the embedded parser, the LLM's
tools, commands, automation drafts — reads and acts through it, so a user or guest sees only
what their access scope holds:

* :meth:`query` runs through the query engine's scoped views (telemetry of their devices, the
  registry tables of what they may see); the vocabulary is built through it, so names of rooms
  and devices outside the scope are unknown to the agent;
* :meth:`alerts` lists the alerts of their devices; :meth:`forecast` forecasts only series all
  of whose devices they may see;
* :meth:`send_command` and :meth:`save_automation` need write access (not a guest) and every
  target device in scope.

Reads are read-only by construction: SQL goes through :meth:`Sensorium.query` (one sandboxed
SELECT over this bucket's tables; see ``query/sandbox.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sensorium.auth.principal import Forbidden, Principal
from sensorium.errors import NotFound

if TYPE_CHECKING:
    from sensorium.automations.model import Automation
    from sensorium.config import Settings
    from sensorium.devices.commands import CommandPublisher
    from sensorium.platform import Sensorium


def who(p: Principal | None) -> str | None:
    """Whom interactions are recorded for: the user id (or ``auth_token``); None when nobody in
    particular asks (the CLI, authentication off)."""
    if p is None or p.via == "local":
        return None
    return p.user_id or p.id


class AgentContext:
    """One user's view of the platform for one agent call."""

    def __init__(
        self,
        platform: Sensorium,
        principal: Principal | None = None,
        *,
        bucket: str | None = None,
        publisher: Callable[[], CommandPublisher] | None = None,
    ) -> None:
        self.platform = platform
        self.principal = principal
        self.bucket = bucket or platform.settings.default_bucket
        self._publisher = publisher

    @property
    def who(self) -> str | None:
        return who(self.principal)

    @property
    def restricted(self) -> bool:
        return self.principal is not None and self.principal.restricted

    @property
    def scope_key(self) -> Any:
        """What the vocabulary depends on: the access scope (None: everything)."""
        return self.principal.scope if self.restricted and self.principal is not None else None

    def _check_device(self, device_id: str, what: str) -> None:
        p = self.principal
        if p is None:
            return
        p.require_write(what)
        if not p.allows_device(device_id):
            raise Forbidden(f"you may not {what} for device {device_id!r}: it is not among your devices",
                            role=p.role)

    # -- reading ---------------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        return self.platform.settings

    def now(self) -> int:
        return int(self.platform.clock())

    def measurements(self) -> list[str]:
        self.platform.process_pending()
        return self.platform.measurements(self.bucket)

    def columns(self, measurement: str) -> dict[str, str]:
        return dict(self.platform.registry.columns(self.bucket, measurement))

    def derived_tables(self) -> set[str]:
        derived = self.platform.engine.derived
        return set(derived.names(self.bucket)) if derived is not None else set()

    def query(self, sql: str) -> pa.Table:
        """A read-only SELECT through the platform's sandbox, over the principal's views."""
        return self.platform.query(sql, self.bucket, principal=self.principal)

    def alerts(self, since_ns: int | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        if self.platform.alerts is None:
            raise NotFound("alerts are not available here (the stream is off)")
        return self.platform.list_alerts(principal=self.principal, since_ns=since_ns, limit=limit)

    def forecast(self, measurement: str, fld: str, tags: dict[str, str], horizon: str) -> pa.Table:
        from sensorium.detect.forecast import forecast_series

        self.platform.check_series_scope(self.principal, measurement, tags, self.bucket)
        return forecast_series(self.platform, measurement, fld, tags=tags, horizon=horizon,
                               bucket=self.bucket, model="ets")

    # -- acting ----------------------------------------------------------------------------------
    def send_command(self, device_id: str, command: str, params: dict[str, Any]) -> dict[str, Any]:
        self._check_device(device_id, "send commands")
        if self._publisher is None:
            from sensorium.devices.commands import publisher_for

            pub = publisher_for(self.platform.dir, self.settings.commands, self.platform.clock)
        else:
            pub = self._publisher()
        return pub.send_sync(device_id, command, params)

    def save_automation(self, automation: Automation) -> dict[str, Any]:
        store = self.platform.automations
        if store is None:
            raise NotFound("automations are not enabled here ([automations] enabled = false)")
        if self.principal is not None:
            self.principal.require_write("save automations")
            for action in automation.definition().get("actions", []):
                if action.get("device_id") is not None:
                    self._check_device(action["device_id"], "save automations")
        return store.put(automation, create=True)


__all__ = ["AgentContext", "who"]
