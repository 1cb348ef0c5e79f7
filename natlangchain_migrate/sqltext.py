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


def text_array(items: list[str]) -> str:
    """A text[] as one string literal (``'{"a","b"}'::text[]``): the server parses one
    constant, where a VALUES list of a thousand rows costs it a thousand rows of
    expressions (about 4x the time)."""
    quoted = ('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"' for item in items)
    return literal("{" + ",".join(quoted) + "}") + "::text[]"
