"""The other things a user does to the ledger: look at it, repair it, baseline it."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from natlangchain_migrate import preflight
from natlangchain_migrate.connection import open_run_connection
from natlangchain_migrate.discovery import load_migrations
from natlangchain_migrate.errors import BaselineError, ConfigurationError
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.locks import locked_connection
from natlangchain_migrate.plan import (
    MigrationPlan,
    State,
    future_sentence,
    plan_migrations,
    raise_on_drift,
)
from natlangchain_migrate.repeatables import load_repeatables, with_repeatables
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
    repeatables = load_repeatables(settings.migrations_dir)
    preflight.check_settings(migrations, settings)
    ledger = Ledger(settings.schema)
    async with open_run_connection(settings) as connection:
        snapshot = await ledger.read(connection.conn)
        applied_repeatables = await ledger.repeatable_rows(connection.conn)
    plan = plan_migrations(migrations, snapshot.rows, skip=settings.skip)
    return with_repeatables(plan, repeatables, applied_repeatables)


def _locked_settings(
    dsn: str | None,
    pool: asyncpg.Pool | None,
    migrations_dir: Traversable | Path | str | None,
    schema: str,
    lock_timeout: float,
    lock_namespace: str | None,
    wait: float,
    lock_mode: str,
) -> RunSettings:
    """The settings of a short piece of work under the migration lock (repair, baseline),
    from the keyword arguments both take."""
    return RunSettings(
        dsn=dsn,
        pool=pool,
        migrations_dir=migrations_dir,
        schema=schema,
        lock_wait=lock_timeout,
        lock_namespace=lock_namespace,
        connect_wait=wait,
        lock_mode=lock_mode,
    )


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
    repair does), below the newest file only: a row above it was written by a newer
    release and is kept. Returns the versions whose row changed or went.
    """
    return await repair_checksums(
        _locked_settings(
            dsn, pool, migrations_dir, schema, lock_timeout, lock_namespace, wait, lock_mode
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
        if plan.future:
            log.warning(
                "future_rows_kept",
                versions=[entry.version for entry in plan.future],
                note=f"{future_sentence(plan)}; repair kept their rows (forgetting them "
                "would make that release run them again)",
            )
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
        await _forget_vanished_repeatables(conn, ledger, settings)
        from natlangchain_migrate.contract_ledger import repair_contracts

        repaired += await repair_contracts(conn, migrations, settings.schema)
        raise_on_drift(plan_migrations(migrations, (await ledger.read(conn)).rows))
    return repaired


async def _forget_vanished_repeatables(
    conn: asyncpg.Connection, ledger: Ledger, settings: RunSettings
) -> None:
    """Remove the rows of repeatables whose R__ file is gone (they never block a run)."""
    present = {r.name for r in load_repeatables(settings.migrations_dir)}
    for row in await ledger.repeatable_rows(conn):
        if row.name not in present:
            await ledger.remove_repeatable(conn, row.name)
            log.warning(
                "missing_row_removed",
                name=row.name,
                note="a repeatable whose file is gone; what it created stays as it is",
            )


async def baseline(
    version: int,
    dsn: str | None = None,
    *,
    force: bool = False,
    pool: asyncpg.Pool | None = None,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    lock_timeout: float = 300.0,
    lock_namespace: str | None = None,
    wait: float = 0.0,
    lock_mode: str = "session",
) -> list[int]:
    """Record versions up to ``version`` as applied, with their files' checksums, without
    running them: for a database built by hand or by another tool. Refuses a ledger that
    already holds rows unless ``force`` (then only versions without a row are added).
    Returns the versions recorded."""
    return await baseline_versions(
        _locked_settings(
            dsn, pool, migrations_dir, schema, lock_timeout, lock_namespace, wait, lock_mode
        ),
        version,
        force=force,
    )


async def baseline_versions(settings: RunSettings, up_to: int, *, force: bool) -> list[int]:
    """``baseline()`` from the run's settings, under the migration lock."""
    migrations = load_migrations(settings.migrations_dir)
    preflight.check_settings(migrations, settings)
    highest = migrations[-1].version
    if up_to < 1 or up_to > highest:
        raise ConfigurationError(
            f"baseline {up_to}: N must be a version from 1 to {highest}, the highest "
            "migration file; give the version the database already matches"
        )
    chosen = [migration for migration in migrations if migration.version <= up_to]
    if not chosen:
        raise ConfigurationError(
            f"baseline {up_to}: no migration file has a version at or below {up_to} "
            f"(the lowest is {migrations[0].version}); nothing to record"
        )
    ledger = Ledger(settings.schema)
    async with locked_connection(settings) as conn:
        snapshot = await ledger.read(conn)
        held = {row.version for row in snapshot.rows}
        if held and not force:
            raise BaselineError(
                f"baseline {up_to}: the ledger {ledger.table} already holds {len(held)} "
                f"row(s) (versions {min(held)} to {max(held)}); baseline is for a database "
                f"no runner has migrated. To add rows for the versions up to {up_to} that "
                f"have none (keeping the others), run: baseline {up_to} --force"
            )
        await ledger.ensure(conn)
        await ledger.record_baseline(conn, chosen)
    recorded = [migration.version for migration in chosen if migration.version not in held]
    kept = sorted(version for version in held if version <= up_to)
    log.info("baseline_recorded", up_to=up_to, versions=recorded, kept=kept)
    return recorded
