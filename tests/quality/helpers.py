"""Shared helpers for the quality tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from sensorium.config import QualitySettings
from sensorium.quality.validate import ValidationResult, Validator
from sensorium.schema import LINE, Point, points_to_batches

T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns
S = 1_000_000_000


def batch(points: Sequence[Point]) -> pa.Table:
    """One measurement's batch with ``_line`` 1..n, as the parser makes it."""
    tables = points_to_batches(points, now_ns=T0)
    assert len(tables) == 1
    t = next(iter(tables.values()))
    return t.append_column(LINE, pa.array(range(1, t.num_rows + 1), pa.int32()))


def pt(fields: dict[str, Any], tags: dict[str, str] | None = None, time: int = T0, m: str = "env") -> Point:
    return Point(m, tags if tags is not None else {"device_id": "d1"}, fields, time)


def run(points: Sequence[Point], now: int = T0, m: str = "env", **settings: Any) -> ValidationResult:
    v = Validator(QualitySettings(**settings), now=lambda: now)
    return v.validate(m, batch(points))


def col(result: ValidationResult, name: str) -> list[Any]:
    return result.valid[name].to_pylist()
