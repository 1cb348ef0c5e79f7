"""Reading SQL with PostgreSQL's own grammar (pglast): statements, and what each may do.

pglast embeds PostgreSQL's parser, so dollar-quoted bodies, strings and
comments containing semicolons stay whole, and whether a statement may run
inside a transaction block is read from its parse tree, never guessed from
its text. It is imported only for files that need it, keeping the common
path's start-up light.
"""

from __future__ import annotations

import functools
import re
from typing import Any, NamedTuple

from natlangchain_migrate.errors import ConfigurationError

# Cheap first looks for what only psql can run: COPY ... FROM STDIN, and a meta-command
# (a backslash command at the start of a line: \set, \i, \connect, pg_dump 18's \restrict).
_MAYBE_COPY_FROM_STDIN = re.compile(r"\bcopy\b[^;]*?\bfrom\s+stdin\b", re.I | re.S)
_MAYBE_META_COMMAND = re.compile(r"^[ \t]*(\\(?:[A-Za-z!?]\w*|\.))", re.M)

# A cheap first look for BEGIN; COMMIT; ROLLBACK; START TRANSACTION as a statement: the
# keyword with its semicolon on its line, and before it, once comments are taken out, only
# blanks back to a line start or another statement's semicolon (``/* done */ COMMIT;``).
# Only files it flags are parsed (plpgsql's "BEGIN" has no semicolon, so bodies rarely
# match). END; (COMMIT's other name) ends every plpgsql block, so it is looked for only
# outside dollar-quoted bodies. A false alarm costs a parse; a miss would let a COMMIT end
# the runner's transaction.
_MAYBE_TRANSACTION_CONTROL = re.compile(
    r"\b(?:begin|commit|rollback|start\s+transaction|abort|savepoint|release"
    r"|prepare\s+transaction)\b[^;\n]*;",
    re.I,
)
_MAYBE_END = re.compile(r"\bend\b[^;\n]*;", re.I)
_LOOK_BACK = 2000
_COMMENT = re.compile(r"/\*.*?\*/|--[^\n]*", re.S)
_STATEMENT_START = re.compile(r"(?:\A|[;\n])[ \t\r\f\v]*\Z")


def _starts_a_statement(sql: str, at: int) -> bool:
    """Whether only blanks and comments stand between ``at`` and a line start or a
    semicolon: the keyword there may be a statement of its own."""
    before = sql[max(0, at - _LOOK_BACK) : at]
    line_start = before.rfind("\n") + 1
    if "*/" in before[line_start:] and "/*" not in before[line_start:]:
        return True  # after a comment begun on an earlier line: a parse will tell
    return any(  # as it is too: a "--" or "/*" in a string is no comment
        _STATEMENT_START.search(text) is not None for text in (before, _COMMENT.sub(" ", before))
    )


def _maybe_transaction_control(sql: str) -> bool:
    if any(_starts_a_statement(sql, m.start()) for m in _MAYBE_TRANSACTION_CONTROL.finditer(sql)):
        return True
    if "end" not in sql.lower():
        return False
    outside = _DOLLAR_QUOTED.sub(" ", sql)
    return any(_starts_a_statement(outside, m.start()) for m in _MAYBE_END.finditer(outside))


# A $tag$ ... $tag$ body. The tag's first character is a letter, an underscore or any
# non-ASCII one, the rest digits too: written as the ASCII characters it may not be, since
# a class spelt up to \U0010ffff costs each start-up about 5 ms to compile.
_TAG_START = r"[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f]"
_TAG_REST = r"[^\x00-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]"
_DOLLAR_QUOTED = re.compile(rf"\$({_TAG_START}{_TAG_REST}*|)\$.*?\$\1\$", re.S)


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
    transaction_control: bool = False
    from_client: bool = False  # COPY ... FROM STDIN: rows only a client like psql sends
    # "begin" / "commit" for a plain BEGIN / COMMIT (no options, no AND CHAIN): what may
    # wrap a whole file in the layouts whose tool opens no transaction (unwrap_transaction).
    wrapper: str = ""


