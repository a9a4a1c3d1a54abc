"""The detector contract, run over every registered detector.

Scores in [0, 1]; strictly causal; deterministic; state round trip (pickled); any split of the
stream into batches — down to record by record — gives the same scores; series are independent;
cold start scores 0; an obvious spike outscores ordinary points.
"""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
import pytest

from sensorium.detect import make, names, score_frame

# small windows so that every detector is past its cold start within a short test stream
FAST: dict[str, dict] = {
    "default": {"warm": 30, "learn": 120, "pmax": 40},
    "likelihood": {"warm": 30, "learn": 120, "pmax": 40},
    "robust_z": {"window": 32},
    "isolation_forest": {"min_points": 30, "refit_every": 60, "buffer": 120, "n_estimators": 20},
    "hst": {"window": 40, "n_trees": 5, "height": 5},
    "seasonal": {"min_points": 2},
    "refractory": {"points": 10},
}
STEP = 600 * 10**9  # 10 minutes
DETECTORS = names()


def fresh(name: str):
    return make(name, **FAST.get(name, {}))


def stream(n: int = 480, seed: int = 7, series: tuple[str, ...] = ("a|temperature", "b|temperature", "c|power")) -> pl.DataFrame:
    """Interleaved series: daily cycle + noise, a spike and a level shift, one NaN."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, key in enumerate(series):
        t = np.arange(n, dtype=np.int64) * STEP + k * 10**9
        v = 20 + 5 * np.sin(2 * np.pi * t / (86400 * 1e9)) + rng.normal(0, 0.3, n) + 3 * k
        v[n // 2] += 40.0  # spike
        v[int(n * 0.8) :] += 6.0  # level shift
        v[n // 3] = np.nan
        parts.append(pl.DataFrame({"series": [key] * n, "time": t, "value": v}))
    return pl.concat(parts).sort("time", maintain_order=True)


def run(det, frame: pl.DataFrame, cuts: list[int]) -> np.ndarray:
    out, prev = [], 0
    for c in [*cuts, frame.height]:
        out.append(det.score_many(frame[prev:c]))
        prev = c
    return np.concatenate(out)


@pytest.fixture(scope="module")
def data() -> pl.DataFrame:
    return stream()


@pytest.mark.parametrize("name", DETECTORS)
def test_scores_in_unit_interval(name: str, data: pl.DataFrame) -> None:
    s = fresh(name).score_many(data)
    assert s.shape == (data.height,)
    assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()
    assert s.max() > 0  # it scores something


@pytest.mark.parametrize("name", DETECTORS)
def test_causal(name: str, data: pl.DataFrame) -> None:
    full = fresh(name).score_many(data)
    k = data.height * 2 // 3
    prefix = fresh(name).score_many(data[:k])
    np.testing.assert_allclose(prefix, full[:k], atol=1e-9)
    # changing the future does not change the past
    future = data.with_columns(
        pl.when(pl.int_range(pl.len()) >= k).then(pl.col("value") * -3 + 100).otherwise(pl.col("value")).alias("value")
    )
    np.testing.assert_allclose(fresh(name).score_many(future)[:k], full[:k], atol=1e-9)


@pytest.mark.parametrize("name", DETECTORS)
def test_deterministic(name: str, data: pl.DataFrame) -> None:
    np.testing.assert_array_equal(fresh(name).score_many(data), fresh(name).score_many(data))


@pytest.mark.parametrize("name", DETECTORS)
def test_state_round_trip(name: str, data: pl.DataFrame) -> None:
    k = data.height // 2 + 17
    whole = fresh(name).score_many(data)
    first = fresh(name)
    first.score_many(data[:k])
    blob = pickle.dumps(first.state())
    second = fresh(name)
    second.restore(pickle.loads(blob))
    np.testing.assert_allclose(second.score_many(data[k:]), whole[k:], atol=1e-9)
    # a restored detector refuses another detector's state
    other = "ewma" if name != "ewma" else "robust_z"
    with pytest.raises(ValueError):
        fresh(other).restore(first.state())


@pytest.mark.parametrize("name", DETECTORS)
def test_batches_equal_record_by_record(name: str, data: pl.DataFrame) -> None:
    whole = fresh(name).score_many(data)
    rng = np.random.default_rng(3)
    cuts = sorted(rng.choice(np.arange(1, data.height), 40, replace=False).tolist())
    np.testing.assert_allclose(run(fresh(name), data, cuts), whole, atol=1e-9)
    short = data[:300]
    det = fresh(name)
    one = np.array([det.score_one(r["series"], r["time"], r["value"]) for r in short.iter_rows(named=True)])
    np.testing.assert_allclose(one, whole[:300] if name != "isolation_forest" else fresh(name).score_many(short), atol=1e-9)


@pytest.mark.parametrize("name", DETECTORS)
def test_series_independent(name: str) -> None:
    both = stream(series=("a|temperature", "b|temperature"))
    alone = both.filter(pl.col("series") == "a|temperature")
    s_both = fresh(name).score_many(both)
    s_alone = fresh(name).score_many(alone)
    mask = (both.get_column("series") == "a|temperature").to_numpy()
    np.testing.assert_allclose(s_both[mask], s_alone, atol=1e-9)


@pytest.mark.parametrize("name", DETECTORS)
def test_cold_start_and_non_finite(name: str, data: pl.DataFrame) -> None:
    s = fresh(name).score_many(data)
    first_rows = data.with_row_index().group_by("series").agg(pl.col("index").min()).get_column("index").to_numpy()
    assert (s[first_rows] == 0).all()
    nan_rows = np.flatnonzero(np.isnan(data.get_column("value").to_numpy()))
    assert (s[nan_rows] == 0).all()
    # a NaN is not learned: the stream without it scores the other rows the same
    clean = data.filter(pl.col("value").is_not_nan())
    keep = ~np.isnan(data.get_column("value").to_numpy())
    np.testing.assert_allclose(fresh(name).score_many(clean), s[keep], atol=1e-9)


@pytest.mark.parametrize("name", DETECTORS)
def test_spike_outscores_ordinary_points(name: str) -> None:
    n = 480
    frame = stream(n=n, series=("a|temperature",))
    s = fresh(name).score_many(frame)
    spike = n // 2
    ordinary = np.r_[s[spike - 100 : spike - 5]]
    assert s[spike] > np.quantile(ordinary, 0.95), (s[spike], np.quantile(ordinary, 0.95))


def test_unknown_detector_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="unknown detector 'nope'"):
        make("nope")


def test_arrow_batches_score_like_polars(data: pl.DataFrame) -> None:
    np.testing.assert_array_equal(fresh("default").score_many(data.to_arrow()), fresh("default").score_many(data))


def test_score_frame_helper() -> None:
    f = score_frame("x", [1, 2], [0.5, 1.5])
    assert f.columns == ["series", "time", "value"] and f.height == 2


@pytest.mark.parametrize("name", ["default", "robust_z", "ewma", "hst", "isolation_forest"])
def test_one_long_series_among_many_short_ones(name: str) -> None:
    # a device uploading a backlog beside live devices: the same scores as each series alone,
    # without padding every short series to the long one's length
    rng = np.random.default_rng(5)
    long = pl.DataFrame({"series": ["long|x"] * 3000, "time": np.arange(3000, dtype=np.int64),
                         "value": rng.normal(0, 1, 3000)})
    short = pl.DataFrame({"series": [f"s{i}|x" for i in range(400)], "time": np.zeros(400, dtype=np.int64),
                          "value": rng.normal(0, 1, 400)})
    both = pl.concat([short[:200], long, short[200:]])
    got = fresh(name).score_many(both)
    want_long = fresh(name).score_many(long)
    np.testing.assert_allclose(got[200:3200], want_long, atol=1e-9)
    from sensorium.detect.base import Layout

    groups = Layout.of(both.get_column("series")).length_groups()
    assert groups is not None and len(groups) == 2


@pytest.mark.parametrize("name", DETECTORS)
def test_state_of_other_parameters_is_refused(name: str, data: pl.DataFrame) -> None:
    det = fresh(name)
    det.score_many(data[:100])
    other = make(name, **{**FAST.get(name, {}), **OTHER.get(name, {})})
    with pytest.raises(ValueError, match="parameters"):
        other.restore(det.state())


OTHER: dict[str, dict] = {
    "default": {"avg": 5}, "likelihood": {"z_window": 32}, "ewma": {"alpha": 0.2}, "holt": {"beta": 0.1},
    "robust_z": {"window": 16}, "seasonal": {"period": "week"}, "isolation_forest": {"seed": 1},
    "hst": {"height": 4}, "ensemble": {"combine": "max"}, "refractory": {"points": 20},
}


@pytest.mark.parametrize("name", ["default", "ewma", "holt", "robust_z"])
def test_a_huge_reading_does_not_blind_the_series(name: str) -> None:
    n = 600
    rng = np.random.default_rng(8)
    v = rng.normal(0, 1, n)
    v[300] = 1e300
    v[500] += 40.0
    s = fresh(name).score_many(score_frame("a|x", np.arange(n), v))
    assert s[300] == 0.0  # beyond 1e150: treated as not a number
    assert s[500] > np.quantile(s[320:495], 0.95)


def test_likelihood_learning_buffers_are_given_back_and_scores_do_not_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 series start learning at staggered times; as most finish, the pooled learning
    buffer is compacted (row ids remapped for the series still learning) — scores equal those of
    a detector that never compacts."""
    from sensorium.detect.likelihood import Pool

    keys = tuple(f"d{i}|temperature" for i in range(2000))
    late = stream(n=200, seed=3, series=keys[:1500])  # these start at once
    early_end = late.filter(pl.col("time") < 60 * STEP)
    rest = stream(n=140, seed=4, series=keys[1500:]).with_columns(pl.col("time") + 60 * STEP)
    frame = pl.concat([early_end, pl.concat([late.filter(pl.col("time") >= 60 * STEP), rest]).sort(
        "time", maintain_order=True)])
    cuts = list(range(5000, frame.height, 5000))
    params = {"warm": 30, "learn": 120, "pmax": 40}
    det = make("likelihood", **params)
    got = run(det, frame, cuts)
    pool = det.pools["first"]
    assert pool.data.shape[0] < 1000 and pool.data.dtype == np.float32  # 2,000 rows at the peak
    monkeypatch.setattr(Pool, "compact", lambda self: None)
    want = run(make("likelihood", **params), frame, cuts)
    np.testing.assert_array_equal(got, want)
