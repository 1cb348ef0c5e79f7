"""Applying what is pending, under the lock: the run's two lock modes and the plan
decided again under the lock.

Session lock mode: each transactional file travels with its ledger row in one
message (BEGIN, settings, file, ledger upsert, COMMIT): one round trip, one
commit; a no-transaction file runs statement by statement with its journal
(journal.py). Transaction lock mode (PgBouncer): the lock, the ledger and every
pending migration in one transaction, each file in a savepoint of it; all of them
commit, or none.

Sending, retrying after PostgreSQL's ``lock_timeout`` and what a server error
means are one attempt's job (attempt.py), the same for up and down files.
"""

from __future__ import annotations

import time
from functools import partial

import asyncpg

from natlangchain_migrate import baseline_files, local_settings, telemetry
from natlangchain_migrate.attempt import (
    Attempts,
    Blocked,
    read_server_facts,
    settings_sql,
)
from natlangchain_migrate.connection import (
    RunConnection,
    application_name,
)
from natlangchain_migrate.discovery import Migration
from natlangchain_migrate.durations import ms_since
from natlangchain_migrate.errors import (
    BackfillThrottledError,
    LockRetriesExhaustedError,
    MigrationFailedError,
    PrivilegeError,
    TransactionControlError,
)
from natlangchain_migrate.events import log
from natlangchain_migrate.journal import StatementJournal
from natlangchain_migrate.ledger import Ledger, LedgerSnapshot
from natlangchain_migrate.locks import LockNoLongerNeeded, holding, migration_lock
from natlangchain_migrate.pending import Sources, decide, face_future, plan_of
from natlangchain_migrate.plan import MigrationPlan, newest_version
from natlangchain_migrate.repeatables import is_repeatable, version_of
from natlangchain_migrate.results import MigrationResult
from natlangchain_migrate.settings import CallArguments, LockMode, RunnerOptions, ServerFacts
from natlangchain_migrate.sqltext import quote_ident


