"""A fleet run: every target (a schema of a database) migrated, each under its own lock
with its own ledger, with bounded parallelism, a canary wave first, and one report.

    scan (one catalog query per database) -> behind targets -> canary wave -> the rest

A target the catalog query finds current is never connected to. Behind targets run one
``Migrator.up()`` each, on connections borrowed from one pool per database (so tenants of
one database share connections), at most ``concurrency`` at once overall and at most
``server_cap`` per server (default: half the server's free connection slots). A failing
target's migration rolls back as in any run; it is reported and the others go on, until
``max_failures``. A canary failure stops the rollout before any other target is touched.
A rerun resumes: only the targets still behind get a run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from natlangchain_migrate.connection import connect, server_settings
from natlangchain_migrate.dsn import as_url, scrub
from natlangchain_migrate.durations import ms_since
from natlangchain_migrate.errors import ConfigurationError, ExitCode, MigrateError
from natlangchain_migrate.events import log, scoped_events
from natlangchain_migrate.fleet_catalog import LedgerSummary, expected_digest, read_ledgers
from natlangchain_migrate.fleet_report import FleetReport, Outcome, TargetResult
from natlangchain_migrate.fleet_targets import Database, Selection, Shard, Target
from natlangchain_migrate.migrator import Migrator
from natlangchain_migrate.pending import Sources
from natlangchain_migrate.settings import CallArguments, ExecutionOptions, LockOptions

if TYPE_CHECKING:
    from importlib.abc import Traversable

    import asyncpg

Progress = Callable[[TargetResult, int, int], None]

_FREE_SLOTS = (
    "SELECT current_setting('max_connections')::int"
    " - current_setting('superuser_reserved_connections')::int"
    " - coalesce(current_setting('reserved_connections', true)::int, 0)"
    " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int"
)


class FleetOptions(NamedTuple):
    """How the rollout goes: parallelism, canary wave, when to stop."""

    concurrency: int = 8  # targets migrated at once, overall
    server_cap: int | None = None  # at once per server; default half its free slots
    canary: int = 0  # behind targets migrated first; any failure among them stops all
    max_failures: int | None = None  # stop starting targets after this many failures
    shard: Shard | None = None
    quiet: bool = True  # drop each target's info events (the fleet logs one per target)


class Scanned(NamedTuple):
    """A database after its catalog query: its targets and their ledgers."""

    database: Database
    targets: list[tuple[Target, LedgerSummary]]


class Fleet:
    """Migrations of one folder into many targets. ``databases``: where the targets live;
    ``selection``: which schemas of each. The other arguments are ``Migrator``'s."""

    def __init__(
        self,
        databases: Sequence[Database],
        selection: Selection,
        *,
        migrations_dir: Traversable | Path | str | None = None,
        lock: LockOptions | None = None,
        execution: ExecutionOptions | None = None,
        options: FleetOptions | None = None,
        connect_wait: float = 0.0,
    ) -> None:
        self.databases = list(databases)
        self.selection = selection
        self.migrations_dir = migrations_dir
        self.lock = lock or LockOptions()
        self.execution = execution or ExecutionOptions()
        self.options = options or FleetOptions()
        self.connect_wait = connect_wait
        if self.options.concurrency < 1:
            raise ConfigurationError(f"--concurrency {self.options.concurrency}: give 1 or more")
        self._named_by_database = len(self.databases) > 1
        self._pools: dict[str, asyncpg.Pool] = {}
        self._left: dict[str, int] = {}  # behind targets not yet finished, per database
        self._server_slots: dict[str, asyncio.Semaphore] = {}
        self._server_lock = asyncio.Lock()
        self.connections = 0

    def target(self, database: Database, schema: str) -> Target:
        name = f"{database.label}/{schema}" if self._named_by_database else schema
        return Target(database, schema, name)

    async def scan(self) -> tuple[list[Scanned], list[TargetResult]]:
        """One catalog query per database (``concurrency`` at once); a database that
        cannot be read is one failed result."""
        limit = asyncio.Semaphore(self.options.concurrency)

        async def one(database: Database) -> Scanned | TargetResult:
            async with limit:
                try:
                    conn = await connect(database.dsn, wait=self.connect_wait)
                    self.connections += 1
                    try:
                        summaries = await read_ledgers(conn, self.selection)
                    finally:
                        await conn.close()
                except Exception as error:  # one database down is that database's failure
                    return self._unreadable(database, error)
            pairs = [(self.target(database, s.schema), s) for s in summaries]
            return Scanned(database, [p for p in pairs if p[0].in_shard(self.options.shard)])

        found = await asyncio.gather(*(one(database) for database in self.databases))
        scanned = [item for item in found if isinstance(item, Scanned)]
        return scanned, [item for item in found if isinstance(item, TargetResult)]

    def _unreadable(self, database: Database, error: BaseException) -> TargetResult:
        code = error.exit_code if isinstance(error, MigrateError) else ExitCode.UNREACHABLE
        what = self.selection.pattern or self.selection.schema
        return TargetResult(
            id=database.label,
            database=database.label,
            schema=what if self.selection.query is None else "(query)",
            outcome=Outcome.FAILED,
            error=_one_line(error, database.dsn),
            exit_code=int(code),
        )

    async def up(self, progress: Progress | None = None) -> FleetReport:
        """Migrate every behind target; a report with one result per target."""
        started = time.monotonic()
        report = FleetReport()
        sources = Sources.for_run(self.migrations_dir, CallArguments(), pooled=True)
        expected = expected_digest(sources)
        scanned, unreadable = await self.scan()
        report.databases = len(self.databases)
        results = list(unreadable)
        behind: list[tuple[Target, LedgerSummary]] = []
        for item in scanned:
            for target, summary in item.targets:
                if summary.up_to_date(expected):
                    results.append(_current(target, summary))
                else:
                    behind.append((target, summary))
        behind.sort(key=lambda pair: pair[0].id)  # the canary wave is the first ids
        log.info("fleet_started", targets=len(results) + len(behind), behind=len(behind))
        try:
            results += await self._roll_out(behind, report, progress, len(results))
        finally:
            await self.close_pools()
        report.results = sorted(results, key=lambda result: result.id)
        report.connections = self.connections
        report.duration_ms = ms_since(started)
        log.info("fleet_done", **report.as_dict()["counts"], stopped=report.stopped)
        return report

    async def _roll_out(
        self,
        behind: list[tuple[Target, LedgerSummary]],
        report: FleetReport,
        progress: Progress | None,
        done_before: int,
    ) -> list[TargetResult]:
        """The canary wave, then the rest, each target once; what was not started when
        the rollout stopped is reported as such."""
        total = done_before + len(behind)
        finished: list[TargetResult] = []
        for target, _ in behind:
            label = target.database.label
            self._left[label] = self._left.get(label, 0) + 1

        def note(result: TargetResult) -> None:
            finished.append(result)
            log.info("fleet_target_done", **result.as_dict())
            if progress is not None:
                progress(result, done_before + len(finished), total)

        canary, rest = behind[: self.options.canary], behind[self.options.canary :]
        await self._wave(canary, note, report, canary=True)
        if canary and any(r.outcome is Outcome.FAILED for r in finished):
            report.stopped = "a canary target failed; no other target was touched"
        else:
            await self._wave(rest, note, report, canary=False)
        started = {result.id for result in finished}
        for target, summary in behind:
            if target.id not in started:
                finished.append(
                    TargetResult(
                        target.id,
                        target.database.label,
                        target.schema,
                        Outcome.NOT_STARTED,
                        version_before=summary.highest,
                        version_after=summary.highest,
                    )
                )
        return finished

    async def _wave(
        self,
        targets: list[tuple[Target, LedgerSummary]],
        note: Callable[[TargetResult], None],
        report: FleetReport,
        *,
        canary: bool,
    ) -> None:
        slots = asyncio.Semaphore(self.options.concurrency)
        failures = 0
        limit = self.options.max_failures

        async def run(target: Target, summary: LedgerSummary) -> None:
            nonlocal failures
            try:
                result = await self._migrate(target, summary, canary=canary)
                if result.outcome is Outcome.FAILED:
                    failures += 1
                note(result)
                await self._done_with(target.database)
            finally:
                slots.release()

        async with asyncio.TaskGroup() as group:
            for target, summary in targets:
                await slots.acquire()
                if not canary and limit is not None and failures >= limit:
                    slots.release()
                    report.stopped = f"--max-failures {limit} reached"
                    break
                group.create_task(run(target, summary))

    async def _migrate(
        self, target: Target, summary: LedgerSummary, *, canary: bool
    ) -> TargetResult:
        """One target's run, its events tagged with its id."""
        with scoped_events({"target": target.id}, quiet=self.options.quiet):
            return await self._migrate_one(target, summary, canary=canary)

    async def _migrate_one(
        self, target: Target, summary: LedgerSummary, *, canary: bool
    ) -> TargetResult:
        """One target's run on a pooled connection, under its server's cap."""
        started = time.monotonic()
        applied: tuple[int, ...] = ()
        try:
            pool = await self.pool_for(target.database)
            async with await self._server_slot(target.database, pool):
                migrator = Migrator(
                    pool=pool,
                    migrations_dir=self.migrations_dir,
                    schema=target.schema,
                    lock=self.lock,
                    execution=self.execution,
                )
                run = await migrator.up()
        except Exception as error:
            applied = tuple(
                result.version
                for result in getattr(error, "applied", ())
                if result.version is not None
            )
            code = error.exit_code if isinstance(error, MigrateError) else ExitCode.INTERNAL
            log.warning("fleet_target_failed", error=_one_line(error, target.database.dsn))
            return TargetResult(
                target.id,
                target.database.label,
                target.schema,
                Outcome.FAILED,
                version_before=summary.highest,
                version_after=max((summary.highest or 0, *applied)) or None,
                applied=applied,
                duration_ms=ms_since(started),
                error=_one_line(error, target.database.dsn),
                exit_code=int(code),
                canary=canary,
            )
        applied = tuple(r.version for r in run.applied if r.version is not None)
        after = max((*run.already_applied, *applied), default=None)
        return TargetResult(
            target.id,
            target.database.label,
            target.schema,
            Outcome.APPLIED,
            version_before=summary.highest,
            version_after=after,
            applied=applied,
            duration_ms=ms_since(started),
            canary=canary,
        )

    async def pool_for(self, database: Database) -> asyncpg.Pool:
        """The database's pool, made on first use: connections opened as needed, up to
        the concurrency (plus one for a long migration's progress reports)."""
        pool = self._pools.get(database.label)
        if pool is None:
            import asyncpg

            pool = asyncpg.create_pool(
                as_url(database.dsn),
                min_size=0,
                max_size=self.options.concurrency + 1,
                server_settings=server_settings(transaction_pooling=False),
                connect=self._counted_connect,
            )
            self._pools[database.label] = pool
            await pool
        return pool

    async def _counted_connect(self, *args: Any, **kwargs: Any) -> asyncpg.Connection:
        import asyncpg

        self.connections += 1
        return await asyncpg.connect(*args, **kwargs)

    async def _server_slot(self, database: Database, pool: asyncpg.Pool) -> asyncio.Semaphore:
        """The server's semaphore: ``server_cap``, or half its free connection slots."""
        async with self._server_lock:
            slots = self._server_slots.get(database.server)
            if slots is None:
                cap = self.options.server_cap
                if cap is None:
                    free = int(await pool.fetchval(_FREE_SLOTS))
                    cap = max(1, free // 2)
                    log.info("fleet_server_cap", server=database.server, cap=cap, free=free)
                slots = self._server_slots[database.server] = asyncio.Semaphore(cap)
        return slots

    async def _done_with(self, database: Database) -> None:
        """Close a database's pool once its last behind target has finished: a hundred
        databases must not keep a hundred idle connections open to one server."""
        self._left[database.label] -= 1
        if self._left[database.label] == 0:
            pool = self._pools.pop(database.label, None)
            if pool is not None:
                await pool.close()

    async def close_pools(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()


def _current(target: Target, summary: LedgerSummary) -> TargetResult:
    return TargetResult(
        target.id,
        target.database.label,
        target.schema,
        Outcome.UP_TO_DATE,
        version_before=summary.highest,
        version_after=summary.highest,
    )


def _one_line(error: BaseException, dsn: str) -> str:
    """The error on one line, scrubbed of the DSN's password: ours say what caused them;
    anything else gets its cause's class and message after it."""
    text = str(error) or type(error).__name__
    if not isinstance(error, MigrateError) and error.__cause__ is not None:
        text += f" <- {type(error.__cause__).__name__}: {error.__cause__}"
    return scrub(text.replace("\n", " "), dsn)
