"""Undoing applied migrations: the last one, the last K, or down to version N.

Newest first, each in its own transaction with the removal of its ledger row
(a down file marked ``-- natlangchain: no-transaction`` runs statement by
statement, for ``DROP INDEX CONCURRENTLY``, and its row goes once all ran). A
dry run takes no lock, changes nothing and returns the down SQL that would run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import asyncpg

from natlangchain_migrate import preflight
from natlangchain_migrate.apply import extension_schemas
from natlangchain_migrate.contract_ledger import contract_undos, undo_contract
from natlangchain_migrate.discovery import Migration, load_migrations, parse_directives
from natlangchain_migrate.errors import (
    ConfigurationError,
    FutureMigrationsError,
    MigrationFailedError,
)
from natlangchain_migrate.failures import migration_failed
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.locks import locked_connection
from natlangchain_migrate.plan import AppliedMigration, newest_version
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
) -> list[RollbackResult]:
    """Undo the last ``steps`` applied migrations, or every one above version ``to``.

    Without a down file only the row is removed and the schema stays as it is
    (the seed's old behaviour, with its warning). Returns what was undone,
    newest first; empty when nothing is applied.
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
    async with locked_connection(settings) as conn:
        rows = (await ledger.read(conn)).rows
        chosen = _choose(rows, steps=steps, to=to)
        _refuse_future(chosen, newest_version(loaded))
        if not chosen:
            log.info("rollback_nothing_applied", to=to)
            return []
        downs = [_down_of(row, migrations.get(row.version)) for row in chosen]
        # A version's contract part, if it ran, is undone first (refused without its file).
        versions = [row.version for row in chosen]
        undos = await contract_undos(conn, versions, migrations, settings.schema)
        settings = settings._replace(
            extension_schemas=await extension_schemas(conn, settings.schema)
        )
        _check_lock_mode(downs, settings)
        results = []
        for row, down in zip(chosen, downs, strict=True):
            undo = undos.get(row.version)
            if undo is not None:
                if not settings.dry_run:
                    await undo_contract(conn, undo, settings)
                results.append(RollbackResult(row.version, undo.name, True, undo.sql))
            if not settings.dry_run:
                await _undo(conn, ledger, row, down, settings)
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
    conn: asyncpg.Connection,
    ledger: Ledger,
    row: AppliedMigration,
    down: Migration | None,
    settings: RunSettings,
) -> None:
    search_path = f"SET search_path = {settings.search_path};\n"
    if down is not None and down.directives.no_transaction:
        await conn.execute(search_path)
        try:
            for statement in split_statements(down.filename, down.sql):
                await _run(conn, down, statement.text, offset=statement.offset)
            await ledger.remove(conn, row.version)
        finally:
            await conn.execute("RESET search_path")
    else:
        async with conn.transaction():
            if down is not None:
                prefix = "SET LOCAL " + search_path.removeprefix("SET ")
                await _run(conn, down, prefix + down.sql, offset=-len(prefix))
            await ledger.remove(conn, row.version)
    if down is None:
        log.warning(
            "rollback_record_only",
            version=row.version,
            name=row.name,
            warning="no down file: only the migration record was removed; the schema "
            "changes were NOT reversed",
        )
    else:
        log.info("rollback_done", version=row.version, name=row.name, file=down.filename)


async def _run(conn: asyncpg.Connection, down: Migration, sql: str, *, offset: int) -> None:
    try:
        await conn.execute(sql)
    except asyncpg.PostgresError as error:
        failure: MigrationFailedError = migration_failed(down, error, offset=offset, applied=[])
        log.error(
            "rollback_failed",
            version=down.version,
            file=failure.location,
            sqlstate=failure.sqlstate,
            error=str(failure),
        )
        raise failure from error
