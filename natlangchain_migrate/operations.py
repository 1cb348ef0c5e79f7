"""The other things a user does to the ledger: look at it, repair it, baseline it."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from natlangchain_migrate import preflight
from natlangchain_migrate.connection import open_run_connection
from natlangchain_migrate.discovery import Migration, load_migrations
from natlangchain_migrate.errors import BaselineError, ConfigurationError
from natlangchain_migrate.events import log
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.locks import locked_connection
from natlangchain_migrate.pending import Sources, plan_of
from natlangchain_migrate.plan import MigrationPlan, State, future_sentence, raise_on_drift
from natlangchain_migrate.settings import CallArguments, RunnerOptions


async def status(options: RunnerOptions, *, skip: frozenset[int] = frozenset()) -> MigrationPlan:
    """Every version's state, read-only and lock-free (``--status`` and ``--check``)."""
    sources = Sources(options.migrations_dir)
    call = CallArguments(skip=skip)
    preflight.check_options(sources.migrations, options, call)
    ledger = Ledger(options.schema)
    async with open_run_connection(options) as connection:
        snapshot = await ledger.read(connection.conn)
        snapshot.repeatables = await ledger.repeatable_rows(connection.conn)
    return plan_of(sources, snapshot, call, schema=options.schema)


async def repair(options: RunnerOptions) -> list[int]:
    """Make the ledger agree with the files as they are; never runs their SQL.

    Fills the checksums missing from rows adopted from the seed's table, accepts
    edited files, and removes the rows of versions whose file is gone (as Flyway's
    repair does), below the newest file only: a row above it was written by a newer
    release and is kept. Returns the versions whose row changed or went.
    """
    sources = Sources(options.migrations_dir)
    preflight.check_options(sources.migrations, options)
    ledger = Ledger(options.schema)
    repaired: list[int] = []
    async with locked_connection(options) as connection:
        conn = connection.conn
        snapshot = await ledger.read(conn)
        if not snapshot.exists:
            raise ConfigurationError("nothing to repair: the database has no ledger yet")
        await ledger.ensure(conn, widest=_widest(sources.migrations))
        snapshot.repeatables = await ledger.repeatable_rows(conn)
        plan = plan_of(sources, snapshot)
        await _hand_back_future_repeatables(conn, ledger, plan)
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
                file=entry.file.filename if entry.file is not None else None,
                old_checksum=row.checksum,
                new_checksum=entry.file_checksum,
            )
        await _forget_vanished_repeatables(conn, ledger, plan)
        from natlangchain_migrate.contract_ledger import repair_contracts

        repaired += await repair_contracts(conn, sources.migrations, options.schema)
        raise_on_drift(plan_of(sources, await ledger.read(conn)))
    return repaired


async def _forget_vanished_repeatables(
    conn: asyncpg.Connection, ledger: Ledger, plan: MigrationPlan
) -> None:
    """Remove the rows of repeatables whose R__ file is gone (they never block a run).
    A newer release's (FUTURE, no file here) is kept: it is that release's file."""
    for entry in plan.repeatables:
        if entry.state is State.MISSING:
            await ledger.remove_repeatable(conn, entry.name)
            log.warning(
                "missing_row_removed",
                name=entry.name,
                note="a repeatable whose file is gone; what it created stays as it is",
            )


async def _hand_back_future_repeatables(
    conn: asyncpg.Connection, ledger: Ledger, plan: MigrationPlan
) -> None:
    """The operator's way back after a rollout is undone for good: a repeatable a newer
    release last applied, whose file this release ships too, becomes this release's
    again (its recorded release is cleared), so the next run applies this file. The
    newer release, if it returns, applies its own again at its next start."""
    for entry in plan.future_repeatables:
        if entry.file is None:
            continue  # only the newer release has this file: nothing to hand back
        await ledger.hand_back_repeatable(conn, entry.name)
        log.warning(
            "future_repeatable_handed_back",
            name=entry.name,
            release=entry.row.release if entry.row else None,
            note="a newer release applied it last; the next run of this release applies "
            "this release's file",
        )


async def baseline(options: RunnerOptions, up_to: int, *, force: bool = False) -> list[int]:
    """Record versions up to ``up_to`` as applied, with their files' checksums, without
    running them, under the migration lock. Refuses a ledger that already holds rows
    unless ``force`` (then only versions without a row are added). Returns the versions
    recorded."""
    migrations = load_migrations(options.migrations_dir)
    preflight.check_options(migrations, options)
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
    ledger = Ledger(options.schema)
    async with locked_connection(options) as connection:
        conn = connection.conn
        snapshot = await ledger.read(conn)
        held = {row.version for row in snapshot.rows}
        if held and not force:
            raise BaselineError(
                f"baseline {up_to}: the ledger {ledger.table} already holds {len(held)} "
                f"row(s) (versions {min(held)} to {max(held)}); baseline is for a database "
                f"no runner has migrated. To add rows for the versions up to {up_to} that "
                f"have none (keeping the others), run: baseline {up_to} --force"
            )
        await ledger.ensure(conn, widest=_widest(migrations))
        await ledger.record_baseline(conn, chosen)
    recorded = [migration.version for migration in chosen if migration.version not in held]
    kept = sorted(version for version in held if version <= up_to)
    log.info("baseline_recorded", up_to=up_to, versions=recorded, kept=kept)
    return recorded


def _widest(migrations: Sequence[Migration]) -> int:
    """The highest version of the folder: the ledger's column must hold it."""
    return max((migration.version for migration in migrations), default=0)
