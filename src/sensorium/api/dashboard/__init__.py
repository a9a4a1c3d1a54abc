"""The live web dashboard (served by ``sensorium up`` at ``/``): its static assets — plain HTML,
CSS and JavaScript modules, no build step, uPlot vendored under ``static/vendor/uplot`` with its
licence — and the server-side pieces its routes (:mod:`sensorium.api.dashboard_routes`) use."""

from __future__ import annotations

from pathlib import Path

from sensorium.api.dashboard._charts import LADDER_NS, device_charts, format_interval, pick_interval
from sensorium.api.dashboard._fleet import Overview, devices, registry_tree, search
from sensorium.api.dashboard._static import StaticFiles, is_loopback

STATIC_DIR = Path(__file__).resolve().parent / "static"

__all__ = [
    "LADDER_NS",
    "STATIC_DIR",
    "Overview",
    "StaticFiles",
    "device_charts",
    "devices",
    "format_interval",
    "is_loopback",
    "pick_interval",
    "registry_tree",
    "search",
]
