"""The run: collect -> read the ledger -> plan -> (only if needed) lock -> apply -> report.

When nothing is pending the run costs one query and takes no lock, so fifty
replicas restarting at once never queue. Otherwise it takes the advisory lock,
reads the ledger again (another replica may have just finished) and applies
each pending migration in its own transaction with its ledger row.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import asyncpg
import structlog

from natlangchain_migrate.db import application_name
from natlangchain_migrate.discovery import Migration, is_duration, load_migrations
from natlangchain_migrate.errors import (
    ConfigurationError,
    DriftError,
    MigrationFailedError,
    PrerequisiteError,
    ReadOnlyDatabaseError,
)
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.plan import MigrationPlan, plan_migrations
from natlangchain_migrate.results import MigrationReport, MigrationResult
from natlangchain_migrate.session import Target, held_lock, open_session

if TYPE_CHECKING:
    from importlib.abc import Traversable

    from natlangchain_migrate.execute import Executor
    from natlangchain_migrate.locks import AdvisoryLock

log = structlog.get_logger("natlangchain_migrate")

_INSTALL_HINTS = {
    "vector": (
        "install pgvector on the server (Debian/Ubuntu: apt install postgresql-<major>-pgvector; "
        "Docker: the pgvector/pgvector image; see github.com/pgvector/pgvector)"
    ),
}


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
    mode that is safe through PgBouncer's transaction pooling.

    Raises a MigrateError subclass; MigrationFailedError carries what this run
    applied before the failure.
    """
    started = time.monotonic()
    migrations = load_migrations(migrations_dir)
    _check_arguments(migrations, target, skip)
    _check_duration("--pg-lock-timeout", pg_lock_timeout)
    _check_duration("--statement-timeout", statement_timeout)
    ledger = Ledger(schema)
    log.info("migrate_started", migrations=len(migrations), target=target, dry_run=dry_run)
    async with open_session(Target(dsn, pool, wait, lock_mode)) as session:
        conn = session.conn
        snapshot = await ledger.read(conn)
        plan = plan_migrations(migrations, snapshot.rows, target=target, skip=skip)
        raise_on_drift(plan)
        report = MigrationReport(
            already_applied=[entry.version for entry in plan.applied],
            skipped=sorted(set(skip) - {entry.version for entry in plan.applied}),
            dry_run=dry_run,
        )
        if not plan.pending:
            report.duration_ms = _ms_since(started)
            log.info("up_to_date", applied=len(plan.applied), duration_ms=report.duration_ms)
            return report
        log.info(
            "migration_plan",
            pending_count=len(plan.pending),
            pending_versions=[migration.version for migration in plan.pending],
        )
        if dry_run:
            report.pending = [
                MigrationResult(m.version, m.name, status="pending") for m in plan.pending
            ]
            report.duration_ms = _ms_since(started)
            return report
        if snapshot.standby:
            raise ReadOnlyDatabaseError(
                "the database is a read-only standby (pg_is_in_recovery() is true); point "
                "--database-url or DATABASE_URL at the primary"
            )
        _check_lock_mode(plan.pending, lock_mode)
        _check_transaction_control(plan.pending)
        await _check_extensions(conn, plan.pending)
        # Loaded only here: an up-to-date start-up never needs the apply machinery.
        from natlangchain_migrate.execute import ExecutionSettings, Executor
        from natlangchain_migrate.locks import LockNoLongerNeeded, migration_lock

        settings = ExecutionSettings(
            schema=schema,
            lock_timeout=pg_lock_timeout,
            statement_timeout=statement_timeout,
            lock_retries=lock_retries,
            retry_delay=retry_delay,
            progress_interval=progress_interval,
        )
        replan = partial(plan_migrations, migrations, target=target, skip=skip)

        async def nothing_left() -> bool:
            return not replan((await ledger.read(conn)).rows).pending

        lock = migration_lock(
            conn,
            schema=schema,
            namespace=lock_namespace,
            timeout=lock_timeout,
            lock_mode=lock_mode,
            unless=nothing_left,
        )
        executor = Executor(session, ledger, settings, application_name())
        try:
            if lock_mode == "transaction":
                await _apply_in_one_transaction(lock, ledger, executor, replan)
            else:
                await _apply_each(lock, ledger, executor, replan)
        except LockNoLongerNeeded:
            log.info("applied_by_another_runner", lock_key=lock.key)
    report.applied = executor.applied
    report.duration_ms = _ms_since(started)
    log.info("migrate_done", applied_count=len(report.applied), duration_ms=report.duration_ms)
    return report


