"""A batched backfill against one UPDATE, with an app-like writer beside it.

    .venv/bin/python benchmarks/backfill_scale.py [--rows N] [--runs R] [--alone S]
        [--on S] [--off S] [--settings 'target=200ms pause=25%'] [--no-autovacuum]

A table of N rows (default 1 million); a writer updates random rows, one short
transaction each, as fast as it can. The writer's "alone" latencies are measured in
windows interleaved with the backfill's, so the machine's other load moves both alike:
S seconds before it, S seconds after it, and every ``--on`` seconds during it the CLI is
stopped (SIGSTOP: a batch is one message, so the batch in flight commits and no row stays
locked) for ``--off`` seconds, whose first half second is left out. The backfill's
throughput is its rows over its running time (stopped time taken off) against one
``UPDATE`` of a second table of N rows, in the same run; runs alternate which goes first.

Goals (issue 21): writer p99 during the backfill at most 2x its p99 alone, no write
waiting longer than the target batch time plus 100 ms, the backfill's throughput at
least 0.5x the single UPDATE's. Each run prints its figures, the load average, and its
trace: each batch's duration from the server's log (the CLI runs as a role that logs its
statements), checkpoints, autovacuum runs, and the slowest writes with what overlapped
them, and whether the writer's lock waits (logged past 10 ms) were on a batch's rows.
The end prints each run's ratios and their medians. ``--no-autovacuum`` turns it off on
both tables, so that neither phase's cleanup lands on the other's time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import asyncpg

from harness.servers.pgcluster import PgCluster, embedded_bindir, memory_backed_dir
from harness.servers.sql import execute as sql_execute

TARGET_S = 0.2
FILL = (
    "-- natlangchain: backfill table=big key=id {settings}\n"
    "UPDATE big SET doubled = v * 2 WHERE id BETWEEN :lo AND :hi;\n"
)
RUNNER_ROLE = "bf_runner"  # the CLI's role: its statements, with durations, go to the log
SETTLE_S = 0.5  # left out at the start of a stopped window: the batch in flight ends
_LOGLINE = re.compile(r"^(\S+ \S+) \S+ \[\d+\] (?:LOG|WARNING):\s+(.*)$")


class Sample(NamedTuple):
    at: float  # wall-clock time the write started
    took: float  # seconds


class Event(NamedTuple):
    start: float
    end: float
    what: str


async def _writer(url: str, rows: int, stop: asyncio.Event, samples: list[Sample]) -> None:
    # A wait for a row lock over 10 ms is logged with its length ("acquired ... after").
    lock_log = {"log_lock_waits": "on", "deadlock_timeout": "10ms"}
    conn = await asyncpg.connect(url, server_settings=lock_log)
    try:
        while not stop.is_set():
            at, started = time.time(), time.perf_counter()
            await conn.execute("UPDATE big SET v = v + 1 WHERE id = $1", random.randint(1, rows))
            samples.append(Sample(at, time.perf_counter() - started))
    finally:
        await conn.close()


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


async def _setup(cluster: PgCluster, rows: int, autovacuum: bool) -> str:
    name = f"bf_{uuid.uuid4().hex[:10]}"
    await sql_execute(cluster.socket_dsn(), f'CREATE DATABASE "{name}" TEMPLATE template0')
    url = cluster.socket_dsn(name)
    await sql_execute(
        url,
        "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, doubled int); "
        f"INSERT INTO big (id, v) SELECT g, g % 1000 FROM generate_series(1, {rows}) g",
    )
    await sql_execute(url, "VACUUM ANALYZE big")
    if not autovacuum:  # neither phase's cleanup lands on the other, nor on its own
        await sql_execute(url, "ALTER TABLE big SET (autovacuum_enabled = off)")
    await sql_execute(url, "CHECKPOINT")
    return url


class Backfill(NamedTuple):
    samples: list[Sample]
    alone: list[tuple[float, float]]  # windows
    during: list[tuple[float, float]]
    running_s: float
    events: Counter[str]


async def _backfill(url: str, rows: int, args: argparse.Namespace) -> Backfill:
    """The writer through: alone, the CLI running/stopped in turns, alone again."""
    alone_s, on_s, off_s = args.alone, args.on, args.off
    stop, samples = asyncio.Event(), list[Sample]()
    writer = asyncio.ensure_future(_writer(url, rows, stop, samples))
    await asyncio.sleep(0.5)
    alone: list[tuple[float, float]] = [(time.time(), time.time() + alone_s)]
    during: list[tuple[float, float]] = []
    await asyncio.sleep(alone_s)
    env = os.environ | {
        "DATABASE_URL": url.replace("postgres@", f"{RUNNER_ROLE}@"),
        "NATLANGCHAIN_MIGRATE_LOG_FORMAT": "json",
    }
    with tempfile.TemporaryDirectory() as scratch:
        (Path(scratch) / "001_fill.sql").write_text(FILL.format(settings=args.settings))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "natlangchain_migrate", "--migrations-dir", scratch,
            env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stderr is not None
        stderr = asyncio.ensure_future(process.stderr.read())
        started, stopped_s = time.time(), 0.0
        while True:
            leg = time.time()
            try:
                await asyncio.wait_for(process.wait(), on_s)
                during.append((leg, time.time()))
                break
            except TimeoutError:
                during.append((leg, time.time()))
            process.send_signal(signal.SIGSTOP)
            paused = time.time()
            await asyncio.sleep(off_s)
            alone.append((paused + SETTLE_S, time.time()))
            process.send_signal(signal.SIGCONT)
            stopped_s += time.time() - paused
        running_s = time.time() - started - stopped_s
        text = (await stderr).decode()
    if process.returncode != 0:
        raise SystemExit(f"the backfill run failed: {text[-2000:]}")
    events = Counter(json.loads(x)["event"] for x in text.splitlines() if x.startswith("{"))
    alone.append((time.time(), time.time() + alone_s))
    await asyncio.sleep(alone_s)
    stop.set()
    await writer
    return Backfill(samples, alone, during, running_s, events)


async def _update(url: str, rows: int) -> tuple[list[Sample], float]:
    stop, samples = asyncio.Event(), list[Sample]()
    writer = asyncio.ensure_future(_writer(url, rows, stop, samples))
    await asyncio.sleep(0.5)
    samples.clear()
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        await conn.execute("UPDATE big SET doubled = v * 2")
        took = time.perf_counter() - started
    finally:
        await conn.close()
    stop.set()
    await writer
    return samples, took


def _in(samples: list[Sample], windows: list[tuple[float, float]]) -> list[float]:
    return [s.took for s in samples if any(a <= s.at < b for a, b in windows)]


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1] * 1000


class Trace(NamedTuple):
    batches: list[Event]  # from their logged durations
    waits: list[Event]  # the writer's lock waits over 10 ms
    other: list[Event]  # checkpoints, autovacuums over 1 s


def _trace(log: Path, since: float) -> Trace:
    """What the server's log says happened after ``since``."""
    batches: list[Event] = []
    waits: list[Event] = []
    other: list[Event] = []
    starts: dict[str, float] = {}
    entries: list[list[str]] = []
    for line in log.read_text(errors="replace").splitlines():
        found = _LOGLINE.match(line)
        if found:
            entries.append([found[1], found[2]])
        elif entries:
            entries[-1][1] += "\n" + line
    for stamp, message in entries:
        end = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC).timestamp()
        if end < since:
            continue
        duration = re.match(r"duration: ([\d.]+) ms\s+statement: BEGIN;", message)
        if duration:
            batches.append(Event(end - float(duration[1]) / 1000, end, "batch"))
        elif acquired := re.search(r"acquired \w+ on (\w+) .* after ([\d.]+) ms", message):
            waits.append(Event(end - float(acquired[2]) / 1000, end, f"{acquired[1]} wait"))
        elif message.startswith("checkpoint starting"):
            starts["checkpoint"] = end
            starts[message.split(":", 1)[1].strip()] = end
        elif message.startswith("checkpoint complete"):
            why = next((k for k in starts if k != "checkpoint"), "?")
            starts.pop(why, None)
            other.append(Event(starts.pop("checkpoint", end), end, f"checkpoint ({why})"))
        elif message.startswith("automatic vacuum") or message.startswith("automatic analyze"):
            elapsed = re.search(r"elapsed: ([\d.]+) s", message)
            took = float(elapsed[1]) if elapsed else 0.0
            if took >= 1.0:  # the catalog's and the other database's short ones left out
                table = re.search(r'of table "([^"]+)"', message)
                what = message.split(" of table")[0] + (f" {table[1]}" if table else "")
                other.append(Event(end - took, end, what))
    return Trace(batches, waits, other)


