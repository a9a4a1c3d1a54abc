"""The dashboard behind a login, in a real browser: a server with authentication on asks for a
user and password, keeps the session, and shows the user their own devices only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.auth.test_cli import ENV, invoke
from tests.conftest import ServerProcess
from tests.dashboard.conftest import browser, open_tab  # noqa: F401  (the package's browser)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "srv"
    d = ["--data-dir", str(data)]
    invoke("users", "add", "root", "--role", "admin", *d)
    invoke("users", "add", "alice", "--role", "user", *d)
    invoke("registry", "add", "locations", "--id", "home", *d)
    invoke("registry", "add", "devices", "--id", "a1", "--set", "location_id=home", *d)
    invoke("registry", "relate", "alice", "OWNS", "home", *d)
    token = invoke("tokens", "create", "root", *d)[1].strip()
    env = {k: v for k, v in ENV.items() if k.startswith("SENSORIUM_AUTH")}
    srv = ServerProcess(data, env={**env, "SENSORIUM_AUTH__ENABLED": "true"}).start()
    try:
        lp = "\n".join(f"climate,device_id={d} temperature=21 {{t}}" for d in ("a1", "b1"))
        import time

        r = httpx.post(srv.url + "/api/v2/write", content=lp.replace("{t}", str(time.time_ns())),
                       headers={"Authorization": f"Token {token}"})
        assert r.status_code == 204, r.text
        yield srv
    finally:
        srv.stop()


def test_the_dashboard_asks_for_a_login_and_shows_the_users_devices(browser: Any, secured: ServerProcess) -> None:  # noqa: F811
    ctx, tab = open_tab(browser, secured.url)
    tab.allowed_errors = ("401", "Failed to load resource")  # the first requests, before the login
    try:
        tab.go("devices")
        page = tab.page
        page.wait_for_selector("#token-dialog[open]")
        page.fill("#login-user", "alice")
        page.fill("#login-password", "wrong password")
        page.click("#token-form button[type=submit]")
        page.wait_for_selector("#login-error:not([hidden])")
        assert "wrong user name or password" in page.inner_text("#login-error")
        page.fill("#login-password", "a long password")
        page.click("#token-form button[type=submit]")
        page.wait_for_function("!document.getElementById('token-dialog').open")
        page.wait_for_selector("text=a1")
        assert "b1" not in page.inner_text("#view")
        token = page.evaluate("localStorage.getItem('sensorium.token')")
        assert token.startswith("sns_")
        me = httpx.get(secured.url + "/api/v1/me", headers={"Authorization": f"Token {token}"}).json()
        assert me["id"] == "alice" and me["via"] == "session"
        tab.assert_clean()
    finally:
        ctx.close()
