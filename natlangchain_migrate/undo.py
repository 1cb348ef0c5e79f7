"""Undoing applied migrations: the last one, the last K, or down to version N.

Newest first, each in its own transaction with the removal of its ledger row
(a down file marked ``-- natlangchain: no-transaction`` runs statement by
statement, for ``DROP INDEX CONCURRENTLY``, and its row goes once all ran). A
dry run takes no lock, changes nothing and returns the down SQL that would run.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import asyncpg

from natlangchain_migrate import preflight
from natlangchain_migrate.apply import extension_schemas
from natlangchain_migrate.attempt import RESET_SETTINGS_SQL, Attempts, Blocked, settings_sql
from natlangchain_migrate.discovery import Migration, load_migrations, parse_directives
from natlangchain_migrate.errors import ConfigurationError, MigrationFailedError
from natlangchain_migrate.failures import migration_failed
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.locks import locked_connection
from natlangchain_migrate.plan import AppliedMigration
from natlangchain_migrate.settings import RunSettings
from natlangchain_migrate.statements import split_statements

if TYPE_CHECKING:
    from importlib.abc import Traversable

from natlangchain_migrate.events import log


class RollbackResult(NamedTuple):
    """One migration undone (or, in a dry run, that would be): whether a down file ran,
    and its SQL."""

    version: int
    name: str
    ran_down_file: bool
    down_sql: str | None = None


async def rollback(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    steps: int = 1,
    to: int | None = None,
    dry_run: bool = False,
    lock_timeout: float = 300.0,
    lock_namespace: str | None = None,
    wait: float = 0.0,
    lock_mode: str = "session",
    pg_lock_timeout: str = "5s",
    statement_timeout: str | None = None,
    lock_retries: int = 5,
    retry_delay: float = 1.0,
    progress_interval: float = 5.0,
) -> list[RollbackResult]:
    """Undo the last ``steps`` applied migrations, or every one above version ``to``.

    Without a down file only the row is removed and the schema stays as it is
    (the seed's old behaviour, with its warning). Down files run as up files do:
    under ``pg_lock_timeout`` with ``lock_retries``, ``statement_timeout`` and the
    progress watcher. Returns what was undone, newest first; empty when nothing is
    applied.
    """
    settings = RunSettings(
        dsn=dsn,
        pool=pool,
        migrations_dir=migrations_dir,
        schema=schema,
        dry_run=dry_run,
        lock_wait=lock_timeout,
        lock_namespace=lock_namespace,
        connect_wait=wait,
        lock_mode=lock_mode,
        pg_lock_timeout=pg_lock_timeout,
        statement_timeout=statement_timeout,
        lock_retries=lock_retries,
        retry_delay=retry_delay,
        progress_interval=progress_interval,
    )
    return await roll_back(settings, steps=steps, to=to)


async def roll_back(
    settings: RunSettings, *, steps: int = 1, to: int | None = None
) -> list[RollbackResult]:
    """``rollback()`` from the run's settings."""
    if steps < 1:
        raise ConfigurationError(f"--steps {steps}: give a number of migrations, 1 or more")
    if to is not None and to < 0:  # refused before the lock, like every setting
        raise ConfigurationError(
            f"--to {to}: give the version to keep as the newest, or 0 to undo every migration"
        )
    loaded = load_migrations(settings.migrations_dir)
    preflight.check_settings(loaded, settings)
    migrations = {m.version: m for m in loaded}
    ledger = Ledger(settings.schema)
    async with locked_connection(settings) as connection:
        rows = (await ledger.read(connection.conn)).rows
        chosen = _choose(rows, steps=steps, to=to)
        if not chosen:
            log.info("rollback_nothing_applied", to=to)
            return []
        downs = [_down_of(row, migrations.get(row.version)) for row in chosen]
        settings = settings._replace(
            extension_schemas=await extension_schemas(connection.conn, settings.schema)
        )
        _check_lock_mode(downs, settings)
        if settings.dry_run:
            return [
                RollbackResult(row.version, row.name, down is not None, down.sql if down else None)
                for row, down in zip(chosen, downs, strict=True)
            ]
        results = []
        attempts = Attempts(connection, settings, [])
        for row, down in zip(chosen, downs, strict=True):
            await _undo(attempts, ledger, row, down, settings)
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


def _down_of(row: AppliedMigration, migration: Migration | None) -> Migration | None:
    """The down file as a Migration of its own, so its errors point into it."""
    if migration is None or migration.down_file is None:
        return None
    sql = migration.down_sql or ""
    filename = migration.down_file.name
    return Migration(
        version=row.version,
        name=filename.removesuffix(".sql"),
        filename=filename,
        sql=sql,
        checksum="",
        directives=parse_directives(filename, sql),
    )


def _check_lock_mode(downs: list[Migration | None], settings: RunSettings) -> None:
    for down in downs:
        if down is not None and down.directives.no_transaction and settings.transaction_pooling:
            raise ConfigurationError(
                f"{down.filename} runs without a transaction, which cannot work through "
                "PgBouncer's transaction pooling (--lock-mode transaction); run the rollback "
                "with --lock-mode session against the server directly"
            )


async def _undo(
    attempts: Attempts,
    ledger: Ledger,
    row: AppliedMigration,
    down: Migration | None,
    settings: RunSettings,
) -> None:
    """Undo one migration under the run's execution settings (lock_timeout with retries,
    statement_timeout, the watcher), as its up file ran."""
    if down is None:
        await ledger.remove(attempts.conn, row.version)
        log.warning(
            "rollback_record_only",
            version=row.version,
            name=row.name,
            warning="no down file: only the migration record was removed; the schema "
            "changes were NOT reversed",
        )
        return
    try:
        if down.directives.no_transaction:
            await _statement_by_statement(attempts, ledger, down, settings)
        else:
            await attempts.retrying(partial(_in_one_transaction, attempts, ledger, down, settings))
    except MigrationFailedError as failure:
        log.error(
            "rollback_failed",
            version=down.version,
            file=failure.location,
            sqlstate=failure.sqlstate,
            error=str(failure),
        )
        raise
    log.info("rollback_done", version=row.version, name=row.name, file=down.filename)


async def _in_one_transaction(
    attempts: Attempts, ledger: Ledger, down: Migration, settings: RunSettings
) -> None:
    """The down file and the removal of its row in one message: one commit. In
    transaction lock mode it runs in a savepoint of the lock's transaction, so an attempt
    cancelled by lock_timeout is undone alone and tried again."""
    prefix = settings_sql(down, settings, settings.search_path, local=True)
    body = f"{down.sql}\n;\n{ledger.remove_sql(down.version)};\n"
    in_open_transaction = settings.transaction_pooling
    if in_open_transaction:
        prefix = "SAVEPOINT natlangchain_down;\n" + prefix
        script = f"{prefix}{body}RELEASE SAVEPOINT natlangchain_down;"
    else:
        prefix = "BEGIN;\n" + prefix
        script = f"{prefix}{body}COMMIT;"
    try:
        await attempts.send(down, script, in_open_transaction=in_open_transaction)
    except (Blocked, asyncpg.PostgresError) as error:
        if in_open_transaction and not attempts.conn.is_closed():
            await attempts.conn.execute("ROLLBACK TO SAVEPOINT natlangchain_down")
        if isinstance(error, Blocked):
            raise
        raise _failed(down, error, offset=-len(prefix)) from error


async def _statement_by_statement(
    attempts: Attempts, ledger: Ledger, down: Migration, settings: RunSettings
) -> None:
    """A no-transaction down file: each statement on its own, retried after a lock_timeout;
    the row goes once all ran."""
    await attempts.conn.execute(settings_sql(down, settings, settings.search_path, local=False))
    try:
        for statement in split_statements(down.filename, down.sql):
            try:
                await attempts.retrying(partial(attempts.send, down, statement.text))
            except asyncpg.PostgresError as error:
                raise _failed(down, error, offset=statement.offset) from error
        await ledger.remove(attempts.conn, down.version)
    finally:
        if not attempts.conn.is_closed():
            await attempts.conn.execute(RESET_SETTINGS_SQL)


def _failed(down: Migration, error: asyncpg.PostgresError, *, offset: int) -> MigrationFailedError:
    return migration_failed(down, error, offset=offset, applied=[])
