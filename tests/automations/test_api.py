"""The automation and notification routes: CRUD with precise 4xx errors, runs and notifications."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sensorium.platform import Sensorium
from tests.conftest import T0, FakeClock, make_settings

NS = 1_000_000_000
NOTIFY = {
    "name": "door-open",
    "trigger": {"kind": "state", "measurement": "door", "field": "open", "to": True},
    "actions": [{"kind": "notify", "user": "alice", "title": "Door", "message": "{device_id} opened at {time}"}],
}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[Any, Sensorium]]:
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app

    f = tmp_path / "autos.toml"
    f.write_text('[[automations]]\nname = "from-file"\ntrigger = { kind = "schedule", cron = "0 8 * * *" }\n'
                 'actions = [{ kind = "notify" }]\n')
    p = Sensorium(make_settings(tmp_path / "d", parse_workers=0, automations={"file": f}),
                  clock=FakeClock(), background=False)
    try:
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            yield c, p
    finally:
        p.close()


def test_crud_and_errors(client: tuple[Any, Sensorium]) -> None:
    c, _ = client
    assert [a["name"] for a in c.get("/api/v1/automations").json()["automations"]] == ["from-file"]
    r = c.post("/api/v1/automations", json=NOTIFY)
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "api" and r.json()["definition"]["trigger"]["to"] is True
    assert c.post("/api/v1/automations", json=NOTIFY).status_code == 409
    bad = c.post("/api/v1/automations", json={**NOTIFY, "name": "x", "trigger": {"kind": "schedule", "cron": "nope"}})
    assert bad.status_code == 400 and "cron" in bad.json()["message"]
    assert c.post("/api/v1/automations", content=b"{not json").status_code == 400
    assert c.post("/api/v1/automations/check", json={**NOTIFY, "actions": []}).status_code == 400
    ok = c.post("/api/v1/automations/check", json=NOTIFY)
    assert ok.status_code == 200 and ok.json()["ok"] is True
    changed = {**NOTIFY, "cooldown": "5m"}
    assert c.put("/api/v1/automations/door-open", json=changed).json()["definition"]["cooldown"] == "5m"
    assert c.put("/api/v1/automations/other", json=changed).status_code == 400  # name mismatch
    assert c.put("/api/v1/automations/from-file", json={**NOTIFY, "name": "from-file"}).status_code == 409
    assert c.delete("/api/v1/automations/from-file").status_code == 409
    assert c.get("/api/v1/automations/nope").status_code == 404
    assert c.delete("/api/v1/automations/door-open").status_code == 204
    assert c.delete("/api/v1/automations/door-open").status_code == 404


def test_an_api_automation_runs_and_notifies(client: tuple[Any, Sensorium]) -> None:
    c, p = client
    assert c.post("/api/v1/automations", json=NOTIFY).status_code == 201
    body = "\n".join(f"door,device_id=front open={v} {T0 + i * NS}" for i, v in enumerate(["false", "true", "true", "false", "true"]))
    assert c.post("/api/v2/write", content=body).status_code == 204
    p.process_stream()
    assert p.automation_outbox is not None
    p.automation_outbox.deliver_due()
    runs = c.get("/api/v1/automations/runs", params={"automation": "door-open"}).json()["runs"]
    assert len(runs) == 2 and {r["status"] for r in runs} == {"ok"}
    notes = c.get("/api/v1/notifications", params={"user": "alice", "unread": True}).json()
    assert notes["unread"] == 2
    assert notes["notifications"][0]["message"] == "front opened at 2026-01-01T00:00:04Z"
    ids = [n["id"] for n in notes["notifications"]]
    assert c.post("/api/v1/notifications/read", json={"ids": ids}).json() == {"updated": 2}
    assert c.get("/api/v1/notifications", params={"unread": True}).json()["total"] == 0
    assert c.post("/api/v1/notifications/read", json={"ids": ["x"]}).status_code == 400
