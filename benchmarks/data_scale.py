"""Big files against psql: time and peak RSS of the CLI applying a 100 MB (and, with
--gigabyte, a 1 GB) migration, INSERTs or a pg_dump-style COPY section (rows ending in
a blank, and rows without: ``--only copy`` runs both), beside
``psql -1 -f`` of the same file in the same run, and a no-op run's time and RSS.

    .venv/bin/python benchmarks/data_scale.py [--rounds N] [--gigabyte] [--only copy]
        [--against DIR] [--startup N] [--layout goose|dbmate|node-pg-migrate]

``--layout`` puts the file's rows in that tool's up section (its up marker on the first
line, a comment to psql): the section is streamed as a whole file is.

psql is the real one beside the embedded server's postgres (not /usr/bin/psql). Each
round applies each file to a fresh database (dropped after it, so 1 GB files fit in
memory), CLI and psql interleaved; medians, and each run's ratio to the psql run beside
it (its spread says how loaded the machine was). Peak RSS is the child's own (wait4),
so the harness's memory does not count. Goals (issue 21): time at most 1.1x psql's;
peak RSS within 64 MB of the no-op run's. "past start-up" is the CLI's time less a
no-op run's (imports, connecting, the ledger, the lock: what psql does not do), against
psql's: the cost of the data itself. CPU is the child's user + system time.

The package's bytecode is compiled first (compileall), as pip's install of a wheel does:
an editable install under PYTHONDONTWRITEBYTECODE=1 (this repository's set-up) would
compile every module of ours at each start. ``--against DIR``
also runs, interleaved, the package found in DIR (``git archive REV natlangchain_migrate |
tar -x -C DIR``): the code before a change, in the same conditions. ``--startup N``
times ``--check`` on an up-to-date database N times, interleaved with ``python -c pass``
and the floor of any asyncpg client (a process that imports it, connects and runs
``SELECT 1``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from harness.faults.seed_files import write_copy_seed, write_insert_seed
from harness.servers.pgcluster import PgCluster, embedded_bindir, memory_backed_dir
from harness.servers.sql import execute as sql_execute

MB = 1 << 20


def _fresh_database(cluster: PgCluster) -> str:
    name = f"ds_{uuid.uuid4().hex[:10]}"
    asyncio.run(sql_execute(cluster.socket_dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0'))
    return name


def _drop(cluster: PgCluster, name: str) -> None:
    asyncio.run(sql_execute(cluster.socket_dsn(), f'DROP DATABASE "{name}"'))


class Run(NamedTuple):
    seconds: float
    peak_mb: float
    cpu_s: float


def _measure(command: list[str], env: dict[str, str]) -> Run:
    """Wall seconds, peak RSS (MB) and CPU seconds of one child process, which must succeed."""
    started = time.perf_counter()
    # Run from /: ``python -m`` puts the working folder first on sys.path, before --against's.
    child = subprocess.Popen(
        command, env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:3]} failed: {_tail(child)}")
    return Run(elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime)


def _tail(child: subprocess.Popen[bytes]) -> str:
    return child.stderr.read()[-2000:].decode(errors="replace") if child.stderr else ""


def _cli(cluster: PgCluster, folder: Path, code: Path | None = None) -> Run:
    """One CLI run on a fresh database: this checkout's package, or the one in ``code``."""
    name = _fresh_database(cluster)
    env = os.environ | {
        "DATABASE_URL": cluster.socket_dsn(name),
        "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json",
    }
    if code is not None:
        env["PYTHONPATH"] = str(code)
    command = [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)]
    try:
        return _measure(command, env)
    finally:
        _drop(cluster, name)


def _psql(cluster: PgCluster, folder: Path) -> Run:
    (path,) = folder.glob("*.sql")
    name = _fresh_database(cluster)
    command = [
        str(embedded_bindir() / "psql"),
        "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-f", str(path),
        "-d", cluster.socket_dsn(name),
    ]  # fmt: skip
    try:
        return _measure(command, dict(os.environ))
    finally:
        _drop(cluster, name)


