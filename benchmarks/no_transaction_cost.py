"""What running a file statement by statement costs: the same statements as no-transaction
files against transactional ones, on the generated history, interleaved, medians.

    .venv/bin/python benchmarks/no_transaction_cost.py [--rounds N] [--count N] [--cli]

Both sides apply the same generated files (harness.faults.history) to a fresh database:
once as they are (one transaction per file with its ledger row), once with the
``-- natlangchain: no-transaction`` header added (one transaction per statement
with its journal step). The goal is a ratio of at most 1.2x. In process by
default (``await migrate()``); ``--cli`` times whole CLI processes instead.
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
from pathlib import Path

import structlog

from harness.faults.history import NO_TRANSACTION_HEADER, write_history
from harness.servers.pgcluster import PgCluster, embedded_bindir
from harness.servers.sql import execute as sql_execute
from natlangchain_migrate import migrate

GOAL = 1.2


def _copy_as_no_transaction(source: Path, target: Path) -> Path:
    target.mkdir()
    for file in sorted(source.glob("*.sql")):
        if not file.name.endswith(".down.sql"):
            (target / file.name).write_text(NO_TRANSACTION_HEADER + file.read_text())
    return target


def _fresh_database(cluster: PgCluster) -> str:
    name = f"nt_{uuid.uuid4().hex[:10]}"
    asyncio.run(sql_execute(cluster.socket_dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0'))
    return cluster.socket_dsn(name)


def _apply_in_process(url: str, folder: Path) -> float:
    started = time.perf_counter()
    asyncio.run(migrate(url, migrations_dir=folder))
    return time.perf_counter() - started


def _apply_with_cli(url: str, folder: Path) -> float:
    env = os.environ | {"DATABASE_URL": url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder)],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def measure(cluster: PgCluster, *, rounds: int, count: int, cli: bool = False) -> float:
    """Print both medians and their ratio; return the ratio."""
    apply = _apply_with_cli if cli else _apply_in_process
    with tempfile.TemporaryDirectory() as workdir:
        transactional = Path(workdir) / "tx"
        write_history(transactional, count)
        no_transaction = _copy_as_no_transaction(transactional, Path(workdir) / "no_tx")
        statements = sum(
            file.read_text().count(";\n")
            for file in transactional.glob("*.sql")
            if not file.name.endswith(".down.sql")
        )
        apply(_fresh_database(cluster), transactional)  # warm the caches once
        tx_times: list[float] = []
        no_tx_times: list[float] = []
        for _ in range(rounds):
            tx_times.append(apply(_fresh_database(cluster), transactional))
            no_tx_times.append(apply(_fresh_database(cluster), no_transaction))
    tx, no_tx = statistics.median(tx_times) * 1000, statistics.median(no_tx_times) * 1000
    ratio = no_tx / tx
    verdict = "ok" if ratio <= GOAL else "OVER GOAL"
    where = "CLI processes" if cli else "in process"
    print(
        f"no-transaction vs transactional, {count} generated migrations (~{statements} "
        f"statements), {where}: {no_tx:8.1f} ms vs {tx:8.1f} ms -> {ratio:4.2f}x "
        f"(goal <= {GOAL}x, {verdict}; n={rounds}; "
        f"{(no_tx - tx) / statements * 1000:.0f} us more per statement)",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--cli", action="store_true", help="time whole CLI processes")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    cluster = PgCluster(embedded_bindir(), name="ntbench").init(fsync="on", full_page_writes="on")
    cluster.start()
    try:
        measure(cluster, rounds=args.rounds, count=args.count, cli=args.cli)
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
