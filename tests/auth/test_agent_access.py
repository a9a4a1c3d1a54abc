"""The agent sees only what the asking user may see (#8 item 7): its answers, its vocabulary, the
alerts it lists, the commands it sends, the automations it saves, its interaction history and
follow-up sessions — over HTTP (``/api/v1/ask``) and through the LLM's tools."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sensorium.agent import Agent
from sensorium.auth.principal import Forbidden, Principal
from tests.auth.conftest import World


def ask(world: World, who: str, question: str, **kw: Any) -> dict[str, Any]:
    r = world.post(who, "/api/v1/ask", json={"question": question, **kw})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def principal(world: World, who: str) -> Principal:
    from sensorium.auth.service import Auth

    auth = Auth(world.platform.settings, world.platform.registry_store, clock=world.clock)
    return auth.verify_token(world.tokens[who])


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def send_sync(self, device_id: str, command: str, params: dict[str, Any]) -> dict[str, Any]:
        self.sent.append((device_id, command, params))
        return {"device_id": device_id, "command": command, "params": params, "status": "published"}


def test_answers_are_computed_over_the_users_devices_only(world: World) -> None:
    mine = world.sql("alice", "SELECT avg(temperature) FROM climate")[0][0]
    everyone = world.sql("root", "SELECT avg(temperature) FROM climate")[0][0]
    assert mine != pytest.approx(everyone)
    a = ask(world, "alice", "average temperature")
    assert a["status"] == "answered" and a["value"] == pytest.approx(mine, abs=0.01)
    assert ask(world, "root", "average temperature")["value"] == pytest.approx(everyone, abs=0.01)
    # by device: alice's rows only; the admin sees every device
    rows = ask(world, "alice", "average temperature by device")["table"]["rows"]
    assert {r[0] for r in rows} == {"a1", "a2"}
    assert {r[0] for r in ask(world, "root", "average temperature by device")["table"]["rows"]} >= {"a1", "b1", "x9"}


def test_another_users_device_is_unknown_not_revealed(world: World) -> None:
    out = ask(world, "alice", "what is the highest temperature of b1?")
    assert out["status"] == "declined" and out["value"] is None and out["table"] is None
    assert "don't know" in out["answer"] and "kitchen" in out["answer"]  # her names, not bob's
    # the same question from its owner is answered
    assert ask(world, "bob", "what is the highest temperature of b1?")["value"] == pytest.approx(70.0)
    # alice's vocabulary has her devices and not bob's (it is built through her scoped views)
    agent = Agent(world.platform, embeddings=False)
    try:
        v = agent.vocabulary(agent.context(principal(world, "alice")))
        assert set(v.devices) == {"a1", "a2"}
        assert set(agent.vocabulary(agent.context(principal(world, "bob"))).devices) == {"b1"}
        assert set(agent.vocabulary(agent.context(None)).devices) >= {"a1", "a2", "b1", "x9"}
    finally:
        agent.close()


def test_alerts_listed_by_the_agent_are_the_users(world: World) -> None:
    out = ask(world, "alice", "show me the alerts")
    assert out["status"] == "answered", out["answer"]
    text = json.dumps(out["table"])
    assert "a1" in text and "b1" not in text
    assert "b1" in json.dumps(ask(world, "root", "show me the alerts")["table"])


def test_commands_need_write_access_and_a_device_in_scope(world: World) -> None:
    rec = Recorder()
    agent = Agent(world.platform, embeddings=False, publisher=lambda: rec)
    try:
        alice, gus = principal(world, "alice"), principal(world, "gus")
        ctx = agent.context(alice)
        assert ctx.send_command("a1", "set", {"temperature": 21})["status"] == "published"
        with pytest.raises(Forbidden, match="not among your devices"):
            ctx.send_command("b1", "set", {"temperature": 21})
        with pytest.raises(Forbidden, match="guests are read-only"):
            agent.context(gus).send_command("a1", "set", {"temperature": 21})
        assert rec.sent == [("a1", "set", {"temperature": 21})]
        # through the agent: bob's device is not a name alice's agent knows; nothing is sent
        rec.sent.clear()
        out = agent.ask("turn off b1", principal=alice)
        assert out["status"] in ("declined", "failed") and rec.sent == []
        out = agent.ask("turn off a1", principal=gus)
        assert out["status"] in ("declined", "failed") and rec.sent == []
        # an automation commanding bob's device is not saved for alice
        from sensorium.automations.loader import parse_definition

        auto = parse_definition({
            "name": "sneaky", "trigger": {"kind": "schedule", "cron": "0 7 * * *"},
            "actions": [{"kind": "command", "device_id": "b1", "command": "off"}],
        })
        with pytest.raises(Forbidden, match="not among your devices"):
            ctx.save_automation(auto)
    finally:
        agent.close()


def test_interactions_sessions_and_confirmations_are_per_user(world: World) -> None:
    a = ask(world, "alice", "average temperature today", session_id="s1")
    assert a["status"] == "answered"
    ask(world, "bob", "average watts", session_id="s2")
    mine = world.get("alice", "/api/v1/ask/interactions").json()["interactions"]
    assert {i["principal"] for i in mine} == {"alice"} and len(mine) == 1
    assert len(world.get("root", "/api/v1/ask/interactions").json()["interactions"]) == 2  # admins: all
    # bob cannot give feedback on alice's interaction, nor continue her session
    r = world.post("bob", "/api/v1/ask/feedback", json={"interaction_id": a["interaction_id"], "feedback": "meh"})
    assert r.status_code == 404
    follow = ask(world, "bob", "and by device?", session_id="s1")  # alice's s1 is not bob's
    assert follow["status"] == "declined"
    assert ask(world, "alice", "and by device?", session_id="s1")["status"] == "answered"
    # a confirmation token is its user's alone
    rec = Recorder()
    agent = Agent(world.platform, embeddings=False, publisher=lambda: rec)
    try:
        token = agent.interactions.pending(a["interaction_id"], "alice",
                                           {"kind": "command", "devices": ["a1"], "command": "off", "params": {},
                                            "intent": {}})
        from sensorium.errors import NotFound

        with pytest.raises(NotFound):
            agent.ask(confirm=token, principal=principal(world, "bob"))
        done = agent.ask(confirm=token, principal=principal(world, "alice"))
        assert done["status"] == "executed" and rec.sent == [("a1", "off", {})]
    finally:
        agent.close()


def test_the_llms_tools_are_scoped_too(world: World) -> None:
    from sensorium.agent.llm import Tools

    rec = Recorder()
    agent = Agent(world.platform, embeddings=False, publisher=lambda: rec)
    try:
        tools = Tools(agent, agent.context(principal(world, "alice")))
        call = {"id": "x", "type": "function",
                "function": {"name": "send_command", "arguments": json.dumps({"device_id": "b1", "command": "off"})}}
        _, reply = tools.run(call)
        assert "no device 'b1'" in json.loads(reply)["error"] and rec.sent == []
        call["function"]["arguments"] = json.dumps({"field": "temperature", "device_id": "b1"})
        call["function"]["name"] = "latest"
        _, reply = tools.run(call)
        assert "unknown device_id 'b1'" in json.loads(reply)["error"]
    finally:
        agent.close()


def test_a_users_interactions_are_documents_readable_by_them_and_admins(world: World) -> None:
    a = ask(world, "alice", "average temperature today", session_id="d1")
    docs = world.get("alice", "/api/v1/documents", params={"kind": "interaction"}).json()["items"]
    assert len(docs) == 1 and docs[0]["user_id"] == "alice"
    d = docs[0]
    assert d["data"]["interaction_id"] == a["interaction_id"] and d["data"]["status"] == "answered"
    assert d["data"]["intent"]["field"] == "temperature" and d["data"]["value"] == pytest.approx(a["value"])
    assert d["pii"] == {"text": "average temperature today", "response": a["answer"]}
    assert world.get("bob", "/api/v1/documents", params={"kind": "interaction"}).json()["items"] == []
    assert len(world.get("root", "/api/v1/documents", params={"kind": "interaction"}).json()["items"]) == 1
    # the words typed are personal data: not stored in the clear
    from sqlalchemy import text

    with world.platform.registry_store.session() as s:  # type: ignore[union-attr]
        raw = s.execute(text("SELECT pii FROM documents")).scalars().all()
    assert raw and all("average temperature today" not in str(r) for r in raw)
