"""The held-out evaluation (tests/agent/heldout.py: questions written without reading the parser)
as a test. It does not assert accuracy yet — only that the agent rarely answers *wrongly with
confidence* (a wrong answer is worse than a decline): at most 5 % of the cases."""

from __future__ import annotations

from sensorium.platform import Sensorium
from tests.agent.cases import DECLINE, evaluate, load
from tests.agent.heldout import heldout_cases

MAX_WRONG_SHARE = 0.05


def test_the_held_out_set_gets_few_confident_wrong_answers(dataset: Sensorium) -> None:
    cs = heldout_cases(load(dataset))
    assert len(cs) >= 120
    assert sum(c.expected is DECLINE for c in cs) >= 15
    res = evaluate(dataset, cs)
    wrong = [f"{r['category']}: {r['question']} → {r['outcome']} | {r['answer'][:120]}"
             for r in res["results"] if r["score"] < 0]
    assert res["wrong"] <= MAX_WRONG_SHARE * res["questions"], (
        f"{res['wrong']} of {res['questions']} answered wrongly (at most {int(MAX_WRONG_SHARE * res['questions'])} allowed):\n"
        + "\n".join(wrong))
