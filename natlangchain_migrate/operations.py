"""The other things a user does to the ledger: look at it, and repair it."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from natlangchain_migrate import preflight
from natlangchain_migrate.connection import open_run_connection
from natlangchain_migrate.discovery import load_migrations
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.locks import locked_connection
from natlangchain_migrate.plan import MigrationPlan, State, plan_migrations, raise_on_drift
from natlangchain_migrate.settings import RunSettings, skip_set

if TYPE_CHECKING:
    from importlib.abc import Traversable

from natlangchain_migrate.events import log


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
    """Make the ledger agree with the files as they are; never runs their SQL.

    Fills the checksums missing from rows adopted from the seed's table, accepts
    edited files, and removes the rows of versions whose file is gone (as Flyway's
    repair does). Returns the versions whose row changed or went.
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
    async with locked_connection(settings) as conn:
        snapshot = await ledger.read(conn)
        if not snapshot.exists:
            raise ConfigurationError("nothing to repair: the database has no ledger yet")
        await ledger.ensure(conn)
        plan = plan_migrations(migrations, snapshot.rows)
        for entry in plan.missing:
            await ledger.remove(conn, entry.version)
            repaired.append(entry.version)
            log.warning(
                "missing_row_removed",
                version=entry.version,
                name=entry.name,
                note="its file is gone; its schema changes, if any, stay as they are",
            )
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
