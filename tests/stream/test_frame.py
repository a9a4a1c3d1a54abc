"""The stream's batch form: stored wide tables → one long values frame, row by row."""

from __future__ import annotations

import pyarrow as pa

from sensorium.stream.frame import Batch, frames_of_batches, to_frames


def _table(times: list[int], devs: list[str | None], temps: list[float | None], ok: list[bool]) -> pa.Table:
    return pa.table(
        {
            "time": pa.array(times, pa.int64()),
            "device_id": pa.array(devs).dictionary_encode(),
            "temperature": pa.array(temps, pa.float64()),
            "count": pa.array(list(range(len(times))), pa.int64()),
            "ok": pa.array(ok),
            "note": pa.array(["x"] * len(times)),  # strings are not streamed
        }
    )


def test_values_come_row_by_row_with_series_keys_and_no_nulls() -> None:
    t = _table([1, 2, 3], ["a", "b", None], [20.5, None, 3.0], [True, False, True])
    values, series = to_frames(Batch(7, "default", "climate", t, ("device_id",), 99))
    assert values.rows() == [
        ("climate,device_id=a", "temperature", 1, 20.5),
        ("climate,device_id=a", "count", 1, 0.0),
        ("climate,device_id=a", "ok", 1, 1.0),
        ("climate,device_id=b", "count", 2, 1.0),
        ("climate,device_id=b", "ok", 2, 0.0),
        ("climate", "temperature", 3, 3.0),
        ("climate", "count", 3, 2.0),
        ("climate", "ok", 3, 1.0),
    ]
    assert series.rows() == [
        ("climate,device_id=a", "default", "climate", "a"),
        ("climate,device_id=b", "default", "climate", "b"),
        ("climate", "default", "climate", None),
    ]


def test_micro_batch_keeps_order_within_a_measurement_and_carries_arrival() -> None:
    a = Batch(1, "home", "climate", _table([5, 6], ["a", "a"], [1.0, 2.0], [True, True]), ("device_id",), 100)
    b = Batch(2, "home", "energy", _table([1], ["m"], [9.0], [False]), ("device_id",), 200)
    c = Batch(3, "home", "climate", _table([4], ["a"], [3.0], [True]), ("device_id",), 300)
    values, series = frames_of_batches([a, b, c])
    temp = values.filter(values["field"] == "temperature")
    # other buckets are prefixed; climate rows keep their log order (5, 6, then 4)
    assert temp.filter(temp["series"] == "home:climate,device_id=a")["time"].to_list() == [5, 6, 4]
    assert temp.filter(temp["series"] == "home:climate,device_id=a")["arrival"].to_list() == [100, 100, 300]
    assert temp.filter(temp["series"] == "home:energy,device_id=m")["arrival"].to_list() == [200]
    assert sorted(series["series"].to_list()) == ["home:climate,device_id=a", "home:energy,device_id=m"]


def test_a_bool_field_missing_on_some_rows() -> None:
    # regression: filling the gaps of a bool column with 0 raised ArrowInvalid and stopped the stream
    t = _table([1, 2], ["a", "a"], [1.0, 2.0], [True, False]).set_column(4, "ok", pa.array([True, None]))
    values, _ = to_frames(Batch(1, "default", "motion", t, ("device_id",), 5))
    ok = values.filter(values["field"] == "ok")
    assert ok["time"].to_list() == [1] and ok["value"].to_list() == [1.0]


def test_released_yields_in_order_and_lets_each_go() -> None:
    import gc
    import weakref

    from sensorium.stream.frame import released

    class Box:
        pass

    items = [Box(), Box(), Box()]
    refs = [weakref.ref(b) for b in items]
    seen = []
    for i, box in enumerate(released(items)):
        seen.append(refs.index(weakref.ref(box)))
        del box
        gc.collect()
        assert [r() is None for r in refs[:i]] == [True] * i  # the earlier ones are gone
    assert seen == [0, 1, 2] and items == []
