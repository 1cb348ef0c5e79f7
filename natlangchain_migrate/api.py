"""The documented keyword functions: each builds a ``Migrator`` and calls one method.

Their keyword names are the documented ones: ``lock_timeout`` is the wait for another
runner's advisory lock (``LockOptions.wait``), ``pg_lock_timeout`` PostgreSQL's
lock_timeout inside each migration (``ExecutionOptions.pg_lock_timeout``), ``wait`` the
wait for a server that is not up yet (``connect_wait``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.migrator import Migrator
from natlangchain_migrate.settings import ExecutionOptions, LockMode, LockOptions, lock_mode_of

if TYPE_CHECKING:
    from importlib.abc import Traversable
    from typing import Unpack

    import asyncpg

    from natlangchain_migrate.contracts import ContractReport
    from natlangchain_migrate.plan import MigrationPlan
    from natlangchain_migrate.results import MigrationReport
    from natlangchain_migrate.settings import MigrateOptions
    from natlangchain_migrate.undo import RollbackResult


def _lock(wait: float, namespace: str | None, mode: LockMode | str) -> LockOptions:
    return LockOptions(wait=wait, namespace=namespace, mode=lock_mode_of(mode))


def _contract_options(auto: bool | None, max_age: float | None) -> _ContractOptions:
    """auto_contract= and replica_max_age=, else their variables (read only when unset)."""
    if auto is None and not os.environ.get("NATLANGCHAIN_MIGRATE_AUTO_CONTRACT"):
        return {"auto_contract": False, "replica_max_age": 60.0 if max_age is None else max_age}
    from natlangchain_migrate.contracts import AUTO_VARIABLE, env_flag, env_max_age

    return {
        "auto_contract": env_flag(AUTO_VARIABLE) if auto is None else auto,
        "replica_max_age": env_max_age() if max_age is None else max_age,
    }


class _ContractOptions(TypedDict):
    auto_contract: bool
    replica_max_age: float


class _RunnerFlags(TypedDict, total=False):
    strict_order: bool
    refuse_future: bool
    auto_contract: bool
    replica_max_age: float


def _migrator(
    dsn: str | None,
    pool: asyncpg.Pool | None,
    migrations_dir: Traversable | Path | str | None,
    schema: str,
    wait: float,
    lock: LockOptions,
    execution: ExecutionOptions | None = None,
    **flags: Unpack[_RunnerFlags],
) -> Migrator:
    """The ``Migrator`` behind every keyword function; ``wait`` is its ``connect_wait``."""
    return Migrator(
        dsn,
        pool=pool,
        migrations_dir=migrations_dir,
        schema=schema,
        connect_wait=wait,
        lock=lock,
        execution=execution,
        **flags,
    )


async def migrate(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    target: int | None = None,
    skip: Collection[int] = (),
    dry_run: bool = False,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    lock_timeout: float = 300.0,
    lock_namespace: str | None = None,
    lock_mode: LockMode | str = LockMode.SESSION,
    wait: float = 0.0,
    pg_lock_timeout: str = "5s",
    statement_timeout: str | None = None,
    lock_retries: int = 5,
    retry_delay: float = 1.0,
    progress_interval: float = 5.0,
    strict_order: bool = False,
    refuse_future: bool = False,
    auto_contract: bool | None = None,
    replica_max_age: float | None = None,
) -> MigrationReport:
    """Apply the pending migrations; await it at API start-up or from an init container.

    ``dsn`` defaults to DATABASE_URL; ``pool`` is an existing asyncpg pool to
    borrow one connection from instead. ``target`` stops at that version,
    ``skip`` leaves versions out (a later run without it applies them, out of
    order). ``dry_run`` reports what would run and changes nothing.
    ``lock_timeout`` is how long to wait for another runner's advisory lock;
    ``pg_lock_timeout`` is PostgreSQL's lock_timeout for each migration, which
    is retried ``lock_retries`` times. ``lock_mode="transaction"`` applies all
    pending migrations in one transaction under a transaction-level lock, the
    mode that is safe through PgBouncer's transaction pooling. ``strict_order`` refuses
    a pending version lower than the highest applied one (OutOfOrderError).
    Versions applied above every local file (by a newer release, during a rolling
    deploy) are logged once as ``future_migrations`` and left alone, listed in the
    report's ``future``; ``refuse_future`` raises FutureMigrationsError for them instead.
    ``auto_contract`` then runs the contract parts (``NNN_name.contract.sql``) that no
    replica seen within ``replica_max_age`` seconds still needs (default: the
    NATLANGCHAIN_MIGRATE_AUTO_CONTRACT and NATLANGCHAIN_MIGRATE_REPLICA_MAX_AGE
    variables, else off and 60).

    Raises a MigrateError subclass; MigrationFailedError carries what this run
    applied before the failure.
    """
    flags = _contract_options(auto_contract, replica_max_age)  # its errors come first
    lock = _lock(lock_timeout, lock_namespace, lock_mode)
    execution = ExecutionOptions(
        pg_lock_timeout, statement_timeout, lock_retries, retry_delay, progress_interval
    )
    migrator = _migrator(
        dsn,
        pool,
        migrations_dir,
        schema,
        wait,
        lock,
        execution,
        strict_order=strict_order,
        refuse_future=refuse_future,
        **flags,
    )
    return await migrator.up(target, skip=skip, dry_run=dry_run)


def run_migrations(dsn: str | None = None, **options: Unpack[MigrateOptions]) -> MigrationReport:
    """``migrate()`` for synchronous apps such as Flask: runs it on a fresh event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        import anyio

        return anyio.run(partial(migrate, dsn, **options))
    raise ConfigurationError(
        "run_migrations() was called inside a running event loop (an async app or test); "
        "there, use: await natlangchain_migrate.migrate()"
    )


