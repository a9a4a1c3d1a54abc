"""Users, tokens and the audit log over HTTP; the route policy; passwords and tokens at rest."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from sensorium.auth.policy import POLICY
from tests.auth.conftest import PASSWORD, World


def test_routes_open_to_users_and_guests_are_exactly_the_scoped_ones(shared_world: World) -> None:
    """A new route is admin-only until someone adds it to the policy (and scopes it)."""
    from fastapi.routing import APIRoute

    world = shared_world
    routes = {(m, r.path) for r in world.client.app.routes if isinstance(r, APIRoute)  # type: ignore[attr-defined]
              for m in r.methods}
    assert set(POLICY) <= routes, set(POLICY) - routes  # no stale entries
    open_paths = {path for (_, path), rule in POLICY.items() if rule != "admin"}
    assert open_paths == {
        "/api/v2/write", "/write", "/api/v1/readings", "/api/v1/query", "/api/v1/latest",
        "/api/v1/measurements", "/api/v1/series", "/api/v1/alerts", "/api/v1/alerts/stream",
        "/api/v1/alerts/{alert_id}", "/api/v1/alerts/{alert_id}/ack",
        "/api/v1/devices/{device_id}/commands", "/api/v1/devices/{device_id}/sampling",
        "/api/v1/devices/{device_id}/sampling/publish", "/api/v1/registry/relations",
        "/api/v1/registry/{kind}", "/api/v1/registry/{kind}/{entity_id}", "/api/v1/graph/users/{user_id}",
        "/api/v1/graph/impact/{entity_id}", "/api/v1/graph/pagerank", "/api/v1/graph/communities",
        "/api/v1/graph/path", "/api/v1/documents", "/api/v1/documents/{document_id}",
        "/api/v1/dashboard/overview", "/api/v1/dashboard/devices", "/api/v1/dashboard/registry",
        "/api/v1/dashboard/devices/{device_id}/charts", "/api/v1/dashboard/events", "/api/v1/me",
        "/api/v1/logout", "/api/v1/me/password", "/api/v1/catalog",
        "/api/v1/ask", "/api/v1/ask/feedback", "/api/v1/ask/interactions", "/api/v1/search",
        "/api/v1/search/similar", "/api/v1/forecast", "/api/v1/forecast/compare",
    }
    # registry reads are open; every registry write is admin-only
    assert all(rule == "admin" for (m, p), rule in
               {(m, p): POLICY.get((m, p), "admin") for m, p in routes if p.startswith("/api/v1/registry")}.items()
               if m != "GET")


def test_admins_manage_users(world: World) -> None:
    c, root = world.client, world.as_("root")
    r = c.post("/api/v1/users", headers=root, json={"id": "carol", "name": "Carol", "email": "carol@example.com",
                                                     "role": "guest", "password": "a long password"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "Carol" and r.json()["email"] == "carol@example.com"
    users = {u["id"]: u for u in c.get("/api/v1/users", headers=root).json()["users"]}
    assert users["carol"]["has_password"] and users["carol"]["role"] == "guest"
    assert users["alice"]["tokens"] == 1
    assert c.post("/api/v1/login", json={"username": "carol", "password": "a long password"}).status_code == 200
    # bad input: precise 4xx
    for body, status in [({"id": "carol"}, 409), ({"id": "dave", "role": "boss"}, 400),
                         ({"id": "dave", "password": "short"}, 400), ({"id": "dave", "colour": "red"}, 400),
                         ({"id": "dave", "email": "alice@EXAMPLE.com"}, 409), ({"id": "bad id"}, 400),
                         ({"id": 5}, 400)]:
        r = c.post("/api/v1/users", headers=root, json=body)
        assert r.status_code == status, (body, r.text)
    assert c.post("/api/v1/users", headers=root, content=b"[").status_code == 400
    r = c.patch("/api/v1/users/carol", headers=root, json={"role": "user", "password": "another password"})
    assert r.status_code == 200 and r.json()["role"] == "user"
    assert c.post("/api/v1/login", json={"username": "carol", "password": "a long password"}).status_code == 401
    assert c.patch("/api/v1/users/nobody", headers=root, json={"role": "user"}).status_code == 404
    assert c.get("/api/v1/users/carol", headers=root).json()["email"] == "carol@example.com"
    assert c.delete("/api/v1/users/carol", headers=root).status_code == 200
    assert c.post("/api/v1/login", json={"username": "carol", "password": "another password"}).status_code == 401


def test_the_last_admin_cannot_be_removed_or_demoted(world: World) -> None:
    c, root = world.client, world.as_("root")
    r = c.delete("/api/v1/users/root", headers=root)
    assert r.status_code == 409 and "last admin" in r.json()["message"]
    assert c.patch("/api/v1/users/root", headers=root, json={"role": "user"}).status_code == 409
    assert c.patch("/api/v1/users/alice", headers=root, json={"role": "admin"}).status_code == 200
    assert c.patch("/api/v1/users/root", headers=root, json={"role": "user"}).status_code == 200
    # a role change takes effect for the user's token at once on this node
    assert world.get("alice", "/api/v1/users").status_code == 200
    assert world.get("root", "/api/v1/users").status_code == 403


def test_tokens_are_shown_once_and_stored_hashed(world: World) -> None:
    from sensorium.auth.models import AuthToken
    from sensorium.auth.service import secret_hash

    c, root = world.client, world.as_("root")
    r = c.post("/api/v1/tokens", headers=root, json={"user": "alice", "name": "thermostat", "expires_in_s": 3600})
    assert r.status_code == 201, r.text
    secret, tid = r.json()["token"], r.json()["id"]
    assert secret.startswith("sns_") and len(secret) >= 46 and r.json()["expires_at"]
    listed = c.get("/api/v1/tokens", headers=root, params={"user": "alice"}).json()["tokens"]
    assert {t["id"] for t in listed} == {world.token_ids["alice"], tid}
    assert all("token" not in t and "secret_hash" not in t for t in listed)
    store = world.platform.registry_store
    assert store is not None
    with store.session() as s:
        stored = s.scalars(select(AuthToken).where(AuthToken.id == tid)).one()
        assert stored.secret_hash == secret_hash(secret) and secret not in stored.secret_hash
    h = {"Authorization": f"Token {secret}"}
    assert c.get("/api/v1/me", headers=h).json()["token_id"] == tid
    used = {t["id"]: t for t in c.get("/api/v1/tokens", headers=root).json()["tokens"]}
    assert used[tid]["last_used_at"] == used[tid]["created_at"]  # the (fake) clock stood still
    for body in ({"user": "nobody", "name": "x"}, {"user": "alice"}, {"user": "alice", "name": ""},
                 {"user": "alice", "name": "x", "expires_in_s": "soon"}, {"user": "alice", "name": "x", "expires_in_s": -1}):
        assert c.post("/api/v1/tokens", headers=root, json=body).status_code == 400, body
    assert c.delete("/api/v1/tokens/tok_nope", headers=root).status_code == 404
    assert c.delete(f"/api/v1/tokens/{tid}", headers=root).status_code == 200
    assert c.get("/api/v1/me", headers=h).status_code == 401
    assert tid not in {t["id"] for t in c.get("/api/v1/tokens", headers=root).json()["tokens"]}
    assert tid in {t["id"] for t in c.get("/api/v1/tokens", headers=root, params={"revoked": True}).json()["tokens"]}


def test_passwords_are_argon2id_hashes(shared_world: World) -> None:
    from sensorium.registry.models import User

    world = shared_world
    store = world.platform.registry_store
    assert store is not None
    with store.session() as s:
        pw = s.scalars(select(User.password_hash).where(User.id == "alice")).one()
    assert pw is not None and pw.startswith("$argon2id$") and PASSWORD not in pw


def test_users_change_their_own_password(world: World) -> None:
    c = world.client
    h = world.as_("gus")
    r = c.put("/api/v1/me/password", headers=h, json={"old_password": "nope", "new_password": "brand new password"})
    assert r.status_code == 403
    assert c.put("/api/v1/me/password", headers=h, json={"new_password": "x"}).status_code == 400
    r = c.put("/api/v1/me/password", headers=h, json={"old_password": PASSWORD, "new_password": "brand new password"})
    assert r.status_code == 204
    assert c.post("/api/v1/login", json={"username": "gus", "password": "brand new password"}).status_code == 200


def test_the_audit_log_records_logins_token_use_and_changes(world: World) -> None:
    c, root = world.client, world.as_("root")
    c.post("/api/v1/login", json={"username": "alice", "password": "wrong"})
    c.post("/api/v1/login", json={"username": "alice@example.com", "password": PASSWORD})
    c.post("/api/v1/login", json={"username": "mallory@example.com", "password": "guess"})
    for _ in range(3):  # token use: audited once a minute per token
        world.get("bob", "/api/v1/latest")
    alert = world.get("alice", "/api/v1/alerts").json()["alerts"][0]["alert_id"]
    world.post("alice", f"/api/v1/alerts/{alert}/ack")
    world.post("gus", f"/api/v1/alerts/{alert}/ack")  # refused: audited too
    c.post("/api/v1/users", headers=root, json={"id": "dora", "role": "guest"})
    c.post("/api/v1/registry/locations", headers=root, json={"id": "barn"})

    def entries(**params: Any) -> list[dict[str, Any]]:
        r = c.get("/api/v1/audit", headers=root, params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    failed = entries(action="login_failed")
    assert [(e["actor"], e["target"]) for e in failed] == [(None, None), ("alice", "alice")]
    assert [e["actor"] for e in entries(action="login")] == ["alice"]
    assert len([e for e in entries(action="token_use") if e["actor"] == "bob"]) == 1
    changes = {(e["actor"], e["target"], e["status"]) for e in entries(action="change")}
    assert ("alice", f"POST /api/v1/alerts/{alert}/ack", 200) in changes
    assert ("gus", f"POST /api/v1/alerts/{alert}/ack", 403) in changes
    assert ("root", "POST /api/v1/registry/locations", 201) in changes
    assert [e["target"] for e in entries(action="user_create")][0] == "dora"
    assert not [e for e in entries() if e["target"] and "/api/v2/write" in e["target"]]
    page = c.get("/api/v1/audit", headers=root, params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["total"] > 2
    assert c.get("/api/v1/audit", headers=root, params={"action": "dance"}).status_code == 400
    assert c.get("/api/v1/audit", headers=root, params={"since": "yesterday"}).status_code == 400
    assert entries(since="now-1m")  # RFC 3339 / now-<duration>
    # nothing personal in it: no e-mail typed at a failed login, no names
    text = str(entries())
    assert "mallory" not in text and "example.com" not in text and "Alice" not in text


def test_auth_off_on_loopback_needs_no_credentials_and_audits_as_local(client: TestClient) -> None:
    assert client.get("/api/v1/me").json() == {
        "id": "local", "role": "admin", "via": "local", "user_id": None, "token_id": None,
        "restricted": False, "auth_enabled": False}
    assert client.post("/api/v1/registry/locations", json={"id": "home"}).status_code == 201
    items = client.get("/api/v1/audit", params={"action": "change"}).json()["items"]
    assert items[0]["actor"] == "local" and items[0]["target"] == "POST /api/v1/registry/locations"


@pytest.mark.parametrize("path", ["/api/v1/users", "/api/v1/tokens", "/api/v1/audit"])
def test_admin_lists_need_a_token_when_auth_is_on(shared_world: World, path: str) -> None:
    assert shared_world.client.get(path).status_code == 401
