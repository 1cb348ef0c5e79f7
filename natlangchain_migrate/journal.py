"""A no-transaction migration, run statement by statement with its journal in the
ledger: the riskiest code of the runner, in a file of its own.

Each statement that PostgreSQL allows in a transaction block is a block ``BEGIN;
<statement>; <journal step>; COMMIT;``: statement and step commit together or not at
all, so a runner killed at any moment leaves the journal exactly in step with the
database. The few statements that must run on their own (CREATE INDEX CONCURRENTLY,
VACUUM, ...) have their effect checked when a resumed run comes back to them.
"""

from __future__ import annotations

import secrets
import time
from functools import partial

import asyncpg

from natlangchain_migrate.attempt import Attempts, Blocked, reset_settings_sql, settings_sql
from natlangchain_migrate.connection import cleanup_scope, end_interrupted_transaction
from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.durations import ms_since
from natlangchain_migrate.errors import InvalidIndexError, MigrateError
from natlangchain_migrate.events import log
from natlangchain_migrate.failures import (
    EFFECT_ALREADY_THERE,
    resumed_statement_already_done,
)
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.plan import MigrationPlan
from natlangchain_migrate.settings import ExecutionOptions
from natlangchain_migrate.statements import Statement, split_statements

_INDEX_STATE_QUERY = """
SELECT format('%I.%I', n.nspname, c.relname) AS name, i.indisvalid AS valid
FROM pg_class c
JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = $1 AND n.nspname = coalesce($2, current_schema())
"""


class StatementRun:
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


class StatementJournal:
    """Runs no-transaction files on the run's connection, journalling each statement."""

    def __init__(
        self,
        attempts: Attempts,
        ledger: Ledger,
        execution: ExecutionOptions,
        *,
        search_path: str,
        applied_by: str,
        transaction_timeout: bool = False,
    ) -> None:
        self.attempts = attempts
        self.conn = attempts.conn
        self.ledger = ledger
        self.execution = execution
        self.search_path = search_path
        self.transaction_timeout = transaction_timeout  # the server has it: turned off
        self.applied_by = applied_by
        self.applied = attempts.applied  # what the run applied before: every error carries it

    async def run(self, migration: Migration, plan: MigrationPlan, *, last: bool) -> float:
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
        run = StatementRun(
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
            + self.ledger.prepare_step_sql(run.step_name)
        )
        try:
            if run.stopped_at is not None:
                log.info(
                    "migration_resuming",
                    version=migration.version,
                    name=migration.name,
                    file=migration.filename,
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

    async def _blocks(self, run: StatementRun) -> None:
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
                step = self.ledger.complete_sql(
                    migration, applied_by=self.applied_by, execution_ms=ms_since(run.started)
                )
            elif index == start and not run.has_row:
                step = self.ledger.step_sql(migration, done=number, applied_by=self.applied_by)
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
                file=migration.filename,
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
        step = self.ledger.step_sql(migration, done=done, applied_by=self.applied_by)
        await self.conn.execute(f"BEGIN;\n{step};\nCOMMIT;")  # session: synchronous_commit off

    async def _complete(self, run: StatementRun, *, durable: bool) -> None:
        """Mark the migration complete when its last statement's message could not, and
        clean the session up in the same message."""
        prefix = "BEGIN;\n" + ("SET LOCAL synchronous_commit = on;\n" if durable else "")
        record = self.ledger.complete_sql(
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
        log.warning(
            "invalid_index_dropped",
            version=migration.version,
            file=migration.filename,
            index=row["name"],
        )

    async def _failure(
        self,
        migration: Migration,
        error: asyncpg.PostgresError,
        *,
        offset: int,
        statement: int,
        resumed: bool,
    ) -> MigrateError:
        """What a server error in statement ``statement`` means, as the error to raise:
        a missing privilege, else the statement's failure, journalled."""
        if isinstance(error, asyncpg.InsufficientPrivilegeError):
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


def _warn_if_edited_since_failure(plan: MigrationPlan, migration: Migration, done: int) -> None:
    """Resuming skips the statements that ran; say so when the file changed since then."""
    row = next((entry.row for entry in plan.entries if entry.version == migration.version), None)
    if done and row is not None and row.checksum not in (None, migration.checksum):
        log.warning(
            "resuming_edited_migration",
            version=migration.version,
            name=migration.name,
            file=migration.filename,
            statements_already_run=done,
            hint=f"statements 1 to {done} are not run again; they must be unchanged",
        )
