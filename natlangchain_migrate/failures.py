"""Turning a server error into ``file:line:column`` and a sentence that says what to do."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from natlangchain_migrate.causes import ERRORS, Cause, classify
from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.errors import (
    ConnectionLostError,
    LockRetriesExhaustedError,
    MigrateError,
    MigrationFailedError,
    PrerequisiteError,
    PrivilegeError,
    ServerError,
)
from natlangchain_migrate.layouts import OPENS_NO_TRANSACTION
from natlangchain_migrate.repeatables import version_of
from natlangchain_migrate.results import MigrationResult
from natlangchain_migrate.statements import line_and_column, split_statements


def locate(
    migration: Migration,
    error: asyncpg.PostgresError,
    *,
    offset: int,
    statement: int | None = None,
) -> str:
    """``file:line:column`` of the error, where PostgreSQL gave a position; else, for
    statement ``statement`` of a no-transaction file, where that statement begins (a
    runtime error such as a duplicate key has no position); else the file alone.

    ``offset`` is where the text sent to the server started inside the file
    (negative when we prefixed settings to it).
    """
    position = _int_or_none(getattr(error, "position", None))
    if position is not None:
        index = offset + position - 1
    elif statement is not None:
        statements = split_statements(migration.filename, migration.sql)
        if not 0 < statement <= len(statements):
            return migration.filename
        index = _first_token(migration.sql, statements[statement - 1].offset)
    else:
        return migration.filename
    line, column = line_and_column(migration.sql, index)
    return f"{migration.filename}:{line}:{column}"


def _first_token(sql: str, start: int) -> int:
    """Where the statement's text begins after blanks and ``--`` comments."""
    index = start
    while index < len(sql):
        if sql[index].isspace():
            index += 1
        elif sql.startswith("--", index):
            newline = sql.find("\n", index)
            index = len(sql) if newline < 0 else newline + 1
        else:
            return index
    return start


def migration_failed(
    migration: Migration,
    error: asyncpg.PostgresError,
    *,
    offset: int,
    applied: Sequence[MigrationResult],
    rolled_back: bool = True,
    statement: int | None = None,
    location: str | None = None,
    outcome: str | None = None,
) -> MigrateError:
    """The error a failed migration raises, chained by the caller from the driver's: of
    the class, exit code and advice that ``causes.classify`` gives its SQLSTATE, so "fix
    the file" is said only where the file is the cause."""
    location = location or locate(migration, error, offset=offset, statement=statement)
    found = classify(error.sqlstate)
    extra = "".join(
        f"; {label}: {one_line(value).rstrip('.')}"
        for label, value in (
            ("detail", getattr(error, "detail", None)),
            ("hint", getattr(error, "hint", None)),
            ("where", getattr(error, "context", None)),
        )
        if value
    )
    if outcome is not None:
        pass
    elif rolled_back:
        outcome = "it was rolled back and not recorded"
    else:
        outcome = (
            f"statements before {statement} stay applied and the ledger marks it incomplete; "
            f"the next run resumes at statement {statement}"
        )
    text = (
        f"{location}: {error.sqlstate} {_message(error)}{extra}. Migration {migration.name} "
        f"failed; {outcome}. {_advice(migration, error, found.advice)}"
    )
    if found.cause is Cause.FILE:
        return MigrationFailedError(
            text,
            version=version_of(migration),
            location=location,
            sqlstate=error.sqlstate,
            applied=applied,
        )
    if found.cause is Cause.CONNECTION:
        return ConnectionLostError(text, applied=applied)
    kind = ERRORS[found.cause]
    if issubclass(kind, ServerError):
        return kind(text, sqlstate=error.sqlstate, location=location, applied=applied)
    return kind(text)


def _advice(migration: Migration, error: asyncpg.PostgresError, advice: str) -> str:
    """25001 from a SET TRANSACTION that came too late (under --lock-mode transaction every
    file runs in the lock's transaction); 25001 in a golang-migrate or prisma folder: its
    tool's own way, a file of one statement, works here too and keeps the file's wrapper
    (a no-transaction file refuses BEGIN;/COMMIT;); in another tool's layout, that
    layout's own marker."""
    if error.sqlstate == "25001" and "must be called before any query" in str(error):
        return (
            "SET TRANSACTION must be a transaction's first statement: under --lock-mode "
            "transaction every file runs inside the lock's transaction, which has run queries "
            "already; run this file with --lock-mode session, or drop its SET TRANSACTION"
        )
    if error.sqlstate != "25001":
        return advice
    if migration.layout in OPENS_NO_TRANSACTION:
        return (
            "The statement cannot run inside a transaction block: give it a file of its own "
            f"(a {migration.layout} file of that one statement, with no BEGIN;/COMMIT; "
            f"around it, runs outside a transaction, as {migration.layout} runs it), and "
            "leave the rest of this file as it is, then run again"
        )
    marker = _NO_TRANSACTION_MARKERS.get(migration.layout or "")
    if marker is None:
        return advice
    return (
        f"The statement cannot run inside a transaction block: mark this file with {marker} "
        "(its statements then run one by one, each committed as it runs), or move the "
        "statement into a file of its own so marked, then run again"
    )


# How each layout's file says "no transaction" (the natlangchain layout's: causes.py).
_NO_TRANSACTION_MARKERS = {
    "sqlx": "sqlx's '-- no-transaction' as its first line",
    "goose": "goose's '-- +goose NO TRANSACTION'",
    "dbmate": "dbmate's '-- migrate:up transaction:false'",
    "flyway": "Flyway's executeInTransaction=false in a V<n>__desc.sql.conf beside it",
    "node-pg-migrate": (
        "'-- natlangchain: no-transaction' in its up section (node-pg-migrate has no "
        "marker of its own for SQL files)"
    ),
}


