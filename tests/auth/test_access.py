"""The acceptance tests of access control: user A cannot read location B's data through SQL
(joins, subqueries, CTEs, derived and registry tables), latest values, series, alerts,
documents, the registry, the graph or the dashboard; a guest cannot write; a revoked token, an
expired session and no token are refused; the query sandbox refuses file and catalog escapes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth.conftest import World

ALICE = {"a1", "a2"}


def devices_in(rows: list[list[Any]]) -> set[str]:
    return {r[0] for r in rows}


# -- SQL ---------------------------------------------------------------------------------------------
def test_a_query_sees_only_the_devices_of_the_users_locations(world: World) -> None:
    q = "SELECT DISTINCT device_id FROM climate"
    assert devices_in(world.sql("alice", q)) == ALICE
    assert devices_in(world.sql("gus", q)) == ALICE  # a guest of alice's home
    assert devices_in(world.sql("bob", q)) == {"b1"}
    assert devices_in(world.sql("root", q)) == {"a1", "a2", "b1", "x9"}  # admins: everything
    # a filter on another location's device finds nothing, not an error that would confirm it
    assert world.sql("alice", "SELECT count(*) FROM climate WHERE device_id = 'b1'") == [[0]]
    assert world.sql("bob", "SELECT count(*) FROM power") == [[30]]
    assert world.sql("alice", "SELECT count(*) FROM power") == [[0]]


@pytest.mark.parametrize("sql", [
    # joins: with the registry's tables, with another measurement, a self join, a cross join
    "SELECT c.device_id FROM climate c JOIN devices d USING (device_id)",
    "SELECT c.device_id FROM climate c LEFT JOIN power p USING (device_id)",
    "SELECT p.device_id FROM climate c RIGHT JOIN power p ON true",
    "SELECT b.device_id FROM climate a JOIN climate b ON a.time = b.time",
    "SELECT c2.device_id FROM climate c1, climate c2",
    "SELECT device_id FROM power FULL OUTER JOIN climate USING (device_id)",
    # subqueries: IN, EXISTS, scalar, lateral, derived tables
    "SELECT device_id FROM climate WHERE device_id IN (SELECT device_id FROM power)",
    "SELECT device_id FROM climate c WHERE EXISTS (SELECT 1 FROM power p WHERE p.device_id = 'b1')",
    "SELECT (SELECT max(device_id) FROM climate WHERE device_id = 'b1') AS device_id",
    "SELECT x.device_id FROM (SELECT time, device_id FROM climate UNION ALL SELECT time, device_id FROM power) x",
    "SELECT l.device_id FROM devices d, LATERAL (SELECT device_id FROM climate WHERE device_id >= d.device_id) l",
    # CTEs, nested and recursive
    "WITH x AS (SELECT * FROM climate) SELECT device_id FROM x",
    "WITH x AS (SELECT * FROM power), y AS (SELECT * FROM x) SELECT device_id FROM y",
    "WITH RECURSIVE r(device_id, n) AS (SELECT device_id, 0 FROM climate UNION ALL "
    "SELECT device_id, n + 1 FROM r WHERE n < 1) SELECT device_id FROM r",
    # derived tables: anomaly scores, rollups, rolling statistics, quality findings
    "SELECT device_id FROM anomaly_scores",
    "SELECT device_id FROM climate_1m UNION SELECT device_id FROM power_1m",
    "SELECT device_id FROM rolling_stats",
    "SELECT device_id FROM climate_1h WHERE device_id NOT IN ('a1', 'a2')",
    # set operations and window functions over everything
    "SELECT device_id FROM climate EXCEPT SELECT 'a1'",
    "SELECT device_id FROM (SELECT device_id, row_number() OVER () FROM power)",
])
def test_joins_subqueries_and_ctes_see_only_filtered_views(shared_world: World, sql: str) -> None:
    world = shared_world
    seen = devices_in(world.sql("alice", sql)) - {None}
    assert seen <= ALICE, (sql, seen)
    everything = devices_in(world.sql("root", sql)) - {None}
    assert everything - ALICE or "b1" not in sql, (sql, everything)  # the query does reach others


def test_aggregates_count_only_the_users_rows(world: World) -> None:
    assert world.sql("alice", "SELECT count(*) FROM climate") == [[60]]
    assert world.sql("root", "SELECT count(*) FROM climate") == [[120]]
    assert world.sql("alice", "SELECT count(DISTINCT device_id) FROM anomaly_scores") == [[2]]


def test_registry_tables_are_the_users_rows(world: World) -> None:
    assert devices_in(world.sql("alice", "SELECT device_id FROM devices")) == ALICE
    assert devices_in(world.sql("bob", "SELECT device_id FROM devices")) == {"b1"}
    assert devices_in(world.sql("alice", "SELECT location_id FROM locations")) == {"home"}
    assert devices_in(world.sql("bob", "SELECT location_id FROM locations")) == {"cabin"}
    assert world.sql("bob", "SELECT count(*) FROM rooms") == [[0]]


@pytest.mark.parametrize(("sql", "status"), [
    ("SELECT * FROM read_parquet('/etc/passwd')", 403),
    ("SELECT * FROM read_csv('/etc/passwd')", 403),
    ("SELECT * FROM read_csv_auto('/etc/hosts')", 403),
    ("SELECT * FROM read_text('/etc/hosts')", 403),
    ("SELECT * FROM glob('/*')", 403),
    ("SELECT * FROM '/etc/passwd'", 400),
    ("SELECT * FROM 'data/lake/default/climate/*.parquet'", 400),
    ("SELECT * FROM parquet_scan('x.parquet')", 403),
    ("SELECT * FROM duckdb_tables()", 403),
    ("SELECT * FROM duckdb_views()", 403),
    ("SELECT * FROM pragma_table_info('climate')", 403),
    ("SELECT * FROM query_table('climate')", 403),
    ("SELECT * FROM query('SELECT * FROM climate')", 403),
    ("SELECT current_setting('enable_external_access')", 403),
    ("SELECT getenv('HOME')", 403),
    ("SELECT * FROM information_schema.tables", 403),
    ("SELECT * FROM temp.main.climate", 403),
    ("SELECT * FROM __hot_0", 400),
    ("SELECT * FROM __allowed", 400),
    ("PRAGMA table_info('climate')", 403),
    ("ATTACH 'x.db' AS x", 403),
    ("SET enable_external_access = true", 403),
    ("COPY climate TO '/tmp/out.csv'", 403),
    ("CREATE TABLE t AS SELECT * FROM climate", 403),
    ("SELECT 1; SELECT * FROM climate", 403),
    ("INSTALL httpfs", 403),
])
def test_the_sandbox_refuses_escapes_for_restricted_users(shared_world: World, sql: str, status: int) -> None:
    r = shared_world.get("alice", "/api/v1/query", params={"sql": sql})
    assert r.status_code == status, (sql, r.status_code, r.text)
    assert "rows" not in r.json()


def test_a_cte_named_like_a_table_cannot_unwrap_the_filter(world: World) -> None:
    r = world.get("alice", "/api/v1/query", params={
        "sql": "WITH climate AS (SELECT * FROM climate) SELECT DISTINCT device_id FROM climate"})
    # either refused or filtered; never another location's rows
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert devices_in(r.json()["rows"]) <= ALICE


def test_query_formats_are_scoped_too(world: World) -> None:
    import pyarrow as pa

    r = world.get("alice", "/api/v1/query", params={"sql": "SELECT DISTINCT device_id FROM climate", "format": "arrow"})
    assert set(pa.ipc.open_stream(r.content).read_all()["device_id"].to_pylist()) == ALICE
    r = world.client.post("/api/v1/query", headers=world.as_("alice"), json={"sql": "SELECT DISTINCT device_id FROM climate"})
    assert devices_in(r.json()["rows"]) == ALICE


# -- latest values, series, alerts -------------------------------------------------------------------
def test_latest_values_are_the_users_devices(world: World) -> None:
    def devs(who: str, **params: str) -> set[str]:
        r = world.get(who, "/api/v1/latest", params=params)
        assert r.status_code == 200, r.text
        return {s["tags"]["device_id"] for s in r.json()["series"]}

    assert devs("alice") == ALICE
    assert devs("bob") == {"b1"}
    assert devs("alice", device_id="b1") == set()
    assert devs("root") == {"a1", "a2", "b1", "x9"}
    assert world.get("alice", "/api/v1/latest", params={"principal": "root"}).status_code == 400


def test_series_reads_only_the_users_devices(world: World) -> None:
    params = {"measurement": "climate", "field": "temperature", "start": "2026-01-01T00:00:00Z",
              "every": "1h", "agg": "count", "device_id": "b1"}
    r = world.get("alice", "/api/v1/series", params=params)
    assert r.status_code == 200, r.text
    assert all(v in (None, 0) for row in r.json()["rows"] for v in row[1:])
    own = world.get("alice", "/api/v1/series", params={**params, "device_id": "a1"}).json()
    assert sum(row[1] for row in own["rows"]) == 30


def test_alerts_are_those_of_the_users_devices(world: World) -> None:
    def alerts(who: str) -> dict[str, Any]:
        r = world.get(who, "/api/v1/alerts")
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    mine = alerts("alice")
    assert [a["tags"]["device_id"] for a in mine["alerts"]] == ["a1"]
    assert mine["counts"]["total"] == 1 and mine["counts"]["firing"] == 1
    assert alerts("root")["counts"]["total"] == 2
    theirs = alerts("bob")["alerts"][0]["alert_id"]
    assert world.get("alice", f"/api/v1/alerts/{theirs}").status_code == 404
    assert world.post("alice", f"/api/v1/alerts/{theirs}/ack").status_code == 404
    own = mine["alerts"][0]["alert_id"]
    assert world.get("alice", f"/api/v1/alerts/{own}").status_code == 200
    acked = world.post("alice", f"/api/v1/alerts/{own}/ack", json={"by": "mallory"})
    assert acked.status_code == 200 and acked.json()["acked_by"] == "alice"  # the caller, not the body


# -- registry, graph, dashboard, devices -------------------------------------------------------------
def test_forecasts_only_of_series_whose_devices_are_the_users(world: World) -> None:
    body = {"measurement": "climate", "field": "temperature", "horizon": "10s", "every": "1s", "model": "naive"}
    ok = world.post("alice", "/api/v1/forecast", json={**body, "tags": {"device_id": "a1"}})
    assert ok.status_code == 200, ok.text
    assert len(ok.json()["rows"]) > 0
    for tags in ({}, {"device_id": "b1"}):  # every device (b1, x9 too), or bob's
        r = world.post("alice", "/api/v1/forecast", json={**body, "tags": tags})
        assert r.status_code == 403 and r.json()["code"] == "forbidden", (tags, r.text)
    assert world.post("bob", "/api/v1/forecast", json={**body, "tags": {"device_id": "b1"}}).status_code == 200
    assert world.post("root", "/api/v1/forecast", json=body).status_code == 200  # admins: anything
    r = world.post("gus", "/api/v1/forecast", json={**body, "tags": {"device_id": "a1"}, "store": True})
    assert r.status_code == 403 and "guests are read-only" in r.json()["message"]
    r = world.get("alice", "/api/v1/forecast/compare", params={"measurement": "climate", "field": "temperature"})
    assert r.status_code == 403


def test_registry_and_graph_are_limited_to_the_users_scope(world: World) -> None:
    r = world.get("alice", "/api/v1/registry/devices")
    assert {d["id"] for d in r.json()["items"]} == ALICE
    assert world.get("alice", "/api/v1/registry/devices/b1").status_code == 404
    assert world.get("alice", "/api/v1/registry/locations/cabin").status_code == 404
    assert world.get("alice", "/api/v1/registry/users/bob").status_code == 404
    assert world.get("alice", "/api/v1/graph/users/bob").status_code == 404
    assert world.get("alice", "/api/v1/graph/impact/b1").status_code == 404
    mine = world.get("alice", "/api/v1/graph/users/alice").json()
    assert {d["id"] for d in mine["devices"]} == ALICE
    ranks = world.get("alice", "/api/v1/graph/pagerank").json()["ranks"]
    assert {r["id"] for r in ranks} <= {"alice", "home", "kitchen", "a1", "a2"}
    assert world.get("alice", "/api/v1/graph/path", params={"src": "a1", "dst": "b1"}).status_code == 404


def test_dashboard_data_is_scoped(world: World) -> None:
    devs = world.get("alice", "/api/v1/dashboard/devices").json()
    assert {d["device_id"] for d in devs["devices"]} == ALICE
    ov = world.get("alice", "/api/v1/dashboard/overview").json()
    assert ov["devices"]["total"] == 2 and ov["alerts"]["total"] == 1
    assert world.get("root", "/api/v1/dashboard/overview").json()["devices"]["total"] == 4
    r = world.get("alice", "/api/v1/dashboard/devices/b1/charts")
    assert r.status_code == 403 and "b1" in r.json()["message"]
    assert world.get("alice", "/api/v1/dashboard/devices/a1/charts").status_code == 200
    assert world.get("alice", "/api/v1/dashboard/events", params={"device_id": "b1"}).status_code == 403


def test_device_routes_need_a_device_in_scope(world: World) -> None:
    r = world.get("alice", "/api/v1/devices/b1/commands")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert world.post("alice", "/api/v1/devices/b1/commands", json={"command": "off"}).status_code == 403
    assert world.get("alice", "/api/v1/devices/a1/commands").status_code == 200


def test_documents_are_scoped(world: World) -> None:
    a = world.post("alice", "/api/v1/documents", json={"kind": "device_log", "device_id": "a1", "data": {"level": "info"}})
    assert a.status_code == 201, a.text
    b = world.post("bob", "/api/v1/documents", json={"kind": "device_log", "device_id": "b1", "data": {"level": "warn"}})
    assert b.status_code == 201, b.text
    assert world.get("alice", f"/api/v1/documents/{b.json()['id']}").status_code == 404
    listed = world.get("alice", "/api/v1/documents").json()
    assert [d["id"] for d in listed["items"]] == [a.json()["id"]]
    r = world.post("alice", "/api/v1/documents", json={"kind": "device_log", "device_id": "b1", "data": {}})
    assert r.status_code == 403
    r = world.post("alice", "/api/v1/documents", json={"kind": "interaction", "user_id": "bob", "data": {}})
    assert r.status_code == 403
    assert world.client.delete(f"/api/v1/documents/{b.json()['id']}", headers=world.as_("alice")).status_code == 404
    assert world.get("root", "/api/v1/documents").json()["total"] == 2


# -- writes ------------------------------------------------------------------------------------------
def test_a_user_writes_only_points_of_their_devices(world: World) -> None:
    body = "climate,device_id=a1 temperature=19 1767225700000000000\nclimate,device_id=b1 temperature=99 1767225700000000000\nclimate temperature=1 1767225700000000000"
    r = world.post("alice", "/api/v2/write", content=body)
    assert r.status_code == 400, r.text
    out = r.json()
    assert out["accepted"] == 1 and out["rejected"] == 2
    reasons = [e["reason"] for e in out["errors"]]
    assert reasons == ["device 'b1' is not in the writer's locations",
                       "a point without device_id cannot be attributed to the writer's locations"]
    # refused, not bad data: not dead letters (a replay by an admin must never store them)
    assert world.get("root", "/api/v1/dead-letters", params={"rule": "access"}).json()["total"] == 0
    assert world.sql("root", "SELECT count(*) FROM climate WHERE temperature = 99") == [[0]]
    assert world.post("root", "/api/v2/write", content=body).status_code == 204  # an admin writes anything


def test_a_guest_cannot_write(world: World) -> None:
    body = "climate,device_id=a1 temperature=19 1767225700000000000"
    for method, path, kw in [
        ("post", "/api/v2/write", {"content": body}),
        ("post", "/write", {"content": body}),
        ("post", "/api/v1/readings", {"content": "[]"}),
        ("post", "/api/v1/documents", {"json": {"kind": "interaction", "data": {}}}),
        ("post", "/api/v1/devices/a1/commands", {"json": {"command": "off"}}),
        ("post", "/api/v1/registry/devices", {"json": {"id": "g1"}}),
        ("post", "/api/v1/tokens", {"json": {"user": "gus", "name": "x"}}),
    ]:
        r = getattr(world.client, method)(path, headers=world.as_("gus"), **kw)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["code"] == "forbidden"
    alert = world.get("gus", "/api/v1/alerts").json()["alerts"][0]["alert_id"]
    r = world.post("gus", f"/api/v1/alerts/{alert}/ack")
    assert r.status_code == 403 and "guests are read-only" in r.json()["message"]
    assert world.sql("gus", "SELECT count(*) FROM climate") == [[60]]  # reading is fine


def test_only_admins_manage_users_tokens_the_registry_and_operations(world: World) -> None:
    for method, path, kw in [
        ("get", "/api/v1/users", {}),
        ("post", "/api/v1/users", {"json": {"id": "eve", "role": "admin"}}),
        ("get", "/api/v1/tokens", {}),
        ("post", "/api/v1/tokens", {"json": {"user": "alice", "name": "more"}}),
        ("get", "/api/v1/audit", {}),
        ("patch", "/api/v1/registry/users/alice", {"json": {"role": "admin"}}),
        ("post", "/api/v1/registry/relations", {"json": {"src": "alice", "rel": "HAS_ACCESS", "dst": "cabin"}}),
        ("post", "/api/v1/registry/import", {"content": "devices: []"}),
        ("get", "/api/v1/registry/export", {}),
        ("get", "/api/v1/dead-letters", {}),
        ("get", "/api/v1/storage", {}),
        ("get", "/metrics", {}),
    ]:
        r = world.client.request(method.upper(), path, headers=world.as_("alice"), **kw)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert "only admins" in r.json()["message"]
    assert world.get("root", "/api/v1/users").status_code == 200
    assert world.get("root", "/metrics").status_code == 200


# -- authentication ----------------------------------------------------------------------------------
def test_no_wrong_revoked_or_expired_credentials_are_refused(world: World) -> None:
    c = world.client
    r = c.get("/api/v1/query", params={"sql": "SELECT 1"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Token")
    assert c.get("/api/v1/query", params={"sql": "SELECT 1"}, headers={"Authorization": "Token sns_nope"}).status_code == 401
    assert c.get("/api/v1/query", params={"sql": "SELECT 1"}, headers={"Authorization": "Digest x"}).status_code == 401
    assert c.get("/health").status_code == 200 and c.get("/ping").status_code == 204
    # revoked: refused at once
    r = world.client.delete(f"/api/v1/tokens/{world.token_ids['bob']}", headers=world.as_("root"))
    assert r.status_code == 200 and r.json()["revoked"]["revoked_at"]
    r = world.get("bob", "/api/v1/query", params={"sql": "SELECT 1"})
    assert r.status_code == 401 and "revoked" in r.json()["message"]
    # a session expires
    login = c.post("/api/v1/login", json={"username": "alice", "password": "correct horse battery"})
    assert login.status_code == 200, login.text
    session = {"Authorization": f"Bearer {login.json()['token']}"}
    assert c.get("/api/v1/me", headers=session).json()["id"] == "alice"
    world.clock.advance(world.platform.settings.auth.session_ttl_s + 1)
    world.platform.settings.auth  # noqa: B018
    from sensorium.auth.http import HttpAuth

    http: HttpAuth = c.app.state.auth  # type: ignore[attr-defined]
    http.auth.forget()  # past the verification cache
    r = c.get("/api/v1/me", headers=session)
    assert r.status_code == 401 and "expired" in r.json()["message"]


def test_login_logout_and_the_token_kinds(world: World) -> None:
    c = world.client
    bad = c.post("/api/v1/login", json={"username": "alice", "password": "wrong password"})
    assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"
    assert c.post("/api/v1/login", json={"username": "nobody", "password": "x" * 10}).status_code == 401
    assert c.post("/api/v1/login", json={"user": "alice"}).status_code == 400
    assert c.post("/api/v1/login", content=b"not json").status_code == 400
    by_email = c.post("/api/v1/login", json={"username": "ALICE@example.com", "password": "correct horse battery"})
    assert by_email.status_code == 200 and by_email.json()["user"] == "alice"
    tok = by_email.json()["token"]
    me = c.get("/api/v1/me", headers={"Authorization": f"Token {tok}"}).json()
    assert me["via"] == "session" and me["scope"]["devices"] == ["a1", "a2"]
    # InfluxDB v1 style and Basic work too (token or password)
    assert c.get("/api/v1/me", params={"p": tok}).json()["id"] == "alice"
    assert c.get("/api/v1/me", params={"u": "bob", "p": "correct horse battery"}).json()["id"] == "bob"
    import base64

    basic = base64.b64encode(b"gus:correct horse battery").decode()
    assert c.get("/api/v1/me", headers={"Authorization": f"Basic {basic}"}).json()["role"] == "guest"
    assert c.post("/api/v1/logout", headers={"Authorization": f"Token {tok}"}).status_code == 204
    assert c.get("/api/v1/me", headers={"Authorization": f"Token {tok}"}).status_code == 401
    # an API token is not a session
    assert world.post("alice", "/api/v1/logout").status_code == 400


def test_password_guessing_is_refused_for_a_while_after_repeated_failures(world: World) -> None:
    c = world.client
    limit = world.platform.settings.auth.login_max_failures
    for _ in range(limit):
        assert c.post("/api/v1/login", json={"username": "bob", "password": "guess guess"}).status_code == 401
    # now even the right password is refused for bob, over every way of sending one
    r = c.post("/api/v1/login", json={"username": "bob", "password": "correct horse battery"})
    assert r.status_code == 429 and r.json()["code"] == "too_many_requests"
    assert "too many failed logins" in r.json()["message"] and int(r.headers["retry-after"]) > 0
    r = c.get("/api/v1/me", params={"u": "BOB", "p": "correct horse battery"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    # others are not affected, nor bob's API token
    assert c.post("/api/v1/login", json={"username": "alice", "password": "correct horse battery"}).status_code == 200
    assert world.get("bob", "/api/v1/me").json()["id"] == "bob"


def test_the_login_throttle_forgets_failures_after_its_window(tmp_path: Any) -> None:
    import time

    from sensorium.auth.service import Auth
    from sensorium.errors import TooManyRequests, Unauthorized
    from sensorium.platform import Sensorium
    from tests.auth.conftest import auth_settings, seed

    p = Sensorium(auth_settings(tmp_path / "data", auth={"login_max_failures": 2, "login_window_s": 0.5}),
                  background=False)
    try:
        seed(p)
        auth = Auth(p.settings, p.registry_store)
        for _ in range(2):
            with pytest.raises(Unauthorized):
                auth.login("alice", "wrong password")
        with pytest.raises(TooManyRequests):
            auth.login("alice", "correct horse battery")
        time.sleep(0.6)
        assert auth.login("alice", "correct horse battery")["user"] == "alice"
        with pytest.raises(Unauthorized):  # a success clears the count
            auth.login("alice", "wrong password")
        assert auth.login("alice", "correct horse battery")["user"] == "alice"
    finally:
        p.close()


def test_the_admin_token_setting_keeps_working(tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app
    from sensorium.platform import Sensorium
    from tests.auth.conftest import auth_settings

    with Sensorium(auth_settings(tmp_path / "d", auth_token="s3cret"), background=False) as p:
        c = TestClient(create_app(p))
        me = c.get("/api/v1/me", headers={"Authorization": "Token s3cret"}).json()
        assert me["id"] == "auth_token" and me["role"] == "admin" and not me["restricted"]
        assert c.get("/api/v1/users", headers={"Authorization": "Token s3cret"}).status_code == 200
        assert c.get("/api/v1/users", headers={"Authorization": "Token s3crex"}).status_code == 401


def test_auth_is_on_off_loopback_and_off_on_loopback_by_default() -> None:
    from sensorium.auth.service import auth_enabled
    from sensorium.config import load_settings

    assert not auth_enabled(load_settings(None))  # 127.0.0.1: the quick start needs no login
    assert auth_enabled(load_settings(None, host="0.0.0.0"))
    assert auth_enabled(load_settings(None, host="192.168.1.5"))
    assert auth_enabled(load_settings(None, auth_token="x"))
    assert not auth_enabled(load_settings(None, host="0.0.0.0", auth={"enabled": False}))
    assert auth_enabled(load_settings(None, auth={"enabled": True}))


def test_a_non_loopback_server_requires_login_and_serves_the_dashboard(tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from sensorium.api.app import create_app
    from sensorium.platform import Sensorium
    from tests.conftest import make_settings

    with Sensorium(make_settings(tmp_path / "d", host="0.0.0.0"), background=False) as p:
        c = TestClient(create_app(p))
        assert c.get("/api/v1/measurements").status_code == 401
        assert c.post("/api/v2/write", content="m v=1").status_code == 401
        assert c.get("/").status_code == 200  # the page asks for a token
        assert c.get("/api/v1/dashboard/overview").status_code == 401
        assert c.get("/health").status_code == 200
