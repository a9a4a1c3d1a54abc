from __future__ import annotations

import math

import pyarrow as pa
import pytest

from sensorium.config import QualitySettings, RuleSettings
from sensorium.quality.validate import Validator
from sensorium.schema import LINE, QUALITY, QUALITY_FLAGS, TAG_TYPE, Point

from .helpers import T0, S, batch, col, pt, run

# -- basics ----------------------------------------------------------------------------------------


def test_clean_rows_pass_with_full_quality() -> None:
    r = run([pt({"temperature": 21.5, "humidity": 40.0}), pt({"temperature": 22.0}, time=T0 + S)])
    assert r.valid.num_rows == 2 and r.rejects == [] and r.duplicates == 0 and r.counts == {}
    assert col(r, QUALITY) == [1.0, 1.0] and col(r, QUALITY_FLAGS) == [None, None]
    assert r.valid.schema.field(QUALITY).type == pa.float32()
    assert r.valid.schema.field(QUALITY_FLAGS).type == pa.string()
    assert col(r, LINE) == [1, 2]
    assert r.reject_tags is None and r.flagged == 0


def test_empty_table() -> None:
    t = batch([pt({"temperature": 1.0})]).slice(0, 0)
    r = Validator(QualitySettings(), now=lambda: T0).validate("env", t)
    assert r.valid.num_rows == 0 and QUALITY in r.valid.column_names and r.rejects == []


def test_fields_without_rules_are_untouched() -> None:
    r = run([pt({"co2": 1e9, "status": "weird", "count": 5})])
    assert r.valid.num_rows == 1 and col(r, "co2") == [1e9]


# -- range -----------------------------------------------------------------------------------------


def test_range_reject_messages() -> None:
    r = run([pt({"temperature": 130.5}), pt({"temperature": -60.0}, time=T0 + 1), pt({"temperature": 100.0}, time=T0 + 2)])
    assert [(x.line, x.reason, x.rule) for x in r.rejects] == [
        (1, "temperature=130.5 above maximum 100 degC", "range:temperature"),
        (2, "temperature=-60 below minimum -50 degC", "range:temperature"),
    ]
    assert r.rejects[0].measurement == "env" and r.rejects[0].raw == ""
    assert col(r, "temperature") == [100.0]  # the bound itself is valid
    assert r.counts == {"range:temperature": 2}


def test_range_on_integer_field() -> None:
    r = run([pt({"humidity": 101}), pt({"humidity": 55}, time=T0 + 1)])
    assert [x.reason for x in r.rejects] == ["humidity=101 above maximum 100 percent"]


def test_range_flag_lowers_quality() -> None:
    rules = {"temperature": RuleSettings(min=-50, max=100, unit="degC", action="flag"),
             "humidity": RuleSettings(min=0, max=100, action="flag")}
    r = run(
        [
            pt({"temperature": 130.0, "humidity": 120.0}),
            pt({"temperature": 150.0}, time=T0 + 1),
            pt({"temperature": 20.0}, time=T0 + 2),
        ],
        rules=rules,
    )
    assert r.rejects == [] and r.valid.num_rows == 3
    assert col(r, QUALITY) == [0.5, 0.75, 1.0]
    assert col(r, QUALITY_FLAGS) == ["range:temperature,range:humidity", "range:temperature", None]
    assert r.counts == {"range:temperature": 2, "range:humidity": 1}
    assert r.flagged == 2


def test_quality_never_below_zero() -> None:
    rules = {f: RuleSettings(max=0, action="flag") for f in "abcde"}
    r = run([pt(dict.fromkeys("abcde", 1.0))], rules=rules, use_default_rules=False)
    assert col(r, QUALITY) == [0.0]
    assert col(r, QUALITY_FLAGS) == ["range:a,range:b,range:c,range:d,range:e"]


def test_several_failures_make_one_reject() -> None:
    r = run([pt({"temperature": 130.0, "humidity": -5.0}, tags={})], rules={
        "temperature": RuleSettings(min=-50, max=100, unit="degC", required_tags=("device_id",))})
    assert len(r.rejects) == 1
    rej = r.rejects[0]
    assert rej.reason == (
        "missing required tag 'device_id'; temperature=130 above maximum 100 degC; "
        "humidity=-5 below minimum 0 percent"
    )
    assert rej.rule == "required_tag:device_id,range:temperature,range:humidity"
    assert r.counts == {"required_tag:device_id": 1, "range:temperature": 1, "range:humidity": 1}


