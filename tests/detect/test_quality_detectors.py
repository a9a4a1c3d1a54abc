"""Data-quality detectors (stuck, spike, dropout, drift): planted faults are found, clean data is
quiet, results do not depend on batch cuts or a state round trip, findings reach the report and
the stream's ``quality_findings`` table."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorium.detect.quality import (
    FINDINGS_SCHEMA,
    TABLE,
    QualityConfig,
    QualityStage,
    empty_findings,
)
from sensorium.platform import Sensorium
from sensorium.quality.deadletters import DeadLetterStore
from sensorium.quality.report import quality_report, render_report
from tests.conftest import FakeClock, make_settings

NS = 1_000_000_000
T0 = 1_767_225_600_000_000_000
N = 2400  # 40 minutes at 1 Hz
DEVICES = ("d1", "d2", "d3", "d4")


def _series_key(dev: str) -> str:
    return f"climate,device_id={dev},location=home-1,room=kitchen"


def _fleet(seed: int = 1, n: int = N) -> dict[str, dict[str, np.ndarray]]:
    """Clean signals of four co-located climate sensors: a shared, slowly wandering temperature
    (own offset and noise per device, 0.01 resolution), humidity (white noise, 0.1), a motion
    flag (0/1, mostly 0) and an energy counter (kWh, rises in steps of 0.0001)."""
    rng = np.random.default_rng(seed)
    common = 21.0 + np.cumsum(rng.normal(0.0, 0.02, n))
    out: dict[str, dict[str, np.ndarray]] = {}
    for i, dev in enumerate(DEVICES):
        t = T0 + np.arange(n, dtype=np.int64) * NS + rng.integers(0, 40_000_000, n) + i * 1000
        own = np.cumsum(rng.normal(0.0, 0.005, n))
        out[dev] = {
            "time": t,
            "temperature": np.round(common + 0.7 * i + own + rng.normal(0.0, 0.03, n), 2),
            "humidity": np.round(45.0 + 3 * i + rng.normal(0.0, 0.8, n), 1),
            "motion": (rng.random(n) < 0.05).astype(np.float64),
            "energy": np.round(100.0 + i + np.arange(n) * 3e-5, 4),
        }
    return out


def _frames(fleet: dict[str, dict[str, np.ndarray]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Values frame in arrival order (by time across devices) and the series frame."""
    parts = []
    for dev, cols in fleet.items():
        keep = ~np.isnan(cols["temperature"])  # NaN marks a dropped reading (dropout)
        for f in ("temperature", "humidity", "motion", "energy"):
            parts.append(
                pl.DataFrame(
                    {
                        "series": _series_key(dev),
                        "field": f,
                        "time": cols["time"][keep],
                        "value": cols[f][keep],
                    }
                )
            )
    values = (
        pl.concat(parts)
        .sort("time", maintain_order=True)
        .with_columns((pl.col("time") + 200_000_000).alias("arrival"))
    )
    series = pl.DataFrame(
        {
            "series": [_series_key(d) for d in DEVICES],
            "bucket": "default",
            "measurement": "climate",
            "device_id": list(DEVICES),
            "location": "home-1",
            "room": "kitchen",
        }
    )
    return values, series


def _config(**kw: object) -> QualityConfig:
    return QualityConfig(peer_tags=("location", "room"), drift_min_buckets=60, **kw)  # type: ignore[arg-type]


def _run(values: pl.DataFrame, series: pl.DataFrame, cuts: list[int] | None = None,
         roundtrip: bool = False, **kw: object) -> pl.DataFrame:
    stage = QualityStage(_config(**kw))
    out = []
    bounds = [0, *sorted(set(cuts or [])), values.height]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b > a:
            out.append(stage.process(values.slice(a, b - a), series)[TABLE])
            if roundtrip:
                again = QualityStage(_config(**kw))
                again.restore(pickle.loads(pickle.dumps(stage.state())))
                stage = again
    return pl.concat(out).sort(["series", "field", "check", "time", "status"], nulls_last=True)


