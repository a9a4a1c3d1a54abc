"""Parsers that turn request bodies and files into batches (see :mod:`sensorium.schema`)."""

from __future__ import annotations

from sensorium.ingest.jsonreadings import parse_readings
from sensorium.ingest.lineprotocol import parse_lines, serialize_lines, serialize_points

__all__ = ["parse_lines", "parse_readings", "serialize_lines", "serialize_points"]
