"""One root exception; subclasses carry an HTTP status and context.

Views and commands just raise; the API and CLI translate at the edges
(see ``sensorium.api.app`` and ``sensorium.cli.main``).
"""

from __future__ import annotations

from typing import Any


class SensoriumError(Exception):
    """Root of every error Sensorium raises on purpose."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        out.update({k: v for k, v in self.context.items() if v is not None})
        return out


def check_page(limit: int, offset: int, max_limit: int) -> None:
    """The paging arguments of a list (400 with the allowed range otherwise)."""
    if not 1 <= limit <= max_limit:
        raise BadRequest(f"limit must be within 1..{max_limit}; got {limit}")
    if offset < 0:
        raise BadRequest(f"offset must be >= 0; got {offset}")


class ConfigError(SensoriumError):
    status = 400
    code = "invalid_config"


class BadRequest(SensoriumError):
    status = 400
    code = "invalid"


class ParseError(BadRequest):
    """A whole payload could not be read (not JSON, bad encoding, ...)."""

    code = "invalid_payload"


class PartialWriteError(BadRequest):
    """Some lines were rejected; the valid ones were stored (InfluxDB 3 semantics)."""

    code = "partial_write"


class TypeConflictError(BadRequest):
    code = "field_type_conflict"


class PayloadTooLarge(SensoriumError):
    status = 413
    code = "request_too_large"


class UnsupportedMediaType(SensoriumError):
    status = 415
    code = "unsupported_media_type"


class QueryError(BadRequest):
    code = "query_error"


class SandboxViolation(SensoriumError):
    status = 403
    code = "forbidden_sql"


class NotFound(SensoriumError):
    status = 404
    code = "not_found"


class Conflict(SensoriumError):
    """The request clashes with what exists (a name taken, a definition owned by a file)."""

    status = 409
    code = "conflict"


class WrongNode(SensoriumError):
    """The request belongs on another kind of node (a write sent to an api node)."""

    status = 421
    code = "misdirected"


class Unauthorized(SensoriumError):
    status = 401
    code = "unauthorized"


class TooManyRequests(SensoriumError):
    """Refused for now (too many failed logins, ...); ``retry_after_s`` says when to try again."""

    status = 429
    code = "too_many_requests"


class DataDirLocked(SensoriumError):
    status = 409
    code = "data_dir_locked"


class WALCorruption(SensoriumError):
    code = "wal_corruption"


class CacheUnavailable(SensoriumError):
    """The latest-value cache's server (Redis) cannot be reached."""

    status = 503
    code = "cache_unavailable"


class LogUnavailable(SensoriumError):
    """The log's server (NATS JetStream, ``log_backend = "nats"``) cannot be reached."""

    status = 503
    code = "log_unavailable"


class StoreUnavailable(SensoriumError):
    """The table store's server (PostgreSQL) cannot be reached."""

    status = 503
    code = "store_unavailable"