def run_migrations(dsn: str | None = None, **options: object) -> MigrationReport:
    """``migrate()`` for synchronous apps such as Flask: runs it on a fresh event loop."""
    return anyio.run(partial(migrate, dsn, **options))  # type: ignore[arg-type]


async def _apply_each(
    lock: AdvisoryLock,
    ledger: Ledger,
    executor: Executor,
    replan: partial[MigrationPlan],
) -> None:
    async with held_lock(lock, "session"):
        plan = await _ensure_and_replan(ledger, executor.conn, replan)
        for number, migration in enumerate(plan.pending, start=1):
            _log_applying(migration, number, len(plan.pending))
            try:
                if migration.directives.no_transaction:
                    resume = plan.resume_from.get(migration.version, 0)
                    _warn_if_edited_since_failure(plan, migration, resume)
                    duration = await executor.apply_without_transaction(migration, resume)
                else:
                    last = number == len(plan.pending)
                    duration = await executor.apply_in_transaction(migration, last=last)
            except MigrationFailedError as error:
                _log_failed(migration, error)
                raise
            _applied(executor, MigrationResult(migration.version, migration.name, duration))


class _Blocked(Exception):
    """A migration of the one-transaction batch was cancelled by lock_timeout (55P03)."""

    def __init__(self, migration: Migration) -> None:
        super().__init__(migration.name)
        self.migration = migration


async def _apply_in_one_transaction(
    lock: AdvisoryLock,
    ledger: Ledger,
    executor: Executor,
    replan: partial[MigrationPlan],
) -> None:
    """PgBouncer-safe: the lock, the ledger and every pending migration in one transaction.

    A lock_timeout anywhere rolls the whole batch back; it is retried whole,
    with the same growing, jittered pauses as a single migration.
    """
    attempts = executor.settings.lock_retries + 1
    for attempt in range(1, attempts + 1):
        try:
            done = await _one_batch(lock, ledger, executor, replan)
        except _Blocked as blocked:
            if attempt == attempts:
                from natlangchain_migrate.failures import lock_retries_exhausted

                error = lock_retries_exhausted(blocked.migration, attempts, [], executor.applied)
                _log_failed(blocked.migration, error)
                raise error from blocked.__cause__
            pause = executor.settings.retry_pause(attempt)
            log.warning(
                "migration_lock_timeout",
                version=blocked.migration.version,
                name=blocked.migration.name,
                attempt=attempt,
                of=attempts,
                retry_in_s=round(pause, 2),
            )
            await anyio.sleep(pause)
            continue
        for result in done:
            _applied(executor, result)
        return


async def _one_batch(
    lock: AdvisoryLock,
    ledger: Ledger,
    executor: Executor,
    replan: partial[MigrationPlan],
) -> list[MigrationResult]:
    """Every pending migration inside the transaction that holds the lock; all or none."""
    done: list[MigrationResult] = []
    async with held_lock(lock, "transaction"):
        plan = await _ensure_and_replan(ledger, executor.conn, replan)
        for number, migration in enumerate(plan.pending, start=1):
            _log_applying(migration, number, len(plan.pending))
            try:
                duration = await executor.apply_batch_in_transaction(migration)
            except asyncpg.LockNotAvailableError as error:
                raise _Blocked(migration) from error
            except MigrationFailedError as error:
                _log_failed(migration, error)
                raise
            done.append(MigrationResult(migration.version, migration.name, duration))
    return done


async def _ensure_and_replan(
    ledger: Ledger, conn: asyncpg.Connection, replan: partial[MigrationPlan]
) -> MigrationPlan:
    """Under the lock: create or adopt the ledger, read it again (another runner may have
    just finished) and plan anew."""
    added = await ledger.ensure(conn)
    if added:
        log.info("ledger_adopted", columns_added=added)
    plan = replan((await ledger.read(conn)).rows)
    raise_on_drift(plan)
    return plan


def _applied(executor: Executor, result: MigrationResult) -> None:
    executor.applied.append(result)
    log.info(
        "migration_applied",
        version=result.version,
        name=result.name,
        duration_ms=result.duration_ms,
    )


