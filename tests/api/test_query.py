"""SQL over HTTP: formats, sandbox refusals as 4xx, engine errors as 400 — never a 500."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from tests.conftest import T0


@pytest.fixture
def loaded(client: Any) -> Any:
    body = "\n".join(
        f"climate,device_id=d{i % 3},location=home-1 temperature={20 + i},rssi=-{60 + i}i {T0 + i * 60 * 10**9}"
        for i in range(30)
    )
    assert client.post("/api/v2/write", content=body).status_code == 204
    return client


def test_json_shape(loaded: Any) -> None:
    r = loaded.get("/api/v1/query", params={"sql": "SELECT device_id, count(*) AS n FROM climate GROUP BY 1 ORDER BY 1"})
    assert r.status_code == 200
    assert r.json()["columns"] == ["device_id", "n"]
    assert r.json()["rows"] == [["d0", 10], ["d1", 10], ["d2", 10]]


def test_time_is_rfc3339(loaded: Any) -> None:
    r = loaded.get("/api/v1/query", params={"sql": "SELECT time FROM climate ORDER BY time LIMIT 1"})
    assert r.json()["rows"][0][0] == "2026-01-01T00:00:00Z"


def test_post_json_body_and_csv_and_arrow(loaded: Any) -> None:
    r = loaded.post("/api/v1/query", json={"sql": "SELECT count(*) AS n FROM climate"})
    assert r.json()["rows"] == [[30]]
    r = loaded.get("/api/v1/query", params={"sql": "SELECT count(*) AS n FROM climate", "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    assert pacsv.read_csv(io.BytesIO(r.content))["n"].to_pylist() == [30]
    r = loaded.get("/api/v1/query", params={"sql": "SELECT count(*) AS n FROM climate"},
                   headers={"Accept": "application/vnd.apache.arrow.stream"})
    assert pa.ipc.open_stream(r.content).read_all()["n"].to_pylist() == [30]


def test_hourly_mean_with_time_bucket(loaded: Any) -> None:
    sql = ("SELECT time_bucket(INTERVAL '10 minutes', time) AS b, avg(temperature) AS t FROM climate "
           "GROUP BY b ORDER BY b")
    r = loaded.get("/api/v1/query", params={"sql": sql})
    assert r.status_code == 200
    assert [row[1] for row in r.json()["rows"]] == [24.5, 34.5, 44.5]
    sql2 = "SELECT date_bin(INTERVAL '10 minutes', time) AS b, count(*) FROM climate GROUP BY b"
    assert loaded.get("/api/v1/query", params={"sql": sql2}).status_code == 200


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/tmp/x.parquet')",
        "SELECT * FROM glob('/*')",
        "COPY climate TO '/tmp/out.csv'",
        "ATTACH '/tmp/x.duckdb' AS x",
        "INSTALL httpfs",
        "PRAGMA database_list",
        "SET enable_external_access = true",
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW climate",
        "SELECT getenv('HOME')",
        "SELECT * FROM duckdb_settings()",
    ],
)
def test_sandbox_escapes_refused(loaded: Any, sql: str) -> None:
    r = loaded.get("/api/v1/query", params={"sql": sql})
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["message"]


@pytest.mark.parametrize(
    "sql,needle",
    [
        ("SELEC 1", "syntax"),
        ("SELECT nope FROM climate", "nope"),
        ("SELECT * FROM missing", "unknown table"),
        ("SELECT 1/0::INTEGER + 'a'", ""),
    ],
)
def test_bad_sql_is_400(loaded: Any, sql: str, needle: str) -> None:
    r = loaded.get("/api/v1/query", params={"sql": sql})
    assert r.status_code == 400, r.text
    assert needle in r.json()["message"]


def test_missing_sql_is_400(loaded: Any) -> None:
    assert loaded.get("/api/v1/query").status_code == 400


def test_latest_endpoint(loaded: Any) -> None:
    r = loaded.get("/api/v1/latest", params={"device_id": "d2"})
    series = r.json()["series"]
    assert len(series) == 1
    assert series[0]["fields"]["temperature"] == 49.0
    assert series[0]["tags"]["device_id"] == "d2"
    assert series[0]["time"] == "2026-01-01T00:29:00Z"
