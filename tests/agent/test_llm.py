"""The pluggable LLM against a local OpenAI-compatible test server (FastAPI on 127.0.0.1) that
returns scripted tool calls — valid, malformed and hostile. Every refused call is answered with a
clear message; timeouts and failures fall back to the embedded parser."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sensorium.agent import Agent
from sensorium.agent.llm import LLMClient
from sensorium.config import AgentSettings
from sensorium.platform import Sensorium
from tests.agent.cases import RANGES
from tests.conftest import free_port


class FakeLLM:
    """A chat-completions server replying from a script; it keeps every request it got."""

    def __init__(self) -> None:
        import uvicorn

        self.script: list[Any] = []
        self.requests: list[dict[str, Any]] = []
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            self.requests.append(await request.json())
            step = self.script.pop(0) if self.script else {"content": "no more script"}
            if step == "slow":
                import asyncio

                await asyncio.sleep(3)
                step = {"content": "late"}
            if step == "error":
                return JSONResponse({"error": "boom"}, status_code=500)
            if step == "garbage":
                return JSONResponse({"hello": "world"})
            return {"choices": [{"index": 0, "message": {"role": "assistant", **step}, "finish_reason": "stop"}]}

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def call(name: str, args: Any, cid: str = "c1") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)}}


@pytest.fixture
def llm(dataset: Sensorium) -> Iterator[tuple[FakeLLM, Agent, list[Any]]]:
    fake = FakeLLM()
    sent: list[Any] = []

    class Recorder:
        def send_sync(self, device_id: str, command: str, params: dict[str, Any]) -> dict[str, Any]:
            sent.append((device_id, command, params))
            return {"device_id": device_id, "command": command, "status": "published"}

    agent = Agent(dataset, embeddings=False, publisher=lambda: Recorder())
    agent.llm = LLMClient(AgentSettings(llm_url=f"http://127.0.0.1:{fake.port}/v1", llm_timeout_s=1.0))
    yield fake, agent, sent
    agent.close()
    fake.close()


def test_a_tool_call_answer_is_grounded_in_the_query(llm: Any) -> None:
    fake, agent, _ = llm
    start, end = RANGES["yesterday"]
    fake.script = [
        {"content": None, "tool_calls": [call("query", {"plan": {
            "kind": "aggregate", "measurements": ["climate"], "field": "temperature", "aggregation": "mean",
            "time": {"start_ns": start, "end_ns": end}, "filters": {"room": ["living_room"]}}})]},
        {"content": "It averaged about 20.6 °C."},
    ]
    out = agent.ask("how warm was the living room yesterday?")
    embedded = agent.ask("average temperature in the living room yesterday", use_llm=False)
    assert out["status"] == "answered" and out["understood"]["kind"] == "llm"
    assert out["answer"] == "It averaged about 20.6 °C."
    assert out["value"] == embedded["value"] and out["sql"] == embedded["sql"]
    tool_msg = fake.requests[1]["messages"][-1]
    assert tool_msg["role"] == "tool" and json.loads(tool_msg["content"])["value"] == embedded["value"]
    assert {t["function"]["name"] for t in fake.requests[0]["tools"]} >= {"query", "send_command", "forecast"}


def test_malformed_and_hostile_tool_calls_are_refused_with_a_reason(llm: Any, dataset: Sensorium) -> None:
    fake, agent, sent = llm
    before = dataset.query("SELECT count(*) AS n FROM climate").to_pylist()[0]["n"]
    fake.script = [
        {"content": None, "tool_calls": [
            call("query", {"plan": {"kind": "aggregate", "measurements": ["climate"],
                                    "field": 'temperature" FROM climate; DROP TABLE climate; --'}}, "a"),
            call("query", {"plan": {"kind": "aggregate", "measurements": ["climate"], "field": "temperature",
                                    "filters": {"room": ["living_room' OR '1'='1"]}}}, "b"),
            call("query", {"plan": {"kind": "aggregate", "measurements": ["climate; DELETE FROM climate"],
                                    "field": "temperature"}}, "c"),
            call("run_sql", {"sql": "DELETE FROM climate"}, "d"),
            call("send_command", {"device_id": "evil-device", "command": "unlock"}, "e"),
            call("send_command", {"device_id": "dev-00001", "command": "rm -rf"}, "f"),
            call("latest", "{not json", "g"),
            call("latest", {"field": "temperature", "sql": "x"}, "h"),
        ]},
        {"content": "I could not do any of that."},
    ]
    out = agent.ask("average temperature in the living room yesterday")
    replies = {m["tool_call_id"]: json.loads(m["content"])["error"] for m in fake.requests[1]["messages"] if m["role"] == "tool"}
    assert "not a field name" in replies["a"]
    assert "unknown room" in replies["b"]
    assert "not a measurement name" in replies["c"]
    assert "unknown tool 'run_sql'" in replies["d"]
    assert "no device 'evil-device'" in replies["e"]
    assert "command must be one of" in replies["f"]
    assert "not JSON" in replies["g"]
    assert "does not take sql" in replies["h"]
    assert all(r.startswith("refused: ") for r in replies.values())
    assert sent == []  # nothing was commanded
    assert dataset.query("SELECT count(*) AS n FROM climate").to_pylist()[0]["n"] == before
    # nothing grounded: the embedded parser answered, and the refusals are listed
    assert out["understood"]["kind"] == "query" and out["status"] == "answered"
    assert len(out["understood"]["refused"]) == 8
    assert any("ungrounded" in n for n in out["understood"]["notes"])


@pytest.mark.parametrize("failure", ["slow", "error", "garbage"])
def test_timeouts_and_failures_fall_back_to_the_embedded_parser(llm: Any, failure: str) -> None:
    fake, agent, _ = llm
    fake.script = [failure]
    out = agent.ask("average temperature in the bedroom yesterday")
    assert out["status"] == "answered" and out["understood"]["kind"] == "query"
    assert any("LLM was not used" in n for n in out["understood"]["notes"])


def test_a_risky_command_from_the_llm_waits_for_the_user(llm: Any) -> None:
    fake, agent, sent = llm
    fake.script = [{"content": None, "tool_calls": [call("send_command", {"device_id": "dev-00001", "command": "unlock"})]},
                   {"content": "Please confirm unlocking."}]
    out = agent.ask("let me in")
    assert out["status"] == "needs_confirmation" and out["confirm_token"] and sent == []
    done = agent.ask(confirm=out["confirm_token"])
    assert done["status"] == "executed" and sent == [("dev-00001", "unlock", {})]


def test_the_llm_cannot_reach_devices_the_user_may_not_see(llm: Any, dataset: Sensorium) -> None:
    """Through the protocol, for a user whose scope is one device: a command for another device
    and a query naming another device's room are refused with a clear message; nothing is sent."""
    from sensorium.auth.principal import Principal
    from sensorium.registry.scope import AccessScope

    fake, agent, sent = llm
    mine = "dev-00001"
    room = dataset.query(f"SELECT any_value(room) AS r FROM climate WHERE device_id = '{mine}'").to_pylist()[0]["r"]
    other_room = dataset.query(
        f"SELECT any_value(room) AS r FROM climate WHERE room <> '{room}'").to_pylist()[0]["r"]
    user = Principal(id="u1", role="user", via="token", user_id="u1",
                     scope=AccessScope(user="u1", devices=frozenset({mine}), visible=frozenset({mine})))
    fake.script = [
        {"content": None, "tool_calls": [
            call("send_command", {"device_id": "dev-00002", "command": "off"}, "a"),
            call("latest", {"field": "temperature", "room": other_room}, "b"),
        ]},
        {"content": "Done."},
    ]
    agent.ask("turn off dev-00002 and tell me the temperature next door", principal=user)
    replies = {m["tool_call_id"]: json.loads(m["content"])["error"] for m in fake.requests[1]["messages"]
               if m["role"] == "tool"}
    assert "no device 'dev-00002' that you may command" in replies["a"]
    assert f"unknown room '{other_room}'" in replies["b"]
    assert sent == []
