"""Line protocol: every spec feature and error class, both parser paths, and round trips."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sensorium.errors import BadRequest
from sensorium.ingest import lineprotocol as lp
from sensorium.ingest.lineprotocol import parse_lines, serialize_lines, serialize_points
from sensorium.schema import (
    LINE,
    RESERVED,
    TAG_TYPE,
    TIME,
    TIME_TYPE,
    ParseResult,
    Point,
    batch_to_points,
)

NOW = 1_767_225_600_000_000_000
EXAMPLE = (
    "climate,device_id=dev-00042,location=home-3,room=kitchen "
    "temperature=21.53,humidity=45.1,battery=0.87,rssi=-67i 1700000000000000000"
)


def parse(body: str | bytes, **kw: Any) -> ParseResult:
    return parse_lines(body, now_ns=NOW, **kw)


def slow(body: str | bytes, precision: str = "ns") -> ParseResult:
    return lp._parse(body, precision, NOW, fast=False)


def rows(r: ParseResult, m: str) -> list[dict[str, Any]]:
    t = r.batches[m]
    cols = {c: (t[c].cast(pa.int64()) if c == TIME else t[c]).to_pylist() for c in t.column_names}
    return [{c: v[i] for c, v in cols.items() if v[i] is not None} for i in range(t.num_rows)]


def one(body: str, **kw: Any) -> dict[str, Any]:
    r = parse(body, **kw)
    assert r.rejects == [], r.rejects
    (m,) = r.batches
    (row,) = rows(r, m)
    return row


def reasons(body: str | bytes, **kw: Any) -> list[tuple[int, str]]:
    return [(x.line, x.reason) for x in parse(body, **kw).rejects]


def reason(line: str) -> str:
    (x,) = reasons(line)
    return x[1]


def plain(t: pa.Table) -> pa.Table:
    """Tags decoded, so that tables built with different dictionaries compare equal."""
    return pa.table(
        {
            c: t[c].cast(pa.string()) if pa.types.is_dictionary(t[c].type) else t[c]
            for c in t.column_names
        }
    )


def same(a: ParseResult, b: ParseResult) -> None:
    assert a.lines_total == b.lines_total
    assert [(x.line, x.reason, x.raw) for x in a.rejects] == [
        (x.line, x.reason, x.raw) for x in b.rejects
    ]
    assert sorted(a.batches) == sorted(b.batches)
    for m in a.batches:
        assert a.batches[m].schema == b.batches[m].schema, m
        assert plain(a.batches[m]).equals(plain(b.batches[m])), (m, a.batches[m], b.batches[m])


# -- the batch contract ---------------------------------------------------------------------------


def test_example_line_types_and_column_order() -> None:
    r = parse(EXAMPLE)
    t = r.batches["climate"]
    assert t.column_names == [
        TIME,
        "device_id",
        "location",
        "room",
        "battery",
        "humidity",
        "rssi",
        "temperature",
        LINE,
    ]
    assert t.schema.field(TIME).type == TIME_TYPE
    assert all(t.schema.field(c).type == TAG_TYPE for c in ("device_id", "location", "room"))
    assert t.schema.field("temperature").type == pa.float64()
    assert t.schema.field("rssi").type == pa.int64()
    assert t.schema.field(LINE).type == pa.int32()
    assert rows(r, "climate") == [
        {
            TIME: 1700000000000000000,
            "device_id": "dev-00042",
            "location": "home-3",
            "room": "kitchen",
            "battery": 0.87,
            "humidity": 45.1,
            "rssi": -67,
            "temperature": 21.53,
            LINE: 1,
        }
    ]
    assert r.lines_total == 1 and r.rejects == [] and r.values == 4 and r.rows == 1


def test_measurements_split_and_missing_tags_and_fields_are_null() -> None:
    r = parse("a,x=1 f=1 1\nb g=2i 2\na,y=2 f=3,h=true 3\n")
    assert sorted(r.batches) == ["a", "b"]
    assert rows(r, "a") == [
        {TIME: 1, "x": "1", "f": 1.0, LINE: 1},
        {TIME: 3, "y": "2", "f": 3.0, "h": True, LINE: 3},
    ]
    assert rows(r, "b") == [{TIME: 2, "g": 2, LINE: 2}]
    assert r.batches["a"].column_names == [TIME, "x", "y", "f", "h", LINE]


def test_unsigned_bool_string_fields() -> None:
    row = one('m u=18446744073709551615u,s="hi there, you=me",b=T,z=0u 5')
    assert row == {TIME: 5, "u": 2**64 - 1, "s": "hi there, you=me", "b": True, "z": 0, LINE: 1}
    t = parse('m u=1u,s="x",b=f 1').batches["m"]
    assert [t.schema.field(c).type for c in ("b", "s", "u")] == [
        pa.bool_(),
        pa.string(),
        pa.uint64(),
    ]


@pytest.mark.parametrize(
    "text,value",
    [
        ("1", 1.0),
        ("1.5", 1.5),
        ("-1e3", -1000.0),
        ("1E+3", 1000.0),
        (".5", 0.5),
        ("1.", 1.0),
        ("-0.0", -0.0),
        ("1.7976931348623157e308", 1.7976931348623157e308),
        ("4.9e-324", 5e-324),
        ("007", 7.0),
        ("1e-400", 0.0),
    ],
)
def test_float_syntax(text: str, value: float) -> None:
    got = one(f"m f={text} 1")["f"]
    assert got == value and math.copysign(1, got) == math.copysign(1, value)


@pytest.mark.parametrize(
    "text",
    ["+1", "1e", ".", "-", "1.2.3", "inf", "-inf", "nan", "NaN", "1_0", "0x10", "1f", "e5", "١"],
)
def test_float_syntax_rejected(text: str) -> None:
    assert reason(f"m f={text} 1") == f"invalid field value {text!r} for field 'f'"


@pytest.mark.parametrize(
    "text,value",
    [
        ("12i", 12),
        ("-12i", -12),
        ("0i", 0),
        ("-0i", 0),
        ("007i", 7),
        ("9223372036854775807i", 2**63 - 1),
        ("-9223372036854775808i", -(2**63)),
    ],
)
def test_integers(text: str, value: int) -> None:
    assert one(f"m f={text} 1")["f"] == value


def test_integer_errors() -> None:
    assert (
        reason("m f=9223372036854775808i 1")
        == "integer out of range for field 'f': 9223372036854775808i"
    )
    assert reason("m f=-9223372036854775809i 1").startswith("integer out of range")
    assert (
        reason("m f=18446744073709551616u 1")
        == "unsigned integer out of range for field 'f': 18446744073709551616u"
    )
    assert reason("m f=1e999 1") == "float out of range for field 'f': 1e999"
    for bad in ("-1u", "+1i", "1.5i", "0x1fi", "i", "u", "1iu", "1 i"):
        assert "invalid" in reason(f"m f={bad} 1") or "timestamp" in reason(f"m f={bad} 1")


@pytest.mark.parametrize(
    "text,value",
    [(t, True) for t in ("t", "T", "true", "True", "TRUE")]
    + [(f, False) for f in ("f", "F", "false", "False", "FALSE")],
)
def test_booleans(text: str, value: bool) -> None:
    got = one(f"m b={text} 1")["b"]
    assert got is value


@pytest.mark.parametrize("text", ["tRUE", "yes", "truee", "FaLse", "0b"])
def test_boolean_lookalikes_are_rejected(text: str) -> None:
    assert reason(f"m b={text} 1") == f"invalid field value {text!r} for field 'b'"


# -- escapes (the table of https://docs.influxdata.com/influxdb/v2/reference/syntax/line-protocol/) --


def test_escapes_in_names() -> None:
    r = parse("my\\ Meas\\,ure,tag\\ Key1=tag\\ Value1,t\\=k=v\\,1\\=2 field\\ k\\,e\\=y=100i 1")
    (m,) = r.batches
    assert m == "my Meas,ure"
    assert rows(r, m) == [
        {TIME: 1, "tag Key1": "tag Value1", "t=k": "v,1=2", "field k,e=y": 100, LINE: 1}
    ]


def test_escapes_in_strings() -> None:
    assert one('m s="\\"string\\" within a string" 1')["s"] == '"string" within a string'
    assert one('m s="back\\\\slash" 1')["s"] == "back\\slash"
    assert one('m s="a\\nb" 1')["s"] == "a\\nb"  # not an escape: kept
    assert one('m s="🍭 Launch 🚀" 1')["s"] == "🍭 Launch 🚀"
    assert one('m s="" 1')["s"] == ""


@pytest.mark.parametrize(
    "raw,meant",
    [
        ("\\", "\\"),
        ("\\\\", "\\"),
        ("\\\\\\", "\\\\"),
        ("\\\\\\\\", "\\\\"),
        ("\\\\\\\\\\", "\\\\\\"),
    ],
)
def test_backslash_table(raw: str, meant: str) -> None:
    r = parse(f"m{raw}x,t=a{raw}b f{raw}k=1 1")
    (m,) = r.batches
    assert m == f"m{meant}x"
    assert rows(r, m) == [{TIME: 1, "t": f"a{meant}b", f"f{meant}k": 1.0, LINE: 1}]


def test_backslash_before_other_characters_is_literal() -> None:
    r = parse("m\\=x,t\\a=b\\c f=1 1")
    assert rows(r, "m\\=x") == [{TIME: 1, "t\\a": "b\\c", "f": 1.0, LINE: 1}]


def test_quotes_outside_string_fields_are_literal() -> None:
    r = parse('\'m\',"t"="v" "f"=1 1')
    assert rows(r, "'m'") == [{TIME: 1, '"t"': '"v"', '"f"': 1.0, LINE: 1}]


# -- lines, timestamps, precision -----------------------------------------------------------------


def test_blank_and_comment_lines_and_physical_line_numbers() -> None:
    body = "# header\n\nm f=1 1\n   \n\t# indented comment\nm f=2 2\nbad\n"
    r = parse(body)
    assert r.lines_total == 3
    assert [row[LINE] for row in rows(r, "m")] == [3, 6]
    assert reasons(body) == [(7, "missing fields")]
    assert (
        r.raw(7) == "bad" and r.raw(3) == "m f=1 1" and r.raw(1) == "# header" and r.raw(99) == ""
    )


def test_crlf_and_whitespace_tolerance() -> None:
    r = parse("m f=1 1\r\nm  f=2   2\r\n  m f=3 3\t\r\nm f=4\r\n")
    assert r.rejects == []
    assert [(x[TIME], x["f"]) for x in rows(r, "m")] == [(1, 1.0), (2, 2.0), (3, 3.0), (NOW, 4.0)]
    assert r.raw(1) == "m f=1 1"


def test_missing_timestamp_uses_one_now_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(range(1000, 2000))
    monkeypatch.setattr(lp._time, "time_ns", lambda: next(ticks))
    r = parse_lines('m f=1\nm f=2\nm,t=x\\ y g=3\nm s="s\\\\"\n')
    assert r.rejects == []
    t = r.batches["m"]
    assert t[TIME].cast(pa.int64()).to_pylist() == [1000] * 4


@pytest.mark.parametrize(
    "precision,factor",
    [("ns", 1), ("n", 1), ("us", 1_000), ("u", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000)],
)
def test_precision(precision: str, factor: int) -> None:
    r = parse("m f=1 -3\nm f=2 1700000000\nm f=3", precision=precision)
    assert [x[TIME] for x in rows(r, "m")] == [-3 * factor, 1700000000 * factor, NOW]


@pytest.mark.parametrize("precision", ["", "h", "m", "NS", "sec", "nanoseconds"])
def test_bad_precision_is_bad_request(precision: str) -> None:
    with pytest.raises(BadRequest, match="precision"):
        parse("m f=1", precision=precision)


def test_timestamp_errors() -> None:
    assert reason("m f=1 12a") == "invalid timestamp '12a'"
    assert reason("m f=1 1.5") == "invalid timestamp '1.5'"
    assert reason("m f=1 1 2") == "invalid timestamp '1 2'"
    assert reason("m f=1 9223372036854775807") == "timestamp out of range: 9223372036854775807"
    assert reason("m f=1 99999999999999999999") == "timestamp out of range: 99999999999999999999"
    assert reasons("m f=1 9300000000000", precision="s") == [
        (1, "timestamp out of range: 9300000000000")
    ]
    assert one("m f=1 9223372036854775806")[TIME] == 9223372036854775806


# -- errors: one bad line rejects only that line --------------------------------------------------


@pytest.mark.parametrize(
    "line,why",
    [
        ("m", "missing fields"),
        ("m ", "missing fields"),
        ("m,t=1", "missing fields"),
        (",t=1 f=1", "missing measurement"),
        (" f=1", "missing fields"),
        ("m,=1 f=1", "missing tag key"),
        ("m, f=1", "missing tag key"),
        ("m,t f=1", "invalid tag 't': missing '='"),
        ("m,t= f=1", "missing tag value for tag 't'"),
        ("m,t=a=b f=1", "invalid tag value for tag 't': unescaped '='"),
        ("m f", "invalid field 'f': missing '='"),
        ("m =1", "missing field key"),
        ("m f=", "missing field value for field 'f'"),
        ("m f=1,", "missing field key"),
        ("m f=1,,g=2", "missing field key"),
        ("m temp=abc", "invalid field value 'abc' for field 'temp'"),
        ('m s="abc', "unterminated string for field 's'"),
        ('m s="abc\\"', "unterminated string for field 's'"),
        ('m s="a"b', "invalid field value for field 's': text after the string"),
        ("m f=1 2 3", "invalid timestamp '2 3'"),
    ],
)
def test_syntax_errors(line: str, why: str) -> None:
    body = f"ok f=1 1\n{line}\nok f=2 2\n"
    r = parse(body)
    assert [(x.line, x.reason, x.raw) for x in r.rejects] == [(2, why, line)]
    assert [x[LINE] for x in rows(r, "ok")] == [1, 3]
    assert r.lines_total == 3
    same(r, slow(body))


def test_duplicate_tag_key_rejects_the_line() -> None:
    assert reasons("m,a=1,b=2,a=3 f=1 1\nm,a=1 f=2 2") == [(1, "duplicate tag key 'a'")]


def test_duplicate_field_key_last_wins() -> None:
    assert one("m f=1,g=2,f=3 1")["f"] == 3.0
    row = one('m f=1i,f="x" 1')
    assert row["f"] == "x"


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_reserved_names(name: str) -> None:
    assert reason(f"m,{name}=x f=1 1") == f"tag key '{name}' is reserved"
    assert reason(f"m {name}=1 1") == f"field key '{name}' is reserved"


def test_reserved_measurement_names_are_fine() -> None:
    assert one("time f=1 1")["f"] == 1.0


def test_tag_and_field_with_one_name() -> None:
    assert reason("m,x=1 x=2 1") == "column 'x' is both a tag and a field"


def test_type_conflict_first_occurrence_wins() -> None:
    body = "m x=1 1\nm x=2i 2\nm x=true 3\nn x=4i 4\nm x=5 5\n"
    r = parse(body)
    assert [(x.line, x.reason, x.measurement) for x in r.rejects] == [
        (
            2,
            "field type conflict: field 'x' is integer in line 2, float earlier in this request",
            "m",
        ),
        (
            3,
            "field type conflict: field 'x' is boolean in line 3, float earlier in this request",
            "m",
        ),
    ]
    assert [x[LINE] for x in rows(r, "m")] == [1, 5]
    assert rows(r, "n") == [{TIME: 4, "x": 4, LINE: 4}]


def test_tag_field_role_conflict_across_lines() -> None:
    assert reasons("m,x=a f=1 1\nm x=2 2") == [
        (2, "column 'x' is a field in line 2, a tag earlier in this request")
    ]
    assert reasons("m x=2 1\nm,x=a f=1 2") == [
        (2, "column 'x' is a tag in line 2, a field earlier in this request")
    ]


def test_invalid_utf8_rejects_only_that_line() -> None:
    r = parse(b"m f=1 1\nm,t=\xff\xfe f=2 2\nm f=3 3\n")
    assert [(x.line, x.reason) for x in r.rejects] == [(2, "invalid UTF-8")]
    assert r.raw(2) == "m,t=\ufffd\ufffd f=2 2"
    assert [x[LINE] for x in rows(r, "m")] == [1, 3] and r.lines_total == 3


def test_empty_bodies() -> None:
    for body in ("", b"", "\n\n", "# only\n", "   "):
        r = parse(body)
        assert r.batches == {} and r.rejects == [] and r.lines_total == 0


def test_str_and_bytes_bodies_agree() -> None:
    body = 'm,t=é f="ü",g=1i 1\n'
    same(parse(body), parse(body.encode()))
    same(parse(body), parse(memoryview(body.encode())))


def test_unicode_and_surrogates_never_raise() -> None:
    r = parse("m,t=\ud800 f=1 1\nm f=2 2")
    assert [x.reason for x in r.rejects] == ["invalid UTF-8"]


# -- the two paths agree ----------------------------------------------------------------------------


def test_fast_path_takes_typical_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = lp._parse_line
    monkeypatch.setattr(lp, "_parse_line", lambda s, f: calls.append(s) or real(s, f))
    body = (
        "\n".join(EXAMPLE.replace("00042", f"{i:05d}") for i in range(500))
        + '\nm s="plain, quoted" 1\n'
    )
    r = parse(body)
    assert r.rows == 501 and calls == []
    parse('m s="esc\\"aped" 1\nm f=abc 2\n')
    assert len(calls) == 2


MIXED = "\n".join(
    [
        EXAMPLE,
        'climate,device_id=d1 status="ok, fine",temperature=20 1700000000000000001',
        'climate,device_id=d\\ 2 note="say \\"hi\\"",temperature=19.5 1700000000000000002',
        "climate,device_id=d3 temperature=abc 1700000000000000003",
        "climate,device_id=d4 temperature=21i 1700000000000000004",
        "",
        "# comment",
        "climate,device_id=d5 temperature=22,temperature=23 1700000000000000005",
        "  climate,device_id=d6 temperature=24",
        "weather,station=s1 rain=0.2,wind=3u 1700000000000000006",
        "climate,device_id=d1,device_id=d2 temperature=1 7",
        "climate,time=x temperature=1 8",
        "climate,device_id=d7 battery=t,rssi=-50i",
    ]
)


def test_fast_and_slow_paths_agree_on_a_mixed_body() -> None:
    same(parse(MIXED), slow(MIXED))


def test_chunks_and_slow_lines_keep_line_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lp, "_FAST_LINES", 3)
    fast = parse(MIXED * 3)
    monkeypatch.setattr(lp, "_FAST_LINES", 1 << 18)
    same(fast, slow(MIXED * 3))
    lines = fast.batches["climate"][LINE].to_pylist()
    assert lines == sorted(lines)


_NAME = st.text(alphabet="ab_ ,=\"'\\#é\t", min_size=0, max_size=5)
_VALUE = st.sampled_from(
    [
        "1",
        "1.5",
        "-1e3",
        ".5",
        "1.",
        "+1",
        "1i",
        "-7i",
        "99999999999999999999i",
        "9223372036854775807i",
        "1u",
        "-1u",
        "18446744073709551616u",
        "t",
        "TRUE",
        "False",
        "tru",
        '"s"',
        '"a b,c=d"',
        '"x\\"y"',
        '"\\\\"',
        '"unterminated',
        '""',
        "nan",
        "inf",
        "0x10",
        "1_0",
        "",
        "abc",
        "1e999",
        '"q"x',
        "١",
    ]
)
_TS = st.sampled_from(
    [
        "",
        " 123",
        " -5",
        " 1a",
        " 9223372036854775806",
        " 99999999999999999999",
        "  7",
        " 1 2",
        "\t3",
    ]
)


@st.composite
def lp_lines(draw: st.DrawFn) -> str:
    meas = draw(st.sampled_from(["m", "n", "m\\ x", "#c", " m", "", "m,"]) | _NAME)
    tags = "".join(f",{draw(_NAME)}={draw(_NAME)}" for _ in range(draw(st.integers(0, 3))))
    fields = ",".join(
        f"{draw(st.sampled_from(['f', 'g', 'h', 'time']) | _NAME)}={draw(_VALUE)}"
        for _ in range(draw(st.integers(0, 3)))
    )
    return f"{meas}{tags} {fields}{draw(_TS)}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(lp_lines() | st.text(alphabet='m f=1i,"\\ t#\r', max_size=12), max_size=12))
def test_fast_and_slow_paths_agree(lines: list[str]) -> None:
    body = "\n".join(lines)
    same(parse(body), slow(body))


@settings(max_examples=300, deadline=None)
@given(lp_lines())
def test_regex_and_reference_line_parsers_agree(line: str) -> None:
    def run(f: Any) -> Any:
        try:
            return f(line, 1)
        except lp._LineError as e:
            return str(e)

    assert run(lp._parse_line) == run(lp._parse_line_exact)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_never_raises(body: bytes | str) -> None:
    r = parse_lines(body, now_ns=NOW)
    assert r.lines_total >= len(r.rejects)
    same(r, slow(body))


# -- serialisation -----------------------------------------------------------------------------------


def test_serialize_points_escapes_and_types() -> None:
    pts = [
        Point(
            "my meas,x",
            {"b": "v 1", "a": "x=y,z", "e": ""},
            {"f": 1.5, "i": 3, "u": 2**64 - 1, "s": 'say "hi" \\', "t": True},
            10,
        ),
        Point("m", {}, {"f": None, "g": False}),
        Point("m", {}, {"f": None}),
    ]
    text = serialize_points(pts)
    assert text == (
        'my\\ meas\\,x,a=x\\=y\\,z,b=v\\ 1 f=1.5,i=3i,u=18446744073709551615u,s="say \\"hi\\" \\\\",t=true 10\n'
        "m g=false\n"
    )
    r = parse(text)
    assert rows(r, "my meas,x")[0]["s"] == 'say "hi" \\'


@pytest.mark.parametrize(
    "point",
    [
        Point("", {}, {"f": 1.0}),
        Point("#m", {}, {"f": 1.0}),
        Point("m\n", {}, {"f": 1.0}),
        Point("m", {"": "x"}, {"f": 1.0}),
        Point("m", {}, {"": 1.0}),
        Point("m", {}, {"f": math.inf}),
        Point("m", {}, {"f": math.nan}),
        Point("m", {}, {"s": "a\nb"}),
        Point("m", {}, {"i": 2**64}),
    ],
)
def test_serialize_rejects_what_line_protocol_cannot_carry(point: Point) -> None:
    with pytest.raises(ValueError):
        serialize_points([point])


def test_serialize_lines_of_a_batch() -> None:
    r = parse('m,t=a f=1.25,u=7u,s="x y",b=t 1000\nm g=2i 2000\n')
    text = serialize_lines("m", r.batches["m"])
    assert text == 'm,t=a b=true,f=1.25,s="x y",u=7u 1000\nm g=2i 2000\n'
    assert (
        serialize_lines("m", r.batches["m"], precision="us")
        == 'm,t=a b=true,f=1.25,s="x y",u=7u 1\nm g=2i 2\n'
    )
    same(parse(text), parse(serialize_lines("m", parse(text).batches["m"])))


# round trips ----------------------------------------------------------------------------------------

_ANY_NAME = st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=8)
_KINDS = {
    "float": st.floats(allow_nan=False, allow_infinity=False),
    "integer": st.integers(-(2**63), 2**63 - 1),
    "boolean": st.booleans(),
    "string": st.text(st.characters(codec="utf-8", exclude_characters="\n"), max_size=10),
}


@st.composite
def point_sets(draw: st.DrawFn) -> list[Point]:
    meas = draw(
        st.lists(_ANY_NAME.filter(lambda s: s[0] not in "#\t"), min_size=1, max_size=2, unique=True)
    )
    out: list[Point] = []
    for m in meas:
        names = draw(
            st.lists(
                _ANY_NAME.filter(lambda s: s not in RESERVED), min_size=1, max_size=5, unique=True
            )
        )
        cut = draw(st.integers(0, len(names) - 1))
        tags, fields = names[:cut], names[cut:]
        kinds = {f: draw(st.sampled_from(sorted(_KINDS))) for f in fields}
        for _ in range(draw(st.integers(1, 4))):
            tv = {t: draw(_ANY_NAME) for t in tags if draw(st.booleans())}
            fv = {f: draw(_KINDS[kinds[f]]) for f in fields if draw(st.booleans())}
            if not fv:
                fv = {fields[0]: draw(_KINDS[kinds[fields[0]]])}
            out.append(Point(m, tv, fv, draw(st.integers(lp.TS_MIN, lp.TS_MAX))))
    return out


def _typed(p: Point) -> tuple[Any, ...]:
    return (p.measurement, dict(p.tags), {k: (type(v), v) for k, v in p.fields.items()}, p.time)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(point_sets())
def test_serialize_then_parse_round_trips(points: list[Point]) -> None:
    text = serialize_points(points)
    r = parse(text)
    assert r.rejects == []
    got = sorted(
        (
            (int(t[LINE][i].as_py()), p)
            for m, t in r.batches.items()
            for i, p in enumerate(batch_to_points(m, t))
        ),
        key=lambda x: x[0],
    )
    assert [_typed(p) for _, p in got] == [_typed(p) for p in points]
    same(r, slow(text))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=5),
    st.lists(_ANY_NAME, min_size=1, max_size=5),
)
def test_unsigned_columns_round_trip(values: list[int], tags: list[str]) -> None:
    assume(len(tags) == len(values) or True)
    t = pa.table(
        {
            TIME: pa.array(range(len(values)), pa.int64()).cast(TIME_TYPE),
            "tag": pa.array([tags[i % len(tags)] for i in range(len(values))]).dictionary_encode(),
            "u": pa.array(values, pa.uint64()),
        }
    )
    r = parse(serialize_lines("m", t))
    assert r.batches["m"]["u"].to_pylist() == values
    assert (
        r.batches["m"]["tag"].cast(pa.string()).to_pylist()
        == t["tag"].cast(pa.string()).to_pylist()
    )


# -- the stored schema --------------------------------------------------------------------------------


def test_known_columns_win_over_the_first_line() -> None:
    stored = {"m": {"x": "float", "t": "tag", "u": "integer"}}
    body = "m,t=a x=1i 1\nm,t=b x=2 2\nm t=3 3\nm,u=9 x=4 4\nn x=5i 5\n"
    r = parse(body, known=stored)
    assert [(x.line, x.reason) for x in r.rejects] == [
        (
            1,
            "field type conflict: field 'x' of measurement 'm' is integer, already stored as float",
        ),
        (3, "column 't' of measurement 'm' is a tag, not a field"),
        (4, "column 'u' of measurement 'm' is an integer, not a tag"),
    ]
    assert [x[LINE] for x in rows(r, "m")] == [2] and rows(r, "n")[0]["x"] == 5
    assert [x.reason for x in parse(body, known=lambda m: stored.get(m, {})).rejects] == [
        x.reason for x in r.rejects
    ]
    same(r, lp._parse(body, "ns", NOW, fast=False, known=stored))