def _with_faults(seed: int = 1) -> dict[str, dict[str, np.ndarray]]:
    fl = _fleet(seed)
    d1, d2, d3 = fl["d1"], fl["d2"], fl["d3"]
    d1["temperature"][1200:1240] = d1["temperature"][1200]  # stuck: 40 points
    d1["temperature"][1199] = d1["temperature"][1200] - 0.2
    d2["temperature"][1500] += 30.0  # one-point spike
    d2["humidity"][1700:1702] -= 40.0  # two-point spike
    d2["humidity"][2000:] += 30.0  # a level shift: not a spike
    for f in ("temperature", "humidity"):
        d3[f][1800:1820] = np.nan  # dropout: 20 readings lost
    ramp = np.concatenate([np.linspace(0.1, 3.0, 60), np.full(60, 3.0)])
    fl["d4"]["temperature"][1400:1520] += ramp  # drift against its peers
    return fl


def _of(found: pl.DataFrame, check: str) -> pl.DataFrame:
    rows = found.filter(pl.col("check") == check)
    closed = rows.filter(pl.col("status") == "closed")
    return closed if closed.height else rows


# --------------------------------------------------------------------------- clean data


def test_clean_data_gives_no_findings() -> None:
    values, series = _frames(_fleet(2))
    found = _run(values, series)
    assert found.height == 0, found.select("series", "field", "check", "reason").to_dicts()


def test_output_schema() -> None:
    values, series = _frames(_with_faults())
    found = _run(values, series)
    assert found.schema == pl.Schema(FINDINGS_SCHEMA)
    assert empty_findings().schema == pl.Schema(FINDINGS_SCHEMA)
    assert set(found.get_column("check").unique()) <= {"stuck", "spike", "dropout", "drift"}
    assert found.get_column("score").is_between(0.0, 1.0).all()
    assert found.get_column("reason").str.len_chars().min() > 20  # type: ignore[operator]


# --------------------------------------------------------------------------- planted faults


def test_stuck_run_is_one_finding() -> None:
    fl = _with_faults()
    values, series = _frames(fl)
    found = _run(values, series)
    stuck = found.filter(pl.col("check") == "stuck")
    t = fl["d1"]["time"]
    # an open row when the run became long enough, a closed row when it ended; same start
    assert stuck.get_column("status").to_list() == ["closed", "open"]
    assert stuck.get_column("series").unique().to_list() == [_series_key("d1")]
    assert set(stuck.get_column("time")) == {int(t[1200])}
    closed = stuck.filter(pl.col("status") == "closed").row(0, named=True)
    assert closed["end_time"] == int(t[1239]) and closed["points"] == 40
    assert closed["value"] == fl["d1"]["temperature"][1200]
    opened = stuck.filter(pl.col("status") == "open").row(0, named=True)
    assert opened["end_time"] is None and 5 <= opened["points"] < 40


def test_spikes_found_and_level_shift_is_not_one() -> None:
    fl = _with_faults()
    values, series = _frames(fl)
    spikes = _of(_run(values, series), "spike")
    t = fl["d2"]["time"]
    got = {(r["field"], r["time"], r["end_time"], r["points"]) for r in spikes.iter_rows(named=True)}
    assert got == {
        ("temperature", int(t[1500]), int(t[1500]), 1),
        ("humidity", int(t[1700]), int(t[1701]), 2),
    }
    assert spikes.filter(pl.col("field") == "temperature").get_column("value").item() == pytest.approx(
        fl["d2"]["temperature"][1500]
    )


def test_dropout_found_when_data_resumes() -> None:
    fl = _with_faults()
    values, series = _frames(fl)
    drops = _of(_run(values, series), "dropout")
    t = fl["d3"]["time"]
    assert drops.height == 1
    r = drops.row(0, named=True)
    assert r["series"] == _series_key("d3") and r["field"] is None
    assert (r["time"], r["end_time"]) == (int(t[1799]), int(t[1820]))
    assert r["points"] == 20 and r["value"] == pytest.approx((t[1820] - t[1799]) / NS)


def test_dropout_tick_reports_a_silent_series_once() -> None:
    values, series = _frames(_fleet(3))
    stage = QualityStage(_config())
    stage.process(values.filter(pl.col("series") != _series_key("d1")), series)
    early = values.filter(pl.col("series") == _series_key("d1")).filter(pl.col("time") < T0 + 1000 * NS)
    stage.process(early, series)  # d1 stops after 1000 s; the others go on to 2400 s
    last = int(early.get_column("time").max())  # type: ignore[arg-type]
    assert stage.tick(last + 30 * NS)[TABLE].height == 0  # under dropout_tick_min_silence_s
    out = stage.tick(last + 120 * NS)[TABLE]
    assert out.get_column("series").to_list() == [_series_key("d1")]
    row = out.row(0, named=True)
    assert (row["check"], row["status"], row["time"], row["end_time"]) == ("dropout", "open", last, None)
    assert stage.tick(last + 180 * NS)[TABLE].height == 0  # reported once per silence


