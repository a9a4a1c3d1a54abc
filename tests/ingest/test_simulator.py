"""The device simulator: determinism, valid output, faithful labels, realism, formats, HTTP."""

from __future__ import annotations

import csv
import gzip
import itertools
import json
import math
import re
import threading
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

from sensorium.errors import ConfigError
from sensorium.ingest.simulator import (
    ALL_FIELDS,
    DEFAULT_START_NS,
    DOMAIN,
    FAULTS,
    KIND_FIELDS,
    LABEL_SCHEMA,
    SimConfig,
    Simulator,
    post,
)

NS = 1_000_000_000
VALUE_FAULTS = {"spike", "stuck", "drift", "unit_f", "out_of_range"}

# --------------------------------------------------------------------------- a tiny LP reader

_LINE_RE = re.compile(
    r"^(?P<m>climate|energy|motion)"
    r",device_id=(?P<dev>dev-\d{5}),location=(?P<loc>home-\d+),room=(?P<room>[a-z_]+)"
    r",sensor_type=(?P<st>climate|energy|motion)(?P<unit>,unit=degF)?"
    r" (?P<fields>[a-z]+=[^ ,]+(?:,[a-z]+=[^ ,]+)*) (?P<t>\d{19})$"
)
_FLOAT = re.compile(r"^-?\d+\.\d+$")
_INT = re.compile(r"^-?\d+i$")


@dataclass
class Line:
    """One parsed line (our own strict reader, independent of the project parser)."""

    raw: str
    measurement: str
    device: str
    location: str
    room: str
    unit_f: bool
    fields: dict[str, float | int | bool]
    time: int


def parse_line(raw: str) -> Line:
    m = _LINE_RE.match(raw)
    assert m, f"not valid line protocol: {raw!r}"
    assert m["m"] == m["st"]
    fields: dict[str, float | int | bool] = {}
    for kv in m["fields"].split(","):
        k, v = kv.split("=")
        if v in ("true", "false"):
            fields[k] = v == "true"
        elif _INT.match(v):
            fields[k] = int(v[:-1])
        else:
            assert _FLOAT.match(v), f"bad float {v!r} in {raw!r}"
            fields[k] = float(v)
    assert tuple(fields) == KIND_FIELDS[m["m"]], raw
    return Line(raw, m["m"], m["dev"], m["loc"], m["room"], bool(m["unit"]), fields, int(m["t"]))


def lines_of(sim: Simulator, chunk_seconds: float = 60.0) -> list[str]:
    text = "".join(c.lines for c in sim.chunks(chunk_seconds))
    assert text.endswith("\n")
    return text[:-1].split("\n")


def labels_of(sim: Simulator, chunk_seconds: float = 60.0) -> pl.DataFrame:
    tables = [c.labels for c in sim.chunks(chunk_seconds)]
    for t in tables:
        assert t.schema == LABEL_SCHEMA
    return pl.concat([pl.from_arrow(t) for t in tables])  # type: ignore[misc]


def in_domain(f: str, v: float) -> bool:
    if f not in DOMAIN:
        return True
    lo, hi = DOMAIN[f]
    return lo <= v <= hi


@pytest.fixture(scope="module")
def pair() -> tuple[list[Line], list[Line], pl.DataFrame]:
    """The same fleet with faults (high rate) and without: (faulty lines, clean lines, labels)."""
    cfg = SimConfig(devices=24, rate=1.0, duration_s=1800, seed=7, fault_rate=0.02)
    faulty = Simulator(cfg)
    clean = Simulator(SimConfig(devices=24, rate=1.0, duration_s=1800, seed=7, faults=False))
    return (
        [parse_line(x) for x in lines_of(faulty)],
        [parse_line(x) for x in lines_of(clean)],
        labels_of(faulty),
    )


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    cfg = SimConfig(devices=10, duration_s=120, seed=3, fault_rate=0.02)
    a = Simulator(cfg).write(tmp_path / "a.lp")
    b = Simulator(cfg).write(tmp_path / "b.lp")
    c = Simulator(SimConfig(devices=10, duration_s=120, seed=4, fault_rate=0.02)).write(
        tmp_path / "c.lp"
    )
    assert (tmp_path / "a.lp").read_bytes() == (tmp_path / "b.lp").read_bytes()
    assert (tmp_path / "a.lp.labels.csv").read_bytes() == (
        tmp_path / "b.lp.labels.csv"
    ).read_bytes()
    assert (tmp_path / "a.lp").read_bytes() != (tmp_path / "c.lp").read_bytes()
    assert (a.points, a.values, a.lines, a.faults) == (b.points, b.values, b.lines, b.faults)
    assert c.points > 0
    # one Simulator, iterated twice: a fresh pass each time
    sim = Simulator(cfg)
    assert lines_of(sim, 30) == lines_of(sim, 30)