def test_reject_wins_over_flag() -> None:
    rules = {"humidity": RuleSettings(min=0, max=100, action="flag")}
    r = run([pt({"temperature": 130.0, "humidity": 120.0})], rules=rules)
    assert r.valid.num_rows == 0 and len(r.rejects) == 1
    assert r.rejects[0].rule == "range:temperature"
    assert r.counts == {"range:temperature": 1, "range:humidity": 1}


def test_scoped_rule() -> None:
    rules = {"temperature": RuleSettings(measurement="oven", min=0, max=300, unit="degC")}
    oven = run([pt({"temperature": 250.0}, m="oven")], m="oven", rules=rules)
    room = run([pt({"temperature": 250.0}, m="room")], m="room", rules=rules)
    assert oven.valid.num_rows == 1 and room.valid.num_rows == 0


def test_user_rule_overrides_default() -> None:
    r = run([pt({"temperature": 150.0})], rules={"temperature": RuleSettings(min=-50, max=200, unit="degC")})
    assert r.valid.num_rows == 1
    r = run([pt({"temperature": 150.0})], use_default_rules=False)
    assert r.valid.num_rows == 1


# -- units -------------------------------------------------------------------------------------------


def test_fahrenheit_converted_to_celsius_and_unit_rewritten() -> None:
    r = run([pt({"temperature": 212.0}, {"device_id": "d1", "unit": "degF"}),
             pt({"temperature": 32.0}, {"device_id": "d1", "unit": "°F"}, time=T0 + 1),
             pt({"temperature": 20.0}, {"device_id": "d1", "unit": "C"}, time=T0 + 2),
             pt({"temperature": 20.0}, {"device_id": "d1"}, time=T0 + 3)])
    assert col(r, "temperature") == [100.0, 0.0, 20.0, 20.0]
    assert col(r, "unit") == ["degC", "degC", "degC", None]
    assert r.valid.schema.field("unit").type == TAG_TYPE


def test_kelvin_and_pressure_and_battery_percent() -> None:
    r = run([
        pt({"temperature": 373.15}, {"device_id": "d1", "unit": "K"}),
        pt({"pressure": 101.325}, {"device_id": "d1", "unit": "kPa"}, time=T0 + 1),
        pt({"battery": 87.0}, {"device_id": "d1", "unit": "%"}, time=T0 + 2),
        pt({"battery": 0.5}, {"device_id": "d1"}, time=T0 + 3),
    ])
    assert r.rejects == []
    assert col(r, "temperature")[0] == 100.0
    assert col(r, "pressure")[1] == 1013.25
    assert col(r, "battery")[2:] == [0.87, 0.5]
    assert col(r, "unit") == ["degC", "hPa", "fraction", None]


def test_battery_percent_over_100_rejected_after_conversion() -> None:
    r = run([pt({"battery": 150.0}, {"device_id": "d1", "unit": "percent"})])
    assert r.rejects[0].reason == "battery=1.5 fraction (150 percent) above maximum 1 fraction"


def test_converted_value_shown_with_source() -> None:
    r = run([pt({"temperature": 267.0}, {"unit": "degF"})])
    assert r.rejects[0].reason == "temperature=130.5556 degC (267 degF) above maximum 100 degC"


def test_unknown_unit_rejected() -> None:
    r = run([pt({"temperature": 3.0}, {"unit": "furlongs"}), pt({"temperature": 3.0}, {"unit": "degC"}, time=T0 + 1)])
    assert [(x.line, x.reason, x.rule) for x in r.rejects] == [
        (1, "unknown unit 'furlongs' for field 'temperature'", "unit:temperature")
    ]
    assert r.valid.num_rows == 1


def test_incompatible_unit_rejected() -> None:
    r = run([pt({"temperature": 3.0}, {"unit": "kPa"})])
    assert r.rejects[0].reason == "unit 'kPa' cannot be converted to degC for field 'temperature'"
    assert r.counts == {"unit:temperature": 1}


