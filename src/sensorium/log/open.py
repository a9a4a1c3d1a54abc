"""Open the log the settings name (``log_backend``): the embedded WAL or NATS JetStream.

A data directory written through JetStream remembers it (file ``LOG_BACKEND``; none means WAL): the lake and the stream runner key
their idempotence on log offsets, and WAL offsets and JetStream sequences are different counters,
so switching a data directory from one to the other would skip or re-apply records. It is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sensorium.config import Settings
from sensorium.errors import ConfigError
from sensorium.log.wal import WAL

if TYPE_CHECKING:
    from sensorium.log.nats import JetStreamLog

MARKER = "LOG_BACKEND"


def nats_layout(settings: Settings) -> dict[str, object]:
    """How the platform spreads records over the stream's partitions (checked by every process)."""
    return {"partitions": settings.nats_partitions, "device_tag": settings.cluster.device_tag}


def backend_id(settings: Settings) -> str:
    if settings.log_backend == "nats":
        return f"nats stream={settings.nats_stream}"
    return "wal"


def open_log(
    settings: Settings,
    data_dir: Path,
    *,
    on_fsync: Callable[[float], None] | None = None,
    read_only: bool = False,
) -> WAL | JetStreamLog:
    """The configured :class:`~sensorium.log.base.Log` for ``data_dir``."""
    want = backend_id(settings)
    marker = data_dir / MARKER
    if marker.exists():
        have = marker.read_text().strip()
    elif (data_dir / "wal").exists():
        have = "wal"  # a data directory from before the marker
    else:
        have = want
    if have != want:
        raise ConfigError(
            f"data directory {data_dir} was written with log backend '{have}', configured is "
            f"'{want}': offsets of one log mean nothing in the other; use a new data directory "
            "(or drain and move the old one away)",
            configured=want,
            found=have,
        )
    if not read_only and want != "wal" and not marker.exists():
        marker.write_text(want + "\n")  # the default (WAL) writes nothing: no change for it
    if settings.log_backend == "nats":
        from sensorium.log.nats import JetStreamLog

        return JetStreamLog(
            settings.nats_url, settings.nats_stream, partitions=settings.nats_partitions,
            replicas=settings.nats_replicas,
            layout=nats_layout(settings),
        )
    return WAL(data_dir / "wal", settings.wal, on_fsync=on_fsync, read_only=read_only)
