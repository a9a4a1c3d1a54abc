from __future__ import annotations

import numpy as np
import pytest

from sensorium.config import QualitySettings, RuleSettings
from sensorium.errors import ConfigError
from sensorium.quality.rules import DEFAULT_RULES, effective_rules, rules_for
from sensorium.quality.units import (
    IncompatibleUnit,
    UnknownUnit,
    conversion,
    convert,
    resolve_unit,
    same_unit,
)

# -- rules ---------------------------------------------------------------------------------------


def test_default_rules() -> None:
    rules = effective_rules(QualitySettings())
    assert set(rules) == {
        "temperature",
        "humidity",
        "pressure",
        "voltage",
        "battery",
        "rssi",
        "signal_strength",
    }
    t = rules["temperature"][0]
    assert (t.min, t.max, t.unit, t.action) == (-50.0, 100.0, "degC", "reject")
    assert rules["humidity"][0].unit == "percent"
    assert (rules["battery"][0].min, rules["battery"][0].max) == (0.0, 1.0)
    assert rules["rssi"][0].unit == rules["signal_strength"][0].unit == "dBm"
    assert (rules["pressure"][0].min, rules["pressure"][0].max) == (800.0, 1200.0)
    assert len(DEFAULT_RULES) == 7


def test_defaults_can_be_disabled() -> None:
    assert effective_rules(QualitySettings(use_default_rules=False)) == {}


def test_user_rule_overrides_default_and_extends() -> None:
    q = QualitySettings(
        rules={
            "temperature": RuleSettings(min=-100, max=200, unit="degF", action="flag"),
            "co2": RuleSettings(min=0, max=5000),
        }
    )
    rules = effective_rules(q)
    assert len(rules["temperature"]) == 1
    t = rules["temperature"][0]
    assert (t.min, t.max, t.unit, t.action) == (-100, 200, "degF", "flag")
    assert rules["co2"][0].max == 5000
    assert "humidity" in rules


def test_scoped_user_rule_only_in_its_measurement() -> None:
    q = QualitySettings(rules={"temperature": RuleSettings(measurement="oven", max=300, unit="degC")})
    rules = effective_rules(q)
    assert len(rules["temperature"]) == 2  # the generic default stays for other measurements
    assert rules_for(rules, "oven")["temperature"][0].max == 300
    assert rules_for(rules, "room")["temperature"][0].max == 100


def test_bad_rules_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown unit 'parsecs per fortnight'"):
        effective_rules(QualitySettings(rules={"x": RuleSettings(unit="parsecs per fortnight")}))
    with pytest.raises(ConfigError, match="min 5.0 is above max 1.0"):
        effective_rules(QualitySettings(rules={"x": RuleSettings(min=5, max=1)}))


# -- units ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    ["C", "°C", "degC", "celsius", "Celsius", "F", "°F", "degF", "fahrenheit", "K", "kelvin", "%",
     "percent", "hPa", "kPa", "Pa", "mbar", "bar", "inHg", "V", "mV", "dBm", "W", "kW", "kWh", "Wh",
     "fraction", "m/s"],
)
def test_common_spellings_resolve(spelling: str) -> None:
    resolve_unit(spelling)


def test_c_and_f_are_temperatures_not_coulomb_and_farad() -> None:
    assert same_unit("C", "degC") and same_unit("°C", "celsius")
    assert same_unit("F", "degF") and same_unit("°F", "fahrenheit")
    assert same_unit("%", "percent")


@pytest.mark.parametrize("spelling", ["furlongs", "volts", "", "bogus", "12", "degC/blarg"])
def test_unknown_spellings(spelling: str) -> None:
    with pytest.raises(UnknownUnit):
        resolve_unit(spelling)


@pytest.mark.parametrize(
    ("values", "src", "dst", "expected"),
    [
        ([212.0, 32.0, -40.0, 98.6], "degF", "degC", [100.0, 0.0, -40.0, 37.0]),
        ([212.0], "F", "C", [100.0]),
        ([373.15, 273.15, 0.0], "K", "degC", [100.0, 0.0, -273.15]),
        ([100.0], "degC", "degF", [212.0]),
        ([101.325], "kPa", "hPa", [1013.25]),
        ([101325.0], "Pa", "hPa", [1013.25]),
        ([1013.25], "mbar", "hPa", [1013.25]),
        ([1.0], "bar", "hPa", [1000.0]),
        ([50.0, 100.0, 0.0], "%", "fraction", [0.5, 1.0, 0.0]),
        ([3300.0], "mV", "V", [3.3]),
        ([1.5], "kWh", "Wh", [1500.0]),
        ([2.0], "kW", "W", [2000.0]),
        ([1.0], "W", "dBm", [30.0]),
        ([-60.0], "dBm", "dBm", [-60.0]),
    ],
)
def test_conversions_exact(values: list[float], src: str, dst: str, expected: list[float]) -> None:
    got = convert(np.array(values), src, dst)
    assert got.tolist() == expected


def test_inhg_to_hpa() -> None:
    assert convert(np.array([29.92]), "inHg", "hPa")[0] == pytest.approx(1013.21, abs=0.01)


def test_incompatible_and_unknown() -> None:
    with pytest.raises(IncompatibleUnit):
        conversion("kPa", "degC")
    with pytest.raises(UnknownUnit):
        conversion("furlongs", "degC")


def test_identity_conversion_is_free() -> None:
    c = conversion("°C", "degC")
    assert c.identity
    a = np.array([1.0, 2.0])
    assert c(a) is a


def test_non_finite_passes_through_conversion() -> None:
    got = convert(np.array([np.nan, np.inf]), "degF", "degC")
    assert np.isnan(got[0]) and got[1] == np.inf