def test_unit_rejects_even_with_flag_rules() -> None:
    r = run([pt({"temperature": 3.0}, {"unit": "furlongs"})],
            rules={"temperature": RuleSettings(unit="degC", action="flag")})
    assert len(r.rejects) == 1


def test_unit_ignored_for_fields_without_unit_rule() -> None:
    r = run([pt({"co2": 400.0, "count": 3}, {"unit": "ppm"})])
    assert r.valid.num_rows == 1 and col(r, "unit") == ["ppm"]


def test_mixed_canonical_units_null_the_unit_tag() -> None:
    # unit=% : humidity stays percent, battery becomes a fraction -> no single unit for the row
    r = run([pt({"humidity": 50.0, "battery": 50.0}, {"unit": "%"}),
             pt({"humidity": 50.0}, {"unit": "%"}, time=T0 + 1)])
    assert col(r, "battery") == [0.5, None] and col(r, "humidity") == [50.0, 50.0]
    assert col(r, "unit") == [None, "percent"]


def test_integer_field_converted_becomes_float() -> None:
    r = run([pt({"temperature": 212}, {"unit": "degF"}), pt({"temperature": 20}, time=T0 + 1)])
    assert r.valid.schema.field("temperature").type == pa.float64()
    assert col(r, "temperature") == [100.0, 20.0]


def test_integer_field_not_converted_keeps_type() -> None:
    r = run([pt({"temperature": 20}, {"unit": "degC"})])
    assert r.valid.schema.field("temperature").type == pa.int64()


def test_null_values_not_converted_or_checked() -> None:
    r = run([pt({"temperature": 212.0}, {"unit": "degF"}), pt({"humidity": 10.0}, {"unit": "degF"}, time=T0 + 1)],
            rules={"humidity": RuleSettings(min=0, max=100)})  # no unit: degF means nothing to humidity
    assert r.rejects == []
    assert col(r, "temperature") == [100.0, None]
    assert col(r, "unit") == ["degC", "degF"]


# -- non-finite --------------------------------------------------------------------------------------


def test_nan_and_inf_rejected() -> None:
    r = run([pt({"humidity": math.nan}), pt({"temperature": math.inf}, time=T0 + 1),
             pt({"co2": -math.inf}, time=T0 + 2)])
    assert [x.reason for x in r.rejects] == ["humidity is NaN", "temperature is +inf", "co2 is -inf"]
    assert [x.rule for x in r.rejects] == ["non_finite:humidity", "non_finite:temperature", "non_finite:co2"]


def test_nan_flagged() -> None:
    r = run([pt({"humidity": math.nan})], non_finite="flag")
    assert r.rejects == [] and col(r, QUALITY_FLAGS) == ["non_finite:humidity"]
    assert math.isnan(col(r, "humidity")[0])


# -- timestamps --------------------------------------------------------------------------------------


def test_future_timestamp_with_injected_clock() -> None:
    t2031 = 1_924_992_000 * S  # 2031-01-01T00:00:00Z
    r = run([pt({"temperature": 1.0}, time=t2031), pt({"temperature": 1.0}, time=T0 + 299 * S)])
    assert [x.reason for x in r.rejects] == ["timestamp 2031-01-01T00:00:00Z is more than 300s in the future"]
    assert r.rejects[0].rule == "timestamp:future"
    # the clock moves on: the same point is fine later
    later = run([pt({"temperature": 1.0}, time=t2031)], now=t2031)
    assert later.rejects == []


def test_future_tolerance_setting() -> None:
    r = run([pt({"temperature": 1.0}, time=T0 + 10 * S)], future_tolerance_s=5)
    assert r.rejects[0].reason == "timestamp 2026-01-01T00:00:10Z is more than 5s in the future"


def test_retention() -> None:
    old = T0 - 31 * 86_400 * S
    assert run([pt({"x": 1.0}, time=old)]).rejects == []  # disabled by default
    r = run([pt({"x": 1.0}, time=old), pt({"x": 1.0}, time=T0 - 29 * 86_400 * S)], retention_days=30)
    assert [x.reason for x in r.rejects] == [
        "timestamp 2025-12-01T00:00:00Z is older than the retention of 30 days"
    ]
    assert r.rejects[0].rule == "timestamp:retention"


