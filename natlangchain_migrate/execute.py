"""Applying one migration: in a transaction with its ledger row, or statement by statement.

Every attempt runs under ``lock_timeout``; one cancelled for a lock wait
(55P03) is rolled back and tried again after a growing, jittered pause, so a
migration queued behind a long transaction never stalls the traffic queued
behind it. A watcher on the session's second connection, opened only once a
statement has run for a while, notes who blocks us and reports index builds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

import anyio
import asyncpg
import structlog

from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.errors import MigrateError
from natlangchain_migrate.failures import lock_retries_exhausted, migration_failed
from natlangchain_migrate.ledger import Ledger, quote_ident
from natlangchain_migrate.results import MigrationResult
from natlangchain_migrate.session import Session
from natlangchain_migrate.statements import Statement, split_statements

log = structlog.get_logger("natlangchain_migrate")

_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0, "": 0.001}

_BLOCKERS_QUERY = """
SELECT pid, application_name, state, query_start::text AS query_start
FROM pg_stat_activity WHERE pid = ANY (pg_blocking_pids($1))
"""
_PROGRESS_QUERY = """
SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total
FROM pg_stat_progress_create_index WHERE pid = $1
"""
_INVALID_INDEX_QUERY = """
SELECT format('%I.%I', n.nspname, c.relname)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid AND c.relname = $1 AND n.nspname = coalesce($2, current_schema())
"""


class ExecutionSettings(NamedTuple):
    """How migrations run: timeouts (PostgreSQL durations such as ``5s``), retries, schema."""

    schema: str = "public"
    lock_timeout: str = "5s"
    statement_timeout: str | None = None
    lock_retries: int = 5
    retry_delay: float = 1.0
    progress_interval: float = 5.0

    def retry_pause(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt``: doubling, with +-50% jitter."""
        return float(self.retry_delay * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))


def seconds(duration: str) -> float:
    """A PostgreSQL duration (``500ms``, ``5s``, ``2min``, ``1h``; bare numbers are ms)."""
    number = duration.rstrip("abcdefghijklmnopqrstuvwxyz")
    return float(number) * _UNITS[duration[len(number) :]]


def session_settings(
    migration: Migration, settings: ExecutionSettings, *, local: bool, durable: bool = True
) -> str:
    """The SET statements a migration runs under (file directives beat run settings)."""
    scope = "SET LOCAL" if local else "SET"
    lock_timeout = migration.directives.lock_timeout or settings.lock_timeout
    statement_timeout = migration.directives.statement_timeout or settings.statement_timeout
    parts = [
        f"{scope} lock_timeout = '{lock_timeout}'",
        f"{scope} statement_timeout = '{statement_timeout or 0}'",
        f"{scope} search_path = {quote_ident(settings.schema)}, pg_temp",
    ]
    if not durable:
        parts.append(f"{scope} synchronous_commit = off")
    return "; ".join(parts) + ";\n"


