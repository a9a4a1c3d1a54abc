"""Series and field ids made once by the framing (``Keys``) and mapped to each stage's own ids:
the stages must give exactly what they give when they look the names up themselves."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorium.keyindex import NameIndex
from sensorium.rules.engine import RuleEngine
from sensorium.rules.loader import parse_rules
from sensorium.stream.frame import Batch, frames_of_batches, keyed_frames, named
from sensorium.stream.rolling import RollingStats
from sensorium.stream.rollup import RollupOperator

S = 1_000_000_000
RULES = """
[[rules]]
name = "hot"
kind = "threshold"
measurement = "climate"
field = "temperature"
above = { warning = 25, critical = 30 }
deadband = 1

[[rules]]
name = "noisy"
kind = "threshold"
field = "temperature"
stat = "std_10"
above = { warning = 3 }
"""


def _batches(seed: int, n_batches: int = 6, rows: int = 300) -> list[Batch]:
    rng = np.random.default_rng(seed)
    out = []
    t = 0
    for i in range(n_batches):
        devs = rng.choice([f"d{j}" for j in range(8 + 4 * i)], rows)  # new series every batch
        times = t + np.sort(rng.integers(0, 90 * S, rows))
        times[rng.random(rows) < 0.1] -= 80 * S  # some late rows
        t += 60 * S
        temp = rng.normal(24, 4, rows)
        temp[rng.random(rows) < 0.05] = np.nan
        table = pa.table({
            "time": pa.array(times, pa.int64()),
            "device_id": pa.array(devs.tolist()).dictionary_encode(),
            "room": pa.array(rng.choice(["a", "b", None], rows).tolist()),
            "temperature": pa.array(temp, pa.float64()),
            "humidity": pa.array(np.where(rng.random(rows) < 0.2, None, rng.normal(50, 5, rows)).tolist(), pa.float64()),
        })
        measurement = "climate" if i % 3 else "energy"
        out.append(Batch(i + 1, "default" if i % 2 else "home", measurement, table, ("device_id", "room"), i * S))
    return out


def test_keyed_frames_name_every_row_like_the_frame() -> None:
    si, fi = NameIndex(), NameIndex()
    for lo in range(0, 6, 2):
        batches = _batches(3)[lo : lo + 2]
        values, series, keys = keyed_frames(batches, "default", si, fi)
        v2, s2 = frames_of_batches(batches)
        assert values.equals(v2) and series.equals(s2)
        assert [si.names[i] for i in keys.sid] == values["series"].to_list()
        assert [fi.names[i] for i in keys.fid] == values["field"].to_list()


def test_values_framed_without_names_are_named_from_their_keys() -> None:
    si, fi = NameIndex(), NameIndex()
    si2, fi2 = NameIndex(), NameIndex()
    for lo in range(0, 6, 2):
        batches = _batches(5)[lo : lo + 2]
        values, series, keys = keyed_frames(batches, "default", si, fi)
        bare, series2, keys2 = keyed_frames(batches, "default", si2, fi2, names=False)
        assert "series" not in bare.columns and "field" not in bare.columns
        assert series2.equals(series) and np.array_equal(keys2.sid, keys.sid) and np.array_equal(keys2.fid, keys.fid)
        assert named(bare, keys2).equals(values)
        assert named(values, keys) is values  # named already: as it is
        # the rolling statistics of unnamed values: the same numbers and keys, no names
        d1, k1 = RollingStats().process_keyed(values, ["*:std_10", "*:avg_10"], keys)
        d2, k2 = RollingStats().process_keyed(bare, ["*:std_10", "*:avg_10"], keys2)
        assert d2.equals(d1.drop("series", "field")) and d1.height
        assert k1 is not None and k2 is not None
        assert np.array_equal(k1.sid, k2.sid) and np.array_equal(k1.fid, k2.fid)


def test_stages_give_the_same_with_keys_as_by_name() -> None:
    plain = (RollingStats(), RollupOperator("r", ("1m", "1h")), RuleEngine(parse_rules(RULES)))
    keyed = (RollingStats(), RollupOperator("r", ("1m", "1h")), RuleEngine(parse_rules(RULES)))
    unnamed = RollupOperator("r", ("1m", "1h"))  # given the keys only (the runner drops the names)
    late = 0
    si, fi = NameIndex(), NameIndex()
    fired = 0
    for b in _batches(7):
        values, series, keys = keyed_frames([b], "default", si, fi)
        d1 = plain[0].process(values, ["*:std_10"])
        d2, dk = keyed[0].process_keyed(values, ["*:std_10"], keys)
        assert d1.equals(d2)
        assert dk is not None and [fi.names[i] for i in dk.fid] == d2["field"].to_list()
        assert [si.names[i] for i in dk.sid] == d2["series"].to_list()
        r1, r2 = plain[1].process(values), keyed[1].process(values, keys)
        for k in r1.finalized:
            assert r1.finalized[k].equals(r2.finalized[k])
        assert r1.late.equals(r2.late)
        r3 = unnamed.process(values.drop("series", "field"), keys)
        for k in r1.finalized:
            assert r1.finalized[k].equals(r3.finalized[k])
        assert r1.late.equals(r3.late)  # late rows named from their keys
        late += r3.late.height
        both = pl.concat([values, d1.select(values.columns)])
        t1 = plain[2].process(both, series)
        t2 = keyed[2].process(both, series, type(keys).concat([keys, dk]))
        assert t1 == t2
        fired += len(t1)
    assert fired  # the rules had something to say
    assert late  # and some rows came late
    # and the stages' own ids came out in the same order (their checkpoints are the same)
    a, b = plain[0].state(), keyed[0].state()
    assert a["series_names"] == b["series_names"] and np.array_equal(a["key_sid"], b["key_sid"])
    assert plain[1]._base._keys.series.names.equals(keyed[1]._base._keys.series.names)
    assert np.array_equal(plain[2].state()["key_series"], keyed[2].state()["key_series"])
    assert plain[2].state()["series"] == keyed[2].state()["series"]


def test_stages_group_rows_by_pair_as_by_sorting_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule engine and the rolling statistics group the framing's rows per (series, field)
    pair (compiled counting) when they can, else by a sort of their rows (sparse ids): both give
    the same outputs, the same own ids and the same state — watched fields, fields only absence
    rules count, derived values."""
    import sensorium.keyindex as keyindex_mod
    import sensorium.rules.engine as engine_mod
    import sensorium.stream.rolling as rolling_mod

    monkeypatch.setattr(keyindex_mod, "PAIR_ROWS", 0.001)  # pairs even for these small steps

    text = RULES + """
[[rules]]
name = "quiet"
kind = "absence"
field = "humidity"
group_by = ["device_id"]
after = "2m"
severity = "warning"
"""
    by_pair, by_rows = RuleEngine(parse_rules(text)), RuleEngine(parse_rules(text))
    rolling, rolling_by_rows = RollingStats(), RollingStats()
    si, fi = NameIndex(), NameIndex()
    for b in reversed(_batches(11)):  # the runner's ids in another order than the engines' first sight
        keyed_frames([b], "default", si, fi)
    real = engine_mod.pair_groups
    used = 0
    fired = 0
    for b in _batches(11):
        values, series, keys = keyed_frames([b], "default", si, fi)
        d, dk = rolling.process_keyed(values, ["*:std_10"], keys)
        monkeypatch.setattr(rolling_mod, "pair_groups", lambda k: None)
        d2, dk2 = rolling_by_rows.process_keyed(values, ["*:std_10"], keys)
        monkeypatch.setattr(rolling_mod, "pair_groups", real)
        assert d.equals(d2) and d.height and dk is not None and dk2 is not None
        assert np.array_equal(dk.sid, dk2.sid) and np.array_equal(dk.fid, dk2.fid)
        both = pl.concat([values, d.select(values.columns)])
        both_keys = type(keys).concat([keys, dk])
        assert real(both_keys) is not None
        used += 1
        t1 = by_pair.process(both, series, both_keys)
        monkeypatch.setattr(engine_mod, "pair_groups", lambda k: None)
        t2 = by_rows.process(both, series, both_keys)
        monkeypatch.setattr(engine_mod, "pair_groups", real)
        assert t1 == t2
        now = int(b.table["time"].to_numpy().max()) + 5 * 60 * S
        ticked = by_pair.tick(now)
        assert ticked == by_rows.tick(now)
        fired += len(t1) + len(ticked)
    assert used and fired
    assert by_pair.ignored_rows == by_rows.ignored_rows > 0  # late rows were left out alike
    a, b2 = by_pair.state(), by_rows.state()
    assert a["series"] == b2["series"] and a["rfields"] == b2["rfields"]
    assert np.array_equal(a["key_series"], b2["key_series"]) and np.array_equal(a["key_rf"], b2["key_rf"])
    assert np.array_equal(a["last_t"], b2["last_t"])
    assert a["absences"].keys() == b2["absences"].keys()
    r1, r2 = rolling.state(), rolling_by_rows.state()
    assert r1["series_names"] == r2["series_names"] and np.array_equal(r1["key_sid"], r2["key_sid"])
    assert rolling.latest().equals(rolling_by_rows.latest())


