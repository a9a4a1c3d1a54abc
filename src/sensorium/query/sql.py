"""Quoting for the SQL Sensorium writes itself (DuckDB / PostgreSQL dialect): one place."""

from __future__ import annotations


def ident(name: str) -> str:
    """A quoted identifier: ``a"b`` → ``"a""b"``."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    """A quoted string literal: ``it's`` → ``'it''s'``."""
    return "'" + value.replace("'", "''") + "'"


__all__ = ["ident", "literal"]
