"""The durable log: every accepted batch is appended and synced before it is acknowledged."""

from sensorium.log.wal import WAL, WALRecord

__all__ = ["WAL", "WALRecord"]