def connection_lost(
    migration: Migration,
    error: BaseException,
    *,
    applied: Sequence[MigrationResult],
    journalled: bool = False,
) -> ConnectionLostError:
    """The error for a connection that died while a migration ran: not the file's fault."""
    if journalled:
        outcome = (
            f"the statements of {migration.name} that the ledger journalled stay applied, "
            "each with its journal step, and the next run resumes after them"
        )
    else:
        outcome = f"the server rolled {migration.name} back and it was not recorded"
    words = one_line(str(getattr(error, "message", None) or error))
    reason = f"{getattr(error, 'sqlstate', None) or type(error).__name__}: {words}"
    return ConnectionLostError(
        f"the connection to the server was lost while {migration.filename} ran ({reason}): a "
        f"server restart or failover, pg_terminate_backend, or the network; {outcome}. "
        "Nothing is wrong with the file: run again (with --wait SECONDS the runner "
        "reconnects by itself)",
        applied=applied,
    )


def privilege_missing(
    migration: Migration,
    error: asyncpg.PostgresError,
    *,
    offset: int,
    role: str,
    database: str,
    schema: str,
    missing_extensions: Sequence[str],
) -> PrivilegeError | PrerequisiteError:
    """The error for a 42501: a privilege the role lacks, never the file's fault.

    A migration that declares an extension the database does not have yet, refused
    with 42501, could not create it: that is a prerequisite for a DBA to provide.
    """
    location = locate(migration, error, offset=offset)
    if missing_extensions:
        create = " ".join(f"CREATE EXTENSION {name};" for name in missing_extensions)
        return PrerequisiteError(
            f"{location}: {error.sqlstate} {_message(error)}. {migration.filename} needs the "
            "extension "
            f"{', '.join(repr(n) for n in missing_extensions)}, which role {role} may not "
            f"create: ask a superuser (the DBA) to run {create} in database {database}, "
            f"then run again; or leave this migration out with --skip {migration.version}"
        )
    return PrivilegeError(
        f"{location}: {error.sqlstate} {_message(error)}. Role {role} lacks a privilege that "
        f"{migration.filename} needs; the migration was rolled back and not recorded. Grant "
        f"it (for the target schema, {schema}, which --schema sets: GRANT USAGE, CREATE ON "
        f"SCHEMA {schema} TO {role};) or run the migrations as the objects' owner, or into a "
        "schema the role may use (--schema), then run again"
    )


# The server says the object a statement creates is there already (or the one it drops is
# gone): what repeating a statement that did run looks like.
EFFECT_ALREADY_THERE = frozenset(
    {
        "42P07",  # duplicate_table (also indexes, sequences, views)
        "42701",  # duplicate_column
        "42710",  # duplicate_object (constraints, triggers, types, ...)
        "42P06",  # duplicate_schema
        "42723",  # duplicate_function
        "42P04",  # duplicate_database
        "42P01",  # undefined_table (a DROP or ALTER of what an earlier run removed)
        "42703",  # undefined_column (a RENAME that already happened)
        "42704",  # undefined_object
    }
)


def resumed_statement_already_done(
    migration: Migration,
    error: asyncpg.PostgresError,
    *,
    offset: int,
    statement: int,
    ledger_table: str,
    applied: Sequence[MigrationResult],
) -> MigrationFailedError:
    """The error for a resumed statement whose effect seems to be in the database already.

    Only a statement PostgreSQL cannot run in a transaction block (or one
    journalled by a runner older than the atomic journal) can get here: it
    committed, and the run stopped before its journal step did.
    """
    location = locate(migration, error, offset=offset, statement=statement)
    return MigrationFailedError(
        f"{location}: {error.sqlstate} {_message(error)}. Migration {migration.name} was "
        "resuming at "
        f"statement {statement}, where an earlier run stopped (killed, or its connection "
        "lost); this error says the statement's effect is already in the database, so that "
        "run most likely finished it just before it stopped, before the journal recorded "
        f"it. Nothing was changed. Check that the database matches statement {statement}, "
        f"then record it as done with: UPDATE {ledger_table} SET statements_done = "
        f"{statement} WHERE version = {migration.version}; and run again",
        version=version_of(migration),
        location=location,
        sqlstate=error.sqlstate,
        applied=applied,
    )


def lock_retries_exhausted(
    migration: Migration,
    attempts: int,
    blockers: Sequence[dict[str, object]],
    applied: Sequence[MigrationResult],
) -> LockRetriesExhaustedError:
    """The error for a migration that kept hitting lock_timeout."""
    who = (
        ", ".join(
            f"pid {b['pid']} ({b['application_name'] or 'no application_name'}, "
            f"{b['state']}, query started {b['query_start']})"
            for b in blockers
        )
        or "sessions that had gone when we looked"
    )
    return LockRetriesExhaustedError(
        f"{migration.filename}: gave up after {attempts} attempts, each cancelled by "
        f"lock_timeout (55P03) while waiting for locks held by {who}. Nothing of "
        f"{migration.name} was kept. End or wait out those sessions, or raise "
        "--pg-lock-timeout / --lock-retries (pg_lock_timeout= / lock_retries=)",
        version=version_of(migration),
        location=migration.filename,
        sqlstate="55P03",
        applied=applied,
    )


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def _message(error: asyncpg.PostgresError) -> str:
    """The server's message alone: ``str()`` of asyncpg's error appends DETAIL and HINT
    lines, which the failure lists once, labelled."""
    message = getattr(error, "message", None)
    return one_line(str(message)) if message else str(error).split("\n", 1)[0]


def one_line(text: str) -> str:
    """The server's words on one line: a hint (asyncpg adds one of many lines to some
    codes) or a RAISE'd message may hold newlines."""
    return " ".join(text.split())
