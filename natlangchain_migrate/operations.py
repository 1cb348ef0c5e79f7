"""The other things a user does to the ledger: look at it, roll back, repair."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import asyncpg
import structlog

from natlangchain_migrate import preflight
from natlangchain_migrate.connection import open_run_connection
from natlangchain_migrate.discovery import load_migrations
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.ledger import Ledger, quote_ident
from natlangchain_migrate.locks import holding, migration_lock
from natlangchain_migrate.plan import MigrationPlan, State, plan_migrations, raise_on_drift
from natlangchain_migrate.settings import RunSettings, skip_set

if TYPE_CHECKING:
    from importlib.abc import Traversable

log = structlog.get_logger("natlangchain_migrate")


class RollbackResult(NamedTuple):
    """What ``rollback`` did: which version, and whether a down file undid its schema."""

    version: int
    name: str
    ran_down_file: bool


@asynccontextmanager
async def _locked(settings: RunSettings) -> AsyncIterator[asyncpg.Connection]:
    """The run's connection, holding the migration lock for a short piece of work."""
    async with open_run_connection(settings) as connection:
        lock = migration_lock(connection.conn, settings)
        async with holding(lock, settings.lock_mode):
            yield connection.conn


async def status(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    skip: Collection[int] = (),
    wait: float = 0.0,
    lock_mode: str = "session",
) -> MigrationPlan:
    """Every version's state, read-only and lock-free (``--status`` and ``--check``)."""
    return await status_of(
        RunSettings(
            dsn=dsn,
            pool=pool,
            migrations_dir=migrations_dir,
            schema=schema,
            skip=skip_set(skip),
            connect_wait=wait,
            lock_mode=lock_mode,
        )
    )


async def status_of(settings: RunSettings) -> MigrationPlan:
    """``status()`` from the run's settings."""
    migrations = load_migrations(settings.migrations_dir)
    preflight.check_settings(migrations, settings)
    async with open_run_connection(settings) as connection:
        snapshot = await Ledger(settings.schema).read(connection.conn)
    return plan_migrations(migrations, snapshot.rows, skip=settings.skip)


async def rollback(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    lock_timeout: float = 300.0,
    lock_namespace: str | None = None,
    wait: float = 0.0,
    lock_mode: str = "session",
) -> RollbackResult | None:
    """Undo the last applied migration: its down file and the row removal in one transaction.

    Without a down file only the row is removed and the schema stays as it is
    (the seed's old behaviour, with its warning). Returns None when nothing
    is applied.
    """
    return await rollback_last(
        RunSettings(
            dsn=dsn,
            pool=pool,
            migrations_dir=migrations_dir,
            schema=schema,
            lock_wait=lock_timeout,
            lock_namespace=lock_namespace,
            connect_wait=wait,
            lock_mode=lock_mode,
        )
    )


async def rollback_last(settings: RunSettings) -> RollbackResult | None:
    """``rollback()`` from the run's settings."""
    loaded = load_migrations(settings.migrations_dir)
    preflight.check_settings(loaded, settings)
    migrations = {m.version: m for m in loaded}
    ledger = Ledger(settings.schema)
    schema = settings.schema
    async with _locked(settings) as conn:
        rows = (await ledger.read(conn)).rows
        if not rows:
            log.info("rollback_nothing_applied")
            return None
        row = rows[-1]
        migration = migrations.get(row.version)
        down_sql = migration.down_sql if migration else None
        async with conn.transaction():
            if down_sql is not None:
                await conn.execute(
                    f"SET LOCAL search_path = {quote_ident(schema)}, pg_temp;\n{down_sql}"
                )
            await ledger.remove(conn, row.version)
    if down_sql is None:
        log.warning(
            "rollback_record_only",
            version=row.version,
            name=row.name,
            warning="no down file: only the migration record was removed; the schema "
            "changes were NOT reversed",
        )
    else:
        log.info("rollback_done", version=row.version, name=row.name)
    return RollbackResult(row.version, row.name, down_sql is not None)


async def repair(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    lock_timeout: float = 300.0,
    lock_namespace: str | None = None,
    wait: float = 0.0,
    lock_mode: str = "session",
) -> list[int]:
    """Record the files' current checksums for applied versions; never runs their SQL.

    Fills the checksums missing from rows adopted from the seed's table and
    accepts edited files. Returns the versions whose checksum changed. A
    version whose file is gone stays an error.
    """
    return await repair_checksums(
        RunSettings(
            dsn=dsn,
            pool=pool,
            migrations_dir=migrations_dir,
            schema=schema,
            lock_wait=lock_timeout,
            lock_namespace=lock_namespace,
            connect_wait=wait,
            lock_mode=lock_mode,
        )
    )


async def repair_checksums(settings: RunSettings) -> list[int]:
    """``repair()`` from the run's settings."""
    migrations = load_migrations(settings.migrations_dir)
    preflight.check_settings(migrations, settings)
    ledger = Ledger(settings.schema)
    repaired: list[int] = []
    async with _locked(settings) as conn:
        snapshot = await ledger.read(conn)
        if not snapshot.exists:
            raise ConfigurationError("nothing to repair: the database has no ledger yet")
        await ledger.ensure(conn)
        plan = plan_migrations(migrations, snapshot.rows)
        for entry in plan.entries:
            row = entry.row
            stale = entry.state is State.CHANGED or (
                entry.state is State.APPLIED and row is not None and row.checksum is None
            )
            if not stale or row is None or entry.file_checksum is None:
                continue
            await ledger.set_checksum(conn, entry.version, entry.file_checksum)
            repaired.append(entry.version)
            log.info(
                "checksum_repaired",
                version=entry.version,
                name=entry.name,
                old_checksum=row.checksum,
                new_checksum=entry.file_checksum,
            )
        raise_on_drift(plan_migrations(migrations, (await ledger.read(conn)).rows))
    return repaired