async def status(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    skip: Collection[int] = (),
    wait: float = 0.0,
    lock_mode: LockMode | str = LockMode.SESSION,
) -> MigrationPlan:
    """Every version's state, read-only and lock-free (``--status`` and ``--check``)."""
    lock = LockOptions(mode=lock_mode_of(lock_mode))
    return await _migrator(dsn, pool, migrations_dir, schema, wait, lock).status(skip=skip)


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
    lock_mode: LockMode | str = LockMode.SESSION,
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
    lock = _lock(lock_timeout, lock_namespace, lock_mode)
    execution = ExecutionOptions(
        pg_lock_timeout, statement_timeout, lock_retries, retry_delay, progress_interval
    )
    migrator = _migrator(dsn, pool, migrations_dir, schema, wait, lock, execution)
    return await migrator.rollback(steps=steps, to=to, dry_run=dry_run)


async def repair(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    lock_timeout: float = 300.0,
    lock_namespace: str | None = None,
    wait: float = 0.0,
    lock_mode: LockMode | str = LockMode.SESSION,
) -> list[int]:
    """Make the ledger agree with the files as they are; never runs their SQL.

    Fills the checksums missing from rows adopted from the seed's table, accepts
    edited files, and removes the rows of versions whose file is gone (as Flyway's
    repair does). Returns the versions whose row changed or went.
    """
    lock = _lock(lock_timeout, lock_namespace, lock_mode)
    return await _migrator(dsn, pool, migrations_dir, schema, wait, lock).repair()


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
    lock_mode: LockMode | str = LockMode.SESSION,
) -> list[int]:
    """Record versions up to ``version`` as applied, with their files' checksums, without
    running them: for a database built by hand or by another tool. Refuses a ledger that
    already holds rows unless ``force`` (then only versions without a row are added).
    Returns the versions recorded."""
    lock = _lock(lock_timeout, lock_namespace, lock_mode)
    return await _migrator(dsn, pool, migrations_dir, schema, wait, lock).baseline(
        version, force=force
    )


async def contract(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    migrations_dir: Traversable | Path | str | None = None,
    schema: str = "public",
    dry_run: bool = False,
    force: bool = False,
    replica_max_age: float = 60.0,
    lock_timeout: float = 300.0,
    lock_namespace: str | None = None,
    lock_mode: LockMode | str = LockMode.SESSION,
    wait: float = 0.0,
    pg_lock_timeout: str = "5s",
    statement_timeout: str | None = None,
    lock_retries: int = 5,
) -> ContractReport:
    """Run the contract parts that may run: expand part applied, and no replica seen within
    ``replica_max_age`` seconds ships a release below their version. ``force`` runs those
    waiting for old replicas anyway (logged as ``contract_forced``, recorded
    ``forced``); ``dry_run`` says what would run and changes nothing. Each part runs once,
    under the migration lock, in one transaction with its ``schema_contracts`` row."""
    lock = _lock(lock_timeout, lock_namespace, lock_mode)
    execution = ExecutionOptions(pg_lock_timeout, statement_timeout, lock_retries)
    migrator = _migrator(
        dsn, pool, migrations_dir, schema, wait, lock, execution, replica_max_age=replica_max_age
    )
    return await migrator.contract(dry_run=dry_run, force=force)
