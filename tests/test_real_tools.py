"""Real peer tools apply a history, ``adopt --from TOOL`` takes it over, and our runner goes
on: node-pg-migrate (npm, installed by the test into a cache: tests/registry_tools.py) and
alembic (PyPI, the test extra). dbmate and yoyo are in tests/test_adopt.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from natlangchain_migrate.errors import ExitCode
from tests.conftest import run_cli, table_names, write_migrations
from tests.registry_tools import npm_packages

# node-pg-migrate's SQL migrations as its `create -j sql` writes them (13-digit millisecond
# timestamps, templates/migration-template.sql's markers), with a function body and an index.
NODE_PG_FILES = {
    "1700000000000_create-users.sql": (
        "-- Up Migration\nCREATE TABLE users (id int PRIMARY KEY, email text NOT NULL);\n\n"
        "-- Down Migration\nDROP TABLE users;\n"
    ),
    "1700000000100_users-email.sql": (
        "-- Up Migration\nCREATE FUNCTION lower_email() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN NEW.email := lower(NEW.email); RETURN NEW; END; $$;\n"
        "CREATE TRIGGER users_email BEFORE INSERT ON users FOR EACH ROW "
        "EXECUTE FUNCTION lower_email();\n\n"
        "-- Down Migration\nDROP TRIGGER users_email ON users;\nDROP FUNCTION lower_email();\n"
    ),
}
NODE_PG_NEXT = {
    "1700000000200_create-orders.sql": (
        "-- Up Migration\nCREATE TABLE orders (id int PRIMARY KEY, user_id int REFERENCES users);\n"
        "-- Down Migration\nDROP TABLE orders;\n"
    ),
}


@pytest.fixture(scope="session")
def node_pg_migrate() -> list[str]:
    """The real node-pg-migrate CLI (npm), as a command line."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the node-pg-migrate test needs node and npm")
    modules = npm_packages("node-pg-migrate@9.0.0", "pg@8.16.3")
    return [node, str(modules / "node-pg-migrate" / "bin" / "node-pg-migrate.js")]


async def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


def test_real_node_pg_migrate_history_is_adopted_and_ours_goes_on(
    node_pg_migrate: list[str], database_url: str, tmp_path: Path
) -> None:
    folder = write_migrations(tmp_path / "migrations", NODE_PG_FILES)
    env = {**os.environ, "DATABASE_URL": database_url}
    applied = subprocess.run(
        [*node_pg_migrate, "up", "--migrations-dir", str(folder), "--verbose", "false"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    theirs = asyncio.run(_rows(database_url, "SELECT id, name FROM pgmigrations ORDER BY id"))
    assert [name for _, name in theirs] == [f.removesuffix(".sql") for f in NODE_PG_FILES]
    flags = ("--migrations-dir", str(folder))
    met = run_cli(*flags, database_url=database_url)
    assert met.returncode == ExitCode.USAGE, met.stderr
    assert "node-pg-migrate's ledger public.pgmigrations" in met.stderr
    done = run_cli("adopt", "--from", "node-pg-migrate", *flags, database_url=database_url)
    assert done.returncode == 0, done.stderr
    assert (
        'recorded 2 migration(s) in "public"."schema_migrations" (newest 1700000000100)'
        in done.stdout
    )
    write_migrations(folder, NODE_PG_NEXT)
    for step in ((), ("--rollback",), ()):
        result = run_cli(*step, *flags, database_url=database_url)
        assert result.returncode == 0, result.stderr
    assert {"users", "orders"} <= asyncio.run(table_names(database_url))
    status = run_cli("--status", *flags, database_url=database_url)
    assert "1700000000200" in status.stdout, status.stdout
    assert run_cli("--check", *flags, database_url=database_url).returncode == 0
    assert asyncio.run(_rows(database_url, "SELECT id, name FROM pgmigrations ORDER BY id")) == (
        theirs
    )
