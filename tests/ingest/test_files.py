"""Bulk files: formats, chunking with continuous line numbers, progress, CSV/Parquet rules."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sensorium.errors import BadRequest
from sensorium.ingest.files import _JsonCutter, read_file
from sensorium.ingest.lineprotocol import parse_lines
from sensorium.schema import LINE, TAG_TYPE, TIME, ParseResult

NOW = 1_767_225_600_000_000_000


def lp_text(n: int) -> str:
    return "".join(
        f"climate,device_id=d{i % 7},room=r{i % 3} temperature={i}.5,count={i}i {NOW + i}\n"
        for i in range(n)
    )


def readings(n: int) -> list[dict[str, Any]]:
    return [
        {
            "device_id": f"d{i % 5}",
            "timestamp": NOW + i,
            "sensor_type": "climate",
            "measurement_type": "temperature",
            "value": i + 0.5,
            "metadata": {"note": 'a,b]}\\"' * (i % 3)},
        }
        for i in range(n)
    ]


def load(path: Path, **kw: Any) -> tuple[list[ParseResult], list[int]]:
    seen: list[int] = []
    res = list(read_file(path, now_ns=NOW, progress=seen.append, **kw))
    return res, seen


def all_rows(res: list[ParseResult], m: str = "climate") -> list[dict[str, Any]]:
    out = []
    for r in res:
        t = r.batches.get(m)
        if t is None:
            continue
        cols = {
            c: (t[c].cast(pa.int64()) if c == TIME else t[c]).to_pylist() for c in t.column_names
        }
        out += [{c: v[i] for c, v in cols.items() if v[i] is not None} for i in range(t.num_rows)]
    return out


def test_line_protocol_in_chunks_keeps_line_numbers(tmp_path: Path) -> None:
    text = lp_text(500)
    lines = text.splitlines()
    lines.insert(100, "garbage")
    lines.insert(300, "# comment")
    body = "\n".join(lines) + "\n"
    path = tmp_path / "data.lp"
    path.write_text(body)
    res, seen = load(path, chunk_bytes=2000)
    assert len(res) > 5
    whole = parse_lines(body, now_ns=NOW)
    assert all_rows(res) == all_rows([whole])
    rejects = [x for r in res for x in r.rejects]
    assert [(x.line, x.raw) for x in rejects] == [(101, "garbage")]
    chunk = next(r for r in res if any(x.line == 101 for x in r.rejects))
    assert chunk.raw(101) == "garbage"
    assert sum(r.lines_total for r in res) == 501
    assert seen == sorted(seen) and seen[-1] == path.stat().st_size


def test_gzip_and_no_trailing_newline_and_crlf(tmp_path: Path) -> None:
    body = lp_text(50).replace("\n", "\r\n").rstrip("\r\n")
    path = tmp_path / "data.txt.gz"
    with gzip.open(path, "wt") as f:
        f.write(body)
    res, seen = load(path, chunk_bytes=500)
    rows = all_rows(res)
    assert len(rows) == 50 and [r[LINE] for r in rows] == list(range(1, 51))
    assert seen[-1] == path.stat().st_size


def test_a_line_longer_than_a_chunk(tmp_path: Path) -> None:
    path = tmp_path / "long.line"
    path.write_text('m s="' + "x" * 5000 + '" 1\nm s="y" 2\n')
    res, _ = load(path, chunk_bytes=100)
    assert [len(r["s"]) for r in all_rows(res, "m")] == [5000, 1]


@pytest.mark.parametrize("name", ["r.ndjson", "r.jsonl", "r.json", "r.jsonl.gz"])
def test_ndjson(tmp_path: Path, name: str) -> None:
    items = readings(60)
    body = (
        "\n".join(json.dumps(x) for x in items[:30])
        + "\n\nnot json\n"
        + "\n".join(json.dumps(x) for x in items[30:])
        + "\n"
    )
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(body)
    else:
        path.write_text(body)
    res, _ = load(path, chunk_bytes=1000)
    rows = all_rows(res)
    assert [r["temperature"] for r in rows] == [x["value"] for x in items]
    assert [r[LINE] for r in rows] == list(range(1, 31)) + list(range(33, 63))
    assert [(x.line, x.raw) for r in res for x in r.rejects] == [(32, "not json")]


@pytest.mark.parametrize("chunk", [7, 100, 1000, 1 << 20])
def test_json_array_is_cut_between_elements(tmp_path: Path, chunk: int) -> None:
    items: list[Any] = readings(40)
    items[10] = {"value": 1}  # missing device_id
    items[20] = [1, {"x": "]"}]
    path = tmp_path / "r.json"
    path.write_text(json.dumps(items, indent=1))
    res, seen = load(path, chunk_bytes=chunk)
    rows = all_rows(res)
    good = [i for i in range(40) if i not in (10, 20)]
    assert [r["temperature"] for r in rows] == [items[i]["value"] for i in good]
    assert [r[LINE] for r in rows] == [i + 1 for i in good]
    rejects = sorted((x.line, x.reason) for r in res for x in r.rejects)
    assert rejects == [(11, "missing device_id"), (21, "reading is not a JSON object")]
    assert seen[-1] == path.stat().st_size
    if chunk < 1000:
        assert len(res) > 3


def test_json_cutter_against_a_reference() -> None:
    r = random.Random(7)

    def reference(text: str) -> list[int]:
        out, ins, esc, depth = [], False, False, 0
        for i, ch in enumerate(text):
            if ins:
                if esc:
                    esc = False
                elif ch == "\\":
                    esc = True
                elif ch == '"':
                    ins = False
            elif ch == '"':
                ins = True
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
            elif ch == "," and depth == 1:
                out.append(i)
        return out

    for _ in range(200):
        items = [
            {
                "a": "\\" * r.randrange(4) + '"' * r.randrange(2) + ",]}" * r.randrange(2),
                "b": [1, {"c": "\\\\"}],
            }
            for _ in range(r.randrange(1, 5))
        ]
        text = json.dumps(items)
        data = text.encode()
        cutter, pos, got = _JsonCutter(), 0, []
        while pos < len(data):
            k = r.randrange(1, 15)
            got += [int(c) + pos for c in cutter.cuts(data[pos : pos + k])]
            pos += k
        assert got == reference(text)


CSV = """time,measurement,device_id,temperature,ok,note
2026-01-01T00:00:00Z,climate,d1,21.5,true,hello
1767225601,climate,d2,22,FALSE,
2026-01-01T00:00:02,climate,d3,,true,x
,climate,d4,1,true,
5,,d5,1,true,
2026-01-01T00:00:03Z,climate,d6,,,
2026-01-01T00:00:04Z,weather,d7,3,true,
"""


def test_csv_defaults(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text(CSV)
    res, seen = load(path)
    t = res[0].batches["climate"]
    assert t.column_names == [TIME, "device_id", "note", "ok", "temperature", LINE]
    assert t.schema.field("device_id").type == TAG_TYPE and t.schema.field("note").type == TAG_TYPE
    assert (
        t.schema.field("temperature").type == pa.float64()
        and t.schema.field("ok").type == pa.bool_()
    )
    assert all_rows(res) == [
        {TIME: NOW, "device_id": "d1", "note": "hello", "ok": True, "temperature": 21.5, LINE: 2},
        {TIME: NOW + 1_000_000_000, "device_id": "d2", "ok": False, "temperature": 22.0, LINE: 3},
        {TIME: NOW + 2_000_000_000, "device_id": "d3", "note": "x", "ok": True, LINE: 4},
    ]
    assert all_rows(res, "weather") == [
        {TIME: NOW + 4_000_000_000, "device_id": "d7", "ok": True, "temperature": 3.0, LINE: 8}
    ]
    assert [(x.line, x.reason) for r in res for x in r.rejects] == [
        (5, "missing time"),
        (6, "missing measurement"),
        (7, "no field values"),
    ]
    assert res[0].raw(5) == ",climate,d4,1,true,"
    assert seen[-1] == path.stat().st_size


def test_csv_with_tags_and_type_fixed_by_first_chunk(tmp_path: Path) -> None:
    rows = (
        ["time,measurement,device_id,v,label"]
        + [f"{NOW + i},m,d{i},{i},l{i}" for i in range(300)]
        + [f"{NOW},m,dx,oops,lx"]
    )
    path = tmp_path / "d.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("\n".join(rows) + "\n")
    res, _ = load(path, chunk_bytes=1 << 12, tags=["device_id"])
    assert len(res) > 1
    got = all_rows(res, "m")
    assert len(got) == 300 and got[5] == {
        TIME: NOW + 5,
        "device_id": "d5",
        "v": 5.0,
        "label": "l5",
        LINE: 7,
    }
    t = res[0].batches["m"]
    assert t.schema.field("label").type == pa.string()  # text, but not listed as a tag: a field
    assert [(x.line, x.reason) for r in res for x in r.rejects] == [
        (302, "invalid float value for column 'v'")
    ]


def test_csv_needs_time_and_measurement(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("time,device_id,v\n1,a,2\n")
    with pytest.raises(BadRequest, match="measurement"):
        list(read_file(path))
    path.write_text("time,measurement,quality\n1,a,2\n")
    with pytest.raises(BadRequest, match="reserved"):
        list(read_file(path))


def test_parquet(tmp_path: Path) -> None:
    n = 5000
    t = pa.table(
        {
            "time": pa.array([NOW + i for i in range(n)], pa.timestamp("ns")),
            "measurement": pa.array(
                ["climate" if i % 2 else "power" for i in range(n)]
            ).dictionary_encode(),
            "device_id": [f"d{i % 9}" for i in range(n)],
            "temperature": pa.array([float(i) if i % 10 else None for i in range(n)]),
            "count": pa.array(range(n), pa.int32()),
            "big": pa.array(range(n), pa.uint64()),
            "on": [i % 3 == 0 for i in range(n)],
        }
    )
    path = tmp_path / "d.parquet"
    pq.write_table(t, path, row_group_size=1000)
    res, seen = load(path, chunk_bytes=20_000)
    assert len(res) > 2 and seen[-1] == path.stat().st_size and seen == sorted(seen)
    got = all_rows(res, "climate")
    assert len(got) == n // 2
    assert got[0] == {
        TIME: NOW + 1,
        "device_id": "d1",
        "big": 1,
        "count": 1,
        "on": False,
        "temperature": 1.0,
        LINE: 2,
    }
    b = next(r.batches["climate"] for r in res if "climate" in r.batches)
    assert b.schema.field("count").type == pa.int64() and b.schema.field("big").type == pa.uint64()
    assert b.schema.field("device_id").type == TAG_TYPE


@pytest.mark.parametrize("name", ["x.xml", "x", "x.parquet.gz", "x.gz"])
def test_unknown_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("")
    with pytest.raises(BadRequest, match=r"supported are .*\.lp.*\.parquet"):
        list(read_file(path))


def test_format_override(tmp_path: Path) -> None:
    path = tmp_path / "data.dat"
    path.write_text(lp_text(3))
    res, _ = load(path, format="lp")
    assert len(all_rows(res)) == 3
    with pytest.raises(BadRequest, match="unknown format"):
        list(read_file(path, format="xml"))
    with pytest.raises(BadRequest, match="precision"):
        list(read_file(path, format="lp", precision="h"))


def test_a_chunk_of_bad_ndjson_lines_is_rejected_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "r.ndjson"
    good = json.dumps({"device_id": "a", "value": 1})
    path.write_text("\ufeff" + good + "\n" + "garbage line\n" * 20 + good + "\n")
    res, _ = load(path, chunk_bytes=40)
    assert [r[LINE] for r in all_rows(res, "reading")] == [1, 22]
    assert len([x for r in res for x in r.rejects]) == 20


def test_one_pretty_printed_json_reading(tmp_path: Path) -> None:
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"device_id": "a", "value": 1}, indent=2))
    res, _ = load(path)
    assert [r["device_id"] for r in all_rows(res, "reading")] == ["a"]


def test_bom_in_line_protocol_file(tmp_path: Path) -> None:
    path = tmp_path / "bom.lp"
    path.write_bytes(b"\xef\xbb\xbfm f=1 1\n")
    res, _ = load(path)
    assert list(res[0].batches) == ["m"]