def _report_run(run: int, bf: Backfill, log: Path, since: float, rows: int) -> dict[str, float]:
    during = _in(bf.samples, bf.during)
    alone = _in(bf.samples, bf.alone)
    first, last = _in(bf.samples, bf.alone[:1]), _in(bf.samples, bf.alone[-1:])
    paused = _in(bf.samples, bf.alone[1:-1])
    batches, waits, other = _trace(log, since)
    took = sorted(b.end - b.start for b in batches)
    print(f"run {run}: writer p50 / p99 / max in ms (writes)")
    for label, values in (
        ("alone before", first), ("alone while stopped", paused), ("alone after", last),
        ("alone, all windows", alone), ("during the backfill", during),
    ):  # fmt: skip
        if len(values) > 10:
            print(f"  {label:<22}{_p(values, 0.5):>7.1f}{_p(values, 0.99):>8.1f}"
                  f"{max(values) * 1000:>9.1f}  ({len(values):,})")  # fmt: skip
    if took:
        print(f"  batches: {len(took)}, median {took[len(took) // 2] * 1000:.0f} ms, "
              f"max {took[-1] * 1000:.0f} ms, over {TARGET_S * 1000:.0f} ms: "
              f"{sum(1 for t in took if t > TARGET_S)}, over 300 ms: "
              f"{sum(1 for t in took if t > 0.3)}")  # fmt: skip
    inside = [w.end - w.start for w in waits if any(a <= w.start < b for a, b in bf.during)]
    longest = max(inside, default=0) * 1000
    print(f"  the writer's lock waits over 10 ms during the backfill: {len(inside)}, "
          f"max {longest:.0f} ms; elsewhere: {len(waits) - len(inside)}")  # fmt: skip
    for event in other:
        print(f"  {event.what}: {datetime.fromtimestamp(event.start, UTC):%H:%M:%S.%f}"[:-3]
              + f" for {event.end - event.start:.1f} s")  # fmt: skip
    slow = sorted((s for s in bf.samples if s.took > 0.03), key=lambda s: -s.took)[:8]
    for s in sorted(slow):
        overlaps = [
            e for e in (*batches, *waits, *other) if e.start < s.at + s.took and s.at < e.end
        ]
        said = ", ".join(f"{e.what} {(e.end - e.start) * 1000:.0f} ms" for e in overlaps)
        phase = "during" if any(a <= s.at < b for a, b in bf.during) else "alone"
        print(
            f"  slow write {datetime.fromtimestamp(s.at, UTC):%H:%M:%S.%f}"[:-3]
            + f" {s.took * 1000:.0f} ms ({phase}): {said or 'no batch, checkpoint or vacuum'}"
        )
    print("  writer p99 (ms) per window in time order, A alone, D during; "
          "* autovacuum, c checkpoint overlapping:")  # fmt: skip
    windows = sorted([(w, "A") for w in bf.alone] + [(w, "D") for w in bf.during])
    line = []
    for (a, b), kind in windows:
        values = [x.took for x in bf.samples if a <= x.at < b]
        marks = "".join(
            sorted({"c" if e.what.startswith("checkpoint") else "*" for e in other
                    if e.start < b and a < e.end})
        )  # fmt: skip
        if len(values) > 100:
            line.append(f"{kind} {_p(values, 0.99):.1f}{marks}")
    print("    " + " | ".join(line))
    print(f"  events: {dict(bf.events)}")
    return {
        "p99_alone": _p(alone, 0.99),
        "p99_before": _p(first, 0.99),
        "p99_during": _p(during, 0.99),
        "max_ms": max(during) * 1000,
        "over_300": sum(1 for x in during if x > 0.3),
        "backfill_s": bf.running_s,
        "batch_max_ms": took[-1] * 1000 if took else 0.0,
    }


