"""The stream's batch form: stored wide tables → one long values frame, row by row."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl
import pyarrow as pa

from sensorium.stream.frame import Batch, concat_columns, frames_of_batches, to_frames


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


def test_rows_missing_different_fields_keep_each_value_with_its_own_row() -> None:
    """Each value carries its row's time, arrival and series, whichever fields the rows lack."""
    t = _table([10, 20, 30], ["a", "b", "c"], [1.0, None, 3.0], [True, False, True])
    t = t.set_column(4, "ok", pa.array([None, False, True]))
    values, _ = frames_of_batches([Batch(1, "default", "motion", t, ("device_id",), 7)])
    got = sorted(zip(values["time"].to_list(), values["field"].to_list(), values["series"].to_list(),
                     values["arrival"].to_list(), strict=True))
    want = sorted([
        (10, "temperature", "motion,device_id=a", 7), (10, "count", "motion,device_id=a", 7),
        (20, "count", "motion,device_id=b", 7), (20, "ok", "motion,device_id=b", 7),
        (30, "temperature", "motion,device_id=c", 7), (30, "count", "motion,device_id=c", 7),
        (30, "ok", "motion,device_id=c", 7),
    ])
    assert got == want
    assert values["time"].to_list() == [10, 10, 20, 20, 30, 30, 30]  # row by row


def test_concat_columns_equals_polars_concat_in_one_chunk_per_column() -> None:
    """Numeric columns without nulls are joined by NumPy (wrapped, not copied again); a column
    with nulls and the names by Polars: the same frame as ``pl.concat``, every column one chunk."""
    a = pl.DataFrame({"time": np.array([1, 2], np.int64), "value": [1.0, float("nan")],
                      "arrival": pl.Series([None, 3], dtype=pl.Int64), "series": ["a", "b"]})
    b = pl.DataFrame({"time": np.array([3], np.int64), "value": [3.0],
                      "arrival": pl.Series([4], dtype=pl.Int64), "series": ["c"]})
    want = pl.concat([a, b, a])
    got = concat_columns([a, b, a])
    assert got.equals(want) and got.schema == want.schema
    assert [c.n_chunks() for c in got.get_columns()] == [1, 1, 1, 1]
    assert concat_columns([got]) is got  # one frame of single chunks: as it is
    two = pl.concat([a, b], rechunk=False)
    assert [c.n_chunks() for c in concat_columns([two]).get_columns()] == [1, 1, 1, 1]


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


# --- framing with SeriesCombos (a series seen before found by its tags' hash) -------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sensorium.keyindex import NameIndex  # noqa: E402
from sensorium.stream.frame import SeriesCombos, keyed_frames  # noqa: E402

TAG_VALUES = st.sampled_from(["a", "b", "c", "a,b", "é", "", None])


@st.composite
def tagged_batches(draw: st.DrawFn) -> list[Batch]:
    """Batches of two measurements and two buckets; tag columns that come and go, nulls,
    dictionary-encoded or plain, and a tag whose values repeat another's."""
    out = []
    encoded = draw(st.booleans())  # as stored: a tag column's type is the same in every batch
    for off in range(draw(st.integers(1, 5))):
        n = draw(st.integers(0, 6))
        tags = draw(st.lists(st.sampled_from(["room", "dev", "zone"]), unique=True, max_size=3))
        cols: dict[str, pa.Array] = {"time": pa.array(range(off * 10, off * 10 + n), pa.int64())}
        for t in tags:
            arr = pa.array(draw(st.lists(TAG_VALUES, min_size=n, max_size=n)), pa.string())
            cols[t] = arr.dictionary_encode() if encoded else arr
        cols["v"] = pa.array([float(i) for i in range(n)], pa.float64())
        measurement = draw(st.sampled_from(["climate", "power"]))
        bucket = draw(st.sampled_from(["default", "lab"]))
        out.append(Batch(off, bucket, measurement, pa.table(cols), tuple(tags), 1000 + off))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(tagged_batches(), min_size=1, max_size=4))