@functools.lru_cache(maxsize=256)
def split_statements(filename: str, sql: str) -> list[Statement]:
    """The file's statements in order; a syntax error names file:line:column.

    The parse tree comes from libpg_query as JSON (pglast's ``parse_sql_json``), about
    twenty times cheaper than building pglast's Python node objects, and the result is
    kept: preflight and the apply step both need it.
    """
    import json

    from pglast.parser import ParseError, parse_sql_json

    try:
        tree = json.loads(parse_sql_json(sql))
    except ParseError as error:
        message = error.args[0]
        location = error.args[1] if len(error.args) > 1 else 0
        line, column = line_and_column(sql, int(location))
        raise ConfigurationError(f"{filename}:{line}:{column}: {message}; fix the file") from None
    encoded = None if sql.isascii() else sql.encode("utf-8")
    statements: list[Statement] = []
    for raw in tree.get("stmts", []):
        start = _characters(encoded, raw.get("stmt_location", 0))
        end = (
            _characters(encoded, raw.get("stmt_location", 0) + raw["stmt_len"])
            if raw.get("stmt_len")
            else len(sql)
        )
        text = sql[start:end]
        stripped = text.lstrip()
        offset = start + len(text) - len(stripped)
        ((kind, node),) = raw["stmt"].items()
        statements.append(_describe(stripped.rstrip(), offset, kind, node))
    return statements


def _characters(encoded: bytes | None, byte_offset: int) -> int:
    """libpg_query counts bytes; Python strings count characters."""
    if encoded is None:
        return byte_offset
    return len(encoded[:byte_offset].decode("utf-8", errors="ignore"))


def _describe(text: str, offset: int, kind: str, node: dict[str, Any]) -> Statement:
    autocommit = needs_autocommit(kind, node)
    if kind == "TransactionStmt":
        plain = not node.get("options") and not node.get("chain")
        wrapper = _WRAPPERS.get(node.get("kind", ""), "") if plain else ""
        return Statement(text, offset, autocommit, transaction_control=True, wrapper=wrapper)
    if kind == "CopyStmt" and node.get("is_from") and not node.get("filename"):
        return Statement(text, offset, autocommit, from_client=True)
    if kind == "IndexStmt" and node.get("idxname"):
        schema = node.get("relation", {}).get("schemaname")
        return Statement(text, offset, autocommit, builds=IndexRef(schema, node["idxname"]))
    objects = node.get("objects") or []
    if (
        kind == "DropStmt"
        and node.get("concurrent")
        and node.get("removeType") == "OBJECT_INDEX"
        and len(objects) == 1
    ):
        *qualifier, name = (item["String"]["sval"] for item in objects[0]["List"]["items"])
        return Statement(
            text, offset, autocommit, drops=IndexRef(qualifier[-1] if qualifier else None, name)
        )
    return Statement(text, offset, autocommit)


# BEGIN [WORK | TRANSACTION], START TRANSACTION; COMMIT [WORK | TRANSACTION], END.
_WRAPPERS = {
    "TRANS_STMT_BEGIN": "begin",
    "TRANS_STMT_START": "begin",
    "TRANS_STMT_COMMIT": "commit",
}

# Statements PostgreSQL refuses inside a transaction block whatever their options.
_ALWAYS_ALONE = frozenset(
    {
        "CreatedbStmt",
        "DropdbStmt",
        "CreateTableSpaceStmt",
        "DropTableSpaceStmt",
        "AlterSystemStmt",
        "CreateSubscriptionStmt",
        "DropSubscriptionStmt",
        "AlterSubscriptionStmt",
    }
)
_WHOLE_REINDEX = frozenset(
    {"REINDEX_OBJECT_SCHEMA", "REINDEX_OBJECT_SYSTEM", "REINDEX_OBJECT_DATABASE"}
)


def needs_autocommit(kind: str, node: dict[str, Any]) -> bool:
    """True for a statement PostgreSQL refuses to run inside a transaction block.

    The list follows PostgreSQL's callers of PreventInTransactionBlock: CREATE and
    DROP INDEX CONCURRENTLY, REINDEX CONCURRENTLY and REINDEX SCHEMA/DATABASE/SYSTEM,
    VACUUM (not ANALYZE alone), CLUSTER of every table, CREATE/DROP DATABASE, ALTER
    DATABASE ... SET TABLESPACE, CREATE/DROP TABLESPACE, ALTER SYSTEM, DETACH
    PARTITION ... CONCURRENTLY, DISCARD ALL and the subscription commands that
    manage replication slots. A statement it misses is caught by the server's
    25001 error and re-run on its own (see ``apply``).
    """
    if kind in ("IndexStmt", "DropStmt"):
        return bool(node.get("concurrent"))
    if kind == "VacuumStmt":
        return bool(node.get("is_vacuumcmd"))
    if kind == "ReindexStmt":
        return node.get("kind") in _WHOLE_REINDEX or _has_option(node.get("params"), "concurrently")
    if kind == "ClusterStmt":
        return "relation" not in node
    if kind == "AlterDatabaseStmt":
        return _has_option(node.get("options"), "tablespace")
    if kind == "AlterTableStmt":
        return any(
            bool(
                cmd.get("AlterTableCmd", {})
                .get("def", {})
                .get("PartitionCmd", {})
                .get("concurrent")
            )
            for cmd in node.get("cmds") or ()
        )
    if kind == "DiscardStmt":
        return node.get("target") == "DISCARD_ALL"
    return kind in _ALWAYS_ALONE


