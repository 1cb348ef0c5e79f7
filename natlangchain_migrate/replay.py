"""Where a runtime error is in a transactional file: the server gives a position for a
syntax error, not for a duplicate key, a division by zero or a failed cast, and a
transactional file runs as one message. So, on failure only, the file is run again
statement by statement, in a transaction that is always rolled back, until the same
SQLSTATE names the statement. Success costs nothing; a failure costs a second run of
the statements before the failing one. In transaction lock mode the file ran in a
savepoint of the lock's transaction: the replay runs there, rolled back to it.
"""

from __future__ import annotations

import asyncpg

from natlangchain_migrate.causes import Cause, classify, server_error
from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.errors import ConfigurationError


async def failing_statement(
    conn: asyncpg.Connection,
    migration: Migration,
    error: asyncpg.PostgresError,
    prefix: str,
    *,
    savepoint: str | None = None,
) -> int | None:
    """The number (from 1) of the statement that raises ``error`` again, run after
    ``prefix`` (``BEGIN`` and the migration's settings, or the settings alone in
    ``savepoint``, the one the file ran in inside the caller's transaction); None when
    the error has a position already, is not the file's (a timeout would only be waited
    for again), or the replay does not meet it."""
    if getattr(error, "position", None) or classify(error.sqlstate).cause is not Cause.FILE:
        return None
    if conn.is_closed() or (savepoint is None and conn.is_in_transaction()):
        return None  # inside a caller's transaction that has nothing to roll back to
    from natlangchain_migrate.statements import split_statements

    try:
        statements = split_statements(migration.filename, migration.sql)
    except ConfigurationError:
        return None
    if len(statements) < 2:
        return 1 if statements else None
    undo = "ROLLBACK" if savepoint is None else f"ROLLBACK TO SAVEPOINT {savepoint}"
    try:
        if savepoint is not None:  # the file's failed attempt, undone (again: harmless)
            await conn.execute(undo)
        await conn.execute(prefix)
        for number, statement in enumerate(statements, start=1):
            try:
                await conn.execute(statement.text)
            except Exception as raised:  # a warning-class RAISE comes as no PostgresError
                again = server_error(raised)
                if again is None:
                    raise
                return number if again.sqlstate == error.sqlstate else None
        return None
    finally:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute(undo)
