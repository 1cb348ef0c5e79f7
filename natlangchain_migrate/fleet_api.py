"""The fleet's library form: ``migrate_fleet()`` and ``fleet_status()``, keyword functions
over ``Fleet`` as ``migrate()`` is over ``Migrator``.

    report = await migrate_fleet(dsn, each_schema="tenant_%", concurrency=8, canary=2)
    for result in report.failed: ...
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from natlangchain_migrate.connection import resolve_dsn
from natlangchain_migrate.errors import ConfigurationError
from natlangchain_migrate.fleet import Fleet, FleetOptions, Progress
from natlangchain_migrate.fleet_report import FleetReport, TargetState
from natlangchain_migrate.fleet_targets import Database, Selection, Shard, database_of
from natlangchain_migrate.migrator import Migrator
from natlangchain_migrate.settings import ExecutionOptions, LockOptions

if TYPE_CHECKING:
    from importlib.abc import Traversable
    from typing import Unpack

    from natlangchain_migrate.plan import MigrationPlan


class FleetKeywords(TypedDict, total=False):
    """The keywords of ``fleet_of()``, and so of ``migrate_fleet()``."""

    targets: Sequence[str] | None
    each_schema: str | None
    schemas_from_query: str | None
    schema: str
    migrations_dir: Traversable | Path | str | None
    concurrency: int
    server_cap: int | None
    canary: int
    max_failures: int | None
    shard: Shard | None
    lock_timeout: float
    pg_lock_timeout: str
    statement_timeout: str | None
    lock_retries: int
    wait: float
    quiet: bool


def fleet_of(
    dsn: str | None = None,
    *,
    targets: Sequence[str] | None = None,
    each_schema: str | None = None,
    schemas_from_query: str | None = None,
    schema: str = "public",
    migrations_dir: Traversable | Path | str | None = None,
    concurrency: int = 8,
    server_cap: int | None = None,
    canary: int = 0,
    max_failures: int | None = None,
    shard: Shard | None = None,
    lock_timeout: float = 300.0,
    pg_lock_timeout: str = "5s",
    statement_timeout: str | None = None,
    lock_retries: int = 5,
    wait: float = 0.0,
    quiet: bool = True,
) -> Fleet:
    """The ``Fleet`` the keyword arguments describe (see ``migrate_fleet``)."""
    if each_schema is not None and schemas_from_query is not None:
        raise ConfigurationError(
            "--each-schema and --schemas-from-query both pick schemas: give one"
        )
    limits = (
        ("canary", canary, 0),
        ("max-failures", max_failures, 0),
        ("server-cap", server_cap, 1),
    )
    for name, value, least in limits:
        if value is not None and value < least:
            raise ConfigurationError(f"--{name} {value}: give {least} or more")
    dsns = list(targets) if targets else [dsn]
    databases: list[Database] = [database_of(resolve_dsn(each)) for each in dsns]
    return Fleet(
        databases,
        Selection(pattern=each_schema, query=schemas_from_query, schema=schema),
        migrations_dir=migrations_dir,
        lock=LockOptions(wait=lock_timeout),
        execution=ExecutionOptions(
            pg_lock_timeout=pg_lock_timeout,
            statement_timeout=statement_timeout,
            lock_retries=lock_retries,
        ),
        options=FleetOptions(
            concurrency=concurrency,
            server_cap=server_cap,
            canary=canary,
            max_failures=max_failures,
            shard=shard,
            quiet=quiet,
        ),
        connect_wait=wait,
    )


async def migrate_fleet(
    dsn: str | None = None,
    *,
    progress: Progress | None = None,
    **options: Unpack[FleetKeywords],
) -> FleetReport:
    """Migrate every target: the schemas of ``dsn`` (default DATABASE_URL) that match
    ``each_schema`` (a LIKE pattern such as ``tenant_%``) or that ``schemas_from_query``
    returns, else ``schema``; with ``targets`` (DSNs), those of each database.

    Each target has its own ledger and advisory lock. One catalog query per database
    finds the targets behind; only those get a run, ``concurrency`` at once (and at
    most ``server_cap`` per server), ``canary`` of them first (a failure among them
    stops the rollout), stopping after ``max_failures`` failures. ``progress(result,
    done, total)`` is called as each target finishes. Never raises for a target's
    failure: see the report's ``failed`` and ``exit_code``.
    """
    return await fleet_of(dsn, **options).up(progress)


async def fleet_status(fleet: Fleet) -> list[TargetState]:
    """Every target's state for ``--status``/``--check``: read-only, lock-free. Files are
    hashed (as a single ``--check`` does); targets whose ledger matches them are current
    from the catalog query alone, the others get a status read on a pooled connection."""
    from natlangchain_migrate.fleet_catalog import expected_digest
    from natlangchain_migrate.pending import Sources

    sources = Sources(fleet.migrations_dir)
    total = len(sources.migrations)
    expected = expected_digest(sources)
    scanned, unreadable = await fleet.scan()
    states = [
        TargetState(result.id, "unreachable", 0, None, None, result.error or "")
        for result in unreadable
    ]
    limit = asyncio.Semaphore(fleet.options.concurrency)

    async def read(target_schema: str, database: Database) -> MigrationPlan:
        async with limit:
            pool = await fleet.pool_for(database)
            migrator = Migrator(
                pool=pool, migrations_dir=fleet.migrations_dir, schema=target_schema
            )
            return await migrator.status()

    try:
        jobs = []
        for item in scanned:
            for target, summary in item.targets:
                if summary.up_to_date(expected):
                    states.append(
                        TargetState(target.id, "up to date", summary.rows, total, summary.highest)
                    )
                else:
                    jobs.append((target, asyncio.ensure_future(read(target.schema, item.database))))
        for target, job in jobs:
            states.append(_state(target.id, await job, total))
    finally:
        await fleet.close_pools()
    return sorted(states, key=lambda state: state.id)


def _state(target_id: str, plan: MigrationPlan, total: int) -> TargetState:
    """A target's plan as one state, in --check's order: failed, drifted, pending, current."""
    from natlangchain_migrate.plan import State

    pending = [e.version for e in plan.entries if e.state is State.PENDING]
    drifted = [e.version for e in plan.changed + plan.missing]
    failed = [e.version for e in plan.failed]
    highest = max((e.version for e in plan.applied), default=None)
    if failed:
        state, detail = "failed part-way", f"version {', '.join(map(str, failed))}"
    elif drifted:
        state, detail = "drifted", f"version {', '.join(map(str, drifted))}"
    elif pending or any(e.state is State.PENDING for e in plan.repeatables):
        state, detail = "pending", f"{len(pending)} to apply"
    else:
        state, detail = "up to date", ""
    return TargetState(target_id, state, plan.recorded_count, total, highest, detail)
