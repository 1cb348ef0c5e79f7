"""Applying what is pending, under the lock: the one place migrations are run.

Session lock mode: each transactional file travels with its ledger row in one
message (BEGIN, settings, file, ledger upsert, COMMIT): one round trip, one
commit. A no-transaction file runs statement by statement, and each statement
that PostgreSQL allows in a transaction block commits atomically with its
journal step, so a runner killed at any moment leaves the journal exactly in
step with the database. The few statements that must run on their own (CREATE
INDEX CONCURRENTLY, VACUUM, ...) have their effect checked when a resumed run
comes back to them.

Transaction lock mode (PgBouncer): the lock, the ledger and every pending
migration in one transaction; all of them commit, or none.

Every attempt runs under PostgreSQL's ``lock_timeout``; one cancelled for a
lock wait (55P03) is rolled back and tried again after a growing, jittered
pause, in both modes, by one helper.
"""

from __future__ import annotations

import secrets
import time
from functools import partial
from typing import TypeVar

import asyncpg

from natlangchain_migrate import telemetry
from natlangchain_migrate.attempt import (
    Attempts,
    Blocked,
    read_server_facts,
    reset_settings_sql,
    settings_sql,
)
from natlangchain_migrate.connection import (
    RunConnection,
    application_name,
    cleanup_scope,
    end_interrupted_transaction,
)
from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.durations import ms_since
from natlangchain_migrate.errors import (
    InvalidIndexError,
    LockRetriesExhaustedError,
    MigrateError,
    MigrationFailedError,
    PrivilegeError,
    TransactionControlError,
)
from natlangchain_migrate.events import log
from natlangchain_migrate.failures import (
    EFFECT_ALREADY_THERE,
    resumed_statement_already_done,
)
from natlangchain_migrate.ledger import Ledger, LedgerSnapshot
from natlangchain_migrate.locks import LockNoLongerNeeded, holding, migration_lock
from natlangchain_migrate.pending import Sources, decide, plan_of
from natlangchain_migrate.plan import (
    MigrationPlan,
)
from natlangchain_migrate.repeatables import is_repeatable, version_of
from natlangchain_migrate.results import MigrationResult
from natlangchain_migrate.settings import CallArguments, LockMode, RunnerOptions, ServerFacts
from natlangchain_migrate.sqltext import quote_ident
from natlangchain_migrate.statements import Statement, split_statements

T = TypeVar("T")

_INDEX_STATE_QUERY = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, i.indisvalid AS valid
FROM pg_class c
JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = $1 AND n.nspname = coalesce($2, current_schema())
"""


async def apply_pending(
    connection: RunConnection,
    ledger: Ledger,
    sources: Sources,
    options: RunnerOptions,
    call: CallArguments,
) -> list[MigrationResult]:
    """Take the lock, plan again under it, apply what is still pending (the versioned
    migrations, then the new or changed repeatables); return what this run applied, in
    order. A waiter that sees the work done by another runner leaves without the lock and
    returns nothing."""
    facts = await read_server_facts(connection.conn, options.schema)
    applier = _Applier(connection, ledger, sources, options, call, facts)
    try:
        if options.transaction_pooling:
            await applier.apply_in_one_transaction()
        else:
            await applier.apply_each()
    except LockNoLongerNeeded:
        log.info("applied_by_another_runner", lock_key=applier.lock.key)
    return applier.applied


class _StatementRun:
    """Where a no-transaction file's run stands: statements done, those that run alone."""

    def __init__(
        self,
        migration: Migration,
        statements: list[Statement],
        *,
        stopped_at: int | None,
        started: float,
        last: bool,
        transaction_timeout: bool = False,
    ) -> None:
        self.migration = migration
        self.statements = statements
        self.stopped_at = stopped_at  # statements done when an earlier run stopped, if any
        self.done = stopped_at or 0
        self.started = started
        self.last = last
        self.alone = {i for i, statement in enumerate(statements) if statement.autocommit}
        self.has_row = stopped_at is not None  # the ledger row exists (incomplete)
        # The journal step, prepared on our session for this file's run; a name of its
        # own, so a pooled connection that kept an earlier one can never clash.
        self.step_name = f"natlangchain_migrate_step_{secrets.token_hex(4)}"
        reset = reset_settings_sql(transaction_timeout=transaction_timeout)
        self.cleanup = f"{reset}; DEALLOCATE {self.step_name}"
        self.recorded = False

    def resumed_at(self, number: int) -> bool:
        """True for the first statement run after an earlier run stopped."""
        return self.stopped_at is not None and number == self.stopped_at + 1

    def next_runs_alone(self) -> bool:
        return self.done in self.alone

    def batch_end(self) -> int:
        """The index of the next statement that must run alone (or the end)."""
        later = [index for index in self.alone if index >= self.done]
        return min(later, default=len(self.statements))