def test_default_start_and_custom_start() -> None:
    first = parse_line(lines_of(Simulator(SimConfig(devices=3, duration_s=5)))[0])
    assert DEFAULT_START_NS <= first.time < DEFAULT_START_NS + NS
    start = 1_700_000_000_000_000_000
    lines = [
        parse_line(x)
        for x in lines_of(
            Simulator(SimConfig(devices=3, duration_s=5, start_ns=start, faults=False))
        )
    ]
    assert all(start <= x.time < start + 5 * NS for x in lines)


# --------------------------------------------------------------------------- format of the lines


def test_every_line_is_valid_line_protocol(
    pair: tuple[list[Line], list[Line], pl.DataFrame],
) -> None:
    faulty, clean, _ = pair
    assert len(faulty) > 30_000
    kinds = Counter(x.measurement for x in clean)
    assert set(kinds) == {"climate", "energy", "motion"}
    assert kinds["motion"] < kinds["energy"] < kinds["climate"]
    devs = {x.device: (x.measurement, x.location, x.room) for x in clean}
    assert len(devs) == 24
    for x in faulty:  # a device keeps its kind, location and room
        assert devs[x.device] == (x.measurement, x.location, x.room)
    assert len({x.location for x in clean}) == 3
    for x in faulty:
        assert isinstance(x.fields["rssi"], int)
        if "motion" in x.fields:
            assert isinstance(x.fields["motion"], bool)


def test_project_parser_accepts_everything(
    pair: tuple[list[Line], list[Line], pl.DataFrame],
) -> None:
    lp = pytest.importorskip("sensorium.ingest.lineprotocol")
    faulty, _, _ = pair
    res = lp.parse_lines("\n".join(x.raw for x in faulty) + "\n")
    assert res.rejects == []
    assert res.rows == len(faulty)
    assert set(res.batches) == {"climate", "energy", "motion"}


# --------------------------------------------------------------------------- labels vs. faults


def test_no_faults_means_no_labels_and_values_in_range() -> None:
    sim = Simulator(SimConfig(devices=16, duration_s=900, seed=11, faults=False))
    assert labels_of(sim).height == 0
    lines = [parse_line(x) for x in lines_of(sim)]
    assert len(lines) == 16 * 900
    assert len({x.raw for x in lines}) == len(lines)
    times = [x.time for x in lines]
    assert times == sorted(times)
    for x in lines:
        assert not x.unit_f
        for f, v in x.fields.items():
            assert in_domain(f, float(v)), x.raw


def test_value_faults_explain_every_difference(
    pair: tuple[list[Line], list[Line], pl.DataFrame],
) -> None:
    faulty, clean, labels = pair
    by_key = defaultdict(set)
    for r in labels.iter_rows(named=True):
        by_key[(r["time"], r["device_id"], r["field"])].add(r["fault"])
    clean_at = {(x.time, x.device): x for x in clean}
    changed = Counter()
    for x in faulty:
        ref = clean_at[(x.time, x.device)]  # every emitted point exists in the clean run
        for f, v in x.fields.items():
            got = by_key.get((x.time, x.device, f), set()) & VALUE_FAULTS
            assert len(got) <= 1, (x.raw, got)
            if v != ref.fields[f]:
                assert got, f"unlabelled change of {f}: {x.raw} vs {ref.raw}"
                changed[next(iter(got))] += 1
            if got == {"unit_f"}:
                assert x.unit_f and f == "temperature"
                assert v == pytest.approx(ref.fields[f] * 1.8 + 32, abs=0.02)
            if got in ({"spike"}, {"out_of_range"}):
                assert v != ref.fields[f]
            if got == {"out_of_range"}:
                assert not in_domain(f, float(v)), x.raw
            if not in_domain(f, float(v)):
                assert got & {"spike", "out_of_range"}, f"out of range without a label: {x.raw}"
        assert x.unit_f == ("unit_f" in by_key.get((x.time, x.device, "temperature"), set()))
    for fault in VALUE_FAULTS:
        assert changed[fault] > 20, changed


