"""The other things a user does to the ledger: look at it, roll back, repair."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import asyncpg
import structlog

from natlangchain_migrate.discovery import load_migrations
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.ledger import Ledger, quote_ident
from natlangchain_migrate.locks import migration_lock
from natlangchain_migrate.plan import MigrationPlan, State, plan_migrations
from natlangchain_migrate.runner import raise_on_drift
from natlangchain_migrate.session import Target, held_lock, open_session

if TYPE_CHECKING:
    from importlib.abc import Traversable

log = structlog.get_logger("natlangchain_migrate")


class RollbackResult(NamedTuple):
    """What ``rollback`` did: which version, and whether a down file undid its schema."""

    version: int
    name: str
    ran_down_file: bool


@asynccontextmanager
async def _locked(
    target: Target, schema: str, lock_timeout: float, namespace: str | None
) -> AsyncIterator[asyncpg.Connection]:
    """A session's connection, holding the migration lock for a short piece of work."""
    async with open_session(target) as session:
        lock = migration_lock(
            session.conn,
            schema=schema,
            namespace=namespace,
            timeout=lock_timeout,
            lock_mode=target.lock_mode,
        )
        async with held_lock(lock, target.lock_mode):
            yield session.conn


async def status(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    skip: tuple[int, ...] = (),
    wait: float = 0.0,
    lock_mode: str = "session",
) -> MigrationPlan:
    """Every version's state, read-only and lock-free (``--status`` and ``--check``)."""
    migrations = load_migrations(migrations_dir)
    async with open_session(Target(dsn, pool, wait, lock_mode)) as session:
        conn = session.conn
        snapshot = await Ledger(schema).read(conn)
    return plan_migrations(migrations, snapshot.rows, skip=skip)


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
    migrations = {m.version: m for m in load_migrations(migrations_dir)}
    ledger = Ledger(schema)
    target = Target(dsn, pool, wait, lock_mode)
    async with _locked(target, schema, lock_timeout, lock_namespace) as conn:
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
    migrations = load_migrations(migrations_dir)
    ledger = Ledger(schema)
    repaired: list[int] = []
    target = Target(dsn, pool, wait, lock_mode)
    async with _locked(target, schema, lock_timeout, lock_namespace) as conn:
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