def test_timestamp_flag() -> None:
    r = run([pt({"x": 1.0}, time=T0 + 3600 * S)], timestamp_action="flag")
    assert r.rejects == [] and col(r, QUALITY_FLAGS) == ["timestamp:future"] and col(r, QUALITY) == [0.75]


# -- required tags, allowed values ----------------------------------------------------------------------


def test_required_tags() -> None:
    rules = {"temperature": RuleSettings(min=-50, max=100, unit="degC", required_tags=("device_id", "site"))}
    r = run([
        pt({"temperature": 20.0}, {"device_id": "a", "site": "s"}),
        pt({"temperature": 20.0}, {"site": "s"}, time=T0 + 1),
        pt({"humidity": 20.0}, {}, time=T0 + 2),  # no temperature: the rule does not apply
    ], rules=rules)
    assert [(x.line, x.reason, x.rule) for x in r.rejects] == [
        (2, "missing required tag 'device_id'", "required_tag:device_id")
    ]


def test_required_tag_column_absent() -> None:
    rules = {"temperature": RuleSettings(required_tags=("device_id",))}
    r = run([pt({"temperature": 20.0}, {})], rules=rules)
    assert r.rejects[0].reason == "missing required tag 'device_id'"


def test_required_tag_flag() -> None:
    rules = {"temperature": RuleSettings(required_tags=("site",), action="flag")}
    r = run([pt({"temperature": 20.0})], rules=rules)
    assert col(r, QUALITY_FLAGS) == ["required_tag:site"]


def test_allowed_values_string_field() -> None:
    rules = {"status": RuleSettings(allowed_values=("ok", "degraded"))}
    r = run([pt({"status": "ok"}), pt({"status": "broken"}, time=T0 + 1)], rules=rules)
    assert [x.reason for x in r.rejects] == [
        "status='broken' is not one of the allowed values ['ok', 'degraded']"
    ]
    assert r.rejects[0].rule == "allowed_values:status"


def test_allowed_values_numeric_bool_and_tag() -> None:
    rules = {
        "mode": RuleSettings(allowed_values=(1, 2, 3)),
        "door": RuleSettings(allowed_values=(False,), action="flag"),
        "site": RuleSettings(allowed_values=("north", "south")),
    }
    r = run([
        pt({"mode": 2, "door": False}, {"site": "north"}),
        pt({"mode": 7}, {"site": "north"}, time=T0 + 1),
        pt({"door": True}, {"site": "north"}, time=T0 + 2),
        pt({"mode": 1}, {"site": "east"}, time=T0 + 3),
    ], rules=rules)
    assert [(x.line, x.reason) for x in r.rejects] == [
        (2, "mode=7 is not one of the allowed values [1, 2, 3]"),
        (4, "site='east' is not one of the allowed values ['north', 'south']"),
    ]
    assert col(r, QUALITY_FLAGS) == [None, "allowed_values:door"]


# -- duplicates --------------------------------------------------------------------------------------


def test_duplicates_keep_last_and_count() -> None:
    r = run([
        pt({"temperature": 1.0}),
        pt({"temperature": 2.0}),
        pt({"temperature": 3.0}, {"device_id": "d2"}),
        pt({"temperature": 4.0}),
        pt({"temperature": 5.0}, time=T0 + 1),
    ])
    assert r.duplicates == 2 and r.rejects == []
    assert col(r, "temperature") == [3.0, 4.0, 5.0]
    assert col(r, LINE) == [3, 4, 5]


def test_duplicates_with_null_tags() -> None:
    r = run([
        pt({"x": 1.0}, {"a": "1"}),
        pt({"x": 2.0}, {"b": "1"}),
        pt({"x": 3.0}, {"a": "1"}),
        pt({"x": 4.0}, {}),
        pt({"x": 5.0}, {}),
        pt({"x": 6.0}, {"b": "1"}),
    ])
    assert r.duplicates == 3
    assert col(r, "x") == [3.0, 5.0, 6.0]