def test_stuck_values_repeat(pair: tuple[list[Line], list[Line], pl.DataFrame]) -> None:
    faulty, _, labels = pair
    stuck = labels.filter(pl.col("fault") == "stuck")
    series: dict[tuple[str, str], dict[int, Any]] = defaultdict(dict)
    for x in faulty:
        for f, v in x.fields.items():
            series[(x.device, f)][x.time] = v
    same = total = 0
    for (dev, f), grp in stuck.group_by(["device_id", "field"]):
        times = sorted(grp["time"].to_list())
        vals = [series[(dev, f)][t] for t in times]
        for (_, v0), (_, v1) in itertools.pairwise(zip(times, vals, strict=True)):
            total += 1
            same += v0 == v1
    assert total > 100
    assert same / total > 0.9


def test_drift_grows(pair: tuple[list[Line], list[Line], pl.DataFrame]) -> None:
    faulty, clean, labels = pair
    clean_at = {(x.time, x.device): x for x in clean}
    faulty_at = {(x.time, x.device): x for x in faulty}
    drift = labels.filter(pl.col("fault") == "drift")
    assert drift.height > 100
    deltas = [
        abs(
            faulty_at[(r["time"], r["device_id"])].fields[r["field"]]
            - clean_at[(r["time"], r["device_id"])].fields[r["field"]]
        )
        for r in drift.iter_rows(named=True)
    ]
    assert np.mean(np.array(deltas) > 0) > 0.9


def test_dropouts_match_missing_points(pair: tuple[list[Line], list[Line], pl.DataFrame]) -> None:
    faulty, clean, labels = pair
    seen = {(x.time, x.device) for x in faulty}
    missing = [(x.time, x.device) for x in clean if (x.time, x.device) not in seen]
    drops = labels.filter(pl.col("fault") == "dropout")
    assert drops.height >= 5
    assert drops["field"].null_count() == drops.height
    assert drops["end_time"].null_count() == 0
    spans = defaultdict(list)
    for r in drops.iter_rows(named=True):
        assert r["time"] <= r["end_time"]
        assert (r["time"], r["device_id"]) not in seen and (
            r["end_time"],
            r["device_id"],
        ) not in seen
        spans[r["device_id"]].append((r["time"], r["end_time"]))
    for t, dev in missing:
        assert any(a <= t <= b for a, b in spans[dev]), (
            f"{dev} silent at {t} without a dropout label"
        )
    for x in faulty:
        assert not any(a <= x.time <= b for a, b in spans[x.device]), x.raw
    # the label's ends are real readings of the clean run
    clean_keys = {(x.time, x.device) for x in clean}
    for r in drops.iter_rows(named=True):
        assert (r["time"], r["device_id"]) in clean_keys and (
            r["end_time"],
            r["device_id"],
        ) in clean_keys
    assert len(missing) > 0


