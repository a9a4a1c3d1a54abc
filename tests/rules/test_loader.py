"""Rule files: the example loads; every kind of mistake is reported with its line and a precise
message (TOML and YAML)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sensorium.rules.loader import (
    RuleFileError,
    check_file,
    check_text,
    default_rules_text,
    load_default_rules,
    load_rules,
    parse_rules,
)
from sensorium.rules.model import (
    AbsenceRule,
    CountRule,
    RateRule,
    RuleSet,
    SequenceRule,
    ThresholdRule,
    format_duration,
    parse_duration,
)


def problems(text: str, fmt: str = "toml") -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in check_text(textwrap.dedent(text).lstrip("\n"), fmt)]  # type: ignore[arg-type]


GOOD = """
[[rules]]
name = "hot"
kind = "threshold"
field = "temperature"
above = { warning = 50, critical = 60 }
"""


def test_the_shipped_example_loads_and_covers_every_kind() -> None:
    assert check_text(default_rules_text()) == []
    rules = load_default_rules()
    assert load_rules(None) == rules
    by_kind = {type(r) for r in rules}
    assert by_kind == {ThresholdRule, RateRule, AbsenceRule, SequenceRule, CountRule}
    temp = rules.get("temperature-range")
    assert temp.above == {"warning": 50, "critical": 60} and temp.below == {"warning": -10, "critical": -20}
    assert rules.get("humidity-range").below == {"warning": 20, "critical": 10}
    assert rules.get("pressure-range").above == {"warning": 1100, "critical": 1150}
    assert rules.get("device-silent").after == 600 * 10**9
    assert rules.get("temperature-erratic").target == "temperature:std_10"
    surge = rules.get("temperature-surge")
    assert (surge.first.gt, surge.then.gt, surge.within) == (100, 150, 10 * 10**9)


def test_every_shipped_rule_is_commented() -> None:
    lines = default_rules_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == "[[rules]]":
            assert lines[i - 1].startswith("#"), f"rule at line {i + 1} has no comment above it"


def test_good_file_from_disk_toml_and_yaml(tmp_path: Path) -> None:
    p = tmp_path / "rules.toml"
    p.write_text(GOOD)
    assert check_file(p) == []
    rs = load_rules(p)
    assert rs.rules[0].name == "hot"
    y = tmp_path / "rules.yaml"
    y.write_text(
        "rules:\n"
        "  - name: hot\n"
        "    kind: threshold\n"
        "    field: temperature\n"
        "    above: {warning: 50, critical: 60}\n"
        "    for: 5m\n"
        "  - name: silent\n"
        "    kind: absence\n"
        "    group_by: [device_id]\n"
        "    after: 10m\n"
    )
    assert check_file(y) == []
    hot, silent = load_rules(y).rules
    assert isinstance(hot, ThresholdRule) and isinstance(silent, AbsenceRule)
    assert hot.for_ == 300 * 10**9 and silent.group_by == ("device_id",)


def test_unknown_key_with_suggestion() -> None:
    assert problems(GOOD + 'deadbnd = 1\n') == [(6, "rule 'hot': unknown key 'deadbnd' (did you mean 'deadband'?)")]


def test_unknown_key_inside_a_condition() -> None:
    text = """
    [[rules]]
    name = "c"
    kind = "count"
    field = "voltage"
    count = 3
    within = "1m"
    condition = { gtt = 50 }
    """
    assert problems(text) == [(7, "rule 'c': unknown key 'gtt' in 'condition' (did you mean 'gt'?)")]


def test_bad_duration() -> None:
    (p,) = problems(GOOD + 'for = "5 minutes"\n')
    assert p[0] == 6
    assert p[1].startswith("rule 'hot': 'for': bad duration '5 minutes'")
    assert "e.g. 30s, 5m, 1h30m" in p[1]


def test_levels_out_of_order() -> None:
    text = """
    [[rules]]
    name = "hot"
    kind = "threshold"
    field = "temperature"
    above = { warning = 60, critical = 50 }
    below = { warning = -20, critical = -10 }
    """
    assert problems(text) == [
        (5, "rule 'hot': levels out of order in 'above': critical (50) must be higher than warning (60)"),
        (6, "rule 'hot': levels out of order in 'below': critical (-10) must be lower than warning (-20)"),
    ]


def test_overlapping_above_and_below() -> None:
    text = GOOD + "below = { warning = 55 }\n"
    assert problems(text) == [
        (6, "rule 'hot': 'below' warning (55) is not under 'above' warning (50): a value could be both")
    ]


def test_unknown_level_name() -> None:
    text = GOOD.replace("critical = 60", "critcal = 60")
    assert problems(text) == [
        (5, "rule 'hot': unknown level 'critcal' in 'above' (did you mean 'critical'?); levels are info, warning, critical")
    ]


def test_duplicate_names_point_at_the_second_and_name_the_first() -> None:
    assert problems(GOOD + GOOD) == [(8, "duplicate rule name 'hot' (first defined on line 2)")]


def test_unknown_kind_and_missing_kind() -> None:
    text = """
    [[rules]]
    name = "a"
    kind = "treshold"
    field = "x"

    [[rules]]
    name = "b"
    field = "x"
    """
    assert problems(text) == [
        (3, "rule 'a': unknown kind 'treshold' (did you mean 'threshold'?); kinds are threshold, rate, absence, sequence, count"),
        (6, "rule 'b': missing 'kind' (one of threshold, rate, absence, sequence, count)"),
    ]


def test_missing_keys_point_at_the_rule() -> None:
    text = """
    [[rules]]
    name = "s"
    kind = "sequence"
    first = { gt = 100 }
    then = { gt = 150 }
    """
    assert problems(text) == [(1, "rule 's': missing 'field'"), (1, "rule 's': missing 'within'")]


def test_no_levels_and_wrong_types() -> None:
    text = """
    [[rules]]
    name = "t"
    kind = "threshold"
    field = "x"
    deadband = -1

    [[rules]]
    name = "c"
    kind = "count"
    field = "x"
    condition = { gt = 1 }
    count = "three"
    within = "1m"

    [[rules]]
    name = "none"
    kind = "rate"
    field = "x"
    """
    assert problems(text) == [
        (5, "rule 't': 'deadband' must be >= 0, not -1"),
        (12, "rule 'c': 'count' must be a whole number, not 'three'"),
        (15, "rule 'none': rule 'none' needs 'above' and/or 'below' levels"),
    ]


def test_unknown_severity_and_top_level_key() -> None:
    text = """
    version = 1
    [[rules]]
    name = "gone"
    kind = "absence"
    after = "10m"
    severity = "urgent"
    """
    assert problems(text) == [
        (1, "unknown top-level key 'version'"),
        (6, "rule 'gone': unknown severity 'urgent'; use one of info, warning, critical"),
    ]


def test_rule_in_sub_tables_gets_its_lines() -> None:
    text = """
    [[rules]]
    name = "hot"
    kind = "threshold"
    field = "t"

    [rules.above]
    warning = 50
    critcal = 60
    """
    assert problems(text)[0][0] == 6


def test_toml_syntax_error_line() -> None:
    assert problems('[[rules]]\nname = "a"\nkind = threshold\n') == [
        (3, "TOML syntax error: Invalid value")
    ]


def test_yaml_mistakes_have_lines() -> None:
    text = """
    rules:
      - name: hot
        kind: threshold
        field: temperature
        abve: {warning: 50}
      - name: hot
        kind: count
        field: v
        condition: {gt: 1}
        count: 2
        within: soon
    """
    assert problems(text, "yaml") == [
        (5, "rule 'hot': unknown key 'abve' (did you mean 'above'?)"),
        (6, "duplicate rule name 'hot' (first defined on line 2)"),
        (11, "rule 'hot': 'within': bad duration 'soon': use a number and a unit (ms, s, m, h, d), e.g. 30s, 5m, 1h30m"),
    ]


def test_yaml_syntax_error_and_duplicate_key() -> None:
    assert problems("rules:\n  - name: [a\n", "yaml")[0][0] == 3
    assert problems("rules:\n  - name: a\n    name: b\n", "yaml") == [(3, "YAML: key 'name' given twice")]


def test_parse_rules_raises_with_every_problem(tmp_path: Path) -> None:
    with pytest.raises(RuleFileError) as e:
        parse_rules(GOOD + GOOD + "bogus = 1\n", "toml", "x.toml")
    assert [p.line for p in e.value.problems] == [9, 13]
    assert "x.toml:9: duplicate rule name 'hot'" in str(e.value)
    assert e.value.problems[0].to_dict()["line"] == 9
    missing = check_file(tmp_path / "nope.toml")
    assert missing[0].line == 1 and "cannot read" in missing[0].message


def test_durations_and_python_api() -> None:
    assert parse_duration("1h30m") == 5400 * 10**9
    assert parse_duration("250ms") == 250_000_000
    assert parse_duration(90) == 90 * 10**9
    assert format_duration(5400 * 10**9) == "1h30m"
    assert format_duration(1_500_000_000) == "1.5s"
    rule = ThresholdRule(name="hot", field="temperature", above={"critical": 60, "warning": 50}, for_="5m")
    assert list(rule.above or {}) == ["warning", "critical"]  # ordered by severity
    assert rule.model_dump(by_alias=True)["for"] == "5m"
    rs = RuleSet(rules=(rule,))
    assert RuleSet.model_validate(rs.model_dump(by_alias=True)) == rs
    with pytest.raises(ValueError, match="duplicate rule name"):
        RuleSet(rules=(rule, rule))
    assert rule.matches_field("temperature") and not rule.matches_field("temperature:avg_10")
    glob = ThresholdRule(name="g", field="temp*", above={"info": 1})
    assert glob.matches_field("temperature") and not glob.matches_field("temperature:std_10")
