"""The webhook alert sink: an HTTP POST of each alert change (JSON) with an ``Idempotency-Key``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import httpx

from sensorium.config import WebhookSinkSettings
from sensorium.errors import ConfigError
from sensorium.rules._sink import DeliveryError

#: Characters of a webhook response body kept in an error.
BODY_EXCERPT = 200


class WebhookSink:
    """HTTP POST of the JSON payload with ``Idempotency-Key``. 2xx: delivered; 408, 429, 5xx,
    timeouts and connection errors: retried; any other status: dead at once."""

    def __init__(self, settings: WebhookSinkSettings, *, name: str | None = None) -> None:
        self.settings = settings
        try:
            url = httpx.URL(settings.url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"invalid webhook URL: {exc}") from None
        if url.scheme not in ("http", "https"):
            raise ConfigError(f"a webhook URL must be http or https, got {url.scheme!r}")
        digest = hashlib.blake2b(settings.url.encode(), digest_size=4).hexdigest()
        self.name = name or f"webhook:{digest}"
        self.target = str(url.copy_with(username=None, password=None, query=None, fragment=None))
        self.max_attempts = settings.max_attempts
        self.backoff_initial_s = settings.backoff_initial_s
        self.backoff_max_s = settings.backoff_max_s
        self._client = httpx.Client(timeout=settings.timeout_s, follow_redirects=False)

    def send(self, payload: Mapping[str, Any], body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": str(payload["key"]),
            "User-Agent": "sensorium-alerts",
        }
        try:
            r = self._client.post(self.settings.url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise DeliveryError(f"{self.target}: timeout ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{self.target}: {type(exc).__name__}: {exc}") from None
        if r.is_success:
            return
        excerpt = r.text[:BODY_EXCERPT]
        msg = f"{self.target}: HTTP {r.status_code}: {excerpt}"
        if r.status_code in (408, 429) or r.status_code >= 500:
            raise DeliveryError(msg, retry_after_s=_retry_after(r.headers.get("Retry-After")))
        raise DeliveryError(msg, permanent=True)

    def close(self) -> None:
        self._client.close()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the backoff is used