async def _main(args: argparse.Namespace) -> None:
    rows, runs = args.rows, args.runs
    cluster = PgCluster(embedded_bindir(), name="backfill_scale", parent=memory_backed_dir())
    cluster.init(
        max_wal_size="'4GB'", log_autovacuum_min_duration="0", log_checkpoints="on"
    ).start()
    results: list[dict[str, float]] = []
    try:
        await sql_execute(
            cluster.socket_dsn(),
            f"CREATE ROLE {RUNNER_ROLE} LOGIN SUPERUSER; "
            f"ALTER ROLE {RUNNER_ROLE} SET log_min_duration_statement = 0",
        )
        for run in range(1, runs + 1):
            print(f"run {run}: load average at the start {_load()}", flush=True)
            url_b = await _setup(cluster, rows, args.autovacuum)
            url_u = await _setup(cluster, rows, args.autovacuum)
            since = time.time()
            if run % 2:
                bf = await _backfill(url_b, rows, args)
                update, update_s = await _update(url_u, rows)
            else:
                update, update_s = await _update(url_u, rows)
                bf = await _backfill(url_b, rows, args)
            figures = _report_run(run, bf, cluster.root / "log", since, rows)
            figures["update_s"] = update_s
            figures["ratio"] = figures["p99_during"] / figures["p99_alone"]
            figures["ratio_before"] = figures["p99_during"] / figures["p99_before"]
            figures["throughput"] = update_s / figures["backfill_s"]
            results.append(figures)
            waits = [s.took for s in update]
            running = figures["backfill_s"]
            print(f"  during one UPDATE: writer p99 {_p(waits, 0.99):.1f} ms, max "
                  f"{max(waits) * 1000:.0f} ms; UPDATE {update_s:.1f} s, backfill running "
                  f"{running:.1f} s ({rows / running:,.0f} rows/s)")  # fmt: skip
            print(f"  p99 ratio {figures['ratio']:.2f}x against all alone windows "
                  f"({figures['ratio_before']:.2f}x against the one before alone); max write "
                  f"{figures['max_ms']:.0f} ms ({figures['over_300']:.0f} over 300 ms); "
                  f"throughput {figures['throughput']:.2f}x; load average at the end {_load()}",
                  flush=True)  # fmt: skip
            for url in (url_b, url_u):
                name = url.split("@/")[1].split("?")[0]
                await sql_execute(cluster.socket_dsn(), f'DROP DATABASE "{name}"')
        print(f"rows {rows:,}, {runs} runs; per run, then the median")
        for key, goal in (("ratio", "<= 2x"), ("ratio_before", "(old way)"),
                          ("max_ms", "<= 300 ms"), ("throughput", ">= 0.5x")):  # fmt: skip
            values = [r[key] for r in results]
            print(f"  {key:<13}" + "  ".join(f"{v:8.2f}" for v in values)
                  + f"   median {statistics.median(values):.2f} (goal {goal})")  # fmt: skip
    finally:
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--alone", type=float, default=10.0, help="seconds before and after")
    parser.add_argument("--on", type=float, default=20.0, help="backfill seconds between stops")
    parser.add_argument("--off", type=float, default=5.0, help="seconds stopped each time")
    parser.add_argument("--settings", default="target=200ms", help="the backfill's header")
    parser.add_argument(
        "--no-autovacuum", dest="autovacuum", action="store_false", help="off on both tables"
    )
    args = parser.parse_args()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
