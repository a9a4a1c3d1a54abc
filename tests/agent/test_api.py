"""POST /api/v1/ask end to end: questions, follow-ups, commands reaching a paho-mqtt subscriber
through Mosquitto, confirmations, automations drafted and saved, and every bad input a 4xx."""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from sensorium.platform import Sensorium
from tests.api.test_commands import Subscriber
from tests.conftest import T0, FakeClock, make_settings, require_mosquitto


@pytest.fixture
def home(tmp_path: Path) -> Iterator[tuple[Any, Sensorium, dict[str, str]]]:
    """A small home: two climate devices in the living room, one in the bedroom, motion in the
    hallway; the registry holds a hallway light and a front-door lock."""
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app

    tag = uuid.uuid4().hex[:6]
    ids = {k: f"{k}-{tag}" for k in ("lr1", "lr2", "bed", "mot", "light", "lock")}
    p = Sensorium(make_settings(tmp_path / "d", parse_workers=0), clock=FakeClock(T0 + 7200 * 10**9), background=False)
    lines = []
    for i in range(12):
        t = T0 + i * 600 * 10**9
        lines += [f"climate,device_id={ids['lr1']},room=living_room,location=home temperature={20 + i * 0.1},humidity=40 {t}",
                  f"climate,device_id={ids['lr2']},room=living_room,location=home temperature={21 + i * 0.1},humidity=42 {t}",
                  f"climate,device_id={ids['bed']},room=bedroom,location=home temperature={18 + i * 0.1},humidity=50 {t}",
                  f"motion,device_id={ids['mot']},room=hallway,location=home motion={'true' if i % 3 == 0 else 'false'} {t}"]
    assert not p.write("\n".join(lines)).rejects
    p.process_stream()
    rs = p.registry_store
    assert rs is not None
    rs.create("room", {"id": "hallway", "name": "hallway"})
    rs.create("device", {"id": ids["light"], "name": "hallway light", "room_id": "hallway"})
    rs.create("actuator", {"id": f"act-{ids['light']}", "name": "hallway light", "device_id": ids["light"],
                           "capabilities": ["turn_on", "turn_off"]})
    rs.create("device", {"id": ids["lock"], "name": "front door", "room_id": "hallway"})
    rs.create("actuator", {"id": f"act-{ids['lock']}", "name": "front door lock", "device_id": ids["lock"],
                           "capabilities": ["lock", "unlock"]})
    with TestClient(create_app(p), raise_server_exceptions=False) as c:
        yield c, p, ids
    p.close()