def test_pair_groups_stand_aside_for_sparse_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer rows than PAIR_ROWS per possible (field, series) pair: no pair tables (the caller
    sorts); the tables span only the ids present."""
    import sensorium.keyindex as keyindex_mod
    from sensorium.keyindex import Keys, pair_groups

    si, fi = NameIndex(), NameIndex()
    si.ids(pl.Series([f"s{i}" for i in range(300_000)]))
    fi.ids(pl.Series(["a", "b", "c", "d", "e"]))
    sparse = Keys(np.array([5, 299_999], np.int32), np.array([4, 0], np.int32), si, fi)
    assert pair_groups(sparse) is None
    far = Keys(np.arange(200_000, 200_100, dtype=np.int32), np.full(100, 3, np.int32), si, fi)
    assert pair_groups(far) is None  # a row per pair: sorting them is cheaper
    repeated = Keys(np.repeat(np.arange(200_000, 200_100, dtype=np.int32), 4), np.full(400, 3, np.int32), si, fi)
    assert pair_groups(repeated) is not None
    monkeypatch.setattr(keyindex_mod, "PAIR_ROWS", 0.1)
    pg = pair_groups(far)  # high ids, but a narrow span of them
    assert pg is not None and len(pg) == 100 and pg.sid.tolist() == list(range(200_000, 200_100))
    assert set(pg.fid.tolist()) == {3}
    dense = Keys(np.array([2, 0, 2, 1], np.int32), np.array([1, 1, 1, 0], np.int32), NameIndex(), NameIndex())
    dense.series.ids(pl.Series(["x", "y", "z"]))
    dense.fields.ids(pl.Series(["f", "g"]))
    pg = pair_groups(dense)
    assert pg is not None and pg.code.tolist() == [1, 3, 5] and pg.count.tolist() == [1, 1, 2]
    assert pg.sid.tolist() == [1, 0, 2] and pg.fid.tolist() == [0, 1, 1] and pg.first.tolist() == [3, 1, 0]
    rows, starts = pg.rows(np.array([2, 0]))  # pair (z, g) then (y, f); (x, g) left out
    assert rows.tolist() == [0, 2, 3] and starts.tolist() == [0, 2]
    with pytest.raises(RuntimeError):
        pg.rows(np.array([0]))


def test_unique_and_distinct_agree_with_numpy() -> None:
    from sensorium.keyindex import distinct, unique

    rng = np.random.default_rng(5)
    for a in (np.zeros(0, np.int64), np.array([3], np.int32), rng.integers(0, 50, 1000),
              rng.integers(0, 2**62, 1000).astype(np.uint64), np.sort(rng.integers(-5, 5, 200))):
        assert np.array_equal(unique(a), np.unique(a)) and unique(a).dtype == a.dtype
        assert distinct(a) == (np.unique(a).size == a.size)


@given(st.lists(st.integers(-3, 6), max_size=40))
def test_first_occurrences_are_the_first_position_of_each_value_in_order(xs: list[int]) -> None:
    from sensorium.keyindex import first_occurrences

    a = np.array(xs, dtype=np.int64)
    want = [i for i, x in enumerate(xs) if x not in xs[:i]]
    assert first_occurrences(a).tolist() == want
    assert first_occurrences(a.astype(np.uint64)).tolist() == want


def test_first_occurrences_of_many_values_by_hashing_agree_with_the_sort() -> None:
    from sensorium.keyindex import FIRST_SORT_MAX, first_occurrences

    rng = np.random.default_rng(7)
    a = rng.integers(0, 3 * FIRST_SORT_MAX, 4 * FIRST_SORT_MAX).astype(np.uint64)
    _, first = np.unique(a, return_index=True)
    assert first_occurrences(a).tolist() == np.sort(first).tolist()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.one_of(st.none(), st.sampled_from(["x", "y", "z"]))),
            min_size=0,
            max_size=4,
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_append_rows_equals_one_diagonal_concatenation(parts: list[list[tuple[str, str | None]]]) -> None:
    """A table grown a part at a time (parts with different, missing or all-null columns) holds
    the same rows as all parts concatenated at once, and never more than APPEND_CHUNKS chunks."""
    from sensorium.keyindex import APPEND_CHUNKS, append_rows

    frames = []
    for i, cols in enumerate(parts):
        data: dict[str, pl.Series] = {"series": pl.Series("series", [f"s{i}"], dtype=pl.Utf8)}
        for name, value in cols:
            data[name] = pl.Series(name, [value], dtype=pl.Utf8 if value is not None else pl.Null)
        frames.append(pl.DataFrame(list(data.values())))
    table = pl.DataFrame(schema={"series": pl.Utf8})
    for f in frames:
        table = append_rows(table, f)
        assert table.n_chunks() <= APPEND_CHUNKS + 1
    expected = pl.concat([pl.DataFrame(schema={"series": pl.Utf8}), *frames], how="diagonal_relaxed")
    assert table.select(sorted(table.columns)).cast(pl.Utf8).equals(
        expected.select(sorted(expected.columns)).cast(pl.Utf8)
    )


def test_rollup_keys_follow_the_names_when_the_source_index_changes() -> None:
    """The rollups' ids of a step's rows come through a cache of the source's ids: keys from
    another source (same ids, other names) are mapped by their names, not by the stale cache;
    new names get the next ids in order of first sight."""
    from sensorium.keyindex import Keys
    from sensorium.stream.watermark import FIELD_BITS, KeyIndex

    def source(names: list[str]) -> NameIndex:
        ix = NameIndex()
        ix.add(names)
        return ix

    ki = KeyIndex()
    a_series, a_fields = source(["s1", "s2"]), source(["temp"])
    sid, kid = ki.encode(pl.DataFrame(), Keys(np.array([0, 1, 1], np.int32), np.zeros(3, np.int32), a_series, a_fields))
    assert sid.tolist() == [0, 1, 1] and (kid >> FIELD_BITS).tolist() == [0, 1, 1]
    b_series, b_fields = source(["s2", "s3", "s1"]), source(["hum", "temp"])
    sid, kid = ki.encode(
        pl.DataFrame(), Keys(np.array([0, 1, 2, 1], np.int32), np.array([1, 0, 1, 1], np.int32), b_series, b_fields)
    )
    assert [ki.series.names[i] for i in sid.tolist()] == ["s2", "s3", "s1", "s3"]
    assert sid.tolist() == [1, 2, 0, 2]  # s3 is new: the next id
    assert [ki.fields.names[i] for i in (kid & ((1 << FIELD_BITS) - 1)).tolist()] == ["temp", "hum", "temp", "temp"]