def test_duplicates_across_chunks_with_different_dictionaries() -> None:
    a = batch([pt({"x": 1.0}, {"dev": "a"}), pt({"x": 2.0}, {"dev": "b"})])
    b = batch([pt({"x": 3.0}, {"dev": "b"}), pt({"x": 4.0}, {"dev": "c"})])
    t = pa.concat_tables([a, b])
    assert t["dev"].num_chunks == 2
    r = Validator(QualitySettings(), now=lambda: T0).validate("env", t)
    assert r.duplicates == 1 and col(r, "x") == [1.0, 3.0, 4.0]


def test_dedup_off() -> None:
    r = run([pt({"x": 1.0}), pt({"x": 2.0})], dedup=False)
    assert r.duplicates == 0 and r.valid.num_rows == 2


def test_rejected_row_does_not_replace_valid_duplicate() -> None:
    r = run([pt({"temperature": 20.0}), pt({"temperature": 500.0})])
    assert r.duplicates == 0 and len(r.rejects) == 1 and col(r, "temperature") == [20.0]


def test_duplicates_after_unit_normalisation() -> None:
    r = run([pt({"temperature": 212.0}, {"unit": "degF"}), pt({"temperature": 99.0}, {"unit": "degC"})])
    assert r.duplicates == 1 and col(r, "temperature") == [99.0]


# -- reject details ------------------------------------------------------------------------------------


def test_reject_tags_aligned_and_counts() -> None:
    r = run([
        pt({"temperature": 500.0}, {"device_id": "a"}),
        pt({"temperature": 20.0}, {"device_id": "b"}),
        pt({"humidity": math.nan}, {"device_id": "c", "unit": "%"}),
    ])
    assert [x.line for x in r.rejects] == [1, 3]
    assert r.reject_tags is not None
    assert r.reject_tags.to_pydict() == {"device_id": ["a", "c"], "unit": [None, "%"]}
    assert r.reject_table is not None and r.reject_table["line"].to_pylist() == [1, 3]


def test_lines_come_from_line_column() -> None:
    t = batch([pt({"temperature": 500.0}), pt({"temperature": 600.0}, time=T0 + 1)])
    t = t.set_column(t.column_names.index(LINE), LINE, pa.array([17, 42], pa.int32()))
    r = Validator(QualitySettings(), now=lambda: T0).validate("env", t)
    assert [x.line for x in r.rejects] == [17, 42]


def test_validation_is_vectorised_enough() -> None:
    n = 200_000
    pts = [Point("env", {"device_id": f"d{i % 50}"}, {"temperature": float(i % 200 - 60)}, T0 - i) for i in range(2000)]
    base = batch(pts)
    t = pa.concat_tables([base] * (n // 2000))
    r = Validator(QualitySettings(), now=lambda: T0).validate("env", t)
    assert r.valid.num_rows + len(r.rejects) + r.duplicates == n


@pytest.mark.parametrize("bad", ["furlongs", "kPa"])
def test_unit_failure_skips_range_check(bad: str) -> None:
    r = run([pt({"temperature": 5000.0}, {"unit": bad})])
    assert r.rejects[0].rule == "unit:temperature"


def test_multi_field_line_unit_describes_matching_fields_only() -> None:
    r = run([
        pt({"temperature": 212.0, "humidity": 40.0, "rssi": -60}, {"unit": "degF"}),
        pt({"temperature": 20.0, "pressure": 101.3}, {"unit": "kPa"}, time=T0 + 1),
        pt({"humidity": 40.0}, {"unit": "degF"}, time=T0 + 2),
    ])
    assert [(x.line, x.reason) for x in r.rejects] == [
        (3, "unit 'degF' cannot be converted to percent for field 'humidity'")
    ]
    assert col(r, "temperature") == [100.0, 20.0]
    assert col(r, "humidity") == [40.0, None]
    assert col(r, "pressure") == [None, 1013.0]
    assert col(r, "rssi") == [-60, None] and r.valid.schema.field("rssi").type == pa.int64()
    assert col(r, "unit") == ["degC", "hPa"]
