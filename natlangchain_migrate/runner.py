"""The run: load -> connect -> read -> plan -> drift -> preflight -> apply -> report.

When nothing is pending the run costs one query and takes no lock, so fifty
replicas restarting at once never queue. Otherwise ``apply`` takes the advisory
lock, reads the ledger again (another replica may have just finished) and
applies what is still pending.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from natlangchain_migrate import preflight, telemetry
from natlangchain_migrate.connection import is_connection_lost, open_run_connection
from natlangchain_migrate.discovery import Migration, load_migrations
from natlangchain_migrate.durations import ms_since
from natlangchain_migrate.errors import ConfigurationError, ConnectionLostError
from natlangchain_migrate.events import log
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.manifest import Manifest, folder_matches, recorded_manifest
from natlangchain_migrate.plan import (
    MigrationPlan,
    out_of_order,
    plan_migrations,
    raise_on_drift,
    raise_on_out_of_order,
    warn_of_future,
)
from natlangchain_migrate.repeatables import (
    Repeatable,
    is_repeatable,
    load_repeatables,
    version_of,
    with_repeatables,
)
from natlangchain_migrate.results import MigrationReport, MigrationResult
from natlangchain_migrate.settings import RunSettings, skip_set

if TYPE_CHECKING:
    from importlib.abc import Traversable

    import asyncpg

# Checking more files than this against the manifest is worth a thread (about 1 ms to
# start) that does it while the connection is being made.
_STAT_INLINE_UP_TO = 64

# A run that keeps losing its connection gives up after this many reconnects.
MAX_RECONNECTS = 5


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
    lock_mode: str = "session",
    wait: float = 0.0,
    pg_lock_timeout: str = "5s",
    statement_timeout: str | None = None,
    lock_retries: int = 5,
    retry_delay: float = 1.0,
    progress_interval: float = 5.0,
    strict_order: bool = False,
    auto_contract: bool | None = None,
    replica_max_age: float | None = None,
    refuse_future: bool = False,
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
    ``auto_contract`` then runs the contract parts (``NNN_name.contract.sql``) that no
    replica seen within ``replica_max_age`` seconds still needs (default: the
    NATLANGCHAIN_MIGRATE_AUTO_CONTRACT and NATLANGCHAIN_MIGRATE_REPLICA_MAX_AGE
    variables, else off and 60).
    Versions applied above every local file (by a newer release, during a rolling
    deploy) are logged once as ``future_migrations`` and left alone, listed in the
    report's ``future``; ``refuse_future`` raises FutureMigrationsError for them instead.

    Raises a MigrateError subclass; MigrationFailedError carries what this run
    applied before the failure.
    """
    auto, max_age = _contract_settings(auto_contract, replica_max_age)
    return await run(
        RunSettings(
            dsn=dsn,
            pool=pool,
            migrations_dir=migrations_dir,
            schema=schema,
            target_version=target,
            skip=skip_set(skip),
            dry_run=dry_run,
            lock_wait=lock_timeout,
            lock_namespace=lock_namespace,
            lock_mode=lock_mode,
            connect_wait=wait,
            pg_lock_timeout=pg_lock_timeout,
            statement_timeout=statement_timeout,
            lock_retries=lock_retries,
            retry_delay=retry_delay,
            progress_interval=progress_interval,
            strict_order=strict_order,
            auto_contract=auto,
            replica_max_age=max_age,
            refuse_future=refuse_future,
        )
    )


def _contract_settings(auto: bool | None, max_age: float | None) -> tuple[bool, float]:
    """auto_contract= and replica_max_age=, else their variables (read only when unset)."""
    if auto is None and not os.environ.get("NATLANGCHAIN_MIGRATE_AUTO_CONTRACT"):
        return False, 60.0 if max_age is None else max_age
    from natlangchain_migrate.contracts import AUTO_VARIABLE, env_flag, env_max_age

    return (
        env_flag(AUTO_VARIABLE) if auto is None else auto,
        env_max_age() if max_age is None else max_age,
    )