def test_line_faults_match_labels(pair: tuple[list[Line], list[Line], pl.DataFrame]) -> None:
    faulty, clean, labels = pair
    counts = Counter(x.raw for x in faulty)
    dup_lines = {raw for raw, n in counts.items() if n > 1}
    dups = labels.filter(pl.col("fault") == "duplicate")
    assert dups.height == sum(n - 1 for n in counts.values()) > 50
    dup_keys = {(r["time"], r["device_id"]) for r in dups.iter_rows(named=True)}
    assert dup_keys == {(parse_line(raw).time, parse_line(raw).device) for raw in dup_lines}
    for i, x in enumerate(faulty[:-1]):  # the copy follows its original
        if counts[x.raw] > 1 and (i == 0 or faulty[i - 1].raw != x.raw):
            assert faulty[i + 1].raw == x.raw
    # out of order / late: exactly the lines emitted after a line with a later time
    t = np.array([x.time for x in faulty])
    prev_max = np.concatenate([[np.iinfo(np.int64).min], np.maximum.accumulate(t)[:-1]])
    behind = {
        (x.time, x.device): int(prev_max[i] - x.time)
        for i, x in enumerate(faulty)
        if prev_max[i] > x.time
    }
    ooo = {
        (r["time"], r["device_id"])
        for r in labels.filter(pl.col("fault") == "out_of_order").iter_rows(named=True)
    }
    late = {
        (r["time"], r["device_id"])
        for r in labels.filter(pl.col("fault") == "late").iter_rows(named=True)
    }
    assert len(ooo) > 50 and len(late) > 50
    assert ooo | late == set(behind)
    assert all(behind[k] >= 50 * NS for k in late)  # emitted minutes later
    assert all(behind[k] < 30 * NS for k in ooo)  # a few positions later
    # line faults do not lose or invent points
    assert {(x.time, x.device) for x in faulty} <= {(x.time, x.device) for x in clean}


@pytest.mark.parametrize("rate", [0.005, 0.02])
def test_every_fault_class_occurs_at_about_its_rate(rate: float) -> None:
    cfg = SimConfig(devices=20, duration_s=3600 if rate < 0.01 else 1200, seed=5, fault_rate=rate)
    sim = Simulator(cfg)
    labels = labels_of(sim, 600)
    counts = Counter(labels["fault"].to_list())
    assert set(counts) == set(FAULTS)
    points = cfg.devices * cfg.readings  # type: ignore[operator]
    climate = points * 10 / 20  # 10 of 20 devices
    per_point = {
        "duplicate": points,
        "out_of_order": points,
        "late": points,
        "out_of_range": points,
        "spike": points * 17 / 20,  # climate + energy devices
        "unit_f": climate,
    }
    for fault, n in per_point.items():
        expected = rate * n
        assert 0.5 * expected < counts[fault] < 1.6 * expected, (fault, counts[fault], expected)
    for fault in ("stuck", "drift"):  # points inside stretches: about the rate as well
        assert 0.3 * rate * points < counts[fault] < 3 * rate * points, (fault, counts[fault])
    assert counts["dropout"] >= 3


# --------------------------------------------------------------------------- streaming


def test_chunks_are_lazy_and_bounded() -> None:
    sim = Simulator(SimConfig(devices=50, rate=2.0, duration_s=1e9))
    t0 = time.perf_counter()
    chunks = list(itertools.islice(sim.chunks(10.0), 3))
    assert time.perf_counter() - t0 < 5
    for c in chunks:
        assert c.n_lines <= 50 * 20 * 1.1 + 50
    assert [c.index for c in chunks] == [0, 1, 2]
    endless = Simulator(SimConfig(devices=2, duration_s=math.inf))
    assert len(list(itertools.islice(endless.chunks(1.0), 5))) == 5


def _peak(n_chunks: int) -> int:
    sim = Simulator(SimConfig(devices=200, rate=1.0, duration_s=1e9))
    tracemalloc.start()
    try:
        for c in itertools.islice(sim.chunks(100.0), n_chunks):
            assert c.lines
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_length() -> None:
    short, long = _peak(3), _peak(30)
    assert long < 1.5 * short + 2_000_000, (short, long)