def raise_on_drift(plan: MigrationPlan) -> None:
    """Refuse to go on when an applied file changed or is gone."""
    problems = [
        f"migration {entry.version:03d} was applied with a different checksum; restore "
        f"{entry.name}.sql, or put the change in a new migration, or accept the file as it is "
        "with --repair"
        for entry in plan.changed
    ] + [
        f"migration {entry.version:03d} ({entry.name}) is applied but its file is gone; "
        "restore it, or remove its row with --rollback if it was undone by hand"
        for entry in plan.missing
    ]
    if problems:
        raise DriftError("; ".join(problems))


def _check_arguments(migrations: list[Migration], target: int | None, skip: Iterable[int]) -> None:
    known = {migration.version for migration in migrations}
    if target is not None and target not in known:
        raise ConfigurationError(
            f"--version {target} matches no migration file; known versions: "
            f"{', '.join(str(v) for v in sorted(known)) or 'none'}"
        )
    unknown = sorted(set(skip) - known)
    if unknown:
        raise ConfigurationError(
            f"--skip {unknown[0]} matches no migration file; known versions: "
            f"{', '.join(str(v) for v in sorted(known))}"
        )


def _check_duration(flag: str, value: str | None) -> None:
    if value is not None and not is_duration(value):
        raise ConfigurationError(
            f"{flag} {value!r} is not a duration; use a number with ms, s, min or h (e.g. 5s)"
        )


def _check_transaction_control(pending: list[Migration]) -> None:
    """Refuse, before anything runs, a transactional file that begins or commits by itself."""
    from natlangchain_migrate.statements import find_transaction_control

    for migration in pending:
        if migration.directives.no_transaction:
            continue
        found = find_transaction_control(migration.filename, migration.sql)
        if found is not None:
            line, keyword = found
            raise ConfigurationError(
                f"{migration.filename}:{line}: {keyword} inside a migration; the runner runs "
                "each file in one transaction with its ledger row, so remove the transaction "
                "control, or make the file '-- natlangchain: no-transaction'"
            )


def _check_lock_mode(pending: list[Migration], lock_mode: str) -> None:
    if lock_mode != "transaction":
        return
    for migration in pending:
        if migration.directives.no_transaction:
            raise ConfigurationError(
                f"{migration.filename} runs without a transaction, which cannot work through "
                "PgBouncer's transaction pooling (--lock-mode transaction); run it with "
                "--lock-mode session against the server directly"
            )


async def _check_extensions(conn: asyncpg.Connection, pending: list[Migration]) -> None:
    """Before anything runs, check every extension that a pending file declares it needs."""
    needs = [(m, req) for m in pending for req in m.directives.requires_extensions]
    if not needs:
        return
    rows = await conn.fetch(
        "SELECT name, coalesce(installed_version, default_version) AS version "
        "FROM pg_available_extensions WHERE name = ANY($1::text[])",
        sorted({req.name for _, req in needs}),
    )
    available = {row["name"]: row["version"] for row in rows}
    for migration, requirement in needs:
        have = available.get(requirement.name)
        too_old = (
            have is not None
            and requirement.min_version is not None
            and _version(have) < _version(requirement.min_version)
        )
        if have is None or too_old:
            found = f"has version {have}" if have else "does not have it"
            wanted = f" {requirement.min_version} or newer" if requirement.min_version else ""
            hint = _INSTALL_HINTS.get(requirement.name, f"install the {requirement.name} extension")
            raise PrerequisiteError(
                f"{migration.filename} needs the PostgreSQL extension '{requirement.name}'"
                f"{wanted} and this server {found}; {hint}, or leave this migration out with "
                f"--skip {migration.version}"
            )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def _warn_if_edited_since_failure(plan: MigrationPlan, migration: Migration, done: int) -> None:
    """Resuming skips the statements that ran; say so when the file changed since then."""
    row = next((entry.row for entry in plan.entries if entry.version == migration.version), None)
    if done and row is not None and row.checksum not in (None, migration.checksum):
        log.warning(
            "resuming_edited_migration",
            version=migration.version,
            name=migration.name,
            statements_already_run=done,
            hint=f"statements 1 to {done} are not run again; they must be unchanged",
        )


def _log_applying(migration: Migration, number: int, total: int) -> None:
    log.info(
        "migration_applying",
        version=migration.version,
        name=migration.name,
        n=number,
        of=total,
        transaction=not migration.directives.no_transaction,
    )


def _log_failed(migration: Migration, error: MigrationFailedError) -> None:
    log.error(
        "migration_failed",
        version=migration.version,
        name=migration.name,
        file=error.location,
        sqlstate=error.sqlstate,
        error=str(error),
    )


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
