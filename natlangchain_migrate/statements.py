"""Reading SQL with PostgreSQL's own grammar (pglast): statements, and what each may do.

pglast embeds PostgreSQL's parser, so dollar-quoted bodies, strings and
comments containing semicolons stay whole, and whether a statement may run
inside a transaction block is read from its parse tree, never guessed from
its text. It is imported only for files that need it, keeping the common
path's start-up light.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from natlangchain_migrate.errors import ConfigurationError

# A cheap first look for BEGIN; COMMIT; ROLLBACK; START TRANSACTION at the start of a line;
# only files it flags are parsed (plpgsql's "BEGIN" has no semicolon, so bodies rarely match).
_MAYBE_TRANSACTION_CONTROL = re.compile(
    r"^\s*(begin|commit|rollback|start\s+transaction|abort|savepoint|release)\b[^;\n]*;",
    re.I | re.M,
)


class IndexRef(NamedTuple):
    """An index a statement builds or drops: its schema (None: the search_path's first)
    and name."""

    schema: str | None
    name: str


class Statement(NamedTuple):
    """One statement of a file: its text and where it starts (0-based character offset).

    ``autocommit`` is True for a statement PostgreSQL refuses inside a transaction
    block (CREATE INDEX CONCURRENTLY, VACUUM, ...). ``builds`` / ``drops`` name
    the index of a CREATE INDEX / DROP INDEX CONCURRENTLY, so that a resumed run
    can see whether its effect is already there.
    """

    text: str
    offset: int
    autocommit: bool = False
    builds: IndexRef | None = None
    drops: IndexRef | None = None


def split_statements(filename: str, sql: str) -> list[Statement]:
    """The file's statements in order; a syntax error names file:line:column."""
    import pglast
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
        statements.append(_describe(stripped.rstrip(), offset, raw.stmt))
    return statements


def _describe(text: str, offset: int, node: Any) -> Statement:
    from pglast import ast, enums

    autocommit = needs_autocommit(node)
    if isinstance(node, ast.IndexStmt) and node.idxname:
        schema = node.relation.schemaname if node.relation else None
        return Statement(text, offset, autocommit, builds=IndexRef(schema, node.idxname))
    if (
        isinstance(node, ast.DropStmt)
        and node.concurrent
        and node.removeType == enums.ObjectType.OBJECT_INDEX
        and node.objects
        and len(node.objects) == 1
    ):
        *qualifier, name = (part.sval for part in node.objects[0])
        return Statement(
            text, offset, autocommit, drops=IndexRef(qualifier[-1] if qualifier else None, name)
        )
    return Statement(text, offset, autocommit)


def needs_autocommit(node: Any) -> bool:
    """True for a statement PostgreSQL refuses to run inside a transaction block.

    The list follows PostgreSQL's callers of PreventInTransactionBlock: CREATE and
    DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY and REINDEX SCHEMA/DATABASE/SYSTEM,
    VACUUM (not ANALYZE alone), CLUSTER of every table, CREATE/DROP DATABASE, ALTER
    DATABASE ... SET TABLESPACE, CREATE/DROP TABLESPACE, ALTER SYSTEM, DETACH
    PARTITION ... CONCURRENTLY, DISCARD ALL and the subscription commands that
    manage replication slots. A statement it misses is caught by the server's
    25001 error and re-run on its own (see ``apply``).
    """
    from pglast import ast, enums

    if isinstance(node, ast.IndexStmt | ast.DropStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.VacuumStmt):
        return bool(node.is_vacuumcmd)
    if isinstance(node, ast.ReindexStmt):
        whole = node.kind in (
            enums.ReindexObjectType.REINDEX_OBJECT_SCHEMA,
            enums.ReindexObjectType.REINDEX_OBJECT_SYSTEM,
            enums.ReindexObjectType.REINDEX_OBJECT_DATABASE,
        )
        return whole or _has_option(node.params, "concurrently")
    if isinstance(node, ast.ClusterStmt):
        return node.relation is None
    if isinstance(node, ast.AlterDatabaseStmt):
        return _has_option(node.options, "tablespace")
    if isinstance(node, ast.AlterTableStmt):
        return any(
            isinstance(cmd.def_, ast.PartitionCmd) and bool(cmd.def_.concurrent)
            for cmd in node.cmds or ()
        )
    if isinstance(node, ast.DiscardStmt):
        return bool(node.target == enums.DiscardMode.DISCARD_ALL)
    return isinstance(
        node,
        ast.CreatedbStmt
        | ast.DropdbStmt
        | ast.CreateTableSpaceStmt
        | ast.DropTableSpaceStmt
        | ast.AlterSystemStmt
        | ast.CreateSubscriptionStmt
        | ast.DropSubscriptionStmt
        | ast.AlterSubscriptionStmt,
    )


def _has_option(options: Any, name: str) -> bool:
    return any(getattr(option, "defname", None) == name for option in options or ())


def line_and_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character offset into ``text``."""
    offset = max(0, min(offset, len(text)))
    before = text[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return line, column


def find_transaction_control(sql: str) -> tuple[int, str] | None:
    """The line and keyword of a top-level BEGIN/COMMIT/ROLLBACK/SAVEPOINT in the file.

    The runner owns the transactions; a file that commits by itself would break
    that silently. A file that does not parse is left to the server, which
    reports the syntax error with its position like any other.
    """
    if _MAYBE_TRANSACTION_CONTROL.search(sql) is None:
        return None
    import pglast
    from pglast import ast
    from pglast.parser import ParseError

    try:
        raw_statements = pglast.parse_sql(sql)
    except ParseError:
        return None
    for raw in raw_statements:
        if isinstance(raw.stmt, ast.TransactionStmt):
            line, _ = line_and_column(sql, raw.stmt_location or 0)
            text = sql[raw.stmt_location or 0 :].lstrip().split(None, 1)[0].rstrip(";")
            return line, text.upper()
    return None