def test_state_carries_across_chunks() -> None:
    cfg = SimConfig(devices=8, duration_s=600, seed=9, faults=False)
    a = lines_of(Simulator(cfg), 600)
    b = lines_of(Simulator(cfg), 7)
    assert len(a) == len(b)
    pa_, pb = [parse_line(x) for x in a], [parse_line(x) for x in b]
    assert Counter(x.device for x in pa_) == Counter(x.device for x in pb)
    assert [x.time for x in pb] == sorted(x.time for x in pb)
    # energy keeps accumulating across chunk boundaries; temperature has no jumps there
    for lines in (pa_, pb):
        last: dict[str, Line] = {}
        for x in lines:
            p = last.get(x.device)
            if p is not None and "energy" in x.fields:
                assert x.fields["energy"] >= p.fields["energy"]
            if p is not None and "temperature" in x.fields:
                assert abs(x.fields["temperature"] - p.fields["temperature"]) < 1.0
            last[x.device] = x


# --------------------------------------------------------------------------- realism


@pytest.fixture(scope="module")
def two_days() -> list[Line]:
    sim = Simulator(SimConfig(devices=16, rate=1 / 60, duration_s=2 * 86400, seed=21, faults=False))
    return [parse_line(x) for x in lines_of(sim, 6 * 3600)]


def test_temperature_follows_the_day_and_humidity_opposes_it(two_days: list[Line]) -> None:
    per_dev: dict[str, list[Line]] = defaultdict(list)
    for x in two_days:
        if x.measurement == "climate":
            per_dev[x.device].append(x)
    assert len(per_dev) == 8
    corrs, hcorrs = [], []
    for rows in per_dev.values():
        temp = np.array([r.fields["temperature"] for r in rows])
        hum = np.array([r.fields["humidity"] for r in rows])
        hours = np.array([(r.time % (86400 * NS)) / (3600 * NS) for r in rows])
        corrs.append(np.corrcoef(temp, np.sin(2 * np.pi * (hours - 9) / 24))[0, 1])
        hcorrs.append(np.corrcoef(temp, hum)[0, 1])
        pres = np.array([r.fields["pressure"] for r in rows])
        assert 960 <= pres.min() and pres.max() <= 1060 and 990 < pres.mean() < 1035
    assert np.mean(corrs) > 0.6
    assert max(hcorrs) < 0


def test_energy_monotonic_battery_draining_power_cycles(two_days: list[Line]) -> None:
    per_dev: dict[str, list[Line]] = defaultdict(list)
    for x in two_days:
        per_dev[x.device].append(x)
    kettle = False
    for rows in per_dev.values():
        f = rows[0].fields
        if "energy" in f:
            e = np.array([r.fields["energy"] for r in rows])
            assert np.all(np.diff(e) >= 0) and e[-1] > e[0]
            p = np.array([r.fields["power"] for r in rows])
            assert p.min() > 0 and p.std() > 10  # appliance cycles, not a flat line
            kettle |= bool(p.max() > 1500)
            v = np.array([r.fields["voltage"] for r in rows])
            assert np.all((v > 10) & (v < 26))
        if "battery" in f:
            b = np.array([r.fields["battery"] for r in rows])
            assert b[-50:].mean() < b[:50].mean()
            assert np.all(np.diff(b) < 0.02)  # never recharges: only noise goes up
        r_ = np.array([r.fields["rssi"] for r in rows])
        assert -110 <= r_.min() and r_.max() <= -25
    assert kettle
    motion = [x.fields["motion"] for x in two_days if x.measurement == "motion"]
    assert 0 < sum(motion) < len(motion)


# --------------------------------------------------------------------------- files


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("sim")
    cfg = SimConfig(devices=12, duration_s=300, seed=2, fault_rate=0.02)
    sim = Simulator(cfg)
    out: dict[str, Any] = {"sim": sim}
    for ext in ("lp", "jsonl", "csv", "parquet"):
        out[ext] = sim.write(d / f"data.{ext}")
    return out


def test_write_lp_matches_chunks(written: dict[str, Any]) -> None:
    sim: Simulator = written["sim"]
    s = written["lp"]
    text = s.path.read_text()
    assert text == "".join(c.lines for c in sim.chunks(sim.default_chunk_seconds))
    assert s.lines == text.count("\n")
    assert s.points == s.lines - s.faults["duplicate"]
    assert s.values == sum(len(parse_line(x).fields) for x in set(text.splitlines()))
    assert set(s.faults) == set(FAULTS)


