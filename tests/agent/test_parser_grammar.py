"""The embedded parser's grammar, rule by rule, over a small hand-made vocabulary (no data, no
platform): each rule is tested on phrasings of its own, not on the evaluation sets' sentences."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from sensorium.agent.intents import parse_command
from sensorium.agent.matcher import edit_distance, typo
from sensorium.agent.parser import Parser, Understanding, normalise
from sensorium.agent.plan import Plan, to_sql
from sensorium.agent.vocabulary import Vocabulary
from tests.agent.cases import close

NS = 1_000_000_000
NOW = int(datetime(2026, 3, 10, 12, tzinfo=UTC).timestamp()) * NS  # a Tuesday


def at(*a: int) -> int:
    return int(datetime(*a, tzinfo=UTC).timestamp()) * NS  # type: ignore[misc]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    v = Vocabulary()
    tags = {"device_id": "tag", "room": "tag", "location": "tag", "sensor_type": "tag"}
    v.columns = {
        "climate": {**tags, "temperature": "float", "humidity": "float", "battery": "float"},
        "energy": {**tags, "power": "float", "energy": "float"},
        "motion": {**tags, "motion": "boolean", "battery": "float"},
    }
    v.units = {"temperature": "degC", "humidity": "percent", "battery": "fraction"}
    devices = {"dev-00001": ("climate", "bedroom", "home-1"), "dev-00002": ("climate", "garage", "home-1"),
               "dev-00003": ("energy", "kitchen", "home-1"), "dev-00004": ("motion", "hallway", "home-2"),
               "dev-00005": ("climate", "living_room", "home-2"), "dev-00006": ("energy", "living_room", "home-2")}
    for dev, (m, room, loc) in devices.items():
        v.add_name("device_id", dev, None, "telemetry")
        v.add_name("room", room, None, "telemetry")
        v.add_name("location", loc, None, "telemetry")
        v.add_name("sensor_type", m, None, "telemetry")
        v.devices[dev] = {"room": room, "location": loc, "sensor_type": m, "measurements": m}
    return v


def ask(vocab: Vocabulary, text: str, previous: Plan | None = None) -> Understanding:
    return Parser(vocab, NOW).parse(text, previous)


def plan_of(vocab: Vocabulary, text: str, previous: Plan | None = None) -> Plan:
    u = ask(vocab, text, previous)
    assert u.kind == "query" and u.plan is not None, (text, u.decline, u.notes)
    return u.plan


# -- extents and superlatives → aggregations ------------------------------------------------------
@pytest.mark.parametrize(("text", "field", "agg"), [
    ("how warm did the bedroom get on sunday", "temperature", "max"),
    ("how cold did it get in the garage last night", "temperature", "min"),
    ("how chilly did the bedroom get yesterday", "temperature", "min"),
    ("how high did the humidity climb in the garage yesterday", "humidity", "max"),
    ("how low did the humidity drop in the bedroom this week", "humidity", "min"),
    ("the warmest reading in the living room yesterday", "temperature", "max"),
    ("coolest temperature in the garage last week", "temperature", "min"),
    ("how hot is the garage", "temperature", "latest"),  # no verb of reaching: the present
    ("how much did the temperature drop in the bedroom yesterday", "temperature", "change"),
])
def test_extent_and_superlative_words_choose_the_aggregation(vocab: Vocabulary, text: str, field: str, agg: str) -> None:
    p = plan_of(vocab, text)
    assert (p.field, p.aggregation, p.top_k) == (field, agg, None)


def test_how_many_readings_is_a_count_not_a_ranking(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "how many humidity readings did the garage sensor send today")
    assert (p.kind, p.aggregation, p.group_by, p.filters) == ("aggregate", "count", (), {"room": ("garage",)})


def test_a_total_number_is_a_count(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "the total number of alarms last week")
    assert (p.kind, p.aggregation) == ("alerts", "count")


# -- comparative thresholds --------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "field", "op", "value"), [
    ("was the bedroom ever colder than 15 degrees yesterday", "temperature", "<", 15.0),
    ("when was the garage hotter than 86 f this week", "temperature", ">", 30.0),
    ("when did the living room get warmer than 21", "temperature", ">", 21.0),
    ("how long was the bedroom more humid than 55% yesterday", "humidity", ">", 55.0),
    ("was the garage ever drier than 30 % last week", "humidity", "<", 30.0),
    ("how many readings were lower than 10 degrees in the garage", "temperature", "<", 10.0),
    ("was the kitchen power ever more than 1500 w yesterday", "power", ">", 1500.0),
])
def test_comparatives_are_thresholds_on_the_field_they_name(vocab: Vocabulary, text: str, field: str, op: str,
                                                            value: float) -> None:
    p = plan_of(vocab, text)
    assert p.kind == "threshold" and p.field == field and p.threshold is not None
    assert (p.threshold.op, round(p.threshold.value, 6)) == (op, value)


def test_which_rooms_passed_a_threshold(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "which rooms were colder than 12 degrees yesterday")
    assert (p.kind, p.aggregation, p.group_by) == ("threshold", "which", ("room",))
    assert '"room"' in to_sql(p)


# -- top-k ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "field", "k", "order", "group"), [
    ("the 2 most humid rooms yesterday", "humidity", 2, "desc", "room"),
    ("top 2 coldest rooms this week", "temperature", 2, "asc", "room"),
    ("what are the three warmest rooms", "temperature", 3, "desc", "room"),
    ("the 2 devices that used the most energy last week", "energy", 2, "desc", "device_id"),
    ("the room with the lowest humidity yesterday", "humidity", 1, "asc", "room"),
    ("which home was colder yesterday", "temperature", 1, "asc", "location"),
])
def test_ranking_phrases_are_top_k(vocab: Vocabulary, text: str, field: str, k: int, order: str, group: str) -> None:
    p = plan_of(vocab, text)
    assert (p.kind, p.field, p.top_k, p.order, p.group_by[0]) == ("topk", field, k, order, group)


def test_a_ranking_right_now_uses_the_latest_readings(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "which room is the warmest right now")
    assert (p.kind, p.aggregation, p.time.start_ns) == ("topk", "latest", None)


# -- grouping ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "group"), [
    ("day-by-day average temperature in the bedroom last week", ("day",)),
    ("break down last week's mean humidity by room", ("room",)),
    ("split the average power per device yesterday", ("device_id",)),
])
def test_grouping_phrases(vocab: Vocabulary, text: str, group: tuple[str, ...]) -> None:
    assert plan_of(vocab, text).group_by == group


def test_motion_by_hour_counts_the_true_readings(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "motion in the hallway by hour yesterday")
    assert (p.kind, p.aggregation, p.group_by, p.field_kind) == ("aggregate", "count", ("hour",), "boolean")
    assert "count_if" in to_sql(p)


# -- spelling ---------------------------------------------------------------------------------------------------
def test_typing_slips_of_known_words_are_read_and_said(vocab: Vocabulary) -> None:
    u = ask(vocab, "whats the currnt humidty in the bedrom")
    assert u.plan is not None and (u.plan.aggregation, u.plan.field, u.plan.filters) == (
        "latest", "humidity", {"room": ("bedroom",)})
    assert any("'currnt' read as 'current'" in n for n in u.notes)
    p = plan_of(vocab, "how much enrgy did the kitchn use yesterday")
    assert (p.field, p.aggregation, p.filters) == ("energy", "consumption", {"room": ("kitchen",)})


def test_typo_reads_one_slip_and_never_another_word() -> None:
    words = ["average", "march", "current", "show", "peak", "changed", "weekend"]
    assert typo("avergae", words) and typo("avergae", words).key == "average"  # type: ignore[union-attr]
    assert typo("curent", words).key == "current"  # type: ignore[union-attr]
    for w in ("match", "shown", "speak", "unchanged", "weekends", "avg"):
        assert typo(w, words) is None, w
    assert edit_distance("teh", "the") == 1 and edit_distance("kitten", "sitting") == 3


def test_digits_in_names_are_never_read_as_other_names(vocab: Vocabulary) -> None:
    for text, known in (("average temperature at home-3 yesterday", "home-1, home-2"),
                        ("what was dev-00009's average temperature", "dev-00001"),
                        ("average humidity on device 42", "dev-00001"),
                        ("temperature in room 7", "bedroom")):
        u = ask(vocab, text)
        assert u.kind == "decline" and "don't know" in (u.decline or "") and known in (u.decline or ""), (text, u.decline)
    p = plan_of(vocab, "average temperature at home-1 on dev-00001's sensor")
    assert p.filters == {"location": ("home-1",), "device_id": ("dev-00001",)}


# -- time words ---------------------------------------------------------------------------------------------------
def test_time_words_not_read_are_declined_never_replaced(vocab: Vocabulary) -> None:
    for text in ("average temperature on weekends", "average humidity in the mornings", "mean power in summer",
                 "average temperature this weekend", "average temperature on the 3rd"):
        u = ask(vocab, text)
        assert u.kind == "decline" and "time" in (u.decline or ""), (text, u.decline)
    p = plan_of(vocab, "average bedroom temperature over the weekend")
    assert (p.time.start_ns, p.time.end_ns) == (at(2026, 3, 7), at(2026, 3, 9))
    p = plan_of(vocab, "bedroom temperature yesterday at 7 pm")
    assert (p.time.start_ns, p.time.end_ns) == (at(2026, 3, 9, 19), at(2026, 3, 9, 20))


# -- energy is a meter ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "how many kwh did the kitchen use last week",
    "energy usage in the living room since monday 8 am",
    "the kitchen's electricity consumption yesterday",
    "total energy at home-1 yesterday",
])
def test_energy_used_is_last_minus_first(vocab: Vocabulary, text: str) -> None:
    p = plan_of(vocab, text)
    assert (p.field, p.aggregation) == ("energy", "consumption")


def test_a_field_reported_by_one_kind_of_device_is_read_from_its_table(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "battery of dev-00004 now")
    assert (p.kind, p.measurements) == ("latest", ("motion",))
    union = plan_of(vocab, "latest battery")
    assert union.measurements == ("climate", "motion")
    assert 'SELECT "battery", "device_id", "location", "room", "time" FROM "motion"' in to_sql(union)  # columns it shows


# -- follow-ups ------------------------------------------------------------------------------------------------------
def test_follow_ups_keep_places_and_time(vocab: Vocabulary) -> None:
    first = plan_of(vocab, "average temperature in the bedroom last week")
    unit = plan_of(vocab, "now in fahrenheit", first)
    assert (unit.unit, unit.filters, unit.time, unit.aggregation) == ("degF", first.filters, first.time, "mean")
    high = plan_of(vocab, "and the lowest?", first)
    assert (high.aggregation, high.field, high.filters, high.time) == ("min", "temperature", first.filters, first.time)
    other = plan_of(vocab, "what about humidity?", first)
    assert (other.field, other.aggregation, other.filters, other.time, other.unit) == (
        "humidity", "mean", first.filters, first.time, "percent")
    hourly = plan_of(vocab, "break it down by day", first)
    assert (hourly.group_by, hourly.filters) == (("day",), first.filters)
    # a new question naming its own field is not a follow-up
    fresh = plan_of(vocab, "average humidity yesterday", first)
    assert fresh.filters == {}


# -- commands ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "target", "value", "unit"), [
    ("make the bedroom 21 degrees", "bedroom", 21.0, "degC"),
    ("heat the living room to 72 degrees", "living room", 72.0, "degF"),
    ("change the garage temperature to 60 F", "garage", 60.0, "degF"),
    ("cool the bedroom down to 19 °c", "bedroom", 19.0, "degC"),
    ("keep the garage at 12 degrees please", "garage", 12.0, "degC"),
])
def test_set_point_verbs_are_commands(vocab: Vocabulary, text: str, target: str, value: float, unit: str) -> None:
    assert ask(vocab, text).kind == "command"
    intent = parse_command(text)
    assert intent is not None and intent.action == "set"
    assert (intent.target, intent.parameters["value"], intent.parameters["unit"]) == (target, value, unit)


def test_change_and_drop_in_questions_are_not_commands_nor_writes(vocab: Vocabulary) -> None:
    assert ask(vocab, "change in the bedroom temperature yesterday").kind == "query"
    assert ask(vocab, "did the garage ever drop below 5 degrees").kind == "query"
    assert ask(vocab, "drop the climate table").kind == "decline"


# -- scope of a question -----------------------------------------------------------------------------------------------
def test_leaving_a_place_out_pools_every_other_one(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "average temperature excluding the garage yesterday")
    assert p.filters == {"room": ("bedroom", "hallway", "kitchen", "living_room")}
    assert p.group_by == ()  # one pool, not a comparison
    assert ask(vocab, "average temperature except the attic").kind == "decline"


def test_which_day_ranks_time_buckets(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "which day last week was the coldest in the garage")
    assert (p.kind, p.top_k, p.order, p.group_by, p.time.start_ns) == ("topk", 1, "asc", ("day",), at(2026, 3, 2))
    p = plan_of(vocab, "what hour was the busiest for motion in the hallway yesterday")
    assert (p.kind, p.aggregation, p.group_by, p.field_kind) == ("topk", "count", ("hour",), "boolean")


def test_the_total_power_used_is_the_meters(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "total power consumption in the kitchen yesterday")
    assert (p.field, p.aggregation) == ("energy", "consumption")


def test_ranking_verbs_rank_every_one(vocab: Vocabulary) -> None:
    p = plan_of(vocab, "rank the rooms by humidity yesterday")
    assert (p.kind, p.top_k, p.group_by, p.field) == ("topk", 100, ("room",), "humidity")


@pytest.mark.parametrize(("text", "why"), [
    ("highest and lowest temperature in the bedroom yesterday", "one statistic"),
    ("was the bedroom warmer yesterday or the day before", "one time range"),
    ("average humidity this week compared with last week", "one time range"),
    ("will the garage be colder than 5 degrees tomorrow", "threshold"),
    ("the standard deviation of the garage temperature", "standard deviation"),
    ("temperature and humidity in the bedroom yesterday", "one measurement"),
    ("sum of the temperature in the garage yesterday", "not a quantity"),
    ("was the garage temperature stable yesterday", "stable"),
])
def test_what_one_plan_cannot_answer_is_declined(vocab: Vocabulary, text: str, why: str) -> None:
    u = ask(vocab, text)
    assert u.kind == "decline" and why in (u.decline or ""), (text, u.decline)


def test_more_time_and_statistics_words(vocab: Vocabulary) -> None:
    ever = plan_of(vocab, "the highest humidity ever recorded in the garage")
    assert (ever.aggregation, ever.time.start_ns, ever.time.end_ns) == ("max", None, None)
    assert plan_of(vocab, "median temperature in the bedroom yesterday").aggregation == "median"
    ago = plan_of(vocab, "bedroom temperature 3 hours ago")
    assert (ago.time.start_ns, ago.time.end_ns) == (NOW - 3 * 3600 * NS, NOW - 2 * 3600 * NS)
    last = plan_of(vocab, "when was the last alert in the garage")
    assert (last.kind, last.aggregation, last.filters) == ("alerts", "latest", {"room": ("garage",)})
    report = plan_of(vocab, "how many devices report humidity")
    assert (report.kind, report.measurements) == ("devices", ("climate",))


# -- normalising -----------------------------------------------------------------------------------------------------
def test_normalise_contractions_possessives_and_hyphens() -> None:
    assert normalise("What's dev-00009's hour-by-hour temp?") == "what is dev-00009 hour by hour temp"
    assert normalise("whats its value") == "what is its value"


# -- scoring -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("got", "expected", "same"), [
    ([1.0, 2.0], 3.0, False), ("dev-00001", 3.0, False), (3.0, [3.0], False), (None, 3.0, False),
    ({"a": 1.0}, 1.0, False), (True, 1, False), (1, True, False), (3, 3.0, True), ([1, 2.0], [1.0, 2], True),
])
def test_close_scores_a_type_mismatch_as_wrong(got: Any, expected: Any, same: bool) -> None:
    assert close(got, expected) is same


@pytest.mark.parametrize("text", ["mean humidity upstairs last tuesday", "how warm was it outside yesterday",
                                  "average temperature downstairs"])
def test_a_place_said_without_a_preposition_is_declined_not_dropped(vocab: Vocabulary, text: str) -> None:
    u = ask(vocab, text)
    assert u.kind == "decline" and "don't know a room, place or device" in (u.decline or ""), (text, u.decline)
    assert ask(vocab, "mean humidity last tuesday").kind == "query"  # the rest is understood