class _Applier:
    """One run's apply step: owns the lock, the connection's use and the list of results."""

    def __init__(
        self,
        connection: RunConnection,
        ledger: Ledger,
        sources: Sources,
        options: RunnerOptions,
        call: CallArguments,
        facts: ServerFacts,
    ) -> None:
        self.connection = connection
        self.conn = connection.conn
        self.ledger = ledger
        self.sources = sources
        self.options = options
        self.call = call
        self.execution = options.execution
        self.search_path = facts.search_path(options.schema)
        self.transaction_timeout = facts.transaction_timeout
        self.applied_by = application_name()
        self.applied: list[MigrationResult] = []
        self.lock = migration_lock(self.conn, options, unless=self._nothing_left)
        self.attempts = Attempts(
            connection, options.execution, schema=options.schema, applied=self.applied
        )

    # --- the two lock modes ---------------------------------------------------------

    async def apply_each(self) -> None:
        """Session lock: each migration in its own transaction (or statement by statement)."""
        async with holding(self.lock, LockMode.SESSION):
            plan = await self._ensure_and_replan()
            for number, migration in enumerate(plan.pending, start=1):
                _log_applying(migration, number, len(plan.pending))
                last = number == len(plan.pending)
                with telemetry.migration_span(migration) as span:
                    try:
                        if migration.directives.no_transaction:
                            duration = await self._apply_statements(migration, plan, last=last)
                        else:
                            duration = await self.attempts.retrying(
                                partial(self._file, migration, last)
                            )
                    except MigrationFailedError as error:
                        _log_failed(migration, error)
                        raise
                    telemetry.migration_applied(span, duration)
                self._applied(MigrationResult(version_of(migration), migration.name, duration))

    async def apply_in_one_transaction(self) -> None:
        """Transaction lock: the lock, the ledger and every pending migration in one
        transaction. A lock_timeout anywhere rolls the whole batch back and it is retried
        whole."""

        async def batch() -> list[MigrationResult]:
            done: list[MigrationResult] = []
            async with holding(self.lock, LockMode.TRANSACTION):
                plan = await self._ensure_and_replan()
                for number, migration in enumerate(plan.pending, start=1):
                    _log_applying(migration, number, len(plan.pending))
                    with telemetry.migration_span(migration) as span:  # ends before COMMIT
                        try:
                            duration = await self._file_in_open_transaction(migration)
                        except MigrationFailedError as error:
                            _log_failed(migration, error)
                            raise
                        telemetry.migration_applied(span, duration)
                    done.append(MigrationResult(version_of(migration), migration.name, duration))
            return done

        try:
            results = await self.attempts.retrying(batch)
        except LockRetriesExhaustedError as error:  # the others were logged where they arose
            files = [*self.sources.migrations, *self.sources.repeatables]
            _log_failed(next(m for m in files if m.filename == error.location), error)
            raise
        for result in results:
            self._applied(result)

    # --- planning under the lock ----------------------------------------------------

    async def _read(self) -> LedgerSnapshot:
        return await self.ledger.read(self.conn, repeatables=bool(self.sources.repeatables))

    async def _nothing_left(self) -> bool:
        """While waiting for the lock: has another runner applied everything?"""
        return not plan_of(self.sources, await self._read(), self.call).pending

    async def _ensure_and_replan(self) -> MigrationPlan:
        """Create or adopt the ledger, read it again (another runner may have just
        finished) and plan anew."""
        try:
            added = await self.ledger.ensure(self.conn)
        except asyncpg.InsufficientPrivilegeError as error:
            role = await self.conn.fetchval("SELECT current_user")
            schema = quote_ident(self.options.schema)
            raise PrivilegeError(
                f"role {role} may not create the ledger {self.ledger.table}: {error}. Create "
                f"the schema and let the role use it (CREATE SCHEMA IF NOT EXISTS {schema}; "
                f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {role};), then run again"
            ) from error
        if added:
            log.info("ledger_adopted", columns_added=added)
        if self.sources.repeatables:
            await self.ledger.ensure_repeatables(self.conn)
        # Decided again: another runner may have applied something (a higher version too).
        return decide(
            self.sources, await self._read(), self.call, strict_order=self.options.strict_order
        )

    # --- transactional files --------------------------------------------------------

    async def _file(self, migration: Migration, last: bool) -> float:
        """The file and its ledger row in one message; return its duration in ms.

        All but the run's last migration commit with synchronous_commit off and the
        last one flushes them all, so everything is durable when the run returns; a
        crash before then can only lose whole migrations (file and row together),
        which the next run applies.
        """
        prefix = "BEGIN;\n" + settings_sql(
            migration,
            self.execution,
            self.search_path,
            local=True,
            durable=last,
            transaction_timeout=self.transaction_timeout,
        )
        script = f"{prefix}{self._file_and_record(migration)};\nCOMMIT;"
        started = time.monotonic()
        try:
            await self.attempts.send(migration, script)
        except asyncpg.PostgresError as error:
            raise await self._failure(migration, error, offset=-len(prefix)) from error
        if self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")
            raise TransactionControlError(
                f"{migration.filename} left its transaction open (does it contain BEGIN?); "
                "it was rolled back: remove transaction control from the file, or make it a "
                "no-transaction migration"
            )
        return ms_since(started)

    async def _file_in_open_transaction(self, migration: Migration) -> float:
        """The file and its ledger row inside the batch's open transaction."""
        prefix = settings_sql(
            migration,
            self.execution,
            self.search_path,
            local=True,
            transaction_timeout=self.transaction_timeout,
        )
        started = time.monotonic()
        try:
            await self.attempts.send(
                migration, prefix + self._file_and_record(migration), in_open_transaction=True
            )
        except asyncpg.PostgresError as error:
            raise await self._failure(migration, error, offset=-len(prefix)) from error
        return ms_since(started)

    def _file_and_record(self, migration: Migration) -> str:
        # The newline ends a trailing "--" comment; the lone ";" ends a last statement
        # that has none.
        if is_repeatable(migration):
            record = self.ledger.record_repeatable_statement(migration, applied_by=self.applied_by)
        else:
            record = self.ledger.record_statement(migration, applied_by=self.applied_by)
        return f"{migration.sql}\n;\n{record}"

    # --- no-transaction files -------------------------------------------------------

    async def _apply_statements(
        self, migration: Migration, plan: MigrationPlan, last: bool
    ) -> float:
        """Run a no-transaction file statement by statement, each with its journal step.

        Each statement allowed in a transaction block is a block ``BEGIN; <statement>;
        <journal step>; COMMIT;``: statement and step commit together or not at all, so
        the journal can never lag the database. Consecutive blocks travel in one message
        (the server runs them in turn and stops at the first error), so a file costs one
        round trip per run of such statements, not one per statement. The session runs
        with synchronous_commit off, which keeps the guarantee (a server crash loses a
        suffix of whole blocks, never a statement without its step); the run's very last
        commit is synchronous and flushes everything before it.
        """
        statements = split_statements(migration.filename, migration.sql)
        run = _StatementRun(
            migration,
            statements,
            stopped_at=plan.resume_from.get(migration.version),
            started=time.monotonic(),
            last=last,
            transaction_timeout=self.transaction_timeout,
        )
        _warn_if_edited_since_failure(plan, migration, run.done)
        await self.conn.execute(
            settings_sql(
                migration,
                self.execution,
                self.search_path,
                local=False,
                durable=False,
                transaction_timeout=self.transaction_timeout,
            )
            + self.ledger.prepare_advance(run.step_name)
        )
        try:
            if run.stopped_at is not None:
                log.info(
                    "migration_resuming",
                    version=migration.version,
                    name=migration.name,
                    statement=run.done + 1,
                    statements=len(statements),
                )
            while run.done < len(statements):
                if run.next_runs_alone():
                    number = run.done + 1
                    await self.attempts.retrying(
                        partial(
                            self._statement_on_its_own,
                            migration,
                            statements[run.done],
                            number,
                            resumed=run.resumed_at(number),
                        )
                    )
                    run.done = number
                    run.has_row = True
                else:
                    await self.attempts.retrying(partial(self._blocks, run))
            if not run.recorded:
                await self._complete(run, durable=last)
        except BaseException:
            with cleanup_scope():
                try:
                    await end_interrupted_transaction(self.conn)
                    await self.conn.execute(run.cleanup)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    pass  # a broken connection: the error already on its way says why
            raise
        return ms_since(run.started)

    async def _blocks(self, run: _StatementRun) -> None:
        """Send the statements from ``run.done`` up to the next one that must run alone,
        each in its block with its journal step, in one message."""
        migration, statements = run.migration, run.statements
        start, end = run.done, run.batch_end()
        blocks: list[str] = []
        positions: dict[int, int] = {}  # statement number -> where its text starts
        length = 0
        for index in range(start, end):
            number = index + 1
            final = number == len(statements)
            # The session runs with synchronous_commit off (see _apply_statements); only
            # the run's very last commit waits for the disk, and it flushes all before it.
            durable = final and run.last
            prefix = "BEGIN;\n" + ("SET LOCAL synchronous_commit = on;\n" if durable else "")
            if final:
                step = self.ledger.complete_statement(
                    migration, applied_by=self.applied_by, execution_ms=ms_since(run.started)
                )
            elif index == start and not run.has_row:
                step = self.ledger.step_statement(
                    migration, done=number, applied_by=self.applied_by
                )
            else:
                step = f"EXECUTE {run.step_name}({int(migration.version)}, {number})"
            positions[number] = length + len(prefix)
            block = f"{prefix}{statements[index].text}\n;\n{step};\nCOMMIT;\n"
            blocks.append(block)
            length += len(block)
        try:
            # The file's last block carries the session's clean-up along: no extra trip.
            tail = f"{run.cleanup};\n" if end == len(statements) else ""
            await self.attempts.send(migration, "".join(blocks) + tail, journalled=True)
        except Blocked:
            run.done = await self._journalled(migration)
            raise
        except asyncpg.PostgresError as error:
            run.done = await self._journalled(migration)
            number = run.done + 1
            if isinstance(error, asyncpg.ActiveSQLTransactionError):
                run.alone.add(run.done)  # our parse-tree list missed it; PostgreSQL knows
                return
            offset = statements[run.done].offset - positions.get(number, 0)
            raise await self._failure(
                migration, error, offset=offset, statement=number, resumed=run.resumed_at(number)
            ) from error
        run.done = end
        run.has_row = True
        run.recorded = end == len(statements)

    async def _journalled(self, migration: Migration) -> int:
        """How many statements the ledger says are done (after a block failed)."""
        done = await self.conn.fetchval(
            f"SELECT statements_done FROM {self.ledger.table} WHERE version = $1 AND NOT complete",
            migration.version,
        )
        return int(done or 0)

    async def _statement_on_its_own(
        self, migration: Migration, statement: Statement, number: int, *, resumed: bool
    ) -> None:
        """A statement PostgreSQL runs only outside a transaction block, then its step.

        Between the two is the one window left: a runner killed there leaves the
        statement done and the step not. So a resumed run first checks whether the
        effect is there: an index built and valid, an index dropped.
        """
        if number == 1 and not resumed:
            # No row yet: write one first, so that a run killed during this statement
            # leaves a row that makes the next run check the statement's effect.
            await self._step(migration, done=0)
        if statement.builds is not None:
            await self._drop_invalid_index(migration, statement)
        if resumed and await self._effect_present(statement):
            log.info(
                "statement_already_applied",
                version=migration.version,
                name=migration.name,
                statement=number,
            )
        else:
            try:
                await self.attempts.send(
                    migration,
                    statement.text,
                    journalled=True,
                    index_name=statement.builds.name if statement.builds else None,
                )
            except asyncpg.PostgresError as error:
                raise await self._failure(
                    migration, error, offset=statement.offset, statement=number, resumed=resumed
                ) from error
        await self._step(migration, done=number)

    async def _step(self, migration: Migration, *, done: int) -> None:
        step = self.ledger.step_statement(migration, done=done, applied_by=self.applied_by)
        await self.conn.execute(f"BEGIN;\n{step};\nCOMMIT;")  # session: synchronous_commit off

    async def _complete(self, run: _StatementRun, *, durable: bool) -> None:
        """Mark the migration complete when its last statement's message could not, and
        clean the session up in the same message."""
        prefix = "BEGIN;\n" + ("SET LOCAL synchronous_commit = on;\n" if durable else "")
        record = self.ledger.complete_statement(
            run.migration, applied_by=self.applied_by, execution_ms=ms_since(run.started)
        )
        await self.conn.execute(f"{prefix}{record};\nCOMMIT;\n{run.cleanup}")

    async def _effect_present(self, statement: Statement) -> bool:
        """True when a resumed statement's effect is already there: the index it builds
        exists and is valid, or the index it drops is gone."""
        index = statement.builds or statement.drops
        if index is None:
            return False
        row = await self.conn.fetchrow(_INDEX_STATE_QUERY, index.name, index.schema)
        if statement.builds is not None:
            return row is not None and bool(row["valid"])
        return row is None

    async def _drop_invalid_index(self, migration: Migration, statement: Statement) -> None:
        """A failed CREATE INDEX CONCURRENTLY leaves an INVALID index that IF NOT EXISTS
        would silently keep: drop it before building again."""
        index = statement.builds
        row = index and await self.conn.fetchrow(_INDEX_STATE_QUERY, index.name, index.schema)
        if row is None or row["valid"]:
            return
        try:
            await self.conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {row['name']}")
        except asyncpg.PostgresError as error:
            raise InvalidIndexError(
                f"{migration.filename}: index {row['name']} is INVALID (left by a failed "
                f"concurrent build) and could not be dropped: {error}; drop it by hand and "
                "run again",
                version=migration.version,
                location=migration.filename,
                sqlstate=error.sqlstate,
                applied=self.applied,
            ) from error
        log.warning("invalid_index_dropped", version=migration.version, index=row["name"])

    # --- sending, and what an error means -------------------------------------------

    async def _failure(
        self,
        migration: Migration,
        error: asyncpg.PostgresError,
        *,
        offset: int,
        statement: int | None = None,
        resumed: bool = False,
    ) -> MigrateError:
        """What a server error in a migration means, as the error to raise."""
        if statement is None:
            return await self.attempts.failure(migration, error, offset=offset)
        return await self._statement_failed(
            migration, error, offset=offset, statement=statement, resumed=resumed
        )

    async def _statement_failed(
        self,
        migration: Migration,
        error: asyncpg.PostgresError,
        *,
        offset: int,
        statement: int,
        resumed: bool,
    ) -> MigrateError:
        """Journal a no-transaction statement's failure; say what happened and what to do."""
        failure: MigrateError
        if resumed and error.sqlstate in EFFECT_ALREADY_THERE:
            failure = resumed_statement_already_done(
                migration,
                error,
                offset=offset,
                statement=statement,
                ledger_table=self.ledger.table,
                applied=self.applied,
            )
        else:
            failure = await self.attempts.failure(
                migration, error, offset=offset, statement=statement
            )
        await self.ledger.journal_failure(
            self.conn,
            migration,
            done=statement - 1,
            error=str(failure),
            applied_by=self.applied_by,
        )
        return failure

    def _applied(self, result: MigrationResult) -> None:
        self.applied.append(result)
        log.info(
            "migration_applied",
            version=result.version,
            name=result.name,
            duration_ms=result.duration_ms,
        )


def _warn_if_edited_since_failure(plan: MigrationPlan, migration: Migration, done: int) -> None:
    """Resuming skips the statements that ran; say so when the file changed since then."""
    row = next((entry.row for entry in plan.entries if entry.version == migration.version), None)
    if done and row is not None and row.checksum not in (None, migration.checksum):
        log.warning(
            "resuming_edited_migration",
            version=migration.version,
            name=migration.name,
            statements_already_run=done,
            hint=f"statements 1 to {done} are not run again; they must be unchanged",
        )


def _log_applying(migration: Migration, number: int, total: int) -> None:
    log.info(
        "migration_applying",
        version=version_of(migration),
        name=migration.name,
        n=number,
        of=total,
        transaction=not migration.directives.no_transaction,
    )


def _log_failed(migration: Migration, error: MigrationFailedError) -> None:
    log.error(
        "migration_failed",
        version=version_of(migration),
        name=migration.name,
        file=error.location,
        sqlstate=error.sqlstate,
        error=str(error),
    )