def _write_copy_seed_without_end_blanks(path: Path, size: int) -> int:
    """The COPY seed with no blank at the end of its rows, as pg_dump's rows mostly are
    (the seed's rows end in one, which the checksum strips)."""
    rows = write_copy_seed(path, size)
    plain = path.with_suffix(".tmp")
    with path.open("rb") as source, plain.open("wb") as target:
        target.writelines(line.replace(b" \n", b"\n") for line in source)
    plain.replace(path)
    return rows


# The up marker of a layout of up and down sections, put on the seed file's first line.
_UP_MARKERS = {
    "goose": b"-- +goose Up\n",
    "dbmate": b"-- migrate:up\n",
    "node-pg-migrate": b"-- Up Migration\n",
}


def _folder(
    root: Path, name: str, write: Callable[[Path, int], int], size: int, layout: str | None
) -> Path:
    folder = root / name
    folder.mkdir()
    path = folder / "001_seed.sql"
    write(path, size)
    if layout is not None:
        marked = path.with_suffix(".tmp")
        with path.open("rb") as source, marked.open("wb") as target:
            target.write(_UP_MARKERS[layout])
            shutil.copyfileobj(source, target, 1 << 20)
        marked.replace(path)
    return folder


def _compile(code: Path | None) -> None:
    """The package's bytecode, as pip writes it when it installs a wheel."""
    if code is None:
        import natlangchain_migrate

        code = Path(natlangchain_migrate.__file__).parent.parent
    package = str(code / "natlangchain_migrate")
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)


def _noop(cluster: PgCluster, root: Path, code: Path | None, rounds: int) -> Run:
    """Median time, RSS and CPU of a no-op run."""
    noop = root / "noop"
    noop.mkdir(exist_ok=True)
    (noop / "001_noop.sql").write_text("SELECT 1;\n")
    runs = [_cli(cluster, noop, code) for _ in range(max(3, rounds))]
    return Run(*(statistics.median(run[i] for run in runs) for i in range(3)))


def _floor(rounds: int) -> float:
    """The interpreter alone: ``python -c pass``."""
    runs = [_measure([sys.executable, "-c", "pass"], dict(os.environ)) for _ in range(rounds)]
    return statistics.median(run.seconds for run in runs)


# The floor of any asyncpg client: a process that imports it, connects and asks one thing.
_CLIENT_FLOOR = (
    "import asyncio, os, asyncpg\n"
    "async def main():\n"
    "    conn = await asyncpg.connect(os.environ['DATABASE_URL'])\n"
    "    await conn.fetchval('SELECT 1')\n"
    "    await conn.close()\n"
    "asyncio.run(main())\n"
)


def _startup(
    cluster: PgCluster, root: Path, subjects: list[tuple[str, Path | None]], rounds: int
) -> None:
    """``--check`` on an up-to-date database beside ``python -c pass`` and the client
    floor, interleaved: median and best wall time and median CPU of each."""
    name = _fresh_database(cluster)
    folder = root / "check"
    folder.mkdir()
    (folder / "001_noop.sql").write_text("SELECT 1;\n")
    env = os.environ | {"DATABASE_URL": cluster.socket_dsn(name)}
    cli = [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)]
    _measure(cli, env)  # applies 001: every later run finds nothing to do
    commands = {
        "python -c pass": ([sys.executable, "-c", "pass"], env),
        "client floor": ([sys.executable, "-c", _CLIENT_FLOOR], env),
    }
    for label, code in subjects:
        own = env | ({"PYTHONPATH": str(code)} if code else {})
        commands[f"{label} --check"] = ([*cli, "--check"], own)
    runs: dict[str, list[Run]] = {label: [] for label in commands}
    for _ in range(rounds):
        for label, (command, command_env) in commands.items():
            runs[label].append(_measure(command, command_env))
    for label, measured in runs.items():
        wall = sorted(run.seconds for run in measured)
        cpu = statistics.median(run.cpu_s for run in measured)
        print(
            f"{label:<24}{statistics.median(wall) * 1000:>7.0f} ms (best {wall[0] * 1000:.0f}),"
            f" CPU {cpu * 1000:.0f} ms"
        )
    _drop(cluster, name)


