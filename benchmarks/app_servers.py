"""What migrating at start-up costs a real server: start-up time of the example apps beside
the same apps without the migration, interleaved, medians and paired ratios.

    .venv/bin/python benchmarks/app_servers.py [--rounds N] [--only NAME]

Start-up time: from starting the server process until every worker has answered
``/healthz`` (each answer names its worker's pid). Three variants of each server,
in a rotating order within each round:

- ``fresh``: the example app on a fresh database (one worker applies 001-003, the
  others wait for the lock and find the work done);
- ``steady``: the example app on an already migrated database (each worker's
  migrate() is one query);
- ``plain``: the same server and app without the migrate() call, on an already
  migrated database: the floor.

Servers (``--only``): uvicorn with 4 workers, gunicorn with 8, and gunicorn with 8
and ``--preload`` (the master imports the app, so migrates, once before it forks).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid

import structlog

from harness.servers.apps import AppServer
from harness.servers.pgcluster import PgCluster, embedded_bindir
from harness.servers.sql import execute as sql_execute
from natlangchain_migrate import migrate

# name -> (server, its options, workers, the example app, the same app without migration)
SERVERS = {
    "uvicorn": ("uvicorn", (), 4, "examples.fastapi_app:app", "benchmarks.plain_fastapi_app:app"),
    "gunicorn": ("gunicorn", (), 8, "examples.flask_app:app", "benchmarks.plain_flask_app:app"),
    # The master imports the app (and migrates) once, then forks the workers.
    "gunicorn-preload": (
        "gunicorn",
        ("--preload",),
        8,
        "examples.flask_app:app",
        "benchmarks.plain_flask_app:app",
    ),
}
VARIANTS = ("fresh", "steady", "plain")


class _Databases:
    """Fresh databases, and clones of one migrated template, on the benchmark's server."""

    def __init__(self, cluster: PgCluster) -> None:
        self.cluster = cluster
        self.template = self._create("template0")
        asyncio.run(migrate(cluster.dsn(self.template)))
        asyncio.run(
            sql_execute(
                cluster.dsn(), f'ALTER DATABASE "{self.template}" WITH ALLOW_CONNECTIONS false'
            )
        )

    def _create(self, template: str) -> str:
        name = f"app_{uuid.uuid4().hex[:10]}"
        asyncio.run(
            sql_execute(self.cluster.dsn(), f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        )
        return name

    def new(self, migrated: bool) -> str:
        return self._create(self.template if migrated else "template0")

    def drop(self, name: str) -> None:
        asyncio.run(sql_execute(self.cluster.dsn(), f'DROP DATABASE "{name}" WITH (FORCE)'))


def start_up_seconds(name: str, app: str, database_url: str) -> float:
    """Process start until every worker has answered /healthz."""
    server, options, workers, _, _ = SERVERS[name]
    running = AppServer(
        server, app, workers=workers, database_url=database_url, options=options
    ).start()
    try:
        answers = running.wait_for_all_workers()
        elapsed = time.perf_counter() - running.started_at
        assert {answer["schema_version"] for answer in answers.values()} == {3}
        return elapsed
    finally:
        running.stop()


def measure(databases: _Databases, name: str, rounds: int) -> dict[str, list[float]]:
    example, plain = SERVERS[name][3:]
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    warm_up = databases.new(migrated=True)  # the first start reads every module from disk
    start_up_seconds(name, plain, databases.cluster.dsn(warm_up))
    databases.drop(warm_up)
    for round_number in range(rounds):
        shift = round_number % len(VARIANTS)
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            database = databases.new(migrated=variant != "fresh")
            try:
                app = plain if variant == "plain" else example
                url = databases.cluster.dsn(database)
                times[variant].append(start_up_seconds(name, app, url))
            finally:
                databases.drop(database)
    return times


def report(name: str, times: dict[str, list[float]]) -> None:
    server, options, workers, _, _ = SERVERS[name]
    plain = statistics.median(times["plain"])
    print(f"{' '.join((server, *options))}, {workers} workers, {len(times['plain'])} rounds:")
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        paired = statistics.median(
            t / p for t, p in zip(times[variant], times["plain"], strict=True)
        )
        spread = f"{min(times[variant]) * 1000:.0f}-{max(times[variant]) * 1000:.0f} ms"
        print(
            f"  {variant:<7} median {median * 1000:7.0f} ms  ({spread})  "
            f"{(median - plain) * 1000:+6.0f} ms  ratio of medians {median / plain:.2f}x  "
            f"median paired ratio {paired:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=sorted(SERVERS))
    args = parser.parse_args()
    # Quiet: the template's migrate() would print its events between the figures.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cluster = PgCluster(embedded_bindir(), name="app-servers").init().start()
    try:
        databases = _Databases(cluster)
        for name in [args.only] if args.only else list(SERVERS):
            report(name, measure(databases, name, args.rounds))
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