def run_migrations(dsn: str | None = None, **options: object) -> MigrationReport:
    """``migrate()`` for synchronous apps such as Flask: runs it on a fresh event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        import anyio

        return anyio.run(partial(migrate, dsn, **options))  # type: ignore[arg-type]
    raise ConfigurationError(
        "run_migrations() was called inside a running event loop (an async app or test); "
        "there, use: await natlangchain_migrate.migrate()"
    )


async def run(settings: RunSettings) -> MigrationReport:
    """One run, as ``migrate()`` and the CLI start it, in a span (the ``otel`` extra)."""
    with telemetry.run_span(settings) as span:
        report = await _run(settings)
        telemetry.finish_run(span, report)
        return report


async def _run(settings: RunSettings) -> MigrationReport:
    """One run.

    A connection lost mid-run (failover, restart) is survived when the run may wait
    (``wait=``/``--wait``, not with a caller's pool): reconnect, take the lock again,
    re-read the ledger and go on. Every migration commits whole with its ledger row, so
    starting over from the ledger is always safe.
    """
    started = time.monotonic()
    # With a checksum manifest, nothing is read until the ledger says it must be (a
    # folder with R__ files has none that counts: see manifest.py). Whether the folder
    # still matches it (a stat per file) is checked in a thread while we connect.
    manifest = None
    if settings.target_version is None and not settings.skip:
        manifest = recorded_manifest(settings.migrations_dir)
    folder_check: asyncio.Future[bool] | None = None
    if manifest is not None:
        loop = asyncio.get_running_loop()
        # A pool's connection is ready at once: nothing to overlap the check with.
        if len(manifest.names) > _STAT_INLINE_UP_TO and settings.pool is None:
            folder_check = loop.run_in_executor(None, folder_matches, manifest)
        else:
            folder_check = loop.create_future()
            folder_check.set_result(folder_matches(manifest))
    migrations = None if manifest else load_migrations(settings.migrations_dir)
    repeatables = [] if manifest else load_repeatables(settings.migrations_dir)
    files = manifest.ups if manifest else migrations or []
    preflight.check_settings(files, settings)
    log.info(
        "migrate_started",
        migrations=len(files),
        target=settings.target_version,
        dry_run=settings.dry_run,
    )
    applied_before: list[MigrationResult] = []
    for reconnect in range(MAX_RECONNECTS + 1):
        try:
            report, had_pending = await _run_on_one_connection(
                manifest, folder_check, migrations, repeatables, settings
            )
            break
        except ConnectionLostError as lost:
            applied_before += lost.applied
            if (
                settings.pool is not None
                or not settings.connect_wait
                or reconnect == MAX_RECONNECTS
            ):
                lost.applied = applied_before
                raise
            log.warning(
                "connection_lost_reconnecting",
                error=str(lost),
                attempt=reconnect + 1,
                wait_s=settings.connect_wait,
            )
    report.applied = applied_before + report.applied
    if applied_before:  # the re-read ledger after a reconnect already holds them
        done_here = {result.version for result in applied_before}
        report.already_applied = [v for v in report.already_applied if v not in done_here]
    report.duration_ms = ms_since(started)
    if not had_pending:
        log.info("up_to_date", applied=len(report.already_applied), duration_ms=report.duration_ms)
    elif not settings.dry_run:
        log.info("migrate_done", applied_count=len(report.applied), duration_ms=report.duration_ms)
    return report


async def _run_on_one_connection(
    manifest: Manifest | None,
    folder_check: asyncio.Future[bool] | None,
    migrations: list[Migration] | None,
    repeatables: list[Repeatable],
    settings: RunSettings,
) -> tuple[MigrationReport, bool]:
    """connect -> read -> plan -> drift -> preflight -> apply, on one connection; the
    report, and whether anything was pending."""
    ledger = Ledger(settings.schema)
    async with open_run_connection(settings) as connection:
        try:
            if (
                manifest is not None
                and folder_check is not None
                and await folder_check
                and await ledger.digest(connection.conn) == manifest.ledger_digest
            ):
                report = MigrationReport(already_applied=manifest.versions)
                if settings.auto_contract and any(".contract." in n for n in manifest.names):
                    await _auto_contract(connection.conn, None, settings, report)
                return report, False
            if migrations is None:
                migrations = load_migrations(settings.migrations_dir)
                repeatables = load_repeatables(settings.migrations_dir)
            snapshot = await ledger.read(connection.conn, repeatables=bool(repeatables))
            plan = plan_migrations(
                migrations, snapshot.rows, target=settings.target_version, skip=settings.skip
            )
            if repeatables or snapshot.repeatables:
                plan = with_repeatables(plan, repeatables, snapshot.repeatables)
            raise_on_drift(plan, refuse_future=settings.refuse_future)
            warned: set[int] = set()
            warn_of_future(plan, warned)
            report = MigrationReport(
                already_applied=[entry.version for entry in plan.applied],
                skipped=sorted(settings.skip - {entry.version for entry in plan.applied}),
                dry_run=settings.dry_run,
            )
            report.future = [entry.version for entry in plan.future]
            if not plan.pending:
                await _auto_contract(connection.conn, migrations, settings, report)
                return report, False
            log.info(
                "migration_plan",
                pending_count=len(plan.pending),
                pending_versions=[m.version for m in plan.pending if not is_repeatable(m)],
                **_repeatables_pending(plan),
            )
            _check_order(plan, settings)
            if settings.dry_run:
                report.pending = [
                    MigrationResult(version_of(m), m.name, status="pending") for m in plan.pending
                ]
                return report, True
            await preflight.check_before_apply(connection.conn, plan, snapshot, settings)
            # Loaded only here: an up-to-date start-up never needs the apply machinery.
            from natlangchain_migrate.apply import apply_pending

            report.applied = await apply_pending(
                connection, ledger, migrations, settings, repeatables, warned_future=warned
            )
            await _auto_contract(connection.conn, migrations, settings, report)
            report.future = sorted(warned)
            return report, True
        except Exception as error:
            if isinstance(error, ConnectionLostError) or not (
                is_connection_lost(error) or connection.conn.is_closed()
            ):
                raise
            raise ConnectionLostError(
                f"the connection to the server was lost ({type(error).__name__}: {error}): a "
                "server restart or failover, pg_terminate_backend, or the network; nothing "
                "was half-applied. Run again (with --wait SECONDS the runner reconnects by "
                "itself)"
            ) from error


async def _auto_contract(
    conn: asyncpg.Connection,
    migrations: list[Migration] | None,
    settings: RunSettings,
    report: MigrationReport,
) -> None:
    """With auto_contract, after the expand parts: the contract parts that may run. Costs
    nothing when it is off or the folder has no contract part."""
    if not settings.auto_contract or settings.dry_run:
        return
    if migrations is None:
        migrations = load_migrations(settings.migrations_dir)
    if not any(m.contract_file is not None for m in migrations):
        return
    from natlangchain_migrate.contracts import auto_contract

    expanded = {
        *report.already_applied,
        *(r.version for r in report.applied if r.version is not None),
    }
    report.contracts = await auto_contract(conn, migrations, settings, expanded)


def _repeatables_pending(plan: MigrationPlan) -> dict[str, list[str]]:
    names = [m.name for m in plan.pending if is_repeatable(m)]
    return {"pending_repeatables": names} if names else {}


def _check_order(plan: MigrationPlan, settings: RunSettings) -> None:
    """Strict order refuses a version below the highest applied one before anything runs;
    without it, such a version is applied (on purpose: ``--skip``) and logged."""
    if settings.strict_order:
        raise_on_out_of_order(plan)
        return
    late = out_of_order(plan)
    if late:
        log.warning("applying_out_of_order", versions=[m.version for m in late])