def test_drift_against_peers_blames_the_drifting_sensor_only() -> None:
    fl = _with_faults()
    values, series = _frames(fl)
    drift = _of(_run(values, series), "drift")
    # d4's temperature ramp, and d2's humidity level shift (not a spike, but a drift from its peers)
    assert set(drift.select("series", "field").iter_rows()) == {
        (_series_key("d4"), "temperature"),
        (_series_key("d2"), "humidity"),
    }
    t = fl["d4"]["time"]
    r = drift.filter(pl.col("field") == "temperature").row(0, named=True)
    assert t[1400] - 20 * NS <= r["time"] <= t[1519] and r["value"] > 1.0
    assert r["end_time"] is None or r["end_time"] <= t[1519] + 30 * NS


def test_drift_needs_peers() -> None:
    fl = _with_faults()
    values, series = _frames({"d4": fl["d4"], "d1": fl["d1"]})  # one peer only
    assert _of(_run(values, series), "drift").height == 0


def test_binary_and_counter_fields_are_not_checked_for_stuck() -> None:
    fl = _fleet(4)
    rng = np.random.default_rng(9)
    motion = (rng.random(N) < 0.5).astype(np.float64)
    motion[1500:1560] = 0.0  # nobody there for a minute: a 0/1 flag, not a stuck sensor
    fl["d1"]["motion"] = motion
    use = np.full(N, 1e-3)
    use[1000:1030] = 0.0  # the meter's counter does not move while nothing draws power
    fl["d2"]["energy"] = np.round(100.0 + np.cumsum(use), 4)
    values, series = _frames(fl)
    found = _run(values, series)
    assert found.filter(pl.col("field").is_in(["motion", "energy"])).height == 0
    # with the exclusions off, the same runs are (improbable enough to be) flagged
    loose = _of(_run(values, series, exclude_binary=False, exclude_counters=False), "stuck")
    assert set(loose.get_column("field")) == {"motion", "energy"}


# --------------------------------------------------------------------------- batches and state


@pytest.fixture(scope="module")
def faulty() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    values, series = _frames(_with_faults())
    return values, series, _run(values, series)


def test_one_batch_equals_many_batches_and_state_round_trip(
    faulty: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    values, series, whole = faulty
    assert set(whole.get_column("check")) == {"stuck", "spike", "dropout", "drift"}
    step = values.height // 97
    many = _run(values, series, cuts=list(range(step, values.height, step)), roundtrip=True)
    assert many.equals(whole)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(min_value=1, max_value=38_000), min_size=1, max_size=25))
def test_batch_cuts_do_not_change_findings(
    faulty: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame], cuts: list[int]
) -> None:
    values, series, whole = faulty
    assert _run(values, series, cuts=[c for c in cuts if c < values.height]).equals(whole)


