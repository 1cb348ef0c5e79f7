"""Turning a server error into ``file:line:column`` and a sentence that says what to do."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.errors import LockRetriesExhaustedError, MigrationFailedError
from natlangchain_migrate.results import MigrationResult
from natlangchain_migrate.statements import line_and_column


def locate(migration: Migration, error: asyncpg.PostgresError, *, offset: int) -> str:
    """``file:line:column`` of the error, where PostgreSQL gave a position.

    ``offset`` is where the text sent to the server started inside the file
    (negative when we prefixed settings to it).
    """
    position = _int_or_none(getattr(error, "position", None))
    if position is None:
        return migration.filename
    line, column = line_and_column(migration.sql, offset + position - 1)
    return f"{migration.filename}:{line}:{column}"


def migration_failed(
    migration: Migration,
    error: asyncpg.PostgresError,
    *,
    offset: int,
    applied: Sequence[MigrationResult],
    rolled_back: bool = True,
    statement: int | None = None,
) -> MigrationFailedError:
    """The error a failed migration raises, chained by the caller from the driver's."""
    location = locate(migration, error, offset=offset)
    extra = "".join(
        f"; {label}: {value}"
        for label, value in (
            ("detail", getattr(error, "detail", None)),
            ("hint", getattr(error, "hint", None)),
            ("where", getattr(error, "context", None)),
        )
        if value
    )
    if rolled_back:
        outcome = "it was rolled back and not recorded"
    else:
        outcome = (
            f"statements before {statement} stay applied and the ledger marks it incomplete; "
            f"the next run resumes at statement {statement}"
        )
    return MigrationFailedError(
        f"{location}: {error.sqlstate} {error}{extra}. Migration {migration.name} failed; "
        f"{outcome}. Fix the file and run again",
        version=migration.version,
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
        "--lock-timeout / --lock-retries",
        version=migration.version,
        location=migration.filename,
        sqlstate="55P03",
        applied=applied,
    )


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None
