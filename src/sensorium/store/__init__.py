"""Storage: the in-memory hot buffer and Delta Lake tables."""

from sensorium.store.hot import HotBuffer
from sensorium.store.lake import Lake

__all__ = ["HotBuffer", "Lake"]