class Executor:
    """Runs migrations on the run's connection, with the session's second one for watching."""

    def __init__(
        self,
        session: Session,
        ledger: Ledger,
        settings: ExecutionSettings,
        applied_by: str,
    ) -> None:
        self.conn = session.conn
        self.session = session
        self.ledger = ledger
        self.settings = settings
        self.applied_by = applied_by
        self.applied: list[MigrationResult] = []

    async def apply_in_transaction(self, migration: Migration, *, last: bool = True) -> float:
        """Run the file and its ledger row in one transaction; return its duration in ms.

        BEGIN, the settings, the file, the ledger upsert and COMMIT travel in one
        message: one round trip per migration. All but the run's last migration
        commit with synchronous_commit off and the last one flushes them all, so
        everything is durable when the run returns; a crash before then can only
        lose whole migrations (file and row together), which the next run applies.
        """
        prefix = "BEGIN;\n" + session_settings(migration, self.settings, local=True, durable=last)
        script = f"{prefix}{self._file_and_record(migration)};\nCOMMIT;"
        started = time.monotonic()

        async def attempt() -> None:
            await self._execute_file(migration, script, offset=-len(prefix), own_transaction=True)

        await self._with_lock_retries(migration, attempt, statement=None)
        return _ms_since(started)

    async def apply_batch_in_transaction(self, migration: Migration) -> float:
        """Run the file and its ledger row inside the caller's open transaction (PgBouncer mode)."""
        prefix = session_settings(migration, self.settings, local=True)
        started = time.monotonic()
        await self._execute_file(
            migration,
            prefix + self._file_and_record(migration),
            offset=-len(prefix),
            own_transaction=False,
        )
        return _ms_since(started)

    def _file_and_record(self, migration: Migration) -> str:
        # The newline ends a trailing "--" comment; the lone ";" ends a last statement
        # that has none.
        return (
            f"{migration.sql}\n;\n"
            f"{self.ledger.record_statement(migration, applied_by=self.applied_by)}"
        )

    async def apply_without_transaction(self, migration: Migration, resume_from: int) -> float:
        """Run statement by statement, journalling each, resuming after ``resume_from`` done."""
        statements = split_statements(migration.filename, migration.sql)
        started = time.monotonic()
        await self.conn.execute(session_settings(migration, self.settings, local=False))
        try:
            await self.ledger.journal_start(self.conn, migration, applied_by=self.applied_by)
            if resume_from:
                log.info(
                    "migration_resuming",
                    version=migration.version,
                    name=migration.name,
                    statement=resume_from + 1,
                    statements=len(statements),
                )
            for number, statement in enumerate(statements, start=1):
                if number <= resume_from:
                    continue
                await self._run_statement(migration, statement, number)
                await self.ledger.journal_step(self.conn, migration.version, number)
            duration = _ms_since(started)
            await self.ledger.record(
                self.conn, migration, execution_ms=duration, applied_by=self.applied_by
            )
        finally:
            await self.conn.execute(
                "RESET lock_timeout; RESET statement_timeout; RESET search_path"
            )
        return duration

    async def _run_statement(self, migration: Migration, statement: Statement, number: int) -> None:
        if statement.concurrently and statement.index_name:
            await self._drop_invalid_index(migration, statement)

        async def attempt() -> None:
            try:
                await self.conn.execute(statement.text)
            except asyncpg.PostgresError as error:
                if not isinstance(error, asyncpg.LockNotAvailableError):
                    failure = migration_failed(
                        migration,
                        error,
                        offset=statement.offset,
                        applied=self.applied,
                        rolled_back=False,
                        statement=number,
                    )
                    await self.ledger.journal_error(self.conn, migration.version, str(failure))
                    raise failure from error
                raise

        await self._with_lock_retries(
            migration, attempt, statement=statement if statement.index_name else None
        )

    async def _drop_invalid_index(self, migration: Migration, statement: Statement) -> None:
        """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index that IF NOT EXISTS
        would silently keep: drop it before building again."""
        name = await self.conn.fetchval(
            _INVALID_INDEX_QUERY, statement.index_name, statement.index_schema
        )
        if name is None:
            return
        try:
            await self.conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        except asyncpg.PostgresError as error:
            raise MigrateError(
                f"{migration.filename}: index {name} is INVALID (left by a failed concurrent "
                f"build) and could not be dropped: {error}; drop it by hand and run again"
            ) from error
        log.warning("invalid_index_dropped", version=migration.version, index=name)

    async def _execute_file(
        self, migration: Migration, script: str, *, offset: int, own_transaction: bool
    ) -> None:
        try:
            await self.conn.execute(script)
        except asyncpg.PostgresError as error:
            if own_transaction and self.conn.is_in_transaction():
                await self.conn.execute("ROLLBACK")
            if isinstance(error, asyncpg.LockNotAvailableError):
                raise
            raise migration_failed(migration, error, offset=offset, applied=self.applied) from error
        if own_transaction and self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")
            raise MigrateError(
                f"{migration.filename} left its transaction open (does it contain BEGIN?); "
                "it was rolled back: remove transaction control from the file, or make it a "
                "no-transaction migration"
            )

    async def _with_lock_retries(
        self,
        migration: Migration,
        attempt: Callable[[], Awaitable[None]],
        *,
        statement: Statement | None,
    ) -> None:
        lock_timeout = seconds(migration.directives.lock_timeout or self.settings.lock_timeout)
        attempts = self.settings.lock_retries + 1
        for number in range(1, attempts + 1):
            watcher = _Watcher(
                self.session, _pid(self.conn), lock_timeout, self.settings, statement
            )
            try:
                await watcher.watch(attempt)
                return
            except asyncpg.LockNotAvailableError as error:
                if number == attempts:
                    raise lock_retries_exhausted(
                        migration, attempts, watcher.blockers, self.applied
                    ) from error
                pause = self.settings.retry_pause(number)
                log.warning(
                    "migration_lock_timeout",
                    version=migration.version,
                    name=migration.name,
                    attempt=number,
                    of=attempts,
                    retry_in_s=round(pause, 2),
                    blockers=list(watcher.blockers),
                )
                await anyio.sleep(pause)


class _Watcher:
    """Watches one attempt from a second connection, opened only if the attempt lasts."""

    def __init__(
        self,
        session: Session,
        pid: int,
        lock_timeout: float,
        settings: ExecutionSettings,
        statement: Statement | None,
    ) -> None:
        self.session = session
        self.pid = pid
        self.statement = statement
        self.progress_interval = settings.progress_interval
        self.first_look = min(0.5, lock_timeout / 2) if lock_timeout > 0 else 0.5
        self.blockers: Sequence[dict[str, object]] = []

    async def watch(self, attempt: Callable[[], Awaitable[None]]) -> None:
        """Run ``attempt`` with the watcher beside it; re-raise the attempt's own error."""
        failure: list[BaseException] = []
        async with anyio.create_task_group() as group:
            group.start_soon(self._look)
            try:
                await attempt()
            except BaseException as error:  # re-raised below, outside the task group
                failure.append(error)
            finally:
                group.cancel_scope.cancel()
        if failure:
            raise failure[0]

    async def _look(self) -> None:
        """Watching is a courtesy: if it cannot connect or query, the migration goes on."""
        await anyio.sleep(self.first_look)
        try:
            await self._watch_with_second_connection()
        except (MigrateError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("watcher_unavailable", error=str(error))

    async def _watch_with_second_connection(self) -> None:
        async with self.session.second_connection() as watcher:
            next_progress = time.monotonic() + self.progress_interval
            while True:
                rows = await watcher.fetch(_BLOCKERS_QUERY, self.pid)
                if rows:
                    self.blockers = [dict(row) for row in rows]
                if self.statement is not None and time.monotonic() >= next_progress:
                    await self._report_progress(watcher)
                    next_progress = time.monotonic() + self.progress_interval
                await anyio.sleep(min(0.25, self.progress_interval))

    async def _report_progress(self, watcher: asyncpg.Connection) -> None:
        row = await watcher.fetchrow(_PROGRESS_QUERY, self.pid)
        if row is not None and self.statement is not None:
            log.info("index_build_progress", index=self.statement.index_name, **dict(row))


def _pid(conn: asyncpg.Connection) -> int:
    return int(conn.get_server_pid())


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
