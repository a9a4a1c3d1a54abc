"""The SQL sandbox lets SELECTs over our tables through and refuses everything else clearly."""

from __future__ import annotations

import pytest

from sensorium.errors import QueryError, SandboxViolation
from sensorium.query.sandbox import analyse

KNOWN = {"climate", "Energy"}


@pytest.mark.parametrize(
    "sql,tables",
    [
        ("SELECT * FROM climate", {"climate"}),
        ("select avg(temperature) from CLIMATE group by device_id", {"climate"}),
        ("WITH x AS (SELECT * FROM climate) SELECT * FROM x JOIN energy USING (device_id)", {"climate", "Energy"}),
        ("SELECT * FROM range(10)", set()),
        ("SELECT * FROM climate WHERE device_id IN (SELECT device_id FROM energy)", {"climate", "Energy"}),
        ("FROM climate", {"climate"}),
    ],
)
def test_allowed(sql: str, tables: set[str]) -> None:
    assert analyse(sql, KNOWN).tables == tables


@pytest.mark.parametrize(
    "sql,needle",
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv"),
        ("SELECT * FROM read_parquet('x.parquet')", "read_parquet"),
        ("SELECT * FROM glob('*')", "glob"),
        ("SELECT * FROM climate, read_json_auto('x')", "read_json_auto"),
        ("SELECT getenv('HOME')", "getenv"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings"),
        ("SELECT * FROM information_schema.tables", "information_schema"),
        ("SELECT read_text('/etc/passwd')", "read_text"),
        ("COPY climate TO '/tmp/x.csv'", "COPY"),
        ("ATTACH '/tmp/x.db' AS x", "ATTACH"),
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("PRAGMA database_list", "PRAGMA"),
        ("SET enable_external_access = true", "SET"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("DROP VIEW climate", "DROP"),
        ("INSERT INTO climate VALUES (1)", "INSERT"),
        ("DELETE FROM climate", "DELETE"),
        ("SELECT 1; SELECT 2", "one SELECT"),
        ("WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM x", "read_csv"),
    ],
)
def test_refused(sql: str, needle: str) -> None:
    with pytest.raises(SandboxViolation) as ei:
        analyse(sql, KNOWN)
    assert needle.lower() in ei.value.message.lower()
    assert 400 <= ei.value.status < 500


@pytest.mark.parametrize(
    "sql,needle",
    [
        ("SELEC * FROM climate", "syntax error"),
        ("SELECT * FROM nope", "unknown table 'nope'"),
        ("SELECT * FROM 'file.csv'", "unknown table"),
        ("", "empty query"),
    ],
)
def test_bad_sql_is_a_query_error(sql: str, needle: str) -> None:
    with pytest.raises(QueryError) as ei:
        analyse(sql, KNOWN)
    assert needle in ei.value.message
    assert ei.value.status == 400
