"""HTTP API (FastAPI): InfluxDB-compatible writes, JSON readings, SQL, quality, dead letters."""

from sensorium.api.app import create_app

__all__ = ["create_app"]