def test_framing_by_tag_hash_equals_framing_by_key(steps: list[list[Batch]]) -> None:
    """Step after step, framing with a SeriesCombos gives the same values frame and the same
    series ids as framing every series' key, and its series frame names every series new to it
    (those of tagged rows only then: the runner's series table learns each series once)."""
    plain = (NameIndex(), NameIndex())
    hashed = (NameIndex(), NameIndex())
    combos = SeriesCombos()
    learned: set[str] = set()
    for batches in steps:
        v1, s1, k1 = keyed_frames(batches, "default", *plain)
        v2, s2, k2 = keyed_frames(batches, "default", *hashed, combos)
        assert v1.equals(v2)
        assert [plain[0].names[i] for i in k1.sid] == [hashed[0].names[i] for i in k2.sid]
        assert [plain[1].names[i] for i in k1.fid] == [hashed[1].names[i] for i in k2.fid]
        new = set(s2.get_column("series").to_list())
        assert set(s1.get_column("series").to_list()) - learned <= new <= set(s1.get_column("series").to_list())
        untagged = {b.measurement if b.bucket == "default" else f"{b.bucket}:{b.measurement}" for b in batches}
        assert new & learned <= untagged  # a series seen before comes again only without tags
        assert s2.filter(pl.col("series").is_in(list(new))).sort("series").equals(
            s1.filter(pl.col("series").is_in(list(new))).select(s2.columns).sort("series")
        )
        learned |= new
    assert learned == set(plain[0].names)


def test_series_combos_need_both_hashes_to_match() -> None:
    combos = SeriesCombos()
    ha = np.array([1, 2, 3], dtype=np.uint64)
    combos.add(ha, np.array([10, 20, 30], dtype=np.uint64), np.array([0, 1, 2]))
    got = combos.lookup(np.array([1, 2, 3, 4], dtype=np.uint64), np.array([10, 99, 30, 40], dtype=np.uint64))
    assert got.tolist() == [0, -1, 2, -1]
    combos.add(np.array([2], dtype=np.uint64), np.array([99], dtype=np.uint64), np.array([5]))  # first hash taken
    assert combos.lookup(np.array([2], dtype=np.uint64), np.array([99], dtype=np.uint64)).tolist() == [-1]


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(TAG_VALUES, TAG_VALUES), min_size=1, max_size=30), cut=st.integers(0, 30))
def test_combination_hashes_are_the_sum_over_tags_whatever_the_encoding(
    rows: list[tuple[str | None, str | None]], cut: int
) -> None:
    """Each row's two hashes are the mixed measurement hash plus, per non-null tag, splitmix64 of
    its value's hash xor its name's: the same for plain and dictionary-encoded columns, however
    they are cut into chunks (a series framed from one kind of batch is found from the other)."""
    from sensorium.stream.frame import _SEEDS, _mix

    combos = SeriesCombos()
    names = ("room", "dev")
    cols = [[r[j] for r in rows] for j in range(2)]
    cut = min(cut, len(rows))

    def chunked(values: list[str | None], encode: bool) -> pa.ChunkedArray:
        parts = [pa.array(values[:cut], pa.string()), pa.array(values[cut:], pa.string())]
        return pa.chunked_array([p.dictionary_encode() if encode else p for p in parts])

    def one(x: str, seed: int) -> int:
        return int(pl.Series([x]).hash(seed=seed).to_numpy()[0])

    mask = (1 << 64) - 1
    want = []
    for k, seed in enumerate(_SEEDS):
        head = int(_mix(np.array([one("climate", seed)], dtype=np.uint64))[0])
        out = []
        for r in rows:
            h = head
            for name, x in zip(names, r, strict=True):
                if x is None or one(x, seed) == 0:
                    continue
                part = np.array([one(x, seed) ^ one(name, seed + 2 + k)], dtype=np.uint64)
                h = (h + int(_mix(part)[0])) & mask
            out.append(h)
        want.append(out)
    for encode in (False, True):
        table = pa.table({n: chunked(c, encode) for n, c in zip(names, cols, strict=True)})
        got = combos.hashes(table, list(names), "climate")
        assert got is not None
        assert [got[0].tolist(), got[1].tolist()] == want
    assert combos.hashes(pa.table({"room": pa.array([1, 2])}), ["room"], "climate") is None  # not strings


class _SharedFirstHash(SeriesCombos):
    """Every combination's first hash the same: only the second tells them apart."""

    def hashes(self, table: pa.Table, tags: Sequence[str], head: str) -> tuple[np.ndarray, np.ndarray] | None:
        got = super().hashes(table, tags, head)
        return None if got is None else (np.full_like(got[0], 12345), got[1])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(tagged_batches(), min_size=1, max_size=3))
def test_framing_when_combinations_share_a_first_hash(steps: list[list[Batch]]) -> None:
    """Combinations whose first hashes collide are still framed apart (the long way, each step)."""
    plain = (NameIndex(), NameIndex())
    hashed = (NameIndex(), NameIndex())
    combos = _SharedFirstHash()
    for batches in steps:
        v1, _, k1 = keyed_frames(batches, "default", *plain)
        v2, _, k2 = keyed_frames(batches, "default", *hashed, combos)
        assert v1.equals(v2)
        assert [plain[0].names[i] for i in k1.sid] == [hashed[0].names[i] for i in k2.sid]