def _row(label: str, ours: list[Run], theirs: list[Run], noop: Run) -> str:
    cli = statistics.median(run.seconds for run in ours)
    psql = statistics.median(run.seconds for run in theirs)
    ratios = sorted(a.seconds / b.seconds for a, b in zip(ours, theirs, strict=True))
    spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}"
    peak = max(run.peak_mb for run in ours)
    cpu = statistics.median(run.cpu_s for run in ours)
    psql_cpu = statistics.median(run.cpu_s for run in theirs)
    return (
        f"{label:<30}{cli:>8.2f}{psql:>8.2f}{cli / psql:>7.2f}{spread:>12}"
        f"{(cli - noop.seconds) / psql:>10.2f}{cpu:>7.2f}{psql_cpu:>7.2f}"
        f"{peak:>7.0f}M{peak - noop.peak_mb:>6.0f}M"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gigabyte", action="store_true", help="add the 1 GB files")
    parser.add_argument(
        "--only", choices=("inserts", "copy", "none"), help="one kind of file, or none"
    )
    parser.add_argument(
        "--startup", type=int, metavar="N", help="also time --check N times beside its floors"
    )
    parser.add_argument(
        "--layout", choices=sorted(_UP_MARKERS), help="the rows in that tool's up section"
    )
    parser.add_argument(
        "--against", type=Path, help="a folder with another natlangchain_migrate in it"
    )
    args = parser.parse_args()
    sizes = [100 * MB] + ([1024 * MB] if args.gigabyte else [])
    subjects: list[tuple[str, Path | None]] = [("CLI", None)]
    if args.against:
        subjects.append(("against", args.against.resolve()))
    parent = memory_backed_dir(min_free_bytes=(6 if args.gigabyte else 2) << 30)
    cluster = PgCluster(embedded_bindir(), name="data_scale", parent=parent)
    cluster.init(max_wal_size="'4GB'", checkpoint_timeout="'30min'").start()
    try:
        with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
            root = Path(scratch)
            print(f"load average {Path('/proc/loadavg').read_text().split()[:3]}")
            print(f"python -c pass: {_floor(max(3, args.rounds)):.3f} s")
            for _, code in subjects:
                _compile(code)
            if args.startup:
                _startup(cluster, root, subjects, args.startup)
            noops = {name: _noop(cluster, root, code, args.rounds) for name, code in subjects}
            for name, noop in noops.items():
                print(
                    f"{name} no-op run: {noop.seconds:.3f} s, CPU {noop.cpu_s:.3f} s, "
                    f"peak RSS {noop.peak_mb:.0f} MB"
                )
            print(
                f"{'file':<30}{'CLI s':>8}{'psql s':>8}{'ratio':>7}{'each run':>12}"
                f"{'past s-u':>10}{'CPU s':>7}{'psql':>7}{'RSS':>8}{'+no-op':>7}"
            )
            for size in sizes:
                kinds = (
                    ("INSERTs", write_insert_seed),
                    ("COPY", write_copy_seed),
                    ("COPY, no end blanks", _write_copy_seed_without_end_blanks),
                )
                for kind, write in kinds:
                    if args.only and not kind.lower().startswith(args.only):
                        continue
                    label = f"{size // MB} MB {kind}"
                    folder = _folder(
                        root, label.replace(" ", "_").replace(",", ""), write, size, args.layout
                    )
                    ours: dict[str, list[Run]] = {name: [] for name, _ in subjects}
                    theirs: list[Run] = []
                    runners = [*subjects, ("psql", None)]
                    for round_number in range(args.rounds):
                        # Each round starts with the next one: none is always first
                        # after the file was written (its writeback competes).
                        turn = round_number % len(runners)
                        for name, code in runners[turn:] + runners[:turn]:
                            if name == "psql":
                                theirs.append(_psql(cluster, folder))
                            else:
                                ours[name].append(_cli(cluster, folder, code))
                    for name, _ in subjects:
                        tag = label if name == "CLI" else f"  {name}"
                        print(_row(tag, ours[name], theirs, noops[name]), flush=True)
                    for file in folder.iterdir():
                        file.unlink()
            print(f"load average {Path('/proc/loadavg').read_text().split()[:3]}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
