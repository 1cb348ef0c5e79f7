"""A batched backfill against one UPDATE, with an app-like writer beside it.

    .venv/bin/python benchmarks/backfill_scale.py [--rows N] [--seconds S]

A table of N rows (default 1 million); a writer updates random rows, one short
transaction each, as fast as it can. Measured in one run: the writer's latencies alone,
then during the backfill (the CLI applying a ``backfill`` migration, target 200ms), then
during one ``UPDATE`` of the whole table; and the backfill's time against the UPDATE's.
Goals (issue 21): writer p99 during the backfill at most 2x its p99 alone, no write
waiting longer than the target batch time plus 100 ms, and the backfill's throughput at
least 0.5x the single UPDATE's. It prints each against its goal, how many writes waited
over 300 ms, the backfill's throttle and over-target events, and the machine's load
average at the start and the end (a shared machine's load moves the writer's p99).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path

import asyncpg

from harness.servers.pgcluster import PgCluster, embedded_bindir, memory_backed_dir
from harness.servers.sql import execute as sql_execute

FILL = (
    "-- natlangchain: backfill table=big key=id target=200ms\n"
    "UPDATE big SET doubled = v * 2 WHERE id BETWEEN :lo AND :hi;\n"
)


async def _writer(url: str, rows: int, stop: asyncio.Event, latencies: list[float]) -> None:
    conn = await asyncpg.connect(url)
    try:
        while not stop.is_set():
            started = time.perf_counter()
            await conn.execute("UPDATE big SET v = v + 1 WHERE id = $1", random.randint(1, rows))
            latencies.append(time.perf_counter() - started)
    finally:
        await conn.close()


async def _with_writer(url: str, rows: int, work: Awaitable[object]) -> tuple[list[float], float]:
    """Latencies of the writer while ``work`` runs, and the work's seconds."""
    stop = asyncio.Event()
    latencies: list[float] = []
    writer = asyncio.ensure_future(_writer(url, rows, stop, latencies))
    await asyncio.sleep(0.5)
    latencies.clear()
    started = time.perf_counter()
    await work
    elapsed = time.perf_counter() - started
    stop.set()
    await writer
    return latencies, elapsed


async def _cli(url: str, folder: Path, counts: Counter[str]) -> None:
    """The CLI applying the backfill; ``counts`` gets its events by name."""
    env = os.environ | {"DATABASE_URL": url, "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", str(folder),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"the backfill run failed: {stderr.decode()[-2000:]}")
    for line in stderr.decode().splitlines():
        if line.startswith("{"):
            counts[json.loads(line)["event"]] += 1


async def _setup(cluster: PgCluster, rows: int) -> str:
    name = f"bf_{uuid.uuid4().hex[:10]}"
    await sql_execute(cluster.socket_dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = cluster.socket_dsn(name)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, doubled int); "
            f"INSERT INTO big (id, v) SELECT g, g % 1000 FROM generate_series(1, {rows}) g"
        )
        await conn.execute("VACUUM ANALYZE big")
    finally:
        await conn.close()
    return url


def _p(latencies: list[float], q: float) -> float:
    return statistics.quantiles(latencies, n=1000, method="inclusive")[int(q * 1000) - 1] * 1000


async def _main(rows: int, seconds: float) -> None:
    print("load average (1, 5, 15 min) at the start: "
          + ", ".join(f"{x:.2f}" for x in os.getloadavg()))  # fmt: skip
    cluster = PgCluster(embedded_bindir(), name="backfill_scale", parent=memory_backed_dir())
    cluster.init(max_wal_size="'4GB'").start()
    try:
        url = await _setup(cluster, rows)
        alone, _ = await _with_writer(url, rows, asyncio.sleep(seconds))
        with tempfile.TemporaryDirectory() as scratch:
            folder = Path(scratch)
            (folder / "001_fill.sql").write_text(FILL)
            counts: Counter[str] = Counter()
            during, backfill_s = await _with_writer(url, rows, _cli(url, folder, counts))
        url2 = await _setup(cluster, rows)
        conn = await asyncpg.connect(url2)
        try:
            update, update_s = await _with_writer(
                url2, rows, conn.execute("UPDATE big SET doubled = v * 2")
            )
        finally:
            await conn.close()
        print(f"rows {rows:,}; writer p50 / p99 / max in ms, and the work's time")
        for label, values, took in (
            ("writer alone", alone, None),
            ("during the backfill", during, backfill_s),
            ("during one UPDATE", update, update_s),
        ):
            extra = f"  {took:.1f}s ({rows / took:,.0f} rows/s)" if took else ""
            print(
                f"{label:<22}{_p(values, 0.5):>8.1f}{_p(values, 0.99):>8.1f}"
                f"{max(values) * 1000:>9.1f}{extra}"
            )
        print(f"p99 ratio {_p(during, 0.99) / _p(alone, 0.99):.2f}x (goal <= 2x); "
              f"max write wait {max(during) * 1000:.0f} ms (goal <= 300 ms); "
              f"throughput vs one UPDATE {update_s / backfill_s:.2f}x (goal >= 0.5x)")  # fmt: skip
        print(f"backfill events: {counts['backfill_throttled']} backfill_throttled, "
              f"{counts['backfill_batch_over_target']} backfill_batch_over_target")  # fmt: skip
        over = sum(1 for x in during if x > 0.3)
        print(f"writes over 300 ms during the backfill: {over} of {len(during):,}")
        print("load average (1, 5, 15 min) at the end: "
              + ", ".join(f"{x:.2f}" for x in os.getloadavg()))  # fmt: skip
    finally:
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    asyncio.run(_main(args.rows, args.seconds))


if __name__ == "__main__":
    main()
