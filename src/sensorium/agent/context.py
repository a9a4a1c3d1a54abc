"""Everything the agent reads or does goes through one :class:`AgentContext`.

It is the seam for access control: today it passes every call straight to the platform (the
agent enforces NOTHING per user — ``principal`` is recorded with each interaction, no more). When
the registry's access layer lands (#6 part B), a subclass (or a ``scope``) restricts
:meth:`query` (a ``device_id IN (...)`` filter), :meth:`alerts`, :meth:`send_command` and the
vocabulary, and every agent path — embedded parser, LLM tools, commands — is restricted with it.

Reads are read-only by construction: SQL goes through :meth:`Sensorium.query` (one sandboxed
SELECT over this bucket's tables; see ``query/sandbox.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from sensorium.errors import NotFound

if TYPE_CHECKING:
    from sensorium.automations.model import Automation
    from sensorium.config import Settings
    from sensorium.devices.commands import CommandPublisher
    from sensorium.platform import Sensorium


class AgentContext:
    """One user's view of the platform for one agent call."""

    def __init__(
        self,
        platform: Sensorium,
        principal: str | None = None,
        *,
        bucket: str | None = None,
        publisher: Callable[[], CommandPublisher] | None = None,
    ) -> None:
        self.platform = platform
        self.principal = principal
        self.bucket = bucket or platform.settings.default_bucket
        self._publisher = publisher

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
        """A read-only SELECT through the platform's sandbox."""
        return self.platform.query(sql, self.bucket)

    def alerts(self, since_ns: int | None = None, limit: int = 10_000) -> list[dict[str, Any]]:
        if self.platform.alerts is None:
            raise NotFound("alerts are not available here (the stream is off)")
        return self.platform.alerts.list(since_ns=since_ns, limit=limit)

    def forecast(self, measurement: str, fld: str, tags: dict[str, str], horizon: str) -> pa.Table:
        from sensorium.detect.forecast import forecast_series

        return forecast_series(self.platform, measurement, fld, tags=tags, horizon=horizon,
                               bucket=self.bucket, model="ets")

    # -- acting ----------------------------------------------------------------------------------
    def send_command(self, device_id: str, command: str, params: dict[str, Any]) -> dict[str, Any]:
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
        return store.put(automation, create=True)


__all__ = ["AgentContext"]
