"""A rolling deploy under traffic: release A's replicas replaced by release B's one by one.

    result = await rolling_deploy(database_url, "expand_contract")

Every replica is its own ``uvicorn`` process on its own port, migrating at start-up and
heartbeating (harness/releases.py). The deploy, as Kubernetes does it with ``maxSurge: 1,
maxUnavailable: 0``, while a LoadGenerator keeps reading and writing:

1. ``steady``: the A replicas serve, no migration runs;
2. ``expand``: the first B replica starts and, at its start-up, applies B's ``002`` (the
   expand part, or the control's one-step rename) while the A replicas serve;
3. ``rollout``: for each A replica, a B replica starts and joins the rotation (once it
   answers ``/healthz`` and deploy/'s readiness probe, ``--check``, exits 0), then the A
   replica is drained and stopped; after the second step an A replica still running is
   restarted (a node drain, an eviction) and must serve again, against a database a newer
   release migrated. Right after the first B replica is up, the post-deploy Job
   (``natlangchain-migrate contract``) is started too early, on purpose: it must leave the
   contract for later while A replicas are alive;
4. ``contract``: the last A replica has stopped; the post-deploy Job runs the contract;
5. ``after``: B alone, until the run has sent at least ``min_requests``; the Job runs once
   more and must find nothing to do.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from harness.loadgen import LoadGenerator, Sample, percentile
from harness.releases import Rename, write_release
from harness.servers import AppServer, ServerFailedError

# No access log (a line per request would cost more CPU than the request); connections kept
# alive longer than the load generator keeps them idle (harness/loadgen.py).
UVICORN_OPTIONS = ("--no-access-log", "--timeout-keep-alive", "30")
PHASES = ("steady", "expand", "rollout", "contract", "after")


@dataclass
class JobRun:
    """One run of the post-deploy Job: when (phase), its exit code and output."""

    phase: str
    returncode: int
    stdout: str
    stderr: str


@dataclass
class PhaseFigures:
    requests: int
    failures: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    seconds: float


@dataclass
class RolloutResult:
    """What happened: every request, each restart's fate, the Job's runs, the ledger after."""

    rename: Rename
    samples: list[Sample]
    # restarted replica -> requests it served successfully after coming back (None: it never
    # came back, the log says why)
    restarted: dict[str, int | None]
    last_a_stopped_at: dt.datetime
    # rows whose title and name differ when the last A stopped (None: no two columns then)
    out_of_sync_rows: int | None
    # requests sent again on a fresh connection: a kept-alive one was closed before answering
    resent: dict[str, int]
    jobs: list[JobRun]
    contracts: list[dict[str, Any]]
    advisory_locks_while_serving: int
    advisory_locks_after: int
    phase_seconds: dict[str, float]
    # replica -> the exit code of its readiness probe (``--check``) before it joined
    probes: dict[str, int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)

    @property
    def failures(self) -> list[Sample]:
        return [sample for sample in self.samples if sample.failure is not None]

    def figures(self, phase: str) -> PhaseFigures:
        """Requests, failures and latency of the requests that started in ``phase``."""
        chosen = [sample for sample in self.samples if sample.phase == phase]
        latencies = [sample.latency_s * 1000 for sample in chosen]
        return PhaseFigures(
            requests=len(chosen),
            failures=sum(sample.failure is not None for sample in chosen),
            p50_ms=percentile(latencies, 0.50),
            p99_ms=percentile(latencies, 0.99),
            max_ms=max(latencies, default=0.0),
            seconds=self.phase_seconds.get(phase, 0.0),
        )


class _Fleet:
    """The replicas running now, by name (``A1``, ``B3``, ``A4-restarted``), and their logs."""

    def __init__(self, database_url: str, releases: dict[str, Path], load: LoadGenerator):
        self.database_url = database_url
        self.releases = releases
        self.load = load
        self.running: dict[str, AppServer] = {}
        self.logs: dict[str, str] = {}
        self.probes: dict[str, int] = {}  # replica -> its readiness probe's exit code

    async def start(self, name: str, release: str) -> None:
        """Start a replica; once it answers /healthz and its readiness probe (deploy/'s
        ``natlangchain-migrate --check``, with its release's migrations) exits 0, put it
        into rotation."""
        server = AppServer(
            "uvicorn",
            "rolling_app:app",
            workers=1,
            database_url=self.database_url,
            options=("--app-dir", str(self.releases[release]), *UVICORN_OPTIONS),
            env={"NATLANGCHAIN_MIGRATE_REPLICA_LABEL": name},
        ).start()
        self.running[name] = server
        try:
            await asyncio.to_thread(server.wait_for_all_workers)
            code, said, _ = await _cli(self.database_url, "--check", "--migrations-dir",
                                       str(self.releases[release] / "migrations"))  # fmt: skip
            self.probes[name] = code
            if code:
                raise ServerFailedError(f"{name} is not ready: --check exited {code}: {said}")
        except ServerFailedError:
            await self.stop(name, drain=False)
            raise
        self.load.add(name, server.port)

    async def stop(self, name: str, *, drain: bool = True) -> None:
        """Drain a replica (out of rotation, in-flight requests done), then SIGTERM it.

        A replica that is not running (it never came back from a restart) is left alone.
        """
        if name not in self.running:
            return
        if drain:
            await self.load.drain(name)
        server = self.running.pop(name)
        self.logs[name] = await asyncio.to_thread(server.stop)

    async def stop_all(self) -> None:
        for name in list(self.running):
            await self.stop(name, drain=False)


async def rolling_deploy(
    database_url: str,
    rename: Rename,
    *,
    replicas: int = 4,
    steady_s: float = 6.0,
    dwell_s: float = 1.0,
    min_requests: int = 10_000,
    concurrency: int = 24,
) -> RolloutResult:
    """Deploy B over ``replicas`` A replicas under traffic on ``database_url``; what happened."""
    with tempfile.TemporaryDirectory(prefix="rolling-") as tmp:
        releases = {name: write_release(Path(tmp), name, rename) for name in ("A", "B")}
        load = LoadGenerator(concurrency)
        fleet = _Fleet(database_url, releases, load)
        try:
            return await _deploy(fleet, rename, replicas, steady_s, dwell_s, min_requests)
        finally:
            await load.stop()
            await fleet.stop_all()


async def _deploy(
    fleet: _Fleet, rename: Rename, replicas: int, steady_s: float, dwell_s: float, wanted: int
) -> RolloutResult:
    load, url = fleet.load, fleet.database_url
    migrations_b = fleet.releases["B"] / "migrations"
    await asyncio.gather(*(fleet.start(f"A{n}", "A") for n in range(1, replicas + 1)))
    clock = _PhaseClock(load)
    load.start()
    clock.enter("steady")
    await asyncio.sleep(steady_s)
    clock.enter("expand")
    jobs: list[JobRun] = []
    came_back: dict[str, bool] = {}
    old = {step: f"A{step}" for step in range(1, replicas + 1)}  # what runs in each A slot
    for step in range(1, replicas + 1):
        await fleet.start(f"B{step}", "B")
        if step == 1:  # the expand part has run; too early for the contract: A is alive
            clock.enter("rollout")
            jobs.append(await _contract_job(url, migrations_b, "rollout"))
        await asyncio.sleep(dwell_s)
        await fleet.stop(old[step])
        if step == 2:  # an old replica restarts mid-rollout, the database ahead of it
            old[replicas], came_back[old[replicas]] = await _restart(fleet, old[replicas])
        await asyncio.sleep(dwell_s)
    last_a_stopped_at = await _clock(url)
    out_of_sync = await _out_of_sync(url)
    clock.enter("contract")
    jobs.append(await _contract_job(url, migrations_b, "contract"))
    locks_while_serving = await _advisory_locks(url)
    clock.enter("after")
    await asyncio.sleep(dwell_s)
    await load.until(wanted)
    jobs.append(await _contract_job(url, migrations_b, "after"))
    clock.enter("done")
    await load.stop()
    await fleet.stop_all()
    served = {
        name: sum(sample.replica == name and sample.failure is None for sample in load.samples)
        for name in came_back
    }
    return RolloutResult(
        rename=rename,
        samples=load.samples,
        restarted={name: served[name] if back else None for name, back in came_back.items()},
        last_a_stopped_at=last_a_stopped_at,
        out_of_sync_rows=out_of_sync,
        resent=dict(load.resent),
        jobs=jobs,
        contracts=await _contracts(url),
        advisory_locks_while_serving=locks_while_serving,
        advisory_locks_after=await _advisory_locks(url),
        phase_seconds=clock.seconds,
        probes=fleet.probes,
        logs=fleet.logs,
    )


class _PhaseClock:
    """Labels the requests that start from now on with a phase, and times each phase."""

    def __init__(self, load: LoadGenerator) -> None:
        self.load = load
        self.seconds: dict[str, float] = {}
        self._since = 0.0

    def enter(self, phase: str) -> None:
        now = time.perf_counter()
        if self.load.phase in PHASES:
            self.seconds[self.load.phase] = now - self._since
        self.load.phase, self._since = phase, now


async def _restart(fleet: _Fleet, name: str) -> tuple[str, bool]:
    """Stop replica ``name`` and start it again as ``<name>-restarted``: did it come back?"""
    await fleet.stop(name)
    again = f"{name}-restarted"
    try:
        await fleet.start(again, name[0])
    except ServerFailedError:
        return again, False
    return again, True


async def _contract_job(url: str, migrations: Path, phase: str) -> JobRun:
    """The post-deploy Job: ``natlangchain-migrate contract`` as a process, as a Job runs it."""
    return JobRun(phase, *await _cli(url, "contract", "--migrations-dir", str(migrations)))


async def _cli(url: str, *args: str) -> tuple[int, str, str]:
    """``natlangchain-migrate ARGS`` as a process on ``url``, logging JSON: exit code,
    stdout, stderr."""
    environment = {**os.environ, "DATABASE_URL": url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "natlangchain_migrate", *args, env=environment,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def _query(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def _clock(url: str) -> dt.datetime:
    """The database's clock now (what schema_contracts.applied_at is compared with)."""
    (row,) = await _query(url, "SELECT clock_timestamp() AS now")
    now: dt.datetime = row["now"]
    return now


async def _out_of_sync(url: str) -> int | None:
    """Rows whose two columns disagree (the dual-write trigger's and the backfill's miss)."""
    (row,) = await _query(
        url,
        "SELECT count(*) FILTER (WHERE attname IN ('title', 'name')) = 2 AS both "
        "FROM pg_attribute WHERE attrelid = 'items'::regclass AND NOT attisdropped",
    )
    if not row["both"]:
        return None
    (row,) = await _query(url, "SELECT count(*) AS n FROM items WHERE name IS DISTINCT FROM title")
    return int(row["n"])


async def _advisory_locks(url: str) -> int:
    """Advisory locks held in this database by any session (pg_locks)."""
    (row,) = await _query(
        url,
        "SELECT count(*) AS held FROM pg_locks WHERE locktype = 'advisory' "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    return int(row["held"])


async def _contracts(url: str) -> list[dict[str, Any]]:
    """The contract ledger's rows (none when the table was never created)."""
    (row,) = await _query(url, "SELECT to_regclass('schema_contracts') IS NOT NULL AS found")
    if not row["found"]:
        return []
    rows = await _query(url, "SELECT * FROM schema_contracts ORDER BY version")
    return [dict(each) for each in rows]