async def apply_pending(
    connection: RunConnection,
    ledger: Ledger,
    sources: Sources,
    options: RunnerOptions,
    call: CallArguments,
    *,
    warned_future: set[int | str] | None = None,
) -> list[MigrationResult]:
    """Take the lock, plan again under it, apply what is still pending (the versioned
    migrations, then the new or changed repeatables); return what this run applied, in
    order. A waiter that sees the work done by another runner leaves without the lock and
    returns nothing. ``warned_future`` holds the future versions the run has warned of;
    a newer release's rows that appear meanwhile are warned of once and added."""
    facts = await read_server_facts(connection.conn, options.schema)
    applier = _Applier(connection, ledger, sources, options, call, facts)
    if warned_future is not None:
        applier.warned_future = warned_future
    try:
        if options.transaction_pooling:
            await applier.apply_in_one_transaction()
        else:
            await applier.apply_each()
    except LockNoLongerNeeded:
        log.info("applied_by_another_runner", lock_key=applier.lock.key)
    return applier.applied


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
        # Each pending migration's file, for the events a person reads ("Applied: FILE").
        self.filenames: dict[str, str] = {}
        self.warned_future: set[int | str] = set()
        # Recorded with each repeatable: an older release leaves a newer one's alone.
        self.release = newest_version(sources.migrations)
        # The ledger's DDL when a new database's baseline file creates it (_file).
        self.ledger_ddl: str | None = None
        self.lock = migration_lock(self.conn, options, unless=self._nothing_left)
        self.attempts = Attempts(
            connection, options.execution, schema=options.schema, applied=self.applied
        )
        self.journal = StatementJournal(
            self.attempts,
            ledger,
            options.execution,
            search_path=self.search_path,
            applied_by=self.applied_by,
            transaction_timeout=facts.transaction_timeout,
        )

    # --- the two lock modes ---------------------------------------------------------

    async def apply_each(self) -> None:
        """Session lock: each migration in its own transaction (or statement by statement)."""
        async with holding(self.lock, LockMode.SESSION):
            plan = await self._ensure_and_replan(session=True)
            for number, migration in enumerate(plan.pending, start=1):
                self._log_applying(migration, number, len(plan.pending))
                last = number == len(plan.pending)
                with telemetry.migration_span(migration) as span:
                    try:
                        if migration.directives.no_transaction:
                            duration = await self.journal.run(migration, plan, last=last)
                        elif migration.directives.backfill:
                            duration = await self.attempts.retrying(
                                partial(self._backfill, migration)
                            )
                        else:
                            duration = await self.attempts.retrying(
                                partial(self._file, migration, last)
                            )
                    except MigrationFailedError as error:
                        _log_failed(migration, error)
                        raise
                    telemetry.migration_applied(span, duration)
                self._applied(
                    MigrationResult(
                        version_of(migration), migration.name, duration, file=migration.filename
                    )
                )

    async def apply_in_one_transaction(self) -> None:
        """Transaction lock: the lock, the ledger and every pending migration in one
        transaction. A lock_timeout anywhere rolls the whole batch back and it is retried
        whole."""

        async def batch() -> list[MigrationResult]:
            done: list[MigrationResult] = []
            async with holding(self.lock, LockMode.TRANSACTION):
                plan = await self._ensure_and_replan()
                for number, migration in enumerate(plan.pending, start=1):
                    self._log_applying(migration, number, len(plan.pending))
                    with telemetry.migration_span(migration) as span:  # ends before COMMIT
                        try:
                            duration = await self._file_in_open_transaction(migration)
                        except MigrationFailedError as error:
                            _log_failed(migration, error)
                            raise
                        telemetry.migration_applied(span, duration)
                    done.append(
                        MigrationResult(
                            version_of(migration),
                            migration.name,
                            duration,
                            file=migration.filename,
                        )
                    )
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
        """While waiting for the lock: has another runner applied everything? (A newer
        release's rows are warned of, or refused, here too.)"""
        plan = plan_of(self.sources, await self._read(), self.call, schema=self.options.schema)
        face_future(plan, refuse=self.options.refuse_future, warned=self.warned_future)
        return not plan.pending

    async def _ensure_and_replan(self, *, session: bool = False) -> MigrationPlan:
        """Read the ledger again (another runner may have just finished), create or adopt
        it, and plan anew.

        In session lock mode (``session``) the ledger is read first: a new database whose
        plan starts with a baseline file sent in one message creates the ledger in that
        file's transaction (``_file``), one commit fewer, and a failed baseline leaves
        nothing, not even an empty ledger; a ledger created here is empty, so it is not
        read again. In the lock's transaction (transaction lock mode) a read of a missing
        table would abort it: both tables are made first there."""
        if not session:
            await self._ensure()
            if self.sources.repeatables:
                await self.ledger.ensure_repeatables(self.conn)
        snapshot = await self._read()
        if session and snapshot.exists and await self._ensure():  # columns added or widened
            snapshot = await self._read()
        # Decided again: another runner may have applied something (a higher version too).
        plan = decide(
            self.sources,
            snapshot,
            self.call,
            strict_order=self.options.strict_order,
            refuse_future=self.options.refuse_future,
            warned=self.warned_future,
            schema=self.options.schema,
        )
        if not snapshot.exists:
            first = plan.pending[0] if plan.pending else None
            # schema_repeatables is made before the baseline runs: then the ledger is too.
            in_message = first is not None and baseline_files.sent_in_one_message(first)
            if in_message and not self.sources.repeatables:
                self.ledger_ddl = await self.ledger.create_sql(
                    self.conn, widest=self._widest(), has_schema=snapshot.has_schema
                )
            else:
                await self._ensure()
        if session and self.sources.repeatables:
            await self.ledger.ensure_repeatables(self.conn)
        return plan

    def _widest(self) -> int:
        versions = [m.version for m in (*self.sources.migrations, *self.sources.baselines)]
        return max(versions, default=0)

    async def _ensure(self) -> list[str]:
        """Create or adopt the ledger; the columns added to an existing one."""
        try:
            added = await self.ledger.ensure(self.conn, widest=self._widest())
        except asyncpg.InsufficientPrivilegeError as error:
            raise await self._may_not_create(error) from error
        if added:
            log.info("ledger_adopted", columns_added=added)
        return added

    async def _may_not_create(self, error: asyncpg.PostgresError) -> PrivilegeError:
        role = await self.conn.fetchval("SELECT current_user")
        schema = quote_ident(self.options.schema)
        return PrivilegeError(
            f"role {role} may not create the ledger {self.ledger.table}: {error}. Create "
            f"the schema and let the role use it (CREATE SCHEMA IF NOT EXISTS {schema}; "
            f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {role};), then run again"
        )

    async def _begin_with_ledger(self, ledger_ddl: str) -> None:
        """Open a baseline file's transaction with the ledger's creation (its own message,
        so that a privilege error is the ledger's, not the file's)."""
        try:
            await self.conn.execute(f"BEGIN; {ledger_ddl}")
        except asyncpg.PostgresError as error:
            if not self.conn.is_closed() and self.conn.is_in_transaction():
                await self.conn.execute("ROLLBACK")
            if isinstance(error, asyncpg.InsufficientPrivilegeError):
                raise await self._may_not_create(error) from error
            raise

    # --- transactional files --------------------------------------------------------

    async def _file(self, migration: Migration, last: bool) -> float:
        """The file and its ledger row in one message; return its duration in ms.

        All but the run's last migration commit with synchronous_commit off and the
        last one flushes them all, so everything is durable when the run returns; a
        crash before then can only lose whole migrations (file and row together),
        which the next run applies.
        """
        settings = settings_sql(
            migration,
            self.execution,
            self.search_path,
            local=True,
            durable=last,
            transaction_timeout=self.transaction_timeout,
        )
        prefix = "BEGIN;\n" + settings
        started = time.monotonic()
        if migration.source is not None:  # big, or with COPY data: in pieces
            # Imported here: the scanner's regular expressions cost a start-up that
            # applies only small files a few ms to compile.
            from natlangchain_migrate.streamed import run_streamed

            await run_streamed(
                self.attempts,
                migration,
                prefix=prefix,
                record=lambda checksum: (
                    f"{self._record(migration, 'transaction_timestamp()', checksum)};\nCOMMIT;"
                ),
                own_transaction=True,
            )
            return ms_since(started)
        sent = prefix
        if self.ledger_ddl is not None and migration.baseline_covers is not None:
            # A new database's baseline file: the ledger is created in its transaction,
            # and rolled back with it (send rolls back what a failed message left open).
            await self._begin_with_ledger(self.ledger_ddl)
            sent = settings
        script = f"{sent}{self._file_and_record(migration)};\nCOMMIT;"
        try:
            await self.attempts.send(migration, script)
        except asyncpg.PostgresError as error:
            raise await self.attempts.failure(
                migration, error, offset=-len(sent), replay=prefix
            ) from error
        self.ledger_ddl = None
        if self.conn.is_in_transaction():
            await self.conn.execute("ROLLBACK")
            raise TransactionControlError(
                f"{migration.filename} left its transaction open (does it contain BEGIN?); "
                "it was rolled back: remove transaction control from the file, or make it a "
                "no-transaction migration"
            )
        return ms_since(started)

    async def _backfill(self, migration: Migration) -> float:
        """A batched backfill: a short transaction per batch (backfill.py); a lock_timeout
        is retried like a file's, from the last committed batch."""
        from natlangchain_migrate import backfill

        started = time.monotonic()
        try:
            await backfill.run(
                self.conn,
                migration,
                schema=self.options.schema,
                record_sql=self._record(migration),
                settings_sql=settings_sql(migration, self.execution, self.search_path, local=True),
                progress_interval=self.execution.progress_interval,
                statement_timeout_s=_seconds_or_none(
                    migration.directives.statement_timeout or self.execution.statement_timeout
                ),
            )
        except asyncpg.LockNotAvailableError as error:
            raise Blocked(migration, []) from error
        except backfill.ThrottledTooLong as gave_up:
            raise BackfillThrottledError(
                str(gave_up), location=migration.filename, applied=self.applied
            ) from None
        except backfill.BatchError as failed:
            cause = failed.error
            raise await self.attempts.failure(migration, cause, offset=failed.offset) from cause
        except asyncpg.PostgresError as error:
            raise await self.attempts.failure(migration, error, offset=0) from error
        return ms_since(started)

    async def _file_in_open_transaction(self, migration: Migration) -> float:
        """The file and its ledger row in a savepoint of the batch's open transaction, so
        that a failure is located by a replay there (attempt.py); what the file sets
        ends with it (local_settings.py)."""
        settings = settings_sql(
            migration,
            self.execution,
            self.search_path,
            local=True,
            transaction_timeout=self.transaction_timeout,
        )
        started = time.monotonic()
        if migration.source is not None:  # its pieces' made-up settings noted as they go
            from natlangchain_migrate.streamed import run_streamed  # see _file

            custom: set[str] = set()
            await run_streamed(
                self.attempts,
                migration,
                prefix=settings + local_settings.settings_kept_sql(),
                record=lambda checksum: (
                    local_settings.settings_restored_sql(settings, custom)
                    + self._record(migration, checksum=checksum)
                ),
                own_transaction=False,
                custom=custom,
                savepoint=_SAVEPOINT,
            )
            return ms_since(started)
        prefix, restore = local_settings.around(settings, migration.sql)
        body = self._file_and_record(migration, restore)
        await self.attempts.send_in_savepoint(migration, prefix, body, savepoint=_SAVEPOINT)
        return ms_since(started)

    def _file_and_record(self, migration: Migration, restore: str = "") -> str:
        # The newline ends a trailing "--" comment; the lone ";" ends a last statement
        # that has none.
        return f"{migration.sql}\n;\n{restore}{self._record(migration)}"

    def _record(
        self,
        migration: Migration,
        since: str = "statement_timestamp()",
        checksum: str | None = None,
    ) -> str:
        """The ledger row; ``checksum``, when given, is what a streamed file's read found."""
        if is_repeatable(migration):
            return self.ledger.record_repeatable_sql(
                migration, applied_by=self.applied_by, release=self.release
            )
        if migration.baseline_covers is not None:  # a row for each version it stands for
            if checksum is not None:  # a streamed baseline: what its applying pass read
                migration = Migration(*migration)._replace(checksum=checksum)
            return self.ledger.record_many_sql(
                baseline_files.ledger_rows(migration),
                applied_by=baseline_files.applied_by(migration),
                since=since,
            )
        return self.ledger.record_sql(
            migration, applied_by=self.applied_by, since=since, checksum=checksum
        )

    def _applied(self, result: MigrationResult) -> None:
        self.applied.append(result)
        log.info(
            "migration_applied",
            version=result.version,
            name=result.name,
            file=self.filenames.get(result.name, f"{result.name}.sql"),
            duration_ms=result.duration_ms,
        )

    def _log_applying(self, migration: Migration, number: int, total: int) -> None:
        """``file`` as it is in the folder: a name is not always NNN_name.sql (prisma's
        ``<folder>/migration.sql``, golang-migrate's ``.up.sql``)."""
        self.filenames[migration.name] = migration.filename
        log.info(
            "migration_applying",
            version=version_of(migration),
            name=migration.name,
            file=migration.filename,
            n=number,
            of=total,
            transaction=not migration.directives.no_transaction,
        )


# Each file's savepoint in transaction lock mode (a file may not name one: statements.py).
_SAVEPOINT = "natlangchain_migrate_file"


def _log_failed(migration: Migration, error: MigrationFailedError) -> None:
    log.error(
        "migration_failed",
        version=version_of(migration),
        name=migration.name,
        file=error.location,
        sqlstate=error.sqlstate,
        error=str(error),
    )


def _seconds_or_none(duration: str | None) -> float | None:
    """A statement_timeout in seconds; None when unset or 0 (no limit)."""
    from natlangchain_migrate.durations import seconds

    value = seconds(duration) if duration else 0.0
    return value or None
