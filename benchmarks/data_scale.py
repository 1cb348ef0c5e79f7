"""Big files against psql: time and peak RSS of the CLI applying a 100 MB (and, with
--gigabyte, a 1 GB) migration, INSERTs or a pg_dump-style COPY section, beside
``psql -1 -f`` of the same file in the same run, and a no-op run's time and RSS.

    .venv/bin/python benchmarks/data_scale.py [--rounds N] [--gigabyte] [--only copy]

psql is the real one beside the embedded server's postgres (not /usr/bin/psql). Each
round applies each file to a fresh database (dropped after it, so 1 GB files fit in
memory), CLI and psql interleaved; medians, and each run's ratio to the psql run beside
it (its spread says how loaded the machine was). Peak RSS is the child's own (wait4),
so the harness's memory does not count. Goals (issue 21): time at most 1.1x psql's;
peak RSS within 64 MB of the no-op run's. "past start-up" is the CLI's time less a
no-op run's (imports, connecting, the ledger, the lock: what psql does not do), against
psql's: the cost of the data itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

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


def _measure(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process, which must succeed."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command[:3]} failed: {_tail(child)}")
    return elapsed, usage.ru_maxrss / 1024


def _tail(child: subprocess.Popen[bytes]) -> str:
    return child.stderr.read()[-2000:].decode(errors="replace") if child.stderr else ""


def _cli(cluster: PgCluster, folder: Path) -> tuple[float, float]:
    name = _fresh_database(cluster)
    env = os.environ | {
        "DATABASE_URL": cluster.socket_dsn(name),
        "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json",
    }
    command = [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)]
    try:
        return _measure(command, env)
    finally:
        _drop(cluster, name)


def _psql(cluster: PgCluster, folder: Path) -> tuple[float, float]:
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


def _folder(root: Path, name: str, write: Callable[[Path, int], int], size: int) -> Path:
    folder = root / name
    folder.mkdir()
    write(folder / "001_seed.sql", size)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gigabyte", action="store_true", help="add the 1 GB files")
    parser.add_argument("--only", choices=("inserts", "copy"), help="one kind of file")
    args = parser.parse_args()
    sizes = [100 * MB] + ([1024 * MB] if args.gigabyte else [])
    parent = memory_backed_dir(min_free_bytes=(6 if args.gigabyte else 2) << 30)
    cluster = PgCluster(embedded_bindir(), name="data_scale", parent=parent)
    cluster.init(max_wal_size="'4GB'", checkpoint_timeout="'30min'").start()
    try:
        with tempfile.TemporaryDirectory(dir="/tmp") as scratch:
            root = Path(scratch)
            noop = root / "noop"
            noop.mkdir()
            (noop / "001_noop.sql").write_text("SELECT 1;\n")
            noops = [_cli(cluster, noop) for _ in range(max(3, args.rounds))]
            noop_s = statistics.median(seconds for seconds, _ in noops)
            noop_rss = statistics.median(peak for _, peak in noops)
            print(f"no-op run: {noop_s:.2f} s, peak RSS {noop_rss:.0f} MB")
            print(
                f"{'file':<24}{'CLI s':>8}{'psql s':>8}{'ratio':>7}{'each run':>16}"
                f"{'past start-up':>15}{'CLI RSS':>9}{'+no-op':>8}"
            )
            for size in sizes:
                kinds = (("INSERTs", write_insert_seed), ("COPY", write_copy_seed))
                for kind, write in kinds:
                    if args.only and kind.lower() != args.only:
                        continue
                    label = f"{size // MB} MB {kind}"
                    folder = _folder(root, label.replace(" ", "_"), write, size)
                    ours, theirs, rss = [], [], []
                    for _ in range(args.rounds):
                        seconds, peak = _cli(cluster, folder)
                        ours.append(seconds)
                        rss.append(peak)
                        theirs.append(_psql(cluster, folder)[0])
                    cli, psql = statistics.median(ours), statistics.median(theirs)
                    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
                    spread = f"{ratios[0]:.2f}-{ratios[-1]:.2f}"
                    peak = max(rss)
                    print(
                        f"{label:<24}{cli:>8.2f}{psql:>8.2f}{cli / psql:>7.2f}{spread:>16}"
                        f"{(cli - noop_s) / psql:>15.2f}{peak:>8.0f}M{peak - noop_rss:>7.0f}M",
                        flush=True,
                    )
                    for file in folder.iterdir():
                        file.unlink()
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
