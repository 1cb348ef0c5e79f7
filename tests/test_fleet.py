"""A fleet of tenant schemas (and databases) migrated in one run: each target exactly once
under its own lock, the no-op path in one query per database, the canary and
--max-failures stopping the rollout, a rerun after kill -9 converging, sharding."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from harness.sql import execute, fetch, fetchval
from natlangchain_migrate.fleet_api import migrate_fleet
from natlangchain_migrate.fleet_report import Outcome
from tests.conftest import with_database, write_migrations

FILES = {
    "001_items.sql": "CREATE TABLE items (id int PRIMARY KEY);",
    "002_note.sql": "ALTER TABLE items ADD COLUMN note text;",
    # Fails in any schema named like '%bad%': the failing tenant of a fleet.
    "003_check.sql": (
        "CREATE TABLE checks (id int);\n"
        "DO $$ BEGIN IF current_schema() LIKE '%bad%' THEN "
        "RAISE EXCEPTION 'tenant % refuses 003', current_schema(); END IF; END $$;"
    ),
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_migrations(tmp_path / "migrations", FILES)


async def _make_schemas(url: str, names: list[str]) -> None:
    await execute(url, "".join(f'CREATE SCHEMA "{name}";' for name in names))


async def _ledger_counts(url: str, names: list[str]) -> dict[str, list[int]]:
    """Each schema's ledger versions (empty when it has no ledger)."""
    conn = await asyncpg.connect(url)
    try:
        found = {}
        for name in names:
            exists = await conn.fetchval("SELECT to_regclass($1)", f'"{name}".schema_migrations')
            rows = (
                await conn.fetch(f'SELECT version FROM "{name}".schema_migrations ORDER BY 1')
                if exists
                else []
            )
            found[name] = [row["version"] for row in rows]
        return found
    finally:
        await conn.close()


async def _advisory_locks(url: str) -> int:
    found = await fetchval(url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
    assert isinstance(found, int)
    return found


def _tenants(count: int, prefix: str = "tenant_") -> list[str]:
    return [f"{prefix}{number:04d}" for number in range(count)]


@pytest.mark.anyio
async def test_two_hundred_fresh_tenants_each_migrated_once_no_lock_left(
    database_url: str, folder: Path
) -> None:
    """200 fresh schemas: every one at 003, one row per version, no advisory lock left."""
    names = _tenants(200)
    await _make_schemas(database_url, names)
    report = await migrate_fleet(database_url, each_schema="tenant\\_%", migrations_dir=folder)
    assert report.exit_code == 0, report.failed[:3]
    assert [r.id for r in report.results] == names
    assert {r.outcome for r in report.results} == {Outcome.APPLIED}
    assert all(r.applied == (1, 2, 3) and r.version_after == 3 for r in report.results)
    ledgers = await _ledger_counts(database_url, names)
    assert all(versions == [1, 2, 3] for versions in ledgers.values())
    assert await _advisory_locks(database_url) == 0


@pytest.mark.anyio
async def test_a_no_op_over_the_fleet_costs_one_connection_and_two_queries(
    database_url: str, folder: Path
) -> None:
    """Counted by the server (pg_stat_database): one session, two transactions."""
    names = _tenants(50)
    await _make_schemas(database_url, names)
    await migrate_fleet(database_url, each_schema="tenant\\_%", migrations_dir=folder)
    database = database_url.rsplit("/", 1)[1]
    stats = (
        "SELECT pg_stat_force_next_flush(), sessions, xact_commit + xact_rollback AS xacts "
        f"FROM pg_stat_database WHERE datname = '{database}'"
    )
    admin = with_database(database_url, "postgres")
    await asyncio.sleep(0.5)  # the first run's sessions flush their counts as they exit
    before = (await fetch(admin, stats))[0]
    report = await migrate_fleet(database_url, each_schema="tenant\\_%", migrations_dir=folder)
    await asyncio.sleep(0.5)
    after = (await fetch(admin, stats))[0]
    assert report.count(Outcome.UP_TO_DATE) == 50, report.results[0]
    assert report.connections == 1
    assert after["sessions"] - before["sessions"] == 1
    # The session's start counts one; then the catalog query and the one over every ledger.
    assert after["xacts"] - before["xacts"] == 3
