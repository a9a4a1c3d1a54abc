"""The evaluation (bench/agent_eval.py) as a test: ≥150 questions and commands over the fixed
dataset, expected answers computed independently (tests/agent/cases.py), ≥ 90 % exact, no
unanswerable question answered."""

from __future__ import annotations

from sensorium.platform import Sensorium
from tests.agent.cases import DECLINE, cases, evaluate, load


def test_the_evaluation_reaches_90_percent_and_never_answers_the_unanswerable(dataset: Sensorium) -> None:
    cs = cases(load(dataset))
    assert len(cs) >= 150
    assert sum(c.expected is DECLINE for c in cs) >= 15
    res = evaluate(dataset, cs)
    wrong = [r for r in res["results"] if r["score"] < 0]
    assert res["accuracy"] >= 0.9, [r for r in res["results"] if r["score"] != 1]
    assert res["by_category"]["unanswerable"]["wrong"] == 0, wrong
    assert res["wrong"] <= 3, wrong
