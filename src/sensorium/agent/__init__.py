"""The natural-language agent (docs/agent.md): questions → query plans → SQL → answers, commands →
intents → device commands, automations in plain language; an optional OpenAI-compatible LLM."""

from __future__ import annotations

from sensorium.agent.agent import Agent
from sensorium.agent.context import AgentContext
from sensorium.agent.plan import Plan
from sensorium.agent.vocabulary import Vocabulary

__all__ = ["Agent", "AgentContext", "Plan", "Vocabulary"]
