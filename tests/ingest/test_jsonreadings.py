"""JSON readings: the mapping rule, timestamps, bad readings and bad bodies."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sensorium.errors import ParseError
from sensorium.ingest.jsonreadings import parse_readings, parse_timestamp
from sensorium.schema import LINE, TAG_TYPE, TIME, TIME_TYPE, ParseResult

NOW = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z
READING = {
    "device_id": "dev-00042",
    "timestamp": "2026-01-01T00:00:01Z",
    "sensor_type": "climate",
    "measurement_type": "temperature",
    "value": 21,
    "unit": "degC",
    "location": "home-3",
    "metadata": {
        "room": "kitchen",
        "floor": 2,
        "ok": True,
        "time": "x",
        "location": "y",
        "temperature": 1,
        "list": [1],
        "none": None,
    },
}


def parse(body: Any) -> ParseResult:
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    return parse_readings(body, now_ns=NOW)


def rows(r: ParseResult, m: str) -> list[dict[str, Any]]:
    t = r.batches[m]
    cols = {c: (t[c].cast(pa.int64()) if c == TIME else t[c]).to_pylist() for c in t.column_names}
    return [{c: v[i] for c, v in cols.items() if v[i] is not None} for i in range(t.num_rows)]


def ndjson(*items: Any) -> str:
    return "\n".join(x if isinstance(x, str) else json.dumps(x) for x in items) + "\n"


def test_mapping_rule() -> None:
    r = parse([READING])
    assert r.rejects == [] and r.lines_total == 1
    t = r.batches["climate"]
    assert t.column_names == [
        TIME,
        "device_id",
        "floor",
        "location",
        "meta_location",
        "meta_temperature",
        "meta_time",
        "ok",
        "room",
        "unit",
        "temperature",
        LINE,
    ]
    assert t.schema.field(TIME).type == TIME_TYPE and t.schema.field("room").type == TAG_TYPE
    assert t.schema.field("temperature").type == pa.float64()
    assert rows(r, "climate") == [
        {
            TIME: NOW + 1_000_000_000,
            "device_id": "dev-00042",
            "floor": "2",
            "location": "home-3",
            "meta_location": "y",
            "meta_temperature": "1",
            "meta_time": "x",
            "ok": "true",
            "room": "kitchen",
            "unit": "degC",
            "temperature": 21.0,
            LINE: 1,
        }
    ]


def test_fallbacks_and_value_types() -> None:
    r = parse(
        ndjson(
            {"device_id": "a", "value": 1.5},
            {"device_id": "a", "measurement_type": "door", "value": True},
            {"device_id": "a", "sensor_type": "s", "value": "hello"},
            {"device_id": "a", "sensor_type": "s", "measurement_type": "n", "value": 7},
        )
    )
    assert r.rejects == []
    assert rows(r, "reading") == [{TIME: NOW, "device_id": "a", "value": 1.5, LINE: 1}]
    assert rows(r, "door") == [{TIME: NOW, "device_id": "a", "door": True, LINE: 2}]
    assert rows(r, "s") == [
        {TIME: NOW, "device_id": "a", "value": "hello", LINE: 3},
        {TIME: NOW, "device_id": "a", "n": 7.0, LINE: 4},
    ]
    assert r.batches["s"].schema.field("n").type == pa.float64()


def test_same_device_and_time_with_different_types_are_separate_rows() -> None:
    base = {"device_id": "a", "sensor_type": "climate", "timestamp": 1767225600}
    r = parse(
        [
            {**base, "measurement_type": "temperature", "value": 20},
            {**base, "measurement_type": "humidity", "value": 40},
        ]
    )
    assert rows(r, "climate") == [
        {TIME: NOW, "device_id": "a", "temperature": 20.0, LINE: 1},
        {TIME: NOW, "device_id": "a", "humidity": 40.0, LINE: 2},
    ]


@pytest.mark.parametrize(
    "ts,ns",
    [
        ("2026-01-01T00:00:00Z", NOW),
        ("2026-01-01T00:00:00", NOW),
        ("2026-01-01 00:00:00", NOW),
        ("2026-01-01", NOW),
        ("2026-01-01T02:00:00+02:00", NOW),
        ("2025-12-31T19:00:00-0500", NOW),
        ("2026-01-01T00:00:00.123456789Z", NOW + 123456789),
        ("2026-01-01T00:00:00.5Z", NOW + 500_000_000),
        ("2026-01-01T00:00:00.1234567891Z", NOW + 123456789),
        ("2026-W01-4", NOW),  # other ISO forms, via datetime.fromisoformat
        (1767225600, NOW),
        (1767225600.25, NOW + 250_000_000),
        (1767225600000, NOW),
        (1767225600000000, NOW),
        (1767225600000000000, NOW),
        (0, 0),
        (-1, -1_000_000_000),
    ],
)
def test_timestamps(ts: Any, ns: int) -> None:
    assert parse_timestamp(ts) == ns
    r = parse([{"device_id": "a", "value": 1, "timestamp": ts}])
    assert rows(r, "reading")[0][TIME] == ns


@pytest.mark.parametrize(
    "ts",
    [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-01-01T25:00:00Z",
        "2026-01-01T00:00:00+25:00",
        "",
        True,
        [1],
        {"a": 1},
        10**30,
    ],
)
def test_bad_timestamps(ts: Any) -> None:
    r = parse([{"device_id": "a", "value": 1, "timestamp": ts}, {"device_id": "b", "value": 2}])
    assert len(r.rejects) == 1 and r.rejects[0].line == 1 and "timestamp" in r.rejects[0].reason
    assert [x["device_id"] for x in rows(r, "reading")] == ["b"]


@pytest.mark.parametrize(
    "reading,why",
    [
        (5, "reading is not a JSON object"),
        ([1], "reading is not a JSON object"),
        ({"value": 1}, "missing device_id"),
        ({"device_id": "", "value": 1}, "device_id must be a non-empty string"),
        ({"device_id": 7, "value": 1}, "device_id must be a non-empty string"),
        ({"device_id": "a"}, "missing value"),
        ({"device_id": "a", "value": None}, "missing value"),
        ({"device_id": "a", "value": [1]}, "value must be a number, boolean or string"),
        ({"device_id": "a", "value": {"x": 1}}, "value must be a number, boolean or string"),
        ({"device_id": "a", "value": 1, "metadata": [1]}, "metadata must be an object"),
        (
            {"device_id": "a", "value": 1, "sensor_type": 3},
            "sensor_type must be a non-empty string",
        ),
        (
            {"device_id": "a", "value": 1, "measurement_type": ""},
            "measurement_type must be a non-empty string",
        ),
        ({"device_id": "a", "value": 1, "location": ["x"]}, "location must be a string"),
        (
            {"device_id": "a", "value": 1, "measurement_type": "time"},
            "field key 'time' is reserved",
        ),
    ],
)
def test_bad_readings(reading: Any, why: str) -> None:
    good = {"device_id": "g", "value": 1.0, "sensor_type": "ok"}
    for r, line in ((parse([good, reading]), 2), (parse(ndjson(good, "", reading)), 3)):
        assert [(x.line, x.reason) for x in r.rejects] == [(line, why)]
        assert json.loads(r.rejects[0].raw) == reading
        assert rows(r, "ok")[0]["device_id"] == "g"


def test_type_conflicts_follow_line_protocol_rules() -> None:
    r = parse(
        [
            {"device_id": "a", "value": 1},
            {"device_id": "a", "value": True},
            {"device_id": "a", "value": "x"},
        ]
    )
    assert [(x.line, x.reason) for x in r.rejects] == [
        (
            2,
            "field type conflict: field 'value' is boolean in line 2, float earlier in this request",
        ),
        (
            3,
            "field type conflict: field 'value' is string in line 3, float earlier in this request",
        ),
    ]


def test_ndjson_lines_and_bad_lines() -> None:
    body = ndjson(
        {"device_id": "a", "value": 1}, "", "{not json", {"device_id": "b", "value": 2}
    ).replace("\n", "\r\n")
    r = parse(body)
    assert [(x.line, x.reason.split(":")[0]) for x in r.rejects] == [(3, "invalid JSON")]
    assert [x[LINE] for x in rows(r, "reading")] == [1, 4]
    assert (
        r.lines_total == 3 and r.raw(3) == "{not json" and json.loads(r.raw(4))["device_id"] == "b"
    )


def test_single_object_and_pretty_array() -> None:
    r = parse(json.dumps({"device_id": "a", "value": 1}, indent=2))
    assert rows(r, "reading")[0]["device_id"] == "a" and r.lines_total == 1
    r = parse(
        json.dumps([{"device_id": "a", "value": 1}, {"device_id": "b", "value": 2}], indent=2)
    )
    assert [x[LINE] for x in rows(r, "reading")] == [1, 2]
    assert json.loads(r.raw(2)) == {"device_id": "b", "value": 2}


@pytest.mark.parametrize(
    "body", ["[1, 2", "[{]", "not json at all\nnor this", b"\xff\xfe[]", '{"a": }']
)
def test_bad_bodies_raise_parse_error(body: str | bytes) -> None:
    with pytest.raises(ParseError, match="invalid JSON"):
        parse(body)


def test_empty_bodies() -> None:
    for body in ("", "[]", "\n\n", "  "):
        r = parse(body)
        assert r.batches == {} and r.rejects == [] and r.lines_total == 0


_SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
)
_JSON = st.recursive(
    _SCALAR,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
    max_leaves=8,
)
_KEYS = st.sampled_from(
    [
        "device_id",
        "value",
        "timestamp",
        "sensor_type",
        "measurement_type",
        "unit",
        "location",
        "metadata",
        "x",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(_KEYS, _JSON, max_size=8) | _JSON, max_size=6), st.booleans())
def test_never_raises_on_json_values(items: list[Any], as_ndjson: bool) -> None:
    assume(not (as_ndjson and len(items) == 1 and isinstance(items[0], list)))  # that is an array
    body = ndjson(*[json.dumps(x) for x in items]) if as_ndjson else json.dumps(items)
    r = parse(body)
    assert r.lines_total == len(items)
    assert r.rows + len(r.rejects) == len(items)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100) | st.text(max_size=100))
def test_arbitrary_bodies_parse_or_raise_parse_error(body: bytes | str) -> None:
    try:
        parse_readings(body, now_ns=NOW)
    except ParseError:
        pass


def test_known_columns_win_over_the_first_reading() -> None:
    r = parse_readings(
        json.dumps([{"device_id": "a", "value": True}, {"device_id": "a", "value": 2}]),
        now_ns=NOW,
        known={"reading": {"value": "float"}},
    )
    assert [(x.line, x.reason) for x in r.rejects] == [
        (
            1,
            "field type conflict: field 'value' of measurement 'reading' is boolean, already stored as float",
        )
    ]
