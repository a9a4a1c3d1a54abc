"""Line protocol: constants and types shared by the parser modules."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import numpy as np

TS_MAX = 9_223_372_036_854_775_806  # InfluxDB's range: int64 without its two lowest values
TS_MIN = -TS_MAX
I64_MIN, I64_MAX = -(2**63), 2**63 - 1
U64_MAX = 2**64 - 1

KINDS = ("float", "integer", "unsigned", "boolean", "string")
_K_FLOAT, _K_INT, _K_UINT, _K_BOOL, _K_STR = range(5)
_DTYPES = (np.float64, np.int64, np.uint64, np.bool_, None)
_TRUE = ("t", "T", "true", "True", "TRUE")
_FALSE = ("f", "F", "false", "False", "FALSE")
_BOOLS = {**dict.fromkeys(_TRUE, True), **dict.fromkeys(_FALSE, False)}
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_INT_RE = re.compile(r"-?[0-9]+")
_UINT_RE = re.compile(r"[0-9]+")

Known = Callable[[str], Mapping[str, str]] | Mapping[str, Mapping[str, str]]
"""Stored columns per measurement, ``{column: "tag" | field kind}`` (as
:meth:`SchemaRegistry.columns <sensorium.schema.SchemaRegistry.columns>` returns them)."""
