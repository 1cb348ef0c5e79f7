"""Undoing applied migrations: the last one, the last K, or down to version N.

Newest first, each in its own transaction with the removal of its ledger row
(a down file marked ``-- natlangchain: no-transaction`` runs statement by
statement, for ``DROP INDEX CONCURRENTLY``, and its row goes once all ran). Down
files run as up files do, through one attempt (attempt.py): PostgreSQL's
lock_timeout with retries, statement_timeout, the progress watcher. A dry run
takes no lock, changes nothing and returns the down SQL that would run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import NamedTuple

import asyncpg

from natlangchain_migrate import preflight
from natlangchain_migrate.attempt import (
    Attempts,
    read_server_facts,
    reset_settings_sql,
    settings_sql,
)
from natlangchain_migrate.baseline_files import load_baselines, refuse_rollback_below
from natlangchain_migrate.connection import RunConnection
from natlangchain_migrate.contract_ledger import ContractLedger, contract_undos
from natlangchain_migrate.directives import parse_directives
from natlangchain_migrate.discovery import Migration, load_migrations
from natlangchain_migrate.errors import (
    ConfigurationError,
    FutureMigrationsError,
    MigrationFailedError,
)
from natlangchain_migrate.events import log
from natlangchain_migrate.layout_migrations import as_the_tool_runs
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.locks import locked_connection
from natlangchain_migrate.plan import AppliedMigration, newest_version
from natlangchain_migrate.settings import RunnerOptions, ServerFacts
from natlangchain_migrate.statements import split_statements

_SAVEPOINT = "natlangchain_migrate_down"


class RollbackResult(NamedTuple):
    """One migration undone (or, in a dry run, that would be): whether a down file ran,
    and its SQL."""

    version: int
    name: str
    ran_down_file: bool
    down_sql: str | None = None


async def rollback(
    options: RunnerOptions, *, steps: int = 1, to: int | None = None, dry_run: bool = False
) -> list[RollbackResult]:
    """Undo the last ``steps`` applied migrations, or every one above version ``to``,
    newest first, under the migration lock (a dry run takes none and changes nothing)."""
    if steps < 1:
        raise ConfigurationError(f"--steps {steps}: give a number of migrations, 1 or more")
    if to is not None and to < 0:  # refused before the lock, like every setting
        raise ConfigurationError(
            f"--to {to}: give the version to keep as the newest, or 0 to undo every migration"
        )
    loaded = load_migrations(options.migrations_dir)
    baselines = load_baselines(options.migrations_dir)
    preflight.check_options(loaded, options)
    migrations = {m.version: m for m in loaded}
    ledger = Ledger(options.schema)
    async with locked_connection(options, dry_run=dry_run) as connection:
        rows = (await ledger.read(connection.conn)).rows
        chosen = _choose(rows, steps=steps, to=to)
        refuse_rollback_below(
            [(row.version, row.name) for row in chosen], set(migrations), baselines
        )
        _refuse_future(chosen, newest_version([*loaded, *baselines]))
        if not chosen:
            log.info("rollback_nothing_applied", to=to)
            return []
        downs = [_down_of(row, migrations.get(row.version)) for row in chosen]
        # A version's contract part, if it ran, is undone first (refused without its file).
        versions = [row.version for row in chosen]
        contract_downs = await contract_undos(connection.conn, versions, migrations, options.schema)
        _check_lock_mode(downs, options)
        preflight.check_client_only([down for down in downs if down is not None])
        preflight.check_transaction_control([down for down in downs if down is not None])
        undo = None
        if not dry_run:
            facts = await read_server_facts(connection.conn, options.schema)
            undo = _Undo(connection, ledger, options, facts)
        results = []
        for row, down in zip(chosen, downs, strict=True):
            contract_down = contract_downs.get(row.version)
            if contract_down is not None:
                if undo is not None:
                    await undo.contract_part(contract_down)
                results.append(
                    RollbackResult(row.version, contract_down.name, True, contract_down.sql)
                )
            if undo is not None:
                await undo.one(row, down, migrations.get(row.version))
            results.append(
                RollbackResult(row.version, row.name, down is not None, down.sql if down else None)
            )
        return results


def _choose(rows: list[AppliedMigration], *, steps: int, to: int | None) -> list[AppliedMigration]:
    newest_first = sorted(rows, key=lambda row: row.version, reverse=True)
    if to is None:
        return newest_first[:steps]
    if to != 0 and to not in {row.version for row in rows}:
        applied = ", ".join(str(row.version) for row in reversed(newest_first)) or "none"
        raise ConfigurationError(
            f"--to {to} is not an applied version (applied: {applied}); give the version to "
            "keep as the newest, or 0 to undo every migration"
        )
    return [row for row in newest_first if row.version > to]


def _refuse_future(chosen: list[AppliedMigration], newest: int | None) -> None:
    """A row above the newest file was applied by a newer release: without its file this
    one could only forget the row, and that release would then run it again."""
    ahead = [row for row in chosen if newest is None or row.version > newest]
    if ahead:
        named = ", ".join(f"{row.version:03d} ({row.name})" for row in ahead)
        raise FutureMigrationsError(
            f"the rollback would undo {named}, applied by a newer release (the newest file "
            f"here is {newest or 0:03d}); this release has no file to undo it with and would "
            "only drop its record, so that release would run it again. Roll it back with the "
            "release that ships it (its down file undoes it); nothing was changed",
            versions=[row.version for row in ahead],
        )


def _down_of(row: AppliedMigration, migration: Migration | None) -> Migration | None:
    """The down file as a Migration of its own, so its errors point into it."""
    if migration is None or migration.down_file is None:
        return None
    sql = migration.down_sql or ""
    filename = migration.down_file.name
    directives = parse_directives(filename, sql)
    # A golang-migrate or prisma down file means what its tool makes of it, as its up file.
    sql, directives = as_the_tool_runs(migration.layout, filename, sql, directives)
    return Migration(
        version=row.version,
        name=filename.removesuffix(".sql"),
        filename=filename,
        sql=sql,
        checksum="",
        directives=directives,
        layout=migration.layout,
    )


def _check_lock_mode(downs: list[Migration | None], options: RunnerOptions) -> None:
    for down in downs:
        if down is not None and down.directives.no_transaction and options.transaction_pooling:
            raise ConfigurationError(
                f"{down.filename} runs without a transaction, which cannot work through "
                "PgBouncer's transaction pooling (--lock-mode transaction); run the rollback "
                "with --lock-mode session against the server directly"
            )


@contextmanager
def _failure_logged(down: Migration) -> Iterator[None]:
    """Log ``rollback_failed`` for a down file that failed, and let its error go on."""
    try:
        yield
    except MigrationFailedError as failure:
        log.error(
            "rollback_failed",
            version=down.version,
            file=failure.location,
            sqlstate=failure.sqlstate,
            error=str(failure),
        )
        raise


class _Undo:
    """Undoing migrations one by one on the run's connection, under the run's execution
    options (lock_timeout with retries, statement_timeout, the watcher), as up files run."""

    def __init__(
        self,
        connection: RunConnection,
        ledger: Ledger,
        options: RunnerOptions,
        facts: ServerFacts,
    ) -> None:
        self.conn = connection.conn
        self.ledger = ledger
        self.execution = options.execution
        self.search_path = facts.search_path(options.schema)
        self.transaction_timeout = facts.transaction_timeout
        self.in_open_transaction = options.transaction_pooling  # the lock's transaction
        self.attempts = Attempts(connection, options.execution, schema=options.schema, applied=[])
        self.contracts = ContractLedger(options.schema)

    async def contract_part(self, down: Migration) -> None:
        """Undo a contract part: its ``.contract.down.sql`` and the removal of its
        ``schema_contracts`` row, in one transaction, before its expand part."""
        remove = self.contracts.remove_sql(down.version)
        with _failure_logged(down):
            await self.attempts.retrying(partial(self._in_one_transaction, down, remove))
        log.info("contract_rolled_back", version=down.version, name=down.name, file=down.filename)

    async def one(
        self, row: AppliedMigration, down: Migration | None, up: Migration | None = None
    ) -> None:
        """Undo one migration: its down file and the removal of its row (only the row,
        named by ``up``'s file, when there is no down file)."""
        if down is None:
            await self.ledger.remove(self.conn, row.version)
            log.warning(
                "rollback_record_only",
                version=row.version,
                name=row.name,
                file=up.filename if up is not None else None,
                warning="no down file: only the migration record was removed; the schema "
                "changes were NOT reversed",
            )
            return
        with _failure_logged(down):
            if down.directives.no_transaction:
                await self._statement_by_statement(down)
            else:
                await self.attempts.retrying(partial(self._in_one_transaction, down))
        log.info("rollback_done", version=row.version, name=row.name, file=down.filename)

    async def _in_one_transaction(self, down: Migration, remove: str | None = None) -> None:
        """The down file and the removal of its row in one message: one commit. In
        transaction lock mode it runs in a savepoint of the lock's transaction, so an
        attempt cancelled by lock_timeout is undone alone and tried again."""
        prefix = settings_sql(
            down,
            self.execution,
            self.search_path,
            local=True,
            transaction_timeout=self.transaction_timeout,
        )
        body = f"{down.sql}\n;\n{remove or self.ledger.remove_sql(down.version)};\n"
        savepoint = _SAVEPOINT if self.in_open_transaction else None
        await self.attempts.send_one_commit(down, prefix, body, savepoint=savepoint, replay=True)

    async def _statement_by_statement(self, down: Migration) -> None:
        """A no-transaction down file: each statement on its own, retried after a
        lock_timeout; the row goes once all ran."""
        await self.conn.execute(
            settings_sql(
                down,
                self.execution,
                self.search_path,
                local=False,
                transaction_timeout=self.transaction_timeout,
            )
        )
        try:
            for statement in split_statements(down.filename, down.sql):
                try:
                    await self.attempts.retrying(partial(self.attempts.send, down, statement.text))
                except asyncpg.PostgresError as error:
                    raise await self.attempts.failure(
                        down, error, offset=statement.offset
                    ) from error
            await self.ledger.remove(self.conn, down.version)
        finally:
            if not self.conn.is_closed():
                await self.conn.execute(
                    reset_settings_sql(transaction_timeout=self.transaction_timeout)
                )