def test_state_is_plain_data_and_restores_into_a_fresh_stage(
    faulty: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame],
) -> None:
    values, series, _ = faulty
    stage = QualityStage(_config())
    stage.process(values.slice(0, values.height // 2), series)
    state = stage.state()
    for k, v in state.items():
        assert isinstance(v, np.ndarray | list | dict | int), (k, type(v))
    again = QualityStage(_config())
    again.restore(pickle.loads(pickle.dumps(state)))
    rest = values.slice(values.height // 2)
    a = stage.process(rest, series)[TABLE]
    b = again.process(rest, series)[TABLE]
    assert a.equals(b)
    # a state written with other window sizes is not reused
    other = QualityStage(_config(spike_window=21))
    other.restore(state)
    assert len(other.state()["key_series"]) == 0


# --------------------------------------------------------------------------- report and runner


def test_report_includes_findings(
    tmp_path: Path, faulty: tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]
) -> None:
    _, _, found = faulty
    store = DeadLetterStore(tmp_path / "dl.sqlite")
    try:
        plain = quality_report(store)
        rep = quality_report(store, findings=found)
        assert {k: v for k, v in rep.items() if k != "findings"} == plain
        f = rep["findings"]
        once = found.unique(subset=["series", "field", "check", "time"])
        assert f["total"] == once.height and f["open"] == 0
        assert list(f["by_check"]) == ["stuck", "spike", "dropout", "drift"]
        assert f["by_check"]["stuck"] == {"count": 1, "open": 0, "devices": 1,
                                          "max_score": f["by_check"]["stuck"]["max_score"]}
        assert f["by_check"]["spike"]["count"] == 2 and f["by_check"]["dropout"]["devices"] == 1
        assert f["top_devices"][0]["device_id"] == "d2"
        assert f["top_devices"][0]["checks"] == {"spike": 2, "drift": 1}
        assert {e["check"] for e in f["examples"]} == {"stuck", "spike", "dropout", "drift"}
        assert f["examples"][0]["time"].endswith("Z") and f["examples"][0]["reason"]
        # the stored table's shape (tags instead of series, timestamps) gives the same summary
        stored = found.with_columns(
            pl.col("series").str.extract(r"device_id=([^,]+)", 1).alias("device_id"),
            pl.from_epoch(pl.col("time"), "ns").alias("time"),
        ).drop("series")
        assert quality_report(store, findings=stored.to_arrow())["findings"]["by_check"] == f["by_check"]
        from rich.console import Console

        buf = io.StringIO()
        for r in render_report(rep):
            Console(file=buf, width=160).print(r)
        assert "Data-quality findings" in buf.getvalue() and "stuck" in buf.getvalue()
    finally:
        store.close()


def test_runner_writes_the_quality_findings_table(tmp_path: Path) -> None:
    fl = _with_faults()
    lines = []
    for dev, cols in fl.items():
        for i in range(0, 1600):
            tv = cols["temperature"][i]
            if np.isnan(tv):
                continue
            lines.append(
                f"climate,device_id={dev},location=home-1,room=kitchen "
                f"temperature={tv},humidity={cols['humidity'][i]} {int(cols['time'][i])}"
            )
    lines.sort(key=lambda s: int(s.rsplit(" ", 1)[1]))
    clock = FakeClock(T0 + 3 * 3600 * NS)
    # the built-in stage off, a tuned one given as a pipeline instead
    p = Sensorium(make_settings(tmp_path / "data", detect={"quality": {"enabled": False}}), clock=clock,
                  background=False, pipelines=[QualityStage(_config())])
    try:
        for a in range(0, len(lines), 2000):
            p.write("\n".join(lines[a : a + 2000]))
        p.process_stream()
        p.stream.checkpoint()
        rows = p.query('SELECT device_id, field, "check", status FROM quality_findings ORDER BY ALL')
        got = set(map(tuple, (r.values() for r in rows.to_pylist())))
        assert ("d1", "temperature", "stuck", "closed") in got
        assert ("d2", "temperature", "spike", "closed") in got
    finally:
        p.close()


def _findings_with_cadence(data_dir: Path, interval: float) -> tuple[list[tuple[object, ...]], int]:
    fl = _with_faults()
    lines = []
    for dev, cols in fl.items():
        for i in range(0, 1600):
            tv = cols["temperature"][i]
            if not np.isnan(tv):
                lines.append(f"climate,device_id={dev} temperature={tv},humidity={cols['humidity'][i]} "
                             f"{int(cols['time'][i])}")
    lines.sort(key=lambda s: int(s.rsplit(" ", 1)[1]))
    p = Sensorium(make_settings(data_dir, detect={"quality": {"enabled": False}}, stream={"side_interval_s": interval}),
                  clock=FakeClock(T0 + 3 * 3600 * NS), background=False, pipelines=[QualityStage(_config())])
    try:
        st = p.stream
        assert st is not None
        for a in range(0, len(lines), 500):
            p.write("\n".join(lines[a : a + 500]))
            st.step()
        held = st._held_rows
        st.checkpoint()  # runs what is held first
        assert st._held_rows == 0
        rows = p.query("SELECT * EXCLUDE (measurement) FROM quality_findings ORDER BY ALL").to_pylist()
        return [tuple(r.values()) for r in rows], held
    finally:
        p.close()


def test_quality_checks_on_a_slower_cadence_find_the_same(tmp_path: Path) -> None:
    """``stream.side_interval_s``: the checks hold what arrives and run on it when due or before
    a tick or checkpoint — the findings are those of running on every micro-batch."""
    every, held_every = _findings_with_cadence(tmp_path / "a", 0.0)
    slow, held_slow = _findings_with_cadence(tmp_path / "b", 3600.0)
    assert held_every == 0 and held_slow > 0  # a long interval: nothing ran before the checkpoint
    assert slow == every
    assert any("stuck" in r for r in every) and any("spike" in r for r in every)