def _has_option(options: list[dict[str, Any]] | None, name: str) -> bool:
    return any(option.get("DefElem", {}).get("defname") == name for option in options or ())


def line_and_column(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of a 0-based character offset into ``text``."""
    offset = max(0, min(offset, len(text)))
    before = text[:offset]
    line = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return line, column


def find_transaction_control(sql: str, *, past_wrapper: bool = False) -> tuple[int, str] | None:
    """The line and keyword of a top-level BEGIN/COMMIT/ROLLBACK/SAVEPOINT in the file.

    The runner owns the transactions; a file that commits by itself would break
    that silently. A file that does not parse is left to the server, which
    reports the syntax error with its position like any other. ``past_wrapper``:
    a plain BEGIN as the first statement and a plain COMMIT as the last are passed
    over when anything else is found, so that the one named is the one to remove.
    """
    statements = _parsed_if_flagged(sql)
    found = [s for s in statements if s.transaction_control]
    if past_wrapper:
        inner = [s for s in found if not _is_wrapper(s, statements)]
        found = inner or found
    if not found:
        return None
    line, _ = line_and_column(sql, found[0].offset)
    return line, found[0].text.split(None, 1)[0].rstrip(";").upper()


def unwrap_transaction(sql: str) -> str | None:
    """The file with its wrapper blanked out, when a plain BEGIN (START TRANSACTION) is its
    first statement, a plain COMMIT (END) its last and no other statement controls the
    transaction; else None.

    golang-migrate and prisma open no transaction of their own, so their users wrap a file
    in one; the runner runs the body in its transaction with the ledger row instead. The
    wrapper (and its semicolon) becomes spaces, so every line and column stays where it
    is in the file.
    """
    statements = _parsed_if_flagged(sql)
    found = [s for s in statements if s.transaction_control]
    if len(found) != 2 or not all(_is_wrapper(s, statements) for s in found):
        return None
    text = sql
    for statement in reversed(found):
        end = statement.offset + len(statement.text)
        after = len(text[end:]) - len(text[end:].lstrip())
        if text[end + after : end + after + 1] == ";":
            end += after + 1
        blank = re.sub(r"[^\n]", " ", text[statement.offset : end])
        text = text[: statement.offset] + blank + text[end:]
    return text


def _is_wrapper(statement: Statement, statements: list[Statement]) -> bool:
    if statement is statements[0]:
        return statement.wrapper == "begin"
    return statement is statements[-1] and statement.wrapper == "commit"


def _parsed_if_flagged(sql: str) -> list[Statement]:
    """The file's statements when the cheap look sees transaction control, else none."""
    if not _maybe_transaction_control(sql):
        return []
    try:
        return split_statements("", sql)
    except ConfigurationError:
        return []


def find_client_only(sql: str) -> tuple[int, str] | None:
    """The line and the text of the first thing in the file that only psql can run: a
    ``COPY ... FROM STDIN`` (the server would wait for rows forever) or a psql
    meta-command (the server sees a syntax error at the backslash).

    Only files the cheap looks flag are parsed; a backslash line that parses (inside a
    string or a function body) is SQL, not a meta-command.
    """
    copy = _MAYBE_COPY_FROM_STDIN.search(sql)
    meta = _MAYBE_META_COMMAND.search(sql)
    if copy is None and meta is None:
        return None
    try:
        statements = split_statements("", sql)
    except ConfigurationError:
        # Unparseable: a meta-command, or a data section after a COPY; the first one.
        found = [(m.start(1) if m is meta else m.start(), m) for m in (copy, meta) if m]
        start, match = min(found, key=lambda pair: pair[0])
        text = "COPY ... FROM STDIN" if match is copy else match.group(1)
        return line_and_column(sql, start)[0], text
    for statement in statements:
        if statement.from_client:
            return line_and_column(sql, statement.offset)[0], "COPY ... FROM STDIN"
    return None
