"""User-defined stages: a Pipeline (filter → map → window → aggregate → table/sink) inside the
platform, its output equal to a direct computation, exactly once across a restart."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from sensorium.platform import Sensorium
from sensorium.stream import Pipeline
from tests.conftest import T0, FakeClock, make_settings

NS = 1_000_000_000


def _comfort(seen: list[pl.DataFrame]) -> Pipeline:
    return (
        Pipeline("comfort")
        .filter(measurement="climate", field="temperature", room="kitchen")
        .map(lambda df: df.with_columns(value=pl.col("value") * 9 / 5 + 32))
        .window("5m")
        .aggregate("count", "mean", "max")
        .to_table("comfort_5m")
        .sink(seen.append)
    )


def _write(p: Sensorium, start: int, stop: int) -> None:
    lines = []
    for s in range(start, stop, 10):
        for dev, room in (("a", "kitchen"), ("b", "kitchen"), ("c", "hall")):
            lines.append(f"climate,device_id={dev},room={room} temperature={20 + (s % 70) / 10},humidity=40 {T0 + s * NS}")
    p.write("\n".join(lines))


def _expected(p: Sensorium) -> list[tuple]:
    rows = p.query(
        "SELECT time_bucket(INTERVAL '5 minutes', time) AS t, device_id, count(temperature) AS n, "
        "avg(temperature * 9 / 5 + 32) AS mean, max(temperature * 9 / 5 + 32) AS mx FROM climate "
        "WHERE room = 'kitchen' GROUP BY ALL ORDER BY ALL"
    )
    return [tuple(r.values()) for r in rows.to_pylist()]


def _got(p: Sensorium) -> list[tuple]:
    rows = p.query("SELECT time, device_id, count, mean, max FROM comfort_5m ORDER BY ALL")
    return [tuple(r.values()) for r in rows.to_pylist()]


def test_pipeline_windows_equal_direct_computation(data_dir: Path) -> None:
    clock = FakeClock(T0 + 3600 * NS)
    seen: list[pl.DataFrame] = []
    p = Sensorium(make_settings(data_dir), clock=clock, background=False, pipelines=[_comfort(seen)])
    try:
        _write(p, 0, 1800)
        clock.advance(3600)  # idle: every window finishes
        p.process_stream()
        got, want = _got(p), _expected(p)
        assert len(got) == len(want) == 2 * 6
        for g, w in zip(got, want, strict=True):
            assert g[:3] == w[:3] and g[3:] == pytest.approx(w[3:])
        assert sum(df.height for df in seen) == len(want)  # the sink saw every finished window
        assert {"hall"} & set(p.query("SELECT DISTINCT device_id FROM comfort_5m").column(0).to_pylist()) == set()
    finally:
        p.close()


def test_pipeline_state_survives_restart_exactly_once(data_dir: Path) -> None:
    clock = FakeClock(T0 + 3600 * NS)
    p = Sensorium(make_settings(data_dir), clock=clock, background=False, pipelines=[_comfort([])])
    _write(p, 0, 900)
    p.process_stream()
    p.close()  # windows 10:00-15:00 still open: their partial state is in the checkpoint
    p = Sensorium(make_settings(data_dir), clock=clock, background=False, pipelines=[_comfort([])])
    try:
        _write(p, 900, 1800)
        clock.advance(3600)
        p.process_stream()
        got, want = _got(p), _expected(p)
        assert len(got) == len(set((g[0], g[1]) for g in got)) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g[:3] == w[:3] and g[3:] == pytest.approx(w[3:])
    finally:
        p.close()


def test_pipeline_misuse_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="follows window"):
        Pipeline("x").aggregate("mean")
    with pytest.raises(ValueError, match="duration"):
        Pipeline("x").window("5 parsecs")
    with pytest.raises(ValueError, match="pipeline name"):
        Pipeline("no spaces please")


class _Counting:
    """A stage object of one's own: counts the batches it gets, and their columns."""

    def __init__(self, step_id: str, wants: bool | None) -> None:
        self.step_id = step_id
        self.calls: list[list[str]] = []
        if wants is not None:
            self.needs_values = lambda: wants

    def process(self, values: pl.DataFrame, series: pl.DataFrame) -> dict[str, pl.DataFrame]:
        self.calls.append(values.columns)
        return {}

    def tick(self, now_ns: int) -> dict[str, pl.DataFrame]:
        return {}

    def state(self) -> dict[str, object]:
        return {}

    def restore(self, state: dict[str, object]) -> None:
        pass


def test_stages_get_named_values_unless_they_need_none(data_dir: Path) -> None:
    """The stream frames values without names; a stage that reads them gets ``series`` and
    ``field`` (made once per step); one whose ``needs_values()`` is False is not called."""
    clock = FakeClock(T0 + 3600 * NS)
    plain, wanting, idle = _Counting("plain", None), _Counting("wanting", True), _Counting("idle", False)
    p = Sensorium(make_settings(data_dir), clock=clock, background=False, pipelines=[plain, wanting, idle])
    try:
        _write(p, 0, 600)
        p.process_stream()
        assert plain.calls and wanting.calls and not idle.calls
        for calls in (plain.calls, wanting.calls):
            assert all(c[:4] == ["series", "field", "time", "value"] for c in calls)
    finally:
        p.close()