def ask(c: Any, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = c.post("/api/v1/ask", json=body)
    assert r.status_code == status, r.text
    out: dict[str, Any] = r.json()
    return out


def test_a_question_has_answer_plan_sql_table_and_follow_ups(home: Any) -> None:
    c, p, ids = home
    out = ask(c, {"question": "average temperature in the living room today?", "session_id": "s1"})
    assert out["status"] == "answered"
    assert out["value"] == pytest.approx((sum(20 + i * 0.1 for i in range(12)) + sum(21 + i * 0.1 for i in range(12))) / 24)
    assert out["plan"]["measurement"] == "climate" and out["plan"]["aggregation"] == "mean"
    assert out["plan"]["filters"] == {"room": ["living_room"]}
    assert out["plan"]["time_range"]["start"] == "2026-01-01T00:00:00Z"
    assert p.query(out["sql"]).to_pylist()[0]["value"] == pytest.approx(out["value"])  # the SQL is what produced it
    assert out["table"]["columns"] == ["value", "readings"]
    assert 0 < out["confidence"] <= 1
    follow = ask(c, {"question": "only the bedroom", "session_id": "s1"})
    assert follow["value"] == pytest.approx(sum(18 + i * 0.1 for i in range(12)) / 12)
    assert follow["understood"]["follow_up"] is True
    byh = ask(c, {"question": "by hour", "session_id": "s1"})
    assert [r[0] for r in byh["table"]["rows"]] == ["2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"]
    assert byh["chart"]["mark"]["type"] == "line"
    other = ask(c, {"question": "only the bedroom", "session_id": "s2"})  # no context in another session
    assert other["status"] == "declined"


def test_an_unanswerable_question_is_declined_with_what_it_can_do(home: Any) -> None:
    c, _, _ = home
    out = ask(c, {"question": "what was the co2 level in the bedroom yesterday?"})
    assert out["status"] == "declined" and out["value"] is None and out["sql"] is None
    assert "co2" in out["answer"] and "I answer questions" in out["answer"]
    assert out["confidence"] == 0.0


@pytest.mark.parametrize("question", [
    "average temperature in the living room'; DROP TABLE climate; --",
    "delete all temperature data",
    "average temperature in the \"climate\" UNION SELECT * FROM read_text('/etc/passwd')",
])
def test_hostile_questions_never_reach_sql_unquoted(home: Any, question: str) -> None:
    c, p, _ = home
    out = ask(c, {"question": question})
    assert out["status"] == "declined"
    assert p.query("SELECT count(*) AS n FROM climate").to_pylist()[0]["n"] == 36


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 400), (b"[1]", 400), (b"{}", 400), (b'{"question": 5}', 400),
    (b'{"question": "hi", "sql": "x"}', 400), (b'{"question": "' + b"x" * 1200 + b'"}', 400),
    (b'{"question": "hi", "session_id": ""}', 400), (b'{"confirm": "unknown-token-123"}', 404),
    (b'{"confirm": "x"}', 400),
])
def test_bad_bodies_are_precise_4xx(home: Any, body: bytes, status: int) -> None:
    c, _, _ = home
    r = c.post("/api/v1/ask", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["code"] and r.json()["message"]


def _get(sub: Subscriber, timeout: float = 10) -> dict[str, Any]:
    _, payload, _ = sub.got.get(timeout=timeout)
    out: dict[str, Any] = orjson.loads(payload)
    return out


def test_a_spoken_command_reaches_the_device_and_is_recorded(home: Any) -> None:
    require_mosquitto()
    c, _, ids = home
    sub = Subscriber(f"sensorium/devices/{ids['bed']}/commands")
    try:
        out = ask(c, {"question": "set the bedroom to 72 degrees", "session_id": "cmd"})
        assert out["status"] == "executed", out
        msg = _get(sub)
    finally:
        sub.close()
    assert msg["device_id"] == ids["bed"] and msg["command"] == "set"
    assert msg["params"] == {"temperature": 22.2, "unit": "degC"}  # 72 °F → 22.2 °C: the device's unit
    assert out["intent"]["action"] == "set" and out["intent"]["parameters"]["unit"] == "degF"
    items = c.get("/api/v1/ask/interactions", params={"session_id": "cmd"}).json()["interactions"]
    assert items[0]["status"] == "executed" and items[0]["kind"] == "command"
    assert items[0]["intent"]["resolved"]["devices"] == [ids["bed"]]
    fb = c.post("/api/v1/ask/feedback", json={"interaction_id": items[0]["id"], "feedback": "warm enough"})
    assert fb.status_code == 200 and fb.json()["feedback"] == "warm enough"


def test_ambiguous_and_risky_commands_wait_for_confirmation(home: Any) -> None:
    require_mosquitto()
    c, _, ids = home
    subs = {k: Subscriber(f"sensorium/devices/{ids[k]}/commands") for k in ("lr1", "lr2", "lock", "light")}
    try:
        out = ask(c, {"question": "set the living room to 21 degrees"})
        assert out["status"] == "needs_confirmation" and out["needs_confirmation"] and out["confirm_token"]
        assert "2 devices match" in out["answer"]
        with pytest.raises(queue.Empty):
            subs["lr1"].got.get(timeout=0.5)  # nothing sent before the confirmation
        done = ask(c, {"confirm": out["confirm_token"]})
        assert done["status"] == "executed"
        assert _get(subs["lr1"])["params"] == {"temperature": 21.0, "unit": "degC"}
        assert _get(subs["lr2"])["params"] == {"temperature": 21.0, "unit": "degC"}
        ask(c, {"confirm": out["confirm_token"]}, status=404)  # a token runs once
        risky = ask(c, {"question": "unlock the front door"})
        assert risky["status"] == "needs_confirmation" and "risky" in risky["answer"]
        assert ask(c, {"confirm": risky["confirm_token"]})["status"] == "executed"
        assert _get(subs["lock"])["command"] == "unlock"
        far = ask(c, {"question": "set the bedroom to 95 degrees celsius"})
        assert far["status"] == "needs_confirmation" and "outside" in far["answer"]
        on = ask(c, {"question": "turn on the hallway light"})
        assert on["status"] == "executed", on
        assert _get(subs["light"])["command"] == "turn_on"
        nope = ask(c, {"question": "turn on the garden sprinkler"})
        assert nope["status"] == "declined"
    finally:
        for s in subs.values():
            s.close()


def test_an_automation_in_plain_language_is_drafted_then_saved(home: Any) -> None:
    c, p, ids = home
    out = ask(c, {"question": "turn on the hallway light when motion is detected after 10 pm"})
    assert out["status"] == "needs_confirmation", out
    a = out["automation"]
    assert a["trigger"] == {"kind": "telemetry", "measurement": "motion", "field": "motion",
                            "tags": {"room": "hallway"}, "above": 0.5, "below": None, "equals": None}
    assert a["conditions"][0]["after"] == "22:00:00" and a["conditions"][0]["before"] == "06:00:00"
    assert a["actions"][0]["device_id"] == ids["light"] and a["actions"][0]["command"] == "turn_on"
    assert c.get(f"/api/v1/automations/{a['name']}").status_code == 404  # a draft is not saved
    saved = ask(c, {"confirm": out["confirm_token"]})
    assert saved["status"] == "saved"
    got = c.get(f"/api/v1/automations/{a['name']}")
    assert got.status_code == 200 and got.json()["definition"]["trigger"]["field"] == "motion"
    bad = ask(c, {"question": "turn on the hallway light when the moon is full"})
    assert bad["status"] == "declined"
