"""`sensorium users`, `tokens`, `audit` and `pii` on a data directory, and one pass against a
running server with authentication on (``--url`` with ``SENSORIUM_TOKEN``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from sensorium.cli.main import app
from sensorium.errors import SensoriumError
from tests.conftest import ServerProcess

#: cheap Argon2 for the commands (through the environment, as a user would configure it)
ENV = {"COLUMNS": "200", "SENSORIUM_AUTH__ARGON2_TIME_COST": "1", "SENSORIUM_AUTH__ARGON2_MEMORY_KIB": "8",
       "SENSORIUM_AUTH__ARGON2_PARALLELISM": "1", "SENSORIUM_PASSWORD": "a long password"}


def invoke(*args: str, **env: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr); a SensoriumError is exit 2 with its message, as `main()` does."""
    r = CliRunner().invoke(app, list(args), env={**ENV, **env})
    if isinstance(r.exception, SensoriumError):
        return 2, r.stdout, r.exception.message
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def test_users_tokens_audit_on_a_data_directory(tmp_path: Path) -> None:
    d = ["--data-dir", str(tmp_path / "data")]
    assert invoke("users", "add", "root", "--role", "admin", "--name", "Root", "--email", "root@example.com", *d)[0] == 0
    assert invoke("users", "add", "kid", "--role", "guest", "--no-password", *d)[0] == 0
    code, out, _ = invoke("users", "list", "--format", "json", *d)
    users = {u["id"]: u for u in json.loads(out)}
    assert users["root"]["email"] == "root@example.com" and users["root"]["has_password"]
    assert not users["kid"]["has_password"] and users["kid"]["role"] == "guest"
    assert invoke("users", "role", "kid", "user", *d)[0] == 0
    assert invoke("users", "passwd", "kid", *d)[0] == 0
    code, out, err = invoke("tokens", "create", "kid", "--name", "sensor-gw", "--expires", "30d", *d)
    assert code == 0 and out.strip().startswith("sns_") and "shown once" in err
    code, out, _ = invoke("tokens", "list", "--format", "json", *d)
    tokens = json.loads(out)
    assert [t["name"] for t in tokens] == ["sensor-gw"] and tokens[0]["expires_at"]
    assert invoke("tokens", "revoke", tokens[0]["id"], *d)[0] == 0
    assert json.loads(invoke("tokens", "list", "--format", "json", *d)[1]) == []
    code, out, _ = invoke("audit", "--format", "json", *d)
    actions = [e["action"] for e in json.loads(out)]
    assert actions[:3] == ["token_revoke", "token_create", "password_change"] and "user_create" in actions
    assert all(e["actor"].startswith("cli") for e in json.loads(out))
    # bad input: a clear message and exit 2, no traceback
    code, _, err = invoke("users", "add", "root", *d)
    assert code == 2 and "taken" in err
    code, _, err = invoke("users", "role", "kid", "boss", *d)
    assert code == 2 and "role must be one of" in err
    code, _, err = invoke("users", "add", "x", *d, SENSORIUM_PASSWORD="short")
    assert code == 2 and "password too short" in err
    code, _, err = invoke("users", "remove", "root", *d)
    assert code == 2 and "last admin" in err
    assert invoke("users", "remove", "kid", *d)[0] == 0


def test_pii_keygen_status_rotate_and_export(tmp_path: Path) -> None:
    from cryptography.fernet import Fernet

    from tests.conftest import TEST_PII_KEY

    d = ["--data-dir", str(tmp_path / "data")]
    code, key, _ = invoke("pii", "keygen")
    Fernet(key.strip().encode())  # a valid key
    invoke("users", "add", "ann", "--name", "Ann Example", "--email", "ann@example.com", *d)
    code, out, _ = invoke("pii", "status", *d)
    assert "users.email: 1" in out and "users.display_name: 1" in out
    keys = f"{key.strip()},{TEST_PII_KEY}"
    code, out, _ = invoke("pii", "rotate", *d, SENSORIUM_PII_KEYS=keys)
    assert code == 0 and "re-encrypted 2 value(s)" in out
    code, out, _ = invoke("users", "list", "--format", "json", *d, SENSORIUM_PII_KEYS=key.strip())
    assert json.loads(out)[0]["email"] == "ann@example.com"  # only the new key now
    code, out, _ = invoke("pii", "export", "--out", str(tmp_path / "x"), *d, SENSORIUM_PII_KEYS=key.strip())
    assert code == 0 and "users.jsonl (1)" in out
    text = (tmp_path / "x" / "users.jsonl").read_text()
    assert "ann" not in text and json.loads(text)["user"].startswith("u_")
    code, _, err = invoke("pii", "rotate", *d, SENSORIUM_PII_KEYS="")
    assert code == 2 and "no key is configured" in err


def test_a_server_with_auth_on_and_the_cli_over_http(tmp_path: Path) -> None:
    data = tmp_path / "srv"
    d = ["--data-dir", str(data)]
    assert invoke("users", "add", "root", "--role", "admin", *d)[0] == 0
    token = invoke("tokens", "create", "root", "--name", "ops", *d)[1].strip()
    env = {k: v for k, v in ENV.items() if k.startswith("SENSORIUM_AUTH")}
    srv = ServerProcess(data, env={**env, "SENSORIUM_AUTH__ENABLED": "true"}).start()
    try:
        url = srv.url
        assert httpx.get(url + "/api/v1/measurements").status_code == 401
        h = {"Authorization": f"Token {token}"}
        r = httpx.post(url + "/api/v2/write", content="climate,device_id=d1 temperature=20 1767225600000000000", headers=h)
        assert r.status_code == 204, r.text
        code, out, err = invoke("users", "add", "ann", "--role", "user", "--url", url, SENSORIUM_TOKEN=token)
        assert code == 0, err
        code, _, err = invoke("users", "list", "--url", url)
        assert code == 2 and "401" in err
        code, out, _ = invoke("users", "list", "--format", "json", "--url", url, SENSORIUM_TOKEN=token)
        assert {u["id"] for u in json.loads(out)} == {"root", "ann"}
        code, out, _ = invoke("tokens", "create", "ann", "--url", url, SENSORIUM_TOKEN=token)
        ann = out.strip()
        code, out, _ = invoke("query", "SELECT count(*) AS n FROM climate", "--format", "json", "--url", url,
                              SENSORIUM_TOKEN=ann)
        assert json.loads(out) == [{"n": 0}]  # ann has no places: no rows
        code, out, _ = invoke("query", "SELECT count(*) AS n FROM climate", "--format", "json", "--url", url,
                              SENSORIUM_TOKEN=token)
        assert json.loads(out) == [{"n": 1}]
        code, out, _ = invoke("audit", "--format", "json", "--url", url, "--action", "user_create", SENSORIUM_TOKEN=token)
        entries: list[dict[str, Any]] = json.loads(out)
        assert [(e["actor"], e["target"]) for e in entries] == [("root", "ann"), (entries[1]["actor"], "root")]
        assert entries[1]["actor"].startswith("cli")  # the first admin, added on the data directory
    finally:
        srv.stop()