def test_labels_csv(written: dict[str, Any]) -> None:
    s = written["lp"]
    assert s.labels_path.name == "data.lp.labels.csv"
    with open(s.labels_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["time", "device_id", "measurement", "field", "fault", "end_time"]
    assert Counter(r["fault"] for r in rows) == {k: v for k, v in s.faults.items() if v}
    for r in rows:
        assert r["fault"] in FAULTS
        assert (r["end_time"] != "") == (r["fault"] == "dropout")
        assert (r["field"] == "") == (
            r["fault"] in ("dropout", "duplicate", "out_of_order", "late")
        )
    for ext in ("jsonl", "csv", "parquet"):  # the same labels whatever the format
        assert written[ext].labels_path.read_bytes() == s.labels_path.read_bytes()


def test_write_jsonl(written: dict[str, Any]) -> None:
    s = written["jsonl"]
    lp_lines = written["lp"].path.read_text().splitlines()
    recs = [json.loads(x) for x in s.path.read_text().splitlines()]
    assert s.lines == len(recs) == sum(len(parse_line(x).fields) for x in lp_lines)
    keys = [
        "device_id",
        "timestamp",
        "sensor_type",
        "measurement_type",
        "value",
        "unit",
        "location",
        "metadata",
    ]
    assert all(list(r) == keys for r in recs)
    assert re.fullmatch(r"2026-01-01T00:0\d:\d\d\.\d{9}Z", recs[0]["timestamp"])
    units = Counter((r["measurement_type"], r["unit"]) for r in recs)
    assert units[("temperature", "degF")] == sum(",unit=degF " in x for x in lp_lines) > 0
    assert {u for (f, u) in units if f == "humidity"} == {"%"}
    assert {u for (f, u) in units if f == "battery"} == {None}
    assert all(isinstance(r["value"], bool) for r in recs if r["measurement_type"] == "motion")
    assert all(isinstance(r["value"], int) for r in recs if r["measurement_type"] == "rssi")
    assert all(r["metadata"].keys() == {"room"} for r in recs)
    # same values, same order as the line protocol
    flat = [(p.device, f, v) for p in map(parse_line, lp_lines) for f, v in p.fields.items()]
    assert flat == [(r["device_id"], r["measurement_type"], r["value"]) for r in recs]


def test_write_csv_and_parquet(written: dict[str, Any]) -> None:
    lp = [parse_line(x) for x in written["lp"].path.read_text().splitlines()]
    df = pl.read_csv(written["csv"].path, infer_schema_length=None)
    assert df.columns == [
        "time",
        "measurement",
        "device_id",
        "location",
        "room",
        "sensor_type",
        "unit",
        *ALL_FIELDS,
    ]
    tbl = pq.read_table(written["parquet"].path)
    assert str(tbl.schema.field("time").type) == "timestamp[ns, tz=UTC]"
    assert tbl.column_names == df.columns
    assert df.height == tbl.num_rows == len(lp) == written["csv"].lines == written["parquet"].lines
    pdf = pl.from_arrow(tbl)
    assert isinstance(pdf, pl.DataFrame)
    assert pdf["time"].dt.epoch("ns").to_list() == [x.time for x in lp]
    assert df["device_id"].to_list() == [x.device for x in lp] == pdf["device_id"].to_list()
    assert df["unit"].to_list() == ["degF" if x.unit_f else None for x in lp]
    for f in ("temperature", "energy", "rssi", "motion"):
        want = [x.fields.get(f) for x in lp]
        assert pdf[f].to_list() == want
        assert df[f].to_list() == want


def test_write_rejects_unknown_format_and_endless(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Simulator(SimConfig(duration_s=1)).write(tmp_path / "x.xml")
    with pytest.raises(ConfigError):
        Simulator(SimConfig(duration_s=math.inf)).write(tmp_path / "x.lp")
    s = Simulator(SimConfig(devices=2, duration_s=3)).write(tmp_path / "x.dat", fmt="ndjson")
    assert json.loads(s.path.read_text().splitlines()[0])["device_id"].startswith("dev-")


@pytest.mark.parametrize(
    "kw",
    [{"devices": 0}, {"rate": 0}, {"rate": math.nan}, {"duration_s": -1}, {"fault_rate": 0.5}],
)
def test_config_is_validated(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SimConfig(**kw)


def test_progress_reports_simulated_seconds(tmp_path: Path) -> None:
    seen: list[tuple[float, float]] = []
    Simulator(SimConfig(devices=3, duration_s=100)).write(
        tmp_path / "p.lp", progress=lambda a, b: seen.append((a, b)), chunk_seconds=30
    )
    assert seen == [(30.0, 100.0), (60.0, 100.0), (90.0, 100.0), (100.0, 100.0)]


# --------------------------------------------------------------------------- HTTP


class _Recorder(BaseHTTPRequestHandler):
    """Records every request; answers per ``server.answer`` (status, JSON body or None)."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        srv: Any = self.server
        srv.requests.append((self.path, dict(self.headers), body.decode(), time.time_ns()))
        status, payload = srv.answer(body.decode())
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[Any]:
    srv: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.daemon_threads = True
    srv.requests = []
    srv.answer = lambda body: (204, None)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    th.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(5)


def test_post_sends_everything(http_server: Any) -> None:
    sim = Simulator(SimConfig(devices=10, duration_s=120, fault_rate=0.02))
    s = post(sim, http_server.url, bucket="iot", batch_lines=500, token="sekret")
    want = "".join(c.lines for c in sim.chunks(sim.default_chunk_seconds))
    got = "".join(body for _, _, body, _ in http_server.requests)
    assert got == want
    assert s.lines == want.count("\n") == s.accepted and s.rejected == 0
    assert s.requests == len(http_server.requests) == math.ceil(s.lines / 500)
    path, headers, body, _ = http_server.requests[0]
    u = urlparse(path)
    assert u.path == "/api/v2/write"
    assert parse_qs(u.query) == {"bucket": ["iot"], "precision": ["ns"]}
    assert headers["Authorization"] == "Token sekret"
    assert body.count("\n") == 500
    assert sum(s.faults.values()) > 0 and s.points == s.lines - s.faults["duplicate"]


def test_post_counts_partial_writes_and_raises_on_errors(http_server: Any) -> None:
    sim = Simulator(SimConfig(devices=4, duration_s=50, faults=False))
    http_server.answer = lambda body: (
        400,
        {"code": "invalid", "message": "partial write", "rejected": 3, "accepted": 7},
    )
    s = post(sim, http_server.url, batch_lines=50)
    assert s.requests == 4 and s.lines == 200
    assert s.rejected == 3 * 4 and s.accepted == s.lines - s.rejected
    http_server.answer = lambda body: (500, {"code": "internal", "message": "boom"})
    with pytest.raises(httpx.HTTPStatusError):
        post(sim, http_server.url)


def test_post_realtime_paces_with_current_timestamps(http_server: Any) -> None:
    sim = Simulator(SimConfig(devices=3, rate=4.0, duration_s=2.0, faults=False))
    t0 = time.time_ns()
    s = post(sim, http_server.url, realtime=True)
    elapsed = (time.time_ns() - t0) / NS
    assert 1.5 < elapsed < 6
    assert s.lines == 3 * 8 == s.accepted
    assert len(http_server.requests) >= 2  # one per simulated second
    for _, _, body, received in http_server.requests:
        for raw in body.splitlines():
            t = parse_line(raw).time
            assert t0 - NS < t <= received  # now, and never in the future


def test_post_realtime_stops_on_event(http_server: Any) -> None:
    sim = Simulator(SimConfig(devices=2, rate=10.0, duration_s=math.inf))
    stop = threading.Event()
    threading.Timer(1.2, stop.set).start()
    t0 = time.perf_counter()
    s = post(sim, http_server.url, realtime=True, stop_event=stop)
    assert time.perf_counter() - t0 < 4
    assert 0 < s.lines <= 2 * 10 * 3
