"""The run: sources -> connect -> read -> decide -> preflight -> apply -> report.

When nothing is pending the run costs one query and takes no lock, so fifty
replicas restarting at once never queue. Otherwise ``apply`` takes the advisory
lock, reads the ledger again (another replica may have just finished) and
applies what is still pending.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from natlangchain_migrate import preflight, telemetry
from natlangchain_migrate.causes import server_error
from natlangchain_migrate.connection import (
    RunConnection,
    is_connection_lost,
    open_run_connection,
)
from natlangchain_migrate.durations import ms_since
from natlangchain_migrate.errors import ConnectionLostError, ServerError
from natlangchain_migrate.events import log
from natlangchain_migrate.ledger import Ledger
from natlangchain_migrate.pending import Sources, decide
from natlangchain_migrate.plan import MigrationPlan, out_of_order
from natlangchain_migrate.repeatables import is_repeatable, version_of
from natlangchain_migrate.results import MigrationReport, MigrationResult
from natlangchain_migrate.settings import CallArguments, RunnerOptions

# A run that keeps losing its connection gives up after this many reconnects.
MAX_RECONNECTS = 5


async def up(options: RunnerOptions, call: CallArguments) -> MigrationReport:
    """One run, as ``Migrator.up()`` starts it, in a span (the ``otel`` extra)."""
    with telemetry.run_span(options, dry_run=call.dry_run) as span:
        started = time.monotonic()
        sources = Sources.for_run(options.migrations_dir, call, pooled=options.pool is not None)
        preflight.check_options(sources.versions(), options, call)
        log.info(
            "migrate_started",
            migrations=len(sources.versions()),
            target=call.target_version,
            dry_run=call.dry_run,
        )
        report, had_pending = await _reconnecting(sources, options, call)
        report.duration_ms = ms_since(started)
        if not had_pending:
            log.info(
                "up_to_date", applied=len(report.already_applied), duration_ms=report.duration_ms
            )
        elif not call.dry_run:
            log.info(
                "migrate_done", applied_count=len(report.applied), duration_ms=report.duration_ms
            )
        telemetry.finish_run(span, report)
        return report


async def _on_one_connection(
    sources: Sources, options: RunnerOptions, call: CallArguments
) -> tuple[MigrationReport, bool]:
    """connect -> read -> decide -> preflight -> apply, on one connection; the report, and
    whether anything was pending."""
    ledger = Ledger(options.schema)
    async with open_run_connection(options) as connection:
        with _connection_loss_named(connection):
            conn = connection.conn
            versions = await sources.all_applied(partial(ledger.digest, conn))
            if versions is not None:
                report = MigrationReport(already_applied=versions)
                await _auto_contract(connection, sources, options, call, report)
                return report, False
            snapshot = await ledger.read(conn, repeatables=bool(sources.repeatables))
            # Future versions (and repeatable names) warned of, before the lock and under it.
            warned: set[int | str] = set()
            plan = decide(
                sources,
                snapshot,
                call,
                strict_order=options.strict_order,
                refuse_future=options.refuse_future,
                warned=warned,
                schema=options.schema,
            )
            report = MigrationReport(
                already_applied=[entry.version for entry in plan.applied],
                skipped=sorted(call.skip - {entry.version for entry in plan.applied}),
                dry_run=call.dry_run,
            )
            report.future = [entry.version for entry in plan.future]
            report.future_repeatables = [entry.name for entry in plan.future_repeatables]
            if not plan.pending:
                await _auto_contract(connection, sources, options, call, report)
                return report, False
            _log_plan(plan)
            if call.dry_run:
                preflight.check_pending_files(plan.pending, options)
                report.pending = [
                    MigrationResult(version_of(m), m.name, status="pending", file=m.filename)
                    for m in plan.pending
                ]
                return report, True
            await preflight.check_before_apply(conn, plan, snapshot, options)
            # Loaded only here: an up-to-date start-up never needs the apply machinery.
            from natlangchain_migrate.apply import apply_pending

            report.applied = await apply_pending(
                connection, ledger, sources, options, call, warned_future=warned
            )
            report.future = sorted(v for v in warned if isinstance(v, int))
            report.future_repeatables = sorted(v for v in warned if isinstance(v, str))
            await _auto_contract(connection, sources, options, call, report)
            return report, True


async def _reconnecting(
    sources: Sources, options: RunnerOptions, call: CallArguments
) -> tuple[MigrationReport, bool]:
    """The run on one connection; a connection lost mid-run (failover, restart) is
    survived when the run may wait (``wait=``/``--wait``, not with a caller's pool):
    reconnect, take the lock again, re-read the ledger and go on. Every migration
    commits whole with its ledger row, so starting over from the ledger is always safe.
    """
    applied_before: list[MigrationResult] = []
    for reconnect in range(MAX_RECONNECTS + 1):
        try:
            report, had_pending = await _on_one_connection(sources, options, call)
            break
        except ConnectionLostError as lost:
            applied_before += lost.applied
            if options.pool is not None or not options.connect_wait or reconnect == MAX_RECONNECTS:
                lost.applied = applied_before
                raise
            log.warning(
                "connection_lost_reconnecting",
                error=str(lost),
                attempt=reconnect + 1,
                wait_s=options.connect_wait,
            )
    report.applied = applied_before + report.applied
    if applied_before:  # the re-read ledger after a reconnect already holds them
        done_here = {result.version for result in applied_before}
        report.already_applied = [v for v in report.already_applied if v not in done_here]
    return report, had_pending


@contextmanager
def _connection_loss_named(connection: RunConnection) -> Iterator[None]:
    """Any error that a lost connection caused becomes ConnectionLostError."""
    try:
        yield
    except Exception as error:
        # A server error of another cause that ended the session (transaction_timeout)
        # goes on as itself, to be classified by causes.classified.
        told = isinstance(error, ServerError) or (
            server_error(error) is not None and not is_connection_lost(error)
        )
        if (
            isinstance(error, ConnectionLostError)
            or told
            or not (is_connection_lost(error) or connection.conn.is_closed())
        ):
            raise
        raise ConnectionLostError(
            f"the connection to the server was lost ({type(error).__name__}: {error}): a "
            "server restart or failover, pg_terminate_backend, or the network; nothing "
            "was half-applied. Run again (with --wait SECONDS the runner reconnects by "
            "itself)"
        ) from error


async def _auto_contract(
    connection: RunConnection,
    sources: Sources,
    options: RunnerOptions,
    call: CallArguments,
    report: MigrationReport,
) -> None:
    """With auto_contract, after the expand parts: the contract parts that may run. Costs
    nothing when it is off or the folder has no contract part (the manifest says so
    without reading a file)."""
    if not options.auto_contract or call.dry_run:
        return
    manifest = sources.manifest
    if (
        manifest is not None
        and not sources.loaded
        and not any(name.endswith(".contract.sql") for name in manifest.names)
    ):
        return
    if not any(m.contract_file is not None for m in sources.migrations):
        return
    from natlangchain_migrate.contracts import auto_contract

    applied_now = (result.version for result in report.applied if result.version is not None)
    expanded = {*report.already_applied, *applied_now}
    report.contracts = await auto_contract(connection, sources.migrations, options, expanded)


def _log_plan(plan: MigrationPlan) -> None:
    """The plan, and (applied on purpose, after --skip) the versions below an applied one."""
    log.info(
        "migration_plan",
        pending_count=len(plan.pending),
        pending_versions=[m.version for m in plan.pending if not is_repeatable(m)],
        **_repeatables_pending(plan),
    )
    late = out_of_order(plan)
    if late:
        log.warning("applying_out_of_order", versions=[m.version for m in late])


def _repeatables_pending(plan: MigrationPlan) -> dict[str, list[str]]:
    names = [m.name for m in plan.pending if is_repeatable(m)]
    return {"pending_repeatables": names} if names else {}
