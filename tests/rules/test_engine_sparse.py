"""The engine at scale: per-rule state only for the keys a rule matches, the derived values the
rules want (and only those) from the rolling stage, old checkpoints, the out-of-order filter."""

from __future__ import annotations

import pickle

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensorium.rules._kernels import Segments, in_order
from sensorium.rules.engine import RuleEngine
from sensorium.rules.model import RuleSet
from sensorium.rules.types import Transition
from sensorium.stream.rolling import RollingStats
from tests.rules._frames import T0, S, series_frame, values

CLIMATE = [f"climate,device_id=c{i},room={'garage' if i % 4 == 0 else 'attic'}" for i in range(40)]
ENERGY = [f"energy,device_id=e{i}" for i in range(5)]
RULES = RuleSet.from_dicts(
    [
        {"kind": "threshold", "name": "temp", "measurement": "climate", "field": "temperature", "above": {"warning": 50}},
        {"kind": "rate", "name": "temp-rate", "measurement": "climate", "field": "temperature", "above": {"warning": 2}},
        {"kind": "threshold", "name": "garage", "field": "temperature", "tags": {"room": "garage"},
         "above": {"warning": 40}, "for": "20s"},
        {"kind": "threshold", "name": "power", "measurement": "energy", "field": "power", "above": {"warning": 1000}},
        {"kind": "count", "name": "surges", "field": "power", "condition": {"gt": 900}, "count": 2, "within": "1m"},
        {"kind": "threshold", "name": "erratic", "field": "temperature", "stat": "std_10", "above": {"warning": 5}},
        {"kind": "threshold", "name": "any-trend", "field": "*", "stat": "trend_10", "measurement": "energy",
         "above": {"info": 100}},
        {"kind": "absence", "name": "silent", "group_by": ["device_id"], "after": "5m"},
    ]
)


def log(n: int = 30, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(n):
        for k in CLIMATE:
            rows.append((k, "temperature", T0 + j * S, float(rng.choice([20.0, 39.0, 45.0, 52.0, 60.0]))))
            rows.append((k, "humidity", T0 + j * S, 50.0))
        for k in ENERGY:
            rows.append((k, "power", T0 + j * S, float(rng.choice([100.0, 950.0, 1200.0]))))
    return values(rows)


def test_rule_state_is_kept_only_for_the_keys_a_rule_matches() -> None:
    eng = RuleEngine(RULES)
    eng.process(log(), series_frame(CLIMATE + ENERGY))
    rules = eng.state()["rules"]
    slots = {name: st["slots"] for name, st in rules.items()}
    assert slots == {
        "temp": 40, "temp-rate": 40, "garage": 10, "power": 5, "surges": 5, "erratic": 0, "any-trend": 0,
    }
    assert rules["garage"]["kernel"]["start"].shape == (1, 10)  # `for`: start times, by slot
    assert "start" not in rules["temp"]["kernel"]  # no `for`: none kept
    assert all(len(st["kernel"]["sev"]) == st["slots"] for st in rules.values())


def test_wanted_derived_names_what_rules_read() -> None:
    assert RuleEngine(RULES).wanted_derived() == ("temperature:std_10", "*:trend_10")
    plain = RuleSet.from_dicts([{"kind": "threshold", "name": "t", "field": "*", "above": {"warning": 1}}])
    assert RuleEngine(plain).wanted_derived() == ()


def test_rules_see_the_same_derived_values_when_only_the_wanted_ones_are_made() -> None:
    raw = log(60, seed=5)
    out: dict[bool, list[Transition]] = {}
    for only in (False, True):
        eng, rolling = RuleEngine(RULES), RollingStats("rolling")
        out[only] = []
        for a in range(0, raw.height, 700):
            part = raw.slice(a, 700)
            derived = rolling.process(part, only=eng.wanted_derived() if only else None)
            frame = pl.concat([part, derived], how="diagonal_relaxed")
            out[only] += eng.process(frame, series_frame(CLIMATE + ENERGY))
    assert out[True] == out[False]
    assert any(t.rule == "erratic" for t in out[True]) and any(t.rule == "any-trend" for t in out[True])


def _as_version_1(eng: RuleEngine, state: dict) -> dict:  # type: ignore[type-arg]
    """The state as version 1 wrote it: rule state by key id (defaults where a rule has no slot)."""
    st = pickle.loads(pickle.dumps(state))
    n = len(st["key_series"])
    for er in eng._events:
        rs = st["rules"][er.rule.name]
        keys = er.sel.key_of_slot
        kernel = {}
        for name, arr in rs["kernel"].items():
            if name in er.kernel.other:
                kernel[name] = arr
                continue
            full = np.zeros((*arr.shape[:-1], n), dtype=arr.dtype)
            full[..., keys] = arr
            kernel[name] = full
        stable_from = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        for slot, limit in rs["flapping"].items():
            stable_from[keys[slot]] = limit
        st["rules"][er.rule.name] = {"fingerprint": rs["fingerprint"], "kernel": kernel, "stable_from": stable_from}
    st["version"] = 1
    return st


def test_a_version_1_checkpoint_is_converted() -> None:
    raw = log(40, seed=9)
    k = raw.height // 2
    whole = RuleEngine(RULES, 40 * S, 3)
    expected = whole.process(raw, series_frame(CLIMATE + ENERGY))
    first = RuleEngine(RULES, 40 * S, 3)
    got = first.process(raw.slice(0, k), series_frame(CLIMATE + ENERGY))
    second = RuleEngine(RULES, 40 * S, 3)
    second.restore(_as_version_1(first, first.state()))
    got += second.process(raw.slice(k), series_frame(CLIMATE + ENERGY))
    assert got == expected
    assert any(t.flapping for t in expected)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.lists(st.integers(-5, 5), min_size=1, max_size=12), min_size=1, max_size=8),
    st.sampled_from([1, 10**9, 1 << 59]),
)
def test_in_order_keeps_rows_after_every_earlier_row_and_the_carried_time(
    groups: list[list[int]], scale: int
) -> None:
    """Including groups whose times span more than int64 holds summed (the exact fallback)."""
    t = np.array([x * scale for g in groups for x in g], dtype=np.int64)
    kid = np.repeat(np.arange(len(groups)), [len(g) for g in groups]).astype(np.int32)
    carry = np.array([(g[0] - 1 + i % 3) * scale for i, g in enumerate(groups)], dtype=np.int64)
    s = Segments(kid, t, np.zeros(len(t)), np.arange(len(t)))
    want, i = [], 0
    for c, g in zip(carry.tolist(), groups, strict=True):
        best = c
        for x in g:
            want.append(x * scale > best)
            best = max(best, x * scale)
            i += 1
    assert in_order(s, carry).tolist() == want
