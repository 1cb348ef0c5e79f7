"""SQL text built by the runner: identifiers and literals quoted in one place."""

from __future__ import annotations


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's quote_ident does."""
    return '"' + name.replace('"', '""') + '"'


def standard_literal(text: str) -> str:
    """A standard SQL string literal (for text shown to people: schema dumps)."""
    return "'" + text.replace("'", "''") + "'"


def literal(text: str) -> str:
    """A string literal that means the same whatever standard_conforming_strings says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
