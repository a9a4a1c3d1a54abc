"""Sensorium: an IoT telemetry platform in one package."""

__version__ = "0.1.0"

from sensorium.obs._jemalloc import configure_polars_allocator  # noqa: E402  (before Polars loads)

configure_polars_allocator()

from sensorium.config import Settings, load_settings  # noqa: E402
from sensorium.schema import Point  # noqa: E402

__all__ = ["Point", "Sensorium", "Settings", "__version__", "load_settings"]


def __getattr__(name: str) -> object:
    if name == "Sensorium":
        from sensorium.platform import Sensorium

        return Sensorium
    raise AttributeError(name)
