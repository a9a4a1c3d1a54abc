"""Personal data at rest: written through the API, then looked for in every file of the data
directory (and a dump of the PostgreSQL registry) — never found in clear. Keys: missing,
wrong, rotated; look-ups by blind index; pseudonymised exports; the catalog."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient

from sensorium.api.app import create_app
from sensorium.errors import ConfigError
from sensorium.platform import Sensorium
from tests.conftest import TEST_PII_KEY, FakeClock, make_settings

SECRETS = [
    "Zebulon Quartermaine", "zebulon.q@example.org", "ZEBULON.Q@EXAMPLE.ORG", "Ysolde Fairweather",
    "ysolde@example.net", "+49 30 1234567", "my secret diary entry 42", "Flat 3b, Narrow Lane",
]


def _write_people(c: TestClient) -> None:
    r = c.post("/api/v1/users", json={"id": "zeb", "name": "Zebulon Quartermaine",
                                       "email": "ZEBULON.Q@EXAMPLE.ORG", "password": "a long password"})
    assert r.status_code == 201, r.text
    r = c.post("/api/v1/registry/users", json={"id": "ys", "name": "Ysolde Fairweather", "email": "ysolde@example.net",
                                                "attributes": {"phone": "+49 30 1234567"}})
    assert r.status_code == 201, r.text
    assert r.json()["attributes"] == {"phone": "+49 30 1234567"}
    r = c.patch("/api/v1/users/zeb", json={"email": "zebulon.q@example.org"})
    assert r.status_code == 200, r.text
    for who in ("zeb", "ys"):
        r = c.post("/api/v1/documents", json={
            "kind": "interaction", "user_id": who, "data": {"intent": "set_temperature", "status": "done"},
            "pii": {"text": "my secret diary entry 42", "address": "Flat 3b, Narrow Lane"}})
        assert r.status_code == 201, r.text
    # what comes back is plaintext
    users = {u["id"]: u for u in c.get("/api/v1/users").json()["users"]}
    assert users["zeb"]["name"] == "Zebulon Quartermaine" and users["zeb"]["email"] == "zebulon.q@example.org"
    docs = c.get("/api/v1/documents", params={"where": "intent:set_temperature"}).json()
    assert docs["total"] == 2 and docs["items"][0]["pii"]["text"] == "my secret diary entry 42"
    assert c.post("/api/v1/login", json={"username": "Zebulon.Q@example.org", "password": "a long password"}).status_code == 200


def _found_in(blob: bytes) -> list[str]:
    low = blob.lower()
    return [s for s in SECRETS if s.encode() in blob or s.lower().encode() in low]


def grep_dir(root: Path) -> dict[str, list[str]]:
    hits = {}
    for f in sorted(root.rglob("*")):
        if f.is_file():
            found = _found_in(f.read_bytes())
            if found:
                hits[str(f.relative_to(root))] = found
    return hits


def test_no_personal_data_in_clear_anywhere_in_the_data_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    p = Sensorium(make_settings(data, stream={"enabled": False}, parse_workers=0), clock=FakeClock(), background=False)
    control = b"Control Boiler 77"  # a device's name is not personal data: stored in clear
    try:
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            _write_people(c)
            c.post("/api/v2/write", content="climate,device_id=d1 temperature=20 1767225600000000000")
            assert c.post("/api/v1/registry/devices", json={"id": "boiler", "name": control.decode()}).status_code == 201
            assert grep_dir(data) == {}  # while running: SQLite's WAL, journals ...
            assert any(control in f.read_bytes() for f in data.rglob("registry.sqlite*"))  # the grep sees
    finally:
        p.close()
    assert grep_dir(data) == {}  # and after a clean stop
    assert control in (data / "registry.sqlite").read_bytes()


@pytest.fixture
def pg_registry() -> Iterator[tuple[str, str]]:
    from tests.registry.conftest import drop_schema, pg_url

    url = pg_url()
    schema = f"pii_{uuid.uuid4().hex[:12]}"
    try:
        yield url, schema
    finally:
        drop_schema(schema)


def pg_dump(url: str, schema: str) -> bytes:
    """The schema dumped by pg_dump; without it, every table COPYed out (the same rows)."""
    if shutil.which("pg_dump") is not None:
        return subprocess.run(["pg_dump", "--schema", schema, url], check=True, capture_output=True).stdout
    import psycopg

    out = []
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))]
        for t in tables:
            out.append(f"CREATE TABLE {schema}.{t}\nCOPY {schema}.{t}\n".encode())
            with conn.cursor().copy(f'COPY "{schema}"."{t}" TO STDOUT') as cp:
                out += [bytes(chunk) for chunk in cp]
    return b"".join(out)


def test_no_personal_data_in_clear_in_a_postgresql_dump(tmp_path: Path, pg_registry: tuple[str, str]) -> None:
    url, schema = pg_registry
    data = tmp_path / "data"
    p = Sensorium(make_settings(data, stream={"enabled": False}, parse_workers=0,
                                registry={"url": url, "pg_schema": schema}), clock=FakeClock(), background=False)
    try:
        with TestClient(create_app(p), raise_server_exceptions=False) as c:
            _write_people(c)
    finally:
        p.close()
    dump = pg_dump(url, schema)
    assert b"CREATE TABLE " + schema.encode() + b".users" in dump
    assert b"COPY " + schema.encode() + b".documents" in dump and b"set_temperature" in dump  # data is there
    assert _found_in(dump) == []
    assert grep_dir(data) == {}


# -- keys ------------------------------------------------------------------------------------------
def _platform(data: Path) -> Sensorium:
    return Sensorium(make_settings(data, stream={"enabled": False}, parse_workers=0), clock=FakeClock(), background=False)


def test_a_start_with_personal_data_and_no_key_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    with _platform(data) as p:
        assert p.registry_store is not None
        p.registry_store.create("user", {"id": "u1", "email": "u1@example.com"})
    monkeypatch.delenv("SENSORIUM_PII_KEYS")
    with pytest.raises(ConfigError, match=r"holds encrypted personal data \(1 in users.email\).*SENSORIUM_PII_KEYS"):
        _platform(data)
    monkeypatch.setenv("SENSORIUM_PII_KEYS", Fernet.generate_key().decode())  # not the one that wrote it
    from sensorium.pii import PIIKeyInvalid

    with pytest.raises(PIIKeyInvalid, match="does not decrypt with any of the 1 configured key"):
        _platform(data)


def test_without_a_key_personal_data_is_refused_with_503_and_the_rest_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SENSORIUM_PII_KEYS")
    with _platform(tmp_path / "data") as p, TestClient(create_app(p), raise_server_exceptions=False) as c:
        assert c.post("/api/v1/registry/users", json={"id": "u1"}).status_code == 201  # nothing personal
        r = c.post("/api/v1/registry/users", json={"id": "u2", "email": "u2@example.com"})
        assert r.status_code == 503 and r.json()["code"] == "pii_key_missing"
        assert "sensorium pii keygen" in r.json()["message"]
        r = c.post("/api/v1/documents", json={"kind": "interaction", "data": {}, "pii": "hello"})
        assert r.status_code == 503
        assert c.post("/api/v1/documents", json={"kind": "interaction", "data": {"a": 1}}).status_code == 201
        assert c.post("/api/v1/registry/devices", json={"id": "d1", "name": "Boiler"}).status_code == 201


def test_bad_keys_are_configuration_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from sensorium import pii

    monkeypatch.setenv("SENSORIUM_PII_KEYS", "not-a-key")
    with pytest.raises(ConfigError, match="PII key 1 in \\$SENSORIUM_PII_KEYS is not a Fernet key"):
        pii.ring()
    monkeypatch.delenv("SENSORIUM_PII_KEYS")
    kf = tmp_path / "keys"
    kf.write_text(f"# current first\n{TEST_PII_KEY}\n")
    pii.configure(kf)
    try:
        r = pii.ring()
        assert r is not None and r.keys == (TEST_PII_KEY.encode(),) and "key file" in r.source
        pii.configure(tmp_path / "missing")
        with pytest.raises(ConfigError, match="key_file"):
            pii.ring()
    finally:
        pii.configure(None)


def test_rotation_re_encrypts_everything_with_the_new_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy import Text, select, type_coerce

    from sensorium.documents.models import Document
    from sensorium.pii import require
    from sensorium.pii.store import rotate
    from sensorium.registry.models import User

    data = tmp_path / "data"
    with _platform(data) as p, TestClient(create_app(p)) as c:
        _write_people(c)
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("SENSORIUM_PII_KEYS", f"{new},{TEST_PII_KEY}")
    with _platform(data) as p:
        store = p.registry_store
        assert store is not None
        # before the rotation: readable, and found by e-mail with the old key's blind index
        assert [u["id"] for u in store.entities("user", {"email": "zebulon.q@example.org"})[1]] == ["zeb"]
        done = rotate(store, require(), progress=lambda d, t: None)
        assert done == {"documents.pii": 2, "users.display_name": 2, "users.email": 2, "users.pii_attributes": 1}
        assert rotate(store, require()) == dict.fromkeys(done, 0)  # idempotent
    monkeypatch.setenv("SENSORIUM_PII_KEYS", new)  # the old key is gone
    with _platform(data) as p, TestClient(create_app(p)) as c:
        store = p.registry_store
        assert store is not None
        only_new = Fernet(new.encode())
        with store.session() as s:
            raw = [t for col in (User.email, User.display_name, User.pii_attributes, Document.pii)
                   for t in s.scalars(select(type_coerce(col, Text())))]
        assert len([t for t in raw if t is not None]) == 7
        for token in raw:
            if token is not None:
                only_new.decrypt(token.encode())
        assert c.get("/api/v1/users/zeb").json()["email"] == "zebulon.q@example.org"
        assert [u["id"] for u in c.get("/api/v1/registry/users", params={"email": "ZEBULON.Q@example.org"}).json()["items"]] == ["zeb"]
        assert c.post("/api/v1/login", json={"username": "zebulon.q@example.org", "password": "a long password"}).status_code == 200
        assert [u["id"] for u in c.get("/api/v1/registry/users", params={"q": "quarter"}).json()["items"]] == ["zeb"]


def test_encrypted_user_fields_cannot_be_searched_in_sql(tmp_path: Path) -> None:
    with _platform(tmp_path / "data") as p, TestClient(create_app(p)) as c:
        _write_people(c)
        assert c.get("/api/v1/registry/users", params={"name": "Zebulon Quartermaine"}).status_code == 400
        assert c.get("/api/v1/registry/users", params={"attributes.phone": "+49"}).status_code == 400
        assert c.get("/api/v1/registry/users", params={"sort": "email"}).status_code == 400
        assert [u["id"] for u in c.get("/api/v1/registry/users", params={"q": "EXAMPLE.NET"}).json()["items"]] == ["ys"]
        assert c.get("/api/v1/registry/users", params={"email": ""}).json()["total"] == 0


# -- pseudonymised exports -------------------------------------------------------------------------
def test_pseudonymised_export_is_consistent_and_holds_no_personal_data(tmp_path: Path) -> None:
    from sensorium.pii import require
    from sensorium.pii.export import export

    data = tmp_path / "data"
    with _platform(data) as p, TestClient(create_app(p)) as c:
        _write_people(c)
        c.post("/api/v1/registry/locations", json={"id": "home"})
        c.post("/api/v1/registry/relations", json={"src": "zeb", "rel": "OWNS", "dst": "home"})
        c.post("/api/v1/documents", json={"kind": "model_output", "data": {"for": "zeb", "by_mail": "zebulon.q@example.org"}})
        assert p.registry_store is not None
        out = tmp_path / "export"
        counts = export(p.registry_store, out, require())
    assert counts["users.jsonl"] == 2 and counts["documents.jsonl"] == 3 and counts["relations.jsonl"] == 1
    files = {f.name: [orjson.loads(line) for line in f.read_text().splitlines()] for f in out.iterdir()}
    blob = b"".join(f.read_bytes() for f in out.iterdir())
    assert _found_in(blob) == [] and b"zeb" not in blob.replace(b"zebra", b"")
    users = {u["role"]: u for u in files["users.jsonl"]}
    zeb = [u for u in files["users.jsonl"] if u["email"] is not None and u["user"] != "ys"]
    pseudonym = files["relations.jsonl"][0]["src"]
    assert pseudonym.startswith("u_") and pseudonym in {u["user"] for u in files["users.jsonl"]}
    docs = files["documents.jsonl"]
    assert {d["user"] for d in docs if d["kind"] == "interaction"} == {u["user"] for u in files["users.jsonl"]}
    model = next(d for d in docs if d["kind"] == "model_output")
    assert model["data"]["for"] == pseudonym and model["data"]["by_mail"].startswith("e_")
    assert all("pii" not in d for d in docs) and users and zeb
    # the same key, the same pseudonyms (a second export joins with the first)
    with _platform(data) as p:
        assert p.registry_store is not None
        export(p.registry_store, tmp_path / "again", require())
    assert (tmp_path / "again" / "users.jsonl").read_bytes() == (out / "users.jsonl").read_bytes()


# -- catalog ---------------------------------------------------------------------------------------
def test_every_pii_column_is_encrypted_and_the_catalog_says_so(client: TestClient) -> None:
    from sensorium.pii.fields import ENCRYPTED_TYPES
    from sensorium.pii.store import pii_columns
    from sensorium.registry.models import Base

    cols = {f"{t.name}.{c.name}" for t, c in pii_columns(Base.metadata)}
    assert cols == {"users.email", "users.display_name", "users.pii_attributes", "documents.pii"}
    for _, c in pii_columns(Base.metadata):
        assert isinstance(c.type, ENCRYPTED_TYPES)
    client.post("/api/v2/write", content="climate,device_id=d1 temperature=20 1767225600000000000")
    cat: dict[str, Any] = client.get("/api/v1/catalog").json()
    assert cat["classifications"] == ["pii", "internal", "public"]
    tables = {(t["store"], t["name"]): {c["name"]: c for c in t["columns"]} for t in cat["tables"]}
    assert tables[("registry", "users")]["email"] == {"name": "email", "type": "EncryptedText",
                                                      "classification": "pii", "encrypted": True}
    assert tables[("registry", "users")]["role"]["classification"] == "internal"
    assert tables[("registry", "documents")]["pii"]["classification"] == "pii"
    assert tables[("registry", "registry_state")]["revision"]["classification"] == "public"
    assert tables[("sql", "devices")]["device_id"]["classification"] == "internal"
    assert tables[("telemetry", "climate")]["device_id"]["role"] == "tag"
