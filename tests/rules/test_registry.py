"""The rule engine's series table: columnar registration, one-series reads, state round trips."""

from __future__ import annotations

import pickle

import polars as pl

from sensorium.rules._registry import SeriesTable


def _table() -> SeriesTable:
    t = SeriesTable()
    t.register(pl.DataFrame({
        "series": ["home:climate,device_id=d1,room=kitchen", "home:climate,device_id=d2"],
        "bucket": ["home", "home"], "measurement": ["climate", "climate"],
        "device_id": ["d1", "d2"], "room": ["kitchen", None],
    }))
    # a later frame with another tag column, a series seen before, and a missing measurement
    out = t.register(pl.DataFrame({
        "series": ["home:climate,device_id=d2", "home:energy,site=s1", "x:power,id=7"],
        "bucket": ["home", "home", None], "measurement": ["climate", "energy", None],
        "site": [None, "s1", None], "id": [None, None, 7],
    }))
    assert out.get_column("series").to_list() == ["home:energy,site=s1", "x:power,id=7"]
    assert out.get_column("sid").to_list() == [2, 3]
    assert out.get_column("bucket").to_list() == ["home", "x"]  # parsed from the key
    assert out.get_column("measurement").to_list() == ["energy", "power"]
    t.register_keys(["default:gas,meter=m9"])  # known by key only: tags parsed too
    return t


def test_series_are_described_one_at_a_time() -> None:
    t = _table()
    assert len(t) == 5
    assert t.name(0) == "home:climate,device_id=d1,room=kitchen"
    assert t.describe(0) == ("home", "climate", {"device_id": "d1", "room": "kitchen"})
    assert t.describe(1) == ("home", "climate", {"device_id": "d2"})
    assert t.describe(2) == ("home", "energy", {"site": "s1"})
    assert t.describe(3) == ("x", "power", {"id": "7"})
    assert t.describe(4) == ("default", "gas", {"meter": "m9"})
    # many at once (an alert burst): the same answers, in the order asked, repeats allowed
    assert t.describe_many([4, 0, 2, 0]) == [t.describe(4), t.describe(0), t.describe(2), t.describe(0)]
    assert t.describe_many([]) == []
    f = t.frame()
    assert f.get_column("sid").to_list() == [0, 1, 2, 3, 4]
    assert f.get_column("room").to_list() == ["kitchen", None, None, None, None]


def test_state_round_trip_and_the_list_format_of_older_checkpoints() -> None:
    t = _table()
    back = SeriesTable.from_state(pickle.loads(pickle.dumps(t.state())))
    old = {  # what checkpoints held before the table became columnar
        "series": [t.name(i) for i in range(len(t))],
        "bucket": [t.describe(i)[0] for i in range(len(t))],
        "measurement": [t.describe(i)[1] for i in range(len(t))],
        "tags": [t.describe(i)[2] for i in range(len(t))],
    }
    legacy = SeriesTable.from_state(old)
    for restored in (back, legacy):
        assert len(restored) == len(t)
        for i in range(len(t)):
            assert restored.name(i) == t.name(i)
            assert restored.describe(i) == t.describe(i)
        assert restored.index.lookup(pl.Series(["x:power,id=7"])).tolist() == [3]


def test_series_masks_of_many_rules_equal_each_rule_alone() -> None:
    """The masks of every rule's selectors made in one select equal each made alone (a tag a
    rule selects on that the frame lacks: no series; globs; no selector: every series)."""
    import numpy as np

    from sensorium.rules._registry import series_mask, series_masks
    from sensorium.rules.loader import parse_rules

    rules = parse_rules("""
[[rules]]
name = "a"
kind = "threshold"
measurement = "climate"
field = "temperature"
above = { warning = 25 }
[[rules]]
name = "b"
kind = "threshold"
field = "temperature"
tags = { room = "kitch*" }
above = { warning = 25 }
[[rules]]
name = "c"
kind = "threshold"
field = "temperature"
tags = { floor = "1" }
above = { warning = 25 }
[[rules]]
name = "d"
kind = "threshold"
field = "temperature"
above = { warning = 25 }
""").rules
    frame = pl.DataFrame({
        "series": ["s1", "s2", "s3"], "bucket": ["default"] * 3, "measurement": ["climate", "power", None],
        "room": ["kitchen", None, "kitchenette"],
    })
    got = series_masks(rules, frame)
    for rule, mask in zip(rules, got, strict=True):
        assert np.array_equal(mask, series_mask(rule, frame))
    assert [m.tolist() for m in got] == [
        [True, False, False], [True, False, True], [False, False, False], [True, True, True],
    ]
    assert [m.tolist() for m in series_masks(rules, frame.head(0))] == [[], [], [], []]
