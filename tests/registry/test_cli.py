"""`sensorium registry` and `sensorium graph`: in process on a data directory, and one pass over
HTTP against a running server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sensorium.cli.main import app
from tests.conftest import ServerProcess

YAML = """\
locations:
  - {id: home, name: Home}
rooms:
  - {id: kitchen, location_id: home}
devices:
  - {id: gw-1, gateway: true, room_id: kitchen}
  - {id: dev-1, room_id: kitchen}
  - {id: dev-2, room_id: cellar}
services:
  - {id: cloud}
users:
  - {id: alice}
relations:
  - {src: alice, rel: OWNS, dst: home}
  - {src: dev-1, rel: COMMUNICATES_WITH, dst: gw-1, properties: {latency_ms: 4}}
  - {src: gw-1, rel: COMMUNICATES_WITH, dst: cloud, properties: {latency_ms: 30}}
"""


def invoke(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.output


def test_registry_commands_on_a_data_directory(tmp_path: Path) -> None:
    dd = ["--data-dir", str(tmp_path / "data")]
    f = tmp_path / "reg.yaml"
    f.write_text(YAML)
    code, out = invoke("registry", "list", "devices", *dd)  # nothing there yet: empty, nothing created
    assert code == 0 and "0 in all" in out and not (tmp_path / "data" / "registry.sqlite").exists()
    code, out = invoke("registry", "import", str(f), *dd)
    assert code == 1  # one row rejected, the rest stored
    assert "reg.yaml:8: room_id: no room 'cellar'" in out and "1 rejected" in out
    code, out = invoke("registry", "add", "devices", "--id", "dev-3", "--set", "room_id=kitchen",
                       "--set", "attributes.vendor=acme", "--set", "firmware=1.0", *dd)
    assert code == 0 and "added device dev-3" in out
    code, out = invoke("registry", "list", "devices", "--where", "room_id=kitchen", "--format", "json", *dd)
    data = json.loads(out)
    assert data["total"] == 3 and data["items"][1]["attributes"] == {"vendor": "acme"}
    code, out = invoke("registry", "show", "devices", "dev-1", *dd)
    assert code == 0 and "COMMUNICATES_WITH" in out and "kitchen" in out
    code, out = invoke("registry", "relate", "dev-3", "communicates_with", "gw-1", "--set", "latency_ms=2", *dd)
    assert code == 0 and "dev-3 COMMUNICATES_WITH gw-1" in out
    code, out = invoke("registry", "list", "relations", "--where", "src=dev-3", "--format", "json", *dd)
    rid = json.loads(out)["items"][0]["id"]
    assert json.loads(out)["items"][0]["properties"] == {"latency_ms": 2}
    code, out = invoke("registry", "unrelate", str(rid), *dd)
    assert code == 0
    code, out = invoke("registry", "export", "--format", "csv", "--kind", "devices", *dd)
    assert out.splitlines()[0] == "id,name,type,status,room_id,location_id,gateway,firmware,attributes"
    exported = tmp_path / "all.yaml"
    code, _ = invoke("registry", "export", "--out", str(exported), *dd)
    assert "dev-3" in exported.read_text()
    code, out = invoke("registry", "remove", "devices", "dev-3", *dd)
    assert code == 0 and "removed device dev-3" in out
    # the graph over the same registry
    code, out = invoke("graph", "path", "dev-1", "cloud", "--format", "json", *dd)
    assert json.loads(out)["latency_ms"] == 34.0
    code, out = invoke("graph", "impact", "gw-1", *dd)
    assert code == 0 and "dev-1" in out
    code, out = invoke("graph", "user", "alice", "--format", "json", *dd)
    assert [d["id"] for d in json.loads(out)["devices"]] == ["dev-1", "gw-1"]
    code, out = invoke("graph", "pagerank", "--top", "3", *dd)
    assert code == 0 and "PageRank" in out
    code, out = invoke("graph", "communities", *dd)
    assert code == 0 and "communities" in out
    with pytest.raises(Exception, match="no entity 'nowhere'"):
        invoke("graph", "impact", "nowhere", *dd)


def test_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "sensorium.cli.main", "registry", "add", "devices", "--id", "x",
         "--set", "room_id=nowhere", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2 and "room_id: no room 'nowhere'" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_registry_and_graph_over_http(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "srv").start()
    try:
        f = tmp_path / "reg.yaml"
        f.write_text(YAML)
        url = ["--url", srv.url]
        code, out = invoke("registry", "import", str(f), "--format", "json", *url)
        assert code == 1 and json.loads(out)["rejected"] == 1 and json.loads(out)["created"] == 6
        code, out = invoke("registry", "add", "rooms", "--name", "Living Room", "--set", "location_id=home", *url)
        assert "added room living-room" in out
        code, out = invoke("registry", "list", "rooms", "--format", "json", *url)
        assert json.loads(out)["total"] == 2
        code, out = invoke("registry", "show", "rooms", "living-room", "--format", "json", *url)
        assert json.loads(out)["location_id"] == "home"
        code, out = invoke("graph", "path", "dev-1", "cloud", "--format", "json", *url)
        assert json.loads(out)["hops"] == 2
        code, out = invoke("registry", "remove", "rooms", "living-room", *url)
        assert code == 0
        srv.query("SELECT 1")  # still healthy
        r = srv.query("SELECT device_id, room FROM devices ORDER BY 1")
        assert r["rows"] == [["dev-1", "kitchen"], ["gw-1", "kitchen"]]
    finally:
        srv.stop()
