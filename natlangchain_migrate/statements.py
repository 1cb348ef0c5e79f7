"""Splitting a no-transaction migration into statements with PostgreSQL's own grammar.

pglast embeds PostgreSQL's parser, so dollar-quoted bodies, strings and
comments containing semicolons stay whole. It is imported only for files that
need it, keeping the common path's start-up light.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from natlangchain_migrate.errors import ConfigurationError

# A cheap first look for BEGIN; COMMIT; ROLLBACK; START TRANSACTION at the start of a line;
# only files it flags are parsed (plpgsql's "BEGIN" has no semicolon, so bodies rarely match).
_MAYBE_TRANSACTION_CONTROL = re.compile(
    r"^\s*(begin|commit|rollback|start\s+transaction|abort)\b[^;\n]*;", re.I | re.M
)


class Statement(NamedTuple):
    """One statement of a file: its text, where it starts (0-based character offset),
    and, for CREATE INDEX, the index it builds."""

    text: str
    offset: int
    index_name: str | None = None
    index_schema: str | None = None
    concurrently: bool = False


def split_statements(filename: str, sql: str) -> list[Statement]:
    """The file's statements in order; a syntax error names file:line:column."""
    import pglast
    from pglast import ast
    from pglast.parser import ParseError

    try:
        raw_statements = pglast.parse_sql(sql)
    except ParseError as error:
        message = error.args[0]
        location = error.args[1] if len(error.args) > 1 else 0
        line, column = line_and_column(sql, int(location))
        raise ConfigurationError(f"{filename}:{line}:{column}: {message}; fix the file") from None
    statements: list[Statement] = []
    for raw in raw_statements:
        start = raw.stmt_location or 0
        length = raw.stmt_len or len(sql) - start
        text = sql[start : start + length]
        stripped = text.lstrip()
        offset = start + len(text) - len(stripped)
        node = raw.stmt
        if isinstance(node, ast.IndexStmt):
            statements.append(
                Statement(
                    stripped.rstrip(),
                    offset,
                    index_name=node.idxname,
                    index_schema=node.relation.schemaname if node.relation else None,
                    concurrently=bool(node.concurrent),
                )
            )
        else:
            statements.append(Statement(stripped.rstrip(), offset))
    return statements


def line_and_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character offset into ``text``."""
    offset = max(0, min(offset, len(text)))
    before = text[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return line, column


def find_transaction_control(filename: str, sql: str) -> tuple[int, str] | None:
    """The line and keyword of a top-level BEGIN/COMMIT/ROLLBACK in the file, if any.

    The runner wraps each file in its own transaction with its ledger row; a
    file that commits by itself would break that silently.
    """
    if _MAYBE_TRANSACTION_CONTROL.search(sql) is None:
        return None
    import pglast
    from pglast import ast

    for raw in pglast.parse_sql(sql):
        if isinstance(raw.stmt, ast.TransactionStmt):
            line, _ = line_and_column(sql, raw.stmt_location or 0)
            text = sql[raw.stmt_location or 0 :].lstrip().split(None, 1)[0].rstrip(";")
            return line, text.upper()
    return None
