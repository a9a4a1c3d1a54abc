from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from sensorium.config import QualitySettings
from sensorium.quality.deadletters import DeadLetter, DeadLetterStore
from sensorium.quality.report import quality_report, render_report
from sensorium.quality.validate import Validator

from .helpers import T0, batch, pt


@pytest.fixture
def store(tmp_path: Path):
    s = DeadLetterStore(tmp_path / "dl.sqlite")
    yield s
    s.close()


def _dl(line: int, reason: str, rule: str, device: str | None) -> DeadLetter:
    return DeadLetter("b", "env", line, "raw", reason, rule, "lp", device, T0)


def test_empty_report(store: DeadLetterStore) -> None:
    rep = quality_report(store)
    assert rep["totals"] == {"accepted": 0, "rejected": 0, "replayed": 0, "duplicates": 0, "flagged": 0,
                             "batches": 0, "valid_rate": None}
    assert rep["top_issues"] == [] and rep["per_device"] == []
    render_report(rep)


def test_report_numbers(store: DeadLetterStore) -> None:
    store.add(
        1,
        [
            _dl(1, "temperature=130 above maximum 100 degC", "range:temperature", "d1"),
            _dl(2, "temperature=150 above maximum 100 degC", "range:temperature", "d1"),
            _dl(3, "humidity is NaN; temperature=999 above maximum 100 degC",
                "non_finite:humidity,range:temperature", "d2"),
            _dl(4, "expected field value", "parse", None),
        ],
        duplicates=2,
        accepted_rows=16,
        accepted_by_device={"d1": 8, "d2": 8, "d3": 0},
        flagged_rows=3,
        rule_counts={"range:temperature": 3, "non_finite:humidity": 1, "range:humidity": 3},
    )
    store.add(2, [], accepted_rows=4, accepted_by_device={"d3": 4})
    rep = quality_report(store, top=3)
    t = rep["totals"]
    assert (t["accepted"], t["rejected"], t["duplicates"], t["flagged"], t["batches"]) == (20, 4, 2, 3, 2)
    assert t["valid_rate"] == pytest.approx(20 / 24)
    issues = rep["top_issues"]
    assert [i["rule"] for i in issues] == ["range:humidity", "range:temperature", "non_finite:humidity"]
    temp = issues[1]
    assert temp["count"] == 3 and temp["rejected"] == 3 and temp["check"] == "range"
    assert temp["subject"] == "temperature"
    assert temp["example"] == "temperature=150 above maximum 100 degC"  # from a single-rule letter
    assert issues[0]["rejected"] == 0 and issues[0]["example"] is None  # flagged only
    devices = rep["per_device"]
    assert [d["device_id"] for d in devices] == ["d1", "d2", "d3"]  # worst first; ties by rejects
    assert devices[0] == {"device_id": "d1", "accepted": 8, "rejected": 2, "valid_rate": 0.8}
    assert devices[2]["valid_rate"] == 1.0
    assert rep["devices"] == 3
    assert len(quality_report(store, max_devices=1)["per_device"]) == 1
    # parse errors show up as an issue of their own
    assert "parse" in [i["rule"] for i in quality_report(store, top=10)["top_issues"]]


def test_replayed_letters_leave_the_rejected_total(store: DeadLetterStore) -> None:
    store.add(1, [_dl(1, "x", "range:temperature", "d1")], accepted_rows=1)
    store.mark_replayed([store.list()[0]["id"]], T0)
    rep = quality_report(store)
    assert rep["totals"]["rejected"] == 0 and rep["totals"]["replayed"] == 1
    assert rep["totals"]["valid_rate"] == 1.0


def test_render_report(store: DeadLetterStore) -> None:
    store.add(1, [_dl(1, "temperature=130 above maximum 100 degC", "range:temperature", "d1")],
              accepted_rows=9, accepted_by_device={"d1": 9})
    out = render_report(quality_report(store))
    buf = io.StringIO()
    console = Console(file=buf, width=160)
    for r in out:
        console.print(r)
    text = buf.getvalue()
    assert "range:temperature" in text and "90.00%" in text and "d1" in text


def test_validator_to_store_to_report(store: DeadLetterStore) -> None:
    """The pieces together, as the platform wires them."""
    v = Validator(QualitySettings(), now=lambda: T0)
    r = v.validate("env", batch([
        pt({"temperature": 20.0}, {"device_id": "a"}),
        pt({"temperature": 20.0}, {"device_id": "a"}),
        pt({"temperature": 500.0}, {"device_id": "b"}),
    ]))
    assert r.reject_tags is not None
    devs = r.reject_tags["device_id"].to_pylist()
    letters = [DeadLetter("b", x.measurement, x.line, "", x.reason, x.rule, "lp", d, T0)
               for x, d in zip(r.rejects, devs, strict=True)]
    store.add(0, letters, duplicates=r.duplicates, accepted_rows=r.valid.num_rows,
              accepted_by_device={"a": 1}, flagged_rows=r.flagged, rule_counts=r.counts)
    rep = quality_report(store)
    assert rep["totals"]["accepted"] == 1 and rep["totals"]["rejected"] == 1
    assert rep["totals"]["duplicates"] == 1 and rep["totals"]["valid_rate"] == 0.5
    assert rep["top_issues"][0]["rule"] == "range:temperature"
    assert rep["per_device"][0]["device_id"] == "b"
