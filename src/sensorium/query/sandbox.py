"""The query sandbox: read-only SELECTs over Sensorium's tables, nothing else.

Two layers: (1) DuckDB's own parser (``json_serialize_sql``) gives the statement tree; only a
single SELECT is accepted, every table it reads must be a measurement of the bucket (or a CTE),
and no file, network or catalog function may appear; (2) the connection runs with
``enable_external_access = false`` and a locked configuration, so even a missed case cannot
touch a file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import orjson

from sensorium.errors import QueryError, SandboxViolation

#: Table functions a query may use (pure generators, no I/O).
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})

#: Scalar functions refused outright (I/O, environment, extensions).
DENIED_FUNCTIONS = frozenset(
    {
        "getenv",
        "current_setting",
        "read_text",
        "read_blob",
        "read_csv",
        "read_csv_auto",
        "read_json",
        "read_json_auto",
        "read_ndjson",
        "read_parquet",
        "parquet_scan",
        "glob",
        "load_extension",
        "install_extension",
        "query",
        "query_table",
        "sniff_csv",
    }
)


_PARSER_LOCK = threading.Lock()
_PARSER: list[duckdb.DuckDBPyConnection] = []


def _parser() -> duckdb.DuckDBPyConnection:
    """One shared connection that only parses (never runs user SQL)."""
    if not _PARSER:
        _PARSER.append(duckdb.connect(":memory:", config={"enable_external_access": False}))
    return _PARSER[0]


@dataclass
class Analysis:
    tables: set[str] = field(default_factory=set)  # base tables referenced (not CTEs)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            yield n
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)


def _cte_names(tree: Any) -> set[str]:
    names: set[str] = set()
    for n in _walk(tree):
        cte = n.get("cte_map")
        if isinstance(cte, dict):
            for entry in cte.get("map", []):
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    names.add(entry["key"].lower())
    return names


def analyse(sql: str, known_tables: set[str]) -> Analysis:
    """Check ``sql`` against the sandbox; raise :class:`SandboxViolation` or :class:`QueryError`."""
    if not sql or not sql.strip():
        raise QueryError("empty query: pass a SELECT statement in `sql`")
    with _PARSER_LOCK:
        raw = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    assert raw is not None
    tree = orjson.loads(raw[0])
    if tree.get("error"):
        etype = tree.get("error_type", "")
        msg = tree.get("error_message", "invalid SQL")
        if etype == "not implemented" or "Only SELECT" in msg:
            first = sql.strip().split(None, 1)[0].upper()
            raise SandboxViolation(
                f"only read-only SELECT queries are allowed; '{first}' statements are refused"
            )
        raise QueryError(msg)
    stmts = tree.get("statements", [])
    if len(stmts) != 1:
        raise SandboxViolation("exactly one SELECT statement per query is allowed")
    ctes = _cte_names(tree)
    known = {t.lower(): t for t in known_tables}
    out = Analysis()
    for n in _walk(tree):
        ntype = n.get("type")
        if ntype == "BASE_TABLE":
            name = str(n.get("table_name", ""))
            schema = n.get("schema_name") or ""
            catalog = n.get("catalog_name") or ""
            if schema or catalog:
                qual = ".".join(x for x in (catalog, schema, name) if x)
                raise SandboxViolation(
                    f"table '{qual}' is outside Sensorium's tables; query measurements by name"
                )
            low = name.lower()
            if low in ctes:
                continue
            if low not in known:
                hint = ", ".join(sorted(known_tables)[:20]) or "none yet"
                raise QueryError(f"unknown table '{name}' (measurements in this bucket: {hint})")
            out.tables.add(known[low])
        elif ntype == "TABLE_FUNCTION":
            fn = n.get("function") or {}
            fname = str(fn.get("function_name", "")).lower()
            if fname not in ALLOWED_TABLE_FUNCTIONS:
                raise SandboxViolation(
                    f"table function '{fname}' is not allowed: queries may read only Sensorium's "
                    "tables (no file, network or catalog functions)"
                )
        elif n.get("class") == "FUNCTION" or ntype == "FUNCTION":
            fname = str(n.get("function_name", "")).lower()
            if fname in DENIED_FUNCTIONS or fname.startswith(("read_", "duckdb_", "pragma_")):
                raise SandboxViolation(f"function '{fname}' is not allowed in queries")
    return out
