"""What a savepoint per file costs a successful ``--lock-mode transaction`` run: the same
small files applied by this tree's code and by an older commit's (before the savepoints),
interleaved, medians, with the load average.

    .venv/bin/python benchmarks/transaction_mode_savepoints.py [--ref REF] [--rounds N]
        [--count N]

``--ref`` (default ``HEAD~1``) is the commit to compare against, its package taken with
``git archive``. Each side applies ``--count`` small files (a table, a row, an index) to
a new database of an embedded server with fsync on, in a process of its own; only the
``migrate()`` call is timed. The paired ratio is the median of each round's after/before.

A second figure isolates the server's part: the same files' SQL sent on one connection in
one transaction, a message a file, with and without SAVEPOINT/RELEASE around each,
interleaved, rolled back.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from harness.servers.pgcluster import PgCluster, embedded_bindir
from harness.servers.sql import execute as sql_execute

ROOT = Path(__file__).resolve().parent.parent

# Run in a process whose sys.path starts with the package to time; prints seconds.
_DRIVER = """
import asyncio, sys, time
sys.path.insert(0, sys.argv[1])
import structlog
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
import natlangchain_migrate
assert natlangchain_migrate.__file__.startswith(sys.argv[1]), natlangchain_migrate.__file__
from natlangchain_migrate import migrate
started = time.perf_counter()
asyncio.run(migrate(sys.argv[2], migrations_dir=sys.argv[3], lock_mode="transaction"))
print(time.perf_counter() - started)
"""


def _files(folder: Path, count: int) -> Path:
    folder.mkdir()
    for number in range(1, count + 1):
        (folder / f"{number:04d}_t{number}.sql").write_text(
            f"CREATE TABLE t{number} (id int PRIMARY KEY, note text);\n"
            f"INSERT INTO t{number} VALUES (1, 'one');\n"
            f"CREATE INDEX t{number}_note ON t{number} (note);\n",
            encoding="utf-8",
        )
    return folder


def _fresh_database(cluster: PgCluster) -> str:
    name = f"sp_{uuid.uuid4().hex[:10]}"
    asyncio.run(sql_execute(cluster.socket_dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0'))
    return cluster.socket_dsn(name)


def _apply(package: Path, url: str, folder: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(package), url, str(folder)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.split()[-1])


async def _sql_only(url: str, texts: list[str], rounds: int) -> dict[str, list[float]]:
    """Seconds per side of the files' SQL in one transaction, with and without savepoints."""
    wrapped = [f"SAVEPOINT f;\n{text};\nRELEASE SAVEPOINT f;" for text in texts]
    times: dict[str, list[float]] = {"plain": [], "savepoints": []}
    conn = await asyncpg.connect(url)
    try:
        for number in range(rounds + 1):
            sides = [("plain", texts), ("savepoints", wrapped)]
            for side, messages in sides if number % 2 == 0 else reversed(sides):
                started = time.perf_counter()
                await conn.execute("BEGIN")
                for message in messages:
                    await conn.execute(message)
                elapsed = time.perf_counter() - started
                await conn.execute("ROLLBACK")
                if number:  # the first round warms the caches
                    times[side].append(elapsed)
    finally:
        await conn.close()
    return times


def _paired(before: list[float], after: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(after, before, strict=True))


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD~1")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    cluster = PgCluster(embedded_bindir(), name="spbench").init(fsync="on", full_page_writes="on")
    cluster.start()
    try:
        with tempfile.TemporaryDirectory() as workdir:
            before = Path(workdir) / "before"
            before.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.ref, "natlangchain_migrate"],
                cwd=ROOT,
                check=True,
                capture_output=True,
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            folder = _files(Path(workdir) / "m", args.count)
            sides = {"before": before, "after": ROOT}
            times: dict[str, list[float]] = {side: [] for side in sides}
            loads = [_load()]
            for package in sides.values():  # warm the caches once each
                _apply(package, _fresh_database(cluster), folder)
            for number in range(args.rounds):
                order = list(sides) if number % 2 == 0 else list(reversed(sides))
                for side in order:
                    times[side].append(_apply(sides[side], _fresh_database(cluster), folder))
                loads.append(_load())
            texts = [file.read_text() for file in sorted(folder.glob("*.sql"))]
            sql = asyncio.run(_sql_only(_fresh_database(cluster), texts, args.rounds))
            loads.append(_load())
    finally:
        cluster.destroy()
    old, new = (statistics.median(times[side]) * 1000 for side in ("before", "after"))
    print(
        f"--lock-mode transaction, {args.count} small files, n={args.rounds} interleaved: "
        f"before ({args.ref}) {old:.1f} ms, after {new:.1f} ms -> {new / old:.3f}x, "
        f"{(new - old) / args.count * 1000:+.0f} us a file, paired "
        f"{_paired(times['before'], times['after']):.3f}x; load average {loads[0]} at the "
        f"start, {loads[-2]} at the end",
        flush=True,
    )
    for side in sides:
        print(f"  {side}: " + " ".join(f"{t * 1000:.0f}" for t in times[side]))
    plain, saved = (statistics.median(sql[side]) * 1000 for side in ("plain", "savepoints"))
    print(
        f"the files' SQL alone, one transaction, a message a file: {plain:.1f} ms, with "
        f"SAVEPOINT/RELEASE {saved:.1f} ms -> {saved / plain:.3f}x, "
        f"{(saved - plain) / args.count * 1000:+.0f} us a file, paired "
        f"{_paired(sql['plain'], sql['savepoints']):.3f}x; load average {loads[-1]}",
        flush=True,
    )


if __name__ == "__main__":
    main()
